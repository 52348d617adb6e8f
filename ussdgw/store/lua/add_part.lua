-- Keep one part of a long MO; once all are in, all of them in order.
-- KEYS: parts. ARGV: seqnum, payload, total, ttl -> the parts in order once complete, else {}
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local total = tonumber(ARGV[3])
if redis.call('HLEN', KEYS[1]) < total then return {} end
local out = {}
for i = 1, total do
  local part = redis.call('HGET', KEYS[1], tostring(i))
  if not part then return {} end
  table.insert(out, part)
end
return out
