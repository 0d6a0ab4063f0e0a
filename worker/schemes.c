#include "schemes.h"
#include "clock.h"
#include "keys.h"
#include "log.h"
#include "seal.h"
#include "util.h"

#include <ctype.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

struct schemes {
    struct queue *q;
    struct seal_key *key; /* NULL: HERALD_SECRET_KEY_FILE unset */
    char k_hash[KEYS_MAX], k_version[KEYS_MAX];
    long long version; /* loaded; -1: never */
    int loaded;        /* the table has been read at least once */
    int polling;       /* a GET or HGETALL is out */
    long long err_ms;  /* a failed read was last logged then */
    /* open addressing, power-of-two capacity, NULL = empty slot */
    struct scheme_entry **slot;
    size_t cap, n;
};

static void
entry_free(struct scheme_entry *e)
{
    if (e == NULL)
        return;
    scheme_free(e->s);
    free(e->json);
    /* the table's reference: routes that still hold theirs keep it */
    seal_free_secret(e->password, 0);
    free(e->why_not);
    free(e);
}

static void
table_clear(struct schemes *sc)
{
    for (size_t i = 0; i < sc->cap; i++)
        entry_free(sc->slot[i]);
    free(sc->slot);
    sc->slot = NULL;
    sc->cap = sc->n = 0;
}

static void
table_put(struct scheme_entry **slot, size_t cap, struct scheme_entry *e)
{
    size_t i = util_hash(e->field) & (cap - 1);
    while (slot[i])
        i = (i + 1) & (cap - 1);
    slot[i] = e;
}

int
schemes_new(const struct settings *s, struct schemes **out, struct herr *e)
{
    struct schemes *sc = xcalloc(1, sizeof *sc);
    sc->version = -1;
    keys_simple(sc->k_hash, KEYS_MAX, s->prefix, "schemes");
    keys_simple(sc->k_version, KEYS_MAX, s->prefix, "schemes:version");
    if (s->secret_key_file) {
        int rc = seal_key_load(s->secret_key_file, &sc->key, e);
        if (rc != 0) {
            if (e)
                snprintf(e->field, sizeof e->field, "HERALD_SECRET_KEY_FILE");
            free(sc);
            return rc;
        }
        unsigned w = seal_key_warnings(sc->key);
        for (unsigned bit = 1; bit; bit <<= 1)
            if (w & bit)
                log_msg(LOG_WARN, "HERALD_SECRET_KEY_FILE", "file",
                        s->secret_key_file, "warning", seal_warning_str(bit),
                        NULL);
    }
    *out = sc;
    return 0;
}

int
schemes_loaded(const struct schemes *sc)
{
    return sc->loaded;
}

void
schemes_set_queue(struct schemes *sc, struct queue *q)
{
    sc->q = q;
}

void
schemes_free(struct schemes *sc)
{
    if (sc == NULL)
        return;
    table_clear(sc);
    seal_key_free(sc->key);
    free(sc);
}

/* One stored value into an entry (NULL when the value is unreadable). */
static struct scheme_entry *
entry_new(struct schemes *sc, const char *field, const char *json, size_t len)
{
    struct herr e = {{0}, {0}};
    struct scheme *s = NULL;
    if (scheme_from_json(json, len, &s, &e) != 0) {
        char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&e, why, sizeof why);
        log_msg(LOG_ERROR, "a stored sending scheme is unreadable; ignored",
                "scheme", field, "error", why, NULL);
        return NULL;
    }
    struct scheme_entry *en = xcalloc(1, sizeof *en);
    en->s = s;
    en->json = xstrndup(json, len);
    snprintf(en->field, sizeof en->field, "%s", field);
    {
        /* usernames hold no control characters: "\n" separates */
        char *id = xasprintf("%s\n%s", s->username, s->password);
        unsigned char d[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)id, strlen(id), d);
        free(id);
        for (int i = 0; i < 16; i++)
            snprintf(en->fp + 2 * i, 3, "%02x", d[i]);
    }
    char aad[SCHEME_AAD_MAX];
    scheme_aad(aad, sizeof aad, s->org, s->email);
    if (sc->key == NULL) {
        en->why_not = xstrdup("HERALD_SECRET_KEY_FILE is not set on this "
                              "worker, so the scheme's password cannot be "
                              "opened");
    } else {
        const struct seal_key *keys[1] = {sc->key};
        char *pw = NULL;
        size_t pwlen = 0;
        if (seal_open(keys, 1, s->password, aad, &pw, &pwlen, &e) != 0) {
            char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
            herr_format(&e, why, sizeof why);
            en->why_not = xasprintf("the scheme's password cannot be opened: "
                                    "%s",
                                    why);
        } else {
            en->password = pw;
        }
    }
    if (en->why_not)
        log_msg(LOG_ERROR, "sending scheme unusable", "scheme", field, "error",
                en->why_not, NULL);
    return en;
}

/* A read of the table failed (e.g. the key holds another type): read it
 * again at the next poll, and say so — until it is read, no job is
 * taken. */
static void
poll_failed(struct schemes *sc, const redisReply *r)
{
    sc->version = -1;
    if (log_due(&sc->err_ms, 60000))
        log_msg(LOG_ERROR,
                "cannot read the sending schemes; no job is taken until they "
                "can be read",
                "key", sc->k_hash, "error",
                r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply",
                NULL);
}

static void
on_hgetall(void *ud, redisReply *r)
{
    struct schemes *sc = ud;
    sc->polling = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
        poll_failed(sc, r);
        return;
    }
    /* the version travels in the reply's tail: see on_version */
    size_t pairs = r->elements / 2, k = 0;
    const char **fields = xcalloc(pairs + 1, sizeof *fields);
    const char **values = xcalloc(pairs + 1, sizeof *values);
    size_t *lens = xcalloc(pairs + 1, sizeof *lens);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *f = r->element[i], *v = r->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            f->len >= SCHEME_FIELD_MAX)
            continue;
        fields[k] = f->str;
        values[k] = v->str;
        lens[k++] = v->len;
    }
    schemes_load(sc, fields, values, lens, k);
    free(fields);
    free(values);
    free(lens);
}

void
schemes_load(struct schemes *sc, const char *const *fields,
             const char *const *values, const size_t *lens, size_t n_in)
{
    size_t cap = 16;
    while (cap < n_in * 2)
        cap *= 2;
    struct scheme_entry **slot = xcalloc(cap, sizeof *slot);
    size_t n = 0;
    for (size_t i = 0; i < n_in; i++) {
        struct scheme_entry *e = entry_new(sc, fields[i], values[i], lens[i]);
        if (e) {
            table_put(slot, cap, e);
            n++;
        }
    }
    table_clear(sc);
    sc->slot = slot;
    sc->cap = cap;
    sc->n = n;
    char c[32];
    snprintf(c, sizeof c, "%zu", n);
    log_msg(LOG_INFO, "sending schemes loaded", "count", c, NULL);
    if (!sc->loaded) {
        sc->loaded = 1;
        if (sc->q)
            queue_kick(sc->q); /* takes were waiting for this */
    }
}

static void
on_version(void *ud, redisReply *r)
{
    struct schemes *sc = ud;
    long long v = 0;
    if (r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    else if (r->type == REDIS_REPLY_ERROR) {
        sc->polling = 0;
        poll_failed(sc, r);
        return;
    }
    if (v == sc->version) {
        sc->polling = 0;
        return;
    }
    /* Record the version first: a change racing this reload bumps it
     * again and the next poll reloads once more. */
    sc->version = v;
    const char *argv[2] = {"HGETALL", sc->k_hash};
    size_t lens[2] = {7, strlen(sc->k_hash)};
    queue_command(sc->q, 2, argv, lens, on_hgetall, sc);
}

void
schemes_poll(struct schemes *sc)
{
    if (sc->polling || sc->q == NULL)
        return;
    sc->polling = 1;
    const char *argv[2] = {"GET", sc->k_version};
    size_t lens[2] = {3, strlen(sc->k_version)};
    queue_command(sc->q, 2, argv, lens, on_version, sc);
}

const struct scheme_entry *
schemes_find(const struct schemes *sc, const char *org, const char *from)
{
    if (sc->n == 0)
        return NULL;
    char field[SCHEME_FIELD_MAX];
    if (scheme_field(field, sizeof field, org, from) < 0)
        return NULL;
    size_t i = util_hash(field) & (sc->cap - 1);
    while (sc->slot[i]) {
        if (strcmp(sc->slot[i]->field, field) == 0)
            return sc->slot[i];
        i = (i + 1) & (sc->cap - 1);
    }
    return NULL;
}

static void
on_marked(void *ud, redisReply *r)
{
    (void)ud;
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 0)
        log_msg(LOG_INFO,
                "a scheme changed before its failed login could be recorded; "
                "its new settings will be tried",
                NULL);
    else if (r->type == REDIS_REPLY_ERROR)
        log_msg(LOG_ERROR, "could not record a scheme's failed login", "error",
                r->str, NULL);
}

void
schemes_mark_failed(struct schemes *sc, const char *field, const char *reply)
{
    struct scheme_entry *e = NULL;
    for (size_t i = util_hash(field) & (sc->cap ? sc->cap - 1 : 0);
         sc->cap && sc->slot[i]; i = (i + 1) & (sc->cap - 1))
        if (strcmp(sc->slot[i]->field, field) == 0) {
            e = sc->slot[i];
            break;
        }
    if (e == NULL || e->s->state == SCHEME_STATE_AUTH_FAILED)
        return;
    log_msg(LOG_ERROR,
            "the organisation's SMTP server refused the scheme's "
            "credentials; no further login until the scheme is updated or "
            "a scheme test passes",
            "scheme", field, "reply", reply, NULL);
    char *old = xstrdup(e->json);
    scheme_mark_failed(e->s, reply, clock_now_ms()); /* local: at once */
    char *now = scheme_to_json(e->s, 0);
    free(e->json);
    e->json = xstrdup(now);
    const char *argv[5] = {sc->k_hash, sc->k_version, field, old, now};
    queue_script(sc->q, RS_SCHEME_CAS, 2, 5, argv, NULL, on_marked, NULL);
    free(old);
    free(now);
}
