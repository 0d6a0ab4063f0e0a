-- REPLACE -- a processing entry replaced by another (an id assigned).
-- KEYS: processing
-- ARGV: raw new
--! keys 1
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[1], ARGV[2])
  return 1
end
return 0
