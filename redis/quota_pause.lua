-- QUOTA_PAUSE -- pauses a sender; a later pause already there wins.
-- KEYS: pauses
-- ARGV: sender until_ms reason
--! keys 1
local p = redis.call('HGET', KEYS[1], ARGV[1])
if p then
  local u = tonumber(string.match(p, '^(%d+)'))
  if u and u >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
return 1
