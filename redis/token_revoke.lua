-- TOKEN_REVOKE -- deletes the tokens named ARGV[1]: how many.
-- KEYS: tokens
-- ARGV: name
--! keys 1
local n, all = 0, redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, r = pcall(cjson.decode, all[i + 1])
  if ok and type(r) == 'table' and r.name == ARGV[1] then
    n = n + redis.call('HDEL', KEYS[1], all[i])
  end
end
return n
