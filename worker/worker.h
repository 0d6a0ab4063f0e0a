/*
 * worker — one job's life in this process: take, validate, mirror to the
 * Message Center, claim, resolve the sender, build, send, record, finish.
 *
 *   taken ──invalid──────────────────────────────► dead ("invalid")
 *     │ no id: assign one, replace it in the processing list
 *     │ send_at later: record "queued" ─► <p>:scheduled
 *     ▼
 *   ready (waits for one of HERALD_CONCURRENCY slots)
 *     ▼
 *   claim in the ledger ──"sent"/"busy"──► dropped as a duplicate
 *     ▼
 *   record "sending" (committed before the SMTP transaction starts)
 *     ▼
 *   SMTP ──250──► ledger "sent" at once, record "sent", leave processing
 *        ──4xx/transport──► record "deferred", <p>:scheduled (backoff)
 *        ──5xx──► record "failed", dead ("rejected")
 *
 * Message Center writes are batched: everything that happened in one loop
 * turn is committed in one transaction before anything that depends on it
 * (an SMTP transaction, leaving the processing list) goes ahead.
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
