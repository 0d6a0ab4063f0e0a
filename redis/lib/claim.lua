-- Claims job id `key` (the ledger hash) for worker `me`: {status,
-- attempts, first_at, fence, partial}. "sent": delivered already; "busy":
-- another worker with a live heartbeat holds it; "ok": ours, attempts
-- counts this one, fence is this claim's token (every claim gets a new,
-- larger one) and partial is 1 when some recipients accepted the message
-- in an earlier attempt (field "accepted"). A "failed" id starts afresh
-- (a replay, or the same id pushed again). Three commands (one read, one
-- write, the expiry): a take claims every job it moves, and each command
-- a script calls costs more than the work it does.
--! keys none
local function claim(key, workers, me, now, hb, ttl)
  local v = redis.call('HMGET', key, 'state', 'attempts', 'owner',
                       'first_at', 'fence', 'accepted')
  local st = v[1]
  if st == 'sent' then
    return {'sent', tonumber(v[2] or '0'), 0, 0, 0}
  end
  if st == 'inflight' then
    local owner = v[3]
    if owner and owner ~= me then
      local beat = redis.call('HGET', workers, owner)
      if beat and tonumber(beat) + hb > now then
        return {'busy', 0, 0, 0, 0}
      end
    end
  end
  local a, first = (tonumber(v[2]) or 0) + 1, v[4]
  if st == 'failed' then
    a, first = 1, false
  end
  first = first or tostring(now)
  local f = (tonumber(v[5]) or 0) + 1
  redis.call('HSET', key, 'state', 'inflight', 'owner', me, 'attempts', a,
             'first_at', first, 'fence', f)
  redis.call('PEXPIRE', key, ttl)
  return {'ok', a, tonumber(first), f, v[6] and 1 or 0}
end
