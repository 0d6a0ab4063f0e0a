/*
 * spf_zone — the SPF evaluator's DNS double for tests and fuzzing: a zone
 * held in memory behind struct spf_resolver (common/spf.h). Not linked
 * into any program.
 */
#ifndef HERALD_SPF_ZONE_H
#define HERALD_SPF_ZONE_H

#include "spf.h"

#include <stddef.h>
#include <stdint.h>

/*
 * A zone: an ordered list of (name, type, value) entries. lookup(name,
 * type) walks the entries of `name` in the order added: a CNAME entry
 * redirects the query to its target (at most 8 hops, then HERR_TEMP, as
 * a resolver's SERVFAIL on a loop); a TIMEOUT entry ends the walk, with
 * HERR_TEMP when no entry of the type came before it; a name with no
 * entries at all is NXDOMAIN; a name with entries but none of the type is
 * NODATA. Names compare without case and trailing dot. Negative answers
 * carry the zone's negative TTL (300 s unless set).
 */
struct spf_zone;

struct spf_zone *spf_zone_new(void);
void spf_zone_free(struct spf_zone *z);
void spf_zone_set_negative_ttl(struct spf_zone *z, uint32_t ttl);

/*
 * Adds one entry. type "A", "AAAA" (value an address), "PTR", "CNAME"
 * (value a name), "TXT" (value one character-string, NUL-terminated),
 * "TIMEOUT" (value ignored, may be NULL). Returns 0 or HERR_INVALID (an
 * unknown type, a bad address, a name over SPF_NAME_MAX).
 */
int spf_zone_add(struct spf_zone *z, const char *name, const char *type,
                 const char *value, uint32_t ttl);
int spf_zone_add_mx(struct spf_zone *z, const char *name, uint16_t pref,
                    const char *exchange, uint32_t ttl);
/* A TXT record of `n` character-strings, each of lens[i] bytes (any
 * bytes, NUL included); n may be 0 (an empty record). */
int spf_zone_add_txt(struct spf_zone *z, const char *name,
                     const char *const *strings, const size_t *lens, size_t n,
                     uint32_t ttl);

/* The seam over `z` (borrowed; z must outlive the resolver's use). */
void spf_zone_resolver(struct spf_zone *z, struct spf_resolver *out);

/* Queries answered so far (every lookup() call counts). */
size_t spf_zone_queries(const struct spf_zone *z);

#endif
