#include "jfast.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jp {
    const char *p, *start, *end;
    json_error_t *err;
    int failed;
    size_t values;  /* parsed so far, against JFAST_VALUES_MAX */
    struct buf tmp; /* unescaped strings */
};

static json_t *value(struct jp *j, int depth);

static void
fail(struct jp *j, const char *at, const char *msg)
{
    if (j->failed)
        return;
    j->failed = 1;
    if (j->err == NULL)
        return;
    if (at >= j->end && at > j->start)
        at = j->end - 1; /* like jansson: the last byte read */
    int line = 1, col = 1;
    for (const char *q = j->start; q < at && q < j->end; q++) {
        if (*q == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    j->err->line = line;
    j->err->column = col;
    j->err->position = (int)(at - j->start);
    snprintf(j->err->source, sizeof j->err->source, "<buffer>");
    snprintf(j->err->text, sizeof j->err->text, "%s", msg);
}

static void
ws(struct jp *j)
{
    while (j->p < j->end &&
           (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int
hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void
put_utf8(struct buf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    buf_append(b, u, n);
}

/*
 * Parses a string starting after its opening quote. On success *s and *n
 * point either into the input (no escapes) or into j->tmp.
 */
static int
string(struct jp *j, const char **s, size_t *n)
{
    const char *p = j->p, *end = j->end, *run = p;
    int escaped = 0;
    for (;;) {
        /* the common case: a run of plain bytes */
        while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
            p++;
        if (p >= end) {
            fail(j, p, "premature end of input in a string");
            return -1;
        }
        if (*p == '"') {
            if (escaped) {
                buf_append(&j->tmp, run, (size_t)(p - run));
                *s = j->tmp.p;
                *n = j->tmp.len;
            } else {
                *s = run;
                *n = (size_t)(p - run);
            }
            j->p = p + 1;
            return 0;
        }
        if ((unsigned char)*p < 0x20) {
            fail(j, p, "control character in a string");
            return -1;
        }
        /* a backslash */
        if (!escaped) {
            escaped = 1;
            buf_reset(&j->tmp);
        }
        buf_append(&j->tmp, run, (size_t)(p - run));
        if (p + 1 >= end) {
            fail(j, p, "premature end of input in a string");
            return -1;
        }
        char c = p[1];
        const char *rep = NULL;
        switch (c) {
        case '"':
            rep = "\"";
            break;
        case '\\':
            rep = "\\";
            break;
        case '/':
            rep = "/";
            break;
        case 'b':
            rep = "\b";
            break;
        case 'f':
            rep = "\f";
            break;
        case 'n':
            rep = "\n";
            break;
        case 'r':
            rep = "\r";
            break;
        case 't':
            rep = "\t";
            break;
        case 'u':
            break;
        default:
            fail(j, p, "invalid escape");
            return -1;
        }
        if (rep) {
            buf_append(&j->tmp, rep, 1);
            p += 2;
            run = p;
            continue;
        }
        unsigned cp;
        if (end - p < 6 || hex4(p + 2, &cp) != 0) {
            fail(j, p, "invalid \\u escape");
            return -1;
        }
        p += 6;
        if (cp >= 0xdc00 && cp <= 0xdfff) {
            fail(j, p - 6, "invalid Unicode escape (lone low surrogate)");
            return -1;
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
            unsigned lo;
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
                hex4(p + 2, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff) {
                fail(j, p - 6, "invalid Unicode escape (lone high surrogate)");
                return -1;
            }
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            p += 6;
        }
        if (cp == 0) {
            fail(j, p - 6, "\\u0000 is not allowed");
            return -1;
        }
        put_utf8(&j->tmp, cp);
        run = p;
    }
}

static json_t *
number(struct jp *j)
{
    const char *p = j->p, *end = j->end, *s = p;
    int real = 0;
    if (p < end && *p == '-')
        p++;
    if (p >= end || *p < '0' || *p > '9') {
        fail(j, s, "invalid token");
        return NULL;
    }
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9') {
            fail(j, s, "invalid token (leading zero)");
            return NULL;
        }
    } else {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && *p == '.') {
        real = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9') {
            fail(j, s, "invalid token");
            return NULL;
        }
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9') {
            fail(j, s, "invalid token");
            return NULL;
        }
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    char tmp[64];
    size_t n = (size_t)(p - s);
    char *num = n < sizeof tmp ? tmp : xmalloc(n + 1);
    memcpy(num, s, n);
    num[n] = '\0';
    json_t *v = NULL;
    errno = 0;
    if (!real) {
        long long ll = strtoll(num, NULL, 10);
        if (errno == ERANGE)
            fail(j, s, "too big integer");
        else
            v = json_integer((json_int_t)ll);
    } else {
        double d = strtod(num, NULL);
        if (errno == ERANGE && isinf(d))
            fail(j, s, "real number overflow");
        else
            v = json_real(d);
    }
    if (num != tmp)
        free(num);
    j->p = p;
    return v;
}

static int
literal(struct jp *j, const char *word, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) {
        fail(j, j->p, "invalid token");
        return -1;
    }
    j->p += n;
    return 0;
}

static json_t *
object(struct jp *j, int depth)
{
    json_t *o = json_object();
    j->p++; /* { */
    ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return o;
    }
    for (;;) {
        ws(j);
        if (j->p >= j->end || *j->p != '"') {
            fail(j, j->p, "string or '}' expected");
            break;
        }
        const char *keyat = j->p;
        j->p++;
        const char *k;
        size_t kn;
        if (string(j, &k, &kn) != 0)
            break;
        /* keys with NUL cannot occur: \u0000 is refused */
        char small[128];
        char *key = kn < sizeof small ? small : xmalloc(kn + 1);
        memcpy(key, k, kn);
        key[kn] = '\0';
        if (json_object_get(o, key) != NULL) {
            if (key != small)
                free(key);
            fail(j, keyat, "duplicate object key");
            break;
        }
        ws(j);
        if (j->p >= j->end || *j->p != ':') {
            if (key != small)
                free(key);
            fail(j, j->p, "':' expected");
            break;
        }
        j->p++;
        json_t *v = value(j, depth + 1);
        if (v == NULL) {
            if (key != small)
                free(key);
            break;
        }
        json_object_set_new_nocheck(o, key, v);
        if (key != small)
            free(key);
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            return o;
        }
        fail(j, j->p, "',' or '}' expected");
        break;
    }
    json_decref(o);
    return NULL;
}

static json_t *
array(struct jp *j, int depth)
{
    json_t *a = json_array();
    j->p++; /* [ */
    ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return a;
    }
    for (;;) {
        json_t *v = value(j, depth + 1);
        if (v == NULL)
            break;
        json_array_append_new(a, v);
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            return a;
        }
        fail(j, j->p, "',' or ']' expected");
        break;
    }
    json_decref(a);
    return NULL;
}

static json_t *
value(struct jp *j, int depth)
{
    if (depth > JFAST_DEPTH_MAX) {
        fail(j, j->p, "maximum parsing depth reached");
        return NULL;
    }
    if (++j->values > JFAST_VALUES_MAX) {
        fail(j, j->p, "too many values (more than " JFAST_VALUES_MAX_TEXT ")");
        return NULL;
    }
    ws(j);
    if (j->p >= j->end) {
        fail(j, j->p, "premature end of input");
        return NULL;
    }
    switch (*j->p) {
    case '{':
        return object(j, depth);
    case '[':
        return array(j, depth);
    case '"': {
        j->p++;
        const char *s;
        size_t n;
        if (string(j, &s, &n) != 0)
            return NULL;
        return json_stringn_nocheck(s, n);
    }
    case 't':
        return literal(j, "true", 4) == 0 ? json_true() : NULL;
    case 'f':
        return literal(j, "false", 5) == 0 ? json_false() : NULL;
    case 'n':
        return literal(j, "null", 4) == 0 ? json_null() : NULL;
    default:
        return number(j);
    }
}

json_t *
jfast_loadb(const char *buf, size_t len, json_error_t *err)
{
    struct jp j = {.p = buf, .start = buf, .end = buf + len, .err = err};
    buf_init(&j.tmp, 0);
    json_t *v = value(&j, 0);
    if (v) {
        ws(&j);
        if (j.p != j.end) {
            fail(&j, j.p, "end of file expected");
            json_decref(v);
            v = NULL;
        }
    }
    buf_free(&j.tmp);
    return v;
}

/* ---- the dump ---- */

/* The escape of each byte below 0x80 in a string: 0 none, 'u' \u00XX,
 * else the letter after the backslash. */
static const char dump_esc[128] = {
    ['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f', ['\r'] = 'r',
    [0] = 'u',    [1] = 'u',    [2] = 'u',    [3] = 'u',    [4] = 'u',
    [5] = 'u',    [6] = 'u',    [7] = 'u',    [11] = 'u',   [14] = 'u',
    [15] = 'u',   [16] = 'u',   [17] = 'u',   [18] = 'u',   [19] = 'u',
    [20] = 'u',   [21] = 'u',   [22] = 'u',   [23] = 'u',   [24] = 'u',
    [25] = 'u',   [26] = 'u',   [27] = 'u',   [28] = 'u',   [29] = 'u',
    [30] = 'u',   [31] = 'u',   ['"'] = '"',  ['\\'] = '\\'};

int
jfast_dump_string(struct buf *b, const char *s, size_t n)
{
    int rc = buf_append(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e = c < 128 ? dump_esc[c] : 0;
        if (e == 0)
            continue;
        rc = buf_append(b, s + run, i - run);
        run = i + 1;
        if (rc == 0 && e == 'u')
            rc = buf_printf(b, "\\u%04X", (unsigned)c);
        else if (rc == 0) {
            char seq[2] = {'\\', e};
            rc = buf_append(b, seq, 2);
        }
    }
    if (rc == 0)
        rc = buf_append(b, s + run, n - run);
    return rc ? rc : buf_append(b, "\"", 1);
}

/* A real as jansson writes it: %.17g, a ".0" when it would read back as
 * an integer, the exponent without '+' or leading zeros. */
static int
dump_real(struct buf *b, double d)
{
    char s[64];
    int len = snprintf(s, sizeof s, "%.17g", d);
    if (len < 0 || (size_t)len >= sizeof s - 3)
        return -1;
    if (strchr(s, '.') == NULL && strchr(s, 'e') == NULL) {
        memcpy(s + len, ".0", 3);
        len += 2;
    }
    char *e = strchr(s, 'e');
    if (e) {
        char *start = e + 1, *end = start + 1;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, (size_t)len - (size_t)(end - s) + 1);
            len -= (int)(end - start);
        }
    }
    return buf_append(b, s, (size_t)len);
}

static int
dump_value(struct buf *b, const json_t *v, int depth)
{
    if (depth > JFAST_DEPTH_MAX * 4)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        int rc = buf_append(b, "{", 1);
        const char *key;
        json_t *x;
        int first = 1;
        json_object_foreach((json_t *)v, key, x)
        {
            if (rc == 0 && !first)
                rc = buf_append(b, ",", 1);
            first = 0;
            if (rc == 0)
                rc = jfast_dump_string(b, key, strlen(key));
            if (rc == 0)
                rc = buf_append(b, ":", 1);
            if (rc == 0)
                rc = dump_value(b, x, depth + 1);
            if (rc)
                return rc;
        }
        return rc ? rc : buf_append(b, "}", 1);
    }
    case JSON_ARRAY: {
        int rc = buf_append(b, "[", 1);
        for (size_t i = 0; rc == 0 && i < json_array_size(v); i++) {
            if (i)
                rc = buf_append(b, ",", 1);
            if (rc == 0)
                rc = dump_value(b, json_array_get(v, i), depth + 1);
        }
        return rc ? rc : buf_append(b, "]", 1);
    }
    case JSON_STRING:
        return jfast_dump_string(b, json_string_value(v),
                                 json_string_length(v));
    case JSON_INTEGER:
        return buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL:
        return dump_real(b, json_real_value(v));
    case JSON_TRUE:
        return buf_append(b, "true", 4);
    case JSON_FALSE:
        return buf_append(b, "false", 5);
    case JSON_NULL:
        return buf_append(b, "null", 4);
    }
    return -1;
}

int
jfast_dumpb(const json_t *v, struct buf *b)
{
    return v ? dump_value(b, v, 0) : -1;
}
