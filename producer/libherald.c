#include "herald.h"
#include "clock.h"
#include "keys.h"
#include "rscript.h"
#include "tmpl.h"
#include "util.h"

#include <ctype.h>
#include <hiredis.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/* A pipelined round trip is also cut when this many bytes are buffered,
 * so a batch of large jobs does not hold gigabytes in hiredis' buffer. */
#define HERALD_PIPELINE_BYTES (16u * 1024 * 1024)

/* herald_token_check's memory: the last tokens found, by hash, each
 * answered from here for TOKEN_SEEN_MS after Redis gave it. SPEC §9 lets
 * a revoked token work for up to a second; herald-api checks a token per
 * request, and the Redis round trip was a tenth of a get's CPU. Unknown
 * tokens are not kept (garbage must not evict the real ones). */
#define TOKEN_SEEN_N 8
#define TOKEN_SEEN_MS 500

struct token_seen {
    char hash[TOKEN_HASH_LEN + 1];
    char *rec; /* the record's JSON as Redis has it; NULL: empty slot */
    size_t len;
    int64_t at; /* clock_mono_ms() of the HGET */
};

struct herald {
    const struct settings *s;
    struct redis_target target;
    char url[512]; /* redacted */
    redisContext *c;
    struct mc *mc;
    struct token_seen seen[TOKEN_SEEN_N];
    unsigned seen_next; /* the slot the next token takes */
};

/* Moves a dead entry to its lane only if it is still in the dead list,
 * so concurrent replays of the same entry push the job once. LREM scans
 * from the tail (-1), where the oldest entries, replayed first, are. */
static const char replay_script[] =
    "if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then "
    "redis.call('LPUSH', KEYS[2], ARGV[2]) return 1 end return 0";

void
herald_redact_url(const char *url, char *out, size_t outlen)
{
    const char *scheme = strstr(url, "://");
    const char *at = scheme ? strrchr(scheme + 3, '@') : NULL;
    if (at == NULL) {
        snprintf(out, outlen, "%s", url);
        return;
    }
    const char *user = scheme + 3;
    const char *colon = memchr(user, ':', (size_t)(at - user));
    if (colon)
        snprintf(out, outlen, "%.*s:***%s", (int)(colon - url), url, at);
    else
        snprintf(out, outlen, "%.*s***%s", (int)(user - url), url, at);
}

const char *
herald_redis_url(const struct herald *h)
{
    return h->url;
}

static void
drop_redis(struct herald *h)
{
    if (h->c) {
        redisFree(h->c);
        h->c = NULL;
    }
}

/* Runs one command during connection set-up (AUTH, SELECT). */
static int
setup_cmd(struct herald *h, const char *what, struct herr *e, const char *fmt,
          ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(h->c, fmt, ap);
    va_end(ap);
    if (r == NULL) {
        int rc = herr_set(e, HERR_REDIS, "HERALD_REDIS", "%s: %s failed: %s",
                          h->url, what, h->c->errstr);
        drop_redis(h);
        return rc;
    }
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR)
        rc = herr_set(e, HERR_REDIS, "HERALD_REDIS", "%s: %s refused: %s",
                      h->url, what, r->str);
    freeReplyObject(r);
    if (rc)
        drop_redis(h);
    return rc;
}

static int
need_redis(struct herald *h, struct herr *e)
{
    if (h->c)
        return 0;
    struct timeval tv = {.tv_sec = h->s->connect_timeout_s, .tv_usec = 0};
    const struct redis_target *t = &h->target;
    redisContext *c = t->unix_path[0]
                          ? redisConnectUnixWithTimeout(t->unix_path, tv)
                          : redisConnectWithTimeout(t->host, t->port, tv);
    if (c == NULL)
        return herr_set(e, HERR_REDIS, "HERALD_REDIS",
                        "cannot connect to %s: out of memory", h->url);
    if (c->err) {
        int rc = herr_set(e, HERR_REDIS, "HERALD_REDIS",
                          "cannot connect to %s: %s", h->url, c->errstr);
        redisFree(c);
        return rc;
    }
    struct timeval ct = {.tv_sec = HERALD_REDIS_TIMEOUT_S, .tv_usec = 0};
    redisSetTimeout(c, ct);
    h->c = c;
    int rc;
    if (t->password[0] &&
        (rc = setup_cmd(h, "AUTH", e, "AUTH %s", t->password)) != 0)
        return rc;
    if (t->db != 0 && (rc = setup_cmd(h, "SELECT", e, "SELECT %d", t->db)))
        return rc;
    return 0;
}

/*
 * Runs one command. Returns the reply (caller frees), or NULL with
 * HERR_REDIS in `e` for an I/O failure (the connection is dropped) or an
 * error reply.
 */
static redisReply *
command(struct herald *h, struct herr *e, const char *fmt, ...)
{
    if (need_redis(h, e))
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(h->c, fmt, ap);
    va_end(ap);
    if (r == NULL) {
        herr_set(e, HERR_REDIS, "HERALD_REDIS", "%s: %s", h->url, h->c->errstr);
        drop_redis(h);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        herr_set(e, HERR_REDIS, NULL, "%s: %s", h->url, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/*
 * Runs Redis script `id` (common/rscript.h) by EVALSHA, and by EVAL
 * (which caches it for the next time) when Redis does not have it
 * (NOSCRIPT). argv holds its nkeys keys, then its arguments (lens NULL:
 * strlen). The reply, or NULL as with command().
 */
static redisReply *
script(struct herald *h, struct herr *e, enum rscript_id id, int nkeys,
       int argc, const char **argv, const size_t *lens)
{
    if (need_redis(h, e))
        return NULL;
    const char **av = xcalloc((size_t)argc + 3, sizeof *av);
    size_t *al = xcalloc((size_t)argc + 3, sizeof *al);
    char nk[16];
    rscript_command(id, nkeys, argc, argv, lens, nk, av, al);
    redisReply *r = NULL;
    for (int pass = 0; pass < 2; pass++) {
        if (pass) { /* NOSCRIPT: the same with the text */
            av[0] = "EVAL";
            al[0] = 4;
            av[1] = rscripts[id].src;
            al[1] = rscripts[id].len;
        }
        r = redisCommandArgv(h->c, argc + 3, av, al);
        if (r == NULL || r->type != REDIS_REPLY_ERROR ||
            strncmp(r->str, "NOSCRIPT", 8) != 0)
            break;
        freeReplyObject(r);
        r = NULL;
    }
    free(av);
    free(al);
    if (r == NULL) {
        herr_set(e, HERR_REDIS, "HERALD_REDIS", "%s: %s", h->url, h->c->errstr);
        drop_redis(h);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        herr_set(e, HERR_REDIS, NULL, "%s: script %s: %s", h->url,
                 rscripts[id].name, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/*
 * Reads `n` pipelined replies into out[] (all of them, caller frees). On
 * an I/O failure or an error reply, frees what was read, leaves out[] all
 * NULL and returns HERR_REDIS.
 */
static int read_replies_opt(struct herald *h, size_t n, redisReply **out,
                            int strict, struct herr *e);

/* Reads n pipelined replies; an error reply fails the whole read. */
static int
read_replies(struct herald *h, size_t n, redisReply **out, struct herr *e)
{
    return read_replies_opt(h, n, out, 1, e);
}

/* Counts the error replies among n (a wrong-type key) and returns how
 * many: for reads where one bad key must not hide the rest. */
static size_t
count_errors(redisReply **r, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += r[i]->type == REDIS_REPLY_ERROR;
    return k;
}

/* `strict`: an error reply fails the read; otherwise only a lost
 * connection does, and the caller looks at each reply's type. */
static int
read_replies_opt(struct herald *h, size_t n, redisReply **out, int strict,
                 struct herr *e)
{
    int rc = 0;
    size_t got;
    for (got = 0; got < n; got++) {
        void *r = NULL;
        if (redisGetReply(h->c, &r) != REDIS_OK || r == NULL) {
            rc = herr_set(e, HERR_REDIS, "HERALD_REDIS", "%s: %s", h->url,
                          h->c->errstr[0] ? h->c->errstr : "no reply");
            drop_redis(h);
            break;
        }
        out[got] = r;
    }
    for (size_t i = 0; strict && rc == 0 && i < n; i++)
        if (out[i]->type == REDIS_REPLY_ERROR)
            rc = herr_set(e, HERR_REDIS, NULL, "%s: %s", h->url, out[i]->str);
    if (rc) {
        for (size_t i = 0; i < got; i++) {
            freeReplyObject(out[i]);
            out[i] = NULL;
        }
    }
    return rc;
}

int
herald_open_ex(const struct settings *s, int flags, struct herald **out,
               struct herr *e)
{
    *out = NULL;
    struct herald *h = xcalloc(1, sizeof *h);
    h->s = s;
    herald_redact_url(s->redis, h->url, sizeof h->url);
    int rc = settings_parse_redis(s->redis, &h->target, e);
    if (rc == 0 && !(flags & HERALD_OPEN_LAZY))
        rc = need_redis(h, e);
    if (rc) {
        herald_close(h);
        return rc;
    }
    *out = h;
    return 0;
}

int
herald_open(const struct settings *s, struct herald **out, struct herr *e)
{
    return herald_open_ex(s, 0, out, e);
}

void
herald_close(struct herald *h)
{
    if (h == NULL)
        return;
    drop_redis(h);
    if (h->mc)
        mc_close(h->mc);
    for (size_t i = 0; i < TOKEN_SEEN_N; i++)
        free(h->seen[i].rec);
    memset(h->target.password, 0, sizeof h->target.password);
    free(h);
}

/* ---- enqueue ---- */

/*
 * Validates one job and builds what gets pushed: its canonical JSON (new,
 * in *canon), its lane and its id (copied into id_out when not NULL).
 */
static int
prepare(const char *json, size_t len, char **canon, enum job_priority *prio,
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

static int
lane_key(struct herald *h, enum job_priority p, char *out, size_t n,
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
    int rc = prepare(json, len, &canon, &prio, id, e);
    if (rc)
        return rc;
    rc = lane_key(h, prio, key, sizeof key, e);
    if (rc == 0) {
        redisReply *r = command(h, e, "LPUSH %s %b", key, canon, strlen(canon));
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
        int rc = lane_key(h, (enum job_priority)p, keys[p], sizeof keys[p], e);
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
            res->rc = prepare(items[i].json, items[i].len, &canon, &prio,
                              res->id, &res->err);
            if (res->rc)
                continue;
            /* Connect only once a valid item needs it. */
            if (!failed && need_redis(h, &rerr))
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
                    drop_redis(h);
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

/* ---- Message Center ---- */

static int
need_mc(struct herald *h, struct herr *e)
{
    if (h->mc)
        return 0;
    return mc_open(h->s->mc, &h->mc, e);
}

int
herald_mc_get(struct herald *h, const char *id, struct mc_record **out,
              struct herr *e)
{
    *out = NULL;
    if (!job_valid_id(id))
        return herr_set(e, HERR_INVALID, "id",
                        "not a job id ([A-Za-z0-9._:-]{1,128})");
    int rc = need_mc(h, e);
    if (rc)
        return rc;
    return mc_get(h->mc, id, out, e);
}

int
herald_mc_list(struct herald *h, const struct mc_filter *f,
               struct mc_record ***out, size_t *n, char **next_cursor,
               struct herr *e)
{
    *out = NULL;
    *n = 0;
    if (next_cursor)
        *next_cursor = NULL;
    int rc = need_mc(h, e);
    if (rc)
        return rc;
    return mc_list(h->mc, f, out, n, next_cursor, e);
}

int
herald_mc_purge(struct herald *h, int dry_run, struct mc_purge_result *out,
                struct herr *e)
{
    memset(out, 0, sizeof *out);
    int rc = need_mc(h, e);
    if (rc)
        return rc;
    int64_t rec, body;
    mc_purge_cutoffs(h->s->mc_retention_days, h->s->mc_body_days,
                     clock_now_ms(), &rec, &body);
    return mc_purge(h->mc, rec, body, dry_run, 0, out, e);
}

/* A stored [{"email","name"}...] list as a job's (names kept). */
static json_t *
resend_addrs(const char *js)
{
    json_t *a = js ? json_loads(js, 0, NULL) : NULL;
    if (!json_is_array(a)) {
        json_decref(a);
        return NULL;
    }
    return a;
}

int
herald_mc_resend(struct herald *h, const char *id, const char *const *to,
                 size_t nto, char *new_id, struct herr *e)
{
    if (new_id)
        new_id[0] = '\0';
    for (size_t i = 0; i < nto; i++)
        if (!job_valid_email(to[i]))
            return herr_set(e, HERR_INVALID, NULL,
                            "to[%zu]: '%.80s' is not an address", i, to[i]);
    struct mc_record *r = NULL;
    int rc = herald_mc_get(h, id, &r, e);
    if (rc)
        return rc;
    json_t *att = resend_addrs(r->attachments_json);
    size_t natt = json_array_size(att);
    json_decref(att);
    if (natt) {
        rc = herr_set(e, HERR_PERM, "id",
                      "%s has %zu attachment%s, whose content is not kept: "
                      "it cannot be resent",
                      id, natt, natt == 1 ? "" : "s");
    } else if (r->body_expired || (r->text == NULL && r->html == NULL)) {
        rc = herr_set(e, HERR_PERM, "id",
                      "%s has no body any more (HERALD_MC_BODY_DAYS): it "
                      "cannot be resent",
                      id);
    }
    if (rc) {
        mc_record_free(r);
        return rc;
    }
    json_t *j = json_object();
    json_object_set_new(j, "type", json_string(r->type));
    json_object_set_new(j, "org", json_string(r->org));
    json_object_set_new(j, "account", json_string(r->account));
    json_object_set_new(j, "from", json_string(r->from));
    if (r->from_name)
        json_object_set_new(j, "from_name", json_string(r->from_name));
    if (nto) {
        json_t *a = json_array();
        for (size_t i = 0; i < nto; i++)
            json_array_append_new(a, json_string(to[i]));
        json_object_set_new(j, "to", a);
    } else {
        const char *lists[3][2] = {
            {"to", r->to_json}, {"cc", r->cc_json}, {"bcc", r->bcc_json}};
        for (int i = 0; i < 3; i++) {
            json_t *a = resend_addrs(lists[i][1]);
            if (a && json_array_size(a))
                json_object_set_new(j, lists[i][0], a);
            else
                json_decref(a);
        }
    }
    json_object_set_new(j, "subject",
                        json_string(r->subject ? r->subject : "(no subject)"));
    if (r->text)
        json_object_set_new(j, "text", json_string(r->text));
    if (r->html)
        json_object_set_new(j, "html", json_string(r->html));
    if (r->meta_json) {
        json_t *m = json_loads(r->meta_json, 0, NULL);
        if (json_is_object(m))
            json_object_set_new(j, "meta", m);
        else
            json_decref(m);
    }
    json_object_set_new(j, "resend_of", json_string(r->id));
    mc_record_free(r);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s == NULL)
        abort();
    rc = herald_enqueue(h, s, strlen(s), new_id, e);
    free(s);
    return rc;
}

/* ---- queue stats ---- */

static long long
reply_int(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

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
            command(h, e, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
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

static int sender_stats(struct herald *h, struct herald_stats *out,
                        struct herr *e);

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
    redisReply *r = script(h, e, RS_QUOTA_RESUME, 3, 5, argv, NULL);
    free(name);
    if (r == NULL)
        return HERR_REDIS;
    int rc = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        *lifted = reply_int(r->element[0]) > 0;
        *moved = reply_int(r->element[1]);
    } else {
        rc = herr_set(e, HERR_REDIS, NULL,
                      "unexpected reply to the resume "
                      "script");
    }
    freeReplyObject(r);
    return rc;
}

int
herald_queue_stats(struct herald *h, struct herald_stats *out, struct herr *e)
{
    memset(out, 0, sizeof *out);
    char k[6][KEYS_MAX], staged[JOB_PRIO_COUNT][KEYS_MAX];
    for (int p = 0; p < JOB_PRIO_COUNT; p++)
        if (lane_key(h, (enum job_priority)p, k[p], sizeof k[p], e) ||
            keys_fair(staged[p], KEYS_MAX, h->s->prefix, (enum job_priority)p,
                      "staged") < 0)
            return HERR_INVALID;
    if (keys_simple(k[3], KEYS_MAX, h->s->prefix, "scheduled") < 0 ||
        keys_simple(k[4], KEYS_MAX, h->s->prefix, "dead") < 0 ||
        keys_simple(k[5], KEYS_MAX, h->s->prefix, "workers") < 0)
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    int rc = need_redis(h, e);
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
    rc = read_replies(h, 6 + JOB_PRIO_COUNT, r, e);
    if (rc)
        return rc;
    out->now_ms = clock_now_ms();
    /* a lane: its list and the jobs a take staged by organisation */
    for (int p = 0; p < JOB_PRIO_COUNT; p++) {
        const redisReply *st = r[6 + p];
        out->queue[p] = reply_int(r[p]);
        if (st->type == REDIS_REPLY_STRING)
            out->queue[p] += strtoll(st->str, NULL, 10);
    }
    out->scheduled = reply_int(r[3]);
    out->dead = reply_int(r[4]);
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
        rc = need_redis(h, e);
        for (size_t j = 0; rc == 0 && j < m; j++) {
            char key[KEYS_MAX];
            if (keys_processing(key, sizeof key, h->s->prefix,
                                out->workers[i + j].id) < 0)
                snprintf(key, sizeof key, "%s", ""); /* LLEN "" = 0 */
            redisAppendCommand(h->c, "LLEN %s", key);
        }
        redisReply **rr = xcalloc(m, sizeof *rr);
        if (rc == 0)
            rc = read_replies(h, m, rr, e);
        if (rc == 0) {
            for (size_t j = 0; j < m; j++) {
                out->workers[i + j].processing = reply_int(rr[j]);
                freeReplyObject(rr[j]);
            }
        }
        free(rr);
        if (rc) {
            herald_stats_free(out);
            return rc;
        }
    }
    rc = sender_stats(h, out, e);
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

/* ---- dead letters ---- */

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
        redisReply *r = command(h, e, "LRANGE %s %lld %lld", key, first, last);
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
    r->rc = prepare(d->entry.job, d->entry.joblen, &canon, &prio, id, &r->err);
    if (r->rc)
        return 0;
    r->lane = prio;
    r->job_id = id;
    char lane[KEYS_MAX];
    int rc = lane_key(h, prio, lane, sizeof lane, e);
    if (rc) {
        free(canon);
        return rc;
    }
    redisReply *rep =
        command(h, e, "EVAL %s 2 %s %s %b %b", replay_script, dkey, lane,
                d->raw, d->rawlen, canon, strlen(canon));
    free(canon);
    if (rep == NULL) {
        r->rc = HERR_REDIS;
        if (e)
            r->err = *e;
        return HERR_REDIS;
    }
    if (reply_int(rep) != 1)
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

/* ---- templates ---- */

static int
template_key(struct herald *h, char *out, size_t n, struct herr *e)
{
    if (keys_simple(out, n, h->s->prefix, "templates") < 0)
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    return 0;
}

static int
check_template_name(const char *name, struct herr *e)
{
    if (!tmpl_valid_name(name))
        return herr_set(e, HERR_INVALID, "name",
                        "not a template name ([A-Za-z0-9._-]{1,64})");
    return 0;
}

int
herald_template_set(struct herald *h, const char *name, const char *json,
                    size_t len, struct herr *e)
{
    char key[KEYS_MAX];
    int rc = check_template_name(name, e);
    if (rc)
        return rc;
    struct tmpl *t;
    if ((rc = tmpl_parse(json, len, &t, e)) != 0)
        return rc;
    char *canon = tmpl_to_json(t);
    tmpl_free(t);
    rc = template_key(h, key, sizeof key, e);
    if (rc == 0) {
        redisReply *r =
            command(h, e, "HSET %s %s %b", key, name, canon, strlen(canon));
        if (r == NULL)
            rc = HERR_REDIS;
        else
            freeReplyObject(r);
    }
    free(canon);
    return rc;
}

int
herald_template_get(struct herald *h, const char *name, char **json,
                    struct herr *e)
{
    *json = NULL;
    char key[KEYS_MAX];
    int rc = check_template_name(name, e);
    if (rc == 0)
        rc = template_key(h, key, sizeof key, e);
    if (rc)
        return rc;
    redisReply *r = command(h, e, "HGET %s %s", key, name);
    if (r == NULL)
        return HERR_REDIS;
    if (r->type == REDIS_REPLY_STRING)
        *json = xstrndup(r->str, r->len);
    else
        rc = herr_set(e, HERR_NOTFOUND, "name", "no such template");
    freeReplyObject(r);
    return rc;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int
herald_template_list(struct herald *h, char ***names, size_t *n, struct herr *e)
{
    *names = NULL;
    *n = 0;
    char key[KEYS_MAX];
    int rc = template_key(h, key, sizeof key, e);
    if (rc)
        return rc;
    redisReply *r = command(h, e, "HKEYS %s", key);
    if (r == NULL)
        return HERR_REDIS;
    size_t m = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
    char **v = m ? xcalloc(m, sizeof *v) : NULL;
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        const redisReply *el = r->element[i];
        if (el->type == REDIS_REPLY_STRING)
            v[k++] = xstrndup(el->str, el->len);
    }
    freeReplyObject(r);
    if (k)
        qsort(v, k, sizeof *v, cmp_str);
    *names = v;
    *n = k;
    return 0;
}

void
herald_template_names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int
herald_template_remove(struct herald *h, const char *name, struct herr *e)
{
    char key[KEYS_MAX];
    int rc = check_template_name(name, e);
    if (rc == 0)
        rc = template_key(h, key, sizeof key, e);
    if (rc)
        return rc;
    redisReply *r = command(h, e, "HDEL %s %s", key, name);
    if (r == NULL)
        return HERR_REDIS;
    if (reply_int(r) == 0)
        rc = herr_set(e, HERR_NOTFOUND, "name", "no such template");
    freeReplyObject(r);
    return rc;
}

/* ---- Email Sending Schemes ---- */

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

static int
scheme_keys(struct herald *h, char *hash, char *version, struct herr *e)
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

/* Reads one field: 0 with *raw (new) or NULL when absent; HERR_REDIS. */
static int
hash_read(struct herald *h, const char *hash, const char *field, char **raw,
          size_t *rawlen, struct herr *e)
{
    *raw = NULL;
    *rawlen = 0;
    redisReply *r = command(h, e, "HGET %s %s", hash, field);
    if (r == NULL)
        return HERR_REDIS;
    if (r->type == REDIS_REPLY_STRING) {
        *raw = xstrndup(r->str, r->len);
        *rawlen = r->len;
    }
    freeReplyObject(r);
    return 0;
}

/* The compare-and-set of a versioned hash (redis/scheme_cas.lua: schemes
 * and organisations): 1 done, 0 the field changed meanwhile, or HERR_REDIS.
 * `old` / `neu` NULL stand for "absent" / "delete". */
static int
hash_cas(struct herald *h, const char *hash, const char *version,
         const char *field, const char *old, size_t oldlen, const char *neu,
         struct herr *e)
{
    const char *argv[5] = {hash, version, field, old ? old : "",
                           neu ? neu : ""};
    size_t lens[5] = {strlen(hash), strlen(version), strlen(field),
                      old ? oldlen : 0, strlen(argv[4])};
    redisReply *r = script(h, e, RS_SCHEME_CAS, 2, 5, argv, lens);
    if (r == NULL)
        return HERR_REDIS;
    int done = reply_int(r) > 0;
    freeReplyObject(r);
    return done;
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
        rc = scheme_keys(h, hash, version, e);
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
    rc = hash_cas(h, hash, version, field, NULL, 0, json, e);
    free(json);
    if (rc == 0)
        return herr_set(e, HERR_EXISTS, "email",
                        "scheme %s already exists (use 'scheme update')",
                        field);
    return rc < 0 ? rc : 0;
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
        rc = scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    struct scheme_patch q = *p;
    char *token = NULL;
    if (password) {
        if ((rc = scheme_seal(key, password, len, aad, &token, e)) != 0)
            return rc;
        q.password = token;
    }
    rc = herr_set(e, HERR_TEMP, "email", "scheme %s kept changing; try again",
                  field);
    for (int tries = 0; tries < HERALD_SCHEME_RETRIES; tries++) {
        char *raw;
        size_t rawlen;
        if ((rc = hash_read(h, hash, field, &raw, &rawlen, e)) != 0)
            break;
        if (raw == NULL) {
            rc = herr_set(e, HERR_NOTFOUND, "email", "no such scheme: %s",
                          field);
            break;
        }
        struct scheme *s;
        struct herr pe = {{0}, {0}};
        if ((rc = scheme_from_json(raw, rawlen, &s, &pe)) != 0) {
            free(raw);
            rc = herr_set(e, HERR_STORE, "email",
                          "stored scheme %s is invalid: %s: %s", field,
                          pe.field, pe.msg);
            break;
        }
        rc = scheme_apply(s, &q, clock_now_ms(), e);
        char *json = rc ? NULL : scheme_to_json(s, 0);
        scheme_free(s);
        if (rc == 0)
            rc = hash_cas(h, hash, version, field, raw, rawlen, json, e);
        free(json);
        free(raw);
        if (rc == 1) {
            rc = 0;
            break;
        }
        if (rc < 0)
            break;
        rc = herr_set(e, HERR_TEMP, "email",
                      "scheme %s kept changing; try again", field);
    }
    free(token);
    return rc;
}

int
herald_scheme_get(struct herald *h, const char *org, const char *email,
                  struct scheme **out, struct herr *e)
{
    *out = NULL;
    char field[SCHEME_FIELD_MAX], hash[KEYS_MAX], version[KEYS_MAX];
    int rc = scheme_names(org, email, field, NULL, e);
    if (rc == 0)
        rc = scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    char *raw;
    size_t rawlen;
    if ((rc = hash_read(h, hash, field, &raw, &rawlen, e)) != 0)
        return rc;
    if (raw == NULL)
        return herr_set(e, HERR_NOTFOUND, "email", "no such scheme: %s", field);
    rc = scheme_from_json(raw, rawlen, out, e);
    free(raw);
    return rc;
}

/* Parses a stored row and checks it sits under its own field. */
static int
scheme_decode_row(const char *field, const char *raw, size_t rawlen,
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
    int rc = scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    redisReply *r = command(h, e, "HGETALL %s", hash);
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
        scheme_decode_row(row->field, val->str, val->len, &row->scheme,
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

int
herald_scheme_remove(struct herald *h, const char *org, const char *email,
                     struct herr *e)
{
    char field[SCHEME_FIELD_MAX], hash[KEYS_MAX], version[KEYS_MAX];
    int rc = scheme_names(org, email, field, NULL, e);
    if (rc == 0)
        rc = scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    for (int tries = 0; tries < HERALD_SCHEME_RETRIES; tries++) {
        char *raw;
        size_t rawlen;
        if ((rc = hash_read(h, hash, field, &raw, &rawlen, e)) != 0)
            return rc;
        if (raw == NULL)
            return herr_set(e, HERR_NOTFOUND, "email", "no such scheme: %s",
                            field);
        rc = hash_cas(h, hash, version, field, raw, rawlen, NULL, e);
        free(raw);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    return herr_set(e, HERR_TEMP, "email", "scheme %s kept changing; try again",
                    field);
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
        rc = scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    for (int tries = 0; tries < HERALD_SCHEME_RETRIES; tries++) {
        char *raw;
        size_t rawlen;
        if ((rc = hash_read(h, hash, field, &raw, &rawlen, e)) != 0)
            return rc;
        if (raw == NULL)
            return herr_set(e, HERR_NOTFOUND, "email", "no such scheme: %s",
                            field);
        struct scheme *s;
        struct herr pe = {{0}, {0}};
        if (scheme_from_json(raw, rawlen, &s, &pe) != 0) {
            free(raw);
            return herr_set(e, HERR_STORE, "email",
                            "stored scheme %s is invalid: %s: %s", field,
                            pe.field, pe.msg);
        }
        if (s->state != SCHEME_STATE_AUTH_FAILED ||
            !scheme_same_target(s, tested)) {
            scheme_free(s);
            free(raw);
            return 0;
        }
        s->state = SCHEME_STATE_OK;
        free(s->state_reason);
        s->state_reason = xstrdup("");
        s->state_at = clock_now_ms();
        char *json = scheme_to_json(s, 0);
        scheme_free(s);
        rc = hash_cas(h, hash, version, field, raw, rawlen, json, e);
        free(json);
        free(raw);
        if (rc != 0) {
            if (rc > 0)
                *cleared = 1;
            return rc < 0 ? rc : 0;
        }
    }
    return herr_set(e, HERR_TEMP, "email", "scheme %s kept changing; try again",
                    field);
}

int
herald_scheme_version(struct herald *h, long long *out, struct herr *e)
{
    *out = 0;
    char hash[KEYS_MAX], version[KEYS_MAX];
    int rc = scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    redisReply *r = command(h, e, "GET %s", version);
    if (r == NULL)
        return HERR_REDIS;
    if (r->type == REDIS_REPLY_STRING)
        *out = strtoll(r->str, NULL, 10);
    freeReplyObject(r);
    return 0;
}

/*
 * Re-seals one stored value. Returns 0 with r->rc / r->resealed /
 * r->removed filled, or HERR_REDIS / HERR_TEMP.
 */
static int
rotate_one(struct herald *h, const char *hash, const char *version,
           const char *field, char **rawp, size_t *rawlenp,
           const struct seal_key *const keys[2], struct herald_rotate *r,
           struct herr *e)
{
    char *raw = *rawp;
    size_t rawlen = *rawlenp;
    for (int tries = 0; tries < HERALD_SCHEME_RETRIES; tries++) {
        struct scheme *s;
        r->rc = scheme_decode_row(field, raw, rawlen, &s, &r->err);
        if (r->rc)
            return 0;
        char aad[SCHEME_AAD_MAX], kid[SEAL_KEYID_LEN + 1];
        scheme_aad(aad, sizeof aad, s->org, s->email);
        char *pt;
        size_t ptlen;
        r->rc = seal_open(keys, 2, s->password, aad, &pt, &ptlen, &r->err);
        if (r->rc) {
            snprintf(r->err.field, sizeof r->err.field, "password");
            scheme_free(s);
            return 0;
        }
        if (seal_token_key_id(s->password, kid) == 0 &&
            strcmp(kid, seal_key_id(keys[1])) == 0) {
            seal_free_secret(pt, ptlen);
            scheme_free(s);
            return 0; /* already under the new key, and it opens */
        }
        char *token = seal_seal(keys[1], pt, ptlen, aad);
        seal_free_secret(pt, ptlen);
        if (token == NULL) {
            scheme_free(s);
            r->rc = herr_set(&r->err, HERR_PERM, "password",
                             "sealing failed (OpenSSL or the random "
                             "generator)");
            return 0;
        }
        free(s->password);
        s->password = token;
        char *json = scheme_to_json(s, 0);
        scheme_free(s);
        int rc = hash_cas(h, hash, version, field, raw, rawlen, json, e);
        free(json);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            r->resealed = 1;
            return 0;
        }
        /* Changed meanwhile: read it again. */
        char *again;
        size_t againlen;
        if ((rc = hash_read(h, hash, field, &again, &againlen, e)) != 0)
            return rc;
        free(raw);
        *rawp = raw = again;
        *rawlenp = rawlen = againlen;
        if (raw == NULL) {
            r->removed = 1;
            return 0;
        }
    }
    return herr_set(e, HERR_TEMP, "email", "scheme %s kept changing; try again",
                    field);
}

int
herald_key_rotate(struct herald *h, const struct seal_key *old_key,
                  const struct seal_key *new_key, herald_rotate_cb cb,
                  void *arg, size_t *resealed, size_t *already, size_t *failed,
                  struct herr *e)
{
    size_t nre = 0, nal = 0, nfail = 0;
    char hash[KEYS_MAX], version[KEYS_MAX];
    int rc = scheme_keys(h, hash, version, e);
    if (rc)
        return rc;
    redisReply *all = command(h, e, "HGETALL %s", hash);
    if (all == NULL)
        return HERR_REDIS;
    const struct seal_key *const keys[2] = {old_key, new_key};
    size_t m = all->type == REDIS_REPLY_ARRAY ? all->elements / 2 : 0;
    for (size_t i = 0; i < m && rc == 0; i++) {
        const redisReply *f = all->element[2 * i], *v = all->element[2 * i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        char *field = xstrndup(f->str, f->len);
        char *raw = xstrndup(v->str, v->len);
        size_t rawlen = v->len;
        struct herald_rotate r;
        memset(&r, 0, sizeof r);
        r.field = field;
        rc = rotate_one(h, hash, version, field, &raw, &rawlen, keys, &r, e);
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
        free(raw);
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

/* ---- organisations ---- */

static int
org_keys(struct herald *h, char *hash, char *version, struct herr *e)
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
static int
org_decode_row(const char *field, const char *raw, size_t rawlen,
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

/* Drops a WATCH (the connection is dropped when even that fails). */
/*
 * One attempt of herald_org_set: read the org, apply the patch, write it
 * back by compare-and-set. 1 written (*done set), 0 the org changed
 * meanwhile, or a negative HERR_*.
 */
static int
org_set_once(struct herald *h, const char *hash, const char *version,
             const char *org, const struct herald_org_patch *p,
             struct org **done, struct herr *e)
{
    char *raw;
    size_t rawlen;
    int rc = hash_read(h, hash, org, &raw, &rawlen, e);
    if (rc)
        return rc;
    struct org *o = NULL;
    if (raw) {
        struct herr pe = {{0}, {0}};
        if (org_decode_row(org, raw, rawlen, &o, &pe) != 0) {
            free(raw);
            return org_stored_invalid(org, &pe, e);
        }
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
    rc = org_check(o, e);
    char *json = rc ? NULL : org_json_keep(o, raw, rawlen, e);
    if (json == NULL) {
        free(raw);
        org_free(o);
        return rc ? rc : HERR_TOOBIG;
    }
    rc = hash_cas(h, hash, version, org, raw, rawlen, json, e);
    free(raw);
    free(json);
    if (rc == 1)
        *done = o;
    else
        org_free(o);
    return rc;
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
        rc = org_keys(h, hash, version, e);
    if (rc)
        return rc;
    for (int tries = 0; tries < HERALD_ORG_RETRIES; tries++) {
        struct org *done = NULL;
        rc = org_set_once(h, hash, version, org, p, &done, e);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            if (out)
                *out = done;
            else
                org_free(done);
            return 0;
        }
    }
    return herr_set(e, HERR_TEMP, "org", "org %s kept changing; try again",
                    org);
}

int
herald_org_get(struct herald *h, const char *org, struct org **out,
               struct herr *e)
{
    *out = NULL;
    char hash[KEYS_MAX], version[KEYS_MAX];
    int rc = org_name_ok(org, e);
    if (rc == 0)
        rc = org_keys(h, hash, version, e);
    if (rc)
        return rc;
    redisReply *r = command(h, e, "HGET %s %s", hash, org);
    if (r == NULL)
        return HERR_REDIS;
    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return herr_set(e, HERR_NOTFOUND, "org", "no such org: %s", org);
    }
    struct herr pe = {{0}, {0}};
    rc = org_decode_row(org, r->str, r->len, out, &pe);
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
    int rc = org_keys(h, hash, version, e);
    if (rc)
        return rc;
    redisReply *r = command(h, e, "HGETALL %s", hash);
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
        org_decode_row(row->field, val->str, val->len, &row->org, &row->err);
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
        if (scheme_decode_row(field, v->str, v->len, &s, NULL) != 0) {
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
        if (org_decode_row(field, v->str, v->len, &o, NULL) != 0) {
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
        if ((rc = need_redis(h, e)) != 0)
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
        if ((rc = read_replies_opt(h, ncmd, rr, 0, e)) != 0)
            break;
        out->unreadable += count_errors(rr, ncmd);
        size_t k = 0;
        for (size_t j = first; j < i; j++) {
            struct herald_sender_stat *x = &out->senders[j];
            for (size_t w = 0; w < x->nwindows; w++, k++)
                if (rr[k]->type == REDIS_REPLY_STRING)
                    x->windows[w].used = strtoll(rr[k]->str, NULL, 10);
            x->waiting = reply_int(rr[k++]);
        }
        for (size_t j = 0; j < ncmd; j++)
            freeReplyObject(rr[j]);
    }
    free(rr);
    return rc;
}

static int
sender_stats(struct herald *h, struct herald_stats *out, struct herr *e)
{
    char sk[KEYS_MAX], sv[KEYS_MAX], ok[KEYS_MAX], ov[KEYS_MAX];
    char pk[KEYS_MAX];
    int rc = scheme_keys(h, sk, sv, e);
    if (rc == 0)
        rc = org_keys(h, ok, ov, e);
    if (rc == 0 && keys_pauses(pk, sizeof pk, h->s->prefix) < 0)
        rc = herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    if (rc == 0)
        rc = need_redis(h, e);
    if (rc)
        return rc;
    redisAppendCommand(h->c, "HGETALL %s", sk);
    redisAppendCommand(h->c, "HGETALL %s", ok);
    redisAppendCommand(h->c, "HGETALL %s", pk);
    redisReply *r[3] = {0};
    if ((rc = read_replies_opt(h, 3, r, 0, e)) != 0)
        return rc;
    out->unreadable += count_errors(r, 3);
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

/* ---- API tokens ---- */

/* Token records: redis/token_create.lua and token_revoke.lua. */

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
    redisReply *r = script(h, e, RS_TOKEN_CREATE, 1, 4, argv, NULL);
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
    redisReply *r = command(h, e, "HVALS %s", key);
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
    redisReply *r = script(h, e, RS_TOKEN_REVOKE, 1, 2, argv, NULL);
    if (r == NULL)
        return HERR_REDIS;
    long long n = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    freeReplyObject(r);
    if (n == 0)
        return herr_set(e, HERR_NOTFOUND, "name", "no token named '%s'", name);
    return 0;
}

/* The slot holding `hash` (fresh or not), or NULL. */
static struct token_seen *
token_seen_find(struct herald *h, const char *hash)
{
    for (size_t i = 0; i < TOKEN_SEEN_N; i++)
        if (h->seen[i].rec != NULL && strcmp(h->seen[i].hash, hash) == 0)
            return &h->seen[i];
    return NULL;
}

/* Remembers Redis' answer for `hash` (a copy); on no memory, nothing. */
static void
token_seen_keep(struct herald *h, const char *hash, const char *rec, size_t len,
                int64_t at)
{
    struct token_seen *t = token_seen_find(h, hash);
    if (t == NULL) {
        t = &h->seen[h->seen_next];
        h->seen_next = (h->seen_next + 1) % TOKEN_SEEN_N;
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
    struct token_seen *t = token_seen_find(h, hash);
    if (t != NULL && now - t->at < TOKEN_SEEN_MS &&
        token_rec_parse(t->rec, t->len, out) == 0)
        return 0;
    int rc = tokens_key(h, key, sizeof key, e);
    if (rc)
        return rc;
    redisReply *r = command(h, e, "HGET %s %s", key, hash);
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

/* ---- Message Center: schema and import ---- */

int
herald_mc_migrate(struct herald *h, int *version, int *before, struct herr *e)
{
    *version = 0;
    *before = -1;
    int rc = need_mc(h, e);
    if (rc)
        return rc;
    return mc_schema_version(h->mc, version, before);
}

int
herald_mc_import(struct herald *h, const char *from_url,
                 struct mc_import_result *out, struct herr *e)
{
    memset(out, 0, sizeof *out);
    if (from_url == NULL || *from_url == '\0')
        return herr_set(e, HERR_INVALID, "from", "missing store URL");
    if (strcmp(from_url, h->s->mc) == 0)
        return herr_set(e, HERR_INVALID, "from",
                        "that is the configured store (HERALD_MC) itself");
    int rc = need_mc(h, e);
    if (rc)
        return rc;
    struct mc *src = NULL;
    rc = mc_open(from_url, &src, e);
    if (rc) {
        if (rc == HERR_INVALID && e)
            snprintf(e->field, sizeof e->field, "from");
        return rc;
    }
    rc = mc_import(h->mc, src, out, e);
    mc_close(src);
    return rc;
}
