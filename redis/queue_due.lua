-- DUE -- due jobs go from the schedule to the take end of their lane: they
-- have waited already.
-- KEYS: scheduled high normal low
-- ARGV: now limit
--! keys 4
--! include lib/lane.lua
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  redis.call('RPUSH', lane(m, 2), m)
  redis.call('ZREM', KEYS[1], m)
end
return #due
