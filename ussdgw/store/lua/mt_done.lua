-- The MT left the outbox (submitted, or failed for good): its state recorded, with its audit entry.
-- On a single server (never on a cluster: those keys live in other slots) the same step also drops
-- the MT's recovery entry, once it is out of the outbox, and ties each SMSC message id to it for
-- receipt correlation (the sender's side of lua/dlr_meet.lua): one command instead of one per part.
-- KEYS: outbox, lease, audit, MT states[, recovery index bucket, dlr:<message id>...]
-- ARGV: mt_id, audit maxlen, state, state TTL (a dlr hash's too), msisdn, index member ('' for none),
--       the audit entry (AuditEvent.packed; '' for none)
-- -> per dlr key, what its receipt said so far: state, err ('', '' while none has come)
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[4])
if ARGV[7] ~= '' then audit_push(KEYS[3], ARGV[2], ARGV[7]) end
if ARGV[6] ~= '' then redis.call('ZREM', KEYS[5], ARGV[6]) end
local out = {}
for i = 6, #KEYS do
  local state, err = dlr_side(KEYS[i], ARGV[4], 'msisdn', ARGV[5], 'mt_id', ARGV[1], 'state', 'err')
  out[#out + 1] = state
  out[#out + 1] = err
end
return out
