/*
 * task — one job's state in this worker (struct task), the worker's
 * (struct worker), and the modules of worker/ that share them. Private
 * to worker/; the public face is worker.h. Calls go one way:
 *
 *   worker.c   taking (parse, room, the claim retry tick) and the life
 *              cycle (stop, hand back, close); hands each parsed task to
 *              task.c
 *   task.c     one job's life as one state machine (enum task_state):
 *              every wait is on one leaf, whose callback brings the task
 *              back; task_enter() is the only place its state changes
 *   record.c   leaf: Message Center writes batched on the thread pool,
 *              the ledger's "sent" per loop turn, leaving the processing
 *              list; it reports through struct task_hooks, never by
 *              calling task.c or worker.c
 *   outcome.c  leaf, pure: recipients' outcomes, the envelope, backoff
 *
 * The other leaves (queue.h, the mailer, resolver.h, spfcache.h,
 * senders.h, logingate.h) take a callback per request.
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
 * writes, one commit per batch a few per message. A batch takes at most
 * MC_BATCH_MAX (the rest goes in the next, at once): a write queued
 * behind a burst waits for a batch or two, not for the burst (make
 * bench-fair), and the records built for a batch stay few. */
#define MC_BATCH_MS 4
#define MC_BATCH_MAX 128
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

/*
 * Where a task is. Each state but TASK_DONE waits for one thing; the
 * callback of that thing moves the task on through task_enter(), which
 * refuses (logs, and counts in task_illegal) a move the table of task.c
 * does not list. A task holds one of the worker's HERALD_CONCURRENCY
 * slots exactly while TASK_FENCING or TASK_SENDING.
 */
enum task_state {
    TASK_NEW,         /* taken; its JSON read (large: on the thread pool) */
    TASK_RENAMING,    /* given an id: its processing-list entry replaced */
    TASK_CLAIMING,    /* the ledger's claim asked */
    TASK_CLAIM_RETRY, /* the claim failed: asked again at the retry tick */
    TASK_READING,     /* the ledger's list of recipients already served */
    TASK_RENDERING,   /* its template asked from Redis */
    TASK_RESOLVING,   /* the SPF verdict for its from domain asked */
    TASK_GATED,       /* waiting for its scheme's first login */
    TASK_QUOTA,       /* its recipients asked from its sender's quota */
    TASK_RECORDING,   /* a Message Center write it waits for (t->step) */
    TASK_READY,       /* recorded "queued": waiting to be given a slot */
    TASK_FENCING,     /* holds a slot; its claim checked again in Redis */
    TASK_SENDING,     /* holds a slot: in the mailer (waiting for a
                         connection to its server, or in a transaction) */
    TASK_PROBING,     /* its sender's throttle probed (senders.h) */
    TASK_FINISHING,   /* its last Redis step: leave the processing list,
                         be scheduled, or go to dead */
    TASK_DONE,        /* freed */
};
#define TASK_NSTATES (TASK_DONE + 1)

struct task {
    struct worker *w;
    enum task_state state;
    struct task *next, *prev; /* every task */
    struct task *qnext;       /* in one of: ready, mc, retry queues */
    char *raw;                /* the exact processing-list entry */
    size_t rawlen;
    struct job *job;
    uint64_t idhash;     /* util_hash of job->id (task_with_id) */
    struct task *idnext; /* in w->idtab's chain, once linked */
    int idlinked;
    int attempt;
    int claimed; /* the ledger says this worker holds the id (fence) */
    int64_t first_at;
    int has_slot_ever;    /* was given a slot: an attempt was made */
    uint64_t state_since; /* uv_hrtime() at its last change (debug log) */
    int abandoned;        /* shutdown: free on the next callback, do nothing */
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
    int in_done;           /* its step just committed: not in the next
                              batch (record.c, flush_done) */
    uint64_t mcq_at;       /* uv_now() when it joined mcq */
    int rendered;          /* the template (if any) has been applied: the record
                              gets the rendered content with every write */
    int spf_known, spf_ok; /* the SPF verdict for the from domain */
    char *spf_why;
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

/* What record.c reports, set by worker.c (worker_new). */
struct task_hooks {
    /* a Message Center write of `step` committed */
    void (*recorded)(struct task *t, enum mc_step step);
    /* a delivered job left the processing list: the task is over */
    void (*left)(struct task *t);
    /* a batch is done or a task freed while stopping: the life cycle
     * may go on (close, hand back) */
    void (*idle)(struct worker *w);
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
    /* A second handle on the store for its checkpoints (SQLite), run on
     * the thread pool every CKPT_MS beside the writes, which then never
     * wait for one; NULL when the store has none. */
    struct mc *mc_ckpt;
    uv_timer_t t_ckpt;
    uv_work_t ckpt_work;
    int ckpt_running, ckpt_rc, ckpt_failing;
    struct herr ckpt_err;
    struct task *tasks;
    size_t ntasks;
    /* The tasks with a job id, by idhash (chained; idmask + 1 buckets,
     * made at the first): a take's every job is looked for among them. */
    struct task **idtab;
    size_t idmask;
    struct task_hooks hooks;
    size_t ngated;       /* tasks in TASK_GATED */
    size_t task_illegal; /* moves task_enter refused (a bug: logged) */
    size_t held_bytes;  /* raw bytes of every task: HERALD_MAX_INFLIGHT_BYTES */
    struct bigjob *big; /* jobs over the size limit, moved to dead */
    struct purge *purge; /* the Message Center's retention */
    int slots;           /* tasks holding a slot: TASK_FENCING, TASK_SENDING */
    struct tq ready, mcq, retry;
    size_t nmcq;
    /* The batch being written on libuv's thread pool. Its tasks are
     * parked (or sending, for a "sending" step, which only reads what
     * does not change while a transaction runs). The next batch starts
     * before the last one's tasks go on (fd_*: those, while they do),
     * without them: a task's step in flight never meets the loop's
     * handling of its previous one. Both hold MC_BATCH_MAX. */
    uv_work_t flush_work;
    int flushing, close_after_flush;
    int nparsing; /* large jobs being parsed on the thread pool */
    struct task **fb_task, **fd_task;
    enum mc_step *fb_step, *fd_step;
    size_t fb_n;
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
    /* With the debug log: time tasks spent in each state since the last
     * "pipeline" line (ns) and how many left it (worker.c prints both). */
    int trace_states;
    uint64_t state_ns[TASK_NSTATES], state_n[TASK_NSTATES];
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
    size_t pending; /* replies still to come (one per task or one) */
    int failed;     /* one of them was an error (logged once) */
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

static inline const char *
task_id(const struct task *t)
{
    return t->job && t->job->id ? t->job->id : "-";
}

static inline const char *
task_org(const struct task *t)
{
    return t->job ? t->job->org : NULL;
}

/* ---- task.c: the state machine ---- */
const char *task_state_name(enum task_state s);
/* Whether the table lists the move (pure; tests/unit/test_w_task.c). */
int task_transition_ok(enum task_state from, enum task_state to);
/* The one function that changes t->state; keeps w->slots and w->ngated.
 * A move the table does not list is logged at error level and counted
 * (w->task_illegal), and made all the same: a job is never stranded by
 * a bug in the table. */
void task_enter(struct task *t, enum task_state to);
/* A parsed task (worker.c): rc and e say whether the job is valid, `who`
 * what job_parse could read of it; canon: the job with an assigned id
 * (it had none), or NULL. Takes job and canon. */
void task_parsed(struct task *t, int rc, struct job *job, const struct herr *e,
                 const struct job_ident *who, char *canon);
/* Asks the ledger's claim again (TASK_CLAIM_RETRY, at the retry tick). */
void task_claim(struct task *t);
/* The hook record.c calls when a write committed (task_hooks.recorded). */
void task_recorded(struct task *t, enum mc_step step);
/* Frees the task (TASK_DONE): its quota taken back, its place given up;
 * the job stays wherever Redis holds it. */
void task_free(struct task *t);

/* ---- record.c: the Message Center batch, the ledger's "sent", leaving
 * the processing list ---- */
/* Queues the task's record write of `step` (batched, on the thread pool);
 * hooks.recorded runs once it committed. */
void record_queue(struct task *t, enum mc_step step);
/* Queues the ledger's "sent" for this loop turn (written at the check). */
void record_mark_sent_later(struct task *t);
void record_on_check(uv_check_t *h);
void record_on_flush(uv_timer_t *timer);
/* Delivered and recorded: leaves the processing list with the rest of
 * its batch, then hooks.left. */
void record_leave(struct task *t);
/* The duplicate window of one task ends: its "sent" is in Redis. */
void record_window_end(struct task *t);
void record_log_window(const struct worker *w);

/* ---- outcome.c: pure, from the task alone ---- */
/* Each recipient's status and reply as JSON for the record (r: the
 * transaction's result, or NULL before any); new string. */
char *outcome_rcpt_json(const struct task *t, const struct mail_result *r);
/* The job failed for good: every recipient still open failed too. */
void outcome_rcpt_final(struct task *t, const char *error);
/* Envelope recipients: to, cc, bcc, each address once, without those that
 * accepted in an earlier attempt. */
void outcome_build_envelope(struct task *t);
uint32_t outcome_rand32(void);
/* The delay before retry `attempt` (1 = after the first): base_s doubled
 * per attempt up to cap_s, times r / 2^32 ("full jitter": r uniform makes
 * the delay uniform below that bound), at least one second. Pure: the
 * caller draws r (rand32), tests choose it. */
int64_t outcome_backoff_ms(long base_s, long cap_s, int attempt, uint32_t r);

#endif
