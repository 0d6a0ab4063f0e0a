/*
 * record — the worker's writes that make an outcome durable (task.h):
 * Message Center steps batched into one transaction on libuv's thread
 * pool, the ledger's "sent" for every acceptance of a loop turn in one
 * Redis call (and the duplicate window it closes, measured), and sent jobs
 * leaving the processing list together. A leaf of task.c: it reports
 * through w->hooks (struct task_hooks), never by calling back.
 */
#include "task.h"
#include "clock.h"
#include "dead.h"
#include "job.h"
#include "keys.h"
#include "log.h"
#include "smtpclass.h"
#include "util.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

static void
arm_flush(struct worker *w, uint64_t ms)
{
    w->flush_armed = 1;
    w->flush_due = uv_now(w->loop) + ms;
    uv_timer_start(&w->t_flush, record_on_flush, ms, 0);
}

/*
 * Queues task t's next write. It goes with the next batch, MC_BATCH_MS
 * from now at most (at once when MC_BATCH_MAX are waiting), but for a
 * "sending" step, which waits MC_SENDING_MS for its outcome to replace
 * it (flush_start leaves it queued until then). A step queued while the
 * task's last is still queued replaces it.
 */
void
record_queue(struct task *t, enum mc_step step)
{
    struct worker *w = t->w;
    t->step = step;
    if (!t->in_mcq) {
        t->in_mcq = 1;
        t->mcq_at = uv_now(w->loop);
        tq_push(&w->mcq, t);
        w->nmcq++;
    }
    uint64_t ms = w->nmcq >= MC_BATCH_MAX ? 0
                  : step == MCW_SENDING   ? MC_SENDING_MS
                                          : MC_BATCH_MS;
    if (!w->flush_armed || uv_now(w->loop) + ms < w->flush_due)
        arm_flush(w, ms);
}

static int
mc_insert_job(struct worker *w, struct task *t, int64_t next_at,
              enum mc_status *existing, struct herr *e)
{
    struct mc_record *r = mc_record_from_job(t->job);
    if (next_at)
        r->next_attempt_at = next_at;
    int rc = mc_insert(w->mc, r, existing, e);
    mc_record_free(r);
    return rc;
}

static void
set_route_fields(struct task *t, struct mc_update *u)
{
    if (t->routed) {
        u->path = t->route.path_name;
        u->path_reason = t->route.reason;
        u->sender = t->route.envelope_from;
        u->reply_to = t->route.reply_to;
    }
    /* The message as sent: a template is rendered when the job is taken
     * (prepare), before any record of that take is written, and again
     * at every take, so the record always shows the latest rendering —
     * also when an earlier record (a schedule, a wait) came first. */
    if (t->job->template_name && t->rendered) {
        u->set_content = 1;
        u->subject = t->job->subject;
        u->text = t->job->text;
        u->html = t->job->html;
    }
}

/*
 * A batch's writes go in two steps. step_begin makes each task's first
 * write deferred (mc_insert_deferred / mc_update_deferred): the
 * PostgreSQL store sends them without waiting for each, so a batch costs
 * a round trip or two instead of one per write; SQLite does each at
 * once. After mc_batch_sync, step_finish reads each outcome and makes
 * what follows it -- a retry's or a replay's record queued again, a
 * record that went missing re-created -- one write at a time (rare).
 * Each task's writes keep their order, and the tasks of one run have
 * distinct ids (flush_work), so the records end as if every step had
 * been done whole, one after the other.
 */
struct step_io {
    struct mc_update u;
    struct mc_result res;
    int wrote;
};

static void
insert_job_deferred(struct worker *w, struct task *t, int64_t next_at,
                    struct mc_result *res)
{
    struct mc_record *r = mc_record_from_job(t->job);
    if (next_at)
        r->next_attempt_at = next_at;
    mc_insert_deferred(w->mc, r, res);
    mc_record_free(r);
}

static void
step_begin(struct worker *w, struct task *t, enum mc_step step,
           struct step_io *io)
{
    struct mc_update *u = &io->u;
    io->wrote = 1;
    switch (step) {
    case MCW_SCHEDULE:
        insert_job_deferred(w, t, t->job->send_at_ms, &io->res);
        return;
    case MCW_START:
        t->dup_sent = 0;
        insert_job_deferred(w, t, 0, &io->res);
        return;
    case MCW_SENDING:
        mc_update_init(u, t->job->id, MC_SENDING);
        set_route_fields(t, u);
        u->set_content = 0; /* MCW_START just wrote it */
        u->attempts_add = 1;
        u->next_attempt_at = 0;
        break;
    case MCW_LEDGER_SENT:
        mc_update_init(u, t->job->id, MC_SENT);
        break;
    case MCW_SENT:
        mc_update_init(u, t->job->id, MC_SENT);
        u->attempts_add = !t->attempt_recorded && t->has_slot_ever;
        set_route_fields(t, u);
        u->sent_at = clock_now_ms();
        u->next_attempt_at = 0;
        u->smtp_reply = t->reply ? t->reply : "";
        u->recipients_json = t->rcpt_json;
        u->last_error = t->error ? t->error : "";
        break;
    case MCW_DEFERRED:
        mc_update_init(u, t->job->id, MC_DEFERRED);
        u->attempts_add = !t->attempt_recorded && t->has_slot_ever;
        set_route_fields(t, u);
        u->next_attempt_at = t->next_at;
        u->last_error = t->error;
        u->smtp_reply = t->reply;
        u->recipients_json = t->rcpt_json;
        break;
    case MCW_FAILED:
        mc_update_init(u, t->job->id, MC_FAILED);
        u->attempts_add = !t->attempt_recorded && t->has_slot_ever;
        set_route_fields(t, u);
        u->next_attempt_at = 0;
        u->last_error = t->error;
        u->smtp_reply = t->reply;
        u->recipients_json = t->rcpt_json;
        break;
    case MCW_NONE:
        io->wrote = 0;
        return;
    }
    mc_update_deferred(w->mc, u, &io->res);
}

static int
step_finish(struct worker *w, struct task *t, enum mc_step step,
            struct step_io *io, struct herr *e)
{
    int rc = io->res.rc;
    if (!io->wrote || rc == 0)
        return 0;
    switch (step) {
    case MCW_SCHEDULE:
        if (rc == HERR_EXISTS)
            return 0;
        break;
    case MCW_START:
        if (rc == HERR_EXISTS && io->res.existing == MC_SENT) {
            t->dup_sent = 1;
            return 0;
        }
        if (rc == HERR_EXISTS) {
            /* a retry or a replay: it is queued again */
            struct mc_update u;
            mc_update_init(&u, t->job->id, MC_QUEUED);
            set_route_fields(t, &u);
            return mc_update(w->mc, &u, e);
        }
        break;
    case MCW_SENDING:
    case MCW_SENT:
    case MCW_DEFERRED:
    case MCW_FAILED:
        if (rc == HERR_NOTFOUND) {
            /* the record went missing (a store reset under us): made
             * again, so an outcome is never dropped */
            rc = mc_insert_job(w, t, 0, NULL, e);
            if (rc == 0 || rc == HERR_EXISTS)
                rc = mc_update(w->mc, &io->u, e);
            return rc;
        }
        break;
    case MCW_LEDGER_SENT:
        if (rc == HERR_NOTFOUND)
            return 0;
        break;
    case MCW_NONE:
        break;
    }
    if (e)
        *e = io->res.err;
    return rc;
}

/* Whether task `hi`'s job id is one of tasks lo..hi-1's (h: their
 * hashes). */
static int
id_repeats(struct worker *w, const uint64_t *h, size_t lo, size_t hi)
{
    const char *id = w->fb_task[hi]->job ? w->fb_task[hi]->job->id : NULL;
    if (id == NULL)
        return 0;
    for (size_t i = lo; i < hi; i++)
        if (h[i] == h[hi] && w->fb_task[i]->job && w->fb_task[i]->job->id &&
            strcmp(w->fb_task[i]->job->id, id) == 0)
            return 1;
    return 0;
}

/* On the thread pool: one transaction for the whole batch, its writes
 * deferred in runs of distinct ids (a task's id repeated in the batch
 * starts a new run, after the earlier one's outcome). */
static void
flush_work(uv_work_t *req)
{
    struct worker *w = req->data;
    uint64_t t0 = uv_hrtime();
    memset(&w->fb_err, 0, sizeof w->fb_err);
    size_t n = w->fb_n;
    struct step_io *io = xcalloc(n ? n : 1, sizeof *io);
    uint64_t *h = xcalloc(n ? n : 1, sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = w->fb_task[i]->job && w->fb_task[i]->job->id
                   ? util_hash(w->fb_task[i]->job->id)
                   : 0;
    int rc = mc_batch_begin(w->mc, &w->fb_err);
    size_t lo = 0, hi;
    while (rc == 0 && lo < n) {
        for (hi = lo; hi < n && (hi == lo || !id_repeats(w, h, lo, hi)); hi++)
            step_begin(w, w->fb_task[hi], w->fb_step[hi], &io[hi]);
        rc = mc_batch_sync(w->mc, &w->fb_err);
        for (size_t i = lo; rc == 0 && i < hi; i++)
            rc = step_finish(w, w->fb_task[i], w->fb_step[i], &io[i],
                             &w->fb_err);
        lo = hi;
    }
    if (rc == 0)
        rc = mc_batch_commit(w->mc, &w->fb_err);
    else
        mc_batch_rollback(w->mc);
    free(h);
    free(io);
    w->fb_rc = rc;
    w->fb_us = (uv_hrtime() - t0) / 1000;
}

static struct finish_batch *
batch_new(struct worker *w, struct task **tasks, size_t n)
{
    struct finish_batch *b = xmalloc(sizeof *b + n * sizeof b->t[0]);
    b->n = n;
    b->pending = 1;
    b->failed = 0;
    b->w = w;
    b->prev = NULL;
    b->next = w->batches;
    if (w->batches)
        w->batches->prev = b;
    w->batches = b;
    memcpy(b->t, tasks, n * sizeof *tasks);
    return b;
}

static void
batch_unlink(struct finish_batch *b)
{
    struct worker *w = b->w;
    if (b->prev)
        b->prev->next = b->next;
    else
        w->batches = b->next;
    if (b->next)
        b->next->prev = b->prev;
}

static void
on_marked(void *ud, redisReply *r)
{
    struct finish_batch *b = ud;
    batch_unlink(b);
    if (r->type == REDIS_REPLY_ERROR)
        log_msg(LOG_ERROR,
                "redis refused to record delivered ids in the ledger", "error",
                r->str, NULL);
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            long long k = r->element[i]->integer;
            if (k < 1 || (size_t)k > b->n)
                continue;
            struct task *t = b->t[k - 1];
            log_job(LOG_WARN, task_id(t), task_org(t), t->attempt,
                    "accepted under a claim that was no longer current: the "
                    "job had been re-taken (this worker's heartbeat lapsed), "
                    "so it may have been delivered twice",
                    NULL);
        }
    }
    for (size_t i = 0; i < b->n; i++)
        record_window_end(b->t[i]);
    free(b);
}

/* After the poll phase: one ledger call for every 250 of this turn. */
void
record_on_check(uv_check_t *h)
{
    struct worker *w = h->data;
    size_t n = w->nmark;
    if (n == 0)
        return;
    w->nmark = 0;
    struct finish_batch *b = batch_new(w, w->mark, n);
    const char **ids = xmalloc(n * sizeof *ids);
    long long *fences = xmalloc(n * sizeof *fences);
    for (size_t i = 0; i < n; i++) {
        ids[i] = b->t[i]->job->id;
        fences[i] = b->t[i]->fence;
    }
    queue_mark_sent(w->q, ids, fences, n, on_marked, b);
    free(fences);
    free(ids);
}

void
record_mark_sent_later(struct task *t)
{
    struct worker *w = t->w;
    if (w->nmark == w->capmark) {
        w->capmark = w->capmark ? w->capmark * 2 : 64;
        w->mark = xrealloc(w->mark, w->capmark * sizeof *w->mark);
    }
    w->mark[w->nmark++] = t;
}

static void
on_finished(void *ud, redisReply *r)
{
    struct finish_batch *b = ud;
    if (r->type == REDIS_REPLY_ERROR && !b->failed) {
        b->failed = 1;
        log_msg(LOG_ERROR,
                "redis refused to finish delivered jobs; they stay in the "
                "processing list",
                "error", r->str, NULL);
    }
    if (--b->pending > 0)
        return;
    batch_unlink(b);
    for (size_t i = 0; i < b->n; i++)
        b->w->hooks.left(b->t[i]);
    free(b);
}

/* The batch's delivered jobs leave the processing list: an LREM each,
 * written together (plain commands: a script taking the n entries made
 * Redis copy and hash each ~2 KB entry twice more, as a Lua string). The
 * tasks leave when the last reply is in. */
static void
finish_done_list(struct worker *w)
{
    size_t n = w->ndone;
    w->ndone = 0;
    if (n == 0)
        return;
    struct finish_batch *b = batch_new(w, w->done_list, n);
    b->pending = n;
    for (size_t i = 0; i < n; i++)
        queue_finish(w->q, b->t[i]->raw, b->t[i]->rawlen, on_finished, b);
}

static void flush_start(struct worker *w);

/* Back on the loop: continue each task, or put the batch back. */
static void
flush_done(uv_work_t *req, int status)
{
    struct worker *w = req->data;
    w->flushing = 0;
    int rc = status < 0 ? HERR_STORE : w->fb_rc;
    if (log_enabled(LOG_DEBUG)) {
        char n[32], us[32];
        snprintf(n, sizeof n, "%zu", w->fb_n);
        snprintf(us, sizeof us, "%llu", (unsigned long long)w->fb_us);
        log_msg(LOG_DEBUG, "message center batch written", "steps", n, "us", us,
                NULL);
    }
    if (w->close_after_flush) {
        w->hooks.idle(w);
        return;
    }
    if (rc != 0) {
        char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&w->fb_err, why, sizeof why);
        log_msg(LOG_ERROR,
                "message center write failed; jobs wait and are retried",
                "error", why, NULL);
        /* back to the front of the queue, in order; a task that queued
         * a newer step meanwhile keeps that one (it supersedes) */
        for (size_t i = w->fb_n; i-- > 0;) {
            struct task *t = w->fb_task[i];
            if (t->in_mcq)
                continue;
            t->step = w->fb_step[i];
            t->in_mcq = 1;
            t->qnext = w->mcq.head;
            w->mcq.head = t;
            if (w->mcq.tail == NULL)
                w->mcq.tail = t;
            w->nmcq++;
        }
        w->fb_n = 0;
        arm_flush(w, MC_RETRY_MS);
        return;
    }
    /* What was queued during this batch has waited for it already: the
     * next batch starts now, before this one's tasks go on (MC_BATCH_MS
     * gathers writes only when the store is idle; the store stood idle
     * while the loop handled a batch's tasks, a third of the time at
     * full load, and their transactions came in waves). This batch's
     * tasks stay out of it: their next step goes in the one after. */
    size_t n = w->fb_n;
    struct task **done = w->fb_task;
    enum mc_step *steps = w->fb_step;
    w->fb_task = w->fd_task;
    w->fb_step = w->fd_step;
    w->fd_task = done;
    w->fd_step = steps;
    w->fb_n = 0;
    for (size_t i = 0; i < n; i++)
        done[i]->in_done = 1;
    flush_start(w);
    for (size_t i = 0; i < n; i++)
        done[i]->in_done = 0;
    w->done_list = xrealloc(w->done_list, (n ? n : 1) * sizeof *w->done_list);
    w->ndone = 0;
    for (size_t i = 0; i < n; i++)
        w->hooks.recorded(done[i], steps[i]);
    finish_done_list(w);
    if (w->mcq.head && !w->flushing)
        arm_flush(w, 0);
    if (w->stopping)
        w->hooks.idle(w);
}

/* Called from hooks.recorded during flush_done only: the list is sized
 * for the batch there. */
void
record_leave(struct task *t)
{
    struct worker *w = t->w;
    w->done_list[w->ndone++] = t;
}

/* Starts the next batch from mcq on the thread pool, unless one is being
 * written (flush_done starts the next) or nothing waits. */
static void
flush_start(struct worker *w)
{
    if (w->mcq.head == NULL || w->flushing)
        return;
    if (w->fb_task == NULL) {
        w->fb_task = xmalloc(MC_BATCH_MAX * sizeof *w->fb_task);
        w->fb_step = xmalloc(MC_BATCH_MAX * sizeof *w->fb_step);
        w->fd_task = xmalloc(MC_BATCH_MAX * sizeof *w->fd_task);
        w->fd_step = xmalloc(MC_BATCH_MAX * sizeof *w->fd_step);
    }
    struct task *t;
    w->fb_n = 0;
    /* "sending" steps younger than MC_SENDING_MS wait (their outcome may
     * replace them), and so do the tasks of the batch that just
     * committed; the rest goes */
    struct tq young = {0};
    size_t nyoung = 0;
    uint64_t now = uv_now(w->loop), due = UINT64_MAX;
    /* at most MC_BATCH_MAX a batch: the rest goes in the next, at once
     * (a store shared by two workers made batches of ~500, and their
     * records, built at once on the pool thread, a peak of memory) */
    while (w->fb_n < MC_BATCH_MAX && (t = tq_pop(&w->mcq)) != NULL) {
        if (t->in_done) {
            tq_push(&young, t);
            continue;
        }
        if (t->step == MCW_SENDING && !w->stopping &&
            now - t->mcq_at < MC_SENDING_MS) {
            tq_push(&young, t);
            nyoung++;
            if (t->mcq_at + MC_SENDING_MS - now < due)
                due = t->mcq_at + MC_SENDING_MS - now;
            continue;
        }
        t->in_mcq = 0;
        w->fb_task[w->fb_n] = t;
        w->fb_step[w->fb_n] = t->step;
        w->fb_n++;
    }
    /* the young go back in front of what was left, in order */
    if (young.head) {
        young.tail->qnext = w->mcq.head;
        if (w->mcq.head == NULL)
            w->mcq.tail = young.tail;
        w->mcq.head = young.head;
    }
    w->nmcq -= w->fb_n;
    if (nyoung)
        arm_flush(w, due);
    if (w->fb_n == 0)
        return;
    w->flushing = 1;
    w->flush_work.data = w;
    if (uv_queue_work(w->loop, &w->flush_work, flush_work, flush_done) != 0)
        abort(); /* only fails for a NULL callback */
}

void
record_on_flush(uv_timer_t *timer)
{
    struct worker *w = timer->data;
    w->flush_armed = 0;
    flush_start(w);
}

/* The duplicate window of one task ends: its "sent" is in Redis. */
void
record_window_end(struct task *t)
{
    if (t->t250 == 0)
        return;
    struct worker *w = t->w;
    uint64_t us = (uv_hrtime() - t->t250) / 1000;
    int b = 0;
    while (b < 39 && (1ull << (b + 1)) <= us)
        b++;
    w->win_bucket[b]++;
    w->win_n++;
    if (us > w->win_max_us)
        w->win_max_us = us;
    t->t250 = 0;
}

/* Upper bound (µs) of the bucket holding the q-th fraction. */
static uint64_t
window_quantile(const struct worker *w, double q)
{
    uint64_t want = (uint64_t)((double)w->win_n * q), seen = 0;
    for (int b = 0; b < 40; b++) {
        seen += w->win_bucket[b];
        if (seen > want)
            return 1ull << (b + 1);
    }
    return w->win_max_us;
}

void
record_log_window(const struct worker *w)
{
    if (w->win_n == 0)
        return;
    char n[32], p50[32], p99[32], mx[32];
    snprintf(n, sizeof n, "%llu", (unsigned long long)w->win_n);
    snprintf(p50, sizeof p50, "%llu",
             (unsigned long long)window_quantile(w, 0.50));
    snprintf(p99, sizeof p99, "%llu",
             (unsigned long long)window_quantile(w, 0.99));
    snprintf(mx, sizeof mx, "%llu", (unsigned long long)w->win_max_us);
    log_msg(LOG_INFO,
            "duplicate window: time from SMTP acceptance to the ledger "
            "saying sent (a crash inside it re-sends the message)",
            "messages", n, "p50_us_at_most", p50, "p99_us_at_most", p99,
            "max_us", mx, NULL);
}
