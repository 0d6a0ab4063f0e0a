-- A job handed back to its lane by (or for) worker `owner` is nobody's:
-- its ledger entry (`ledger` .. id, `ledger` the stem keys_ledger_stem
-- builds) forgets the owner, so a claim by any worker -- also a restart
-- under the same id, whose heartbeat is alive -- gets it.
--! keys none
local function release(m, owner, ledger)
  local ok, j = pcall(cjson.decode, m)
  if ok and type(j) == 'table' and type(j.id) == 'string' then
    local k = ledger .. j.id
    if redis.call('HGET', k, 'owner') == owner then
      redis.call('HDEL', k, 'owner')
    end
  end
end
