-- FINISH_MANY -- jobs leave the processing list: each entry removed once,
-- from the old end; returns how many were there.
-- KEYS: processing
-- ARGV: entries...
--! keys 1
local n = 0
for _, v in ipairs(ARGV) do
  n = n + redis.call('LREM', KEYS[1], -1, v)
end
return n
