/*
 * util — allocation that never returns NULL, a growing byte buffer with a
 * hard cap, UTF-8 decoding, and the escaping of text shown to people.
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
char *xvasprintf(const char *fmt, va_list ap)
    __attribute__((format(printf, 1, 0)));

/*
 * Checks that s[0..len) is strict UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF; NUL is a valid character here).
 * Returns len when it is, else the offset of the first bad byte.
 */
size_t utf8_check(const unsigned char *s, size_t len);

/*
 * Decodes the one strict UTF-8 sequence at s[0..len) (the rules of
 * utf8_check). Returns its length in bytes (1-4) with the code point in
 * *cp, or 0 when s does not start a valid sequence (a stray continuation
 * byte, an overlong form, a surrogate, past U+10FFFF, cut short) or len
 * is 0.
 */
size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);

/*
 * 1 when `cp` is a Unicode bidirectional formatting control: U+061C, U+200E,
 * U+200F, U+202A-U+202E, U+2066-U+2069. They reorder how the text around
 * them is shown ("invoice_" U+202E "fdp.exe" reads "invoice_exe.pdf").
 */
int utf8_is_bidi(uint32_t cp);

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

/* util_escape flags. */
#define UTIL_ESC_LINES 1u /* keep line breaks (LF, CR LF) as they are */

/*
 * Appends s[0..len) to b in a form that is safe to print on a terminal
 * and shows what the bytes are. Printable characters are kept as they
 * are (any valid UTF-8 that is not one of the below); the rest becomes a
 * visible escape:
 *
 *   \n \r \t      LF, CR, TAB (with UTIL_ESC_LINES, LF and CR LF stay a line
 *                 break, written as LF; a CR alone is still \r)
 *   \xHH          any other C0 control byte (NUL included), DEL, and each
 *                 byte that is not part of valid UTF-8 (lowercase hex)
 *   \uHHHH        C1 controls (U+0080-U+009F), the bidirectional controls
 *                 (utf8_is_bidi) and U+2028 / U+2029
 *
 * A backslash is left as it is, so that text (Windows paths, the JSON of
 * a record's meta) reads as written: the result is for people, not to be
 * decoded (a literal "\x1b" in the text looks like an escaped ESC).
 *
 * At most `max` characters (code points) are appended (SIZE_MAX: no
 * limit); an escape is never cut. Returns the number of bytes of s
 * consumed, which is len unless max (or b's cap) stopped it; *chars (may be
 * NULL) gets the characters appended. The one place that decides what human
 * output may contain: heraldctl and herald-enqueue print every value that
 * came from a job, Redis, DNS, a server or the Message Center through it.
 */
size_t util_escape(struct buf *b, const char *s, size_t len, unsigned flags,
                   size_t max, size_t *chars);

/* The NUL-terminated `s` through util_escape (no flags, no limit); NULL
 * gives "". New string. */
char *util_escaped(const char *s);

#endif
