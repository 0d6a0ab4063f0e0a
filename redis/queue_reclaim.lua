-- RECLAIM -- a worker whose heartbeat is older than heartbeat_ms died
-- without handing back: its processing list goes back to the lanes, once
-- (the script is atomic and removes the worker's entry).
-- KEYS: workers high normal low
-- ARGV: now heartbeat_ms processing_stem me ledger_stem
-- (stems: keys.h's keys_processing_stem and keys_ledger_stem)
--! keys 4
--! include lib/lane.lua
--! include lib/release.lua
local n, all = 0, redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local id, hb = all[i], tonumber(all[i + 1])
  if id ~= ARGV[4] and (not hb or hb + tonumber(ARGV[2]) < tonumber(ARGV[1])) then
    local proc = ARGV[3] .. id
    while true do
      local m = redis.call('LPOP', proc)
      if not m then break end
      redis.call('RPUSH', lane(m, 2), m)
      release(m, id, ARGV[5])
      n = n + 1
    end
    redis.call('HDEL', KEYS[1], id)
  end
end
return n
