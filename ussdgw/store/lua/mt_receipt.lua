-- MTs' final states from their delivery receipts, each with its audit entry: one step, one round
-- trip, for the receipts a read brought. On a cluster one call per subscriber (its slot); on a
-- single server one call for all of them.
-- KEYS: per subscriber, its MT states and its audit (subscriber s: KEYS[2s-1], KEYS[2s]).
-- ARGV: state TTL, audit maxlen, then per receipt:
--   s (its subscriber), mt_id, state, n (how many audit field/value items follow), the n items
local i = 3
while i <= #ARGV do
  local s, n = tonumber(ARGV[i]), tonumber(ARGV[i + 3])
  redis.call('HSET', KEYS[2 * s - 1], ARGV[i + 1], ARGV[i + 2])
  if n > 0 then audit_add(KEYS[2 * s], ARGV[2], {unpack(ARGV, i + 4, i + 3 + n)}) end
  i = i + 4 + n
end
for s = 1, #KEYS, 2 do redis.call('EXPIRE', KEYS[s], ARGV[1]) end
return 1
