-- FENCE -- 1 when the claim `fence` of worker `me` still holds the job (or
-- the ledger entry is gone: nobody else claimed it), else 0 (re-taken, or
-- delivered meanwhile).
-- KEYS: ledger
-- ARGV: me fence
--! keys 1
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] and
   redis.call('HGET', KEYS[1], 'fence') == ARGV[2] and
   redis.call('HGET', KEYS[1], 'state') == 'inflight' then
  return 1
end
return 0
