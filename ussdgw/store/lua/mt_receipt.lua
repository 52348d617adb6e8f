-- An MT's final state from its delivery receipt, with its audit entry: one step, one round trip.
-- KEYS: MT states, audit. ARGV: mt_id, state, state TTL, audit maxlen, audit fields...
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if #ARGV > 4 then audit_add(KEYS[2], ARGV[4], {unpack(ARGV, 5)}) end
return 1
