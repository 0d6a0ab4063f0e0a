-- DEAD -- a job leaves the processing list for the dead list.
-- KEYS: processing dead ledger|''
-- ARGV: raw entry
-- 1 when the job was there (and moved), else 0.
--! keys 3
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  if KEYS[3] ~= '' then
    redis.call('HSET', KEYS[3], 'state', 'failed')
    redis.call('HDEL', KEYS[3], 'owner')
  end
  return 1
end
return 0
