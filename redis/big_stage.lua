-- BIG_STAGE -- copies the oldest processing entry of that length to the
-- stage key (kept ttl_ms: a worker that dies leaves nothing for long), so
-- the worker can read it in pieces without holding it; empties the entry
-- key (queue_big_write creates it with the same life).
-- KEYS: processing stage entry
-- ARGV: length ttl_ms
-- Returns {1, id} (id "" unless the job starts with a readable "id"), or
-- {0, ""} when no entry has that length.
--! keys 3
local n = tonumber(ARGV[1])
local all = redis.call('LRANGE', KEYS[1], 0, -1)
for i = #all, 1, -1 do
  local m = all[i]
  if #m == n then
    redis.call('SET', KEYS[2], m, 'PX', ARGV[2])
    redis.call('DEL', KEYS[3])
    local id = string.match(string.sub(m, 1, 300),
      '^%s*{%s*"id"%s*:%s*"([%w%._:%-]+)"')
    if id and #id > 128 then id = nil end
    return {1, id or ''}
  end
end
return {0, ''}
