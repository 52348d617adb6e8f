-- P4: count a wrong password, locking sign-in at the limit. A wrong password counts only against
-- the hash it was tried on: a new password issued meanwhile wins.
-- KEYS: sub, audit. ARGV: the hash tried (as stored), max failures, audit maxlen, the profile's
--       names of the hash, failure count and lock fields (ussdgw/store/profile.py), audit fields...
-- -> {'stale', '0', '0'} or {'counted', failures in a row, '1' if locked now}
local hash_field, failures_field, locked_field = ARGV[4], ARGV[5], ARGV[6]
if (redis.call('HGET', KEYS[1], hash_field) or '') ~= ARGV[1] then return {'stale', '0', '0'} end
local n = redis.call('HINCRBY', KEYS[1], failures_field, 1)
local locked = 0
if n >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], locked_field, 1)
  locked = 1
end
audit_add(KEYS[2], ARGV[3], {unpack(ARGV, 7)})
return {'counted', tostring(n), tostring(locked)}
