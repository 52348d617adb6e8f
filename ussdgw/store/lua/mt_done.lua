-- The MT left the outbox (submitted, or failed for good), with its audit entry.
-- KEYS: outbox, lease, audit. ARGV: mt_id, audit maxlen, audit fields...
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if #ARGV > 2 then audit_add(KEYS[3], ARGV[2], {unpack(ARGV, 3)}) end
return 1
