-- BIG_FINISH -- the staged job leaves the processing list for dead as the
-- entry built: 1; 0 when it is no longer in the processing list; -1 when
-- the stage is gone (expired, a Redis restart without it): stage again.
-- Idempotent.
-- KEYS: processing dead stage entry
--! keys 4
local v, e = redis.call('GET', KEYS[3]), redis.call('GET', KEYS[4])
if not v or not e then return -1 end
local n = redis.call('LREM', KEYS[1], -1, v)
if n == 1 then redis.call('LPUSH', KEYS[2], e) end
redis.call('DEL', KEYS[3], KEYS[4])
return n
