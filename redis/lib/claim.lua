-- Claims job id `key` (the ledger hash) for worker `me`: {status,
-- attempts, first_at, fence, partial}. "sent": delivered already; "busy":
-- another worker with a live heartbeat holds it; "ok": ours, attempts
-- counts this one, fence is this claim's token (every claim gets a new,
-- larger one) and partial is 1 when some recipients accepted the message
-- in an earlier attempt (field "accepted"). A "failed" id starts afresh
-- (a replay, or the same id pushed again).
--! keys none
local function claim(key, workers, me, now, hb, ttl)
  local st = redis.call('HGET', key, 'state')
  if st == 'sent' then
    return {'sent', tonumber(redis.call('HGET', key, 'attempts') or '0'), 0, 0, 0}
  end
  if st == 'inflight' then
    local owner = redis.call('HGET', key, 'owner')
    if owner and owner ~= me then
      local beat = redis.call('HGET', workers, owner)
      if beat and tonumber(beat) + hb > now then
        return {'busy', 0, 0, 0, 0}
      end
    end
  end
  if st == 'failed' then
    redis.call('HDEL', key, 'attempts', 'first_at')
  end
  local a = redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSETNX', key, 'first_at', now)
  local f = redis.call('HINCRBY', key, 'fence', 1)
  redis.call('HSET', key, 'state', 'inflight', 'owner', me)
  redis.call('PEXPIRE', key, ttl)
  return {'ok', a, tonumber(redis.call('HGET', key, 'first_at')), f,
          redis.call('HEXISTS', key, 'accepted')}
end
