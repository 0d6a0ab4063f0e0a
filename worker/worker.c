#include "worker.h"
#include "task.h"
#include "clock.h"
#include "dead.h"
#include "job.h"
#include "keys.h"
#include "log.h"
#include "mailer.h"
#include "mc.h"
#include "mime.h"
#include "queue.h"
#include "resolver.h"
#include "schemes.h"
#include "senders.h"
#include "smtpclass.h"
#include "imapcopy.h"
#include "logingate.h"
#include "spfcache.h"
#include "tmpl.h"
#include "util.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A job this large is parsed (and given its id) on libuv's thread pool:
 * a 10 MiB job takes a few hundred milliseconds to parse and check, which
 * the loop does not stop for. */
#define PARSE_OFF_LOOP_BYTES (256 * 1024)

struct parse_work {
    uv_work_t req;
    struct task *t;
    struct job *job;
    int rc;
    struct herr e;
    struct job_ident who;
    char *canon; /* the job with its assigned id, when it had none */
};

static void worker_close_all(struct worker *w);

/* How often the store is checkpointed off the writes' path (SQLite). */
#define CKPT_MS 100

/* On the thread pool: the checkpoint, on its own handle. */
static void
ckpt_work(uv_work_t *req)
{
    struct worker *w = req->data;
    memset(&w->ckpt_err, 0, sizeof w->ckpt_err);
    w->ckpt_rc = mc_checkpoint(w->mc_ckpt, &w->ckpt_err);
}

static void
ckpt_done(uv_work_t *req, int status)
{
    struct worker *w = req->data;
    (void)status;
    w->ckpt_running = 0;
    if (w->ckpt_rc && !w->ckpt_failing) {
        char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&w->ckpt_err, why, sizeof why);
        log_msg(LOG_WARN,
                "message center checkpoint failed; the writes checkpoint "
                "themselves meanwhile",
                "error", why, NULL);
    }
    w->ckpt_failing = w->ckpt_rc != 0;
    if (w->close_after_flush && !w->flushing && !w->nparsing)
        worker_close_all(w);
}

static void
on_ckpt_timer(uv_timer_t *timer)
{
    struct worker *w = timer->data;
    if (w->ckpt_running || w->closing || w->close_after_flush ||
        w->mc_ckpt == NULL)
        return;
    w->ckpt_running = 1;
    w->ckpt_work.data = w;
    if (uv_queue_work(w->loop, &w->ckpt_work, ckpt_work, ckpt_done) != 0)
        abort(); /* only fails for a NULL callback */
}

/* On the thread pool: reads only the task's raw bytes, which stay put. */
static void
parse_run(uv_work_t *req)
{
    struct parse_work *pw = req->data;
    pw->rc =
        job_parse_ident(pw->t->raw, pw->t->rawlen, &pw->job, &pw->e, &pw->who);
    if (pw->rc == 0 && pw->job->id == NULL) {
        job_assign_id(pw->job);
        pw->canon = job_to_json(pw->job);
    }
}

static void
parse_done(uv_work_t *req, int status)
{
    (void)status;
    struct parse_work *pw = req->data;
    struct task *t = pw->t;
    struct worker *w = t->w;
    w->nparsing--;
    if (w->stopping) {
        /* not started: it stays in the processing list, handed back */
        if (pw->job)
            job_free(pw->job);
        free(pw->canon);
        free(pw);
        task_free(t);
        if (w->close_after_flush && !w->flushing && w->nparsing == 0 &&
            !w->ckpt_running)
            worker_close_all(w);
        return;
    }
    task_parsed(t, pw->rc, pw->job, &pw->e, &pw->who, pw->canon);
    free(pw);
}

static void
on_job(void *ud, char *raw, size_t len, const struct queue_claim *pre)
{
    struct worker *w = ud;
    struct task *t = xcalloc(1, sizeof *t);
    t->w = w;
    if (pre) {
        t->preclaimed = 1;
        t->pre = *pre;
    }
    t->raw = raw;
    t->rawlen = len;
    w->held_bytes += len;
    t->next = w->tasks;
    if (w->tasks)
        w->tasks->prev = t;
    w->tasks = t;
    w->ntasks++;
    t->first_at = clock_now_ms();
    if (len > PARSE_OFF_LOOP_BYTES) {
        struct parse_work *pw = xcalloc(1, sizeof *pw);
        pw->t = t;
        pw->req.data = pw;
        w->nparsing++;
        if (uv_queue_work(w->loop, &pw->req, parse_run, parse_done) != 0)
            abort(); /* only fails for a NULL callback */
        return;
    }
    struct herr e = {{0}, {0}};
    struct job_ident who;
    struct job *job = NULL;
    int rc = job_parse_ident(raw, len, &job, &e, &who);
    char *canon = NULL;
    if (rc == 0 && job->id == NULL) {
        job_assign_id(job);
        canon = job_to_json(job);
    }
    task_parsed(t, rc, job, &e, &who, canon);
}

static void
on_oversize(void *ud, size_t len)
{
    struct worker *w = ud;
    bigjob_add(w->big, len);
}

static size_t
count_local(void *ud, const char *raw, size_t len)
{
    struct worker *w = ud;
    if (raw == NULL)
        return bigjob_count(w->big, len);
    size_t n = 0;
    for (struct task *t = w->tasks; t; t = t->next)
        if (t->rawlen == len && memcmp(t->raw, raw, len) == 0)
            n++;
    return n;
}

static int
room(void *ud, size_t *bytes)
{
    struct worker *w = ud;
    *bytes = 0;
    if (w->stopping || !schemes_loaded(w->schemes) ||
        !senders_loaded(w->senders))
        return 0; /* no job is routed before the schemes are known */
    /* Twelve times the SMTP slots: jobs being claimed and recorded
     * ahead of a free slot, and jobs whose outcome is being recorded (a
     * batch commit, then leaving the processing list), must not starve
     * the SMTP connections: a job waits for two Message Center batches,
     * written one at a time, and at eight times the slots the SMTP
     * connections stood idle while every task waited on a batch. Sixteen
     * gave ~13 % more msg/s than eight in make bench but doubled the
     * fairness bench's p50 (another organisation's receipt waits behind
     * what the worker holds: 16-19 -> ~30 ms, p99 up to 172 ms); twelve
     * kept it (20 ms, p99 37-78 ms) at about the same throughput. ~12 KB
     * a task. A job waiting in the
     * queue of a server with fewer connections than slots (an organisation's
     * own, maybe slow), or for its scheme's first login, holds no place there
     * (SPEC §8: it must not hold up other servers' jobs); all tasks together
     * stay under 64 times the slots. A task is a few KB. */
    long working = (long)w->ntasks - (long)w->ngated -
                   (long)(w->mailer ? mailer_waiting(w->mailer) : 0);
    long r = 12 * w->s->concurrency - working;
    long all = 64 * w->s->concurrency - (long)w->ntasks;
    if (all < r)
        r = all;
    /* And the bytes they hold, HERALD_MAX_INFLIGHT_BYTES: a take stops
     * there after its first job (one job always fits), so a worker holds
     * at most the budget plus one job of raw text (a task holds a few
     * times its raw size: parsed, built, recorded). */
    size_t budget = (size_t)w->s->max_inflight_bytes;
    if (w->held_bytes >= budget && w->ntasks > 0)
        return 0;
    *bytes = w->held_bytes < budget ? budget - w->held_bytes : 1;
    return r > 0 ? (int)r : 0;
}

static void
on_ready(void *ud)
{
    (void)ud;
}

static void
on_retry_timer(uv_timer_t *timer)
{
    struct worker *w = timer->data;
    if (!w->stopping && queue_is_ready(w->q)) {
        schemes_poll(w->schemes); /* a change is seen within a second */
        senders_poll(w->senders);
        logingate_tick(w->gate);
    }
    if (log_enabled(LOG_DEBUG)) {
        size_t nready = 0;
        for (struct task *r = w->ready.head; r; r = r->qnext)
            nready++;
        char a[32], b[32], c[32], d[32], e[32];
        snprintf(a, sizeof a, "%zu", w->ntasks);
        snprintf(b, sizeof b, "%d", w->slots);
        snprintf(c, sizeof c, "%zu", nready);
        snprintf(d, sizeof d, "%zu", w->nmcq);
        snprintf(e, sizeof e, "%zu", queue_pending(w->q));
        /* where the tasks that moved on spent their time, "STATE
         * MEAN-us xCOUNT" for each state left since the last line; and
         * the takes that brought jobs meanwhile */
        char st[1024];
        size_t o = 0;
        st[0] = '\0';
        for (int i = 0; i < TASK_NSTATES && o < sizeof st - 64; i++) {
            if (w->state_n[i] == 0)
                continue;
            o += (size_t)snprintf(
                st + o, sizeof st - o, "%s%s %lluus x%llu", o ? ", " : "",
                task_state_name((enum task_state)i),
                (unsigned long long)(w->state_ns[i] / w->state_n[i] / 1000),
                (unsigned long long)w->state_n[i]);
            w->state_ns[i] = w->state_n[i] = 0;
        }
        unsigned long takes, taken;
        queue_take_counts(w->q, &takes, &taken);
        char f[64];
        snprintf(f, sizeof f, "%lu jobs in %lu", taken, takes);
        log_msg(LOG_DEBUG, "pipeline", "tasks", a, "smtp", b, "ready", c,
                "mc_pending", d, "redis_pending", e, "mc_flushing",
                w->flushing ? "yes" : "no", "flush_armed",
                w->flush_armed ? "yes" : "no", "takes", f, "states", st, NULL);
    }
    struct task *t;
    while ((t = tq_pop(&w->retry)) != NULL) {
        if (w->stopping)
            task_free(t);
        else
            task_claim(t);
    }
}

/* ---- life cycle ---- */

static void
on_handle_closed(uv_handle_t *h)
{
    struct worker *w = h->data;
    if (--w->open_handles > 0)
        return;
    void (*done)(void *, int) = w->done;
    void *ud = w->done_ud;
    int code = w->exit_code;
    record_log_window(w);
    if (w->task_illegal) {
        char n[32];
        snprintf(n, sizeof n, "%zu", w->task_illegal);
        log_msg(LOG_ERROR,
                "tasks moved in ways worker/task.c does not list (a bug; "
                "each was logged)",
                "count", n, NULL);
    }
    if (w->mc)
        mc_close(w->mc);
    if (w->mc_ckpt)
        mc_close(w->mc_ckpt);
    resolver_free(w->resolver);
    schemes_free(w->schemes);
    senders_free(w->senders);
    logingate_free(w->gate);
    bigjob_free(w->big); /* the queue is closed: no reply can come */
    free(w->fb_task);
    free(w->fb_step);
    free(w->fd_task);
    free(w->fd_step);
    free(w->idtab);
    free(w->done_list);
    free(w->mark);
    while (w->batches) { /* Redis never answered: the jobs stay in it */
        struct finish_batch *b = w->batches;
        w->batches = b->next;
        free(b);
    }
    for (size_t i = 0; i < w->ntcache; i++) {
        free(w->tcache[i].name);
        free(w->tcache[i].json);
    }
    free(w->id);
    free(w->msgid_domain);
    free(w);
    if (done)
        done(ud, code);
}

static void
on_queue_closed(void *ud)
{
    struct worker *w = ud;
    uv_handle_t fake = {.data = w};
    on_handle_closed(&fake);
}

static void
on_mailer_closed(void *ud)
{
    on_queue_closed(ud);
}

static void
worker_close_all(struct worker *w)
{
    if (w->closing)
        return;
    if (w->flushing || w->nparsing || w->ckpt_running) {
        /* the thread pool is writing (or parsing) tasks we are about to
         * free */
        w->close_after_flush = 1;
        return;
    }
    w->closing = 1;
    /* remaining tasks (a dead Redis): their jobs are safe in Redis */
    while (w->tasks) {
        struct task *t = w->tasks;
        t->w->stopping = 1;
        task_free(t);
    }
    w->open_handles = 10; /* 4 timers, the check, the queue, the mailer,
                             the SPF cache, the IMAP copier, the purge */
    purge_close(w->purge, on_queue_closed, w);
    imapcopy_close(w->imap, on_queue_closed, w);
    spfcache_close(w->spf, on_queue_closed, w);
    uv_close((uv_handle_t *)&w->t_check, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_flush, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_retry, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_grace, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_ckpt, on_handle_closed);
    mailer_close(w->mailer, on_mailer_closed, w);
    queue_close(w->q, on_queue_closed, w);
}

static void
on_handback(void *ud, int rc)
{
    struct worker *w = ud;
    if (rc != 0) {
        log_msg(LOG_ERROR,
                "could not hand back jobs: Redis unreachable; they stay in "
                "this worker's processing list",
                NULL);
        w->exit_code = 1;
    }
    w->handback_done = 1;
    worker_close_all(w);
}

static void
worker_maybe_finish_stop(struct worker *w)
{
    if (!w->stopping || w->closing || w->handback_done == -1)
        return;
    if (w->ntasks > 0 || w->mcq.head || w->flushing)
        return;
    w->handback_done = -1; /* in progress */
    uv_timer_stop(&w->t_grace);
    queue_handback(w->q, 5000, on_handback, w);
}

/* hooks.idle: record.c finished a batch, or a task was freed while
 * stopping. */
static void
on_idle(struct worker *w)
{
    if (w->close_after_flush)
        worker_close_all(w);
    else
        worker_maybe_finish_stop(w);
}

static void
on_grace(uv_timer_t *timer)
{
    struct worker *w = timer->data;
    if (!w->grace_over) {
        w->grace_over = 1;
        if (mailer_active(w->mailer))
            log_msg(LOG_WARN,
                    "shutdown grace over: aborting SMTP transactions in "
                    "flight; they are retried later",
                    NULL);
        mailer_abort_all(w->mailer);
        /* give their outcomes a few seconds to be recorded */
        uv_timer_start(&w->t_grace, on_grace, 5000, 0);
        return;
    }
    log_msg(LOG_ERROR, "shutdown: outcomes could not be recorded in time",
            NULL);
    w->exit_code = 1;
    worker_close_all(w);
}

static struct task *
first_gated(struct worker *w)
{
    for (struct task *t = w->tasks; t; t = t->next)
        if (t->state == TASK_GATED)
            return t;
    return NULL;
}

void
worker_stop(struct worker *w, void (*done)(void *ud, int code), void *ud)
{
    if (w->stopping) {
        if (!w->grace_over && !w->closing) {
            uv_timer_stop(&w->t_grace);
            uv_timer_start(&w->t_grace, on_grace, 0, 0);
        }
        return;
    }
    w->stopping = 1;
    w->done = done;
    w->done_ud = ud;
    log_msg(LOG_INFO, "stopping: no more takes; finishing jobs in flight",
            NULL);
    queue_stop_taking(w->q);
    bigjob_stop(w->big); /* its job stays in the list: handed back */
    /* Not started yet: leave them in the processing list. */
    struct task *t;
    while ((t = tq_pop(&w->ready)) != NULL)
        task_free(t);
    while ((t = tq_pop(&w->retry)) != NULL)
        task_free(t);
    while ((t = first_gated(w)) != NULL)
        task_free(t); /* waited on a scheme's first login: not started */
    for (t = w->tasks; t; t = t->next)
        if (t->job && t->job->id && t->step == MCW_NONE && !t->routed &&
            !t->has_slot_ever)
            t->abandoned = 1; /* claim or id replacement outstanding */
    uv_timer_start(&w->t_grace, on_grace,
                   (uint64_t)w->s->shutdown_grace_s * 1000, 0);
    worker_maybe_finish_stop(w);
}

int
worker_new(uv_loop_t *loop, const struct settings *s, const char *id,
           struct worker **out, struct herr *e)
{
    struct worker *w = xcalloc(1, sizeof *w);
    w->trace_states = log_enabled(LOG_DEBUG);
    w->loop = loop;
    w->s = s;
    w->id = xstrdup(id);
    const char *at = strrchr(s->default_from, '@');
    w->msgid_domain = xstrdup(at ? at + 1 : "localhost");
    int rc = schemes_new(s, &w->schemes, e);
    if (rc == 0)
        rc = mc_open(s->mc, &w->mc, e);
    if (rc != 0) {
        schemes_free(w->schemes);
        free(w->id);
        free(w->msgid_domain);
        free(w);
        return rc;
    }
    w->resolver = resolver_new(s, w->schemes);
    char helo[256];
    if (settings_helo_name(s, helo, sizeof helo))
        log_msg(LOG_INFO, "EHLO name", "name", helo, NULL);
    else
        log_msg(LOG_INFO,
                "EHLO name: each connection's address literal (this host's "
                "name is not fully qualified; HERALD_HELO_NAME sets one)",
                NULL);
    struct mailer_opts mo = {
        .connect_timeout_s = s->connect_timeout_s,
        .step_timeout_s = s->smtp_timeout_s,
        .ca_file = s->ca_file,
        .helo = helo,
        .max_conns = s->concurrency,
        .max_busy = s->concurrency,
    };
    if (mailer_new(loop, &mo, &w->mailer) != 0) {
        mc_close(w->mc);
        resolver_free(w->resolver);
        schemes_free(w->schemes);
        free(w->id);
        free(w->msgid_domain);
        free(w);
        return herr_set(e, HERR_IO, "", "could not set up TLS");
    }
    w->hooks.recorded = task_recorded;
    w->hooks.left = task_free;
    w->hooks.idle = on_idle;
    uv_timer_init(loop, &w->t_ckpt);
    w->t_ckpt.data = w;
    if (mc_has_checkpoint(w->mc)) {
        struct herr ce = {{0}, {0}};
        if (mc_open(s->mc, &w->mc_ckpt, &ce) == 0) {
            mc_checkpoint_elsewhere(w->mc);
            uv_timer_start(&w->t_ckpt, on_ckpt_timer, CKPT_MS, CKPT_MS);
        } else {
            log_msg(LOG_WARN,
                    "message center: no second handle for checkpoints; the "
                    "writes checkpoint themselves",
                    "error", ce.msg, NULL);
        }
    }
    uv_timer_init(loop, &w->t_flush);
    uv_timer_init(loop, &w->t_retry);
    uv_timer_init(loop, &w->t_grace);
    uv_check_init(loop, &w->t_check);
    w->t_check.data = w;
    uv_check_start(&w->t_check, record_on_check);
    w->t_flush.data = w->t_retry.data = w->t_grace.data = w;
    uv_timer_start(&w->t_retry, on_retry_timer, RETRY_CLAIM_MS, RETRY_CLAIM_MS);
    struct queue_events ev = {
        .job = on_job,
        .oversize = on_oversize,
        .count_local = count_local,
        .room = room,
        .ready = on_ready,
        .ud = w,
    };
    queue_new(loop, s, id, &ev, &w->q);
    w->big = bigjob_new(w->q);
    w->purge = purge_new(loop, s, w->q, id);
    schemes_set_queue(w->schemes, w->q);
    w->senders = senders_new(w->q);
    w->gate = logingate_new(
        w->q, id, (s->connect_timeout_s + 4 * s->smtp_timeout_s) * 1000);
    w->imap = imapcopy_new(loop, s);
    if (spfcache_new(loop, s, w->q, &w->spf, e) != 0) {
        /* a malformed HERALD_DNS or HERALD_SENDER_IPS: fatal at start,
         * like any bad setting */
        log_msg(LOG_FATAL, "cannot start", "field", e->field, "error", e->msg,
                NULL);
        exit(2);
    }
    schemes_poll(w->schemes);
    senders_poll(w->senders);
    *out = w;
    return 0;
}
