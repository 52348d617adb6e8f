-- The receipts' side of the correlation (lua/dlr_meet.lua's), for every receipt a read brought, in
-- one step: on a single server only (the dlr:<id> keys lie in slots of their own; a cluster meets
-- each with dlr_meet). Whoever comes second sees both sides.
-- KEYS: dlr:<message id>... ARGV: ttl, then per key: state, err
-- -> per key, the sender's side: msisdn, mt_id ('', '' while it is not in)
local out = {}
for i = 1, #KEYS do
  local msisdn, mt_id = dlr_side(KEYS[i], ARGV[1], 'state', ARGV[2 * i], 'err', ARGV[2 * i + 1], 'msisdn', 'mt_id')
  out[#out + 1] = msisdn
  out[#out + 1] = mt_id
end
return out
