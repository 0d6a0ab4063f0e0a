/*
 * purge — the Message Center's retention, run by the fleet on its own
 * (SPEC §6.3): records older than HERALD_MC_RETENTION_DAYS removed,
 * bodies older than HERALD_MC_BODY_DAYS cleared (mc_purge).
 *
 * One purge at a time per store, fleet-wide: a worker first takes a lease
 * in Redis (<p>:mc_purge:<store>, SET NX with PURGE_LEASE_MS), where
 * <store> names the store (for SQLite: this host and the file; for a
 * shared store: its URL without a password). The purge itself runs on
 * libuv's thread pool with a store handle of its own, at most
 * PURGE_ROUND records and bodies a round, so a stopping worker waits for
 * one round at most; a round that stopped with work left is followed by
 * the next a minute later, otherwise the next comes an hour later. The
 * first round is PURGE_FIRST_MS after start. With both settings 0 it
 * does nothing.
 *
 * purge_close(): no new round; `done` runs (never synchronously) once
 * the round in flight, if any, has finished and the timer is closed.
 */
#ifndef HERALD_PURGE_H
#define HERALD_PURGE_H

#include "queue.h"
#include "settings.h"

#include <uv.h>

#define PURGE_FIRST_MS 10000
#define PURGE_EVERY_MS 3600000
#define PURGE_AGAIN_MS 60000
#define PURGE_LEASE_MS 900000
#define PURGE_ROUND 50000

struct purge;

struct purge *purge_new(uv_loop_t *loop, const struct settings *s,
                        struct queue *q, const char *worker_id);
void purge_close(struct purge *p, void (*done)(void *ud), void *ud);

#endif
