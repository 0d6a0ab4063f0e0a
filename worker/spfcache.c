#include "spfcache.h"
#include "clock.h"
#include "dnsres.h"
#include "keys.h"
#include "log.h"
#include "spf.h"
#include "util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define SPF_EVAL_MS 20000 /* one evaluation's deadline */
/* Evaluations on the thread pool at once: a dead DNS server and many new
 * domains must not take the threads Message Center batches need (every
 * delivery waits for those); the others queue here. */
#define SPF_RUNNING_MAX 4

struct waiter {
    struct waiter *next;
    spfcache_fn *cb;
    void *ud;
};

struct entry {
    char *domain;
    int known; /* a verdict is here (else: being fetched) */
    int authorised;
    char *why;
    int64_t until_ms;
    struct waiter *waiters;
    uv_work_t work;      /* the evaluation, when one runs */
    struct entry *qnext; /* waiting for a thread-pool slot */
    struct spfcache *c;
    int ttl_s; /* the evaluation's answer */
};

struct spfcache {
    uv_loop_t *loop;
    struct queue *q;
    char *dns, *target;
    struct spf_ip *ips;
    size_t nips;
    struct entry **e; /* open addressing by domain; NULL = empty */
    size_t cap, n;
    int running;                 /* evaluations on the thread pool */
    struct entry *qhead, *qtail; /* evaluations waiting for a slot */
    int closing;
    void (*close_cb)(void *);
    void *close_ud;
};

static void entry_free(struct entry *e);

int
spfcache_new(uv_loop_t *loop, const struct settings *s, struct queue *q,
             struct spfcache **out, struct herr *e)
{
    struct spfcache *c = xcalloc(1, sizeof *c);
    c->loop = loop;
    c->q = q;
    c->dns = s->dns ? xstrdup(s->dns) : NULL;
    c->target = xstrdup(s->sender_domain);
    if (s->dns) {
        struct dnsres *probe = NULL;
        int rc = dnsres_new(s->dns, 0, 0, &probe, e);
        if (rc != 0) {
            free(c->dns);
            free(c->target);
            free(c);
            return rc;
        }
        dnsres_free(probe);
    }
    if (s->sender_ips) {
        char *list = xstrdup(s->sender_ips), *save = NULL;
        for (char *tok = strtok_r(list, ", \t", &save); tok;
             tok = strtok_r(NULL, ", \t", &save)) {
            struct spf_ip ip;
            if (spf_ip_parse(tok, &ip) != 0) {
                herr_set(e, HERR_INVALID, "HERALD_SENDER_IPS",
                         "\"%s\" is not an IP address", tok);
                free(list);
                free(c->ips);
                free(c->dns);
                free(c->target);
                free(c);
                return HERR_INVALID;
            }
            c->ips = xrealloc(c->ips, (c->nips + 1) * sizeof *c->ips);
            c->ips[c->nips++] = ip;
        }
        free(list);
    }
    *out = c;
    return 0;
}

static struct entry *
find(struct spfcache *c, const char *domain)
{
    if (c->cap == 0)
        return NULL;
    for (size_t i = util_hash(domain) & (c->cap - 1); c->e[i];
         i = (i + 1) & (c->cap - 1))
        if (strcmp(c->e[i]->domain, domain) == 0)
            return c->e[i];
    return NULL;
}

static void
put(struct entry **tab, size_t cap, struct entry *en)
{
    size_t i = util_hash(en->domain) & (cap - 1);
    while (tab[i])
        i = (i + 1) & (cap - 1);
    tab[i] = en;
}

/* Room for one more entry: the table at most half full; when it holds
 * SPFCACHE_ENTRIES, settled entries are dropped (never one being fetched:
 * its waiters depend on it). */
static void
make_room(struct spfcache *c)
{
    int prune = c->n >= SPFCACHE_ENTRIES;
    if (!prune && (c->n + 1) * 2 <= c->cap)
        return;
    size_t keep = 0;
    for (size_t i = 0; i < c->cap; i++) {
        struct entry *en = c->e[i];
        if (en && prune && en->known && en->waiters == NULL) {
            entry_free(en);
            c->e[i] = NULL;
        } else if (en) {
            keep++;
        }
    }
    size_t cap = c->cap ? c->cap : 64;
    while ((keep + 1) * 2 > cap)
        cap *= 2;
    struct entry **tab = xcalloc(cap, sizeof *tab);
    for (size_t i = 0; i < c->cap; i++)
        if (c->e[i])
            put(tab, cap, c->e[i]);
    free(c->e);
    c->e = tab;
    c->cap = cap;
    c->n = keep;
}

static void
answer(struct entry *en)
{
    /* waiters were pushed at the head: answer them oldest first, so jobs
     * keep the order they were taken in (priority lanes) */
    struct waiter *w = NULL, *rest = en->waiters;
    en->waiters = NULL;
    while (rest) {
        struct waiter *next = rest->next;
        rest->next = w;
        w = rest;
        rest = next;
    }
    while (w) {
        struct waiter *next = w->next;
        if (!en->c->closing)
            w->cb(w->ud, en->authorised, en->why);
        free(w);
        w = next;
    }
}

static void
settle(struct entry *en, int authorised, const char *why, int ttl_s)
{
    en->known = 1;
    en->authorised = authorised;
    free(en->why);
    en->why = xstrdup(why);
    en->until_ms = clock_now_ms() + (int64_t)ttl_s * 1000;
    answer(en);
}

/* ---- the evaluation, on the thread pool ---- */

static void
eval_work(uv_work_t *req)
{
    struct entry *en = req->data;
    struct spfcache *c = en->c;
    struct dnsres *dr = NULL;
    struct herr e = {{0}, {0}};
    if (dnsres_new(c->dns, 0, 0, &dr, &e) != 0) {
        en->authorised = 0;
        en->why = xasprintf("SPF not checked: %s", e.msg);
        en->ttl_s = SPFCACHE_TEMP_S;
        return;
    }
    struct spf_resolver r;
    dnsres_resolver(dr, &r);
    struct spf_result res;
    memset(&res, 0, sizeof res);
    int ok = spf_platform_verdict(en->domain, c->target, c->ips, c->nips, &r,
                                  clock_now_ms() + SPF_EVAL_MS, &res);
    en->authorised = ok;
    if (ok)
        en->why = xasprintf("the SPF policy of %s authorises the platform "
                            "(%s: %s)",
                            en->domain, spf_res_str(res.result), res.reason);
    else
        en->why = xasprintf("the SPF policy of %s does not authorise the "
                            "platform (%s: %s)",
                            en->domain, spf_res_str(res.result), res.reason);
    if (res.result == SPF_TEMPERROR || res.result == SPF_PERMERROR)
        en->ttl_s = SPFCACHE_TEMP_S;
    else
        en->ttl_s = res.ttl > SPFCACHE_MAX_S ? SPFCACHE_MAX_S : (int)res.ttl;
    spf_result_free(&res);
    dnsres_free(dr);
}

static void maybe_closed(struct spfcache *c);
static void eval_done(uv_work_t *req, int status);

/* Starts waiting evaluations while slots are free. */
static void
start_evals(struct spfcache *c)
{
    while (!c->closing && c->running < SPF_RUNNING_MAX && c->qhead) {
        struct entry *en = c->qhead;
        c->qhead = en->qnext;
        if (c->qhead == NULL)
            c->qtail = NULL;
        en->qnext = NULL;
        en->work.data = en;
        c->running++;
        if (uv_queue_work(c->loop, &en->work, eval_work, eval_done) != 0) {
            c->running--;
            settle(en, 0, "SPF not checked: no worker thread", 0);
        }
    }
}

static void
eval_done(uv_work_t *req, int status)
{
    struct entry *en = req->data;
    struct spfcache *c = en->c;
    c->running--;
    if (c->closing) {
        maybe_closed(c);
        return;
    }
    start_evals(c);
    char *why =
        en->why ? en->why : xstrdup(status < 0 ? "SPF check cancelled" : "?");
    en->why = NULL;
    int ttl = status < 0 ? 0 : en->ttl_s;
    if (ttl > 0) {
        /* share with the fleet: "1|reason" or "0|reason" */
        char key[KEYS_MAX + SPF_NAME_MAX + 8], px[32];
        char *val = xasprintf("%d|%s", en->authorised, why);
        keys_spf(key, sizeof key, queue_prefix(c->q), en->domain);
        snprintf(px, sizeof px, "%d", ttl * 1000);
        const char *argv[5] = {"SET", key, val, "PX", px};
        size_t lens[5];
        for (int i = 0; i < 5; i++)
            lens[i] = strlen(argv[i]);
        queue_command(c->q, 5, argv, lens, NULL, NULL);
        free(val);
    }
    settle(en, en->authorised, why, ttl);
    free(why);
}

static void
on_cached(void *ud, redisReply *r)
{
    struct entry *en = ud;
    struct spfcache *c = en->c;
    if (r->type == REDIS_REPLY_STRING && r->len > 2 && r->str[1] == '|') {
        /* the fleet's verdict; its own expiry is in Redis */
        settle(en, r->str[0] == '1', r->str + 2, SPFCACHE_TEMP_S);
        return;
    }
    en->qnext = NULL;
    if (c->qtail)
        c->qtail->qnext = en;
    else
        c->qhead = en;
    c->qtail = en;
    start_evals(c);
}

void
spfcache_check(struct spfcache *c, const char *domain, spfcache_fn *cb,
               void *ud)
{
    char d[SPF_NAME_MAX + 1];
    size_t n = strlen(domain);
    if (n > SPF_NAME_MAX) {
        cb(ud, 0, "the domain is too long for an SPF check");
        return;
    }
    for (size_t i = 0; i <= n; i++)
        d[i] = (char)tolower((unsigned char)domain[i]);
    struct entry *en = find(c, d);
    int64_t now = clock_now_ms();
    if (en && en->known && now < en->until_ms) {
        cb(ud, en->authorised, en->why);
        return;
    }
    if (en == NULL) {
        make_room(c);
        en = xcalloc(1, sizeof *en);
        en->domain = xstrdup(d);
        en->c = c;
        put(c->e, c->cap, en);
        c->n++;
    }
    struct waiter *w = xcalloc(1, sizeof *w);
    w->cb = cb;
    w->ud = ud;
    w->next = en->waiters;
    en->waiters = w;
    if (w->next)
        return; /* a fetch is on its way */
    en->known = 0;
    free(en->why); /* the evaluation writes a new one */
    en->why = NULL;
    char key[KEYS_MAX + SPF_NAME_MAX + 8];
    keys_spf(key, sizeof key, queue_prefix(c->q), d);
    const char *argv[2] = {"GET", key};
    size_t lens[2] = {3, strlen(key)};
    queue_command(c->q, 2, argv, lens, on_cached, en);
}

static void
entry_free(struct entry *en)
{
    struct waiter *w = en->waiters;
    while (w) {
        struct waiter *next = w->next;
        free(w);
        w = next;
    }
    free(en->domain);
    free(en->why);
    free(en);
}

static void
maybe_closed(struct spfcache *c)
{
    if (!c->closing || c->running > 0)
        return;
    void (*cb)(void *) = c->close_cb;
    void *ud = c->close_ud;
    for (size_t i = 0; i < c->cap; i++)
        if (c->e[i])
            entry_free(c->e[i]);
    free(c->e);
    free(c->ips);
    free(c->dns);
    free(c->target);
    free(c);
    if (cb)
        cb(ud);
}

void
spfcache_close(struct spfcache *c, void (*cb)(void *ud), void *ud)
{
    c->closing = 1;
    c->close_cb = cb;
    c->close_ud = ud;
    maybe_closed(c);
}
