/*
 * senders — quotas and pauses on the worker (SPEC §5; keys and scripts:
 * common/quota.h).
 *
 * For each routed job the worker asks senders_plan() what counts it
 * (the scheme's daily and minute limits, or the organisation's daily
 * limit on the platform relay) and who can be paused (the scheme, or the
 * relay). Before a transaction:
 *   - a sender paused (known locally, or in Redis) sends nothing: the
 *     job waits, deferred, until the pause ends;
 *   - a job with counters takes its recipients from them in one atomic
 *     script (senders_take); no room: it waits for the next window.
 * Recipients not accepted are given back (senders_settle). A provider's
 * throttle reply pauses the sender fleet-wide (senders_pause).
 *
 * Organisation limits (<p>:orgs, common/org.h) are reloaded when
 * <p>:orgs:version moves, pauses (<p>:pauses) read again: both on
 * senders_poll(), about once a second.
 */
#ifndef HERALD_SENDERS_H
#define HERALD_SENDERS_H

#include "job.h"
#include "keys.h"
#include "queue.h"
#include "quota.h"
#include "resolver.h"

#include <stdint.h>

#define SENDER_MAX (SCHEME_FIELD_MAX + 16)

struct senders;

struct sender_plan {
    char pause_sender[SENDER_MAX]; /* "scheme:…" or "relay" */
    char count_sender[SENDER_MAX]; /* "scheme:…", "org:…" or "" (no limit) */
    int n;                         /* counters: 0, 1 or 2 */
    enum quota_kind kind[2];
    long long limit[2];
    struct quota_window win[2];
    char key[2][KEYS_MAX];
};

struct senders *senders_new(struct queue *q);
/* Without a queue (unit tests): plans and pauses only, nothing polled or
 * sent; key names under `prefix`. */
struct senders *senders_new_detached(const char *prefix);
void senders_free(struct senders *s);

/* Replaces the organisations' relay limits by the n stored (org, value)
 * pairs of <p>:orgs (HGETALL's, or a unit test's); an unreadable value
 * is logged and left out. */
void senders_load_orgs(struct senders *s, const char *const *fields,
                       const char *const *values, const size_t *lens, size_t n);

/* Re-reads organisation limits (when changed) and pauses. */
void senders_poll(struct senders *s);

/* 1 once organisation limits have been read. */
int senders_loaded(const struct senders *s);

/* What limits a job routed `rt` for `org` at now_ms. */
void senders_plan(struct senders *s, const struct route *rt, const char *org,
                  int64_t now_ms, struct sender_plan *out);

/* When `sender` is paused at now_ms: the end of the pause (and *reason),
 * else 0. */
int64_t senders_paused(const struct senders *s, const char *sender,
                       int64_t now_ms, const char **reason);

/*
 * Takes n recipients for job `id`'s attempt under claim `fence` (see
 * redis/quota_take.lua: taking twice for one attempt counts once). cb gets:
 * verdict 0 taken; -1 paused until `until_ms`; i >= 1: counter i of the
 * plan is full (it resets at plan->win[i-1].end_ms); -2 Redis failed.
 */
typedef void senders_take_fn(void *ud, int verdict, int64_t until_ms);
void senders_take(struct senders *s, const struct sender_plan *p,
                  const char *id, long long fence, int n, int64_t now_ms,
                  senders_take_fn *cb, void *ud);

/* Settles attempt (id, fence) of plan p: it keeps `keep` recipients (the
 * accepted ones) in the counters and gives the rest back. Idempotent. */
void senders_settle(struct senders *s, const struct sender_plan *p,
                    const char *id, long long fence, int keep);

/* Job `id` waits for the plan's sender until due_ms (queue stats). */
void senders_wait(struct senders *s, const char *sender, const char *id,
                  int64_t due_ms, int64_t now_ms);

/*
 * Pauses `sender` for a refusal that names no end and no quota window
 * (redis/quota_probe.lua): a minute, then twice as long each time its probe
 * fails again, at most an hour. cb gets the pause's end (known locally at
 * once too), or, when Redis failed, now + QUOTA_PROBE_FIRST_MS; it runs
 * once, never synchronously.
 */
typedef void senders_probe_fn(void *ud, int64_t until_ms);
void senders_probe(struct senders *s, const char *sender, const char *reason,
                   int64_t now_ms, senders_probe_fn *cb, void *ud);

/* Pauses `sender` until until_ms, here at once and fleet-wide. */
void senders_pause(struct senders *s, const char *sender, int64_t until_ms,
                   const char *reason);

/* The start of the next day window for the route's sender (its scheme's
 * time zone, else UTC) after now_ms. */
int64_t senders_next_day(struct senders *s, const struct route *rt,
                         int64_t now_ms);

#endif
