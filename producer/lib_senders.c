/*
 * lib_senders — the senders' quotas (relay, org:ORG, scheme:ORG/EMAIL):
 * herald_sender_resume (lift a pause, release the waiting jobs), and the
 * per-sender figures of herald_queue_stats (limits and windows from the
 * schemes and orgs hashes, pauses, used counters, waiting sets).
 */
#include "herald.h"
#include "keys.h"
#include "lib_internal.h"
#include "util.h"

#include <ctype.h>
#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
herald_sender_resume(struct herald *h, const char *sender, int64_t due_ms,
                     int *lifted, long long *moved, struct herr *e)
{
    *lifted = 0;
    *moved = 0;
    if (!quota_valid_sender(sender))
        return herr_set(e, HERR_INVALID, "SENDER",
                        "'%.80s' is not a sender (relay, org:ORG or "
                        "scheme:ORG/EMAIL)",
                        sender ? sender : "");
    /* a scheme's sender names the address lowercased (scheme_field) */
    char *name = xstrdup(sender);
    if (strncmp(name, "scheme:", 7) == 0)
        for (char *c = strchr(name, '/'); *c; c++)
            *c = (char)tolower((unsigned char)*c);
    char pauses[KEYS_MAX], wait[KEYS_MAX], sched[KEYS_MAX];
    if (keys_pauses(pauses, sizeof pauses, h->s->prefix) < 0 ||
        keys_simple(sched, sizeof sched, h->s->prefix, "scheduled") < 0) {
        free(name);
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    }
    if (keys_quota_wait(wait, sizeof wait, h->s->prefix, name) < 0) {
        free(name);
        return herr_set(e, HERR_TOOBIG, "SENDER", "too long for a key name");
    }
    char due[24];
    snprintf(due, sizeof due, "%lld", (long long)due_ms);
    const char *argv[5] = {pauses, wait, sched, name, due};
    redisReply *r = lh_script(h, e, RS_QUOTA_RESUME, 3, 5, argv, NULL);
    free(name);
    if (r == NULL)
        return HERR_REDIS;
    int rc = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        *lifted = lh_reply_int(r->element[0]) > 0;
        *moved = lh_reply_int(r->element[1]);
    } else {
        rc = herr_set(e, HERR_REDIS, NULL,
                      "unexpected reply to the resume "
                      "script");
    }
    freeReplyObject(r);
    return rc;
}

/* ---- quota figures of senders (herald_queue_stats) ---- */

/* The time zone a scheme's day windows follow; NULL is UTC. */
static const char *
scheme_zone(const struct scheme *s)
{
    return s->time_zone;
}

/* Zones loaded once per stats call, by name (few distinct ones). */
struct zone_cache {
    struct zone_entry {
        char *name;
        struct tzwin *z; /* NULL when it did not load */
        char *error;
    } * v;
    size_t n, cap;
};

static const struct zone_entry *
zone_get(struct zone_cache *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i].name, name) == 0)
            return &c->v[i];
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->v = xrealloc(c->v, c->cap * sizeof *c->v);
    }
    struct zone_entry *z = &c->v[c->n++];
    struct herr e = {{0}, {0}};
    z->name = xstrdup(name);
    z->z = NULL;
    z->error = NULL;
    if (tzwin_load(NULL, name, &z->z, &e) != 0) {
        char msg[HERR_FIELD_MAX + HERR_MSG_MAX + 8];
        herr_format(&e, msg, sizeof msg);
        z->error = xstrdup(msg);
        z->z = NULL;
    }
    return z;
}

static void
zone_cache_free(struct zone_cache *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].name);
        tzwin_free(c->v[i].z);
        free(c->v[i].error);
    }
    free(c->v);
}

struct sender_set {
    struct herald_sender_stat *v;
    size_t n, cap;
};

static struct herald_sender_stat *
sender_add(struct sender_set *s, const char *name)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    struct herald_sender_stat *x = &s->v[s->n++];
    memset(x, 0, sizeof *x);
    x->sender = xstrdup(name);
    return x;
}

static void
sender_window(struct herald_sender_stat *x, enum quota_kind kind,
              long long limit, const struct tzwin *tz, int64_t now_ms)
{
    struct herald_window_stat *w = &x->windows[x->nwindows++];
    struct quota_window qw;
    quota_window(kind, tz, now_ms, &qw);
    w->kind = kind;
    w->limit = limit;
    w->start_ms = qw.start_ms;
    w->end_ms = qw.end_ms;
}

/* org / email from a sender name without a record behind it. */
static void
sender_split(struct herald_sender_stat *x)
{
    const char *n = x->sender;
    if (strncmp(n, "scheme:", 7) == 0) {
        const char *slash = strchr(n + 7, '/');
        if (slash && slash > n + 7) {
            x->org = xstrndup(n + 7, (size_t)(slash - (n + 7)));
            x->email = xstrdup(slash + 1);
        }
    } else if (strncmp(n, "org:", 4) == 0 && n[4]) {
        x->org = xstrdup(n + 4);
    }
}

static int
cmp_sender(const void *a, const void *b)
{
    return strcmp(((const struct herald_sender_stat *)a)->sender,
                  ((const struct herald_sender_stat *)b)->sender);
}

/* Senders with a limit, from the schemes and orgs hashes. */
static void
limited_senders(const redisReply *schemes, const redisReply *orgs,
                int64_t now_ms, struct sender_set *set, struct zone_cache *zc,
                size_t *invalid)
{
    char name[SCHEME_FIELD_MAX + 16];
    size_t m = schemes->type == REDIS_REPLY_ARRAY ? schemes->elements / 2 : 0;
    for (size_t i = 0; i < m; i++) {
        const redisReply *f = schemes->element[2 * i],
                         *v = schemes->element[2 * i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        char *field = xstrndup(f->str, f->len);
        struct scheme *s = NULL;
        if (lh_scheme_decode_row(field, v->str, v->len, &s, NULL) != 0) {
            ++*invalid;
        } else if ((s->daily_limit || s->minute_limit) &&
                   quota_sender_scheme(name, sizeof name, field) >= 0) {
            struct herald_sender_stat *x = sender_add(set, name);
            x->org = xstrdup(s->org);
            x->email = xstrdup(s->email);
            if (s->daily_limit) {
                const struct tzwin *tz = NULL;
                const char *zone = scheme_zone(s);
                if (zone) {
                    const struct zone_entry *ze = zone_get(zc, zone);
                    x->time_zone = xstrdup(zone);
                    if (ze->error)
                        x->zone_error = xstrdup(ze->error);
                    tz = ze->z;
                }
                sender_window(x, QUOTA_DAY, s->daily_limit, tz, now_ms);
            }
            if (s->minute_limit)
                sender_window(x, QUOTA_MINUTE, s->minute_limit, NULL, now_ms);
        }
        scheme_free(s);
        free(field);
    }
    m = orgs->type == REDIS_REPLY_ARRAY ? orgs->elements / 2 : 0;
    for (size_t i = 0; i < m; i++) {
        const redisReply *f = orgs->element[2 * i],
                         *v = orgs->element[2 * i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        char *field = xstrndup(f->str, f->len);
        struct org *o = NULL;
        if (lh_org_decode_row(field, v->str, v->len, &o, NULL) != 0) {
            ++*invalid;
        } else if (o->relay_daily_limit &&
                   quota_sender_org(name, sizeof name, o->org) >= 0) {
            struct herald_sender_stat *x = sender_add(set, name);
            x->org = xstrdup(o->org);
            sender_window(x, QUOTA_DAY, o->relay_daily_limit, NULL, now_ms);
        }
        org_free(o);
        free(field);
    }
}

/* Active pauses onto the senders (sorted), adding senders without a
 * limit; the set is sorted again after. */
static void
paused_senders(const redisReply *pauses, int64_t now_ms, struct sender_set *set)
{
    size_t sorted = set->n;
    size_t m = pauses->type == REDIS_REPLY_ARRAY ? pauses->elements / 2 : 0;
    for (size_t i = 0; i < m; i++) {
        const redisReply *f = pauses->element[2 * i],
                         *v = pauses->element[2 * i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            f->len == 0 || memchr(f->str, '\0', f->len))
            continue;
        char *val = xstrndup(v->str, v->len);
        int64_t until;
        const char *reason;
        if (quota_parse_pause(val, &until, &reason) == 0 && until > now_ms) {
            struct herald_sender_stat key = {.sender =
                                                 xstrndup(f->str, f->len)};
            struct herald_sender_stat *x =
                sorted
                    ? bsearch(&key, set->v, sorted, sizeof *set->v, cmp_sender)
                    : NULL;
            if (x == NULL) {
                x = sender_add(set, key.sender);
                sender_split(x);
            }
            free(key.sender);
            x->paused_until = until;
            free(x->pause_reason);
            x->pause_reason = xstrdup(reason);
        }
        free(val);
    }
    if (set->n > sorted)
        qsort(set->v, set->n, sizeof *set->v, cmp_sender);
}

/* Counters and waiting sets, pipelined in pages of HERALD_PIPELINE_MAX
 * commands. */
static int
sender_counts(struct herald *h, struct herald_stats *out, struct herr *e)
{
    const char *prefix = h->s->prefix;
    redisReply **rr = xcalloc(HERALD_PIPELINE_MAX, sizeof *rr);
    int rc = 0;
    size_t i = 0;
    while (rc == 0 && i < out->nsenders) {
        if ((rc = lh_need_redis(h, e)) != 0)
            break;
        size_t first = i, ncmd = 0;
        for (; i < out->nsenders && ncmd + 3 <= HERALD_PIPELINE_MAX; i++) {
            const struct herald_sender_stat *x = &out->senders[i];
            size_t kn = strlen(prefix) + strlen(x->sender) + 64;
            char *key = xmalloc(kn);
            for (size_t w = 0; w < x->nwindows; w++) {
                keys_quota_counter(key, kn, prefix, x->sender,
                                   x->windows[w].kind == QUOTA_MINUTE,
                                   x->windows[w].start_ms);
                redisAppendCommand(h->c, "GET %s", key);
                ncmd++;
            }
            keys_quota_wait(key, kn, prefix, x->sender);
            redisAppendCommand(h->c, "ZCARD %s", key);
            ncmd++;
            free(key);
        }
        if ((rc = lh_read_replies_opt(h, ncmd, rr, 0, e)) != 0)
            break;
        out->unreadable += lh_count_errors(rr, ncmd);
        size_t k = 0;
        for (size_t j = first; j < i; j++) {
            struct herald_sender_stat *x = &out->senders[j];
            for (size_t w = 0; w < x->nwindows; w++, k++)
                if (rr[k]->type == REDIS_REPLY_STRING)
                    x->windows[w].used = strtoll(rr[k]->str, NULL, 10);
            x->waiting = lh_reply_int(rr[k++]);
        }
        for (size_t j = 0; j < ncmd; j++)
            freeReplyObject(rr[j]);
    }
    free(rr);
    return rc;
}

int
lh_sender_stats(struct herald *h, struct herald_stats *out, struct herr *e)
{
    char sk[KEYS_MAX], sv[KEYS_MAX], ok[KEYS_MAX], ov[KEYS_MAX];
    char pk[KEYS_MAX];
    int rc = lh_scheme_keys(h, sk, sv, e);
    if (rc == 0)
        rc = lh_org_keys(h, ok, ov, e);
    if (rc == 0 && keys_pauses(pk, sizeof pk, h->s->prefix) < 0)
        rc = herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    if (rc == 0)
        rc = lh_need_redis(h, e);
    if (rc)
        return rc;
    redisAppendCommand(h->c, "HGETALL %s", sk);
    redisAppendCommand(h->c, "HGETALL %s", ok);
    redisAppendCommand(h->c, "HGETALL %s", pk);
    redisReply *r[3] = {0};
    if ((rc = lh_read_replies_opt(h, 3, r, 0, e)) != 0)
        return rc;
    out->unreadable += lh_count_errors(r, 3);
    struct sender_set set = {0};
    struct zone_cache zc = {0};
    limited_senders(r[0], r[1], out->now_ms, &set, &zc, &out->invalid);
    if (set.n)
        qsort(set.v, set.n, sizeof *set.v, cmp_sender);
    paused_senders(r[2], out->now_ms, &set);
    for (int i = 0; i < 3; i++)
        freeReplyObject(r[i]);
    zone_cache_free(&zc);
    out->senders = set.v;
    out->nsenders = set.n;
    return sender_counts(h, out, e);
}
