#include "purge.h"
#include "clock.h"
#include "keys.h"
#include "log.h"
#include "mc.h"
#include "util.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct purge {
    uv_loop_t *loop;
    const struct settings *s;
    struct queue *q;
    char *me;
    char key[KEYS_MAX];
    uv_timer_t timer;
    uv_work_t work;
    int running; /* a round on the thread pool */
    int closing;
    void (*done)(void *);
    void *done_ud;
    /* the round */
    int64_t records_before, bodies_before;
    struct mc_purge_result res;
    struct herr err;
    int rc;
};

static void on_timer(uv_timer_t *t);

static void
arm(struct purge *p, uint64_t ms)
{
    if (!p->closing)
        uv_timer_start(&p->timer, on_timer, ms, 0);
}

/* The store's name in the lease key: SQLite files are per host. */
static void
lease_key(struct purge *p)
{
    char host[256] = "", cwd[1024] = "";
    gethostname(host, sizeof host - 1);
    if (getcwd(cwd, sizeof cwd) == NULL)
        cwd[0] = '\0';
    char *who;
    if (strncmp(p->s->mc, "sqlite:", 7) == 0) {
        who = xasprintf("%s\n%s\n%s", host, cwd, p->s->mc);
    } else {
        /* a URL's password is not part of the store's name */
        const char *at = strrchr(p->s->mc, '@');
        const char *scheme = strstr(p->s->mc, "://");
        who = at && scheme ? xasprintf("%.*s%s", (int)(scheme + 3 - p->s->mc),
                                       p->s->mc, at + 1)
                           : xstrdup(p->s->mc);
    }
    unsigned char d[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)who, strlen(who), d);
    free(who);
    char hex[17];
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    char name[40];
    snprintf(name, sizeof name, "mc_purge:%s", hex);
    keys_simple(p->key, sizeof p->key, p->s->prefix, name);
}

struct purge *
purge_new(uv_loop_t *loop, const struct settings *s, struct queue *q,
          const char *worker_id)
{
    struct purge *p = xcalloc(1, sizeof *p);
    p->loop = loop;
    p->s = s;
    p->q = q;
    p->me = xstrdup(worker_id);
    lease_key(p);
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    p->work.data = p;
    arm(p, PURGE_FIRST_MS);
    return p;
}

static void
release(struct purge *p)
{
    const char *argv[2] = {p->key, p->me};
    queue_script(p->q, RS_PURGE_RELEASE, 1, 2, argv, NULL, NULL, NULL);
}

/* On the thread pool: a store handle of its own (the worker's is the
 * batches'). */
static void
round_run(uv_work_t *req)
{
    struct purge *p = req->data;
    struct mc *m = NULL;
    memset(&p->res, 0, sizeof p->res);
    memset(&p->err, 0, sizeof p->err);
    p->rc = mc_open(p->s->mc, &m, &p->err);
    if (p->rc == 0) {
        p->rc = mc_purge(m, p->records_before, p->bodies_before, 0, PURGE_ROUND,
                         &p->res, &p->err);
        mc_close(m);
    }
}

static void finish_close(struct purge *p);

static void
round_done(uv_work_t *req, int status)
{
    (void)status;
    struct purge *p = req->data;
    p->running = 0;
    if (p->rc) {
        char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&p->err, why, sizeof why);
        log_msg(LOG_ERROR,
                "message center retention failed; it runs again in an hour",
                "error", why, NULL);
    } else if (p->res.records || p->res.bodies) {
        char r[32], b[32];
        snprintf(r, sizeof r, "%lld", p->res.records);
        snprintf(b, sizeof b, "%lld", p->res.bodies);
        log_msg(LOG_INFO, "message center retention: old records removed",
                "records", r, "bodies", b, "more", p->res.more ? "yes" : "no",
                NULL);
    }
    if (!p->closing)
        release(p);
    if (p->closing) {
        finish_close(p);
        return;
    }
    arm(p, p->rc == 0 && p->res.more ? PURGE_AGAIN_MS : PURGE_EVERY_MS);
}

static void
on_lease(void *ud, redisReply *r)
{
    struct purge *p = ud;
    if (p->closing)
        return;
    if (r->type != REDIS_REPLY_STATUS) {
        /* nil: another worker purges this store now */
        arm(p, PURGE_EVERY_MS);
        return;
    }
    mc_purge_cutoffs(p->s->mc_retention_days, p->s->mc_body_days,
                     clock_now_ms(), &p->records_before, &p->bodies_before);
    p->running = 1;
    if (uv_queue_work(p->loop, &p->work, round_run, round_done) != 0)
        abort(); /* only fails for a NULL callback */
}

static void
on_timer(uv_timer_t *t)
{
    struct purge *p = t->data;
    if (p->closing || p->running)
        return;
    if (p->s->mc_retention_days == 0 && p->s->mc_body_days == 0)
        return; /* nothing to do, ever: settings do not change */
    char ms[24];
    snprintf(ms, sizeof ms, "%d", PURGE_LEASE_MS);
    const char *argv[6] = {"SET", p->key, p->me, "NX", "PX", ms};
    size_t lens[6];
    for (int i = 0; i < 6; i++)
        lens[i] = strlen(argv[i]);
    queue_command(p->q, 6, argv, lens, on_lease, p);
}

static void
on_closed(uv_handle_t *h)
{
    struct purge *p = h->data;
    void (*done)(void *) = p->done;
    void *ud = p->done_ud;
    free(p->me);
    free(p);
    if (done)
        done(ud);
}

static void
finish_close(struct purge *p)
{
    uv_close((uv_handle_t *)&p->timer, on_closed);
}

void
purge_close(struct purge *p, void (*done)(void *ud), void *ud)
{
    p->closing = 1;
    p->done = done;
    p->done_ud = ud;
    uv_timer_stop(&p->timer);
    if (!p->running)
        finish_close(p);
}
