-- Count one attempt (sign-in, code entry) against a D2 guard; a refused attempt counts nothing.
-- KEYS: rate key. ARGV: cooldown, per_hour, now, tag -> {} (counted) or {reason, retry_at}
local now = tonumber(ARGV[3])
local refused = rate_check(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
if refused then return refused end
rate_record(KEYS[1], now, ARGV[4])
return {}
