#include "logingate.h"
#include "keys.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

enum gstate { G_IDLE, G_ASKING, G_LEASED, G_BUSY, G_VERIFIED };

struct waiter {
    logingate_wake_fn *wake;
    void *ud;
};

struct gate {
    struct gate *next;
    struct logingate *g;
    char *field, *fp;
    enum gstate st;
    void *holder; /* the one transaction allowed while not verified */
    struct waiter *w;
    size_t nw, capw;
    int asking; /* a lease request is out */
};

struct logingate {
    struct queue *q;
    char *me;
    int64_t lease_ms;
    struct gate *gates;
};

struct logingate *
logingate_new(struct queue *q, const char *worker, int64_t lease_ms)
{
    struct logingate *g = xcalloc(1, sizeof *g);
    g->q = q;
    g->me = xstrdup(worker);
    g->lease_ms = lease_ms;
    return g;
}

void
logingate_free(struct logingate *g)
{
    if (g == NULL)
        return;
    while (g->gates) {
        struct gate *x = g->gates;
        g->gates = x->next;
        free(x->field);
        free(x->fp);
        free(x->w);
        free(x);
    }
    free(g->me);
    free(g);
}

static struct gate *
gate_get(struct logingate *g, const char *field, const char *fp)
{
    for (struct gate *x = g->gates; x; x = x->next)
        if (strcmp(x->field, field) == 0 && strcmp(x->fp, fp) == 0)
            return x;
    struct gate *x = xcalloc(1, sizeof *x);
    x->g = g;
    x->field = xstrdup(field);
    x->fp = xstrdup(fp);
    x->next = g->gates;
    g->gates = x;
    return x;
}

static void
add_waiter(struct gate *x, logingate_wake_fn *wake, void *ud)
{
    for (size_t i = 0; i < x->nw; i++)
        if (x->w[i].ud == ud)
            return;
    if (x->nw == x->capw) {
        x->capw = x->capw ? x->capw * 2 : 8;
        x->w = xrealloc(x->w, x->capw * sizeof *x->w);
    }
    x->w[x->nw].wake = wake;
    x->w[x->nw].ud = ud;
    x->nw++;
}

/* Wakes everyone waiting (each asks again). */
static void
wake_all(struct gate *x)
{
    size_t n = x->nw;
    struct waiter *w = x->w;
    x->w = NULL;
    x->nw = x->capw = 0;
    for (size_t i = 0; i < n; i++)
        w[i].wake(w[i].ud);
    free(w);
}

static void
wake_one(struct gate *x, void *ud)
{
    for (size_t i = 0; i < x->nw; i++) {
        if (x->w[i].ud != ud)
            continue;
        struct waiter w = x->w[i];
        x->w[i] = x->w[--x->nw];
        w.wake(w.ud);
        return;
    }
}

static void
key_of(struct gate *x, char *out, size_t n)
{
    keys_scheme_login(out, n, queue_prefix(x->g->q), x->field);
}

static void ask(struct gate *x);

static void
on_lease(void *ud, redisReply *r)
{
    struct gate *x = ud;
    x->asking = 0;
    if (r->type != REDIS_REPLY_STRING) {
        x->st = G_BUSY; /* ask again at the next tick */
        return;
    }
    if (strcmp(r->str, "ok") == 0) {
        x->st = G_VERIFIED;
        x->holder = NULL;
        wake_all(x);
    } else if (strcmp(r->str, "lease") == 0) {
        if (x->holder == NULL && x->nw > 0)
            x->holder = x->w[0].ud; /* the asker went away: the next */
        if (x->holder == NULL) {
            x->st = G_IDLE; /* nobody needs it; it expires in Redis */
            return;
        }
        x->st = G_LEASED;
        wake_one(x, x->holder);
    } else {
        x->st = G_BUSY;
    }
}

static void
ask(struct gate *x)
{
    if (x->asking)
        return;
    x->asking = 1;
    x->st = G_ASKING;
    char key[KEYS_MAX + 330], ms[32];
    key_of(x, key, sizeof key);
    snprintf(ms, sizeof ms, "%lld", (long long)x->g->lease_ms);
    const char *argv[4] = {key, x->fp, x->g->me, ms};
    queue_script(x->g->q, RS_LOGIN_LEASE, 1, 4, argv, NULL, on_lease, x);
}

int
logingate_enter(struct logingate *g, const char *field, const char *fp,
                logingate_wake_fn *wake, void *ud)
{
    struct gate *x = gate_get(g, field, fp);
    if (x->st == G_VERIFIED)
        return 1;
    if (x->st == G_LEASED && x->holder == ud)
        return 1;
    add_waiter(x, wake, ud);
    if (x->st == G_IDLE) {
        x->holder = ud;
        ask(x);
    }
    return 0;
}

void
logingate_result(struct logingate *g, const char *field, const char *fp,
                 void *ud, int auth_ok, int auth_failed)
{
    struct gate *x = gate_get(g, field, fp);
    if (x->st == G_VERIFIED)
        return;
    char key[KEYS_MAX + 330];
    key_of(x, key, sizeof key);
    if (auth_ok) {
        x->st = G_VERIFIED;
        x->holder = NULL;
        char *val = xasprintf("ok:%s", fp);
        const char *argv[3] = {"SET", key, val};
        size_t lens[3] = {3, strlen(key), strlen(val)};
        queue_command(g->q, 3, argv, lens, NULL, NULL);
        free(val);
        wake_all(x);
        return;
    }
    if (x->holder != ud)
        return;
    x->holder = NULL;
    x->st = G_IDLE;
    if (auth_failed) {
        /* the scheme is marked auth_failed: the lease has done its job */
        const char *argv[2] = {"DEL", key};
        size_t lens[2] = {3, strlen(key)};
        queue_command(g->q, 2, argv, lens, NULL, NULL);
    }
    wake_all(x); /* they route again: fallback, hold, or a new holder */
}

void
logingate_forget(struct logingate *g, void *ud)
{
    for (struct gate *x = g->gates; x; x = x->next) {
        for (size_t i = 0; i < x->nw; i++)
            if (x->w[i].ud == ud) {
                x->w[i] = x->w[--x->nw];
                break;
            }
        if (x->holder == ud) {
            x->holder = NULL;
            if (x->st == G_LEASED || x->st == G_ASKING || x->st == G_BUSY) {
                x->st = G_IDLE;
                /* a waiter becomes the next holder */
                if (x->nw > 0 && !x->asking) {
                    x->holder = x->w[0].ud;
                    ask(x);
                }
            }
        }
    }
}

void
logingate_tick(struct logingate *g)
{
    for (struct gate *x = g->gates; x; x = x->next)
        if (x->st == G_BUSY && x->holder)
            ask(x);
}
