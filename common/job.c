#include "job.h"
#include "jfast.h"
#include "clock.h"
#include "util.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <sys/random.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------ */

static int fail(struct herr *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(struct herr *e, const char *field, const char *fmt, ...)
{
    if (e == NULL)
        return HERR_INVALID;
    char msg[HERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return herr_set(e, HERR_INVALID, field, "%s", msg);
}

/* Formats a field path; paths are short, and a long one is simply cut. */
static void fieldf(char out[HERR_FIELD_MAX], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
fieldf(char out[HERR_FIELD_MAX], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, HERR_FIELD_MAX, fmt, ap);
    va_end(ap);
}

/* Length of the UTF-8 sequence starting with byte c (input is valid). */
static size_t
u8len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/*
 * Writes prefix + key into out as a field path. Keys come from the job, so
 * control bytes are shown escaped (\r, \n, \t, \xHH) to keep the path on one
 * line, and the path is cut at a character boundary when it does not fit.
 */
static void
path_key(char *out, size_t outlen, const char *prefix, const char *key)
{
    size_t o = 0;
    for (const char *p = prefix; *p && o + 1 < outlen; p++)
        out[o++] = *p;
    for (const unsigned char *k = (const unsigned char *)key; *k;) {
        char tmp[5];
        size_t n;
        if (*k < 0x20 || *k == 0x7F) {
            if (*k == '\r')
                n = (size_t)snprintf(tmp, sizeof tmp, "\\r");
            else if (*k == '\n')
                n = (size_t)snprintf(tmp, sizeof tmp, "\\n");
            else if (*k == '\t')
                n = (size_t)snprintf(tmp, sizeof tmp, "\\t");
            else
                n = (size_t)snprintf(tmp, sizeof tmp, "\\x%02X", *k);
            k++;
        } else {
            n = u8len(*k);
            for (size_t i = 0; i < n; i++)
                tmp[i] = (char)k[i];
            k += n;
        }
        if (o + n + 1 > outlen)
            break;
        memcpy(out + o, tmp, n);
        o += n;
    }
    out[o] = '\0';
}

/* ---- character rules --------------------------------------------------- */

static int
is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
}

enum tok { TOK_ID, TOK_ORG, TOK_TYPE };

static int
tok_char(enum tok t, unsigned char c)
{
    switch (t) {
    case TOK_ID:
        return is_alnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
    case TOK_ORG:
        return is_alnum(c) || c == '.' || c == '_' || c == '-';
    case TOK_TYPE:
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
               c == '-';
    }
    return 0;
}

static const char *
tok_class(enum tok t)
{
    switch (t) {
    case TOK_ID:
        return "[A-Za-z0-9._:-]";
    case TOK_ORG:
        return "[A-Za-z0-9._-]";
    case TOK_TYPE:
        return "[a-z0-9_-]";
    }
    return "";
}

static int
tok_valid(enum tok t, const char *s, size_t n, size_t max)
{
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!tok_char(t, (unsigned char)s[i]))
            return 0;
    return 1;
}

static int
check_tok(enum tok t, const char *field, const char *s, size_t n, size_t max,
          struct herr *e)
{
    if (n == 0)
        return fail(e, field, "is empty");
    if (n > max)
        return fail(e, field, "is %zu bytes, at most %zu", n, max);
    for (size_t i = 0; i < n; i++)
        if (!tok_char(t, (unsigned char)s[i]))
            return fail(e, field, "contains a character outside %s",
                        tok_class(t));
    return 0;
}

/* RFC 5322 atext. */
static int
is_atext(unsigned char c)
{
    return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/*
 * Header text: no C0 controls, DEL, C1 controls (U+0080..U+009F) or the
 * Unicode line and paragraph separators. Input is valid UTF-8.
 */
static int
check_text(const char *field, const char *s, size_t n, struct herr *e)
{
    const unsigned char *p = (const unsigned char *)s;
    long first = -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == '\r' || c == '\n')
            return fail(e, field, "contains a line break");
        long cp = -1;
        if (c < 0x20 || c == 0x7F)
            cp = c;
        else if (c == 0xC2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F)
            cp = p[i + 1];
        else if (c == 0xE2 && i + 2 < n && p[i + 1] == 0x80 &&
                 (p[i + 2] == 0xA8 || p[i + 2] == 0xA9))
            cp = 0x2000 + p[i + 2] - 0x80;
        if (cp >= 0 && first < 0)
            first = cp;
    }
    if (first >= 0)
        return fail(e, field, "contains a control character (U+%04lX)", first);
    return 0;
}

/* ---- addresses (RFC 5321 Mailbox, ASCII) ------------------------------- */

static const char *
domain_problem(const char *d, size_t n)
{
    if (n == 0)
        return "empty domain";
    if (d[0] == '[') {
        /* address literal: [a.b.c.d] */
        if (n < 9 || d[n - 1] != ']')
            return "bad address literal";
        size_t i = 1;
        for (int part = 0; part < 4; part++) {
            if (part > 0) {
                if (d[i] != '.')
                    return "bad address literal";
                i++;
            }
            int v = 0, nd = 0;
            while (i < n - 1 && d[i] >= '0' && d[i] <= '9' && nd < 4) {
                v = v * 10 + (d[i] - '0');
                nd++;
                i++;
            }
            if (nd == 0 || nd > 3 || v > 255)
                return "bad address literal";
        }
        if (i != n - 1)
            return "bad address literal";
        return NULL;
    }
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            if (label == 0)
                return "empty domain label";
            if (d[i - 1] == '-')
                return "domain label ends with a hyphen";
            label = 0;
            continue;
        }
        if (!is_alnum(c) && c != '-')
            return "bad character in domain";
        if (c == '-' && label == 0)
            return "domain label starts with a hyphen";
        if (++label > 63)
            return "domain label longer than 63 bytes";
    }
    if (label == 0)
        return "empty domain label";
    if (d[n - 1] == '-')
        return "domain label ends with a hyphen";
    return NULL;
}

/* Returns NULL for a valid mailbox, else why not. */
static const char *
email_problem(const char *s, size_t n)
{
    if (n == 0)
        return "empty";
    if (n > JOB_ADDR_MAX)
        return "longer than 254 bytes";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7F)
            return c == ' ' ? "contains a space" : "not ASCII text";
        if (c == '<' || c == '>')
            return "contains an angle bracket";
    }
    size_t i = 0;
    if (s[0] == '"') {
        /* Quoted-string, without spaces */
        i = 1;
        while (i < n && s[i] != '"') {
            if (s[i] == '\\') {
                i++;
                if (i >= n)
                    return "unterminated quoted local part";
            }
            i++;
        }
        if (i >= n)
            return "unterminated quoted local part";
        if (i == 1)
            return "empty local part";
        i++; /* closing quote */
        if (i >= n || s[i] != '@')
            return "missing @";
    } else {
        /* Dot-string */
        size_t atom = 0;
        for (; i < n && s[i] != '@'; i++) {
            if (s[i] == '.') {
                if (atom == 0)
                    return "misplaced dot in local part";
                atom = 0;
            } else if (is_atext((unsigned char)s[i])) {
                atom++;
            } else {
                return "bad character in local part";
            }
        }
        if (i >= n)
            return "missing @";
        if (i == 0)
            return "empty local part";
        if (atom == 0)
            return "misplaced dot in local part";
    }
    if (i > 64)
        return "local part longer than 64 bytes";
    return domain_problem(s + i + 1, n - i - 1);
}

int
job_valid_email(const char *s)
{
    return s != NULL && email_problem(s, strlen(s)) == NULL;
}

int
job_valid_id(const char *s)
{
    return s != NULL && tok_valid(TOK_ID, s, strlen(s), JOB_ID_MAX);
}

int
job_valid_org(const char *s)
{
    return s != NULL && tok_valid(TOK_ORG, s, strlen(s), JOB_ORG_MAX);
}

int
job_valid_type(const char *s)
{
    return s != NULL && tok_valid(TOK_TYPE, s, strlen(s), JOB_TYPE_MAX);
}

static int
check_addr(const char *field, const char *s, size_t n, struct herr *e)
{
    int rc = check_text(field, s, n, e);
    if (rc)
        return rc;
    const char *why = email_problem(s, n);
    if (why)
        return fail(e, field, "not an address (%s)", why);
    return 0;
}

/* ---- priority ---------------------------------------------------------- */

static const char *const prio_names[JOB_PRIO_COUNT] = {"high", "normal", "low"};

const char *
job_priority_name(enum job_priority p)
{
    if ((unsigned)p >= JOB_PRIO_COUNT)
        return "normal";
    return prio_names[p];
}

int
job_priority_parse(const char *s, enum job_priority *p)
{
    for (int i = 0; s && i < JOB_PRIO_COUNT; i++) {
        if (strcmp(s, prio_names[i]) == 0) {
            *p = (enum job_priority)i;
            return 0;
        }
    }
    return HERR_INVALID;
}

/* ---- UTF-8 ------------------------------------------------------------- */

/* ---- base64 ------------------------------------------------------------ */

static const char b64_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int
b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Strict standard base64: CR, LF and space are skipped; '=' only as the
 * final padding of a complete quantum, and the bits it pads must be zero.
 */
static int
b64_decode(const char *field, const char *s, size_t n, unsigned char **out,
           size_t *outlen, struct herr *e)
{
    unsigned char *d = xmalloc(n / 4 * 3 + 3);
    size_t o = 0, q = 0, pad = 0, end = n;
    uint32_t acc = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r' || c == '\n' || c == ' ')
            continue;
        if (c == '=') {
            if (q < 2) {
                rc = fail(e, field, "not valid base64: '=' at offset %zu", i);
                goto out;
            }
            pad++;
            if (++q == 4) {
                end = i + 1;
                break;
            }
            continue;
        }
        int v = b64_val(c);
        if (v < 0) {
            rc =
                fail(e, field,
                     "not valid base64: unexpected character at offset %zu", i);
            goto out;
        }
        if (pad) {
            rc = fail(e, field, "not valid base64: data after padding");
            goto out;
        }
        acc = acc << 6 | (uint32_t)v;
        if (++q == 4) {
            d[o++] = (unsigned char)(acc >> 16);
            d[o++] = (unsigned char)(acc >> 8);
            d[o++] = (unsigned char)acc;
            acc = 0;
            q = 0;
        }
    }
    /* after the padding only skippable whitespace may follow */
    for (size_t t = end; t < n; t++) {
        if (s[t] != '\r' && s[t] != '\n' && s[t] != ' ') {
            rc = fail(e, field, "not valid base64: data after padding");
            goto out;
        }
    }
    if (pad && q == 4)
        q = 0;
    if (q != 0) {
        rc = fail(e, field,
                  pad ? "not valid base64: bad padding"
                      : "not valid base64: length is not a multiple of 4");
        goto out;
    }
    if (pad == 1) {
        /* acc holds 3 sextets = 18 bits: 16 data, 2 padding */
        if (acc & 0x3) {
            rc = fail(e, field, "not valid base64: non-zero padding bits");
            goto out;
        }
        d[o++] = (unsigned char)(acc >> 10);
        d[o++] = (unsigned char)(acc >> 2);
    } else if (pad == 2) {
        /* 2 sextets = 12 bits: 8 data, 4 padding */
        if (acc & 0xF) {
            rc = fail(e, field, "not valid base64: non-zero padding bits");
            goto out;
        }
        d[o++] = (unsigned char)(acc >> 4);
    }
out:
    if (rc) {
        free(d);
        return rc;
    }
    *out = d;
    *outlen = o;
    return 0;
}

/* ---- field helpers ----------------------------------------------------- */

/*
 * Reads an optional or required string member. *s is NULL when the member
 * is absent and optional.
 */
static int
get_str(json_t *o, const char *key, const char *field, int required,
        const char **s, size_t *n, struct herr *e)
{
    json_t *v = json_object_get(o, key);
    *s = NULL;
    *n = 0;
    if (v == NULL)
        return required ? fail(e, field, "is required") : 0;
    if (!json_is_string(v))
        return fail(e, field, "must be a string");
    *s = json_string_value(v);
    *n = json_string_length(v);
    return 0;
}

static int
get_tok(json_t *o, const char *key, int required, enum tok t, size_t max,
        char **dst, struct herr *e)
{
    const char *s;
    size_t n;
    int rc = get_str(o, key, key, required, &s, &n, e);
    if (rc || s == NULL)
        return rc;
    if ((rc = check_tok(t, key, s, n, max, e)))
        return rc;
    *dst = xstrndup(s, n);
    return 0;
}

static int
get_addr(json_t *o, const char *key, int required, char **dst, struct herr *e)
{
    const char *s;
    size_t n;
    int rc = get_str(o, key, key, required, &s, &n, e);
    if (rc || s == NULL)
        return rc;
    if ((rc = check_addr(key, s, n, e)))
        return rc;
    *dst = xstrndup(s, n);
    return 0;
}

/* A display name: empty means none (stored as NULL). */
static int
take_name(const char *field, json_t *v, char **dst, struct herr *e)
{
    if (!json_is_string(v))
        return fail(e, field, "must be a string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n > JOB_NAME_MAX)
        return fail(e, field, "is %zu bytes, at most %d", n, JOB_NAME_MAX);
    int rc = check_text(field, s, n, e);
    if (rc)
        return rc;
    *dst = n ? xstrndup(s, n) : NULL;
    return 0;
}

static const char *
json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/* ---- recipients -------------------------------------------------------- */

static int
parse_rcpt(const char *list, size_t idx, json_t *v, struct job_addr *a,
           struct herr *e)
{
    char field[HERR_FIELD_MAX], sub[HERR_FIELD_MAX];
    fieldf(field, "%s[%zu]", list, idx);
    int rc;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if ((rc = check_addr(field, s, n, e)))
            return rc;
        a->email = xstrndup(s, n);
        return 0;
    }
    if (!json_is_object(v))
        return fail(e, field, "must be an address string or an object, not %s",
                    json_type_name(v));
    const char *key;
    json_t *m;
    json_object_foreach(v, key, m)
    {
        if (strcmp(key, "email") != 0 && strcmp(key, "name") != 0) {
            char pre[HERR_FIELD_MAX];
            fieldf(pre, "%s.", field);
            path_key(sub, sizeof sub, pre, key);
            return fail(e, sub, "unknown field");
        }
    }
    fieldf(sub, "%s.email", field);
    const char *s;
    size_t n;
    if ((rc = get_str(v, "email", sub, 1, &s, &n, e)))
        return rc;
    if ((rc = check_addr(sub, s, n, e)))
        return rc;
    a->email = xstrndup(s, n);
    if ((m = json_object_get(v, "name")) != NULL) {
        fieldf(sub, "%s.name", field);
        if ((rc = take_name(sub, m, &a->name, e)))
            return rc;
    }
    return 0;
}

static int
parse_rcpts(const char *list, json_t *arr, struct job_addr **out, size_t *nout,
            struct herr *e)
{
    size_t n = json_array_size(arr);
    if (n == 0)
        return 0;
    *out = xcalloc(n, sizeof **out);
    *nout = n; /* entries are zeroed, so job_free copes with a partial list */
    for (size_t i = 0; i < n; i++) {
        int rc = parse_rcpt(list, i, json_array_get(arr, i), &(*out)[i], e);
        if (rc)
            return rc;
    }
    return 0;
}

static int
get_array(json_t *o, const char *key, json_t **arr, struct herr *e)
{
    json_t *v = json_object_get(o, key);
    *arr = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_array(v))
        return fail(e, key, "must be an array");
    *arr = v;
    return 0;
}

static int
parse_recipients(json_t *root, struct job *j, struct herr *e)
{
    json_t *to, *cc, *bcc;
    int rc;
    if ((rc = get_array(root, "to", &to, e)))
        return rc;
    if (to == NULL)
        return fail(e, "to", "is required");
    size_t nto = json_array_size(to);
    if (nto == 0)
        return fail(e, "to", "must have at least one recipient");
    if (nto > JOB_TO_MAX)
        return fail(e, "to", "has %zu recipients, at most %d", nto, JOB_TO_MAX);
    if ((rc = get_array(root, "cc", &cc, e)) ||
        (rc = get_array(root, "bcc", &bcc, e)))
        return rc;
    size_t total = nto + json_array_size(cc) + json_array_size(bcc);
    if (total > JOB_RCPT_MAX)
        return fail(e, "to+cc+bcc", "%zu recipients, at most %d", total,
                    JOB_RCPT_MAX);
    if ((rc = parse_rcpts("to", to, &j->to, &j->nto, e)))
        return rc;
    if (cc && (rc = parse_rcpts("cc", cc, &j->cc, &j->ncc, e)))
        return rc;
    if (bcc && (rc = parse_rcpts("bcc", bcc, &j->bcc, &j->nbcc, e)))
        return rc;
    return 0;
}

/* ---- attachments ------------------------------------------------------- */

/* RFC 2045 token character. */
static int
is_token_char(unsigned char c)
{
    return c > ' ' && c < 0x7F && !strchr("()<>@,;:\\\"/[]?=", c);
}

static int
check_filename(const char *field, const char *s, size_t n, struct herr *e)
{
    if (n == 0)
        return fail(e, field, "is empty");
    if (n > JOB_FILENAME_MAX)
        return fail(e, field, "is %zu bytes, at most %d", n, JOB_FILENAME_MAX);
    int rc = check_text(field, s, n, e);
    if (rc)
        return rc;
    if (memchr(s, '/', n) || memchr(s, '\\', n))
        return fail(e, field, "must not contain '/' or '\\'");
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return fail(e, field, "must not be \".\" or \"..\"");
    /* A bidirectional control makes the name read as something else:
     * "invoice_" U+202E "fdp.exe" shows as "invoice_exe.pdf". */
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_decode(p + i, n - i, &cp);
        if (k == 0)
            return fail(e, field, "is not valid UTF-8");
        if (utf8_is_bidi(cp))
            return fail(e, field,
                        "contains a bidirectional control character "
                        "(U+%04X), which can disguise the file's real "
                        "name and type",
                        (unsigned)cp);
        i += k;
    }
    return 0;
}

static int
take_content_type(const char *field, const char *s, size_t n, char **dst,
                  struct herr *e)
{
    int rc = check_text(field, s, n, e);
    if (rc)
        return rc;
    if (n > JOB_CONTENT_TYPE_MAX)
        return fail(e, field, "is %zu bytes, at most %d", n,
                    JOB_CONTENT_TYPE_MAX);
    const char *slash = memchr(s, '/', n);
    size_t tl = slash ? (size_t)(slash - s) : 0;
    int ok = slash != NULL && tl > 0 && tl < n - 1;
    for (size_t i = 0; ok && i < n; i++)
        if (i != tl && !is_token_char((unsigned char)s[i]))
            ok = 0;
    if (!ok)
        return fail(e, field,
                    "must be type/subtype (RFC 2045 tokens, no "
                    "parameters)");
    char *c = xstrndup(s, n);
    for (size_t i = 0; i < n; i++)
        if (c[i] >= 'A' && c[i] <= 'Z')
            c[i] = (char)(c[i] - 'A' + 'a');
    *dst = c;
    return 0;
}

static int
parse_attachment(size_t idx, json_t *v, struct job_attachment *a,
                 struct herr *e)
{
    char field[HERR_FIELD_MAX], sub[HERR_FIELD_MAX];
    fieldf(field, "attachments[%zu]", idx);
    if (!json_is_object(v))
        return fail(e, field, "must be an object");
    const char *key;
    json_t *m;
    json_object_foreach(v, key, m)
    {
        if (strcmp(key, "filename") != 0 && strcmp(key, "content_type") != 0 &&
            strcmp(key, "content_base64") != 0) {
            char pre[HERR_FIELD_MAX];
            fieldf(pre, "%s.", field);
            path_key(sub, sizeof sub, pre, key);
            return fail(e, sub, "unknown field");
        }
    }
    const char *s;
    size_t n;
    int rc;
    fieldf(sub, "%s.filename", field);
    if ((rc = get_str(v, "filename", sub, 1, &s, &n, e)) ||
        (rc = check_filename(sub, s, n, e)))
        return rc;
    a->filename = xstrndup(s, n);
    fieldf(sub, "%s.content_type", field);
    if ((rc = get_str(v, "content_type", sub, 0, &s, &n, e)))
        return rc;
    if (s == NULL)
        a->content_type = xstrdup("application/octet-stream");
    else if ((rc = take_content_type(sub, s, n, &a->content_type, e)))
        return rc;
    fieldf(sub, "%s.content_base64", field);
    if ((rc = get_str(v, "content_base64", sub, 1, &s, &n, e)))
        return rc;
    return b64_decode(sub, s, n, &a->data, &a->len, e);
}

static int
parse_attachments(json_t *root, struct job *j, struct herr *e)
{
    json_t *arr;
    int rc = get_array(root, "attachments", &arr, e);
    if (rc || arr == NULL)
        return rc;
    size_t n = json_array_size(arr);
    if (n > JOB_ATTACHMENTS_MAX)
        return fail(e, "attachments", "has %zu entries, at most %d", n,
                    JOB_ATTACHMENTS_MAX);
    if (n == 0)
        return 0;
    j->attachments = xcalloc(n, sizeof *j->attachments);
    j->nattachments = n;
    for (size_t i = 0; i < n; i++)
        if ((rc = parse_attachment(i, json_array_get(arr, i),
                                   &j->attachments[i], e)))
            return rc;
    return 0;
}

/* ---- headers ----------------------------------------------------------- */

static int
prefix_ci(const char *s, size_t n, const char *pre)
{
    size_t pl = strlen(pre);
    if (n < pl)
        return 0;
    for (size_t i = 0; i < pl; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        char p = pre[i];
        if (p >= 'A' && p <= 'Z')
            p = (char)(p - 'A' + 'a');
        if (c != p)
            return 0;
    }
    return 1;
}

static int
parse_headers(json_t *root, struct job *j, struct herr *e)
{
    json_t *o = json_object_get(root, "headers");
    if (o == NULL)
        return 0;
    if (!json_is_object(o))
        return fail(e, "headers", "must be an object");
    size_t n = json_object_size(o);
    if (n > JOB_HEADERS_MAX)
        return fail(e, "headers", "has %zu entries, at most %d", n,
                    JOB_HEADERS_MAX);
    if (n == 0)
        return 0;
    j->headers = xcalloc(n, sizeof *j->headers);
    j->nheaders = n;
    size_t i = 0;
    const char *name;
    json_t *v;
    json_object_foreach(o, name, v)
    {
        char field[HERR_FIELD_MAX];
        path_key(field, sizeof field, "headers.", name);
        size_t nl = strlen(name);
        int rc = check_text(field, name, nl, e);
        if (rc)
            return rc;
        for (size_t k = 0; k < nl; k++) {
            unsigned char c = (unsigned char)name[k];
            if (c <= ' ' || c >= 0x7F || c == ':')
                return fail(e, field,
                            "header name must be printable ASCII without "
                            "':' or space");
        }
        if (nl > JOB_HEADER_NAME_MAX)
            return fail(e, field, "header name is %zu bytes, at most %d", nl,
                        JOB_HEADER_NAME_MAX);
        if (!prefix_ci(name, nl, "X-"))
            return fail(e, field, "header name must start with X-");
        if (nl == 2)
            return fail(e, field, "header name must go on after X-");
        if (prefix_ci(name, nl, "X-Herald-"))
            return fail(e, field, "X-Herald- headers are reserved");
        for (size_t k = 0; k < i; k++)
            if (strlen(j->headers[k].name) == nl &&
                prefix_ci(j->headers[k].name, nl, name))
                return fail(e, field, "duplicate header name");
        if (!json_is_string(v))
            return fail(e, field, "must be a string");
        const char *s = json_string_value(v);
        size_t sl = json_string_length(v);
        if (sl > JOB_HEADER_VALUE_MAX)
            return fail(e, field, "value is %zu bytes, at most %d", sl,
                        JOB_HEADER_VALUE_MAX);
        if ((rc = check_text(field, s, sl, e)))
            return rc;
        j->headers[i].name = xstrndup(name, nl);
        j->headers[i].value = xstrndup(s, sl);
        i++;
    }
    return 0;
}

/* ---- JSON output helpers ----------------------------------------------- */

static int
buf_sink(const char *p, size_t n, void *data)
{
    return buf_append(data, p, n) ? -1 : 0;
}

static char *
dump_compact(const json_t *v, size_t *len)
{
    struct buf b;
    buf_init(&b, 0);
    if (json_dump_callback(v, buf_sink, &b, JSON_COMPACT | JSON_ENCODE_ANY))
        abort(); /* only allocation can fail here, and that aborts first */
    return buf_take(&b, len);
}

/* ---- the job ----------------------------------------------------------- */

static const char *const known_fields[] = {
    "id",       "type",     "org",       "account",     "from",    "from_name",
    "reply_to", "to",       "cc",        "bcc",         "subject", "text",
    "html",     "template", "data",      "attachments", "send_at", "priority",
    "headers",  "meta",     "resend_of",
};

static int
known_field(const char *k)
{
    for (size_t i = 0; i < sizeof known_fields / sizeof *known_fields; i++)
        if (strcmp(k, known_fields[i]) == 0)
            return 1;
    return 0;
}

static int
parse_fields(json_t *root, struct job *j, struct herr *e)
{
    const char *key, *s;
    json_t *v;
    size_t n;
    int rc;

    json_object_foreach(root, key, v)
    {
        if (!known_field(key)) {
            char field[HERR_FIELD_MAX];
            path_key(field, sizeof field, "", key);
            return fail(e, field,
                        key[0] ? "unknown field"
                               : "unknown field (empty name)");
        }
    }
    int has_template = json_object_get(root, "template") != NULL;

    if ((rc = get_tok(root, "id", 0, TOK_ID, JOB_ID_MAX, &j->id, e)) ||
        (rc = get_tok(root, "type", 1, TOK_TYPE, JOB_TYPE_MAX, &j->type, e)) ||
        (rc = get_tok(root, "org", 1, TOK_ORG, JOB_ORG_MAX, &j->org, e)) ||
        (rc = get_tok(root, "account", 1, TOK_ORG, JOB_ACCOUNT_MAX, &j->account,
                      e)) ||
        (rc = get_addr(root, "from", 1, &j->from, e)))
        return rc;
    if ((v = json_object_get(root, "from_name")) != NULL &&
        (rc = take_name("from_name", v, &j->from_name, e)))
        return rc;
    if ((rc = get_addr(root, "reply_to", 0, &j->reply_to, e)) ||
        (rc = parse_recipients(root, j, e)))
        return rc;

    if ((rc = get_str(root, "subject", "subject", !has_template, &s, &n, e)))
        return rc;
    if (s) {
        if (n > JOB_SUBJECT_MAX)
            return fail(e, "subject", "is %zu bytes, at most %d", n,
                        JOB_SUBJECT_MAX);
        if ((rc = check_text("subject", s, n, e)))
            return rc;
        j->subject = xstrndup(s, n);
    }
    if ((rc = get_str(root, "text", "text", 0, &s, &n, e)))
        return rc;
    if (s)
        j->text = xstrndup(s, n);
    if ((rc = get_str(root, "html", "html", 0, &s, &n, e)))
        return rc;
    if (s)
        j->html = xstrndup(s, n);
    if (!has_template && !j->text && !j->html)
        return fail(e, "text", "text or html is required (or a template)");

    if ((rc = get_tok(root, "template", 0, TOK_ORG, JOB_TEMPLATE_MAX,
                      &j->template_name, e)))
        return rc;
    if ((v = json_object_get(root, "data")) != NULL) {
        if (!json_is_object(v))
            return fail(e, "data", "must be an object");
        if (!has_template)
            return fail(e, "data", "only allowed with template");
        j->data_json = dump_compact(v, NULL);
    }

    if ((rc = parse_attachments(root, j, e)))
        return rc;

    if ((rc = get_str(root, "send_at", "send_at", 0, &s, &n, e)))
        return rc;
    if (s && clock_parse_rfc3339(s, &j->send_at_ms) != 0)
        return fail(e, "send_at",
                    "not an RFC 3339 time (like 2026-11-26T14:58:07Z)");

    j->priority = JOB_PRIO_NORMAL;
    if ((rc = get_str(root, "priority", "priority", 0, &s, &n, e)))
        return rc;
    if (s && job_priority_parse(s, &j->priority) != 0)
        return fail(e, "priority", "must be high, normal or low");

    if ((rc = parse_headers(root, j, e)))
        return rc;

    if ((v = json_object_get(root, "meta")) != NULL) {
        if (!json_is_object(v))
            return fail(e, "meta", "must be an object");
        j->meta_json = dump_compact(v, NULL);
    }
    if ((rc = get_tok(root, "resend_of", 0, TOK_ID, JOB_ID_MAX, &j->resend_of,
                      e)))
        return rc;
    return 0;
}

static json_t *build_json(const struct job *j, const char *id);

/*
 * Copies jansson's error text, which quotes the job near the fault: its
 * cut may split a UTF-8 sequence and it may hold control bytes, and the
 * message must stay one line of valid UTF-8.
 */
static void
clean_text(char *out, size_t outlen, const char *in)
{
    size_t n = strlen(in), o = 0;
    size_t valid = utf8_check((const unsigned char *)in, n);
    for (size_t i = 0; i < valid && o + 1 < outlen; i++) {
        unsigned char c = (unsigned char)in[i];
        out[o++] = c < 0x20 || c == 0x7F ? '?' : (char)c;
    }
    out[o] = '\0';
}

/* The id and org of a job that did not validate, when they can be read
 * (strings of their own valid forms) from its parsed top level. */
static void
read_ident(json_t *root, struct job_ident *who)
{
    const char *id = json_string_value(json_object_get(root, "id"));
    const char *org = json_string_value(json_object_get(root, "org"));
    if (id && job_valid_id(id))
        snprintf(who->id, sizeof who->id, "%s", id);
    if (org && job_valid_org(org))
        snprintf(who->org, sizeof who->org, "%s", org);
}

/* A job that cannot be parsed (not UTF-8, not JSON, too many values)
 * still names itself when it begins with its id: {"id":"…", as
 * herald-enqueue writes it. Nothing else is read. */
static void
prefix_ident(const char *raw, size_t len, struct job_ident *who)
{
    const char *p = raw, *end = raw + len;
    const char *steps[] = {"{", "\"id\"", ":", "\""};
    for (size_t i = 0; i < 4; i++) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        size_t n = strlen(steps[i]);
        if ((size_t)(end - p) < n || memcmp(p, steps[i], n) != 0)
            return;
        p += n;
    }
    const char *q =
        memchr(p, '"',
               (size_t)(end - p) < JOB_ID_MAX + 1 ? (size_t)(end - p)
                                                  : JOB_ID_MAX + 1);
    if (q == NULL || q == p)
        return;
    char id[JOB_ID_MAX + 1];
    memcpy(id, p, (size_t)(q - p));
    id[q - p] = '\0';
    if (job_valid_id(id))
        memcpy(who->id, id, (size_t)(q - p) + 1);
}

int
job_parse(const char *raw, size_t len, struct job **out, struct herr *e)
{
    return job_parse_ident(raw, len, out, e, NULL);
}

int
job_parse_ident(const char *raw, size_t len, struct job **out, struct herr *e,
                struct job_ident *who)
{
    *out = NULL;
    if (who)
        who->id[0] = who->org[0] = '\0';
    if (len > JOB_MAX_BYTES)
        return herr_set(e, HERR_TOOBIG, "", "job is %zu bytes, at most %u", len,
                        JOB_MAX_BYTES);
    if (raw == NULL && len > 0)
        return fail(e, "", "no job bytes");
    size_t bad = utf8_check((const unsigned char *)raw, len);
    if (bad < len) {
        if (who)
            prefix_ident(raw, len, who);
        return fail(e, "", "not valid UTF-8 at byte %zu", bad);
    }
    if (len == 0)
        return fail(e, "", "not JSON: empty input");

    json_error_t jerr;
    /* jfast: the same tree as json_loadb with JSON_REJECT_DUPLICATES |
     * JSON_DECODE_ANY, ten times sooner; the input is valid UTF-8. */
    json_t *root = jfast_loadb(raw, len, &jerr);
    if (root == NULL) {
        char text[sizeof jerr.text];
        clean_text(text, sizeof text, jerr.text);
        if (who)
            prefix_ident(raw, len, who);
        return fail(e, "", "not JSON: %s (line %d, column %d)", text, jerr.line,
                    jerr.column);
    }
    if (!json_is_object(root)) {
        int rc = fail(e, "", "job must be a JSON object, not %s",
                      json_type_name(root));
        json_decref(root);
        return rc;
    }
    struct job *j = xcalloc(1, sizeof *j);
    int rc = parse_fields(root, j, e);
    if (rc && who)
        read_ident(root, who);
    json_decref(root);
    if (rc == 0 && len > JOB_MAX_BYTES / 8) {
        /*
         * The canonical form (job_to_json, with an id assigned) must parse
         * again, so it must fit the cap too. It can outgrow the input only
         * by a few fields and by reals in data/meta (at most ~6x), so only
         * large jobs need the check.
         */
        json_t *c = build_json(j, "h-00000000000000000000000000000000");
        /* the size alone: json_dumpb without a buffer writes nothing */
        size_t clen = json_dumpb(c, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(c);
        if (clen > JOB_MAX_BYTES)
            rc = herr_set(e, HERR_TOOBIG, "",
                          "job is %zu bytes in canonical form, at most %u",
                          clen, JOB_MAX_BYTES);
    }
    if (rc) {
        job_free(j);
        return rc;
    }
    *out = j;
    return 0;
}

static void
free_addrs(struct job_addr *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(a[i].email);
        free(a[i].name);
    }
    free(a);
}

void
job_free(struct job *j)
{
    if (j == NULL)
        return;
    free(j->id);
    free(j->type);
    free(j->org);
    free(j->account);
    free(j->from);
    free(j->from_name);
    free(j->reply_to);
    free_addrs(j->to, j->nto);
    free_addrs(j->cc, j->ncc);
    free_addrs(j->bcc, j->nbcc);
    free(j->subject);
    free(j->text);
    free(j->html);
    free(j->template_name);
    free(j->data_json);
    for (size_t i = 0; i < j->nattachments; i++) {
        free(j->attachments[i].filename);
        free(j->attachments[i].content_type);
        free(j->attachments[i].data);
    }
    free(j->attachments);
    for (size_t i = 0; i < j->nheaders; i++) {
        free(j->headers[i].name);
        free(j->headers[i].value);
    }
    free(j->headers);
    free(j->meta_json);
    free(j->resend_of);
    free(j);
}

static void
random_bytes(unsigned char *p, size_t n)
{
    if (RAND_bytes(p, (int)n) == 1)
        return;
    size_t got = 0; /* the kernel's generator, as OpenSSL's would be */
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got < n) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"no random source\"}\n");
        abort();
    }
}

void
job_assign_id(struct job *j)
{
    if (j->id != NULL)
        return;
    unsigned char r[16];
    random_bytes(r, sizeof r);
    static const char hex[] = "0123456789abcdef";
    char id[2 + 32 + 1] = "h-";
    for (size_t i = 0; i < sizeof r; i++) {
        id[2 + 2 * i] = hex[r[i] >> 4];
        id[3 + 2 * i] = hex[r[i] & 0xF];
    }
    id[34] = '\0';
    j->id = xstrdup(id);
}

/* ---- serialization ----------------------------------------------------- */

static void
set_str(json_t *o, const char *key, const char *s)
{
    /* a parsed job's strings are valid UTF-8 (job.h): no second check */
    if (s != NULL)
        json_object_set_new(o, key, json_string_nocheck(s));
}

static json_t *
addr_json(const struct job_addr *a)
{
    if (a->name == NULL)
        return json_string_nocheck(a->email);
    json_t *o = json_object();
    set_str(o, "email", a->email);
    set_str(o, "name", a->name);
    return o;
}

static void
set_addrs(json_t *o, const char *key, const struct job_addr *a, size_t n)
{
    if (n == 0)
        return;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, addr_json(&a[i]));
    json_object_set_new(o, key, arr);
}

static void
set_raw_json(json_t *o, const char *key, const char *text)
{
    if (text == NULL)
        return;
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (v != NULL)
        json_object_set_new(o, key, v);
}

static json_t *
b64_json(const unsigned char *d, size_t n)
{
    size_t olen = (n + 2) / 3 * 4;
    char *s = xmalloc(olen + 1);
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        s[o++] = b64_alpha[v >> 18];
        s[o++] = b64_alpha[(v >> 12) & 63];
        s[o++] = b64_alpha[(v >> 6) & 63];
        s[o++] = b64_alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)d[i] << 16;
        s[o++] = b64_alpha[v >> 18];
        s[o++] = b64_alpha[(v >> 12) & 63];
        s[o++] = '=';
        s[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8;
        s[o++] = b64_alpha[v >> 18];
        s[o++] = b64_alpha[(v >> 12) & 63];
        s[o++] = b64_alpha[(v >> 6) & 63];
        s[o++] = '=';
    }
    json_t *str = json_stringn_nocheck(s, o);
    free(s);
    return str;
}

static json_t *
build_json(const struct job *j, const char *id)
{
    json_t *o = json_object();
    set_str(o, "id", j->id ? j->id : id);
    set_str(o, "type", j->type);
    set_str(o, "org", j->org);
    set_str(o, "account", j->account);
    set_str(o, "from", j->from);
    set_str(o, "from_name", j->from_name);
    set_str(o, "reply_to", j->reply_to);
    set_addrs(o, "to", j->to, j->nto);
    set_addrs(o, "cc", j->cc, j->ncc);
    set_addrs(o, "bcc", j->bcc, j->nbcc);
    set_str(o, "subject", j->subject);
    set_str(o, "text", j->text);
    set_str(o, "html", j->html);
    set_str(o, "template", j->template_name);
    set_raw_json(o, "data", j->data_json);
    if (j->nattachments) {
        json_t *arr = json_array();
        for (size_t i = 0; i < j->nattachments; i++) {
            const struct job_attachment *a = &j->attachments[i];
            json_t *x = json_object();
            set_str(x, "filename", a->filename);
            set_str(x, "content_type",
                    a->content_type ? a->content_type
                                    : "application/octet-stream");
            json_object_set_new(x, "content_base64", b64_json(a->data, a->len));
            json_array_append_new(arr, x);
        }
        json_object_set_new(o, "attachments", arr);
    }
    if (j->send_at_ms != 0) {
        char t[CLOCK_RFC3339_LEN];
        clock_rfc3339(j->send_at_ms, t);
        set_str(o, "send_at", t);
    }
    set_str(o, "priority", job_priority_name(j->priority));
    if (j->nheaders) {
        json_t *h = json_object();
        for (size_t i = 0; i < j->nheaders; i++)
            set_str(h, j->headers[i].name, j->headers[i].value);
        json_object_set_new(o, "headers", h);
    }
    set_raw_json(o, "meta", j->meta_json);
    set_str(o, "resend_of", j->resend_of);
    return o;
}

char *
job_to_json(const struct job *j)
{
    json_t *o = build_json(j, NULL);
    char *s = dump_compact(o, NULL);
    json_decref(o);
    return s;
}
