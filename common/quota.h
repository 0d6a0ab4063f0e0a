/*
 * quota — sending quotas and sender pauses (SPEC §5, issue 4): fixed
 * windows, the Redis keys that count them, and the Lua that takes and
 * gives back, atomically across the fleet. Window arithmetic is pure;
 * the scripts run in Redis.
 *
 * SENDERS (the thing a limit or a pause applies to)
 *   "scheme:<org>/<email lowercased>"  an Email Sending Scheme (its
 *                                      daily_limit, minute_limit, pauses)
 *   "org:<org>"                        an organisation on the platform
 *                                      relay (its relay_daily_limit)
 *   "relay"                            the platform relay itself (pauses
 *                                      only: a throttle reply from it)
 *
 * KEYS
 *   <p>:quota:<sender>:day:<start ms>  string recipients counted in the
 *   <p>:quota:<sender>:min:<start ms>         window starting then; expire
 *                                             a day after the window ends
 *   …:<start ms>:jobs         hash   "<job id>:<fence>" -> recipients that
 *                                    attempt holds in the counter (see
 *                                    TAKE); expires with it
 *   <p>:quota:wait:<sender>   zset   job id -> when it is due again, for
 *                                    jobs deferred by this sender's quota
 *                                    or pause ("waiting for it")
 *   <p>:pauses                hash   sender -> "<until ms> <reason>": the
 *                                    sender sends nothing before then
 *                                    (entries in the past mean nothing)
 *   <p>:pause_probes          hash   sender -> "<step ms> <set at ms>": the
 *                                    last pause PROBE chose for it
 *
 * Windows are fixed: a minute window is a UTC minute; a day window is the
 * calendar day in the scheme's time zone (UTC when it names none).
 */
#ifndef HERALD_QUOTA_H
#define HERALD_QUOTA_H

#include "keys.h"
#include "tzwin.h"

#include <stddef.h>
#include <stdint.h>

enum quota_kind { QUOTA_DAY = 0, QUOTA_MINUTE };

struct quota_window {
    int64_t start_ms, end_ms; /* [start, end) */
};

/* The window of `kind` holding now_ms; tz NULL is UTC (minutes are always
 * UTC minutes). */
void quota_window(enum quota_kind kind, const struct tzwin *tz, int64_t now_ms,
                  struct quota_window *out);

/* "day" / "minute". */
const char *quota_kind_name(enum quota_kind kind);

/*
 * Jitter added to a deferral to the start of the next window, so a
 * window's waiting jobs do not all start in the same second: up to a
 * tenth of the window, at most a minute (6 s for a minute window, 60 s
 * for a day). `r` is a random 32-bit value.
 */
int64_t quota_jitter_ms(enum quota_kind kind, uint32_t r);

/* Sender names (see above) into out; the length, or -1 if it does not
 * fit. `field` is scheme_field()'s "<org>/<email lowercased>". */
int quota_sender_scheme(char *out, size_t n, const char *field);
int quota_sender_org(char *out, size_t n, const char *org);
#define QUOTA_SENDER_RELAY "relay"

/* The longest sender name and counter key (with the ":jobs" suffix the
 * scripts add): prefix (64) ":quota:" "scheme:" org (64) "/" email (254)
 * ":day:" ms (20) ":jobs". keys.h's KEYS_MAX holds every one, so no
 * limit is ever skipped for a long name. */
#define QUOTA_SENDER_MAX (7 + 64 + 1 + 254 + 1)
#define QUOTA_KEY_MAX (64 + 7 + QUOTA_SENDER_MAX + 5 + 20 + 5 + 1)
_Static_assert(QUOTA_KEY_MAX <= KEYS_MAX, "KEYS_MAX cannot hold a quota key");

/* Key names (see above); the length, or -1 if it does not fit. */
int quota_key_counter(char *out, size_t n, const char *prefix,
                      const char *sender, enum quota_kind kind,
                      int64_t start_ms);
int quota_key_wait(char *out, size_t n, const char *prefix, const char *sender);
int quota_key_pauses(char *out, size_t n, const char *prefix);
int quota_key_probes(char *out, size_t n, const char *prefix);

/* 1 when `s` is a sender name of the forms above ("relay",
 * "org:<org>", "scheme:<org>/<email>"). */
int quota_valid_sender(const char *s);

/*
 * Parses a <p>:pauses value "<until ms> <reason>": 0 and *until_ms (and
 * *reason pointing into s, "" when none), or -1 when malformed.
 */
int quota_parse_pause(const char *s, int64_t *until_ms, const char **reason);

/*
 * Every counter key K has a companion hash K:jobs holding, per job attempt
 * ("<job id>:<claim fence>"), how many recipients that attempt holds in
 * it. It makes both scripts safe to run twice (the worker re-sends an
 * operation whose reply a lost connection swallowed): a second TAKE of
 * the same attempt adds nothing, a second SETTLE gives nothing back.
 *
 * TAKE — one decision, atomic (EVALSHA with 2+k keys):
 *   KEYS[1] = <p>:pauses   KEYS[2] = <p>:quota:wait:<sender>
 *   KEYS[3..2+k] = the sender's counters (k = 0, 1 or 2)
 *   ARGV[1] = sender   ARGV[2] = job id   ARGV[3] = now ms
 *   ARGV[4] = n (recipients)   ARGV[5] = the attempt ("<id>:<fence>")
 *   then per counter i: ARGV[4+2i] = limit, ARGV[5+2i] = expire-at ms
 * Returns {0, 0}: taken (every counter += what this attempt does not hold
 * yet, the job leaves the waiting set); {-1, until}: the sender is paused
 * until `until`; {i, 0}: counter i (1-based) has no room for n (nothing
 * changed). The caller then adds the job to the waiting set with
 * QUOTA_WAIT_LUA's due time.
 */
#define QUOTA_TAKE_LUA                                                         \
    "local p = redis.call('HGET', KEYS[1], ARGV[1])\n"                         \
    "local now, n = tonumber(ARGV[3]), tonumber(ARGV[4])\n"                    \
    "if p then\n"                                                              \
    "  local u = tonumber(string.match(p, '^(%d+)'))\n"                        \
    "  if u and u > now then return {-1, u} end\n"                             \
    "end\n"                                                                    \
    "local need = {}\n"                                                        \
    "for i = 3, #KEYS do\n"                                                    \
    "  local lim = tonumber(ARGV[4 + 2 * (i - 2)])\n"                          \
    "  local held = tonumber(redis.call('HGET', KEYS[i] .. ':jobs', "          \
    "ARGV[5]) or '0')\n"                                                       \
    "  need[i] = math.max(0, n - held)\n"                                      \
    "  local used = tonumber(redis.call('GET', KEYS[i]) or '0')\n"             \
    "  if used + need[i] > lim then return {i - 2, 0} end\n"                   \
    "end\n"                                                                    \
    "for i = 3, #KEYS do\n"                                                    \
    "  local at = ARGV[5 + 2 * (i - 2)]\n"                                     \
    "  if need[i] > 0 then\n"                                                  \
    "    redis.call('INCRBY', KEYS[i], need[i])\n"                             \
    "    redis.call('HINCRBY', KEYS[i] .. ':jobs', ARGV[5], need[i])\n"        \
    "  end\n"                                                                  \
    "  redis.call('PEXPIREAT', KEYS[i], at)\n"                                 \
    "  redis.call('PEXPIREAT', KEYS[i] .. ':jobs', at)\n"                      \
    "end\n"                                                                    \
    "redis.call('ZREM', KEYS[2], ARGV[2])\n"                                   \
    "return {0, 0}\n"

/*
 * WAIT — the job waits for its sender (EVALSHA, 1 key):
 *   KEYS[1] = <p>:quota:wait:<sender>  ARGV[1] = job id  ARGV[2] = due ms
 *   ARGV[3] = now ms
 * Entries due more than a day ago are dropped (their job went elsewhere).
 */
#define QUOTA_WAIT_LUA                                                         \
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[3]) - "     \
    "86400000)\n"                                                              \
    "redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])\n"                          \
    "return 1\n"

/*
 * SETTLE — attempt ARGV[2] ("<id>:<fence>") keeps ARGV[1] recipients (the
 * accepted ones; 0 when the message was not accepted) in each counter
 * (EVALSHA, k keys: the counters the take counted in) and gives back the
 * rest of what it holds. Stating what is kept, not what is given, makes a
 * replay harmless; a counter never goes below 0, and one that expired
 * meanwhile is left alone.
 */
#define QUOTA_SETTLE_LUA                                                       \
    "for i = 1, #KEYS do\n"                                                    \
    "  local h = KEYS[i] .. ':jobs'\n"                                         \
    "  local held = tonumber(redis.call('HGET', h, ARGV[2]) or '0')\n"         \
    "  local keep = math.min(held, tonumber(ARGV[1]))\n"                       \
    "  local used = tonumber(redis.call('GET', KEYS[i]) or '0')\n"             \
    "  local d = math.min(held - keep, used)\n"                                \
    "  if d > 0 then\n"                                                        \
    "    redis.call('DECRBY', KEYS[i], d)\n"                                   \
    "  end\n"                                                                  \
    "  if keep <= 0 then\n"                                                    \
    "    redis.call('HDEL', h, ARGV[2])\n"                                     \
    "  elseif keep < held then\n"                                              \
    "    redis.call('HSET', h, ARGV[2], keep)\n"                               \
    "  end\n"                                                                  \
    "end\n"                                                                    \
    "return 1\n"

/*
 * PAUSE — pause a sender (EVALSHA, 1 key): KEYS[1] = <p>:pauses,
 * ARGV[1] = sender, ARGV[2] = until ms, ARGV[3] = reason. A later pause
 * already there wins.
 */
#define QUOTA_PAUSE_LUA                                                        \
    "local p = redis.call('HGET', KEYS[1], ARGV[1])\n"                         \
    "if p then\n"                                                              \
    "  local u = tonumber(string.match(p, '^(%d+)'))\n"                        \
    "  if u and u >= tonumber(ARGV[2]) then return 0 end\n"                    \
    "end\n"                                                                    \
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])\n"        \
    "return 1\n"

/*
 * PROBE — pause a sender whose refusal names no end (a greeting that
 * refuses us, "rate limited" without a time, a provider blocking the
 * sender): it is tried again soon, and each time it still refuses, twice
 * as late, up to a cap — instead of waiting for the next daily window
 * (EVALSHA, 2 keys): KEYS[1] = <p>:pauses, KEYS[2] = <p>:pause_probes;
 * ARGV[1] = sender, ARGV[2] = now ms, ARGV[3] = reason, ARGV[4] = first
 * step ms, ARGV[5] = the cap ms. A pause still running is left as it is
 * (the jobs of one probe that fail together double it once); otherwise
 * the step doubles when the last probe pause was set no longer ago than
 * twice its step and a minute (this failure is its probe failing), and
 * starts again from ARGV[4] after a quiet spell. Returns the pause's end.
 */
#define QUOTA_PROBE_LUA                                                        \
    "local now = tonumber(ARGV[2])\n"                                          \
    "local p = redis.call('HGET', KEYS[1], ARGV[1])\n"                         \
    "if p then\n"                                                              \
    "  local u = tonumber(string.match(p, '^(%d+)'))\n"                        \
    "  if u and u > now then return u end\n"                                   \
    "end\n"                                                                    \
    "local step = tonumber(ARGV[4])\n"                                         \
    "local last = redis.call('HGET', KEYS[2], ARGV[1])\n"                      \
    "if last then\n"                                                           \
    "  local s, at = string.match(last, '^(%d+) (%d+)$')\n"                    \
    "  s, at = tonumber(s), tonumber(at)\n"                                    \
    "  if s and at and now - at <= 2 * s + 60000 then\n"                       \
    "    step = math.min(2 * s, tonumber(ARGV[5]))\n"                          \
    "  end\n"                                                                  \
    "end\n"                                                                    \
    "local u = now + step\n"                                                   \
    "redis.call('HSET', KEYS[1], ARGV[1], u .. ' ' .. ARGV[3])\n"              \
    "redis.call('HSET', KEYS[2], ARGV[1], step .. ' ' .. now)\n"               \
    "return u\n"
#define QUOTA_PROBE_FIRST_MS 60000LL /* then 2, 4, 8 ... minutes */
#define QUOTA_PROBE_MAX_MS 3600000LL /* at most an hour */

/*
 * RESUME — an operator lifts a sender's pause and lets the jobs waiting
 * for it go (EVALSHA, 3 keys): KEYS[1] = <p>:pauses, KEYS[2] =
 * <p>:quota:wait:<sender>, KEYS[3] = <p>:scheduled; ARGV[1] = sender,
 * ARGV[2] = the new due time (ms). Every scheduled job whose id waits for
 * the sender is due then (ids found by one pass over the schedule); the
 * waiting set is emptied (jobs still over a quota come back to it).
 * Returns {1 if a pause was lifted, jobs moved}.
 */
#define QUOTA_RESUME_LUA                                                       \
    "local lifted = redis.call('HDEL', KEYS[1], ARGV[1])\n"                    \
    "local ids = redis.call('ZRANGE', KEYS[2], 0, -1)\n"                       \
    "local want, moved = {}, 0\n"                                              \
    "for _, id in ipairs(ids) do want[id] = true end\n"                        \
    "if #ids > 0 then\n"                                                       \
    "  local cursor = '0'\n"                                                   \
    "  repeat\n"                                                               \
    "    local r = redis.call('ZSCAN', KEYS[3], cursor, 'COUNT', 1000)\n"      \
    "    cursor = r[1]\n"                                                      \
    "    for i = 1, #r[2], 2 do\n"                                             \
    "      local m = r[2][i]\n"                                                \
    "      local ok, j = pcall(cjson.decode, m)\n"                             \
    "      if ok and type(j) == 'table' and type(j.id) == 'string' and\n"      \
    "         want[j.id] then\n"                                               \
    "        redis.call('ZADD', KEYS[3], ARGV[2], m)\n"                        \
    "        want[j.id] = nil\n"                                               \
    "        moved = moved + 1\n"                                              \
    "      end\n"                                                              \
    "    end\n"                                                                \
    "  until cursor == '0'\n"                                                  \
    "  redis.call('DEL', KEYS[2])\n"                                           \
    "end\n"                                                                    \
    "return {lifted, moved}\n"

#endif
