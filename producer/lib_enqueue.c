/*
 * lib_enqueue — pushing jobs: herald_enqueue and herald_enqueue_many
 * (pipelined), each job validated exactly as the worker does and pushed
 * in its canonical JSON onto its lane; lh_prepare and lh_lane_key, which
 * the dead-letter replay and the queue stats use too.
 */
#include "herald.h"
#include "keys.h"
#include "lib_internal.h"
#include "util.h"

#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A pipelined round trip is also cut when this many bytes are buffered,
 * so a batch of large jobs does not hold gigabytes in hiredis' buffer. */
#define HERALD_PIPELINE_BYTES (16u * 1024 * 1024)

int
lh_prepare(const char *json, size_t len, char **canon, enum job_priority *prio,
           char *id_out, struct herr *e)
{
    struct job *j = NULL;
    *canon = NULL;
    int rc = job_parse(json, len, &j, e);
    if (rc)
        return rc;
    if (j->id == NULL)
        job_assign_id(j);
    *canon = job_to_json(j);
    *prio = j->priority;
    if (id_out)
        snprintf(id_out, JOB_ID_MAX + 1, "%s", j->id);
    job_free(j);
    return 0;
}

int
lh_lane_key(struct herald *h, enum job_priority p, char *out, size_t n,
            struct herr *e)
{
    if (keys_queue(out, n, h->s->prefix, p) < 0)
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    return 0;
}

int
herald_enqueue(struct herald *h, const char *json, size_t len, char *id_out,
               struct herr *e)
{
    char *canon;
    enum job_priority prio;
    char id[JOB_ID_MAX + 1];
    char key[KEYS_MAX];
    int rc = lh_prepare(json, len, &canon, &prio, id, e);
    if (rc)
        return rc;
    rc = lh_lane_key(h, prio, key, sizeof key, e);
    if (rc == 0) {
        redisReply *r =
            lh_command(h, e, "LPUSH %s %b", key, canon, strlen(canon));
        if (r == NULL)
            rc = HERR_REDIS;
        else
            freeReplyObject(r);
    }
    free(canon);
    if (rc == 0 && id_out)
        memcpy(id_out, id, strlen(id) + 1);
    return rc;
}

int
herald_enqueue_many(struct herald *h, const struct herald_item *items, size_t n,
                    struct herald_result *results, struct herr *e)
{
    char keys[JOB_PRIO_COUNT][KEYS_MAX];
    for (int p = 0; p < JOB_PRIO_COUNT; p++) {
        int rc =
            lh_lane_key(h, (enum job_priority)p, keys[p], sizeof keys[p], e);
        if (rc)
            return rc;
    }
    size_t *pending = xmalloc(HERALD_PIPELINE_MAX * sizeof *pending);
    int failed = 0;    /* the connection failed: nothing more is sent */
    size_t errors = 0; /* error replies (WRONGTYPE, OOM, ...) */
    struct herr rerr = {{0}, {0}};
    size_t i = 0;
    while (i < n) {
        size_t np = 0, bytes = 0;
        /* Validate and append until the batch is full. */
        for (;
             i < n && np < HERALD_PIPELINE_MAX && bytes < HERALD_PIPELINE_BYTES;
             i++) {
            struct herald_result *res = &results[i];
            char *canon;
            enum job_priority prio;
            memset(res, 0, sizeof *res);
            res->rc = lh_prepare(items[i].json, items[i].len, &canon, &prio,
                                 res->id, &res->err);
            if (res->rc)
                continue;
            /* Connect only once a valid item needs it. */
            if (!failed && lh_need_redis(h, &rerr))
                failed = 1;
            if (failed) {
                res->rc = HERR_REDIS;
                res->err = rerr;
                res->id[0] = '\0';
                free(canon);
                continue;
            }
            size_t cl = strlen(canon);
            redisAppendCommand(h->c, "LPUSH %s %b", keys[prio], canon, cl);
            bytes += cl;
            free(canon);
            pending[np++] = i;
        }
        if (np == 0)
            continue;
        /* Read the replies one by one: an error reply fails its own
         * item only; an I/O failure leaves the rest unconfirmed. */
        for (size_t k = 0; k < np; k++) {
            struct herald_result *res = &results[pending[k]];
            void *rep = NULL;
            if (failed || redisGetReply(h->c, &rep) != REDIS_OK ||
                rep == NULL) {
                if (!failed) {
                    herr_set(&rerr, HERR_REDIS, "HERALD_REDIS", "%s: %s",
                             h->url,
                             h->c->errstr[0] ? h->c->errstr : "no reply");
                    lh_drop_redis(h);
                    failed = 1;
                }
                res->rc = HERR_REDIS;
                res->err = rerr;
                res->id[0] = '\0';
                continue;
            }
            redisReply *rr = rep;
            if (rr->type == REDIS_REPLY_ERROR) {
                res->rc = herr_set(&res->err, HERR_REDIS, NULL, "%s: %s",
                                   h->url, rr->str);
                res->id[0] = '\0';
                if (!errors++)
                    rerr = res->err;
            }
            freeReplyObject(rr);
        }
    }
    free(pending);
    if (failed || errors) {
        if (e)
            *e = rerr;
        return HERR_REDIS;
    }
    return 0;
}
