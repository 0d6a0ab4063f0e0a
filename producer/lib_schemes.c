/*
 * lib_schemes — Email Sending Schemes in <prefix>:schemes (a versioned
 * hash, one field ORG/email, lib_versioned.c): herald_scheme_add / update
 * / get / list / remove / version, herald_scheme_clear_failure after a
 * passing test, and the sealed passwords: herald_key_load and
 * herald_key_rotate.
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

int
herald_key_load(const char *path, const char *setting, struct seal_key **out,
                struct herr *e)
{
    *out = NULL;
    if (path == NULL || *path == '\0')
        return herr_set(e, HERR_INVALID, setting,
                        "not set: a 32-byte key file is needed to seal and "
                        "open scheme passwords");
    struct herr se = {{0}, {0}};
    int rc = seal_key_load(path, out, &se);
    if (rc)
        return herr_set(e, HERR_INVALID, setting, "%s", se.msg);
    return 0;
}

int
lh_scheme_keys(struct herald *h, char *hash, char *version, struct herr *e)
{
    if (keys_simple(hash, KEYS_MAX, h->s->prefix, "schemes") < 0 ||
        keys_simple(version, KEYS_MAX, h->s->prefix, "schemes:version") < 0)
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    return 0;
}

static int
scheme_names(const char *org, const char *email, char *field, char *aad,
             struct herr *e)
{
    if (org == NULL || !job_valid_org(org))
        return herr_set(e, HERR_INVALID, "org",
                        "'%.80s' is not an organisation ([A-Za-z0-9._-]{1,64})",
                        org ? org : "");
    if (email == NULL || !job_valid_email(email))
        return herr_set(e, HERR_INVALID, "email", "'%.80s' is not an address",
                        email ? email : "");
    if (scheme_field(field, SCHEME_FIELD_MAX, org, email) < 0 ||
        (aad && scheme_aad(aad, SCHEME_AAD_MAX, org, email) < 0))
        return herr_set(e, HERR_TOOBIG, "email", "too long");
    return 0;
}

/* Seals a clear password for `aad`; 0 with a new token, or HERR_*. */
static int
scheme_seal(const struct seal_key *key, const char *password, size_t len,
            const char *aad, char **token, struct herr *e)
{
    *token = NULL;
    if (key == NULL)
        return herr_set(e, HERR_INVALID, "HERALD_SECRET_KEY_FILE",
                        "no key loaded to seal the password");
    if (password == NULL || len == 0)
        return herr_set(e, HERR_INVALID, "password", "empty");
    if (len > SCHEME_PASSWORD_MAX)
        return herr_set(e, HERR_TOOBIG, "password", "longer than %d bytes",
                        SCHEME_PASSWORD_MAX);
    if (memchr(password, '\0', len))
        return herr_set(e, HERR_INVALID, "password", "contains a NUL byte");
    *token = seal_seal(key, password, len, aad);
    if (*token == NULL)
        return herr_set(e, HERR_PERM, "password",
                        "sealing failed (OpenSSL or the random generator)");
    return 0;
}

/* The answer for a scheme that is not there. */
static int
scheme_absent(const char *field, struct herr *e)
{
    return herr_set(e, HERR_NOTFOUND, "email", "no such scheme: %s", field);
}

/* The answer for a scheme that changed under every try. */
static int
scheme_busy(const char *field, struct herr *e)
{
    return herr_set(e, HERR_TEMP, "email", "scheme %s kept changing; try again",
                    field);
}

/* A stored scheme to change (`raw` NULL: absent): 0 with *out (new), or
 * HERR_NOTFOUND, or HERR_STORE when it does not parse. */
static int
scheme_load(const char *field, const char *raw, size_t rawlen,
            struct scheme **out, struct herr *e)
{
    if (raw == NULL)
        return scheme_absent(field, e);
    struct herr pe = {{0}, {0}};
    if (scheme_from_json(raw, rawlen, out, &pe) != 0)
        return herr_set(e, HERR_STORE, "email",
                        "stored scheme %s is invalid: %s: %s", field, pe.field,
                        pe.msg);
    return 0;
}

/* Runs `fn` on a scheme's field by lh_versioned_update (`known`: its
 * value as read, or NULL): LH_VU_WRITE, LH_VU_KEEP, or a negative HERR_*
 * (HERR_TEMP when it kept changing). */
static int
scheme_change(struct herald *h, const char *hash, const char *version,
              const char *field, const char *known, size_t knownlen,
              lh_modify_fn fn, void *ud, struct herr *e)
{
    const struct lh_vfield f = {.hash = hash,
                                .version = version,
                                .field = field,
                                .tries = HERALD_SCHEME_RETRIES,
                                .known = known,
                                .knownlen = knownlen};
    int rc = lh_versioned_update(h, &f, fn, ud, e);
    return rc == LH_VU_BUSY ? scheme_busy(field, e) : rc;
}

int
herald_scheme_add(struct herald *h, const char *org, const char *email,
                  const struct scheme_patch *p, const char *password,
                  size_t len, const struct seal_key *key, struct herr *e)
{
    char field[SCHEME_FIELD_MAX], aad[SCHEME_AAD_MAX];
    char hash[KEYS_MAX], version[KEYS_MAX];
    int rc = scheme_names(org, email, field, aad, e);
    if (rc == 0 && p->password)
        rc = herr_set(e, HERR_INVALID, "password",
                      "give the clear password, not a sealed one");
    if (rc == 0)
        rc = lh_scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    char *token;
    if ((rc = scheme_seal(key, password, len, aad, &token, e)) != 0)
        return rc;
    struct scheme_patch q = *p;
    q.password = token;
    struct scheme *s;
    rc = scheme_create(org, email, &q, clock_now_ms(), &s, e);
    free(token);
    if (rc)
        return rc;
    char *json = scheme_to_json(s, 0);
    scheme_free(s);
    rc = lh_hash_cas(h, hash, version, field, NULL, 0, json, e);
    free(json);
    if (rc == 0)
        return herr_set(e, HERR_EXISTS, "email",
                        "scheme %s already exists (use 'scheme update')",
                        field);
    return rc < 0 ? rc : 0;
}

/* lh_modify_fn of herald_scheme_update: the patch (ud) applied. */
static int
scheme_patch_fn(void *ud, const char *field, const char *raw, size_t rawlen,
                char **neu, struct herr *e)
{
    const struct scheme_patch *q = ud;
    struct scheme *s;
    int rc = scheme_load(field, raw, rawlen, &s, e);
    if (rc)
        return rc;
    rc = scheme_apply(s, q, clock_now_ms(), e);
    if (rc == 0)
        *neu = scheme_to_json(s, 0);
    scheme_free(s);
    return rc ? rc : LH_VU_WRITE;
}

int
herald_scheme_update(struct herald *h, const char *org, const char *email,
                     const struct scheme_patch *p, const char *password,
                     size_t len, const struct seal_key *key, struct herr *e)
{
    char field[SCHEME_FIELD_MAX], aad[SCHEME_AAD_MAX];
    char hash[KEYS_MAX], version[KEYS_MAX];
    int rc = scheme_names(org, email, field, aad, e);
    if (rc == 0 && p->password)
        rc = herr_set(e, HERR_INVALID, "password",
                      "give the clear password, not a sealed one");
    if (rc == 0)
        rc = lh_scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    struct scheme_patch q = *p;
    char *token = NULL;
    if (password) {
        if ((rc = scheme_seal(key, password, len, aad, &token, e)) != 0)
            return rc;
        q.password = token;
    }
    rc =
        scheme_change(h, hash, version, field, NULL, 0, scheme_patch_fn, &q, e);
    free(token);
    return rc < 0 ? rc : 0;
}

int
herald_scheme_get(struct herald *h, const char *org, const char *email,
                  struct scheme **out, struct herr *e)
{
    *out = NULL;
    char field[SCHEME_FIELD_MAX], hash[KEYS_MAX], version[KEYS_MAX];
    int rc = scheme_names(org, email, field, NULL, e);
    if (rc == 0)
        rc = lh_scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    char *raw;
    size_t rawlen;
    if ((rc = lh_hash_read(h, hash, field, &raw, &rawlen, e)) != 0)
        return rc;
    if (raw == NULL)
        return scheme_absent(field, e);
    rc = scheme_from_json(raw, rawlen, out, e);
    free(raw);
    return rc;
}

/* Parses a stored row and checks it sits under its own field. */
int
lh_scheme_decode_row(const char *field, const char *raw, size_t rawlen,
                     struct scheme **out, struct herr *e)
{
    int rc = scheme_from_json(raw, rawlen, out, e);
    if (rc)
        return rc;
    char own[SCHEME_FIELD_MAX];
    if (scheme_field(own, sizeof own, (*out)->org, (*out)->email) < 0 ||
        strcmp(own, field) != 0) {
        scheme_free(*out);
        *out = NULL;
        return herr_set(e, HERR_INVALID, "email",
                        "stored under field %s, but its org and email name "
                        "another scheme",
                        field);
    }
    return 0;
}

static int
cmp_row(const void *a, const void *b)
{
    return strcmp(((const struct herald_scheme_row *)a)->field,
                  ((const struct herald_scheme_row *)b)->field);
}

int
herald_scheme_list(struct herald *h, const char *org,
                   struct herald_scheme_row **rows, size_t *n, struct herr *e)
{
    *rows = NULL;
    *n = 0;
    char hash[KEYS_MAX], version[KEYS_MAX];
    if (org && !job_valid_org(org))
        return herr_set(e, HERR_INVALID, "org",
                        "'%.80s' is not an organisation ([A-Za-z0-9._-]{1,64})",
                        org);
    int rc = lh_scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    redisReply *r = lh_command(h, e, "HGETALL %s", hash);
    if (r == NULL)
        return HERR_REDIS;
    size_t m = r->type == REDIS_REPLY_ARRAY ? r->elements / 2 : 0;
    struct herald_scheme_row *v = m ? xcalloc(m, sizeof *v) : NULL;
    size_t k = 0;
    size_t olen = org ? strlen(org) : 0;
    for (size_t i = 0; i < m; i++) {
        const redisReply *f = r->element[2 * i], *val = r->element[2 * i + 1];
        if (f->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
            continue;
        if (org && (f->len <= olen || memcmp(f->str, org, olen) != 0 ||
                    f->str[olen] != '/'))
            continue;
        struct herald_scheme_row *row = &v[k++];
        row->field = xstrndup(f->str, f->len);
        lh_scheme_decode_row(row->field, val->str, val->len, &row->scheme,
                             &row->err);
    }
    freeReplyObject(r);
    if (k)
        qsort(v, k, sizeof *v, cmp_row);
    else {
        free(v);
        v = NULL;
    }
    *rows = v;
    *n = k;
    return 0;
}

void
herald_scheme_rows_free(struct herald_scheme_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].field);
        scheme_free(rows[i].scheme);
    }
    free(rows);
}

/* lh_modify_fn of herald_scheme_remove: the field deleted. */
static int
scheme_delete_fn(void *ud, const char *field, const char *raw, size_t rawlen,
                 char **neu, struct herr *e)
{
    (void)ud;
    (void)rawlen;
    (void)neu; /* NULL: delete */
    return raw ? LH_VU_WRITE : scheme_absent(field, e);
}

int
herald_scheme_remove(struct herald *h, const char *org, const char *email,
                     struct herr *e)
{
    char field[SCHEME_FIELD_MAX], hash[KEYS_MAX], version[KEYS_MAX];
    int rc = scheme_names(org, email, field, NULL, e);
    if (rc == 0)
        rc = lh_scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    rc = scheme_change(h, hash, version, field, NULL, 0, scheme_delete_fn, NULL,
                       e);
    return rc < 0 ? rc : 0;
}

/* Same servers and credentials (what a scheme test exercised). */
static int
scheme_same_target(const struct scheme *a, const struct scheme *b)
{
    if (strcmp(a->smtp_host, b->smtp_host) || a->smtp_port != b->smtp_port ||
        a->tls != b->tls || strcmp(a->username, b->username) ||
        strcmp(a->password, b->password) || a->imap_port != b->imap_port)
        return 0;
    if ((a->imap_host == NULL) != (b->imap_host == NULL))
        return 0;
    return a->imap_host == NULL || strcmp(a->imap_host, b->imap_host) == 0;
}

/* lh_modify_fn of herald_scheme_clear_failure: a scheme whose login
 * failed back to "ok", if it still has the servers and credentials the
 * test (ud) passed with. */
static int
scheme_clear_fn(void *ud, const char *field, const char *raw, size_t rawlen,
                char **neu, struct herr *e)
{
    const struct scheme *tested = ud;
    struct scheme *s;
    int rc = scheme_load(field, raw, rawlen, &s, e);
    if (rc)
        return rc;
    rc = LH_VU_KEEP;
    if (s->state == SCHEME_STATE_AUTH_FAILED && scheme_same_target(s, tested)) {
        s->state = SCHEME_STATE_OK;
        free(s->state_reason);
        s->state_reason = xstrdup("");
        s->state_at = clock_now_ms();
        *neu = scheme_to_json(s, 0);
        rc = LH_VU_WRITE;
    }
    scheme_free(s);
    return rc;
}

int
herald_scheme_clear_failure(struct herald *h, const struct scheme *tested,
                            int *cleared, struct herr *e)
{
    int dummy;
    if (cleared == NULL)
        cleared = &dummy;
    *cleared = 0;
    char field[SCHEME_FIELD_MAX], hash[KEYS_MAX], version[KEYS_MAX];
    int rc = scheme_names(tested->org, tested->email, field, NULL, e);
    if (rc == 0)
        rc = lh_scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    /* the test's scheme: read only */
    rc = scheme_change(h, hash, version, field, NULL, 0, scheme_clear_fn,
                       (void *)tested, e);
    if (rc == LH_VU_WRITE)
        *cleared = 1;
    return rc < 0 ? rc : 0;
}

int
herald_scheme_version(struct herald *h, long long *out, struct herr *e)
{
    *out = 0;
    char hash[KEYS_MAX], version[KEYS_MAX];
    int rc = lh_scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    redisReply *r = lh_command(h, e, "GET %s", version);
    if (r == NULL)
        return HERR_REDIS;
    if (r->type == REDIS_REPLY_STRING)
        *out = strtoll(r->str, NULL, 10);
    freeReplyObject(r);
    return 0;
}

/* What rotate_fn works with. */
struct rotate_ctx {
    const struct seal_key *const *keys; /* the old key, the new one */
    struct herald_rotate *r;
};

/* lh_modify_fn of herald_key_rotate: the password re-sealed under the
 * new key. A scheme left as it is (removed meanwhile, unreadable, already
 * under the new key) says why in r. */
static int
rotate_fn(void *ud, const char *field, const char *raw, size_t rawlen,
          char **neu, struct herr *e)
{
    const struct rotate_ctx *c = ud;
    const struct seal_key *const *keys = c->keys;
    struct herald_rotate *r = c->r;
    (void)e;
    if (raw == NULL) {
        r->removed = 1;
        return LH_VU_KEEP;
    }
    struct scheme *s;
    r->rc = lh_scheme_decode_row(field, raw, rawlen, &s, &r->err);
    if (r->rc)
        return LH_VU_KEEP;
    char aad[SCHEME_AAD_MAX], kid[SEAL_KEYID_LEN + 1];
    scheme_aad(aad, sizeof aad, s->org, s->email);
    char *pt;
    size_t ptlen;
    r->rc = seal_open(keys, 2, s->password, aad, &pt, &ptlen, &r->err);
    if (r->rc) {
        snprintf(r->err.field, sizeof r->err.field, "password");
        scheme_free(s);
        return LH_VU_KEEP;
    }
    if (seal_token_key_id(s->password, kid) == 0 &&
        strcmp(kid, seal_key_id(keys[1])) == 0) {
        seal_free_secret(pt, ptlen);
        scheme_free(s);
        return LH_VU_KEEP; /* already under the new key, and it opens */
    }
    char *token = seal_seal(keys[1], pt, ptlen, aad);
    seal_free_secret(pt, ptlen);
    if (token == NULL) {
        scheme_free(s);
        r->rc = herr_set(&r->err, HERR_PERM, "password",
                         "sealing failed (OpenSSL or the random generator)");
        return LH_VU_KEEP;
    }
    free(s->password);
    s->password = token;
    *neu = scheme_to_json(s, 0);
    scheme_free(s);
    return LH_VU_WRITE;
}

/*
 * Re-seals one stored value (`raw` as HGETALL gave it). Returns 0 with
 * r->rc / r->resealed / r->removed filled, or HERR_REDIS / HERR_TEMP.
 */
static int
rotate_one(struct herald *h, const char *hash, const char *version,
           const char *field, const char *raw, size_t rawlen,
           const struct seal_key *const keys[2], struct herald_rotate *r,
           struct herr *e)
{
    struct rotate_ctx c = {keys, r};
    int rc =
        scheme_change(h, hash, version, field, raw, rawlen, rotate_fn, &c, e);
    if (rc == LH_VU_WRITE)
        r->resealed = 1;
    return rc < 0 ? rc : 0;
}

int
herald_key_rotate(struct herald *h, const struct seal_key *old_key,
                  const struct seal_key *new_key, herald_rotate_cb cb,
                  void *arg, size_t *resealed, size_t *already, size_t *failed,
                  struct herr *e)
{
    size_t nre = 0, nal = 0, nfail = 0;
    char hash[KEYS_MAX], version[KEYS_MAX];
    int rc = lh_scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    redisReply *all = lh_command(h, e, "HGETALL %s", hash);
    if (all == NULL)
        return HERR_REDIS;
    const struct seal_key *const keys[2] = {old_key, new_key};
    size_t m = all->type == REDIS_REPLY_ARRAY ? all->elements / 2 : 0;
    for (size_t i = 0; i < m && rc == 0; i++) {
        const redisReply *f = all->element[2 * i], *v = all->element[2 * i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        char *field = xstrndup(f->str, f->len);
        struct herald_rotate r;
        memset(&r, 0, sizeof r);
        r.field = field;
        rc = rotate_one(h, hash, version, field, v->str, v->len, keys, &r, e);
        if (rc == 0) {
            if (r.rc != 0)
                nfail++;
            else if (r.resealed)
                nre++;
            else if (!r.removed)
                nal++;
            if (cb)
                cb(arg, &r);
        }
        free(field);
    }
    freeReplyObject(all);
    if (resealed)
        *resealed = nre;
    if (already)
        *already = nal;
    if (failed)
        *failed = nfail;
    return rc;
}
