#include "worker.h"
#include "clock.h"
#include "dead.h"
#include "job.h"
#include "keys.h"
#include "log.h"
#include "mailer.h"
#include "mc.h"
#include "mime.h"
#include "queue.h"
#include "resolve.h"
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

#define SEND_AT_SLACK_MS 1000 /* send_at closer than this: send now */
#define MC_RETRY_MS 1000
/* Message Center writes wait this long (or for MC_BATCH_MAX of them) to
 * share one transaction: one commit per message costs a dozen page
 * writes, one commit per batch a few per message. */
#define MC_BATCH_MS 4
#define MC_BATCH_MAX 256
#define RETRY_CLAIM_MS 1000
/* Templates are read from Redis at most this often per name, so an
 * update reaches every worker within that time. */
#define TMPL_TTL_MS 5000
#define TMPL_CACHE_MAX 128

struct tmpl_entry {
    char *name;
    char *json; /* as stored; NULL: no such template */
    uint64_t at;
};

enum mc_step {
    MCW_NONE,
    MCW_SCHEDULE,    /* record queued with next_attempt_at = send_at */
    MCW_START,       /* record exists ("queued"): gates the first attempt */
    MCW_SENDING,     /* "sending" + attempt; does not gate the transaction */
    MCW_LEDGER_SENT, /* ledger says delivered: make the record say so */
    MCW_SENT,
    MCW_DEFERRED,
    MCW_FAILED,
};

struct task {
    struct worker *w;
    struct task *next, *prev; /* every task */
    struct task *qnext;       /* in one of: ready, mc, retry queues */
    char *raw;                /* the exact processing-list entry */
    size_t rawlen;
    struct job *job;
    int attempt;
    int64_t first_at;
    int has_slot;
    int has_slot_ever; /* an SMTP transaction was started */
    int abandoned;     /* shutdown: free on the next callback, do nothing */
    enum mc_step step;
    const char *dead_reason; /* for MCW_FAILED */
    const char *dead_field;  /* the job field at fault, or "" */
    struct route route;
    int routed;
    char *msg;
    size_t msglen;
    struct mail_req req;
    const char **rcpt;
    size_t nrcpt;
    /* outcome */
    int64_t next_at;
    char *reply;          /* server's final reply or transport error */
    char *error;          /* last_error for the record */
    char *rcpt_json;      /* per-recipient outcome */
    int dup_sent;         /* the record already said "sent" */
    int attempt_recorded; /* the record counts this attempt */
    int in_mcq;
    int rendered;          /* the template (if any) has been applied */
    int spf_known, spf_ok; /* the SPF verdict for the from domain */
    char *spf_why;
    int gated;     /* waiting for a scheme's first login (logingate) */
    uint64_t t250; /* uv_hrtime() when the server accepted */
    /* quotas (senders.h): the plan of the current route, and how many
     * recipients this attempt took from its counters (given back unless
     * accepted) */
    struct sender_plan plan;
    int planned;
    int quota_asked; /* the take script is running or has said yes */
    int quota_n;
    int uncount;     /* deferred without an attempt: the ledger takes it back */
    long long fence; /* the ledger claim's token */
    char **prev_acc; /* recipients that accepted in an earlier attempt */
    size_t nprev_acc;
    int preclaimed;         /* the take claimed the id already */
    struct queue_claim pre; /* what that claim said */
};

struct tq {
    struct task *head, *tail;
};

struct worker {
    uv_loop_t *loop;
    const struct settings *s;
    char *id;
    char *msgid_domain;
    struct queue *q;
    struct mailer *mailer;
    struct resolver *resolver;
    struct schemes *schemes;
    struct spfcache *spf;
    struct senders *senders;
    struct imapcopy *imap;
    struct logingate *gate;
    struct mc *mc;
    struct task *tasks;
    size_t ntasks;
    int slots; /* tasks holding an SMTP slot */
    struct tq ready, mcq, retry;
    size_t nmcq;
    /* The batch being written on libuv's thread pool. Its tasks are
     * parked (or sending, for a "sending" step, which only reads what
     * does not change while a transaction runs). */
    uv_work_t flush_work;
    int flushing, close_after_flush;
    struct task **fb_task;
    enum mc_step *fb_step;
    size_t fb_n, fb_cap;
    int fb_rc;
    struct task **done_list; /* sent, recorded: leave processing together */
    struct finish_batch *batches; /* waiting for Redis */
    struct task **mark; /* accepted this turn: ledger "sent" at check */
    size_t nmark, capmark;
    uv_check_t t_check;
    size_t ndone;
    uint64_t fb_us;
    struct herr fb_err;
    uv_timer_t t_flush, t_retry, t_grace;
    struct tmpl_entry tcache[TMPL_CACHE_MAX];
    size_t ntcache;
    /* The duplicate window (SPEC §8): from the server's 250 to the
     * ledger's "sent" confirmed by Redis; log2 buckets of microseconds. */
    uint64_t win_n, win_max_us;
    uint64_t win_bucket[40];
    int flush_armed;
    int stopping, grace_over, closing, handback_done;
    int exit_code;
    int open_handles;
    void (*done)(void *, int);
    void *done_ud;
};

static void task_free(struct task *t);
static void window_end(struct task *t);
static void prepare(struct task *t);
static void pump(struct worker *w);
static void maybe_finish_stop(struct worker *w);

/* ---- small queues ---- */

static void
tq_push(struct tq *q, struct task *t)
{
    t->qnext = NULL;
    if (q->tail)
        q->tail->qnext = t;
    else
        q->head = t;
    q->tail = t;
}

static struct task *
tq_pop(struct tq *q)
{
    struct task *t = q->head;
    if (t) {
        q->head = t->qnext;
        if (q->head == NULL)
            q->tail = NULL;
        t->qnext = NULL;
    }
    return t;
}

/* ---- tasks ---- */

static const char *
tid(const struct task *t)
{
    return t->job && t->job->id ? t->job->id : "-";
}

static const char *
torg(const struct task *t)
{
    return t->job ? t->job->org : NULL;
}

static void
task_release_slot(struct task *t)
{
    if (t->has_slot) {
        t->has_slot = 0;
        t->w->slots--;
    }
}

/* Recipients taken and not accepted go back to the sender's counters. */
static void
quota_drop(struct task *t)
{
    if (t->quota_n > 0)
        senders_give(t->w->senders, &t->plan, t->quota_n);
    t->quota_n = 0;
    t->quota_asked = 0;
    t->planned = 0;
}

static void
task_free(struct task *t)
{
    struct worker *w = t->w;
    task_release_slot(t);
    quota_drop(t);
    logingate_forget(w->gate, t);
    if (t->prev)
        t->prev->next = t->next;
    else
        w->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    w->ntasks--;
    if (t->routed)
        route_clear(&t->route);
    if (t->job)
        job_free(t->job);
    free(t->raw);
    free(t->msg);
    free(t->rcpt);
    free(t->reply);
    free(t->error);
    free(t->rcpt_json);
    free(t->spf_why);
    for (size_t i = 0; i < t->nprev_acc; i++)
        free(t->prev_acc[i]);
    free(t->prev_acc);
    free(t);
    if (w->stopping)
        maybe_finish_stop(w);
    else
        queue_kick(w->q);
}

/* A reply that only ends the task (finish / dead / schedule). */
static void
on_final_reply(void *ud, redisReply *r)
{
    struct task *t = ud;
    if (r->type == REDIS_REPLY_ERROR)
        log_job(LOG_ERROR, tid(t), torg(t), t->attempt,
                "redis refused to finish the job; it stays in the "
                "processing list",
                "error", r->str, NULL);
    task_free(t);
}

static void
finish(struct task *t)
{
    queue_finish(t->w->q, t->raw, t->rawlen, on_final_reply, t);
}

/* ---- Message Center batching ---- */

static void on_flush(uv_timer_t *timer);

static void
mc_queue(struct task *t, enum mc_step step)
{
    struct worker *w = t->w;
    t->step = step;
    if (t->in_mcq)
        return; /* an outcome superseding a "sending" not yet written */
    t->in_mcq = 1;
    tq_push(&w->mcq, t);
    w->nmcq++;
    if (!w->flush_armed) {
        w->flush_armed = 1;
        uv_timer_start(&w->t_flush, on_flush, MC_BATCH_MS, 0);
    } else if (w->nmcq == MC_BATCH_MAX) {
        uv_timer_start(&w->t_flush, on_flush, 0, 0);
    }
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

/* Applies an update; re-creates a record that went missing (a store
 * reset under us) so an outcome is never dropped. */
static int
mc_apply(struct worker *w, struct task *t, const struct mc_update *u,
         struct herr *e)
{
    int rc = mc_update(w->mc, u, e);
    if (rc == HERR_NOTFOUND) {
        rc = mc_insert_job(w, t, 0, NULL, e);
        if (rc == 0 || rc == HERR_EXISTS)
            rc = mc_update(w->mc, u, e);
    }
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
}

static int
mc_do_step(struct worker *w, struct task *t, enum mc_step step, struct herr *e)
{
    struct mc_update u;
    enum mc_status existing;
    int rc;
    switch (step) {
    case MCW_SCHEDULE:
        rc = mc_insert_job(w, t, t->job->send_at_ms, &existing, e);
        return rc == HERR_EXISTS ? 0 : rc;
    case MCW_START:
        t->dup_sent = 0;
        rc = mc_insert_job(w, t, 0, &existing, e);
        if (rc == HERR_EXISTS && existing == MC_SENT) {
            t->dup_sent = 1;
            return 0;
        }
        if (rc && rc != HERR_EXISTS)
            return rc;
        if (rc == HERR_EXISTS) {
            /* a retry or a replay: it is queued again */
            mc_update_init(&u, t->job->id, MC_QUEUED);
            return mc_update(w->mc, &u, e);
        }
        return 0;
    case MCW_SENDING:
        mc_update_init(&u, t->job->id, MC_SENDING);
        set_route_fields(t, &u);
        u.attempts_add = 1;
        u.next_attempt_at = 0;
        return mc_apply(w, t, &u, e);
    case MCW_LEDGER_SENT:
        mc_update_init(&u, t->job->id, MC_SENT);
        rc = mc_update(w->mc, &u, e);
        return rc == HERR_NOTFOUND ? 0 : rc;
    case MCW_SENT:
        mc_update_init(&u, t->job->id, MC_SENT);
        u.attempts_add = !t->attempt_recorded && t->has_slot_ever;
        set_route_fields(t, &u);
        u.sent_at = clock_now_ms();
        u.next_attempt_at = 0;
        u.smtp_reply = t->reply ? t->reply : "";
        u.recipients_json = t->rcpt_json;
        u.last_error = t->error ? t->error : "";
        return mc_apply(w, t, &u, e);
    case MCW_DEFERRED:
        mc_update_init(&u, t->job->id, MC_DEFERRED);
        u.attempts_add = !t->attempt_recorded && t->has_slot_ever;
        set_route_fields(t, &u);
        u.next_attempt_at = t->next_at;
        u.last_error = t->error;
        u.smtp_reply = t->reply;
        u.recipients_json = t->rcpt_json;
        return mc_apply(w, t, &u, e);
    case MCW_FAILED:
        mc_update_init(&u, t->job->id, MC_FAILED);
        u.attempts_add = !t->attempt_recorded && t->has_slot_ever;
        set_route_fields(t, &u);
        u.next_attempt_at = 0;
        u.last_error = t->error;
        u.smtp_reply = t->reply;
        u.recipients_json = t->rcpt_json;
        return mc_apply(w, t, &u, e);
    case MCW_NONE:
        break;
    }
    return 0;
}

static void after_mc(struct task *t, enum mc_step step);
static void close_all(struct worker *w);

/* On the thread pool: one transaction for the whole batch. */
static void
flush_work(uv_work_t *req)
{
    struct worker *w = req->data;
    uint64_t t0 = uv_hrtime();
    memset(&w->fb_err, 0, sizeof w->fb_err);
    int rc = mc_batch_begin(w->mc, &w->fb_err);
    for (size_t i = 0; rc == 0 && i < w->fb_n; i++)
        rc = mc_do_step(w, w->fb_task[i], w->fb_step[i], &w->fb_err);
    if (rc == 0)
        rc = mc_batch_commit(w->mc, &w->fb_err);
    else
        mc_batch_rollback(w->mc);
    w->fb_rc = rc;
    w->fb_us = (uv_hrtime() - t0) / 1000;
}

static void
arm_flush(struct worker *w, uint64_t ms)
{
    w->flush_armed = 1;
    uv_timer_start(&w->t_flush, on_flush, ms, 0);
}

/* Tasks that share one Redis call (leaving the processing list, or the
 * ledger's "sent"). Listed on the worker so a close can free them. */
struct finish_batch {
    struct worker *w;
    struct finish_batch *next, *prev; /* w->batches: freed at close */
    size_t n;
    struct task *t[];
};

static struct finish_batch *
batch_new(struct worker *w, struct task **tasks, size_t n)
{
    struct finish_batch *b = xmalloc(sizeof *b + n * sizeof b->t[0]);
    b->n = n;
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
            log_job(LOG_WARN, tid(t), torg(t), t->attempt,
                    "accepted under a claim that was no longer current: the "
                    "job had been re-taken (this worker's heartbeat lapsed), "
                    "so it may have been delivered twice",
                    NULL);
        }
    }
    for (size_t i = 0; i < b->n; i++)
        window_end(b->t[i]);
    free(b);
}

/* After the poll phase: one ledger call for every 250 of this turn. */
static void
on_check(uv_check_t *h)
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

static void
mark_sent_later(struct task *t)
{
    struct worker *w = t->w;
    if (w->nmark == w->capmark) {
        w->capmark = w->capmark ? w->capmark * 2 : 64;
        w->mark = xrealloc(w->mark, w->capmark * sizeof *w->mark);
    }
    w->mark[w->nmark++] = t;
}

static void
on_finish_many(void *ud, redisReply *r)
{
    struct finish_batch *b = ud;
    batch_unlink(b);
    if (r->type == REDIS_REPLY_ERROR)
        log_msg(LOG_ERROR,
                "redis refused to finish delivered jobs; they stay in the "
                "processing list",
                "error", r->str, NULL);
    for (size_t i = 0; i < b->n; i++)
        task_free(b->t[i]);
    free(b);
}

/* The batch's delivered jobs leave the processing list in one call. */
static void
finish_done_list(struct worker *w)
{
    size_t n = w->ndone;
    w->ndone = 0;
    if (n == 0)
        return;
    struct finish_batch *b = batch_new(w, w->done_list, n);
    const char **raws = xmalloc(n * sizeof *raws);
    size_t *lens = xmalloc(n * sizeof *lens);
    for (size_t i = 0; i < n; i++) {
        raws[i] = b->t[i]->raw;
        lens[i] = b->t[i]->rawlen;
    }
    queue_finish_many(w->q, raws, lens, n, on_finish_many, b);
    free(raws);
    free(lens);
}

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
        close_all(w);
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
    size_t n = w->fb_n;
    w->fb_n = 0;
    w->done_list = xrealloc(w->done_list, (n ? n : 1) * sizeof *w->done_list);
    w->ndone = 0;
    for (size_t i = 0; i < n; i++)
        after_mc(w->fb_task[i], w->fb_step[i]);
    finish_done_list(w);
    if (w->mcq.head && !w->flush_armed)
        arm_flush(w, w->nmcq >= MC_BATCH_MAX ? 0 : MC_BATCH_MS);
    if (w->stopping)
        maybe_finish_stop(w);
}

static void
on_flush(uv_timer_t *timer)
{
    struct worker *w = timer->data;
    w->flush_armed = 0;
    if (w->mcq.head == NULL || w->flushing)
        return; /* flush_done re-arms */
    if (w->fb_cap < w->nmcq) {
        w->fb_cap = w->nmcq * 2;
        w->fb_task = xrealloc(w->fb_task, w->fb_cap * sizeof *w->fb_task);
        w->fb_step = xrealloc(w->fb_step, w->fb_cap * sizeof *w->fb_step);
    }
    struct task *t;
    w->fb_n = 0;
    while ((t = tq_pop(&w->mcq)) != NULL) {
        t->in_mcq = 0;
        w->fb_task[w->fb_n] = t;
        w->fb_step[w->fb_n] = t->step;
        w->fb_n++;
    }
    w->nmcq = 0;
    w->flushing = 1;
    w->flush_work.data = w;
    if (uv_queue_work(w->loop, &w->flush_work, flush_work, flush_done) != 0)
        abort(); /* only fails for a NULL callback */
}

/* ---- outcome helpers ---- */

static int
was_accepted(const struct task *t, const char *email)
{
    for (size_t i = 0; i < t->nprev_acc; i++)
        if (strcasecmp(t->prev_acc[i], email) == 0)
            return 1;
    return 0;
}

static char *
rcpt_json(const struct task *t, const struct mail_result *r)
{
    const struct job *j = t->job;
    json_t *a = json_array();
    const struct {
        const struct job_addr *v;
        size_t n;
        const char *kind;
    } lists[3] = {
        {j->to, j->nto, "to"}, {j->cc, j->ncc, "cc"}, {j->bcc, j->nbcc, "bcc"}};
    for (int l = 0; l < 3; l++) {
        for (size_t i = 0; i < lists[l].n; i++) {
            const char *email = lists[l].v[i].email;
            json_t *o = json_object();
            json_object_set_new(o, "email", json_string(email));
            json_object_set_new(o, "kind", json_string(lists[l].kind));
            const char *status = "pending";
            const char *reply = NULL;
            if (was_accepted(t, email)) {
                status = "accepted";
                reply = "accepted in an earlier attempt";
            } else if (r) {
                /* the envelope holds each address once */
                for (size_t k = 0; k < t->nrcpt; k++) {
                    if (strcasecmp(t->rcpt[k], email) != 0)
                        continue;
                    const struct mail_rcpt_result *rr = &r->rcpt[k];
                    if (rr->code >= 500)
                        status = "refused";
                    else if (rr->code >= 400)
                        status = "deferred"; /* retried, alone if need be */
                    else if (r->cls == MAIL_OK)
                        status = "accepted";
                    else if (r->cls == MAIL_PERM)
                        status = "failed";
                    else
                        status = "deferred";
                    if (rr->code)
                        reply = rr->reply;
                    break;
                }
            }
            json_object_set_new(o, "status", json_string(status));
            if (reply)
                json_object_set_new(o, "reply", json_string(reply));
            json_array_append_new(a, o);
        }
    }
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    char *out = xstrdup(s ? s : "[]");
    free(s);
    return out;
}

static int64_t
backoff_ms(const struct settings *s, int attempt)
{
    double cap = (double)s->retry_cap_s * 1000.0;
    double d = (double)s->retry_base_s * 1000.0;
    for (int i = 1; i < attempt && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    uint32_t r;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        r = (uint32_t)rand();
    int64_t ms = (int64_t)(d * ((double)r / 4294967296.0)); /* full jitter */
    return ms < 1000 ? 1000 : ms;
}

static void
to_dead(struct task *t)
{
    char *entry = dead_entry_new(t->raw, t->rawlen, t->dead_reason,
                                 t->dead_field ? t->dead_field : "", t->error,
                                 tid(t), clock_now_ms());
    queue_finish_dead(t->w->q, t->raw, t->rawlen, entry, tid(t), on_final_reply,
                      t);
    free(entry);
}

static void
fail_task(struct task *t, const char *reason, const char *error)
{
    t->dead_reason = reason;
    free(t->error);
    t->error = xstrdup(error);
    log_job(LOG_WARN, tid(t), torg(t), t->attempt, "job failed", "reason",
            reason, "error", error, NULL);
    task_release_slot(t);
    mc_queue(t, MCW_FAILED);
}

/* Transient failure: retry later (not before not_before_ms, when the
 * server named a time), or fail with `reason` ("expired", "auth") when
 * out of attempts or age. */
static void
defer_or_expire_at(struct task *t, const char *error, int64_t not_before_ms,
                   const char *reason)
{
    const struct settings *s = t->w->s;
    int64_t now = clock_now_ms();
    free(t->error);
    t->error = xstrdup(error);
    int64_t delay = backoff_ms(s, t->attempt);
    if (now + delay < not_before_ms)
        delay = not_before_ms - now;
    int64_t age = now - t->first_at;
    if (t->attempt >= s->retry_max_attempts ||
        age + delay > s->retry_max_age_s * 1000) {
        char *why = xasprintf("gave up after %d attempts over %llds: %s",
                              t->attempt, (long long)(age / 1000), error);
        fail_task(t, reason, why);
        free(why);
        return;
    }
    t->next_at = now + delay;
    char when[CLOCK_RFC3339_LEN];
    clock_rfc3339(t->next_at, when);
    log_job(LOG_WARN, tid(t), torg(t), t->attempt, "delivery deferred", "error",
            error, "next_attempt_at", when, NULL);
    task_release_slot(t);
    mc_queue(t, MCW_DEFERRED);
}

static void
defer_or_expire(struct task *t, const char *error)
{
    defer_or_expire_at(t, error, 0, "expired");
}

/* The job waits for its sender (a quota window, a pause, a held scheme)
 * until due_ms: deferred, never failed for it. `attempted`: a delivery
 * attempt was made (the sender's throttle reply); otherwise the claim's
 * attempt is taken back. */
static void
wait_for_sender(struct task *t, int64_t due_ms, const char *error,
                const char *sender, int attempted)
{
    struct worker *w = t->w;
    int64_t now = clock_now_ms();
    free(t->error);
    t->error = xstrdup(error);
    t->next_at = due_ms;
    t->uncount = !attempted;
    char when[CLOCK_RFC3339_LEN];
    clock_rfc3339(due_ms, when);
    log_job(LOG_WARN, tid(t), torg(t), t->attempt, "waiting for its sender",
            "sender", sender, "error", error, "next_attempt_at", when, NULL);
    quota_drop(t);
    task_release_slot(t);
    if (sender && *sender)
        senders_wait(w->senders, sender, t->job->id, due_ms, now);
    mc_queue(t, MCW_DEFERRED);
}

static uint32_t
rand32(void)
{
    uint32_t r;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        r = (uint32_t)rand();
    return r;
}

/* ---- sending ---- */

/* The duplicate window of one task ends: its "sent" is in Redis. */
static void
window_end(struct task *t)
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

static void
log_window(const struct worker *w)
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

/* Accepted for some recipients, refused for a while by others (4xx at
 * RCPT): the ledger remembers who has it — at once, like "sent" — and
 * the job is retried for the others only. */
static void
partial(struct task *t, const struct mail_result *r, size_t refused)
{
    struct buf acc;
    buf_init(&acc, 0);
    for (size_t i = 0; i < r->nrcpt; i++) {
        if (r->rcpt[i].code >= 400)
            continue;
        if (acc.len)
            buf_append(&acc, "\n", 1);
        buf_append(&acc, t->rcpt[i], strlen(t->rcpt[i]));
    }
    buf_append(&acc, "", 1);
    queue_mark_partial(t->w->q, t->job->id, acc.p, NULL, NULL);
    t->t250 = 0;
    t->quota_n = (int)refused < t->quota_n ? (int)refused : t->quota_n;
    quota_drop(t);
    const char *worst = "";
    for (size_t i = 0; i < r->nrcpt; i++)
        if (r->rcpt[i].code >= 400 && r->rcpt[i].code < 500)
            worst = r->rcpt[i].reply;
    char *e = xasprintf("accepted for %zu of %zu recipients; the others are "
                        "retried: %s",
                        r->nrcpt - refused, r->nrcpt, worst);
    log_job(LOG_WARN, tid(t), torg(t), t->attempt,
            "delivered to some recipients; retrying the others", "accepted",
            acc.p, "smtp_reply", worst, NULL);
    buf_free(&acc);
    defer_or_expire(t, e);
    free(e);
}

static void
on_mail_done(struct mail_req *req, const struct mail_result *r)
{
    struct task *t = req->ud;
    struct worker *w = t->w;
    if (t->route.path == ROUTE_SCHEME) {
        /* A refused login marks the scheme first, then the gate wakes
         * the jobs that waited on these credentials: they route again
         * and see it. */
        if (r->auth_failed)
            schemes_mark_failed(w->schemes, t->route.scheme_field, r->reply);
        logingate_result(w->gate, t->route.scheme_field, t->route.scheme_fp, t,
                         r->auth_ok, r->auth_failed);
    }
    if (r->cls == MAIL_OK && t->route.imap_url)
        imapcopy_append(t->w->imap, tid(t), torg(t), t->route.imap_url,
                        t->route.user, t->route.password, t->route.sent_folder,
                        t->msg, t->msglen);
    free(t->msg); /* a retry builds it again */
    t->msg = NULL;
    free(t->reply);
    t->reply = xstrdup(r->reply);
    free(t->rcpt_json);
    t->rcpt_json = rcpt_json(t, r);
    if (r->cls == MAIL_OK) {
        /* First, before anything else: the ledger says "sent", so no
         * copy of this job is ever sent again. */
        t->t250 = uv_hrtime();
        size_t refused = 0, later = 0;
        for (size_t i = 0; i < r->nrcpt; i++) {
            if (r->rcpt[i].code >= 400)
                refused++;
            if (r->rcpt[i].code >= 400 && r->rcpt[i].code < 500)
                later++;
        }
        if (later) {
            partial(t, r, refused);
            pump(t->w);
            return;
        }
        mark_sent_later(t);
        /* the counters keep what was accepted */
        t->quota_n = (int)refused < t->quota_n ? (int)refused : t->quota_n;
        quota_drop(t);
        free(t->error);
        t->error = NULL;
        if (refused) {
            t->error =
                xasprintf("%zu of %zu recipients refused", refused, r->nrcpt);
            log_job(LOG_WARN, tid(t), torg(t), t->attempt,
                    "delivered; some recipients refused", "smtp_reply",
                    r->reply, "refused", t->error, NULL);
        } else if (log_enabled(LOG_INFO)) {
            log_job(LOG_INFO, tid(t), torg(t), t->attempt, "delivered", "path",
                    t->route.path_name, "smtp_reply", r->reply, NULL);
        }
        task_release_slot(t);
        mc_queue(t, MCW_SENT);
        pump(t->w);
        return;
    }
    quota_drop(t); /* nothing was accepted */
    if (r->auth_failed && t->route.path == ROUTE_SCHEME) {
        /* The organisation's server refused the scheme's credentials
         * (marked above): route this job again: fallback to the relay,
         * or hold, as the scheme says. */
        log_job(LOG_WARN, tid(t), torg(t), t->attempt,
                "the sending scheme's login was refused; routing again",
                "smtp_reply", r->reply, NULL);
        task_release_slot(t);
        route_clear(&t->route);
        t->routed = 0;
        prepare(t);
        pump(t->w);
        return;
    }
    if (r->auth_failed) {
        /* the relay refused the platform's own credentials */
        char *e = xasprintf("the relay refused HERALD_RELAY_USER's "
                            "credentials: %s",
                            r->reply);
        defer_or_expire_at(t, e, 0, "auth");
        free(e);
        pump(t->w);
        return;
    }
    int64_t now = clock_now_ms();
    struct smtp_class c;
    smtp_classify(r->stage, r->code, r->reply, now, &c);
    switch (c.v) {
    case SMTPV_PAUSE_SENDER: {
        int64_t until = c.pause_until_ms;
        if (until <= now)
            until = senders_next_day(w->senders, &t->route, now);
        const char *sender =
            t->plan.pause_sender[0] ? t->plan.pause_sender : QUOTA_SENDER_RELAY;
        char u[CLOCK_RFC3339_LEN];
        clock_rfc3339(until, u);
        log_job(LOG_WARN, tid(t), torg(t), t->attempt,
                "the provider throttles this sender; pausing it", "sender",
                sender, "until", u, "smtp_reply", r->reply, NULL);
        senders_pause(w->senders, sender, until, c.reason);
        char *e =
            xasprintf("%s; sender %s paused until %s", c.reason, sender, u);
        wait_for_sender(t, until + quota_jitter_ms(QUOTA_MINUTE, rand32()), e,
                        sender, 1);
        free(e);
        break;
    }
    case SMTPV_PERM_MESSAGE:
    case SMTPV_PERM_RCPT:
        fail_task(t, "rejected", r->reply);
        break;
    case SMTPV_OK: /* a 2xx that is not an acceptance: a broken server */
    case SMTPV_RETRY:
        defer_or_expire_at(t, r->reply, c.pause_until_ms, "expired");
        break;
    }
    pump(t->w);
}

static void
start_send(struct task *t)
{
    struct worker *w = t->w;
    t->req.url = t->route.url;
    t->req.tls = t->route.tls;
    t->req.max_conns = t->route.max_conns;
    t->req.tag = t->route.scheme_fp;
    t->req.user = t->route.user;
    t->req.password = t->route.password;
    t->req.mail_from = t->route.envelope_from;
    t->req.rcpt = t->rcpt;
    t->req.nrcpt = t->nrcpt;
    t->req.data = t->msg;
    t->req.len = t->msglen;
    t->req.done = on_mail_done;
    t->req.ud = t;
    if (mailer_send(w->mailer, &t->req) != 0)
        defer_or_expire(t, "could not start an SMTP transaction");
}

/* Envelope recipients: to, cc, bcc, each address once. */
static void
build_envelope(struct task *t)
{
    const struct job *j = t->job;
    size_t n = j->nto + j->ncc + j->nbcc;
    t->rcpt = xcalloc(n, sizeof *t->rcpt);
    t->nrcpt = 0;
    const struct job_addr *lists[3] = {j->to, j->cc, j->bcc};
    size_t counts[3] = {j->nto, j->ncc, j->nbcc};
    for (int l = 0; l < 3; l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            const char *a = lists[l][i].email;
            if (was_accepted(t, a))
                continue; /* not again */
            size_t k;
            for (k = 0; k < t->nrcpt; k++)
                if (strcasecmp(t->rcpt[k], a) == 0)
                    break;
            if (k == t->nrcpt)
                t->rcpt[t->nrcpt++] = a;
        }
    }
}

static void prepare(struct task *t);

/* The scheme's first login is decided: route again (the scheme may be
 * auth_failed now). */
static void
on_gate_wake(void *ud)
{
    struct task *t = ud;
    t->gated = 0;
    quota_drop(t);
    route_clear(&t->route);
    t->routed = 0;
    prepare(t);
}

/* The SPF verdict for the job's from domain: route again with it. */
static void
on_spf(void *ud, int authorised, const char *why)
{
    struct task *t = ud;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    t->spf_known = 1;
    t->spf_ok = authorised;
    free(t->spf_why);
    t->spf_why = xstrdup(why);
    prepare(t);
}

/* Renders the job's template into the parts the job does not carry
 * itself (a job's own subject, text or html win). */
static void
apply_template(struct task *t, const char *json)
{
    struct job *j = t->job;
    struct herr e = {{0}, {0}};
    char why[HERR_FIELD_MAX + HERR_MSG_MAX + 32];
    if (json == NULL) {
        snprintf(why, sizeof why, "template: no template named \"%s\"",
                 j->template_name);
        t->dead_field = "template";
        fail_task(t, "invalid", why);
        return;
    }
    struct tmpl *tp = NULL;
    char *subject = NULL, *text = NULL, *html = NULL;
    int rc = tmpl_parse(json, strlen(json), &tp, &e);
    if (rc == 0)
        rc = tmpl_render(tp, j->data_json, &subject, &text, &html, &e);
    tmpl_free(tp);
    if (rc != 0) {
        char detail[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&e, detail, sizeof detail);
        snprintf(why, sizeof why, "template %s: %s", j->template_name, detail);
        t->dead_field = e.field[0] ? "data" : "template";
        fail_task(t, "invalid", why);
        return;
    }
    if (j->subject == NULL) {
        j->subject = subject;
        subject = NULL;
    }
    if (j->text == NULL && j->html == NULL) {
        j->text = text;
        j->html = html;
        text = html = NULL;
    }
    free(subject);
    free(text);
    free(html);
    t->rendered = 1;
    prepare(t);
}

static struct tmpl_entry *
tcache_find(struct worker *w, const char *name)
{
    for (size_t i = 0; i < w->ntcache; i++)
        if (strcmp(w->tcache[i].name, name) == 0)
            return &w->tcache[i];
    return NULL;
}

static void
tcache_put(struct worker *w, const char *name, const char *json)
{
    struct tmpl_entry *e = tcache_find(w, name);
    if (e == NULL) {
        if (w->ntcache == TMPL_CACHE_MAX) {
            /* full: drop the oldest */
            size_t old = 0;
            for (size_t i = 1; i < w->ntcache; i++)
                if (w->tcache[i].at < w->tcache[old].at)
                    old = i;
            free(w->tcache[old].name);
            free(w->tcache[old].json);
            w->tcache[old] = w->tcache[--w->ntcache];
        }
        e = &w->tcache[w->ntcache++];
        e->name = xstrdup(name);
        e->json = NULL;
    }
    free(e->json);
    e->json = json ? xstrdup(json) : NULL;
    e->at = uv_now(w->loop);
}

static void
on_template(void *ud, redisReply *r)
{
    struct task *t = ud;
    if (r->type == REDIS_REPLY_ERROR) {
        defer_or_expire(t, "could not read the template from Redis");
        return;
    }
    const char *json = r->type == REDIS_REPLY_STRING ? r->str : NULL;
    tcache_put(t->w, t->job->template_name, json);
    apply_template(t, json);
}

static void
fetch_template(struct task *t)
{
    struct worker *w = t->w;
    struct tmpl_entry *e = tcache_find(w, t->job->template_name);
    if (e && uv_now(w->loop) - e->at < TMPL_TTL_MS) {
        apply_template(t, e->json);
        return;
    }
    queue_template_get(w->q, t->job->template_name, on_template, t);
}

/* A held scheme (its login refused, "hold"; or its password cannot be
 * opened here): the job waits on its own clock, without spending
 * attempts, and fails ("auth") only when older than
 * HERALD_RETRY_MAX_AGE_S. */
static void
hold(struct task *t)
{
    const struct settings *s = t->w->s;
    int64_t now = clock_now_ms();
    const char *reason = t->route.hold_auth ? "auth" : "expired";
    if (now - t->first_at > s->retry_max_age_s * 1000) {
        char *why = xasprintf("held for longer than HERALD_RETRY_MAX_AGE_S "
                              "(%llds): %s",
                              (long long)s->retry_max_age_s, t->route.reason);
        fail_task(t, reason, why);
        free(why);
        return;
    }
    char sender[SENDER_MAX] = "";
    if (t->route.scheme_field)
        quota_sender_scheme(sender, sizeof sender, t->route.scheme_field);
    int64_t step = (int64_t)s->retry_base_s * 1000;
    wait_for_sender(t, now + step + (int64_t)(rand32() % (uint32_t)(step + 1)),
                    t->route.reason, sender, 0);
}

static void
on_quota(void *ud, int verdict, int64_t until_ms)
{
    struct task *t = ud;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    struct worker *w = t->w;
    const struct sender_plan *p = &t->plan;
    if (verdict == 0) {
        t->quota_n = (int)t->nrcpt;
        prepare(t);
        return;
    }
    t->quota_asked = 0;
    if (verdict == -2) {
        defer_or_expire(t, "the quota could not be checked in Redis");
        return;
    }
    if (verdict == -1) {
        senders_pause(w->senders, p->pause_sender, until_ms, "paused");
        char *e = xasprintf("sender %s is paused", p->pause_sender);
        wait_for_sender(t, until_ms + quota_jitter_ms(QUOTA_MINUTE, rand32()),
                        e, p->count_sender, 0);
        free(e);
        return;
    }
    int i = verdict - 1;
    if (i >= p->n)
        i = p->n - 1;
    char resets[CLOCK_RFC3339_LEN];
    clock_rfc3339(p->win[i].end_ms, resets);
    char *e = xasprintf("over quota: the %s limit of %lld recipients for %s "
                        "is reached; the window resets at %s",
                        quota_kind_name(p->kind[i]), p->limit[i],
                        p->count_sender, resets);
    wait_for_sender(t, p->win[i].end_ms + quota_jitter_ms(p->kind[i], rand32()),
                    e, p->count_sender, 0);
    free(e);
}

/* Takes this job's recipients from its sender's counters. */
static void
take_quota(struct task *t)
{
    const struct sender_plan *p = &t->plan;
    for (int i = 0; i < p->n; i++) {
        if ((long long)t->nrcpt > p->limit[i]) {
            char *e = xasprintf("the job has %zu recipients; %s allows at "
                                "most %lld per %s, so it can never be sent "
                                "within its quota",
                                t->nrcpt, p->count_sender, p->limit[i],
                                quota_kind_name(p->kind[i]));
            fail_task(t, "quota", e);
            free(e);
            return;
        }
    }
    t->quota_asked = 1;
    senders_take(t->w->senders, p, t->job->id, (int)t->nrcpt, clock_now_ms(),
                 on_quota, t);
}

/* Claimed: resolve the sender and build the bytes, then record
 * "sending" before the transaction starts. */
static void
prepare(struct task *t)
{
    struct worker *w = t->w;
    if (!t->routed) {
        resolver_route(w->resolver, t->job, t->spf_known ? t->spf_ok : -1,
                       t->spf_why, &t->route);
        if (t->route.need_spf) {
            route_clear(&t->route);
            const char *at = strrchr(t->job->from, '@');
            spfcache_check(w->spf, at ? at + 1 : t->job->from, on_spf, t);
            return;
        }
        t->routed = 1;
    }
    if (t->route.hold) {
        hold(t);
        return;
    }
    int64_t now = clock_now_ms();
    if (!t->planned) {
        senders_plan(w->senders, &t->route, t->job->org, now, &t->plan);
        t->planned = 1;
    }
    const char *pause_why = NULL;
    int64_t until =
        senders_paused(w->senders, t->plan.pause_sender, now, &pause_why);
    if (until) {
        char *e = xasprintf("sender %s paused until the provider allows it "
                            "again: %s",
                            t->plan.pause_sender, pause_why);
        wait_for_sender(t, until + quota_jitter_ms(QUOTA_MINUTE, rand32()), e,
                        t->plan.pause_sender, 0);
        free(e);
        return;
    }
    if (t->route.path == ROUTE_SCHEME &&
        !logingate_enter(w->gate, t->route.scheme_field, t->route.scheme_fp,
                         on_gate_wake, t)) {
        t->gated = 1; /* another transaction tries these credentials */
        return;
    }
    if (t->job->template_name && !t->rendered) {
        fetch_template(t);
        return;
    }
    struct mime_opts o = {
        .from = {.name = t->route.from_name, .email = t->route.from_addr},
        .reply_to = t->route.reply_to,
        .msgid_domain = w->msgid_domain,
        .date_ms = clock_now_ms(),
    };
    if (t->rcpt == NULL)
        build_envelope(t);
    if (t->nrcpt == 0) {
        /* every recipient accepted in earlier attempts */
        mark_sent_later(t);
        mc_queue(t, MCW_SENT);
        return;
    }
    if (t->plan.n && !t->quota_asked) {
        take_quota(t);
        return;
    }
    struct herr e;
    free(t->msg);
    t->msg = NULL;
    if (mime_build(t->job, &o, &t->msg, &t->msglen, &e) != 0) {
        char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&e, why, sizeof why);
        fail_task(t, "invalid", why);
        return;
    }
    mc_queue(t, MCW_START);
}

static void claimed(struct task *t, const struct queue_claim *c);

static void
on_claim(void *ud, redisReply *r)
{
    struct task *t = ud;
    struct worker *w = t->w;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        log_job(LOG_ERROR, tid(t), torg(t), 0, "claim failed; retrying",
                "error", r->type == REDIS_REPLY_ERROR ? r->str : "bad reply",
                NULL);
        tq_push(&w->retry, t);
        return;
    }
    struct queue_claim c;
    memset(&c, 0, sizeof c);
    snprintf(c.status, sizeof c.status, "%s", r->element[0]->str);
    c.attempts = r->element[1]->integer;
    c.first_at = r->element[2]->integer;
    if (r->elements >= 5) {
        c.fence = r->element[3]->integer;
        c.partial = r->element[4]->integer != 0;
    }
    claimed(t, &c);
}

/* The recipients that accepted this job in an earlier attempt (the
 * ledger's "accepted"): left out of this one. */
static void
on_accepted(void *ud, redisReply *r)
{
    struct task *t = ud;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        defer_or_expire(t, "could not read the ledger's accepted recipients");
        return;
    }
    if (r->type == REDIS_REPLY_STRING) {
        const char *p = r->str, *end = r->str + r->len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
            if (n) {
                t->prev_acc = xrealloc(t->prev_acc, (t->nprev_acc + 1) *
                                                        sizeof *t->prev_acc);
                t->prev_acc[t->nprev_acc++] = xstrndup(p, n);
            }
            p += n + 1;
        }
    }
    prepare(t);
}

/* What the ledger said of this job's id (see queue_claim). */
static void
claimed(struct task *t, const struct queue_claim *c)
{
    if (strcmp(c->status, "ok") == 0) {
        t->attempt = (int)c->attempts;
        t->first_at = c->first_at;
        t->fence = c->fence;
        if (c->partial) {
            char key[KEYS_MAX];
            keys_ledger(key, sizeof key, queue_prefix(t->w->q), t->job->id);
            const char *argv[3] = {"HGET", key, "accepted"};
            size_t lens[3] = {4, strlen(key), 8};
            queue_command(t->w->q, 3, argv, lens, on_accepted, t);
            return;
        }
        prepare(t);
        return;
    }
    if (strcmp(c->status, "sent") == 0) {
        log_job(LOG_INFO, tid(t), torg(t), 0,
                "duplicate of a delivered job; not sent again", NULL);
        mc_queue(t, MCW_LEDGER_SENT);
    } else {
        log_job(LOG_INFO, tid(t), torg(t), 0,
                "duplicate of a job another worker is sending; dropped", NULL);
        finish(t);
    }
}

/* Continues a task after its Message Center write of `step` committed. */
static void
after_mc(struct task *t, enum mc_step step)
{
    struct worker *w = t->w;
    if (!t->in_mcq)
        t->step = MCW_NONE;
    switch (step) {
    case MCW_SCHEDULE:
        queue_finish_schedule(w->q, t->raw, t->rawlen, t->raw,
                              t->job->send_at_ms, NULL, 0, on_final_reply, t);
        break;
    case MCW_START:
        if (t->dup_sent) {
            log_job(LOG_INFO, tid(t), torg(t), t->attempt,
                    "the message center says this job was delivered; not "
                    "sent again",
                    NULL);
            task_release_slot(t);
            const char *id = t->job->id;
            queue_mark_sent(w->q, &id, &t->fence, 1, NULL, NULL);
            finish(t);
        } else if (w->stopping) {
            /* not started: handed back at the end of the shutdown */
            task_free(t);
        } else {
            tq_push(&w->ready, t);
            pump(w);
        }
        break;
    case MCW_SENDING:
        t->attempt_recorded = 1;
        break;
    case MCW_LEDGER_SENT:
        finish(t);
        break;
    case MCW_SENT:
        t->attempt_recorded = 1;
        /* left with the rest of its batch: see flush_done */
        w->done_list[w->ndone++] = t;
        break;
    case MCW_DEFERRED:
        t->attempt_recorded = 1;
        queue_finish_schedule(w->q, t->raw, t->rawlen, t->raw, t->next_at,
                              t->job->id, t->uncount, on_final_reply, t);
        break;
    case MCW_FAILED:
        t->attempt_recorded = 1;
        to_dead(t);
        break;
    case MCW_NONE:
        break;
    }
}

static void
on_fence(void *ud, redisReply *r)
{
    struct task *t = ud;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        mc_queue(t, MCW_SENDING);
        start_send(t);
        return;
    }
    task_release_slot(t);
    if (r->type == REDIS_REPLY_ERROR) {
        defer_or_expire(t, "could not check the job's claim in Redis");
        return;
    }
    log_job(LOG_WARN, tid(t), torg(t), t->attempt,
            "not sent: this worker's claim is no longer current (its "
            "heartbeat lapsed and another worker re-took the job)",
            NULL);
    finish(t);
}

/* Starts ready tasks while slots are free. */
static void
pump(struct worker *w)
{
    while (!w->stopping && w->slots < w->s->concurrency && w->ready.head) {
        struct task *t = tq_pop(&w->ready);
        t->has_slot = 1;
        t->has_slot_ever = 1;
        w->slots++;
        if (t->fence && !queue_lease_fresh(w->q)) {
            /* our heartbeat lapsed: another worker may have re-taken it */
            queue_fence_check(w->q, t->job->id, t->fence, on_fence, t);
            continue;
        }
        mc_queue(t, MCW_SENDING);
        start_send(t);
    }
}

/* ---- taking ---- */

static struct task *
task_with_id(struct worker *w, const char *id, const struct task *except)
{
    for (struct task *t = w->tasks; t; t = t->next)
        if (t != except && t->job && t->job->id && strcmp(t->job->id, id) == 0)
            return t;
    return NULL;
}

static void
route_task(struct task *t)
{
    struct worker *w = t->w;
    if (task_with_id(w, t->job->id, t)) {
        log_job(LOG_INFO, tid(t), torg(t), 0,
                "duplicate of a job this worker holds; dropped", NULL);
        finish(t);
        return;
    }
    if (t->job->send_at_ms > clock_now_ms() + SEND_AT_SLACK_MS) {
        mc_queue(t, MCW_SCHEDULE);
        return;
    }
    if (t->preclaimed && strcmp(t->pre.id, t->job->id) == 0) {
        claimed(t, &t->pre);
        return;
    }
    queue_claim(w->q, t->job->id, on_claim, t);
}

static void
on_replaced(void *ud, redisReply *r)
{
    (void)r;
    struct task *t = ud;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    route_task(t);
}

static void
invalid_job(struct task *t, const struct herr *e)
{
    char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
    herr_format(e, why, sizeof why);
    /* Name the job and org in the log when the JSON gets that far. */
    const char *id = NULL, *org = NULL;
    json_t *o = json_loadb(t->raw, t->rawlen, 0, NULL);
    if (json_is_object(o)) {
        id = json_string_value(json_object_get(o, "id"));
        org = json_string_value(json_object_get(o, "org"));
    }
    log_job(LOG_WARN, id, org, 0, "invalid job moved to dead", "field",
            e->field, "error", why, NULL);
    char *entry = dead_entry_new(t->raw, t->rawlen, "invalid", e->field, why,
                                 id, clock_now_ms());
    json_decref(o);
    /* A claim the take made for this id is released (ledger "failed"),
     * so a corrected job with the same id can go out; a "sent" or
     * another worker's claim is left alone. */
    int ours = t->preclaimed && strcmp(t->pre.status, "ok") == 0;
    queue_finish_dead(t->w->q, t->raw, t->rawlen, entry,
                      ours ? t->pre.id : NULL, on_final_reply, t);
    free(entry);
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
    t->next = w->tasks;
    if (w->tasks)
        w->tasks->prev = t;
    w->tasks = t;
    w->ntasks++;
    t->first_at = clock_now_ms();
    struct herr e = {{0}, {0}};
    if (job_parse(raw, len, &t->job, &e) != 0) {
        invalid_job(t, &e);
        return;
    }
    if (t->job->id == NULL) {
        /* Give it an id and make the processing list hold that form, so
         * retries and hand-backs keep the same id. */
        job_assign_id(t->job);
        char *canon = job_to_json(t->job);
        queue_replace(w->q, t->raw, t->rawlen, canon, on_replaced, t);
        free(t->raw);
        t->raw = canon;
        t->rawlen = strlen(canon);
        return;
    }
    route_task(t);
}

static size_t
count_local(void *ud, const char *raw, size_t len)
{
    struct worker *w = ud;
    size_t n = 0;
    for (struct task *t = w->tasks; t; t = t->next)
        if (t->rawlen == len && memcmp(t->raw, raw, len) == 0)
            n++;
    return n;
}

static int
room(void *ud)
{
    struct worker *w = ud;
    if (w->stopping || !schemes_loaded(w->schemes) ||
        !senders_loaded(w->senders))
        return 0; /* no job is routed before the schemes are known */
    /* Eight times the SMTP slots: jobs being claimed and recorded ahead
     * of a free slot, and jobs whose outcome is being recorded (a batch
     * commit, then leaving the processing list), must not starve the
     * SMTP connections. A task is a few KB. */
    long r = 8 * w->s->concurrency - (long)w->ntasks;
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
        log_msg(LOG_DEBUG, "pipeline", "tasks", a, "smtp", b, "ready", c,
                "mc_pending", d, "redis_pending", e, "mc_flushing",
                w->flushing ? "yes" : "no", "flush_armed",
                w->flush_armed ? "yes" : "no", NULL);
    }
    struct task *t;
    while ((t = tq_pop(&w->retry)) != NULL) {
        if (w->stopping)
            task_free(t);
        else
            queue_claim(w->q, t->job->id, on_claim, t);
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
    log_window(w);
    if (w->mc)
        mc_close(w->mc);
    resolver_free(w->resolver);
    schemes_free(w->schemes);
    senders_free(w->senders);
    logingate_free(w->gate);
    free(w->fb_task);
    free(w->fb_step);
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
close_all(struct worker *w)
{
    if (w->closing)
        return;
    if (w->flushing) {
        /* the thread pool is writing tasks we are about to free */
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
    w->open_handles = 8; /* 3 timers, the check, the queue, the mailer,
                            the SPF cache, the IMAP copier */
    imapcopy_close(w->imap, on_queue_closed, w);
    spfcache_close(w->spf, on_queue_closed, w);
    uv_close((uv_handle_t *)&w->t_check, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_flush, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_retry, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_grace, on_handle_closed);
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
    close_all(w);
}

static void
maybe_finish_stop(struct worker *w)
{
    if (!w->stopping || w->closing || w->handback_done == -1)
        return;
    if (w->ntasks > 0 || w->mcq.head || w->flushing)
        return;
    w->handback_done = -1; /* in progress */
    uv_timer_stop(&w->t_grace);
    queue_handback(w->q, 5000, on_handback, w);
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
    close_all(w);
}

static struct task *
first_gated(struct worker *w)
{
    for (struct task *t = w->tasks; t; t = t->next)
        if (t->gated)
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
    maybe_finish_stop(w);
}

int
worker_new(uv_loop_t *loop, const struct settings *s, const char *id,
           struct worker **out, struct herr *e)
{
    struct worker *w = xcalloc(1, sizeof *w);
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
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    struct mailer_opts mo = {
        .connect_timeout_s = s->connect_timeout_s,
        .step_timeout_s = s->smtp_timeout_s,
        .ca_file = s->ca_file,
        .helo = host,
        .max_conns = s->concurrency,
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
    uv_timer_init(loop, &w->t_flush);
    uv_timer_init(loop, &w->t_retry);
    uv_timer_init(loop, &w->t_grace);
    uv_check_init(loop, &w->t_check);
    w->t_check.data = w;
    uv_check_start(&w->t_check, on_check);
    w->t_flush.data = w->t_retry.data = w->t_grace.data = w;
    uv_timer_start(&w->t_retry, on_retry_timer, RETRY_CLAIM_MS, RETRY_CLAIM_MS);
    struct queue_events ev = {
        .job = on_job,
        .count_local = count_local,
        .room = room,
        .ready = on_ready,
        .ud = w,
    };
    queue_new(loop, s, id, &ev, &w->q);
    schemes_set_queue(w->schemes, w->q);
    w->senders = senders_new(w->q);
    w->gate = logingate_new(
        w->q, id, (s->connect_timeout_s + 4 * s->smtp_timeout_s) * 1000);
    if (imapcopy_new(loop, s, &w->imap) != 0) {
        log_msg(LOG_FATAL, "cannot start libcurl", NULL);
        exit(1);
    }
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
