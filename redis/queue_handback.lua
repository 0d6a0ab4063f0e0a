-- HANDBACK -- a stopping worker hands its processing list back: newest
-- first, each to the take end of its lane, so the oldest is taken first;
-- their ledger entries are released (lib/release.lua).
-- KEYS: processing high normal low workers
-- ARGV: heartbeat_to_remove ("-": keep it) me ledger_stem
--! keys 5
--! include lib/lane.lua
--! include lib/release.lua
local n = 0
while true do
  local m = redis.call('LPOP', KEYS[1])
  if not m then break end
  redis.call('RPUSH', lane(m, 2), m)
  release(m, ARGV[2], ARGV[3])
  n = n + 1
end
redis.call('HDEL', KEYS[5], ARGV[1])
return n
