/*
 * lib_queue — herald_queue_stats: the lanes' lengths (with what a take
 * staged), scheduled and dead counts, the workers (registered by
 * heartbeat, or found by their processing lists) with what each holds;
 * the senders' quota figures come from lib_senders.c.
 */
#include "herald.h"
#include "clock.h"
#include "keys.h"
#include "lib_internal.h"
#include "util.h"

#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
cmp_worker(const void *a, const void *b)
{
    const struct herald_worker_stat *x = a, *y = b;
    if (x->registered != y->registered)
        return y->registered - x->registered;
    return strcmp(x->id, y->id);
}

static int
has_worker(const struct herald_stats *s, const char *id)
{
    for (size_t i = 0; i < s->nworkers; i++)
        if (strcmp(s->workers[i].id, id) == 0)
            return 1;
    return 0;
}

/* Adds every <p>:processing:<id> list without a workers entry. */
static int
scan_processing(struct herald *h, struct herald_stats *s, size_t *cap,
                struct herr *e)
{
    char pattern[KEYS_MAX];
    if (keys_processing(pattern, sizeof pattern, h->s->prefix, "*") < 0)
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    size_t skip = strlen(pattern) - 1; /* the name minus the '*' */
    char cursor[32] = "0";
    do {
        redisReply *r =
            lh_command(h, e, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL)
            return HERR_REDIS;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            return herr_set(e, HERR_REDIS, NULL, "%s: unexpected SCAN reply",
                            h->url);
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            const redisReply *k = keys->element[i];
            if (k->type != REDIS_REPLY_STRING || k->len <= skip)
                continue;
            const char *id = k->str + skip;
            if (has_worker(s, id))
                continue;
            if (s->nworkers == *cap) {
                *cap = *cap ? *cap * 2 : 8;
                s->workers = xrealloc(s->workers, *cap * sizeof *s->workers);
            }
            struct herald_worker_stat *w = &s->workers[s->nworkers++];
            memset(w, 0, sizeof *w);
            w->id = xstrdup(id);
            w->age_ms = -1;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

int
herald_queue_stats(struct herald *h, struct herald_stats *out, struct herr *e)
{
    memset(out, 0, sizeof *out);
    char k[6][KEYS_MAX], staged[JOB_PRIO_COUNT][KEYS_MAX];
    for (int p = 0; p < JOB_PRIO_COUNT; p++)
        if (lh_lane_key(h, (enum job_priority)p, k[p], sizeof k[p], e) ||
            keys_fair(staged[p], KEYS_MAX, h->s->prefix, (enum job_priority)p,
                      "staged") < 0)
            return HERR_INVALID;
    if (keys_simple(k[3], KEYS_MAX, h->s->prefix, "scheduled") < 0 ||
        keys_simple(k[4], KEYS_MAX, h->s->prefix, "dead") < 0 ||
        keys_simple(k[5], KEYS_MAX, h->s->prefix, "workers") < 0)
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    int rc = lh_need_redis(h, e);
    if (rc)
        return rc;
    for (int p = 0; p < JOB_PRIO_COUNT; p++)
        redisAppendCommand(h->c, "LLEN %s", k[p]);
    redisAppendCommand(h->c, "ZCARD %s", k[3]);
    redisAppendCommand(h->c, "LLEN %s", k[4]);
    redisAppendCommand(h->c, "HGETALL %s", k[5]);
    for (int p = 0; p < JOB_PRIO_COUNT; p++)
        redisAppendCommand(h->c, "GET %s", staged[p]);
    redisReply *r[6 + JOB_PRIO_COUNT] = {0};
    rc = lh_read_replies(h, 6 + JOB_PRIO_COUNT, r, e);
    if (rc)
        return rc;
    out->now_ms = clock_now_ms();
    /* a lane: its list and the jobs a take staged by organisation */
    for (int p = 0; p < JOB_PRIO_COUNT; p++) {
        const redisReply *st = r[6 + p];
        out->queue[p] = lh_reply_int(r[p]);
        if (st->type == REDIS_REPLY_STRING)
            out->queue[p] += strtoll(st->str, NULL, 10);
    }
    out->scheduled = lh_reply_int(r[3]);
    out->dead = lh_reply_int(r[4]);
    size_t cap = 0;
    if (r[5]->type == REDIS_REPLY_ARRAY) {
        cap = r[5]->elements / 2;
        out->workers = xcalloc(cap ? cap : 1, sizeof *out->workers);
        for (size_t i = 0; i + 1 < r[5]->elements; i += 2) {
            const redisReply *f = r[5]->element[i], *v = r[5]->element[i + 1];
            if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
                continue;
            struct herald_worker_stat *w = &out->workers[out->nworkers++];
            w->id = xstrndup(f->str, f->len);
            w->registered = 1;
            char *end;
            long long hb = strtoll(v->str, &end, 10);
            if (end != v->str && *end == '\0' && hb > 0) {
                w->heartbeat_ms = hb;
                w->age_ms = out->now_ms > hb ? out->now_ms - hb : 0;
            } else {
                w->age_ms = -1;
            }
        }
    }
    for (int i = 0; i < 6 + JOB_PRIO_COUNT; i++)
        freeReplyObject(r[i]);
    rc = scan_processing(h, out, &cap, e);
    if (rc) {
        herald_stats_free(out);
        return rc;
    }
    if (out->nworkers > 0)
        qsort(out->workers, out->nworkers, sizeof *out->workers, cmp_worker);
    /* Processing lengths, one pipelined round trip per page. */
    for (size_t i = 0; i < out->nworkers; i += HERALD_PIPELINE_MAX) {
        size_t m = out->nworkers - i;
        if (m > HERALD_PIPELINE_MAX)
            m = HERALD_PIPELINE_MAX;
        rc = lh_need_redis(h, e);
        for (size_t j = 0; rc == 0 && j < m; j++) {
            char key[KEYS_MAX];
            if (keys_processing(key, sizeof key, h->s->prefix,
                                out->workers[i + j].id) < 0)
                snprintf(key, sizeof key, "%s", ""); /* LLEN "" = 0 */
            redisAppendCommand(h->c, "LLEN %s", key);
        }
        redisReply **rr = xcalloc(m, sizeof *rr);
        if (rc == 0)
            rc = lh_read_replies(h, m, rr, e);
        if (rc == 0) {
            for (size_t j = 0; j < m; j++) {
                out->workers[i + j].processing = lh_reply_int(rr[j]);
                freeReplyObject(rr[j]);
            }
        }
        free(rr);
        if (rc) {
            herald_stats_free(out);
            return rc;
        }
    }
    rc = lh_sender_stats(h, out, e);
    if (rc)
        herald_stats_free(out);
    return rc;
}

void
herald_stats_free(struct herald_stats *s)
{
    for (size_t i = 0; i < s->nworkers; i++)
        free(s->workers[i].id);
    free(s->workers);
    for (size_t i = 0; i < s->nsenders; i++) {
        struct herald_sender_stat *x = &s->senders[i];
        free(x->sender);
        free(x->org);
        free(x->email);
        free(x->time_zone);
        free(x->zone_error);
        free(x->pause_reason);
    }
    free(s->senders);
    memset(s, 0, sizeof *s);
}
