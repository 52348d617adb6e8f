-- What a USSD step reads first, in one call: was the MO applied already, the open dialogue, and
-- the subscriber's profile (the MO gate's block day is in it; most menus show a part of it).
-- KEYS: 1 the MO's mark, 2 the dialogue, 3 the subscriber -> {1|0, dialogue JSON or nil, profile flat}
return {redis.call('EXISTS', KEYS[1]), redis.call('HGET', KEYS[2], 'd'), redis.call('HGETALL', KEYS[3])}
