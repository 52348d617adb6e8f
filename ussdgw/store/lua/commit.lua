-- The one commit engine: one atomic step on one subscriber's slot, all of it or nothing.
-- Used for MO replies, USSD steps and every self-care change (ussdgw/store/commit.py builds it).
--
-- KEYS: 1 sub, 2 audit, 3 outbox, 4 lease, 5 the MO's mark, 6 the USSD dialogue, 7.. other keys of
--       the same slot, named by index in the payload.
-- ARGV[1]: JSON; every part but the first four optional:
--   now, ts, maxlen, lease_until, tag   the business time, as text for audit, the audit list's cap, the
--                                       MTs' lease, a tag unique to this call (D2 entries)
--   lease_now, grace                    wall time for leases; how long past its end a lease stays
--                                       untouched by a redelivery
--   mo        the MO mark's TTL: applied once per MO; a redelivery gets the same MTs back
--   again     the MO is known by its text alone: the mark keeps its MTs' sealed copies, and a
--             repeat gets those already sent queued again (the first answer, once more)
--   expect    the dialogue version this step was computed from ('conflict' if it moved on)
--   dialogue  {write?, version, ttl_ms}: write the dialogue (or delete it when no write)
--   must_exist, create   refuse when there is no profile / give a new one [field, value] (created_at)
--   checks    [[kind, key, field, value, code]]   refused with `code` when one fails
--   guards    [[key, cooldown, per_hour]]          D2: 'limited' with reason and retry time
--   writes    [[op, key, field, value, ttl]]       hset hincr hdel sadd srem setex, in order
--   mts       [[mt_id, sealed]]                    queued and leased
--   index     [key, member...]                     the MTs' recovery entries (due at lease_until),
--                                                  written first; a single server's only (another slot)
--   audit     [entry]                              P10 entries (AuditEvent.packed)
--   refusal   [event, channel, detail]             audited with the refusal's code as outcome
--   read      return the profile after the change
--   gate      a profile field (the N3 block day) returned as it is, '' when absent
--   unblocked [field, day]   N3 inside the step: 'blocked' (nothing written) when the profile's block
--             day (ISO, in `field`) is on or before `day`
--   replay    only the redelivery's answer: 'absent' when the MO has no mark (nothing written)
-- -> {'applied'[, profile flat or {}[, gate field]]} | {'duplicate', sealed MTs now leased to the caller...} | {'conflict'}
--    | {'absent'} (replay only)
--    | {'refused', code, field} | {'limited', reason, retry_at} | {'blocked', block day}
local p = cjson.decode(ARGV[1])
local sub, audit, outbox, lease, mo, dialogue = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

if p.mo and redis.call('EXISTS', mo) == 1 then
  -- A redelivery: its MTs still queued go out again only when nobody is sending them (their lease
  -- ran out `grace` seconds ago: a sender that lost Redis for a moment may be recording one).
  -- An MO marked `again` (nothing but its text identifies it: it may be the subscriber asking
  -- again) gets its MTs already sent queued once more, from the copies its mark keeps.
  local mark = cjson.decode(redis.call('GET', mo))
  local ids, copies = mark, nil
  if mark.ids then ids, copies = mark.ids, mark.copies end
  local out = {'duplicate'}
  for i, id in ipairs(ids) do
    local blob = redis.call('HGET', outbox, id)
    local ends = tonumber(redis.call('ZSCORE', lease, id) or '0')
    if blob and ends + (p.grace or 0) <= p.lease_now then
      redis.call('ZADD', lease, exact(p.lease_until), id)
      table.insert(out, blob)
    elseif not blob and p.again and copies and copies[i] then
      redis.call('HSET', outbox, id, copies[i])
      redis.call('ZADD', lease, exact(p.lease_until), id)
      table.insert(out, copies[i])
    end
  end
  return out
end
if p.replay then return {'absent'} end  -- only a redelivery's answer was asked for: nothing to do
if p.expect and (redis.call('HGET', dialogue, 'v') or '') ~= p.expect then return {'conflict'} end
if p.unblocked then
  local day = redis.call('HGET', sub, p.unblocked[1]) or ''
  if string.match(day, '^%d%d%d%d%-%d%d%-%d%d$') and day <= p.unblocked[2] then return {'blocked', day} end
end

local function refuse(outcome, code, detail, audited)
  if p.refusal then
    audit_add(audit, p.maxlen, {'ts', p.ts, 'event', p.refusal[1], 'channel', p.refusal[2], 'outcome', audited,
                                'detail', p.refusal[3]})
  end
  return {outcome, code, detail}
end

if p.writes then  -- every write known before any is made: a script that fails midway keeps what it did
  local known = {hset = true, hincr = true, hdel = true, sadd = true, srem = true, setex = true}
  for _, w in ipairs(p.writes) do
    if not known[w[1]] then return redis.error_reply('unknown write ' .. tostring(w[1])) end
  end
end

if p.must_exist and redis.call('EXISTS', sub) == 0 then return refuse('refused', 'not_found', '', 'not_found') end
for _, c in ipairs(p.checks or {}) do
  local kind, key, fld, val = c[1], KEYS[c[2]], c[3], c[4]
  local ok
  if kind == 'member' then ok = redis.call('SISMEMBER', key, val) == 1
  elseif kind == 'notmember' then ok = redis.call('SISMEMBER', key, val) == 0
  elseif kind == 'scard_lt' then ok = redis.call('SCARD', key) < num(val)
  else
    local cur = redis.call('HGET', key, fld)
    if kind == 'exists' then ok = cur ~= false
    elseif kind == 'absent' then ok = cur == false
    elseif kind == 'eq' then ok = (cur or '') == val
    elseif kind == 'ne' then ok = (cur or '') ~= val
    elseif kind == 'gt' then ok = num(cur) > num(val)
    elseif kind == 'gte' then ok = num(cur) >= num(val)
    elseif kind == 'lt' then ok = num(cur) < num(val)
    elseif kind == 'lte' then ok = num(cur) <= num(val)
    else return redis.error_reply('unknown check ' .. tostring(kind)) end
  end
  if not ok then return refuse('refused', c[5], fld, c[5]) end
end
for _, g in ipairs(p.guards or {}) do
  local refused = rate_check(KEYS[g[1]], g[2], g[3], p.now)
  if refused then return refuse('limited', refused[1], refused[2], 'rate_limited') end
end

if p.create and redis.call('EXISTS', sub) == 0 then redis.call('HSET', sub, p.create[1], p.create[2]) end
for _, w in ipairs(p.writes or {}) do
  local op, key = w[1], KEYS[w[2]]
  if op == 'hset' then redis.call('HSET', key, w[3], w[4])
  elseif op == 'hincr' then redis.call('HINCRBY', key, w[3], w[4])
  elseif op == 'hdel' then redis.call('HDEL', key, w[3])
  elseif op == 'sadd' then redis.call('SADD', key, w[4])
  elseif op == 'srem' then redis.call('SREM', key, w[4])
  else redis.call('SET', key, w[4], 'EX', w[5]) end
end
for i, g in ipairs(p.guards or {}) do rate_record(KEYS[g[1]], p.now, p.tag .. ':' .. i) end
if p.index then
  for i = 2, #p.index do redis.call('ZADD', KEYS[p.index[1]], exact(p.lease_until), p.index[i]) end
end
local ids, copies = {}, {}
for _, m in ipairs(p.mts or {}) do
  redis.call('HSET', outbox, m[1], m[2])
  redis.call('ZADD', lease, exact(p.lease_until), m[1])
  table.insert(ids, m[1])
  table.insert(copies, m[2])
end
for _, a in ipairs(p.audit or {}) do audit_push(audit, p.maxlen, a) end
if p.mo and p.again and #ids > 0 then
  redis.call('SET', mo, cjson.encode({ids = ids, copies = copies}), 'EX', p.mo)
elseif p.mo then
  redis.call('SET', mo, cjson.encode(ids), 'EX', p.mo)
end
if p.dialogue then
  redis.call('DEL', dialogue)
  if p.dialogue.write then
    redis.call('HSET', dialogue, 'v', p.dialogue.version, 'd', p.dialogue.write)
    redis.call('PEXPIRE', dialogue, p.dialogue.ttl_ms)
  end
end
local out = {'applied'}
if p.read then out[2] = redis.call('HGETALL', sub) end
if p.gate then
  out[2] = out[2] or {}
  out[3] = redis.call('HGET', sub, p.gate) or ''
end
return out
