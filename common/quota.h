/*
 * quota — sending quotas and sender pauses (SPEC §5, issue 4): fixed
 * windows and the Redis keys that count them (named by keys.h), taken
 * and given back atomically across the fleet by redis/quota_*.lua.
 * Window arithmetic is pure; the scripts run in Redis.
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

/* 1 when `s` is a sender name of the forms above ("relay",
 * "org:<org>", "scheme:<org>/<email>"). */
int quota_valid_sender(const char *s);

/*
 * Parses a <p>:pauses value "<until ms> <reason>": 0 and *until_ms (and
 * *reason pointing into s, "" when none), or -1 when malformed.
 */
int quota_parse_pause(const char *s, int64_t *until_ms, const char **reason);

/*
 * The scripts that change quotas and pauses are redis/quota_*.lua
 * (common/rscript.h): TAKE counts an attempt's recipients in the sender's
 * counters or says which one is full (or that the sender is paused),
 * SETTLE gives back what an attempt did not use, WAIT puts a job in the
 * sender's waiting set, PAUSE and PROBE pause a sender, RESUME lifts a
 * pause and lets its waiting jobs go. Every counter has a companion hash
 * (keys_quota_jobs) of what each attempt holds in it, which makes TAKE
 * and SETTLE safe to run twice. The key names are keys.h's.
 */
#define QUOTA_PROBE_FIRST_MS 60000LL /* then 2, 4, 8 ... minutes */
#define QUOTA_PROBE_MAX_MS 3600000LL /* at most an hour */

#endif
