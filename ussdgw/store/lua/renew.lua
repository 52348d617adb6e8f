-- The sender of an MT keeps its lease while it waits (for a bind, for the SMSC): extended only
-- while nobody else took it (its end is still the one this sender set) and it is still queued.
-- KEYS: outbox, lease. ARGV: mt_id, lease_end held, new lease_end -> 1 renewed, 0 lost
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local ends = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not ends or tonumber(ends) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
