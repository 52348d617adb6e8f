-- The MT left the outbox (submitted, or failed for good): its state recorded, with its audit entry.
-- KEYS: outbox, lease, audit, MT states. ARGV: mt_id, audit maxlen, state, state TTL, audit fields...
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[4])
if #ARGV > 4 then audit_add(KEYS[3], ARGV[2], {unpack(ARGV, 5)}) end
return 1
