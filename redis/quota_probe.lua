-- QUOTA_PROBE -- pauses a sender whose refusal names no end (a greeting
-- that refuses us, "rate limited" without a time, a provider blocking the
-- sender): it is tried again soon, and each time it still refuses, twice
-- as late, up to a cap -- instead of waiting for the next daily window.
-- A pause still running is left as it is (the jobs of one probe that fail
-- together double it once); otherwise the step doubles when the last probe
-- pause was set no longer ago than twice its step and a minute (this
-- failure is its probe failing), and starts again from first_step after a
-- quiet spell. Returns the pause's end.
-- KEYS: pauses pause_probes
-- ARGV: sender now_ms reason first_step_ms cap_ms
--! keys 2
local now = tonumber(ARGV[2])
local p = redis.call('HGET', KEYS[1], ARGV[1])
if p then
  local u = tonumber(string.match(p, '^(%d+)'))
  if u and u > now then return u end
end
local step = tonumber(ARGV[4])
local last = redis.call('HGET', KEYS[2], ARGV[1])
if last then
  local s, at = string.match(last, '^(%d+) (%d+)$')
  s, at = tonumber(s), tonumber(at)
  if s and at and now - at <= 2 * s + 60000 then
    step = math.min(2 * s, tonumber(ARGV[5]))
  end
end
local u = now + step
redis.call('HSET', KEYS[1], ARGV[1], u .. ' ' .. ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], step .. ' ' .. now)
return u
