/*
 * libherald — the handle of producer/herald.h (open, close, the redacted
 * URL), its Redis connection (connect, AUTH, SELECT, drop after an I/O
 * failure) and the helpers every other producer/lib*.c file talks to
 * Redis through (lib_internal.h): one command, one script by EVALSHA,
 * pipelined replies.
 */
#include "herald.h"
#include "lib_internal.h"
#include "util.h"

#include <hiredis.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

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

void
lh_drop_redis(struct herald *h)
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
        lh_drop_redis(h);
        return rc;
    }
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR)
        rc = herr_set(e, HERR_REDIS, "HERALD_REDIS", "%s: %s refused: %s",
                      h->url, what, r->str);
    freeReplyObject(r);
    if (rc)
        lh_drop_redis(h);
    return rc;
}

int
lh_need_redis(struct herald *h, struct herr *e)
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

redisReply *
lh_command(struct herald *h, struct herr *e, const char *fmt, ...)
{
    if (lh_need_redis(h, e))
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(h->c, fmt, ap);
    va_end(ap);
    if (r == NULL) {
        herr_set(e, HERR_REDIS, "HERALD_REDIS", "%s: %s", h->url, h->c->errstr);
        lh_drop_redis(h);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        herr_set(e, HERR_REDIS, NULL, "%s: %s", h->url, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

redisReply *
lh_script(struct herald *h, struct herr *e, enum rscript_id id, int nkeys,
          int argc, const char **argv, const size_t *lens)
{
    if (lh_need_redis(h, e))
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
        lh_drop_redis(h);
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

int
lh_read_replies_opt(struct herald *h, size_t n, redisReply **out, int strict,
                    struct herr *e)
{
    int rc = 0;
    size_t got;
    for (got = 0; got < n; got++) {
        void *r = NULL;
        if (redisGetReply(h->c, &r) != REDIS_OK || r == NULL) {
            rc = herr_set(e, HERR_REDIS, "HERALD_REDIS", "%s: %s", h->url,
                          h->c->errstr[0] ? h->c->errstr : "no reply");
            lh_drop_redis(h);
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
lh_read_replies(struct herald *h, size_t n, redisReply **out, struct herr *e)
{
    return lh_read_replies_opt(h, n, out, 1, e);
}

size_t
lh_count_errors(redisReply **r, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += r[i]->type == REDIS_REPLY_ERROR;
    return k;
}

long long
lh_reply_int(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
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
        rc = lh_need_redis(h, e);
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
    lh_drop_redis(h);
    if (h->mc)
        mc_close(h->mc);
    for (size_t i = 0; i < LH_TOKEN_SEEN_N; i++)
        free(h->seen[i].rec);
    memset(h->target.password, 0, sizeof h->target.password);
    free(h);
}
