-- LOGIN_LEASE -- the fleet-wide login lease of one scheme's credentials
-- (worker/logingate.h).
-- KEYS: lease
-- ARGV: credentials me lease_ms
--! keys 1
local v = redis.call('GET', KEYS[1])
if v == 'ok:' .. ARGV[1] then return 'ok' end
local mine = 'try:' .. ARGV[1] .. ':' .. ARGV[2]
if v == mine then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 'lease'
end
if v and string.sub(v, 1, 5 + #ARGV[1]) == 'try:' .. ARGV[1] .. ':' then
  return 'busy'
end
redis.call('SET', KEYS[1], mine, 'PX', ARGV[3])
return 'lease'
