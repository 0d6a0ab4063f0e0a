/*
 * lib_dead — the dead-letter list: herald_dead_list (read in pages,
 * newest first) and herald_dead_replay (oldest first, each entry
 * validated again and moved to its lane only while it is still in the
 * list).
 */
#include "herald.h"
#include "keys.h"
#include "lib_internal.h"
#include "util.h"

#include <hiredis.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* The "id" string inside a raw job, if it is a JSON object with one. */
static char *
raw_job_id(const char *job, size_t len)
{
    json_t *o = json_loadb(job, len, 0, NULL);
    char *id = NULL;
    json_t *v = json_object_get(o, "id");
    if (json_is_string(v) && json_string_length(v) > 0)
        id = xstrndup(json_string_value(v), json_string_length(v));
    json_decref(o);
    return id;
}

static void
dead_fill(struct herald_dead *d, const char *raw, size_t len)
{
    memset(d, 0, sizeof *d);
    d->raw = xstrndup(raw, len);
    d->rawlen = len;
    d->parsed = dead_entry_parse(raw, len, &d->entry) == 0;
    if (!d->parsed)
        return;
    if (d->entry.id && d->entry.id[0])
        d->job_id = xstrdup(d->entry.id);
    else
        d->job_id = raw_job_id(d->entry.job, d->entry.joblen);
}

/*
 * Reads up to `limit` entries (0 = all) of the dead list in pages. From
 * the head: newest first. From the tail: oldest first, with negative
 * indices, which stay valid while workers LPUSH new entries meanwhile
 * (so a long read neither repeats nor skips an entry).
 */
static int
dead_range(struct herald *h, size_t limit, int from_tail,
           struct herald_dead **out, size_t *n, struct herr *e)
{
    *out = NULL;
    *n = 0;
    char key[KEYS_MAX];
    if (keys_simple(key, sizeof key, h->s->prefix, "dead") < 0)
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    struct herald_dead *v = NULL;
    size_t nv = 0, cap = 0;
    long long pos = 0; /* entries read so far */
    for (;;) {
        long long page = HERALD_DEAD_PAGE;
        if (limit && limit - (size_t)pos < (size_t)page)
            page = (long long)(limit - (size_t)pos);
        if (page == 0)
            break;
        long long first = pos, last = pos + page - 1;
        if (from_tail) {
            first = -(pos + page);
            last = -(pos + 1);
        }
        redisReply *r =
            lh_command(h, e, "LRANGE %s %lld %lld", key, first, last);
        if (r == NULL) {
            herald_dead_free(v, nv);
            return HERR_REDIS;
        }
        size_t got = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
        if (nv + got > cap) {
            cap = (nv + got) * 2;
            v = xrealloc(v, cap * sizeof *v);
        }
        for (size_t i = 0; i < got; i++) {
            /* A tail page comes newest first too: walk it backwards. */
            const redisReply *el = r->element[from_tail ? got - 1 - i : i];
            if (el->type == REDIS_REPLY_STRING)
                dead_fill(&v[nv++], el->str, el->len);
        }
        freeReplyObject(r);
        pos += (long long)got;
        if (got < (size_t)page)
            break;
    }
    *out = v;
    *n = nv;
    return 0;
}

int
herald_dead_list(struct herald *h, size_t limit, struct herald_dead **out,
                 size_t *n, struct herr *e)
{
    return dead_range(h, limit, 0, out, n, e);
}

void
herald_dead_free(struct herald_dead *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].raw);
        free(v[i].job_id);
        if (v[i].parsed)
            dead_entry_free(&v[i].entry);
    }
    free(v);
}

/* Validates and moves one entry; fills r->rc, r->err, r->lane, id. */
static int
replay_one(struct herald *h, const struct herald_dead *d, const char *dkey,
           struct herald_replay *r, char *id, struct herr *e)
{
    if (!d->parsed) {
        r->rc = herr_set(&r->err, HERR_INVALID, NULL,
                         "not a dead-letter entry (unparseable)");
        return 0;
    }
    char *canon;
    enum job_priority prio;
    r->rc =
        lh_prepare(d->entry.job, d->entry.joblen, &canon, &prio, id, &r->err);
    if (r->rc)
        return 0;
    r->lane = prio;
    r->job_id = id;
    char lane[KEYS_MAX];
    int rc = lh_lane_key(h, prio, lane, sizeof lane, e);
    if (rc) {
        free(canon);
        return rc;
    }
    /* redis/dead_replay.lua: concurrent replays push the job once */
    const char *argv[4] = {dkey, lane, d->raw, canon};
    size_t lens[4] = {strlen(dkey), strlen(lane), d->rawlen, strlen(canon)};
    redisReply *rep = lh_script(h, e, RS_DEAD_REPLAY, 2, 4, argv, lens);
    free(canon);
    if (rep == NULL) {
        r->rc = HERR_REDIS;
        if (e)
            r->err = *e;
        return HERR_REDIS;
    }
    if (lh_reply_int(rep) != 1)
        r->rc = herr_set(&r->err, HERR_NOTFOUND, NULL,
                         "no longer in the dead list (replayed elsewhere?)");
    freeReplyObject(rep);
    return 0;
}

int
herald_dead_replay(struct herald *h, const char *const *ids, size_t nids,
                   herald_replay_cb cb, void *arg, size_t *replayed,
                   size_t *kept, struct herr *e)
{
    size_t nrep = 0, nkept = 0;
    if (replayed)
        *replayed = 0;
    if (kept)
        *kept = 0;
    char dkey[KEYS_MAX];
    if (keys_simple(dkey, sizeof dkey, h->s->prefix, "dead") < 0)
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    struct herald_dead *v;
    size_t n;
    int rc = dead_range(h, 0, 1, &v, &n, e);
    if (rc)
        return rc;
    char *found = xcalloc(nids ? nids : 1, 1);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct herald_dead *d = &v[i];
        const char *requested = NULL;
        if (ids) {
            for (size_t k = 0; k < nids; k++) {
                if (d->job_id && strcmp(d->job_id, ids[k]) == 0) {
                    requested = ids[k];
                    found[k] = 1;
                }
            }
            if (requested == NULL)
                continue;
        }
        struct herald_replay r;
        char id[JOB_ID_MAX + 1] = "";
        memset(&r, 0, sizeof r);
        r.d = d;
        r.requested = requested;
        r.job_id = d->job_id;
        rc = replay_one(h, d, dkey, &r, id, e);
        if (r.rc == 0)
            nrep++;
        else
            nkept++;
        if (cb)
            cb(arg, &r);
    }
    for (size_t k = 0; ids && rc == 0 && k < nids; k++) {
        if (found[k])
            continue;
        /* The same id given twice is reported once. */
        int dup = 0;
        for (size_t j = 0; j < k; j++)
            dup |= strcmp(ids[j], ids[k]) == 0;
        if (dup)
            continue;
        struct herald_replay r;
        memset(&r, 0, sizeof r);
        r.requested = ids[k];
        r.rc = herr_set(&r.err, HERR_NOTFOUND, NULL,
                        "no dead-letter entry for this id");
        nkept++;
        if (cb)
            cb(arg, &r);
    }
    free(found);
    herald_dead_free(v, n);
    if (replayed)
        *replayed = nrep;
    if (kept)
        *kept = nkept;
    return rc;
}
