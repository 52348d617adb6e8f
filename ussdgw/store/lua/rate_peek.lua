-- Would a D2 guard refuse now? Counts nothing.
-- KEYS: rate key. ARGV: cooldown, per_hour, now -> {} or {reason, retry_at}
local refused = rate_check(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if refused then return refused end
return {}
