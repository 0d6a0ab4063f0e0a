#include "util.h"
#include "err.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
oom(size_t n)
{
    fprintf(stderr,
            "{\"level\":\"fatal\",\"msg\":\"out of memory\","
            "\"bytes\":%zu}\n",
            n);
    abort();
}

void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *
xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom(n * size);
    return p;
}

void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *
xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *
xvasprintf(const char *fmt, va_list ap)
{
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (n < 0)
        abort();
    char *p = xmalloc((size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *
xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = xvasprintf(fmt, ap);
    va_end(ap);
    return p;
}

void
buf_init(struct buf *b, size_t max)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max ? max : SIZE_MAX - 1;
}

void
buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void
buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

static int
buf_reserve(struct buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return HERR_TOOBIG;
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
    return 0;
}

int
buf_append(struct buf *b, const void *data, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int
buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int
buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return HERR_INVALID;
    int rc = buf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

char *
buf_take(struct buf *b, size_t *len)
{
    char *p = b->p;
    if (len)
        *len = b->len;
    if (p == NULL)
        p = xstrdup("");
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

size_t
utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
    if (len == 0)
        return 0;
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        v = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        v = c & 0x0Fu;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        v = c & 0x07u;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* over U+10FFFF */
    } else {
        return 0;
    }
    if (len <= need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 1; k <= need; k++) {
        if (s[k] < 0x80 || s[k] > 0xBF)
            return 0;
        v = v << 6 | (s[k] & 0x3Fu);
    }
    *cp = v;
    return need + 1;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF);
 * ASCII eight bytes at a time. */
size_t
utf8_check(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        /* ASCII fast path, eight bytes at a time */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        if (i >= len)
            break;
        uint32_t cp;
        size_t n = utf8_decode(s + i, len - i, &cp);
        if (n == 0)
            return i;
        i += n;
    }
    return len;
}

int
utf8_is_bidi(uint32_t cp)
{
    return cp == 0x061C || cp == 0x200E || cp == 0x200F ||
           (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

/*
 * The escape of one character or byte at s[0..len) (len > 0): writes it
 * to out (at most 7 bytes, NUL-terminated) and returns the bytes of s it
 * stands for; *chars gets its width in characters.
 */
static size_t
escape_one(const unsigned char *s, size_t len, unsigned flags, char out[8],
           size_t *chars)
{
    unsigned char c = s[0];
    if (c >= 0x20 && c < 0x7F) {
        out[0] = (char)c;
        out[1] = '\0';
        *chars = 1;
        return 1;
    }
    if (flags & UTIL_ESC_LINES) {
        size_t n = c == '\n' ? 1 : c == '\r' && len > 1 && s[1] == '\n' ? 2 : 0;
        if (n) {
            out[0] = '\n';
            out[1] = '\0';
            *chars = 1;
            return n;
        }
    }
    const char *named = c == '\n'   ? "\\n"
                        : c == '\r' ? "\\r"
                        : c == '\t' ? "\\t"
                                    : NULL;
    if (named) {
        snprintf(out, 8, "%s", named);
        *chars = 2;
        return 1;
    }
    uint32_t cp;
    size_t n = c < 0x80 ? 1 : utf8_decode(s, len, &cp);
    if (c < 0x80 || n == 0) {
        /* C0, DEL, or a byte that is not UTF-8 */
        snprintf(out, 8, "\\x%02x", c);
        *chars = 4;
        return 1;
    }
    if (cp <= 0x9F || utf8_is_bidi(cp) || cp == 0x2028 || cp == 0x2029) {
        snprintf(out, 8, "\\u%04x", (unsigned)cp);
        *chars = 6;
        return n;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    *chars = 1;
    return n;
}

size_t
util_escape(struct buf *b, const char *s, size_t len, unsigned flags,
            size_t max, size_t *chars)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, used = 0;
    while (i < len) {
        /* plain ASCII runs in one append */
        size_t run = 0;
        while (i + run < len && p[i + run] >= 0x20 && p[i + run] < 0x7F &&
               run < max - used)
            run++;
        if (run) {
            if (buf_append(b, p + i, run) != 0)
                break;
            i += run;
            used += run;
            continue;
        }
        char out[8];
        size_t w;
        size_t n = escape_one(p + i, len - i, flags, out, &w);
        if (w > max - used || buf_puts(b, out) != 0)
            break;
        i += n;
        used += w;
    }
    if (chars)
        *chars = used;
    return i;
}

char *
util_escaped(const char *s)
{
    struct buf b;
    buf_init(&b, 0);
    if (s)
        util_escape(&b, s, strlen(s), 0, SIZE_MAX, NULL);
    return buf_take(&b, NULL);
}

uint64_t
util_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}
