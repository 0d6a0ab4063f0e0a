/*
 * logingate — a new set of scheme credentials is tried by one login at a
 * time, fleet-wide, so a wrong password costs one refused login, not one
 * per worker and connection (an account must never get locked by us).
 *
 * Per (scheme, credentials fingerprint) a gate is VERIFIED once a login
 * with them succeeded (here or, through Redis, anywhere), else the first
 * transaction takes a lease in Redis (<p>:scheme_login:<field>, "try:..."
 * with a deadline) and every other job for the scheme waits until that
 * transaction tells whether the login passed ("ok:<fp>", kept) or was
 * refused (the scheme is then marked auth_failed by the worker). A lease
 * held by another worker is asked for again about once a second.
 */
#ifndef HERALD_LOGINGATE_H
#define HERALD_LOGINGATE_H

#include "queue.h"

#include <stdint.h>

struct logingate;

typedef void logingate_wake_fn(void *ud);

struct logingate *logingate_new(struct queue *q, const char *worker,
                                int64_t lease_ms);
void logingate_free(struct logingate *g);

/*
 * May `ud` start a transaction with these credentials now? 1: yes. 0: not
 * yet; wake(ud) runs later, once, and the caller asks again.
 */
int logingate_enter(struct logingate *g, const char *field, const char *fp,
                    logingate_wake_fn *wake, void *ud);

/* A transaction with these credentials ended: it logged in (auth_ok), the
 * login was refused (auth_failed), or it never got that far (neither). */
void logingate_result(struct logingate *g, const char *field, const char *fp,
                      void *ud, int auth_ok, int auth_failed);

/* `ud` goes away: it holds or waits on no gate any more. */
void logingate_forget(struct logingate *g, void *ud);

/* About once a second: ask again for leases other workers held. */
void logingate_tick(struct logingate *g);

#endif
