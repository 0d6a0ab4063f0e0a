-- DEAD_REPLAY -- moves a dead entry back to a lane, only if it is still in
-- the dead list, so concurrent replays of one entry push the job once.
-- LREM scans from the tail (-1), where the oldest entries, replayed
-- first, are.
-- KEYS: dead lane
-- ARGV: entry job (the entry as listed; the job to push, canonical)
-- 1 when moved, 0 when the entry was gone.
--! keys 2
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
