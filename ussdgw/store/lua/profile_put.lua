-- A profile written whole from outside (the bulk import, admin tools), with its audit entry.
-- KEYS: sub, audit. ARGV: audit maxlen, the import-tag field, the import's tag ('' for none),
--       2n, n field/value pairs, m, m fields to delete, the audit entry's fields...
-- -> 0 when the profile already carries this import's tag (written by an earlier, interrupted
--    run of the same import: nothing is done twice), else 1
local tag = ARGV[3]
if tag ~= '' and redis.call('HGET', KEYS[1], ARGV[2]) == tag then return 0 end
local n = tonumber(ARGV[4])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 5, 4 + n)) end
local m = tonumber(ARGV[5 + n])
if m > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 6 + n, 5 + n + m)) end
audit_add(KEYS[2], ARGV[1], {unpack(ARGV, 6 + n + m)})
return 1
