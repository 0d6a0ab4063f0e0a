-- QUOTA_TAKE -- one quota decision, atomic.
-- KEYS: pauses wait counter... jobs...
--   pauses = <p>:pauses, wait = the sender's waiting set, then the
--   sender's k counters (k = 0, 1 or 2) and each one's jobs hash (keys.h:
--   keys_quota_counter, keys_quota_jobs), in the same order
-- ARGV: sender id now n attempt ("<id>:<fence>"), then per counter i:
--   ARGV[4+2i] = limit, ARGV[5+2i] = expire-at ms
-- Every counter has a jobs hash holding, per job attempt, how many
-- recipients that attempt holds in it: a second TAKE of the same attempt
-- adds nothing (the worker re-sends an operation whose reply a lost
-- connection swallowed).
-- Returns {0, 0}: taken (every counter += what this attempt does not hold
-- yet, the job leaves the waiting set); {-1, until}: the sender is paused
-- until `until`; {i, 0}: counter i (1-based) has no room for n (nothing
-- changed). The caller then adds the job to the waiting set (QUOTA_WAIT).
--! keys varies
local k = (#KEYS - 2) / 2
local p = redis.call('HGET', KEYS[1], ARGV[1])
local now, n = tonumber(ARGV[3]), tonumber(ARGV[4])
if p then
  local u = tonumber(string.match(p, '^(%d+)'))
  if u and u > now then return {-1, u} end
end
local need = {}
for i = 3, 2 + k do
  local lim = tonumber(ARGV[4 + 2 * (i - 2)])
  local held = tonumber(redis.call('HGET', KEYS[k + i], ARGV[5]) or '0')
  need[i] = math.max(0, n - held)
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + need[i] > lim then return {i - 2, 0} end
end
for i = 3, 2 + k do
  local at = ARGV[5 + 2 * (i - 2)]
  if need[i] > 0 then
    redis.call('INCRBY', KEYS[i], need[i])
    redis.call('HINCRBY', KEYS[k + i], ARGV[5], need[i])
  end
  redis.call('PEXPIREAT', KEYS[i], at)
  redis.call('PEXPIREAT', KEYS[k + i], at)
end
redis.call('ZREM', KEYS[2], ARGV[2])
return {0, 0}
