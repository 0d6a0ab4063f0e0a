/*
 * task — what worker.c, record.c and outcome.c share: one job's state in
 * this worker (struct task) and the worker's (struct worker). Private to
 * worker/; the public face is worker.h.
 *
 *   worker.c   taking, claiming, routing, templates, the pipeline, life
 *              cycle
 *   record.c   Message Center writes batched on the thread pool, the
 *              ledger's "sent" per loop turn, leaving the processing list
 *   outcome.c  the SMTP transaction and what its reply means: sent,
 *              partial, retry, pause the sender, fail; quotas and holds
 */
#ifndef HERALD_TASK_H
#define HERALD_TASK_H

#include "bigjob.h"
#include "imapcopy.h"
#include "logingate.h"
#include "purge.h"
#include "mailer.h"
#include "mc.h"
#include "queue.h"
#include "resolver.h"
#include "schemes.h"
#include "senders.h"
#include "settings.h"
#include "spfcache.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define MC_RETRY_MS 1000
/* Message Center writes wait this long (or for MC_BATCH_MAX of them) to
 * share one transaction: one commit per message costs a dozen page
 * writes, one commit per batch a few per message. */
#define MC_BATCH_MS 4
#define MC_BATCH_MAX 256
/* A "sending" step is written once its attempt has run this long: most
 * transactions end sooner, and their outcome's write (which counts the
 * attempt) replaces it, sparing the store a write per message. A record
 * shows "sending" for a transaction that takes longer. */
#define MC_SENDING_MS 500
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
    int claimed; /* the ledger says this worker holds the id (fence) */
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
    uint64_t mcq_at;       /* uv_now() when it joined mcq */
    int rendered;          /* the template (if any) has been applied: the record
                              gets the rendered content with every write */
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
    int quota_n;     /* recipients this attempt took */
    int quota_keep;  /* of those, accepted: kept when settled */
    int uncount;     /* deferred without an attempt: the ledger takes it back */
    long long fence; /* the ledger claim's token */
    int fence_checked; /* Redis just said the claim is current */
    char **prev_acc;   /* recipients that accepted in an earlier attempt */
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
    size_t ngated;      /* tasks with `gated` set */
    size_t held_bytes;  /* raw bytes of every task: HERALD_MAX_INFLIGHT_BYTES */
    struct bigjob *big; /* jobs over the size limit, moved to dead */
    struct purge *purge; /* the Message Center's retention */
    int slots; /* tasks in the mailer: waiting for or in a transaction */
    struct tq ready, mcq, retry;
    size_t nmcq;
    /* The batch being written on libuv's thread pool. Its tasks are
     * parked (or sending, for a "sending" step, which only reads what
     * does not change while a transaction runs). */
    uv_work_t flush_work;
    int flushing, close_after_flush;
    int nparsing; /* large jobs being parsed on the thread pool */
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
    uint64_t flush_due; /* uv_now() when t_flush fires, if armed */
    int stopping, grace_over, closing, handback_done;
    int exit_code;
    int open_handles;
    void (*done)(void *, int);
    void *done_ud;
};

/* Tasks that share one Redis call (leaving the processing list, or the
 * ledger's "sent"). Listed on the worker so a close can free them. */
struct finish_batch {
    struct worker *w;
    struct finish_batch *next, *prev; /* w->batches: freed at close */
    size_t n;
    struct task *t[];
};

/* ---- small queues ---- */

static inline void
tq_push(struct tq *q, struct task *t)
{
    t->qnext = NULL;
    if (q->tail)
        q->tail->qnext = t;
    else
        q->head = t;
    q->tail = t;
}

static inline struct task *
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

/* ---- worker.c: the task's life ---- */
const char *worker_tid(const struct task *t);
const char *worker_torg(const struct task *t);
void worker_release_slot(struct task *t);
/* Recipients taken and not accepted go back to the sender's counters. */
void worker_quota_drop(struct task *t);
void worker_task_free(struct task *t);
/* A reply that only ends the task (finish / dead / schedule). */
void worker_on_final_reply(void *ud, redisReply *r);
void worker_finish(struct task *t);
/* Claimed: render the template, resolve the sender and build the bytes,
 * then record "queued" before the transaction starts. Re-entered after
 * each asynchronous step. */
void worker_prepare(struct task *t);
/* The id the ledger should hear about for this task: its id when this
 * worker claimed it, else NULL (never touch another worker's claim). */
const char *worker_ledger_id(const struct task *t);
/* Hands the ready tasks to the mailer (worker.c). */
void worker_pump(struct worker *w);
/* Asks Redis whether t's claim is still current, then sends or drops. */
void worker_check_claim(struct task *t);
/* Continues a task after its Message Center write of `step` committed. */
void worker_after_mc(struct task *t, enum mc_step step);
void worker_close_all(struct worker *w);
void worker_maybe_finish_stop(struct worker *w);

/* ---- record.c: the Message Center batch, the ledger's "sent", leaving
 * the processing list ---- */
/* Queues the task's record write of `step` (batched, on the thread pool);
 * worker_after_mc() continues it once committed. */
void record_queue(struct task *t, enum mc_step step);
/* Queues the ledger's "sent" for this loop turn (written at the check). */
void record_mark_sent_later(struct task *t);
void record_on_check(uv_check_t *h);
void record_on_flush(uv_timer_t *timer);
/* The duplicate window of one task ends: its "sent" is in Redis. */
void record_window_end(struct task *t);
void record_log_window(const struct worker *w);

/* ---- outcome.c: sending and what a reply means ---- */
/* Envelope recipients: to, cc, bcc, each address once, without those that
 * accepted in an earlier attempt. */
void outcome_build_envelope(struct task *t);
void outcome_start_send(struct task *t);
void outcome_fail_task(struct task *t, const char *reason, const char *error);
/* Moves the job to dead with t->dead_reason (after its record says so). */
void outcome_to_dead(struct task *t);
/* The job waits for its sender (a quota window, a pause, a held scheme)
 * until due_ms: deferred, never failed for it. `attempted`: a delivery
 * attempt was made; otherwise the claim's attempt is taken back. */
void outcome_wait_for_sender(struct task *t, int64_t due_ms, const char *error,
                             const char *sender, int attempted);
uint32_t outcome_rand32(void);
/* The delay before retry `attempt` (1 = after the first): base_s doubled
 * per attempt up to cap_s, times r / 2^32 ("full jitter": r uniform makes
 * the delay uniform below that bound), at least one second. Pure: the
 * caller draws r (rand32), tests choose it. */
int64_t outcome_backoff_ms(long base_s, long cap_s, int attempt, uint32_t r);
/* Transient failure: retry later, or fail ("expired") when out of
 * attempts or age. */
void outcome_defer_or_expire(struct task *t, const char *error);
/* A held scheme: wait on its own clock (see docs/quotas.md). */
void outcome_hold(struct task *t);
/* Waits for the sender's pause, or takes this job's recipients from its
 * quota (then worker_prepare() goes on), or defers it to the next window. */
void outcome_take_quota(struct task *t);

#endif
