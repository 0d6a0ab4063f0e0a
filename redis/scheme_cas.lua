-- SCHEME_CAS -- the compare-and-set every writer of a versioned hash uses
-- (<p>:schemes, <p>:orgs).
-- KEYS: hash version
-- ARGV: field old new (old "": the field must be absent; new "": delete it)
-- Returns the new version (>= 1) when the change was made, 0 when the
-- field did not hold `old` (nothing changed: re-read and decide again).
--! keys 2
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return redis.call('INCR', KEYS[2])
