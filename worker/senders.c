#include "senders.h"
#include "clock.h"
#include "log.h"
#include "org.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A small string map: organisation limits, pauses, loaded time zones. */
struct ent {
    struct ent *next;
    char *key;
    long long limit;  /* orgs */
    int64_t until;    /* pauses */
    char *reason;     /* pauses */
    struct tzwin *tz; /* zones (NULL: could not load: UTC) */
};

struct map {
    struct ent *b[256];
};

struct senders {
    struct queue *q; /* NULL: a detached table (senders_new_detached) */
    char *prefix;
    struct map orgs, pauses, zones;
    long long orgs_version;
    int loaded, polling_orgs, polling_pauses;
    long long err_ms; /* a failed read was last logged then */
    char k_orgs[KEYS_MAX], k_orgs_version[KEYS_MAX], k_pauses[KEYS_MAX];
    char k_probes[KEYS_MAX];
};

static struct ent *
map_get(const struct map *m, const char *key)
{
    for (struct ent *e = m->b[util_hash(key) & 255]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static struct ent *
map_put(struct map *m, const char *key)
{
    struct ent *e = map_get(m, key);
    if (e)
        return e;
    e = xcalloc(1, sizeof *e);
    e->key = xstrdup(key);
    struct ent **b = &m->b[util_hash(key) & 255];
    e->next = *b;
    *b = e;
    return e;
}

static void
map_clear(struct map *m)
{
    for (int i = 0; i < 256; i++) {
        struct ent *e = m->b[i];
        while (e) {
            struct ent *n = e->next;
            free(e->key);
            free(e->reason);
            tzwin_free(e->tz);
            free(e);
            e = n;
        }
        m->b[i] = NULL;
    }
}

struct senders *
senders_new(struct queue *q)
{
    struct senders *s = senders_new_detached(queue_prefix(q));
    s->q = q;
    return s;
}

struct senders *
senders_new_detached(const char *prefix)
{
    struct senders *s = xcalloc(1, sizeof *s);
    s->orgs_version = -1;
    s->prefix = xstrdup(prefix);
    const char *p = s->prefix;
    keys_simple(s->k_orgs, sizeof s->k_orgs, p, "orgs");
    keys_simple(s->k_orgs_version, sizeof s->k_orgs_version, p, "orgs:version");
    keys_pauses(s->k_pauses, sizeof s->k_pauses, p);
    keys_pause_probes(s->k_probes, sizeof s->k_probes, p);
    return s;
}

void
senders_free(struct senders *s)
{
    if (s == NULL)
        return;
    map_clear(&s->orgs);
    map_clear(&s->pauses);
    map_clear(&s->zones);
    free(s->prefix);
    free(s);
}

int
senders_loaded(const struct senders *s)
{
    return s->loaded;
}

/* ---- polling ---- */

/* A read of <p>:orgs failed (e.g. the key holds another type): read it
 * again at the next poll, and say so — until it is read, no job is
 * taken (a limit must not be skipped). */
static void
orgs_failed(struct senders *s, const redisReply *r)
{
    s->orgs_version = -1;
    if (log_due(&s->err_ms, 60000))
        log_msg(LOG_ERROR,
                "cannot read the organisations' relay limits; no job is taken "
                "until they can be read",
                "key", s->k_orgs, "error",
                r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply",
                NULL);
}

static void
on_orgs(void *ud, redisReply *r)
{
    struct senders *s = ud;
    s->polling_orgs = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
        orgs_failed(s, r);
        return;
    }
    size_t pairs = r->elements / 2, k = 0;
    const char **fields = xcalloc(pairs + 1, sizeof *fields);
    const char **values = xcalloc(pairs + 1, sizeof *values);
    size_t *lens = xcalloc(pairs + 1, sizeof *lens);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *f = r->element[i], *v = r->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        fields[k] = f->str;
        values[k] = v->str;
        lens[k++] = v->len;
    }
    senders_load_orgs(s, fields, values, lens, k);
    free(fields);
    free(values);
    free(lens);
}

void
senders_load_orgs(struct senders *s, const char *const *fields,
                  const char *const *values, const size_t *lens, size_t n_in)
{
    map_clear(&s->orgs);
    size_t n = 0;
    for (size_t i = 0; i < n_in; i++) {
        struct org *o = NULL;
        struct herr e;
        if (org_from_json(values[i], lens[i], &o, &e) != 0) {
            char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
            herr_format(&e, why, sizeof why);
            log_msg(LOG_ERROR, "organisation settings unreadable; ignored",
                    "org", fields[i], "error", why, NULL);
            continue;
        }
        if (o->relay_daily_limit > 0) {
            map_put(&s->orgs, o->org)->limit = o->relay_daily_limit;
            n++;
        }
        org_free(o);
    }
    if (!s->loaded || n) {
        char c[32];
        snprintf(c, sizeof c, "%zu", n);
        log_msg(LOG_INFO, "organisation relay limits loaded", "count", c, NULL);
    }
    if (!s->loaded) {
        s->loaded = 1;
        if (s->q)
            queue_kick(s->q);
    }
}

static void
on_orgs_version(void *ud, redisReply *r)
{
    struct senders *s = ud;
    long long v = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        s->polling_orgs = 0;
        orgs_failed(s, r);
        return;
    }
    if (r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    if (v == s->orgs_version) {
        s->polling_orgs = 0;
        return;
    }
    s->orgs_version = v;
    const char *argv[2] = {"HGETALL", s->k_orgs};
    size_t lens[2] = {7, strlen(s->k_orgs)};
    queue_command(s->q, 2, argv, lens, on_orgs, s);
}

/* The pauses in Redis are the truth: the local table becomes a copy (a
 * pause of ours not yet written is ahead in the same connection, so it is
 * in this reply). A pause an operator deleted (HDEL <p>:pauses SENDER)
 * ends here at the next poll. */
static void
on_pauses(void *ud, redisReply *r)
{
    struct senders *s = ud;
    s->polling_pauses = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0)
        return;
    int64_t now = clock_now_ms();
    struct map fresh;
    memset(&fresh, 0, sizeof fresh);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *f = r->element[i], *v = r->element[i + 1];
        int64_t until;
        const char *why;
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            quota_parse_pause(v->str, &until, &why) != 0 || until <= now)
            continue;
        const struct ent *old = map_get(&s->pauses, f->str);
        if (old == NULL || old->until <= now) {
            char u[CLOCK_RFC3339_LEN];
            clock_rfc3339(until, u);
            log_msg(LOG_WARN, "sender paused (seen in Redis)", "sender", f->str,
                    "until", u, "reason", why, NULL);
        }
        struct ent *e = map_put(&fresh, f->str);
        e->until = until;
        e->reason = xstrdup(why);
    }
    for (int b = 0; b < 256; b++)
        for (const struct ent *e = s->pauses.b[b]; e; e = e->next)
            if (e->until > now && map_get(&fresh, e->key) == NULL)
                log_msg(LOG_WARN, "sender pause lifted in Redis", "sender",
                        e->key, NULL);
    map_clear(&s->pauses);
    s->pauses = fresh;
}

void
senders_poll(struct senders *s)
{
    if (!s->polling_orgs) {
        s->polling_orgs = 1;
        const char *argv[2] = {"GET", s->k_orgs_version};
        size_t lens[2] = {3, strlen(s->k_orgs_version)};
        queue_command(s->q, 2, argv, lens, on_orgs_version, s);
    }
    if (!s->polling_pauses) {
        s->polling_pauses = 1;
        const char *argv[2] = {"HGETALL", s->k_pauses};
        size_t lens[2] = {7, strlen(s->k_pauses)};
        queue_command(s->q, 2, argv, lens, on_pauses, s);
    }
}

/* ---- plans ---- */

static const struct tzwin *
zone(struct senders *s, const char *name)
{
    if (name == NULL)
        return NULL;
    struct ent *e = map_get(&s->zones, name);
    if (e)
        return e->tz;
    e = map_put(&s->zones, name);
    struct herr err;
    if (tzwin_load(NULL, name, &e->tz, &err) != 0) {
        char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&err, why, sizeof why);
        log_msg(LOG_ERROR,
                "a scheme's time zone cannot be loaded here; its daily "
                "window is the UTC day",
                "time_zone", name, "error", why, NULL);
        e->tz = NULL;
    }
    return e->tz;
}

static void
add_counter(struct senders *s, struct sender_plan *p, enum quota_kind kind,
            long long limit, const struct tzwin *tz, int64_t now_ms)
{
    int i = p->n;
    p->kind[i] = kind;
    p->limit[i] = limit;
    quota_window(kind, tz, now_ms, &p->win[i]);
    /* A limit is never skipped: every valid name fits (quota.h checks
     * KEYS_MAX at compile time), so a key that does not is a bug. */
    if (keys_quota_counter(p->key[i], sizeof p->key[i], s->prefix,
                           p->count_sender, kind == QUOTA_MINUTE,
                           p->win[i].start_ms) < 0) {
        log_msg(LOG_FATAL, "a quota key does not fit KEYS_MAX", "sender",
                p->count_sender, NULL);
        abort();
    }
    p->n++;
}

void
senders_plan(struct senders *s, const struct route *rt, const char *org,
             int64_t now_ms, struct sender_plan *out)
{
    /* no memset: the ~1.3 KB of names and keys are read only up to n */
    out->n = 0;
    out->count_sender[0] = '\0';
    out->pause_sender[0] = '\0';
    if (rt->path == ROUTE_SCHEME && rt->scheme_field) {
        quota_sender_scheme(out->pause_sender, sizeof out->pause_sender,
                            rt->scheme_field);
        if (rt->daily_limit || rt->minute_limit) {
            snprintf(out->count_sender, sizeof out->count_sender, "%s",
                     out->pause_sender);
            if (rt->daily_limit)
                add_counter(s, out, QUOTA_DAY, rt->daily_limit,
                            zone(s, rt->time_zone), now_ms);
            if (rt->minute_limit)
                add_counter(s, out, QUOTA_MINUTE, rt->minute_limit, NULL,
                            now_ms);
        }
        return;
    }
    snprintf(out->pause_sender, sizeof out->pause_sender, "%s",
             QUOTA_SENDER_RELAY);
    const struct ent *e = org ? map_get(&s->orgs, org) : NULL;
    if (e && e->limit > 0) {
        quota_sender_org(out->count_sender, sizeof out->count_sender, org);
        add_counter(s, out, QUOTA_DAY, e->limit, NULL, now_ms);
    }
}

int64_t
senders_next_day(struct senders *s, const struct route *rt, int64_t now_ms)
{
    struct quota_window w;
    quota_window(QUOTA_DAY,
                 rt->path == ROUTE_SCHEME ? zone(s, rt->time_zone) : NULL,
                 now_ms, &w);
    return w.end_ms;
}

int64_t
senders_paused(const struct senders *s, const char *sender, int64_t now_ms,
               const char **reason)
{
    const struct ent *e = map_get(&s->pauses, sender);
    if (e == NULL || e->until <= now_ms)
        return 0;
    if (reason)
        *reason = e->reason ? e->reason : "";
    return e->until;
}

/* ---- Redis ---- */

struct take_op {
    senders_take_fn *cb;
    void *ud;
};

static void
on_take(void *ud, redisReply *r)
{
    struct take_op *op = ud;
    int verdict = -2;
    int64_t until = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->type == REDIS_REPLY_INTEGER) {
        verdict = (int)r->element[0]->integer;
        until = r->element[1]->integer;
    } else if (r->type == REDIS_REPLY_ERROR) {
        log_msg(LOG_ERROR, "quota script failed", "error", r->str, NULL);
    }
    senders_take_fn *cb = op->cb;
    void *cud = op->ud;
    free(op);
    cb(cud, verdict, until);
}

struct probe_op {
    struct senders *s;
    senders_probe_fn *cb;
    void *ud;
    int64_t now;
    char *sender, *reason;
};

static void
on_probe(void *ud, redisReply *r)
{
    struct probe_op *op = ud;
    int64_t until = op->now + QUOTA_PROBE_FIRST_MS;
    if (r->type == REDIS_REPLY_INTEGER)
        until = r->integer;
    else
        log_msg(LOG_ERROR, "pause script failed", "sender", op->sender, "error",
                r->type == REDIS_REPLY_ERROR ? r->str : "bad reply", NULL);
    struct ent *e = map_get(&op->s->pauses, op->sender);
    if (e == NULL || e->until < until) {
        e = map_put(&op->s->pauses, op->sender);
        e->until = until;
        free(e->reason);
        e->reason = xstrdup(op->reason);
    }
    senders_probe_fn *cb = op->cb;
    void *cud = op->ud;
    free(op->sender);
    free(op->reason);
    free(op);
    cb(cud, until);
}

void
senders_probe(struct senders *s, const char *sender, const char *reason,
              int64_t now_ms, senders_probe_fn *cb, void *ud)
{
    struct probe_op *op = xcalloc(1, sizeof *op);
    op->s = s;
    op->cb = cb;
    op->ud = ud;
    op->now = now_ms;
    op->sender = xstrdup(sender);
    op->reason = xstrdup(reason);
    char now[24], first[24], cap[24];
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    snprintf(first, sizeof first, "%lld", QUOTA_PROBE_FIRST_MS);
    snprintf(cap, sizeof cap, "%lld", QUOTA_PROBE_MAX_MS);
    const char *argv[7] = {s->k_pauses, s->k_probes, sender, now,
                           reason,      first,       cap};
    queue_script(s->q, RS_QUOTA_PROBE, 2, 7, argv, NULL, on_probe, op);
}

/* "<job id>:<fence>": one attempt's holding in the counters. */
static void
attempt_name(char *out, size_t n, const char *id, long long fence)
{
    snprintf(out, n, "%s:%lld", id, fence);
}

void
senders_take(struct senders *s, const struct sender_plan *p, const char *id,
             long long fence, int n, int64_t now_ms, senders_take_fn *cb,
             void *ud)
{
    char wait[KEYS_MAX], jobs[2][KEYS_MAX], now[24], cnt[24], lim[2][24],
        exp[2][24];
    char att[JOB_ID_MAX + 32];
    attempt_name(att, sizeof att, id, fence);
    keys_quota_wait(wait, sizeof wait, s->prefix, p->count_sender);
    const char *argv[16];
    int a = 0;
    argv[a++] = s->k_pauses;
    argv[a++] = wait;
    for (int i = 0; i < p->n; i++)
        argv[a++] = p->key[i];
    for (int i = 0; i < p->n; i++) {
        keys_quota_jobs(jobs[i], sizeof jobs[i], p->key[i]);
        argv[a++] = jobs[i];
    }
    argv[a++] = p->pause_sender;
    argv[a++] = id;
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    argv[a++] = now;
    snprintf(cnt, sizeof cnt, "%d", n);
    argv[a++] = cnt;
    argv[a++] = att;
    for (int i = 0; i < p->n; i++) {
        snprintf(lim[i], sizeof lim[i], "%lld", p->limit[i]);
        /* kept a day past the window, for queue stats */
        snprintf(exp[i], sizeof exp[i], "%lld",
                 (long long)(p->win[i].end_ms + 86400000LL));
        argv[a++] = lim[i];
        argv[a++] = exp[i];
    }
    struct take_op *op = xmalloc(sizeof *op);
    op->cb = cb;
    op->ud = ud;
    queue_script(s->q, RS_QUOTA_TAKE, 2 + 2 * p->n, a, argv, NULL, on_take, op);
}

void
senders_settle(struct senders *s, const struct sender_plan *p, const char *id,
               long long fence, int keep)
{
    if (p->n == 0)
        return;
    char jobs[2][KEYS_MAX], cnt[24], att[JOB_ID_MAX + 32];
    attempt_name(att, sizeof att, id, fence);
    const char *argv[6];
    int a = 0;
    for (int i = 0; i < p->n; i++)
        argv[a++] = p->key[i];
    for (int i = 0; i < p->n; i++) {
        keys_quota_jobs(jobs[i], sizeof jobs[i], p->key[i]);
        argv[a++] = jobs[i];
    }
    snprintf(cnt, sizeof cnt, "%d", keep < 0 ? 0 : keep);
    argv[a++] = cnt;
    argv[a++] = att;
    queue_script(s->q, RS_QUOTA_SETTLE, 2 * p->n, a, argv, NULL, NULL, NULL);
}

void
senders_wait(struct senders *s, const char *sender, const char *id,
             int64_t due_ms, int64_t now_ms)
{
    char wait[KEYS_MAX], due[24], now[24];
    if (keys_quota_wait(wait, sizeof wait, s->prefix, sender) < 0)
        return;
    snprintf(due, sizeof due, "%lld", (long long)due_ms);
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    const char *argv[4] = {wait, id, due, now};
    queue_script(s->q, RS_QUOTA_WAIT, 1, 4, argv, NULL, NULL, NULL);
}

void
senders_pause(struct senders *s, const char *sender, int64_t until_ms,
              const char *reason)
{
    struct ent *e = map_get(&s->pauses, sender);
    if (e && e->until >= until_ms)
        return;
    e = map_put(&s->pauses, sender);
    e->until = until_ms;
    free(e->reason);
    e->reason = xstrdup(reason);
    char u[24];
    snprintf(u, sizeof u, "%lld", (long long)until_ms);
    const char *argv[4] = {s->k_pauses, sender, u, reason};
    queue_script(s->q, RS_QUOTA_PAUSE, 1, 4, argv, NULL, NULL, NULL);
}
