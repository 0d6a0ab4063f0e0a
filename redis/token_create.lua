-- TOKEN_CREATE -- stores a token record unless its name is taken.
-- KEYS: tokens
-- ARGV: hash name record
-- 1 stored, 0 the name exists.
--! keys 1
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local ok, r = pcall(cjson.decode, v)
  if ok and type(r) == 'table' and r.name == ARGV[2] then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
