/*
 * dead — dead-letter entries (SPEC §3), the JSON objects on <prefix>:dead:
 *
 *   {"error": "to[2]: not an address", "field": "to[2]",
 *    "reason": "invalid", "at": "2026-11-26T15:00:00.000Z",
 *    "id": "…" (when known), "job": "<the raw text>"}
 *
 * "job_base64" replaces "job" when the raw bytes are not valid UTF-8 (or
 * hold a NUL). The raw job is kept whole, nothing cut. No I/O.
 *
 * An entry is built whole (dead_entry_new) or in pieces, for a job too
 * big to hold at once (the worker streams one from Redis in chunks):
 *
 *   dead_scan_*        pass 1: is the job text (valid UTF-8, no NUL)?
 *   dead_entry_head()  then the head, ending with the opening quote of
 *                      "job" or "job_base64";
 *   dead_entry_text() / dead_entry_b64()   each chunk of the job, in order
 *                      (JSON-escaped, or base64 with the carry between
 *                      chunks in struct dead_b64);
 *   dead_entry_b64_end(), then DEAD_ENTRY_TAIL.
 *
 * The pieces concatenated are exactly what dead_entry_new gives.
 */
#ifndef HERALD_DEAD_H
#define HERALD_DEAD_H

#include "util.h"

#include <stddef.h>
#include <stdint.h>

/* Builds an entry; returns a new NUL-terminated JSON string. `field` and
 * `id` may be NULL. One allocation of the entry's size: the raw job is
 * not copied on the way. */
char *dead_entry_new(const char *raw, size_t rawlen, const char *reason,
                     const char *field, const char *error, const char *id,
                     int64_t at_ms);

/* 1 when the job can be kept as "job": valid UTF-8 without NUL. */
int dead_is_text(const char *raw, size_t n);

/* Pass 1 over a job in chunks (sequences may straddle chunks). Start
 * zeroed; dead_scan_text() after the last chunk. */
struct dead_scan {
    unsigned char carry[4];
    size_t ncarry;
    int bad;
};
void dead_scan_feed(struct dead_scan *s, const char *p, size_t n);
int dead_scan_text(const struct dead_scan *s);

/* The entry up to and including the opening quote of the job's string:
 * {"error":…,"field":…,"reason":…,"at":…[,"id":…],"job":" (or
 * "job_base64":" when `base64`). New string. */
char *dead_entry_head(const char *reason, const char *field, const char *error,
                      const char *id, int64_t at_ms, int base64);
#define DEAD_ENTRY_TAIL "\"}"

/* Appends n bytes of a text job, JSON-escaped (chunks may cut UTF-8
 * sequences anywhere: only ASCII is escaped). dead_entry_text_len: how many
 * bytes that appends. */
void dead_entry_text(struct buf *out, const char *p, size_t n);
size_t dead_entry_text_len(const char *p, size_t n);

/* Appends a chunk as base64, carrying up to 2 bytes to the next chunk;
 * dead_entry_b64_end() writes the last group. Start zeroed. */
struct dead_b64 {
    unsigned char carry[2];
    size_t ncarry;
};
void dead_entry_b64(struct buf *out, struct dead_b64 *st, const char *p,
                    size_t n);
void dead_entry_b64_end(struct buf *out, struct dead_b64 *st);

struct dead_entry {
    char *error, *field, *reason, *at, *id; /* NULL when absent */
    char *job;                              /* raw job bytes (decoded) */
    size_t joblen;
};

/* Parses an entry; 0 or HERR_INVALID. Free with dead_entry_free. */
int dead_entry_parse(const char *s, size_t len, struct dead_entry *out);
void dead_entry_free(struct dead_entry *d);

#endif
