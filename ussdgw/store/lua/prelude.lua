-- The shared prelude: prepended to every store script by ussdgw/store/scripts.py.

-- A number as Redis should get it: redis.call and tostring write Lua numbers with 14 significant
-- digits, which loses the last digits of a Unix time with a fraction; %.17g keeps every bit.
local function exact(x)
  return string.format('%.17g', x)
end

-- D2, the resend policy, the one that runs: may one more be counted on `key` (a zset of send
-- times) at `now`? nil, or {reason, retry_at}:
--   'cooldown'    the newest entry is less than `cooldown` seconds old;
--   'hourly_cap'  `per_hour` entries lie in the last hour (a sliding window, so the reply can say
--                 when the next one fits: when the oldest blocking entry leaves it).
-- When both apply, the one that frees later is reported, so the time told to the subscriber really
-- works. A time exactly on a boundary is free: asking again at `retry_at` is allowed.
-- Entries that left the hour are dropped on the way.
local function rate_check(key, cooldown, per_hour, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', exact(now - 3600))
  while true do  -- at the boundary, an entry leaves exactly when its retry time (time + 3600) is reached
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] == nil or tonumber(first[2]) + 3600 > now then break end
    redis.call('ZREM', key, first[1])
  end
  local count = redis.call('ZCARD', key)
  if count == 0 then return nil end
  local reason, retry_at = nil, nil
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  -- No cool-down means none: concurrent steps read the clock before their round trip and may land
  -- out of order, so an entry a little "newer" than `now` must not refuse a step without one.
  if cooldown > 0 and now < tonumber(newest[2]) + cooldown then
    reason, retry_at = 'cooldown', tonumber(newest[2]) + cooldown
  end
  if count >= per_hour then
    local at = math.max(0, math.min(count - per_hour, count - 1))
    local oldest = redis.call('ZRANGE', key, at, at, 'WITHSCORES')
    local freed = tonumber(oldest[2]) + 3600
    if retry_at == nil or freed >= retry_at then reason, retry_at = 'hourly_cap', freed end
  end
  if reason then return {reason, exact(retry_at)} end
  return nil
end

-- Count one entry on `key` at `now`; `tag` makes the member unique to this call.
local function rate_record(key, now, tag)
  redis.call('ZADD', key, exact(now), exact(now) .. ':' .. tag)
  redis.call('EXPIRE', key, 3600)
end

-- A hash field or argument as a number; missing or not a number counts as 0.
local function num(v)
  return tonumber(v or '0') or 0
end

-- One P10 entry on the audit list `key` (newest first, the newest `maxlen` kept). `entry` is the
-- entry without its number (AuditEvent.packed): the five values ts, event, channel, outcome, detail
-- and any other name/value pairs, apart by the unit separator (0x1f: no value holds it,
-- audit_detail.clean escapes control characters). The entry goes in as one string, its number in
-- this trail (one more than the newest entry's) first. A list of such strings costs ~0.2 KB for
-- one entry where a stream cost ~4.7 KB (ussdgw/store/model.py reads them back).
local function audit_push(key, maxlen, entry)
  local newest = redis.call('LINDEX', key, 0)
  local seq = 1
  if newest then seq = (tonumber(string.match(newest, '^%d+')) or 0) + 1 end
  redis.call('LPUSH', key, string.format('%d', seq) .. '\31' .. entry)
  redis.call('LTRIM', key, 0, tonumber(maxlen) - 1)
end

-- `audit_push` of an entry given as the flat field/value list of AuditEvent.fields: ts, event,
-- channel, outcome, detail in this order, then any others as name, value.
local function audit_add(key, maxlen, fields)
  local parts = {}
  for i = 2, 10, 2 do parts[#parts + 1] = fields[i] or '' end
  for i = 11, #fields do parts[#parts + 1] = fields[i] end
  audit_push(key, maxlen, table.concat(parts, '\31'))
end

-- One side of a receipt correlation on a dlr:<message id> hash (lua/dlr_meet.lua): this side's two
-- fields written (the sender's msisdn and mt_id, or the receipt's state and err), the key kept for
-- `ttl`, and the other side's two fields returned ('' while that side is not in).
local function dlr_side(key, ttl, field1, value1, field2, value2, other1, other2)
  redis.call('HSET', key, field1, value1, field2, value2)
  redis.call('EXPIRE', key, ttl)
  local other = redis.call('HMGET', key, other1, other2)
  return other[1] or '', other[2] or ''
end
