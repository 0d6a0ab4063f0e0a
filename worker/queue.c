#include "queue.h"
#include "clock.h"
#include "err.h"
#include "job.h"
#include "keys.h"
#include "log.h"
#include "redis_uv.h"
#include "rscript.h"
#include "util.h"

#include <hiredis/async.h>
#include <stdlib.h>
#include <string.h>

#define TAKE_BATCH 64
#define BLOCK_TIMEOUT_S "5"
#define CONNECT_TIMEOUT_MS 5000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define DUE_EVERY_MS 250
#define DUE_BATCH "200"
#define TAKE_RETRY_MS 1000
/* A job over JOB_MAX_BYTES never reaches the worker as bytes: the take
 * script, and the reply reader for blocking takes and resyncs, put this
 * status reply ("herald:oversize <length>") in its place. */
#define OVERSIZE_MARK "herald:oversize "

/* ---- Lua scripts: redis/queue_*.lua and big_*.lua (common/rscript.h);
 * every script of the table is loaded at each connect and run with
 * EVALSHA ---- */

/* ---- state ---- */

struct qop {
    struct qop *next, *prev;
    char *cmd; /* RESP-formatted */
    size_t len;
    queue_reply_fn *cb;
    void *ud;
    int sent;
    int internal; /* connection set-up: dropped, not resent, on reconnect */
};

enum conn_kind { C_CMD = 0, C_BLOCK_HIGH, C_BLOCK_NORMAL, C_BLOCK_LOW, C_N };

struct conn {
    struct queue *q;
    redisAsyncContext *ac;
    int kind;
    int connected;
    int waiting; /* blocking take outstanding */
    int armed;   /* this lane should block when idle */
};

enum qstate { Q_DOWN, Q_CONNECTING, Q_READY };

struct queue {
    uv_loop_t *loop;
    struct redis_target target;
    char *prefix, *me;
    char k_lane[JOB_PRIO_COUNT][KEYS_MAX];
    char k_ring[JOB_PRIO_COUNT][KEYS_MAX], k_staged[JOB_PRIO_COUNT][KEYS_MAX];
    char k_tick[KEYS_MAX];
    struct qop *setup_after; /* the set-up op added last (op_add) */
    char redis_version[40];  /* INFO server's, at the last connect */
    int too_old;             /* older than QUEUE_REDIS_MAJOR.MINOR: no take */
    /* stems the scripts complete (keys.h): ledger + id, staged + org,
     * processing + worker */
    char k_ledger_stem[KEYS_MAX], k_org_stem[JOB_PRIO_COUNT][KEYS_MAX],
        k_proc_stem[KEYS_MAX];
    char fair_window[24];
    char k_proc[KEYS_MAX], k_dead[KEYS_MAX], k_sched[KEYS_MAX],
        k_workers[KEYS_MAX], k_stats[KEYS_MAX];
    char k_big_job[KEYS_MAX], k_big_entry[KEYS_MAX]; /* queue_big_* */
    int64_t beat_ok_ms; /* the heartbeat Redis last confirmed (its time) */
    int64_t beat_sent_ms;
    long heartbeat_ms;
    char ledger_ttl_ms[24]; /* HERALD_LEDGER_DAYS: a ledger entry's life */
    struct queue_events ev;
    struct conn conns[C_N];
    enum qstate state;
    int ever_ready;
    int stopping; /* no more takes */
    int resetting;
    int closing;
    uint64_t backoff_ms;
    uv_timer_t t_reconnect, t_connect_guard, t_heartbeat, t_due, t_handback,
        t_take_retry;
    int open_timers;
    struct qop *ops_head, *ops_tail;
    size_t nops;
    int take_out;                 /* a batch take is outstanding */
    unsigned long ntakes, ntaken; /* queue_take_counts */
    int due_out;                  /* a due-mover run is outstanding */
    int reclaim_out;
    uint64_t last_reclaim;
    void (*handback_cb)(void *, int);
    void *handback_ud;
    void (*close_cb)(void *);
    void *close_ud;
};

static void q_connect(struct queue *q);
static void on_beat(void *ud, redisReply *r);
static void q_fail(struct queue *q, const char *why);
static void q_send_pending(struct queue *q);
static void q_take(struct queue *q);

/* ---- operations ---- */

static void
op_unlink(struct queue *q, struct qop *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        q->ops_head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        q->ops_tail = op->prev;
    q->nops--;
}

static void
op_free(struct qop *op)
{
    free(op->cmd);
    free(op);
}

/* Error replies that mean "not now": the command was not executed. */
static int
redis_error_is_transient(const char *e)
{
    static const char *const kinds[] = {"BUSY ",       "LOADING ",
                                        "OOM ",        "TRYAGAIN ",
                                        "MASTERDOWN ", "CLUSTERDOWN "};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strncmp(e, kinds[i], strlen(kinds[i])) == 0)
            return 1;
    return 0;
}

static void
op_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct conn *c = ac->data;
    struct queue *q = c->q;
    struct qop *op = privdata;
    redisReply *r = reply;
    if (r == NULL) {
        /* Connection lost: keep the op for resending (internal set-up
         * ops are rebuilt on the next connect instead). */
        op->sent = 0;
        if (op->internal) {
            op_unlink(q, op);
            op_free(op);
        }
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        /* Someone flushed the script cache: reconnecting reloads it and
         * resends this op. */
        op->sent = 0;
        q_fail(q, "scripts missing (SCRIPT FLUSH?)");
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && !op->internal &&
        redis_error_is_transient(r->str)) {
        /* Redis cannot run it now (a long script, loading, out of
         * memory): the operation did nothing. Like a lost connection, it
         * waits and is re-sent, in order, with the ones after it; its
         * callback sees only the real outcome. */
        op->sent = 0;
        q_fail(q, r->str);
        return;
    }
    op_unlink(q, op);
    if (r->type == REDIS_REPLY_ERROR)
        log_msg(LOG_ERROR, "redis error reply", "error", r->str, NULL);
    if (op->cb)
        op->cb(op->ud, r);
    op_free(op);
}

static void
op_send(struct queue *q, struct qop *op)
{
    struct conn *c = &q->conns[C_CMD];
    if (c->ac == NULL) /* hiredis buffers writes until connected */
        return;
    if (redisAsyncFormattedCommand(c->ac, op_reply, op, op->cmd, op->len) ==
        REDIS_OK)
        op->sent = 1;
}

/* Queues a command; sent now when ready (or `internal` set-up while
 * connecting), else after the next (re)connect. */
static void
op_add(struct queue *q, int argc, const char **argv, const size_t *lens,
       queue_reply_fn *cb, void *ud, int internal)
{
    struct qop *op = xcalloc(1, sizeof *op);
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0)
        abort();
    op->cmd = cmd; /* hiredis 0.14 formats with malloc(): ours to free */
    op->len = (size_t)n;
    op->cb = cb;
    op->ud = ud;
    op->internal = internal;
    if (internal) {
        /* set-up goes before everything else waiting, in the order it
         * is added (after the set-up op added last, if any) */
        struct qop *after = q->setup_after;
        op->prev = after;
        op->next = after ? after->next : q->ops_head;
        if (op->next)
            op->next->prev = op;
        else
            q->ops_tail = op;
        if (after)
            after->next = op;
        else
            q->ops_head = op;
        q->setup_after = op;
    } else {
        op->prev = q->ops_tail;
        if (q->ops_tail)
            q->ops_tail->next = op;
        q->ops_tail = op;
        if (q->ops_head == NULL)
            q->ops_head = op;
    }
    q->nops++;
    if (internal || q->state == Q_READY)
        op_send(q, op);
}

void
queue_script(struct queue *q, enum rscript_id id, int nkeys, int argc,
             const char **argv, const size_t *lens, queue_reply_fn *cb,
             void *ud)
{
    const char *small[40], **av = small;
    size_t smalll[40], *al = smalll;
    if (3 + argc > 40) {
        av = xcalloc((size_t)argc + 3, sizeof *av);
        al = xcalloc((size_t)argc + 3, sizeof *al);
    }
    char nk[16];
    rscript_command(id, nkeys, argc, argv, lens, nk, av, al);
    op_add(q, argc + 3, av, al, cb, ud, 0);
    if (av != small) {
        free(av);
        free(al);
    }
}

/* queue_script with the keys and the arguments apart */
static void
eval(struct queue *q, enum rscript_id id, int nkeys, const char **keys,
     int nargs, const char **args, const size_t *arglens, queue_reply_fn *cb,
     void *ud)
{
    const char *argv[40];
    size_t lens[40];
    if (nkeys + nargs > 40)
        abort(); /* a bug: scripts with many arguments use their own path */
    for (int i = 0; i < nkeys; i++) {
        argv[i] = keys[i];
        lens[i] = strlen(keys[i]);
    }
    for (int i = 0; i < nargs; i++) {
        argv[nkeys + i] = args[i];
        lens[nkeys + i] = arglens ? arglens[i] : strlen(args[i]);
    }
    queue_script(q, id, nkeys, nkeys + nargs, argv, lens, cb, ud);
}

size_t
queue_pending(const struct queue *q)
{
    return q->nops;
}

void
queue_take_counts(struct queue *q, unsigned long *takes, unsigned long *jobs)
{
    *takes = q->ntakes;
    *jobs = q->ntaken;
    q->ntakes = q->ntaken = 0;
}

int
queue_is_ready(const struct queue *q)
{
    return q->state == Q_READY;
}

/* ---- replies: a job too big to hold is never copied ---- */

static const redisReplyObjectFunctions *reader_default;
static redisReplyObjectFunctions reader_fns;

/*
 * hiredis copies every string reply out of its read buffer. A string
 * over JOB_MAX_BYTES can only be a job nobody may send (SPEC §3): it is
 * replaced by the OVERSIZE_MARK status reply, so the worker never holds
 * a second copy (the read buffer is released after the reply).
 */
static void *
reader_string(const redisReadTask *task, char *str, size_t len)
{
    if (task->type == REDIS_REPLY_STRING && len > JOB_MAX_BYTES) {
        char mark[64];
        int n = snprintf(mark, sizeof mark, OVERSIZE_MARK "%zu", len);
        redisReply *r = reader_default->createString(task, mark, (size_t)n);
        if (r)
            r->type = REDIS_REPLY_STATUS;
        return r;
    }
    return reader_default->createString(task, str, len);
}

static void
reader_install(redisAsyncContext *ac)
{
    if (reader_default == NULL) {
        reader_default = ac->c.reader->fn;
        reader_fns = *reader_default;
        reader_fns.createString = reader_string;
    }
    if (ac->c.reader->fn == reader_default)
        ac->c.reader->fn = &reader_fns;
}

/* A string reply's bytes, taken over from hiredis (NUL-terminated, malloc'd
 * by hiredis' default allocator): a job of megabytes is not copied again
 * on its way to the worker. The reply is left empty. */
static char *
reply_take_str(redisReply *r)
{
    char *s = r->str;
    r->str = NULL;
    r->len = 0;
    return s;
}

/* The length in an OVERSIZE_MARK reply, or 0 when r is not one. */
static size_t
oversize_len(const redisReply *r)
{
    size_t ml = sizeof OVERSIZE_MARK - 1;
    if (r->type != REDIS_REPLY_STATUS || r->len <= ml ||
        memcmp(r->str, OVERSIZE_MARK, ml) != 0)
        return 0;
    return (size_t)strtoull(r->str + ml, NULL, 10);
}

/* ---- connection management ---- */

static void
on_timer_closed(uv_handle_t *h)
{
    struct queue *q = h->data;
    if (--q->open_timers == 0 && q->closing) {
        void (*cb)(void *) = q->close_cb;
        void *ud = q->close_ud;
        while (q->ops_head) {
            struct qop *op = q->ops_head;
            op_unlink(q, op);
            op_free(op);
        }
        free(q->prefix);
        free(q->me);
        free(q);
        if (cb)
            cb(ud);
    }
}

static void
conn_drop(struct conn *c)
{
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    c->connected = 0;
    c->waiting = 0;
    if (ac) {
        ac->data = c; /* callbacks during free see c->ac != ac: ignored */
        redisAsyncFree(ac);
    }
}

static void
on_reconnect_timer(uv_timer_t *t)
{
    struct queue *q = t->data;
    if (q->closing)
        return;
    if (q->resetting) {
        /* second phase of a reset: drop what is left, then connect */
        for (int i = 0; i < C_N; i++)
            conn_drop(&q->conns[i]);
        q->resetting = 0;
        q->state = Q_DOWN;
        uv_timer_start(&q->t_reconnect, on_reconnect_timer, q->backoff_ms, 0);
        q->backoff_ms = q->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                           : q->backoff_ms * 2;
        return;
    }
    q_connect(q);
}

/*
 * Something broke: tear everything down and reconnect after a backoff.
 * Deferred through a timer so that no hiredis context is freed from
 * inside its own callback.
 */
static void
q_fail(struct queue *q, const char *why)
{
    if (q->resetting || q->closing)
        return;
    if (q->state != Q_DOWN)
        log_msg(LOG_WARN, "redis connection lost; reconnecting", "reason", why,
                NULL);
    q->resetting = 1;
    q->state = Q_DOWN;
    q->take_out = 0;
    q->due_out = 0;
    q->reclaim_out = 0;
    uv_timer_stop(&q->t_connect_guard);
    uv_timer_start(&q->t_reconnect, on_reconnect_timer, 0, 0);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;
    if (c->ac != ac)
        return;
    if (status != REDIS_OK) {
        c->ac = NULL; /* hiredis frees it after this callback */
        q_fail(c->q, ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    c->connected = 1;
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct conn *c = ac->data;
    if (c->ac != ac)
        return;
    c->ac = NULL;
    c->connected = 0;
    c->waiting = 0;
    q_fail(c->q, ac->errstr[0] ? ac->errstr : "disconnected");
}

static void
on_guard(uv_timer_t *t)
{
    struct queue *q = t->data;
    if (q->state == Q_CONNECTING)
        q_fail(q, "connect timed out");
}

static void on_info(void *ud, redisReply *r);

/* The heartbeat: this worker's entry in the workers hash says now
 * (`setup`: one of the operations sent first at every connect). */
static void
send_beat(struct queue *q, int setup)
{
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
    const char *hb[4] = {"HSET", q->k_workers, q->me, now};
    size_t hbl[4] = {4, strlen(q->k_workers), strlen(q->me), strlen(now)};
    q->beat_sent_ms = clock_now_ms();
    op_add(q, 4, hb, hbl, on_beat, q, setup);
}

static void
setup_cmds(struct queue *q, struct conn *c, queue_reply_fn *last_cb)
{
    /* AUTH and SELECT are queued as internal ops on the command
     * connection, or sent fire-and-forget on blocking ones (an error
     * there shows up as an error reply to BLMOVE). */
    const char *argv[3];
    size_t lens[3];
    char db[16];
    snprintf(db, sizeof db, "%d", q->target.db);
    if (c->kind != C_CMD) {
        if (q->target.password[0])
            redisAsyncCommand(c->ac, NULL, NULL, "AUTH %s", q->target.password);
        if (q->target.db)
            redisAsyncCommand(c->ac, NULL, NULL, "SELECT %s", db);
        return;
    }
    /* Internal ops go out as they are added (op_add sends them at
     * once), so in the order the connection needs them: AUTH and SELECT
     * first, then the server's version, the scripts, the heartbeat and
     * the LRANGE that resynchronises; in the list they stand before every
     * op waiting from before, in the same order (setup_after). */
    q->setup_after = NULL;
    if (q->target.password[0]) {
        argv[0] = "AUTH";
        argv[1] = q->target.password;
        lens[0] = 4;
        lens[1] = strlen(q->target.password);
        op_add(q, 2, argv, lens, NULL, NULL, 1);
    }
    if (q->target.db) {
        argv[0] = "SELECT";
        argv[1] = db;
        lens[0] = 6;
        lens[1] = strlen(db);
        op_add(q, 2, argv, lens, NULL, NULL, 1);
    }
    const char *info[2] = {"INFO", "server"};
    size_t infol[2] = {4, 6};
    op_add(q, 2, info, infol, on_info, q, 1);
    for (int i = 0; i < RS_COUNT; i++) {
        const char *sl[3] = {"SCRIPT", "LOAD", rscripts[i].src};
        size_t sll[3] = {6, 4, rscripts[i].len};
        op_add(q, 3, sl, sll, NULL, NULL, 1);
    }
    send_beat(q, 1);
    const char *last[4] = {"LRANGE", q->k_proc, "0", "-1"};
    size_t lastl[4] = {6, strlen(q->k_proc), 1, 2};
    op_add(q, 4, last, lastl, last_cb, q, 1);
    q->setup_after = NULL; /* it is freed once answered */
}

static void
on_handback_startup(void *ud, redisReply *r)
{
    (void)ud;
    if (r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
        char n[32];
        snprintf(n, sizeof n, "%lld", r->integer);
        log_msg(LOG_WARN,
                "found jobs left by an earlier run of this worker id; "
                "handed back to their lanes",
                "count", n, NULL);
    }
}

int
queue_redis_version_ok(const char *info, char *version, size_t n)
{
    const char *v = info ? strstr(info, "redis_version:") : NULL;
    if (v == NULL) {
        snprintf(version, n, "unknown");
        return 1; /* a server that does not say: let it try */
    }
    v += strlen("redis_version:");
    size_t k = strcspn(v, "\r\n");
    snprintf(version, n, "%.*s", (int)(k < 32 ? k : 32), v);
    char *end = NULL;
    long major = strtol(v, &end, 10);
    long minor = end && *end == '.' ? strtol(end + 1, NULL, 10) : 0;
    return major > QUEUE_REDIS_MAJOR ||
           (major == QUEUE_REDIS_MAJOR && minor >= QUEUE_REDIS_MINOR);
}

/* INFO server at every connect: a Redis too old for the take (BLMOVE,
 * RPOP with a count) gets no take at all, and says so, rather than an
 * error per take; a newer one (after an upgrade) is seen at the next
 * connect. */
static void
on_info(void *ud, redisReply *r)
{
    struct queue *q = ud;
    char v[40];
    int ok = queue_redis_version_ok(
        r->type == REDIS_REPLY_STRING ? r->str : NULL, v, sizeof v);
    snprintf(q->redis_version, sizeof q->redis_version, "%s", v);
    q->too_old = !ok;
    if (!ok)
        log_msg(LOG_ERROR,
                "this Redis is too old: Herald needs 6.2 or newer (BLMOVE, "
                "RPOP with a count); no job is taken until it is upgraded",
                "redis_version", v, NULL);
}

/* The LRANGE of our processing list, first thing after (re)connecting. */
static void
on_resync(void *ud, redisReply *r)
{
    struct queue *q = ud;
    if (r->type != REDIS_REPLY_ARRAY) {
        q_fail(q, "LRANGE of the processing list failed");
        return;
    }
    if (!q->ever_ready) {
        /* A fresh start: anything under our name is from an earlier run
         * of this worker id (a crash, a restarted container). Hand it
         * back; it is delivered like any queued job. */
        const char *keys[5] = {q->k_proc, q->k_lane[0], q->k_lane[1],
                               q->k_lane[2], q->k_workers};
        /* keep our own heartbeat */
        const char *args[3] = {"-", q->me, q->k_ledger_stem};
        q->state = Q_READY;
        eval(q, RS_QUEUE_HANDBACK, 5, keys, 3, args, NULL, on_handback_startup,
             q);
    } else {
        /* Adopt entries we do not know: takes whose reply was lost. */
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *e = r->element[i];
            size_t big = oversize_len(e);
            if (e->type != REDIS_REPLY_STRING && big == 0)
                continue;
            size_t seen = 0;
            for (size_t k = 0; k <= i; k++) {
                redisReply *o = r->element[k];
                if (big ? oversize_len(o) == big
                        : o->type == REDIS_REPLY_STRING && o->len == e->len &&
                              memcmp(o->str, e->str, e->len) == 0)
                    seen++;
            }
            if (seen > q->ev.count_local(q->ev.ud, big ? NULL : e->str,
                                         big ? big : e->len)) {
                log_msg(LOG_INFO,
                        "adopting a job found in the processing "
                        "list after reconnecting",
                        NULL);
                if (big)
                    q->ev.oversize(q->ev.ud, big);
                else
                    q->ev.job(q->ev.ud, xstrndup(e->str, e->len), e->len, NULL);
            }
        }
        q->state = Q_READY;
    }
    q->ever_ready = 1;
    q->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_stop(&q->t_connect_guard);
    log_msg(LOG_INFO, "redis ready", "redis_version", q->redis_version, NULL);
    q_send_pending(q);
    if (q->ev.ready)
        q->ev.ready(q->ev.ud);
    q_take(q);
}

static void
q_send_pending(struct queue *q)
{
    for (struct qop *op = q->ops_head; op; op = op->next)
        if (!op->sent)
            op_send(q, op);
}

static void
q_connect(struct queue *q)
{
    if (q->closing)
        return;
    q->state = Q_CONNECTING;
    int n = q->stopping ? 1 : C_N;
    for (int i = 0; i < n; i++) {
        struct conn *c = &q->conns[i];
        redisAsyncContext *ac =
            q->target.unix_path[0]
                ? redisAsyncConnectUnix(q->target.unix_path)
                : redisAsyncConnect(q->target.host, q->target.port);
        if (ac == NULL || ac->err) {
            const char *why = ac ? ac->errstr : "out of memory";
            log_msg(LOG_WARN, "redis connect failed", "reason", why, NULL);
            if (ac)
                redisAsyncFree(ac);
            q->state = Q_DOWN;
            q_fail(q, why);
            return;
        }
        ac->data = c;
        c->ac = ac;
        c->connected = 0;
        c->waiting = 0;
        if (redis_uv_attach(ac, q->loop) != REDIS_OK) {
            redisAsyncFree(ac);
            c->ac = NULL;
            q_fail(q, "cannot watch the redis socket");
            return;
        }
        reader_install(ac);
        redisAsyncSetConnectCallback(ac, on_connect);
        redisAsyncSetDisconnectCallback(ac, on_disconnect);
        setup_cmds(q, c, on_resync);
    }
    uv_timer_start(&q->t_connect_guard, on_guard, CONNECT_TIMEOUT_MS, 0);
}

/* ---- taking ---- */

static void on_block_reply(redisAsyncContext *ac, void *reply, void *priv);

static void
arm_blocking(struct queue *q)
{
    if (q->stopping || q->state != Q_READY || q->too_old)
        return;
    for (int lane = 0; lane < JOB_PRIO_COUNT; lane++) {
        struct conn *c = &q->conns[C_BLOCK_HIGH + lane];
        if (c->ac == NULL || c->waiting)
            continue;
        size_t bytes;
        if (q->ev.room(q->ev.ud, &bytes) <= 0)
            return;
        if (redisAsyncCommand(c->ac, on_block_reply, c,
                              "BLMOVE %s %s RIGHT LEFT " BLOCK_TIMEOUT_S,
                              q->k_lane[lane], q->k_proc) == REDIS_OK)
            c->waiting = 1;
    }
}

static void
on_block_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct conn *c = priv;
    struct queue *q = c->q;
    redisReply *r = reply;
    if (c->ac != ac)
        return; /* a dropped connection's leftovers */
    c->waiting = 0;
    if (r == NULL)
        return;
    if (r->type == REDIS_REPLY_STRING) {
        size_t len = r->len;
        q->ev.job(q->ev.ud, reply_take_str(r), len, NULL);
        q_take(q); /* there may be more: batch them */
        return;
    }
    if (oversize_len(r)) {
        q->ev.oversize(q->ev.ud, oversize_len(r));
        q_take(q);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        log_msg(LOG_ERROR, "blocking take failed", "error", r->str, NULL);
        q_fail(q, r->str);
        return;
    }
    /* Timed out: take (which blocks again when there is nothing), so
     * jobs another worker staged meanwhile do not wait for it alone. */
    q_take(q);
}

static void
on_take_retry(uv_timer_t *t)
{
    struct queue *q = t->data;
    q_take(q);
    arm_blocking(q);
}

static void
on_take(void *ud, redisReply *r)
{
    struct queue *q = ud;
    q->take_out = 0;
    if (r->type != REDIS_REPLY_ARRAY) {
        /* Not "not now" (that is re-sent, see op_reply): a take that
         * failed for good this time. The lanes must not go idle: take
         * again shortly, and let the blocking takes wait meanwhile. */
        log_msg(LOG_ERROR, "taking jobs failed; trying again in a second",
                "error", r->type == REDIS_REPLY_ERROR ? r->str : "bad reply",
                NULL);
        uv_timer_start(&q->t_take_retry, on_take_retry, TAKE_RETRY_MS, 0);
        arm_blocking(q);
        return;
    }
    q->ntakes++;
    q->ntaken += r->elements / 7;
    for (size_t i = 0; i + 7 <= r->elements; i += 7) {
        redisReply *e = r->element[i], *st = r->element[i + 1];
        if (oversize_len(e)) {
            q->ev.oversize(q->ev.ud, oversize_len(e));
            continue;
        }
        if (e->type != REDIS_REPLY_STRING)
            continue;
        struct queue_claim c;
        memset(&c, 0, sizeof c);
        const struct queue_claim *pc = NULL;
        if (st->type == REDIS_REPLY_STRING && strcmp(st->str, "-") != 0) {
            snprintf(c.status, sizeof c.status, "%s", st->str);
            c.attempts = r->element[i + 2]->integer;
            c.first_at = r->element[i + 3]->integer;
            c.fence = r->element[i + 5]->integer;
            c.partial = r->element[i + 6]->integer != 0;
            redisReply *id = r->element[i + 4];
            if (id->type == REDIS_REPLY_STRING && id->len < sizeof c.id) {
                memcpy(c.id, id->str, id->len);
                c.id[id->len] = '\0';
                pc = &c;
            }
        }
        size_t len = e->len;
        q->ev.job(q->ev.ud, reply_take_str(e), len, pc);
    }
    if (r->elements > 0)
        q_take(q);
    else
        arm_blocking(q);
}

static void
q_take(struct queue *q)
{
    if (q->stopping || q->state != Q_READY || q->take_out || q->too_old)
        return;
    size_t bytes = 0;
    int room = q->ev.room(q->ev.ud, &bytes);
    if (room <= 0)
        return;
    if (room > TAKE_BATCH)
        room = TAKE_BATCH;
    char n[16], now[32], hb[32], maxb[32], maxjob[32];
    snprintf(n, sizeof n, "%d", room);
    snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
    snprintf(hb, sizeof hb, "%ld", q->heartbeat_ms);
    snprintf(maxb, sizeof maxb, "%zu", bytes);
    snprintf(maxjob, sizeof maxjob, "%u", JOB_MAX_BYTES);
    const char *keys[12] = {q->k_lane[0],   q->k_lane[1],   q->k_lane[2],
                            q->k_proc,      q->k_workers,   q->k_ring[0],
                            q->k_ring[1],   q->k_ring[2],   q->k_staged[0],
                            q->k_staged[1], q->k_staged[2], q->k_tick};
    const char *args[13] = {n,
                            q->me,
                            now,
                            hb,
                            q->ledger_ttl_ms,
                            q->k_ledger_stem,
                            maxb,
                            maxjob,
                            q->fair_window,
                            q->k_org_stem[0],
                            q->k_org_stem[1],
                            q->k_org_stem[2],
                            OVERSIZE_MARK};
    uv_timer_stop(&q->t_take_retry);
    q->take_out = 1;
    eval(q, RS_QUEUE_TAKE, 12, keys, 13, args, NULL, on_take, q);
}

void
queue_kick(struct queue *q)
{
    q_take(q);
}

/* ---- timers ---- */

static void
on_beat(void *ud, redisReply *r)
{
    struct queue *q = ud;
    if (r->type != REDIS_REPLY_ERROR)
        q->beat_ok_ms = q->beat_sent_ms;
}

static void
on_heartbeat(uv_timer_t *t)
{
    struct queue *q = t->data;
    if (q->state != Q_READY)
        return;
    send_beat(q, 0);
}

static void
on_due_reply(void *ud, redisReply *r)
{
    struct queue *q = ud;
    q->due_out = 0;
    if (r->type == REDIS_REPLY_INTEGER && r->integer > 0)
        q_take(q);
}

static void
on_reclaim_reply(void *ud, redisReply *r)
{
    struct queue *q = ud;
    q->reclaim_out = 0;
    if (r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
        char n[32];
        snprintf(n, sizeof n, "%lld", r->integer);
        log_msg(LOG_WARN,
                "returned the jobs of a worker whose heartbeat stopped to "
                "their lanes",
                "count", n, NULL);
        q_take(q);
    }
}

/* Every heartbeat period: return the jobs of dead workers. */
static void
maybe_reclaim(struct queue *q)
{
    uint64_t now = uv_now(q->loop);
    if (q->reclaim_out || now - q->last_reclaim < (uint64_t)q->heartbeat_ms)
        return;
    q->last_reclaim = now;
    char ms[32], hb[32];
    snprintf(ms, sizeof ms, "%lld", (long long)clock_now_ms());
    snprintf(hb, sizeof hb, "%ld", q->heartbeat_ms);
    const char *keys[4] = {q->k_workers, q->k_lane[0], q->k_lane[1],
                           q->k_lane[2]};
    const char *args[5] = {ms, hb, q->k_proc_stem, q->me, q->k_ledger_stem};
    q->reclaim_out = 1;
    eval(q, RS_QUEUE_RECLAIM, 4, keys, 5, args, NULL, on_reclaim_reply, q);
}

static void
on_due(uv_timer_t *t)
{
    struct queue *q = t->data;
    if (q->state != Q_READY || q->stopping)
        return;
    maybe_reclaim(q);
    if (q->due_out)
        return;
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
    const char *keys[4] = {q->k_sched, q->k_lane[0], q->k_lane[1],
                           q->k_lane[2]};
    const char *args[2] = {now, DUE_BATCH};
    q->due_out = 1;
    eval(q, RS_QUEUE_DUE, 4, keys, 2, args, NULL, on_due_reply, q);
}

/* ---- public ---- */

int
queue_new(uv_loop_t *loop, const struct settings *s, const char *worker,
          const struct queue_events *ev, struct queue **out)
{
    struct herr e;
    struct queue *q = xcalloc(1, sizeof *q);
    if (settings_parse_redis(s->redis, &q->target, &e) != 0) {
        free(q);
        return HERR_INVALID;
    }
    q->loop = loop;
    q->prefix = xstrdup(s->prefix);
    q->me = xstrdup(worker);
    q->ev = *ev;
    q->heartbeat_ms = s->heartbeat_s * 1000;
    snprintf(q->ledger_ttl_ms, sizeof q->ledger_ttl_ms, "%lld",
             (long long)s->ledger_days * 86400000LL);
    q->backoff_ms = BACKOFF_MIN_MS;
    for (int p = 0; p < JOB_PRIO_COUNT; p++) {
        keys_queue(q->k_lane[p], KEYS_MAX, q->prefix, (enum job_priority)p);
        keys_fair(q->k_ring[p], KEYS_MAX, q->prefix, (enum job_priority)p,
                  NULL);
        keys_fair(q->k_staged[p], KEYS_MAX, q->prefix, (enum job_priority)p,
                  "staged");
    }
    snprintf(q->fair_window, sizeof q->fair_window, "%ld", s->fair_window);
    keys_simple(q->k_tick, KEYS_MAX, q->prefix, "fair:tick");
    keys_ledger_stem(q->k_ledger_stem, KEYS_MAX, q->prefix);
    keys_processing_stem(q->k_proc_stem, KEYS_MAX, q->prefix);
    for (int p = 0; p < JOB_PRIO_COUNT; p++)
        keys_staged_stem(q->k_org_stem[p], KEYS_MAX, q->prefix,
                         (enum job_priority)p);
    keys_processing(q->k_proc, KEYS_MAX, q->prefix, q->me);
    keys_simple(q->k_dead, KEYS_MAX, q->prefix, "dead");
    keys_simple(q->k_sched, KEYS_MAX, q->prefix, "scheduled");
    keys_simple(q->k_workers, KEYS_MAX, q->prefix, "workers");
    keys_simple(q->k_stats, KEYS_MAX, q->prefix, "stats");
    keys_big(q->k_big_job, KEYS_MAX, q->prefix, q->me, "job");
    keys_big(q->k_big_entry, KEYS_MAX, q->prefix, q->me, "entry");
    for (int i = 0; i < C_N; i++) {
        q->conns[i].q = q;
        q->conns[i].kind = i;
    }
    redis_uv_init(loop);
    uv_timer_t *timers[] = {&q->t_reconnect, &q->t_connect_guard,
                            &q->t_heartbeat, &q->t_due,
                            &q->t_handback,  &q->t_take_retry};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = q;
        q->open_timers++;
    }
    long hb = q->heartbeat_ms / 3;
    if (hb < 200)
        hb = 200;
    uv_timer_start(&q->t_heartbeat, on_heartbeat, (uint64_t)hb, (uint64_t)hb);
    uv_timer_start(&q->t_due, on_due, DUE_EVERY_MS, DUE_EVERY_MS);
    q_connect(q);
    *out = q;
    return 0;
}

void
queue_mark_partial(struct queue *q, const char *id, const char *accepted,
                   queue_reply_fn *cb, void *ud)
{
    char ledger[KEYS_MAX];
    keys_ledger(ledger, sizeof ledger, q->prefix, id);
    const char *keys[1] = {ledger};
    const char *args[2] = {accepted, q->ledger_ttl_ms};
    eval(q, RS_QUEUE_PARTIAL, 1, keys, 2, args, NULL, cb, ud);
}

void
queue_fence_check(struct queue *q, const char *id, long long fence,
                  queue_reply_fn *cb, void *ud)
{
    char ledger[KEYS_MAX], f[24];
    keys_ledger(ledger, sizeof ledger, q->prefix, id);
    snprintf(f, sizeof f, "%lld", fence);
    const char *keys[1] = {ledger};
    const char *args[2] = {q->me, f};
    eval(q, RS_QUEUE_FENCE, 1, keys, 2, args, NULL, cb, ud);
}

int
queue_lease_fresh(const struct queue *q)
{
    /* Heartbeats go every heartbeat_ms / 3; another worker may take our
     * jobs once one is heartbeat_ms old. Half of that is the margin. */
    return q->state == Q_READY &&
           clock_now_ms() - q->beat_ok_ms < q->heartbeat_ms / 2;
}

void
queue_claim(struct queue *q, const char *id, queue_reply_fn *cb, void *ud)
{
    char ledger[KEYS_MAX], now[32], hb[32];
    keys_ledger(ledger, sizeof ledger, q->prefix, id);
    snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
    snprintf(hb, sizeof hb, "%ld", q->heartbeat_ms);
    const char *keys[2] = {ledger, q->k_workers};
    const char *args[4] = {q->me, now, hb, q->ledger_ttl_ms};
    eval(q, RS_QUEUE_CLAIM, 2, keys, 4, args, NULL, cb, ud);
}

void
queue_mark_sent(struct queue *q, const char *const *ids,
                const long long *fences, size_t n, queue_reply_fn *cb, void *ud)
{
    size_t argc = 3 + n + 1 + 2 + n;
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *lens = xmalloc(argc * sizeof *lens);
    char(*keys)[KEYS_MAX] = xmalloc(n * sizeof *keys);
    char(*fs)[24] = xmalloc(n * sizeof *fs);
    char nk[32], now[32];
    snprintf(nk, sizeof nk, "%zu", n + 1);
    snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
    argv[0] = "EVALSHA";
    argv[1] = rscripts[RS_QUEUE_SENT].sha;
    argv[2] = nk;
    for (size_t i = 0; i < n; i++) {
        keys_ledger(keys[i], KEYS_MAX, q->prefix, ids[i]);
        argv[3 + i] = keys[i];
    }
    argv[3 + n] = q->k_stats;
    argv[4 + n] = now;
    argv[5 + n] = q->ledger_ttl_ms;
    for (size_t i = 0; i < n; i++) {
        snprintf(fs[i], sizeof fs[i], "%lld", fences ? fences[i] : 0);
        argv[6 + n + i] = fs[i];
    }
    for (size_t i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    op_add(q, (int)argc, argv, lens, cb, ud, 0);
    free(fs);
    free(keys);
    free(argv);
    free(lens);
}

void
queue_finish(struct queue *q, const char *raw, size_t len, queue_reply_fn *cb,
             void *ud)
{
    /* From the tail: the processing list is oldest-last and jobs finish
     * roughly in the order they were taken, so the scan is short. */
    const char *argv[4] = {"LREM", q->k_proc, "-1", raw};
    size_t lens[4] = {4, strlen(q->k_proc), 2, len};
    op_add(q, 4, argv, lens, cb, ud, 0);
}

void
queue_finish_dead(struct queue *q, const char *raw, size_t len,
                  const char *entry, const char *id, queue_reply_fn *cb,
                  void *ud)
{
    char ledger[KEYS_MAX] = "";
    if (id)
        keys_ledger(ledger, sizeof ledger, q->prefix, id);
    const char *keys[3] = {q->k_proc, q->k_dead, ledger};
    const char *args[2] = {raw, entry};
    size_t lens[2] = {len, strlen(entry)};
    eval(q, RS_QUEUE_DEAD, 3, keys, 2, args, lens, cb, ud);
}

void
queue_finish_schedule(struct queue *q, const char *raw, size_t len,
                      const char *member, int64_t due_ms, const char *id,
                      int uncount, queue_reply_fn *cb, void *ud)
{
    char ledger[KEYS_MAX] = "", due[32];
    if (id)
        keys_ledger(ledger, sizeof ledger, q->prefix, id);
    snprintf(due, sizeof due, "%lld", (long long)due_ms);
    const char *keys[3] = {q->k_proc, q->k_sched, ledger};
    const char *args[4] = {raw, member, due, uncount ? "1" : "0"};
    size_t lens[4] = {len, strlen(member), strlen(due), 1};
    eval(q, RS_QUEUE_SCHED, 3, keys, 4, args, lens, cb, ud);
}

void
queue_replace(struct queue *q, const char *raw, size_t len, const char *newraw,
              queue_reply_fn *cb, void *ud)
{
    const char *keys[1] = {q->k_proc};
    const char *args[2] = {raw, newraw};
    size_t lens[2] = {len, strlen(newraw)};
    eval(q, RS_QUEUE_REPLACE, 1, keys, 2, args, lens, cb, ud);
}

void
queue_command(struct queue *q, int argc, const char **argv, const size_t *lens,
              queue_reply_fn *cb, void *ud)
{
    op_add(q, argc, argv, lens, cb, ud, 0);
}

const char *
queue_prefix(const struct queue *q)
{
    return q->prefix;
}

void
queue_template_get(struct queue *q, const char *name, queue_reply_fn *cb,
                   void *ud)
{
    char key[KEYS_MAX];
    keys_simple(key, sizeof key, q->prefix, "templates");
    const char *argv[3] = {"HGET", key, name};
    size_t lens[3] = {4, strlen(key), strlen(name)};
    op_add(q, 3, argv, lens, cb, ud, 0);
}

/* ---- jobs too big to hold (see queue.h) ---- */

#define BIG_TTL_MS "3600000"

void
queue_big_stage(struct queue *q, size_t len, queue_reply_fn *cb, void *ud)
{
    char n[32];
    snprintf(n, sizeof n, "%zu", len);
    const char *keys[3] = {q->k_proc, q->k_big_job, q->k_big_entry};
    const char *args[2] = {n, BIG_TTL_MS};
    eval(q, RS_BIG_STAGE, 3, keys, 2, args, NULL, cb, ud);
}

void
queue_big_read(struct queue *q, size_t off, size_t n, queue_reply_fn *cb,
               void *ud)
{
    char a[32], b[32];
    snprintf(a, sizeof a, "%zu", off);
    snprintf(b, sizeof b, "%zu", off + n - 1);
    const char *argv[4] = {"GETRANGE", q->k_big_job, a, b};
    size_t lens[4] = {8, strlen(q->k_big_job), strlen(a), strlen(b)};
    op_add(q, 4, argv, lens, cb, ud, 0);
}

void
queue_big_write(struct queue *q, size_t off, const char *data, size_t n,
                queue_reply_fn *cb, void *ud)
{
    if (off == 0) {
        const char *argv[5] = {"SET", q->k_big_entry, data, "PX", BIG_TTL_MS};
        size_t lens[5] = {3, strlen(q->k_big_entry), n, 2, strlen(BIG_TTL_MS)};
        op_add(q, 5, argv, lens, cb, ud, 0);
        return;
    }
    char a[32];
    snprintf(a, sizeof a, "%zu", off);
    const char *argv[4] = {"SETRANGE", q->k_big_entry, a, data};
    size_t lens[4] = {8, strlen(q->k_big_entry), strlen(a), n};
    op_add(q, 4, argv, lens, cb, ud, 0);
}

void
queue_big_finish(struct queue *q, queue_reply_fn *cb, void *ud)
{
    const char *keys[4] = {q->k_proc, q->k_dead, q->k_big_job, q->k_big_entry};
    eval(q, RS_BIG_FINISH, 4, keys, 0, NULL, NULL, cb, ud);
}

void
queue_stop_taking(struct queue *q)
{
    if (q->stopping)
        return;
    q->stopping = 1;
    /* A BLMOVE answered while we close still moved its job into our
     * processing list: queue_handback returns it to its lane. */
    for (int i = C_BLOCK_HIGH; i < C_N; i++)
        conn_drop(&q->conns[i]);
}

static void
on_handback_done(void *ud, redisReply *r)
{
    struct queue *q = ud;
    uv_timer_stop(&q->t_handback);
    if (r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
        char n[32];
        snprintf(n, sizeof n, "%lld", r->integer);
        log_msg(LOG_INFO, "handed back jobs not started", "count", n, NULL);
    }
    void (*cb)(void *, int) = q->handback_cb;
    q->handback_cb = NULL;
    if (cb)
        cb(q->handback_ud, r->type == REDIS_REPLY_ERROR ? HERR_REDIS : 0);
}

static void
on_handback_timeout(uv_timer_t *t)
{
    struct queue *q = t->data;
    void (*cb)(void *, int) = q->handback_cb;
    q->handback_cb = NULL;
    if (cb)
        cb(q->handback_ud, HERR_REDIS);
}

void
queue_handback(struct queue *q, uint64_t timeout_ms,
               void (*cb)(void *ud, int rc), void *ud)
{
    q->handback_cb = cb;
    q->handback_ud = ud;
    const char *keys[5] = {q->k_proc, q->k_lane[0], q->k_lane[1], q->k_lane[2],
                           q->k_workers};
    const char *args[3] = {q->me, q->me, q->k_ledger_stem};
    eval(q, RS_QUEUE_HANDBACK, 5, keys, 3, args, NULL, on_handback_done, q);
    uv_timer_start(&q->t_handback, on_handback_timeout, timeout_ms, 0);
}

void
queue_close(struct queue *q, void (*cb)(void *ud), void *ud)
{
    q->closing = 1;
    q->close_cb = cb;
    q->close_ud = ud;
    for (int i = 0; i < C_N; i++)
        conn_drop(&q->conns[i]);
    uv_timer_t *timers[] = {&q->t_reconnect, &q->t_connect_guard,
                            &q->t_heartbeat, &q->t_due,
                            &q->t_handback,  &q->t_take_retry};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        uv_timer_stop(timers[i]);
        uv_close((uv_handle_t *)timers[i], on_timer_closed);
    }
    redis_uv_done(NULL);
}
