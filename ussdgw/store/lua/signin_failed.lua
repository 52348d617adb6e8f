-- P4: count a wrong password, locking sign-in at the limit. A wrong password counts only against
-- the hash it was tried on: a new password issued meanwhile wins.
-- KEYS: sub, audit. ARGV: the hash tried, max failures, audit maxlen, audit fields...
-- -> {'stale', '0', '0'} or {'counted', failures in a row, '1' if locked now}
if (redis.call('HGET', KEYS[1], 'pw_hash') or '') ~= ARGV[1] then return {'stale', '0', '0'} end
local n = redis.call('HINCRBY', KEYS[1], 'pw_failures', 1)
local locked = 0
if n >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'locked', 1)
  locked = 1
end
audit_add(KEYS[2], ARGV[3], {unpack(ARGV, 4)})
return {'counted', tostring(n), tostring(locked)}
