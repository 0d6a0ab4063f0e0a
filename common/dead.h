/*
 * dead — dead-letter entries (SPEC §3), the JSON objects on <prefix>:dead:
 *
 *   {"error": "to[2]: not an address", "field": "to[2]",
 *    "reason": "invalid", "at": "2026-11-26T15:00:00.000Z",
 *    "id": "…" (when known), "job": "<the raw text>"}
 *
 * "job_base64" replaces "job" when the raw bytes are not valid UTF-8. The
 * raw job is kept whole, nothing cut. No I/O.
 */
#ifndef HERALD_DEAD_H
#define HERALD_DEAD_H

#include <stddef.h>
#include <stdint.h>

/* Builds an entry; returns a new NUL-terminated JSON string. `field` and
 * `id` may be NULL. */
char *dead_entry_new(const char *raw, size_t rawlen, const char *reason,
                     const char *field, const char *error, const char *id,
                     int64_t at_ms);

struct dead_entry {
    char *error, *field, *reason, *at, *id; /* NULL when absent */
    char *job;                              /* raw job bytes (decoded) */
    size_t joblen;
};

/* Parses an entry; 0 or HERR_INVALID. Free with dead_entry_free. */
int dead_entry_parse(const char *s, size_t len, struct dead_entry *out);
void dead_entry_free(struct dead_entry *d);

#endif
