/*
 * lib_orgs — organisations' settings in <prefix>:orgs (a versioned hash,
 * one field an org, lib_versioned.c): herald_org_set (a patch applied by
 * compare-and-set, keeping members a later version wrote), get and list.
 */
#include "herald.h"
#include "clock.h"
#include "keys.h"
#include "lib_internal.h"
#include "util.h"

#include <hiredis.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int
lh_org_keys(struct herald *h, char *hash, char *version, struct herr *e)
{
    if (keys_simple(hash, KEYS_MAX, h->s->prefix, "orgs") < 0 ||
        keys_simple(version, KEYS_MAX, h->s->prefix, "orgs:version") < 0)
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    return 0;
}

static int
org_name_ok(const char *org, struct herr *e)
{
    if (org == NULL || !job_valid_org(org))
        return herr_set(e, HERR_INVALID, "org",
                        "'%.80s' is not an organisation ([A-Za-z0-9._-]{1,64})",
                        org ? org : "");
    return 0;
}

/* Parses a stored value and checks it names the org it is stored under. */
int
lh_org_decode_row(const char *field, const char *raw, size_t rawlen,
                  struct org **out, struct herr *e)
{
    int rc = org_from_json(raw, rawlen, out, e);
    if (rc)
        return rc;
    if (strcmp((*out)->org, field) != 0) {
        rc = herr_set(e, HERR_INVALID, "org",
                      "stored under %.80s, but names org %.80s", field,
                      (*out)->org);
        org_free(*out);
        *out = NULL;
    }
    return rc;
}

/* A stored value that does not parse, as HERR_STORE naming the org. */
static int
org_stored_invalid(const char *org, const struct herr *pe, struct herr *e)
{
    return herr_set(e, HERR_STORE, "org", "stored org %s is invalid: %s%s%s",
                    org, pe->field, pe->field[0] ? ": " : "", pe->msg);
}

/* Checks a patch before anything is read. */
static int
org_patch_ok(const char *org, const struct herald_org_patch *p, struct herr *e)
{
    int rc = org_name_ok(org, e);
    if (rc)
        return rc;
    if (p->name == NULL && p->relay_daily_limit == 0 &&
        !p->clear_relay_daily_limit)
        return herr_set(e, HERR_INVALID, NULL, "nothing to change");
    if (p->relay_daily_limit && p->clear_relay_daily_limit)
        return herr_set(e, HERR_INVALID, "relay_daily_limit",
                        "both given and cleared");
    struct org probe = {.org = (char *)org,
                        .name = (char *)p->name,
                        .relay_daily_limit = p->relay_daily_limit};
    return org_check(&probe, e);
}

/*
 * The new value of an org: `o` in the layout of org.h, then the members
 * of the stored value `raw` (may be NULL) that org.h does not know, in
 * their order, so a value written by a later version keeps what this one
 * does not understand. NULL with HERR_TOOBIG when it would pass
 * ORG_JSON_MAX.
 */
static char *
org_json_keep(const struct org *o, const char *raw, size_t rawlen,
              struct herr *e)
{
    static const char *const known[] = {"org", "name", "relay_daily_limit",
                                        "updated_at"};
    char *json = org_to_json(o);
    json_t *old = raw ? json_loadb(raw, rawlen, JSON_ALLOW_NUL, NULL) : NULL;
    if (json_is_object(old)) {
        json_t *neu = json_loads(json, 0, NULL);
        const char *k;
        json_t *v;
        json_object_foreach(old, k, v)
        {
            int is_known = 0;
            for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
                is_known |= strcmp(k, known[i]) == 0;
            if (!is_known)
                json_object_set(neu, k, v);
        }
        free(json);
        json = json_dumps(neu, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(neu);
        if (json == NULL)
            abort(); /* only allocation fails here */
    }
    json_decref(old);
    size_t len = strlen(json);
    if (len > ORG_JSON_MAX) {
        free(json);
        herr_set(e, HERR_TOOBIG, NULL,
                 "the record of org %s would be %zu bytes, over %d", o->org,
                 len, ORG_JSON_MAX);
        return NULL;
    }
    return json;
}

/* What org_patch_fn works with: the patch, and the org it last made. */
struct org_edit {
    const struct herald_org_patch *p;
    struct org *o; /* new; what was written when the update wrote */
};

/*
 * lh_modify_fn of herald_org_set: the org as stored (or a new one), the
 * patch applied, in the layout org_json_keep makes.
 */
static int
org_patch_fn(void *ud, const char *org, const char *raw, size_t rawlen,
             char **neu, struct herr *e)
{
    struct org_edit *u = ud;
    org_free(u->o);
    u->o = NULL;
    const struct herald_org_patch *p = u->p;
    struct org *o = NULL;
    if (raw) {
        struct herr pe = {{0}, {0}};
        if (lh_org_decode_row(org, raw, rawlen, &o, &pe) != 0)
            return org_stored_invalid(org, &pe, e);
    } else {
        o = xcalloc(1, sizeof *o);
        o->org = xstrdup(org);
    }
    if (p->name) {
        free(o->name);
        o->name = xstrdup(p->name);
    }
    if (p->relay_daily_limit)
        o->relay_daily_limit = p->relay_daily_limit;
    if (p->clear_relay_daily_limit)
        o->relay_daily_limit = 0;
    o->updated_at = clock_now_ms();
    int rc = org_check(o, e);
    char *json = rc ? NULL : org_json_keep(o, raw, rawlen, e);
    if (json == NULL) {
        org_free(o);
        return rc ? rc : HERR_TOOBIG;
    }
    u->o = o;
    *neu = json;
    return LH_VU_WRITE;
}

int
herald_org_set(struct herald *h, const char *org,
               const struct herald_org_patch *p, struct org **out,
               struct herr *e)
{
    if (out)
        *out = NULL;
    char hash[KEYS_MAX], version[KEYS_MAX];
    int rc = org_patch_ok(org, p, e);
    if (rc == 0)
        rc = lh_org_keys(h, hash, version, e);
    if (rc)
        return rc;
    const struct lh_vfield f = {.hash = hash,
                                .version = version,
                                .field = org,
                                .tries = HERALD_ORG_RETRIES};
    struct org_edit u = {p, NULL};
    rc = lh_versioned_update(h, &f, org_patch_fn, &u, e);
    if (rc == LH_VU_WRITE && out) {
        *out = u.o;
        u.o = NULL;
    }
    org_free(u.o);
    if (rc == LH_VU_BUSY)
        return herr_set(e, HERR_TEMP, "org", "org %s kept changing; try again",
                        org);
    return rc < 0 ? rc : 0;
}

int
herald_org_get(struct herald *h, const char *org, struct org **out,
               struct herr *e)
{
    *out = NULL;
    char hash[KEYS_MAX], version[KEYS_MAX];
    int rc = org_name_ok(org, e);
    if (rc == 0)
        rc = lh_org_keys(h, hash, version, e);
    if (rc)
        return rc;
    redisReply *r = lh_command(h, e, "HGET %s %s", hash, org);
    if (r == NULL)
        return HERR_REDIS;
    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return herr_set(e, HERR_NOTFOUND, "org", "no such org: %s", org);
    }
    struct herr pe = {{0}, {0}};
    rc = lh_org_decode_row(org, r->str, r->len, out, &pe);
    freeReplyObject(r);
    return rc ? org_stored_invalid(org, &pe, e) : 0;
}

static int
cmp_org_row(const void *a, const void *b)
{
    return strcmp(((const struct herald_org_row *)a)->field,
                  ((const struct herald_org_row *)b)->field);
}

int
herald_org_list(struct herald *h, struct herald_org_row **rows, size_t *n,
                struct herr *e)
{
    *rows = NULL;
    *n = 0;
    char hash[KEYS_MAX], version[KEYS_MAX];
    int rc = lh_org_keys(h, hash, version, e);
    if (rc)
        return rc;
    redisReply *r = lh_command(h, e, "HGETALL %s", hash);
    if (r == NULL)
        return HERR_REDIS;
    size_t m = r->type == REDIS_REPLY_ARRAY ? r->elements / 2 : 0;
    struct herald_org_row *v = m ? xcalloc(m, sizeof *v) : NULL;
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        const redisReply *f = r->element[2 * i], *val = r->element[2 * i + 1];
        if (f->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
            continue;
        struct herald_org_row *row = &v[k++];
        row->field = xstrndup(f->str, f->len);
        lh_org_decode_row(row->field, val->str, val->len, &row->org, &row->err);
    }
    freeReplyObject(r);
    if (k)
        qsort(v, k, sizeof *v, cmp_org_row);
    else {
        free(v);
        v = NULL;
    }
    *rows = v;
    *n = k;
    return 0;
}

void
herald_org_rows_free(struct herald_org_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].field);
        org_free(rows[i].org);
    }
    free(rows);
}
