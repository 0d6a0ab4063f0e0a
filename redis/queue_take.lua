-- TAKE -- a worker takes jobs from the lanes into its processing list.
-- KEYS: high normal low processing workers ring_high ring_normal ring_low
--       staged_high staged_normal staged_low tick
-- ARGV: max me now heartbeat_ms ttl_ms ledger_stem max_bytes max_job window
--       org_stem_high org_stem_normal org_stem_low oversize_mark
-- (stems: keys.h's keys_ledger_stem and keys_staged_stem; a key is the
-- stem followed by the id or the organisation).
--
-- Lanes by priority, none starved: the take's slots are numbered
-- fleet-wide (the counter `tick`) and, of every eight, four go to high,
-- three to normal and one to low first; what a lane cannot fill goes to
-- the lanes in priority order. From each lane it stages jobs from the
-- lane's right into a list per organisation (up to `window` staged, at
-- most max(512, 4 x max) now; the org read by a pattern, not a parse: a
-- nested "org" only files a job under another name), then moves up to max
-- jobs (and, past the first, up to max_bytes of them) round-robin over the
-- ring of organisations (one alone in the ring gives all it has). When
-- nothing is staged and the whole lane fits in this take, or with window
-- 0, jobs move straight from the lane, in order: taken at once, their
-- order hardly matters, and this is the take of a worker that keeps up
-- (two commands a job instead of seven). Each job whose id it can read
-- (and that has no send_at: the worker decides those) is claimed: a flat
-- array of {job, status, attempts, first_at, id, fence, partial}, status
-- "-" (and id "") when not claimed. A job over max_job bytes is moved
-- too, but only its length comes back (oversize_mark and the length, as a
-- status reply).
--! keys 12
--! include lib/claim.lua
local out, n, taken, bytes = {}, tonumber(ARGV[1]), 0, 0
local now, hb = tonumber(ARGV[3]), tonumber(ARGV[4])
local maxb, maxjob = tonumber(ARGV[7]), tonumber(ARGV[8])
local window = tonumber(ARGV[9])
local moved = {}
local function push_all(k, vs)
  local len = 0
  for c = 1, #vs, 1000 do
    len = redis.call('LPUSH', k, unpack(vs, c, math.min(c + 999, #vs)))
  end
  return len
end
-- The id to claim, or nil (not readable, or a send_at: the worker
-- decides those). A job that begins with its id and has no "send_at" and
-- no \u escape anywhere (so no key can spell one) needs no parse: its
-- first key is a top-level one. Otherwise the whole job is decoded
-- (cjson: a few microseconds for 2 KB, the take's largest cost when it
-- was done for every job). The worker compares the id it parses with the
-- one claimed, and releases a claim made for a job it finds invalid.
local function job_id(v)
  local id = string.match(v, '^%s*{%s*"id"%s*:%s*"([%w%._:%-]+)"%s*[,}]')
  if id and #id <= 128 and not string.find(v, 'send_at', 1, true) and
     not string.find(v, '\\u', 1, true) then
    return id
  end
  local ok, j = pcall(cjson.decode, v)
  if ok and type(j) == 'table' and type(j.id) == 'string' and
     #j.id <= 128 and string.find(j.id, '^[%w%._:%-]+$') and
     j.send_at == nil then
    return j.id
  end
  return nil
end
local function give(v)
  moved[#moved + 1] = v
  taken = taken + 1
  local c, id = {'-', 0, 0, 0, 0}, ''
  if #v > maxjob then
    v = {ok = ARGV[13] .. #v}
  else
    bytes = bytes + #v
    id = job_id(v)
    if id then
      c = claim(ARGV[6] .. id, KEYS[5], ARGV[2], now, hb, ARGV[5])
    else
      id = ''
    end
  end
  out[#out + 1] = v
  out[#out + 1] = c[1]
  out[#out + 1] = c[2]
  out[#out + 1] = c[3]
  out[#out + 1] = id
  out[#out + 1] = c[4]
  out[#out + 1] = c[5]
end
local stop = n
-- staged by this take, per lane: at most `cap` over its two visits
local cap, fresh = math.max(512, 4 * n), {0, 0, 0}
local function room() return taken < stop and bytes < maxb end
local function lane_take(i)
  local ring, sk = KEYS[5 + i], KEYS[8 + i]
  local staged = tonumber(redis.call('GET', sk) or '0') or 0
  local want = math.min(window - staged, cap - fresh[i])
  if staged == 0 and redis.call('LLEN', KEYS[i]) <= stop - taken then
    want = 0
  end
  local vs = want > 0 and redis.call('RPOP', KEYS[i], want)
  if vs then
    fresh[i] = fresh[i] + #vs
    local groups, order = {}, {}
    for _, v in ipairs(vs) do
      local o = ''
      if #v <= maxjob then
        o = string.match(v, '"org"%s*:%s*"([^"\\]*)"') or ''
        if #o > 128 then o = '' end
      end
      local g = groups[o]
      if not g then
        g = {}
        groups[o] = g
        order[#order + 1] = o
      end
      g[#g + 1] = v
    end
    for _, o in ipairs(order) do
      local g = groups[o]
      if push_all(ARGV[9 + i] .. o, g) == #g then
        redis.call('RPUSH', ring, o)
      end
      staged = staged + #g
    end
  end
  while room() do
    local nr = redis.call('LLEN', ring)
    if nr == 0 then break end
    if nr == 1 then
      local k = ARGV[9 + i] .. redis.call('LINDEX', ring, 0)
      local got = redis.call('RPOP', k, stop - taken) or {}
      local j = 1
      while j <= #got and room() do
        give(got[j])
        j = j + 1
      end
      staged = staged - (j - 1)
      for b = #got, j, -1 do redis.call('RPUSH', k, got[b]) end
      if redis.call('LLEN', k) == 0 then redis.call('DEL', ring) end
      break
    end
    local last = math.min(nr, stop - taken) - 1
    local orgs = redis.call('LRANGE', ring, 0, last)
    local keep = {}
    for _, o in ipairs(orgs) do
      local k = ARGV[9 + i] .. o
      if room() then
        local v = redis.call('RPOP', k)
        if v then
          staged = staged - 1
          give(v)
        end
      end
      if redis.call('LLEN', k) > 0 then keep[#keep + 1] = o end
    end
    redis.call('LTRIM', ring, #orgs, -1)
    if #keep > 0 then redis.call('RPUSH', ring, unpack(keep)) end
  end
  while (window == 0 or staged == 0) and room() do
    local v = redis.call('RPOP', KEYS[i])
    if not v then break end
    give(v)
  end
  if staged > 0 and redis.call('LLEN', ring) > 0 then
    redis.call('SET', sk, staged)
  else
    redis.call('DEL', sk)
  end
end
local tick = redis.call('INCRBY', KEYS[12], n) - n
local slots, share = {1, 2, 1, 2, 1, 2, 1, 3}, {0, 0, 0}
for k = 0, n - 1 do
  local l = slots[(tick + k) % 8 + 1]
  share[l] = share[l] + 1
end
for i = 1, 3 do
  stop = math.min(n, taken + share[i])
  lane_take(i)
end
stop = n
for i = 1, 3 do lane_take(i) end
if #moved > 0 then push_all(KEYS[4], moved) end
return out
