/*
 * worker — one job's life in this process: take, validate, mirror to the
 * Message Center, claim, resolve the sender, build, send, record, finish.
 *
 *   taken ──invalid──────────────────────────────► dead ("invalid")
 *     │ no id: assign one, replace it in the processing list
 *     │ send_at later: record "queued" ─► <p>:scheduled
 *     ▼
 *   claim in the ledger (the batched take already did, or one call)
 *     │ "sent"/"busy" ──► dropped as a duplicate
 *     ▼
 *   resolve the sender, render a template, build the MIME bytes
 *     │ sender paused, or its quota full ──► record "deferred" to the
 *     │   pause's end / the next window, <p>:scheduled (no attempt spent)
 *     ▼ (quota taken: one Lua decision)
 *   record "queued" (committed before the SMTP transaction starts)
 *     ▼
 *   ready ─ one of HERALD_CONCURRENCY slots ─► record "sending" + SMTP
 *        ──250──► ledger "sent" at once, record "sent", leave processing
 *        ──250, some RCPT 4xx──► ledger "accepted" for the others, retry
 *        ──throttle──► pause the sender fleet-wide, record "deferred"
 *        ──4xx/transport──► record "deferred", <p>:scheduled (backoff)
 *        ──5xx──► record "failed", dead ("rejected")
 *
 * Each arrow is a move of worker/task.c's state machine (enum task_state
 * in task.h names the states). Message Center writes are batched (every few ms)
 * and written on libuv's thread pool, one batch at a time; whatever depends on
 * a write (an SMTP transaction, leaving the processing list, the dead list)
 * waits for its batch to commit. Redis operations go through worker/queue.h and
 * survive reconnects. The worker holds at most 8 x HERALD_CONCURRENCY jobs.
 */
#ifndef HERALD_WORKER_H
#define HERALD_WORKER_H

#include "err.h"
#include "settings.h"

#include <uv.h>

struct worker;

/* Opens the Message Center and starts taking. `s` is borrowed and must
 * outlive the worker. Returns 0, or an error with `e` filled. */
int worker_new(uv_loop_t *loop, const struct settings *s, const char *id,
               struct worker **out, struct herr *e);

/* Graceful stop (SIGTERM): stop taking, finish what is in flight within
 * HERALD_SHUTDOWN_GRACE_S, hand back the rest, close every handle. A
 * second call cuts the grace short. When all is closed the worker frees
 * itself and `done(ud, exit_code)` runs. */
void worker_stop(struct worker *w, void (*done)(void *ud, int code), void *ud);

#endif
