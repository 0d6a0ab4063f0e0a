/*
 * lib_versioned — the versioned hashes that hold schemes (<prefix>:schemes)
 * and organisations (<prefix>:orgs), each with a version counter the
 * worker watches: read a field, compare-and-set it (redis/scheme_cas.lua
 * bumps the counter), and lh_versioned_update, the read-modify-write
 * loop every writer of either goes through.
 */
#include "herald.h"
#include "lib_internal.h"
#include "util.h"

#include <hiredis.h>
#include <stdlib.h>
#include <string.h>

int
lh_hash_read(struct herald *h, const char *hash, const char *field, char **raw,
             size_t *rawlen, struct herr *e)
{
    *raw = NULL;
    *rawlen = 0;
    redisReply *r = lh_command(h, e, "HGET %s %s", hash, field);
    if (r == NULL)
        return HERR_REDIS;
    if (r->type == REDIS_REPLY_STRING) {
        *raw = xstrndup(r->str, r->len);
        *rawlen = r->len;
    }
    freeReplyObject(r);
    return 0;
}

int
lh_hash_cas(struct herald *h, const char *hash, const char *version,
            const char *field, const char *old, size_t oldlen, const char *neu,
            struct herr *e)
{
    const char *argv[5] = {hash, version, field, old ? old : "",
                           neu ? neu : ""};
    size_t lens[5] = {strlen(hash), strlen(version), strlen(field),
                      old ? oldlen : 0, strlen(argv[4])};
    redisReply *r = lh_script(h, e, RS_SCHEME_CAS, 2, 5, argv, lens);
    if (r == NULL)
        return HERR_REDIS;
    int done = lh_reply_int(r) > 0;
    freeReplyObject(r);
    return done;
}

int
lh_versioned_update(struct herald *h, const struct lh_vfield *f,
                    lh_modify_fn fn, void *ud, struct herr *e)
{
    const char *known = f->known;
    for (int tries = 0; tries < f->tries; tries++) {
        const char *old = known;
        size_t oldlen = f->knownlen;
        char *raw = NULL; /* what this round read */
        int rc;
        known = NULL;
        if (old == NULL) {
            if ((rc = lh_hash_read(h, f->hash, f->field, &raw, &oldlen, e)))
                return rc;
            old = raw;
        }
        char *neu = NULL;
        rc = fn(ud, f->field, old, oldlen, &neu, e);
        int changed = 0; /* since it was read: another round */
        if (rc == LH_VU_WRITE) {
            int done = lh_hash_cas(h, f->hash, f->version, f->field, old,
                                   oldlen, neu, e);
            if (done < 0)
                rc = done;
            else
                changed = !done;
        }
        free(neu);
        free(raw);
        if (!changed)
            return rc; /* LH_VU_WRITE, LH_VU_KEEP, or an error */
    }
    return LH_VU_BUSY;
}
