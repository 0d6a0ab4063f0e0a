-- QUOTA_SETTLE -- attempt ARGV[2] ("<id>:<fence>") keeps ARGV[1] recipients
-- (the accepted ones; 0 when the message was not accepted) in each counter
-- and gives back the rest of what it holds. Stating what is kept, not what
-- is given, makes a replay harmless; a counter never goes below 0, and one
-- that expired meanwhile is left alone.
-- KEYS: counter... jobs... (the k counters the take counted in, then each
--       one's jobs hash, in the same order)
-- ARGV: keep attempt
--! keys varies
local k = #KEYS / 2
for i = 1, k do
  local h = KEYS[k + i]
  local held = tonumber(redis.call('HGET', h, ARGV[2]) or '0')
  local keep = math.min(held, tonumber(ARGV[1]))
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  local d = math.min(held - keep, used)
  if d > 0 then
    redis.call('DECRBY', KEYS[i], d)
  end
  if keep <= 0 then
    redis.call('HDEL', h, ARGV[2])
  elseif keep < held then
    redis.call('HSET', h, ARGV[2], keep)
  end
end
return 1
