/*
 * lib_tokens — herald-api's bearer tokens in <prefix>:tokens (by SHA-256,
 * records made by redis/token_create.lua and token_revoke.lua):
 * herald_token_create / list / revoke, and herald_token_check with its
 * short memory of the tokens last found.
 */
#include "herald.h"
#include "clock.h"
#include "keys.h"
#include "lib_internal.h"
#include "util.h"

#include <hiredis.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* herald_token_check's memory (struct herald's seen[]): the last
 * LH_TOKEN_SEEN_N tokens found, by hash, each answered from here for
 * TOKEN_SEEN_MS after Redis gave it. SPEC §9 lets a revoked token work for
 * up to a second; herald-api checks a token per request, and the Redis
 * round trip was a tenth of a get's CPU. Unknown tokens are not kept
 * (garbage must not evict the real ones). */
#define TOKEN_SEEN_MS 500

static int
tokens_key(struct herald *h, char *out, size_t n, struct herr *e)
{
    if (keys_simple(out, n, h->s->prefix, "tokens") < 0)
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    return 0;
}

int
herald_token_create(struct herald *h, const char *name, enum token_role role,
                    const char *const *orgs, size_t norgs, int resend,
                    char token_out[TOKEN_LEN + 1], struct herr *e)
{
    token_out[0] = '\0';
    if (!token_valid_name(name))
        return herr_set(e, HERR_INVALID, "name",
                        "'%.80s' is not a token name ([A-Za-z0-9._-]{1,64})",
                        name ? name : "");
    if (norgs > TOKEN_ORGS_MAX)
        return herr_set(e, HERR_INVALID, "org", "more than %d organisations",
                        TOKEN_ORGS_MAX);
    for (size_t i = 0; i < norgs; i++)
        if (!job_valid_org(orgs[i]))
            return herr_set(e, HERR_INVALID, "org",
                            "'%.80s' is not an organisation", orgs[i]);
    if (role == TOKEN_APP && norgs == 0)
        return herr_set(e, HERR_INVALID, "org",
                        "an app token reads the organisations given: at "
                        "least one --org");
    if (role == TOKEN_APP && resend)
        return herr_set(e, HERR_INVALID, "resend",
                        "only support tokens may resend");
    char key[KEYS_MAX];
    int rc = tokens_key(h, key, sizeof key, e);
    if (rc)
        return rc;
    struct token_rec t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s", name);
    t.role = role;
    t.orgs = (char **)orgs; /* borrowed for the dump */
    t.norgs = norgs;
    t.resend = resend;
    t.created_at = clock_now_ms();
    char *rec = token_rec_dump(&t);
    char tok[TOKEN_LEN + 1], hash[TOKEN_HASH_LEN + 1];
    token_new(tok);
    token_hash(tok, hash);
    const char *argv[4] = {key, hash, name, rec};
    redisReply *r = lh_script(h, e, RS_TOKEN_CREATE, 1, 4, argv, NULL);
    free(rec);
    if (r == NULL) {
        OPENSSL_cleanse(tok, sizeof tok);
        return HERR_REDIS;
    }
    int stored = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    if (!stored) {
        OPENSSL_cleanse(tok, sizeof tok);
        return herr_set(e, HERR_EXISTS, "name",
                        "a token named '%s' exists (revoke it first)", name);
    }
    memcpy(token_out, tok, sizeof tok);
    OPENSSL_cleanse(tok, sizeof tok);
    return 0;
}

static int
token_cmp(const void *a, const void *b)
{
    return strcmp(((const struct token_rec *)a)->name,
                  ((const struct token_rec *)b)->name);
}

int
herald_token_list(struct herald *h, struct token_rec **out, size_t *n,
                  struct herr *e)
{
    *out = NULL;
    *n = 0;
    char key[KEYS_MAX];
    int rc = tokens_key(h, key, sizeof key, e);
    if (rc)
        return rc;
    redisReply *r = lh_command(h, e, "HVALS %s", key);
    if (r == NULL)
        return HERR_REDIS;
    struct token_rec *v = xcalloc(r->elements + 1, sizeof *v);
    size_t k = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *x = r->element[i];
        if (x->type == REDIS_REPLY_STRING &&
            token_rec_parse(x->str, x->len, &v[k]) == 0)
            k++;
    }
    freeReplyObject(r);
    qsort(v, k, sizeof *v, token_cmp);
    *out = v;
    *n = k;
    return 0;
}

void
herald_tokens_free(struct token_rec *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        token_rec_clear(&v[i]);
    free(v);
}

int
herald_token_revoke(struct herald *h, const char *name, struct herr *e)
{
    if (!token_valid_name(name))
        return herr_set(e, HERR_INVALID, "name", "'%.80s' is not a token name",
                        name ? name : "");
    char key[KEYS_MAX];
    int rc = tokens_key(h, key, sizeof key, e);
    if (rc)
        return rc;
    const char *argv[2] = {key, name};
    redisReply *r = lh_script(h, e, RS_TOKEN_REVOKE, 1, 2, argv, NULL);
    if (r == NULL)
        return HERR_REDIS;
    long long n = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    freeReplyObject(r);
    if (n == 0)
        return herr_set(e, HERR_NOTFOUND, "name", "no token named '%s'", name);
    return 0;
}

/* The slot holding `hash` (fresh or not), or NULL. */
static struct lh_token_seen *
token_seen_find(struct herald *h, const char *hash)
{
    for (size_t i = 0; i < LH_TOKEN_SEEN_N; i++)
        if (h->seen[i].rec != NULL && strcmp(h->seen[i].hash, hash) == 0)
            return &h->seen[i];
    return NULL;
}

/* Remembers Redis' answer for `hash` (a copy); on no memory, nothing. */
static void
token_seen_keep(struct herald *h, const char *hash, const char *rec, size_t len,
                int64_t at)
{
    struct lh_token_seen *t = token_seen_find(h, hash);
    if (t == NULL) {
        t = &h->seen[h->seen_next];
        h->seen_next = (h->seen_next + 1) % LH_TOKEN_SEEN_N;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return;
    memcpy(copy, rec, len);
    copy[len] = '\0';
    free(t->rec);
    memcpy(t->hash, hash, sizeof t->hash);
    t->rec = copy;
    t->len = len;
    t->at = at;
}

int
herald_token_check(struct herald *h, const char *token, struct token_rec *out,
                   struct herr *e)
{
    memset(out, 0, sizeof *out);
    if (!token_well_formed(token))
        return herr_set(e, HERR_NOTFOUND, NULL, "not a token");
    char key[KEYS_MAX], hash[TOKEN_HASH_LEN + 1];
    token_hash(token, hash);
    int64_t now = clock_mono_ms();
    struct lh_token_seen *t = token_seen_find(h, hash);
    if (t != NULL && now - t->at < TOKEN_SEEN_MS &&
        token_rec_parse(t->rec, t->len, out) == 0)
        return 0;
    int rc = tokens_key(h, key, sizeof key, e);
    if (rc)
        return rc;
    redisReply *r = lh_command(h, e, "HGET %s %s", key, hash);
    if (r == NULL)
        return HERR_REDIS;
    rc = r->type == REDIS_REPLY_STRING &&
                 token_rec_parse(r->str, r->len, out) == 0
             ? 0
             : herr_set(e, HERR_NOTFOUND, NULL, "unknown or revoked token");
    if (rc == 0) {
        token_seen_keep(h, hash, r->str, r->len, now);
    } else if (t != NULL) { /* revoked since: forgotten */
        free(t->rec);
        t->rec = NULL;
    }
    freeReplyObject(r);
    return rc;
}
