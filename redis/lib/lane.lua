-- The lane of a job by its "priority" (default normal): KEYS[a], KEYS[a+1]
-- and KEYS[a+2] are the high, normal and low lanes.
--! keys none
local function lane(m, a)
  local ok, j = pcall(cjson.decode, m)
  if ok and type(j) == 'table' then
    if j.priority == 'high' then return KEYS[a] end
    if j.priority == 'low' then return KEYS[a+2] end
  end
  return KEYS[a+1]
end
