-- One MT found due in a recovery index: is it still queued, is its lease still held?
-- KEYS: outbox, lease. ARGV: mt_id, now, lease_until, seen (the lease's end this caller saw
-- expired on an earlier look, or '')
-- -> {'gone'}                     sent or never queued: the index entry can go
--    {'held', lease_end}          someone holds it: look again at `lease_end`
--    {'expired', lease_end}       expired, first seen so: look again after a grace (its sender
--                                 may be recording it right now, e.g. Redis was away)
--    {'taken', sealed MT}         expired and seen so before, unchanged: leased to the caller
local blob = redis.call('HGET', KEYS[1], ARGV[1])
if not blob then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'gone'}
end
local lease_end = redis.call('ZSCORE', KEYS[2], ARGV[1])
local ends = tonumber(lease_end or '0')
if ends > tonumber(ARGV[2]) then return {'held', lease_end} end
if ARGV[4] == '' or tonumber(ARGV[4]) ~= ends then return {'expired', lease_end or '0'} end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return {'taken', blob}
