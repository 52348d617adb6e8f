-- MTs whose lease ran out (their sender died): leased again, to the caller.
-- KEYS: outbox, lease. ARGV: now, lease_until, limit -> {sealed MTs now ours, MTs left in the outbox}
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local blob = redis.call('HGET', KEYS[1], id)
  if blob then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    table.insert(out, blob)
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return {out, redis.call('HLEN', KEYS[1])}
