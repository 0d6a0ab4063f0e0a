/*
 * queue — the worker's Redis side: crash-safe takes, the delivery ledger,
 * finishing jobs, the schedule, heartbeats. hiredis async API on the libuv
 * loop.
 *
 * Connections: one for commands, one per priority lane for blocking takes
 * (BLMOVE), so a blocking take never stalls other traffic and an idle
 * worker wakes at once for a job in any lane. When the lanes have work,
 * takes are batched by a Lua script that honours priority without
 * starving a lane: of every eight jobs the fleet takes (<p>:fair:tick),
 * four are high, three normal and one low first, and what a lane cannot
 * fill goes to the others in priority order.
 *
 * Every job taken moves atomically from <p>:queue:<lane> (or its staging)
 * to this worker's <p>:processing:<id> and leaves it only through one of the
 * queue_finish_* calls. Every operation queued here survives a lost connection:
 * the queue reconnects with backoff, re-adopts jobs in its processing list that
 * it does not know (a take whose reply was lost), then re-sends operations
 * still unanswered. An error reply that means "not now" (BUSY, LOADING,
 * OOM, TRYAGAIN, MASTERDOWN, CLUSTERDOWN: the command did not run) is
 * treated the same way: the operation waits and is re-sent. Reply
 * callbacks therefore always get a real reply (never NULL), exactly once,
 * possibly after a reconnect; an error reply they see is one that
 * re-sending would not cure. Finishing scripts are idempotent (they act
 * only if the job is still in the processing list).
 *
 * Fairness (SPEC §8): a take first stages jobs from the right of each lane
 * into a list per organisation (<p>:queue:<lane>:org:<org>, by the job's
 * "org"; a job whose org cannot be read is staged under the empty name),
 * up to HERALD_FAIR_WINDOW staged per lane and at most max(512, 4 x the
 * take) per take, then takes round-robin over the lane's organisations
 * (the ring <p>:fair:<lane>). So a burst of one organisation, up to the
 * window, does not hold up another's jobs pushed after it: the window is
 * Postfix's active queue (qmgr_message_active_limit), and the backlog past
 * it stays in the lane, where producers, KEDA and `queue stats` see it.
 * Staged jobs belong to no worker: a worker that dies leaves them for the
 * others. An idle worker blocks on the lane (BLMOVE, one job, no staging)
 * and takes again when the block times out, so jobs another worker staged
 * are never left waiting for that worker alone. HERALD_FAIR_WINDOW=0 takes
 * first-in first-out (what was staged before goes first).
 *
 * Memory: a take stops at the worker's byte room (after one job), and a
 * job over JOB_MAX_BYTES never reaches the worker as bytes — neither from
 * a take nor from a resync — only its length does (events.oversize); the
 * queue_big_* calls move it to dead in pieces.
 */
#ifndef HERALD_QUEUE_H
#define HERALD_QUEUE_H

#include "job.h"
#include "rscript.h"
#include "settings.h"

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct queue;

/* `r` is valid only during the call. r->type may be REDIS_REPLY_ERROR. */
typedef void queue_reply_fn(void *ud, redisReply *r);

/* A claim made while taking (see queue_claim for the meaning). */
struct queue_claim {
    char status[8]; /* "ok", "sent", "busy" */
    long long attempts, first_at;
    long long fence;         /* this claim's token ("ok" only) */
    int partial;             /* some recipients accepted earlier ("ok" only) */
    char id[JOB_ID_MAX + 1]; /* the id claimed, as the take read it */
};

struct queue_events {
    /* A job was taken. `raw` (len bytes, NUL-terminated) becomes the
     * callee's; it is the exact processing-list entry. `pre` is the
     * ledger claim the take already made for its id, or NULL when none
     * was made (no readable id, a send_at, or a blocking take): then the
     * worker claims with queue_claim. */
    void (*job)(void *ud, char *raw, size_t len, const struct queue_claim *pre);
    /* A job of `len` bytes, over JOB_MAX_BYTES, was taken: it is in the
     * processing list and was not read. */
    void (*oversize)(void *ud, size_t len);
    /* How many local jobs hold exactly this processing-list entry (raw
     * NULL: how many oversize entries of `len` bytes). */
    size_t (*count_local)(void *ud, const char *raw, size_t len);
    /* How many more jobs the worker can take now, and (in *bytes, at
     * least 1 when jobs > 0) how many more bytes of them. */
    int (*room)(void *ud, size_t *bytes);
    /* Connected (again) and resynchronised. */
    void (*ready)(void *ud);
    void *ud;
};

int queue_new(uv_loop_t *loop, const struct settings *s, const char *worker,
              const struct queue_events *ev, struct queue **out);

/* Room grew: take more if there is work. */
void queue_kick(struct queue *q);

int queue_is_ready(const struct queue *q);

/*
 * Claims job `id` for this worker in the ledger. Reply: array
 * [status, attempts, first_at_ms, fence, partial] with status "ok"
 * (claimed; attempts is this attempt's number, fence the claim's token,
 * partial 1 when some recipients accepted it earlier: read the ledger's
 * "accepted" field), "sent" (already delivered: do not send) or "busy"
 * (another live worker holds it).
 */
void queue_claim(struct queue *q, const char *id, queue_reply_fn *cb, void *ud);

/* Records "accepted by SMTP" for n ids in the ledger, in one call, at
 * once (the write goes out before the loop next waits). fences[i] is the
 * token of the claim that sent ids[i] (0: unknown). Reply: array of the
 * 1-based positions whose claim was stale (the job had been re-taken:
 * another worker may have sent it too); <p>:stats "stale_accepts" counts
 * them. cb may be NULL. */
void queue_mark_sent(struct queue *q, const char *const *ids,
                     const long long *fences, size_t n, queue_reply_fn *cb,
                     void *ud);

/* Records that the recipients in `accepted` ("\n"-separated) accepted
 * job `id`: a later attempt leaves them out. */
void queue_mark_partial(struct queue *q, const char *id, const char *accepted,
                        queue_reply_fn *cb, void *ud);

/* Is this worker's claim `fence` on job `id` still the current one?
 * Reply: integer 1 (yes) or 0 (the job was re-taken). */
void queue_fence_check(struct queue *q, const char *id, long long fence,
                       queue_reply_fn *cb, void *ud);

/* 1 while Redis confirmed a heartbeat of this worker recently enough that
 * nobody can have re-taken its jobs (less than half HERALD_HEARTBEAT_S
 * ago); otherwise a claim should be checked (queue_fence_check) before an
 * SMTP transaction starts. */
int queue_lease_fresh(const struct queue *q);

/* Removes the entry from the processing list (outcome recorded). */
void queue_finish(struct queue *q, const char *raw, size_t len,
                  queue_reply_fn *cb, void *ud);

/* Moves the entry to <p>:dead as `entry`; marks the ledger failed when
 * id is not NULL. */
void queue_finish_dead(struct queue *q, const char *raw, size_t len,
                       const char *entry, const char *id, queue_reply_fn *cb,
                       void *ud);

/* Moves the entry to <p>:scheduled as `member` due at due_ms; marks the
 * ledger deferred when id is not NULL, and takes back the claim's
 * attempt when `uncount` (the job waited for its sender: no attempt). */
void queue_finish_schedule(struct queue *q, const char *raw, size_t len,
                           const char *member, int64_t due_ms, const char *id,
                           int uncount, queue_reply_fn *cb, void *ud);

/* Replaces the entry by `newraw` in the processing list (id assigned). */
void queue_replace(struct queue *q, const char *raw, size_t len,
                   const char *newraw, queue_reply_fn *cb, void *ud);

/* Any command (argv of argc strings with lens), queued and re-sent across
 * reconnects like every operation here. The key names are the caller's:
 * build them with keys.h. */
void queue_command(struct queue *q, int argc, const char **argv,
                   const size_t *lens, queue_reply_fn *cb, void *ud);

/* Runs Redis script `id` (common/rscript.h) by EVALSHA: argv holds its
 * nkeys keys, then its arguments (lens NULL: strlen). Queued and re-sent
 * across reconnects like queue_command; every connect loads every script
 * of the table before anything else, and a NOSCRIPT reply (someone
 * flushed the script cache) reconnects, which loads them again. */
void queue_script(struct queue *q, enum rscript_id id, int nkeys, int argc,
                  const char **argv, const size_t *lens, queue_reply_fn *cb,
                  void *ud);

/* The oldest Redis the worker runs on: the take uses BLMOVE and RPOP
 * with a count (6.2). */
#define QUEUE_REDIS_MAJOR 6
#define QUEUE_REDIS_MINOR 2

/* From an INFO reply: 1 when its redis_version is at least
 * QUEUE_REDIS_MAJOR.QUEUE_REDIS_MINOR (or it names none), else 0; the
 * version (or "unknown") into `version`. Pure. */
int queue_redis_version_ok(const char *info, char *version, size_t n);

/* The key prefix (HERALD_PREFIX). */
const char *queue_prefix(const struct queue *q);

/* Reads template `name` from <p>:templates (reply: string or nil). */
void queue_template_get(struct queue *q, const char *name, queue_reply_fn *cb,
                        void *ud);

/* Operations sent or waiting for a reply. */
size_t queue_pending(const struct queue *q);

/* Batch takes answered and jobs they brought since the last call (the
 * debug log's "pipeline" line); both are reset. */
void queue_take_counts(struct queue *q, unsigned long *takes,
                       unsigned long *jobs);

/*
 * A job over JOB_MAX_BYTES, in this worker's processing list, moved to
 * <p>:dead without the worker ever holding it (worker/bigjob.c drives
 * these; one job at a time per worker):
 *
 * queue_big_stage: copies the oldest processing entry of `len` bytes to
 *   <p>:big:<worker>:job (an hour at most) and empties the entry being
 *   built. Reply: array {1, id} (id "" unless the job starts with a
 *   readable "id"), or {0, ""}: no entry of that length (gone already).
 * queue_big_read: bytes [off, off + n) of the staged job (string reply,
 *   shorter at its end; "" when the stage is gone).
 * queue_big_write: writes n bytes at `off` of <p>:big:<worker>:entry
 *   (off 0 creates it, an hour at most); safe to repeat.
 * queue_big_finish: moves the staged job from the processing list to
 *   dead as the entry built, and removes both keys. Reply: integer 1
 *   (moved), 0 (no longer in the processing list), -1 (the stage or
 *   the entry is gone: stage again).
 */
void queue_big_stage(struct queue *q, size_t len, queue_reply_fn *cb, void *ud);
void queue_big_read(struct queue *q, size_t off, size_t n, queue_reply_fn *cb,
                    void *ud);
void queue_big_write(struct queue *q, size_t off, const char *data, size_t n,
                     queue_reply_fn *cb, void *ud);
void queue_big_finish(struct queue *q, queue_reply_fn *cb, void *ud);

/* Stops taking: blocking connections are closed. Idempotent. */
void queue_stop_taking(struct queue *q);

/*
 * Hands every entry still in the processing list back to the front of its
 * lane and removes this worker's heartbeat; cb runs with 0 when done, or
 * with HERR_REDIS when Redis could not be reached within `timeout_ms`.
 */
void queue_handback(struct queue *q, uint64_t timeout_ms,
                    void (*cb)(void *ud, int rc), void *ud);

/* Closes every connection and handle; cb runs once all are closed and the
 * queue is freed. Operations still queued are dropped (their callbacks do
 * not run). */
void queue_close(struct queue *q, void (*cb)(void *ud), void *ud);

#endif
