-- MTs' final states from their delivery receipts, each with its audit entry: one step, one round
-- trip, for every receipt of one subscriber that a read brought (the parts of one reply, mostly).
-- KEYS: MT states, audit. ARGV: state TTL, audit maxlen, then per receipt:
--   mt_id, state, n (how many audit field/value items follow), the n items
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i + 2])
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if n > 0 then audit_add(KEYS[2], ARGV[2], {unpack(ARGV, i + 3, i + 2 + n)}) end
  i = i + 3 + n
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
