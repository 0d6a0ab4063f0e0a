-- SCHED -- a job leaves the processing list for the schedule.
-- KEYS: processing scheduled ledger|''
-- ARGV: raw member due uncount
-- uncount "1": no delivery attempt was made; the claim's count is taken
-- back. 1 when the job was there (and moved), else 0.
--! keys 3
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  if KEYS[3] ~= '' then
    redis.call('HSET', KEYS[3], 'state', 'deferred')
    redis.call('HDEL', KEYS[3], 'owner')
    if ARGV[4] == '1' and tonumber(redis.call('HGET', KEYS[3], 'attempts') or '0') > 0 then
      redis.call('HINCRBY', KEYS[3], 'attempts', -1)
    end
  end
  return 1
end
return 0
