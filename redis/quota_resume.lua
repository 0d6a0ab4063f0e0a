-- QUOTA_RESUME -- an operator lifts a sender's pause and lets the jobs
-- waiting for it go. Every scheduled job whose id waits for the sender is
-- due then (ids found by one pass over the schedule); the waiting set is
-- emptied (jobs still over a quota come back to it).
-- KEYS: pauses wait scheduled
-- ARGV: sender due_ms
-- Returns {1 if a pause was lifted, jobs moved}.
--! keys 3
local lifted = redis.call('HDEL', KEYS[1], ARGV[1])
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
local want, moved = {}, 0
for _, id in ipairs(ids) do want[id] = true end
if #ids > 0 then
  local cursor = '0'
  repeat
    local r = redis.call('ZSCAN', KEYS[3], cursor, 'COUNT', 1000)
    cursor = r[1]
    for i = 1, #r[2], 2 do
      local m = r[2][i]
      local ok, j = pcall(cjson.decode, m)
      if ok and type(j) == 'table' and type(j.id) == 'string' and
         want[j.id] then
        redis.call('ZADD', KEYS[3], ARGV[2], m)
        want[j.id] = nil
        moved = moved + 1
      end
    end
  until cursor == '0'
  redis.call('DEL', KEYS[2])
end
return {lifted, moved}
