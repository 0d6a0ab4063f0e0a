/*
 * spfcache — this worker's SPF verdicts (SPEC §4 path 2): may the platform
 * send as a domain?
 *
 * A verdict comes from, in order: this process's cache; Redis
 * (<p>:spf:<domain>, shared by the fleet, expiring with the records' DNS
 * TTL, at most SPFCACHE_MAX_S); an evaluation on libuv's thread pool
 * (common/spf.h over io/dnsres.h, HERALD_DNS, HERALD_SENDER_IPS or
 * else the include: chain to HERALD_SENDER_DOMAIN). A temperror is never
 * "authorised" and is kept only SPFCACHE_TEMP_S. Checks of one domain in
 * flight at once share one evaluation; at most four evaluations use the
 * thread pool at a time (the rest wait their turn), so a dead DNS server
 * cannot starve the Message Center batches that share it.
 */
#ifndef HERALD_SPFCACHE_H
#define HERALD_SPFCACHE_H

#include "err.h"
#include "queue.h"
#include "settings.h"

#include <uv.h>

#define SPFCACHE_MAX_S 3600 /* upper bound on any cached verdict */
#define SPFCACHE_TEMP_S 60  /* a temperror (or permerror) is kept this long */
#define SPFCACHE_ENTRIES 4096

struct spfcache;

/* `why` describes the verdict for the Message Center (valid during the
 * call). May run before spfcache_check returns (a cache hit). */
typedef void spfcache_fn(void *ud, int authorised, const char *why);

/* HERR_INVALID naming HERALD_SENDER_IPS or HERALD_DNS when malformed. */
int spfcache_new(uv_loop_t *loop, const struct settings *s, struct queue *q,
                 struct spfcache **out, struct herr *e);

void spfcache_check(struct spfcache *c, const char *domain, spfcache_fn *cb,
                    void *ud);

/* Drops waiting callbacks (they never run) and frees the cache once no
 * evaluation is running; then cb(ud). */
void spfcache_close(struct spfcache *c, void (*cb)(void *ud), void *ud);

#endif
