-- The first request with an Idempotency-Key claims it; a later one gets what the first left there.
-- KEYS: the key's record. ARGV: the claim (JSON: the request's fingerprint, no answer yet), its TTL
-- -> false (claimed: run the request) | the record (JSON: fingerprint, and the answer once there is one)
local old = redis.call('GET', KEYS[1])
if old then return old end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
