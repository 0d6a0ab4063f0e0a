-- SENT -- every id here was accepted by an SMTP server: never send it again.
-- KEYS: ledger... stats
-- ARGV: now ttl_ms fence... (one fence per ledger; "0": not checked)
-- Returns the (1-based) positions whose fence was stale: a later claim
-- exists, so another worker may have sent the same job (a duplicate,
-- counted in stats field "stale_accepts").
--! keys varies
local stale = {}
for i = 1, #KEYS - 1 do
  local k = KEYS[i]
  local f = redis.call('HGET', k, 'fence')
  if f and ARGV[2 + i] ~= '0' and f ~= ARGV[2 + i] then
    stale[#stale + 1] = i
    redis.call('HINCRBY', KEYS[#KEYS], 'stale_accepts', 1)
  end
  redis.call('HSET', k, 'state', 'sent', 'sent_at', ARGV[1])
  redis.call('HDEL', k, 'owner')
  redis.call('PEXPIRE', k, ARGV[2])
end
return stale
