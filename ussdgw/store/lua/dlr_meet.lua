-- One side of a receipt correlation: the sender writes msisdn + mt_id, the receipt state + err;
-- whoever comes second sees both.
-- KEYS: dlr:<message id>. ARGV: ttl, field/value pairs... -> the whole hash, flat
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return redis.call('HGETALL', KEYS[1])
