/*
 * util — allocation that never returns NULL, and a growing byte buffer
 * with a hard cap.
 *
 * Allocation failure aborts the process (as Redis and Postfix do): a
 * worker that cannot allocate cannot do anything useful, and its jobs are
 * safe in Redis.
 */
#ifndef HERALD_UTIL_H
#define HERALD_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Checks that s[0..len) is strict UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF; NUL is a valid character here).
 * Returns len when it is, else the offset of the first bad byte.
 */
size_t utf8_check(const unsigned char *s, size_t len);

/* FNV-1a of a NUL-terminated string, for in-memory hash tables. */
uint64_t util_hash(const char *s);

/*
 * A growing buffer. `max` is the hard cap in bytes (0 = no cap beyond
 * SIZE_MAX); an append that would pass it fails with HERR_TOOBIG and
 * leaves the buffer unchanged. `p` is always NUL-terminated when non-NULL
 * (the terminator is not counted in len).
 */
struct buf {
    char *p;
    size_t len;
    size_t cap;
    size_t max;
};

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
void buf_reset(struct buf *b); /* len = 0, memory kept */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Hands the bytes to the caller (who frees them); the buffer is emptied. */
char *buf_take(struct buf *b, size_t *len);

#endif
