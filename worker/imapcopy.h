/*
 * imapcopy — a copy of each message sent through a sending scheme, in the
 * scheme's IMAP Sent folder (SPEC §4 path 1; the help page's schemes
 * "IMAP Host and Port").
 *
 * libcurl's IMAP APPEND through the easy interface, run on libuv's thread
 * pool (its protocol steps block; the loop never waits for them). The copy
 * is a courtesy: a failure is logged with the job, the org and the
 * server's answer, and never changes the delivery's outcome. TLS as the
 * scheme says (imaps://, or STARTTLS required), certificates verified
 * (system bundle plus HERALD_CA_FILE). libcurl is loaded at the first
 * copy (io/curllib.h): a worker that makes none never maps it; one where
 * it cannot be loaded logs each copy as failed, with the reason.
 */
#ifndef HERALD_IMAPCOPY_H
#define HERALD_IMAPCOPY_H

#include "settings.h"

#include <stddef.h>
#include <uv.h>

struct imapcopy;

/* `s` is borrowed. */
struct imapcopy *imapcopy_new(uv_loop_t *loop, const struct settings *s);

/*
 * Queues one APPEND of `msg` (len bytes, copied) to `folder` at `url`
 * ("imap://host:port" with STARTTLS required, or "imaps://host:port"),
 * logging in as user (copied) with `password`, which must be a secret of
 * common/seal.h (a route's password): the copy takes a reference to it
 * (seal_secret_ref) and drops it when done, so the caller's route and the
 * scheme table may go first; the thread only reads it.
 */
void imapcopy_append(struct imapcopy *c, const char *job_id, const char *org,
                     const char *url, const char *user, const char *password,
                     const char *folder, const char *msg, size_t len);

/* Waits for running copies (queued ones are dropped), frees, then cb. */
void imapcopy_close(struct imapcopy *c, void (*cb)(void *ud), void *ud);

#endif
