/*
 * resolve — the sender resolver (SPEC §4): for one job, which path it
 * takes, why, and the envelope and header identities that follow.
 *
 * This is the seam the scheme and SPF paths plug into. Today every job
 * takes path 3, `relay`: the platform relay, envelope sender
 * HERALD_DEFAULT_FROM, From "<from_name> via <platform>"
 * <HERALD_DEFAULT_FROM> (the job's from address stands in for a missing
 * from_name), Reply-To the job's reply_to or from.
 */
#ifndef HERALD_RESOLVE_H
#define HERALD_RESOLVE_H

#include "job.h"
#include "settings.h"

enum route_path { ROUTE_SCHEME, ROUTE_SPF, ROUTE_RELAY };

struct route {
    enum route_path path;
    const char *path_name;       /* "scheme" | "spf" | "relay" (static) */
    char *reason;                /* why this path (for the Message Center) */
    const char *url;             /* SMTP server URL (borrowed from settings) */
    const char *user, *password; /* borrowed; NULL: no AUTH */
    char *envelope_from;
    char *from_name; /* From: display name, NULL for none */
    char *from_addr; /* From: address */
    char *reply_to;  /* Reply-To: address */
};

struct resolver;

/* `s` is borrowed and must outlive the resolver. */
struct resolver *resolver_new(const struct settings *s);
void resolver_free(struct resolver *r);

/* Fills `out` (owned strings; release with route_clear). Returns 0. */
int resolver_route(struct resolver *r, const struct job *j, struct route *out);
void route_clear(struct route *rt);

#endif
