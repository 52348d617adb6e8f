-- MTs' final states from their delivery receipts, each with its audit entry: one step, one round
-- trip, for the receipts a read brought. On a cluster one call per subscriber (its slot); on a
-- single server one call for all of them.
-- KEYS: per subscriber, its MT states and its audit (subscriber s: KEYS[2s-1], KEYS[2s]).
-- ARGV: state TTL, audit maxlen, then per receipt:
--   s (its subscriber), mt_id, state, its audit entry (AuditEvent.packed; '' for none)
for i = 3, #ARGV, 4 do
  local s = tonumber(ARGV[i])
  redis.call('HSET', KEYS[2 * s - 1], ARGV[i + 1], ARGV[i + 2])
  if ARGV[i + 3] ~= '' then audit_push(KEYS[2 * s], ARGV[2], ARGV[i + 3]) end
end
for s = 1, #KEYS, 2 do redis.call('EXPIRE', KEYS[s], ARGV[1]) end
return 1
