-- PARTIAL -- some recipients accepted the message: never send it to them
-- again.
-- KEYS: ledger
-- ARGV: addresses ("\n"-separated) ttl_ms
--! keys 1
local a = redis.call('HGET', KEYS[1], 'accepted')
if a and a ~= '' then a = a .. '\n' .. ARGV[1] else a = ARGV[1] end
redis.call('HSET', KEYS[1], 'accepted', a)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
