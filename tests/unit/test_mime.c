/*
 * test_mime — checks of the message builder at the byte level, plus (with
 * MIME_OUT=DIR) sample messages and their expectations for
 * tests/unit/mime_check.py, which parses them with Python's email package.
 */
#include "../../common/clock.h"
#include "../../common/mime.h"
#include "../../common/util.h"
#include "t.h"

#include <jansson.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define A(s) ((char *)(s))
#define DATE_MS INT64_C(1795705087000) /* 2026-11-26T14:58:07Z */

/* ---- building jobs ---- */

static void
job_init(struct job *j, const char *id)
{
    memset(j, 0, sizeof *j);
    j->id = A(id);
    j->type = A("notice");
    j->org = A("acme");
    j->account = A("acct-1");
    j->from = A("noreply@acme.test");
    j->priority = JOB_PRIO_NORMAL;
}

static struct mime_opts
opts_default(void)
{
    struct mime_opts o = {
        .from = {.name = "Acme Corp", .email = "noreply@acme.test"},
        .reply_to = NULL,
        .msgid_domain = "mail.acme.test",
        .date_ms = DATE_MS,
    };
    return o;
}

static char *
build(const struct job *j, const struct mime_opts *o, size_t *len)
{
    char *out = NULL;
    size_t n = 0;
    struct herr e = {{0}, {0}};
    int rc = mime_build(j, o, &out, &n, &e);
    CHECK_MSG(rc == 0, "mime_build: %d %s: %s", rc, e.field, e.msg);
    if (rc == 0)
        CHECK(strlen(out) == n); /* no NUL inside */
    if (len)
        *len = n;
    return out;
}

/* ---- reading messages ---- */

/* Every line end is CRLF; reports the longest line, the longest header
 * line (of any header block: message and parts are told apart by the
 * caller), and whether any line starts with `bad` (case-insensitive). */
struct lines {
    int crlf_only;
    size_t max_line;
    size_t max_top_hdr; /* in the top-level header block */
    int bad_start;
};

static struct lines
scan_lines(const char *p, size_t n, const char *bad1, const char *bad2)
{
    struct lines l = {1, 0, 0, 0};
    size_t st = 0;
    int in_hdr = 1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && (i + 1 >= n || p[i + 1] != '\n'))
            l.crlf_only = 0;
        if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
            l.crlf_only = 0;
        if (p[i] == '\n' || i + 1 == n) {
            size_t end = p[i] == '\n' ? i - (i > 0 && p[i - 1] == '\r') : n;
            size_t len = end - st;
            if (len > l.max_line)
                l.max_line = len;
            if (in_hdr && len > l.max_top_hdr)
                l.max_top_hdr = len;
            if (len == 0)
                in_hdr = 0;
            if ((bad1 && strncasecmp(p + st, bad1, strlen(bad1)) == 0) ||
                (bad2 && strncasecmp(p + st, bad2, strlen(bad2)) == 0))
                l.bad_start = 1;
            st = i + 1;
        }
    }
    return l;
}

/* The unfolded value of header `name` in the block at `p` (ends at the
 * first empty line), leading whitespace removed; NULL when absent. */
static char *
hdr_get(const char *p, const char *name)
{
    size_t nl = strlen(name);
    while (*p && !(p[0] == '\r' && p[1] == '\n')) {
        const char *eol = strstr(p, "\r\n");
        if (eol == NULL)
            return NULL;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            struct buf b;
            buf_init(&b, 0);
            const char *v = p + nl + 1;
            for (;;) {
                buf_append(&b, v, (size_t)(eol - v));
                if (eol[2] != ' ' && eol[2] != '\t')
                    break;
                v = eol + 2;
                eol = strstr(v, "\r\n");
            }
            char *s = buf_take(&b, NULL);
            size_t k = strspn(s, " \t");
            memmove(s, s + k, strlen(s + k) + 1);
            return s;
        }
        p = eol + 2;
    }
    return NULL;
}

/* Names of the headers in the block at p, in order; returns the count. */
static int
hdr_names(const char *p, char names[][80], int max)
{
    int n = 0;
    while (*p && !(p[0] == '\r' && p[1] == '\n')) {
        const char *eol = strstr(p, "\r\n");
        if (eol == NULL)
            break;
        if (p[0] != ' ' && p[0] != '\t' && n < max) {
            size_t k = strcspn(p, ":\r");
            if (k >= 80)
                k = 79;
            memcpy(names[n], p, k);
            names[n][k] = '\0';
            n++;
        }
        p = eol + 2;
    }
    return n;
}

static const char *
body_of(const char *p)
{
    const char *s = strstr(p, "\r\n\r\n");
    return s ? s + 4 : NULL;
}

/* boundary="..." of a Content-Type value, copied into out */
static int
boundary_of(const char *ctype, char *out, size_t outlen)
{
    const char *s = strstr(ctype, "boundary=\"");
    if (s == NULL)
        return -1;
    s += 10;
    size_t k = strcspn(s, "\"");
    if (k + 1 > outlen)
        return -1;
    memcpy(out, s, k);
    out[k] = '\0';
    return 0;
}

struct part {
    const char *p; /* headers, blank line, body */
    size_t len;
};

/* Splits a multipart body by its boundary; returns the number of parts or
 * -1 when the delimiter structure is wrong. */
static int
split_parts(const char *body, const char *boundary, struct part *parts, int max)
{
    char d[128];
    snprintf(d, sizeof d, "--%s\r\n", boundary);
    if (strncmp(body, d, strlen(d)) != 0)
        return -1;
    const char *p = body + strlen(d);
    int n = 0;
    char mid[128], end[128];
    snprintf(mid, sizeof mid, "\r\n--%s\r\n", boundary);
    snprintf(end, sizeof end, "\r\n--%s--\r\n", boundary);
    for (;;) {
        const char *m = strstr(p, mid), *e = strstr(p, end);
        if (e == NULL)
            return -1;
        const char *stop = (m && m < e) ? m : e;
        if (n >= max)
            return -1;
        parts[n].p = p;
        parts[n].len = (size_t)(stop - p);
        n++;
        if (stop == e)
            break;
        p = m + strlen(mid);
    }
    return n;
}

static char *
part_dup(const struct part *pt)
{
    return xstrndup(pt->p, pt->len);
}

static int
hexv(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static char *
qp_decode(const char *s, size_t *len)
{
    struct buf b;
    buf_init(&b, 0);
    while (*s) {
        if (s[0] == '=' && s[1] == '\r' && s[2] == '\n') {
            s += 3;
        } else if (s[0] == '=' && hexv(s[1]) >= 0 && hexv(s[2]) >= 0) {
            char c = (char)(hexv(s[1]) * 16 + hexv(s[2]));
            buf_append(&b, &c, 1);
            s += 3;
        } else {
            buf_append(&b, s, 1);
            s++;
        }
    }
    return buf_take(&b, len);
}

static int
b64v(int c)
{
    const char *t =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(t, c) : NULL;
    return p ? (int)(p - t) : -1;
}

static unsigned char *
b64_decode(const char *s, size_t n, size_t *len)
{
    struct buf b;
    buf_init(&b, 0);
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64v(s[i]);
        if (v < 0)
            continue;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char c = (char)((acc >> bits) & 0xff);
            buf_append(&b, &c, 1);
        }
    }
    return (unsigned char *)buf_take(&b, len);
}

/* Decodes an unfolded unstructured value with RFC 2047 encoded words
 * (utf-8, Q or B); whitespace between adjacent encoded words is dropped. */
static char *
ew_decode(const char *v)
{
    struct buf b;
    buf_init(&b, 0);
    int prev_ew = 0;
    const char *p = v;
    while (*p) {
        size_t ws = strspn(p, " \t");
        const char *tok = p + ws;
        size_t tl = strcspn(tok, " \t");
        int ew = tl > 12 && strncasecmp(tok, "=?utf-8?", 8) == 0 &&
                 tok[9] == '?' && tok[tl - 2] == '?' && tok[tl - 1] == '=';
        if (!(ew && prev_ew))
            buf_append(&b, p, ws);
        if (ew) {
            char enc = (char)(tok[8] | 0x20);
            const char *d = tok + 10;
            size_t dl = tl - 12;
            if (enc == 'b') {
                size_t n;
                unsigned char *raw = b64_decode(d, dl, &n);
                buf_append(&b, raw, n);
                free(raw);
            } else {
                for (size_t i = 0; i < dl; i++) {
                    if (d[i] == '_') {
                        buf_append(&b, " ", 1);
                    } else if (d[i] == '=' && i + 2 < dl) {
                        char c = (char)(hexv(d[i + 1]) * 16 + hexv(d[i + 2]));
                        buf_append(&b, &c, 1);
                        i += 2;
                    } else {
                        buf_append(&b, &d[i], 1);
                    }
                }
            }
        } else {
            buf_append(&b, tok, tl);
        }
        prev_ew = ew;
        p = tok + tl;
    }
    return buf_take(&b, NULL);
}

/* Every encoded word in the header block at p is at most 75 octets. */
static int
ew_sizes_ok(const char *p)
{
    const char *end = strstr(p, "\r\n\r\n");
    for (const char *s = strstr(p, "=?"); s && s < end; s = strstr(s, "=?")) {
        const char *q = strstr(s + 2, "?=");
        /* skip the charset and encoding markers */
        const char *t = strchr(s + 2, '?');
        if (t == NULL)
            return 0;
        t = strchr(t + 1, '?');
        if (t == NULL)
            return 0;
        q = strstr(t + 1, "?=");
        if (q == NULL || q + 2 - s > 75)
            return 0;
        s = q + 2;
    }
    return 1;
}

/* Text with bare CR / LF rewritten as CRLF. */
static char *
crlf(const char *s)
{
    struct buf b;
    buf_init(&b, 0);
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n') {
            if (s[0] == '\r' && s[1] == '\n')
                s++;
            buf_puts(&b, "\r\n");
        } else {
            buf_append(&b, s, 1);
        }
    }
    return buf_take(&b, NULL);
}

/* What mime does to a header value: each run of CR and LF becomes one
 * space. Returns a new string. */
static char *
flat(const char *s)
{
    struct buf b;
    buf_init(&b, 0);
    while (*s) {
        size_t k = strcspn(s, "\r\n");
        buf_append(&b, s, k);
        s += k;
        if (*s) {
            buf_puts(&b, " ");
            s += strspn(s, "\r\n");
        }
    }
    return buf_take(&b, NULL);
}

/* The decoded body of a leaf part (headers, blank line, body). */
static char *
leaf_body(const char *part, size_t *len)
{
    char *cte = hdr_get(part, "Content-Transfer-Encoding");
    const char *body = body_of(part);
    char *out = NULL;
    if (cte && body) {
        if (strcasecmp(cte, "quoted-printable") == 0)
            out = qp_decode(body, len);
        else if (strcasecmp(cte, "base64") == 0)
            out = (char *)b64_decode(body, strlen(body), len);
        else {
            out = xstrdup(body);
            *len = strlen(out);
        }
    }
    free(cte);
    return out;
}

/* ---- tests ---- */

static void
test_text_only(void)
{
    struct job j;
    job_init(&j, "order-42");
    struct job_addr to[2] = {{A("ann@example.org"), A("Ann Smith")},
                             {A("bob@example.org"), NULL}};
    struct job_addr cc[1] = {{A("carol@example.org"), A("Doe, Carol")}};
    struct job_addr bcc[2] = {{A("secret-bcc1@hidden.example"), A("Hidden")},
                              {A("secret-bcc2@hidden.example"), NULL}};
    struct job_header xh[1] = {{A("X-Campaign"), A("spring sale")}};
    j.to = to;
    j.nto = 2;
    j.cc = cc;
    j.ncc = 1;
    j.bcc = bcc;
    j.nbcc = 2;
    j.subject = A("Your order");
    j.text = A("Hello Ann,\nyour order shipped.\n");
    j.headers = xh;
    j.nheaders = 1;
    struct mime_opts o = opts_default();
    o.reply_to = "support@acme.test";

    size_t n;
    char *m = build(&j, &o, &n);
    if (m == NULL)
        return;
    char names[32][80];
    int k = hdr_names(m, names, 32);
    const char *want[] = {
        "Date",       "From",         "Reply-To",
        "To",         "Cc",           "Subject",
        "Message-ID", "MIME-Version", "X-Herald-Id",
        "X-Campaign", "Content-Type", "Content-Transfer-Encoding"};
    CHECK(k == (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < k && i < (int)(sizeof want / sizeof want[0]); i++)
        CHECK_STR(names[i], want[i]);

    char date[40];
    clock_rfc5322(DATE_MS, date);
    char *v = hdr_get(m, "Date");
    CHECK_STR(v, date);
    free(v);
    v = hdr_get(m, "From");
    CHECK_STR(v, "Acme Corp <noreply@acme.test>");
    free(v);
    v = hdr_get(m, "Reply-To");
    CHECK_STR(v, "support@acme.test");
    free(v);
    v = hdr_get(m, "To");
    CHECK_STR(v, "Ann Smith <ann@example.org>, bob@example.org");
    free(v);
    v = hdr_get(m, "Cc");
    CHECK_STR(v, "\"Doe, Carol\" <carol@example.org>");
    free(v);
    v = hdr_get(m, "Subject");
    CHECK_STR(v, "Your order");
    free(v);
    v = hdr_get(m, "X-Herald-Id");
    CHECK_STR(v, "order-42");
    free(v);
    v = hdr_get(m, "X-Campaign");
    CHECK_STR(v, "spring sale");
    free(v);
    v = hdr_get(m, "MIME-Version");
    CHECK_STR(v, "1.0");
    free(v);
    v = hdr_get(m, "Content-Type");
    CHECK_STR(v, "text/plain; charset=utf-8");
    free(v);
    v = hdr_get(m, "Content-Transfer-Encoding");
    CHECK_STR(v, "7bit");
    free(v);
    CHECK_STR(body_of(m), "Hello Ann,\r\nyour order shipped.\r\n");

    /* Bcc: no header, no address, no name anywhere */
    CHECK(hdr_get(m, "Bcc") == NULL);
    CHECK(strstr(m, "secret-bcc") == NULL);
    CHECK(strstr(m, "Hidden") == NULL);
    struct lines l = scan_lines(m, n, "Bcc:", NULL);
    CHECK(l.crlf_only);
    CHECK(!l.bad_start);
    CHECK(l.max_line <= 78);
    free(m);

    /* no reply_to in opts: no Reply-To header; no cc: no Cc header */
    o.reply_to = NULL;
    j.ncc = 0;
    m = build(&j, &o, &n);
    if (m) {
        CHECK(hdr_get(m, "Reply-To") == NULL);
        CHECK(hdr_get(m, "Cc") == NULL);
        k = hdr_names(m, names, 32);
        CHECK(k == 10);
        if (k >= 4)
            CHECK_STR(names[2], "To");
    }
    free(m);
}

static void
test_structure(void)
{
    struct job j;
    job_init(&j, "struct-1");
    struct job_addr to[1] = {{A("ann@example.org"), NULL}};
    j.to = to;
    j.nto = 1;
    j.subject = A("s");
    struct mime_opts o = opts_default();

    /* html only */
    j.html = A("<p>Hi</p>");
    char *m = build(&j, &o, NULL);
    char *v = m ? hdr_get(m, "Content-Type") : NULL;
    CHECK_STR(v, "text/html; charset=utf-8");
    free(v);
    if (m)
        CHECK_STR(body_of(m), "<p>Hi</p>\r\n");
    free(m);

    /* text + html: multipart/alternative, text first */
    j.text = A("Hi");
    m = build(&j, &o, NULL);
    v = m ? hdr_get(m, "Content-Type") : NULL;
    CHECK(v && strncmp(v, "multipart/alternative;", 22) == 0);
    char bnd[128] = "";
    CHECK(v && boundary_of(v, bnd, sizeof bnd) == 0);
    CHECK(hdr_get(m, "Content-Transfer-Encoding") == NULL);
    free(v);
    struct part parts[8];
    int np = m ? split_parts(body_of(m), bnd, parts, 8) : -1;
    CHECK(np == 2);
    if (np == 2) {
        char *p0 = part_dup(&parts[0]), *p1 = part_dup(&parts[1]);
        v = hdr_get(p0, "Content-Type");
        CHECK_STR(v, "text/plain; charset=utf-8");
        free(v);
        CHECK_STR(body_of(p0), "Hi");
        v = hdr_get(p1, "Content-Type");
        CHECK_STR(v, "text/html; charset=utf-8");
        free(v);
        CHECK_STR(body_of(p1), "<p>Hi</p>");
        free(p0);
        free(p1);
    }
    free(m);

    /* + attachments: multipart/mixed { alternative, att, att } */
    unsigned char bin[1000];
    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = (unsigned char)(i * 7 + 3);
    struct job_attachment att[2] = {
        {A("data.bin"), A("application/octet-stream"), bin, sizeof bin},
        {A("note.txt"), NULL, (unsigned char *)"abc", 3}};
    j.attachments = att;
    j.nattachments = 2;
    size_t n;
    m = build(&j, &o, &n);
    v = m ? hdr_get(m, "Content-Type") : NULL;
    CHECK(v && strncmp(v, "multipart/mixed;", 16) == 0);
    char outer[128] = "";
    CHECK(v && boundary_of(v, outer, sizeof outer) == 0);
    free(v);
    np = m ? split_parts(body_of(m), outer, parts, 8) : -1;
    CHECK(np == 3);
    if (np == 3) {
        char *p0 = part_dup(&parts[0]);
        v = hdr_get(p0, "Content-Type");
        CHECK(v && strncmp(v, "multipart/alternative;", 22) == 0);
        char inner[128] = "";
        CHECK(v && boundary_of(v, inner, sizeof inner) == 0);
        CHECK(strcmp(inner, outer) != 0);
        struct part ip[4];
        CHECK(split_parts(body_of(p0), inner, ip, 4) == 2);
        free(v);
        free(p0);

        char *p1 = part_dup(&parts[1]);
        v = hdr_get(p1, "Content-Type");
        CHECK_STR(v, "application/octet-stream; name=\"data.bin\"");
        free(v);
        v = hdr_get(p1, "Content-Disposition");
        CHECK_STR(v, "attachment; filename=\"data.bin\"");
        free(v);
        size_t dl = 0;
        char *d = leaf_body(p1, &dl);
        CHECK(d && dl == sizeof bin && memcmp(d, bin, dl) == 0);
        free(d);
        /* base64 lines: 76 columns but the last */
        const char *b = body_of(p1);
        size_t full = 0, lines = 0;
        for (const char *s = b; s && *s;) {
            size_t k = strcspn(s, "\r\n");
            lines++;
            if (k == 76)
                full++;
            CHECK(k <= 76);
            s += k;
            s += strspn(s, "\r\n");
        }
        CHECK(lines == (sizeof bin + 56) / 57 && full == lines - 1);
        free(p1);

        char *p2 = part_dup(&parts[2]);
        v = hdr_get(p2, "Content-Type");
        CHECK_STR(v, "application/octet-stream; name=\"note.txt\"");
        free(v);
        d = leaf_body(p2, &dl);
        CHECK(d && dl == 3 && memcmp(d, "abc", 3) == 0);
        free(d);
        free(p2);
    }
    struct lines l = m ? scan_lines(m, n, NULL, NULL) : (struct lines){0};
    CHECK(l.crlf_only && l.max_line <= 78);
    free(m);

    /* text only + attachment: mixed { text/plain, att } */
    j.html = NULL;
    j.nattachments = 1;
    m = build(&j, &o, NULL);
    v = m ? hdr_get(m, "Content-Type") : NULL;
    CHECK(v && boundary_of(v, outer, sizeof outer) == 0);
    free(v);
    np = m ? split_parts(body_of(m), outer, parts, 8) : -1;
    CHECK(np == 2);
    if (np == 2) {
        char *p0 = part_dup(&parts[0]);
        v = hdr_get(p0, "Content-Type");
        CHECK_STR(v, "text/plain; charset=utf-8");
        free(v);
        free(p0);
    }
    free(m);

    /* a composite type cannot be base64: sent as octet-stream */
    att[0].content_type = A("message/rfc822");
    m = build(&j, &o, NULL);
    CHECK(m && strstr(m, "message/rfc822") == NULL);
    CHECK(m && strstr(m, "application/octet-stream; name=\"data.bin\""));
    free(m);

    /* neither text nor html: an empty text/plain body */
    j.text = NULL;
    j.nattachments = 0;
    m = build(&j, &o, NULL);
    v = m ? hdr_get(m, "Content-Type") : NULL;
    CHECK_STR(v, "text/plain; charset=utf-8");
    free(v);
    if (m)
        CHECK_STR(body_of(m), "");
    free(m);
}

static void
test_bodies(void)
{
    struct job j;
    job_init(&j, "body-1");
    struct job_addr to[1] = {{A("ann@example.org"), NULL}};
    j.to = to;
    j.nto = 1;
    j.subject = A("s");
    struct mime_opts o = opts_default();

    /* bare LF and CR become CRLF; ASCII stays 7bit */
    j.text = A("a\nb\rc\r\nd\n\n.\n.dot\nFrom me\n");
    char *m = build(&j, &o, NULL);
    char *v = m ? hdr_get(m, "Content-Transfer-Encoding") : NULL;
    CHECK_STR(v, "7bit");
    free(v);
    if (m)
        CHECK_STR(body_of(m),
                  "a\r\nb\r\nc\r\nd\r\n\r\n.\r\n.dot\r\nFrom me\r\n");
    free(m);

    /* no trailing newline: the message still ends with CRLF */
    j.text = A("end");
    m = build(&j, &o, NULL);
    if (m)
        CHECK_STR(body_of(m), "end\r\n");
    free(m);

    /* non-ASCII, trailing whitespace, '=' and a 3000-octet line: QP */
    struct buf t;
    buf_init(&t, 0);
    buf_puts(&t, "Caf\xc3\xa9 = 1 \ntab\t\n");
    for (int i = 0; i < 3000; i++)
        buf_append(&t, &"abcdefghij"[i % 10], 1);
    buf_puts(&t, "\n\xf0\x9f\x98\x80 end  ");
    char *text = buf_take(&t, NULL);
    j.text = text;
    size_t n;
    m = build(&j, &o, &n);
    v = m ? hdr_get(m, "Content-Transfer-Encoding") : NULL;
    CHECK_STR(v, "quoted-printable");
    free(v);
    if (m) {
        const char *b = body_of(m);
        size_t dl;
        char *d = qp_decode(b, &dl);
        char *want = crlf(text);
        /* the message's final CRLF is not part of the text */
        CHECK(dl == strlen(want) + 2 && memcmp(d, want, dl - 2) == 0);
        free(d);
        free(want);
        for (const char *s = b; *s;) {
            size_t k = strcspn(s, "\r\n");
            CHECK_MSG(k <= 76, "qp line of %zu", k);
            /* no whitespace right before a line end */
            if (k > 0)
                CHECK(s[k - 1] != ' ' && s[k - 1] != '\t');
            s += k;
            s += strspn(s, "\r\n");
        }
        struct lines l = scan_lines(m, n, NULL, NULL);
        CHECK(l.crlf_only && l.max_line <= 78);
    }
    free(m);
    free(text);

    /* pure ASCII but a line over 998 octets: QP as well */
    text = xmalloc(1200);
    memset(text, 'x', 1199);
    text[1199] = '\0';
    j.text = text;
    m = build(&j, &o, &n);
    v = m ? hdr_get(m, "Content-Transfer-Encoding") : NULL;
    CHECK_STR(v, "quoted-printable");
    free(v);
    free(m);
    text[998] = '\n';
    m = build(&j, &o, &n);
    v = m ? hdr_get(m, "Content-Transfer-Encoding") : NULL;
    CHECK_STR(v, "7bit"); /* 998 is allowed */
    free(v);
    if (m)
        CHECK(scan_lines(m, n, NULL, NULL).max_line == 998);
    free(m);
    free(text);

    /* a control character other than TAB: QP */
    j.text = A("bell\a");
    m = build(&j, &o, NULL);
    v = m ? hdr_get(m, "Content-Transfer-Encoding") : NULL;
    CHECK_STR(v, "quoted-printable");
    free(v);
    if (m)
        CHECK_STR(body_of(m), "bell=07\r\n");
    free(m);
}

/* dot-atom-text "@" dot-atom-text between angle brackets */
static int
valid_dot_atom(const char *s, size_t n)
{
    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (s[i + 1] == '.')
                return 0;
        } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') ||
                     strchr("!#$%&'*+-/=?^_`{|}~", c))) {
            return 0;
        }
    }
    return 1;
}

static int
valid_msgid(const char *m)
{
    size_t n = strlen(m);
    if (n < 5 || m[0] != '<' || m[n - 1] != '>')
        return 0;
    const char *at = strchr(m, '@');
    if (at == NULL || strchr(at + 1, '@'))
        return 0;
    return valid_dot_atom(m + 1, (size_t)(at - m - 1)) &&
           valid_dot_atom(at + 1, (size_t)(m + n - 1 - at - 1));
}

static void
test_message_id(void)
{
    const char *ids[] = {
        "a:b",   "..x..", "-",     ".",    ":",
        "a.b",   "a..b",  "a...b", ".a",   "a.",
        "x_y-z", "1:2:3", "a.b.c", "a:.b", "h-0123456789abcdef",
        "A.:b"};
    size_t nid = sizeof ids / sizeof ids[0];
    char *mids[sizeof ids / sizeof ids[0]];
    for (size_t i = 0; i < nid; i++) {
        mids[i] = mime_message_id(ids[i], "mail.acme.test");
        CHECK_MSG(valid_msgid(mids[i]), "%s -> %s", ids[i], mids[i]);
        CHECK(strncmp(mids[i], "<herald.", 8) == 0);
        CHECK(strstr(mids[i], "@mail.acme.test>") != NULL);
        /* deterministic */
        char *again = mime_message_id(ids[i], "mail.acme.test");
        CHECK_STR(again, mids[i]);
        free(again);
    }
    /* one-to-one */
    for (size_t i = 0; i < nid; i++)
        for (size_t k = i + 1; k < nid; k++)
            CHECK_MSG(strcmp(mids[i], mids[k]) != 0, "%s and %s", ids[i],
                      ids[k]);
    for (size_t i = 0; i < nid; i++)
        free(mids[i]);

    /* the documented encoding */
    char *s = mime_message_id("a:b", "example.com");
    CHECK_STR(s, "<herald.a=3Ab@example.com>");
    free(s);
    s = mime_message_id("..x..", "example.com");
    CHECK_STR(s, "<herald.=2E=2Ex.=2E@example.com>");
    free(s);
    s = mime_message_id("-", "example.com");
    CHECK_STR(s, "<herald.-@example.com>");
    free(s);
    s = mime_message_id("order.42", "example.com");
    CHECK_STR(s, "<herald.order.42@example.com>");
    free(s);

    /* a longest id, all colons: still valid and under one line */
    char longid[JOB_ID_MAX + 1];
    memset(longid, ':', JOB_ID_MAX);
    longid[JOB_ID_MAX] = '\0';
    s = mime_message_id(longid, "example.com");
    CHECK(valid_msgid(s) && strlen(s) < 998 - 12);
    free(s);
    /* an unusable domain is never written */
    s = mime_message_id("a", "bad domain\r\n");
    CHECK(valid_msgid(s) && strchr(s, '\r') == NULL);
    free(s);

    /* in the message: the same header for the same job, each time */
    struct job j;
    job_init(&j, "a:b");
    struct job_addr to[1] = {{A("ann@example.org"), NULL}};
    j.to = to;
    j.nto = 1;
    j.subject = A("s");
    j.text = A("t");
    j.html = A("<b>t</b>");
    struct mime_opts o = opts_default();
    size_t n1, n2;
    char *m1 = build(&j, &o, &n1), *m2 = build(&j, &o, &n2);
    CHECK(m1 && m2 && n1 == n2 && memcmp(m1, m2, n1) == 0);
    char *v = m1 ? hdr_get(m1, "Message-ID") : NULL;
    s = mime_message_id("a:b", "mail.acme.test");
    CHECK_STR(v, s);
    free(s);
    free(v);
    free(m2);
    /* different content, same id: same Message-ID */
    j.subject = A("another subject");
    m2 = build(&j, &o, NULL);
    char *v1 = m1 ? hdr_get(m1, "Message-ID") : NULL;
    char *v2 = m2 ? hdr_get(m2, "Message-ID") : NULL;
    CHECK(v1 && v2 && strcmp(v1, v2) == 0);
    free(v1);
    free(v2);
    free(m1);
    free(m2);
}

static void
test_folding(void)
{
    struct job j;
    job_init(&j, "fold-1");
    struct mime_opts o = opts_default();
    j.text = A("t");

    /* 100 recipients with names (some quoted, some encoded) */
    struct job_addr to[50], cc[50];
    char names[100][64], mails[100][64];
    for (int i = 0; i < 100; i++) {
        snprintf(mails[i], 64, "recipient%03d@example.org", i);
        if (i % 3 == 0)
            snprintf(names[i], 64, "Recipient Number %d", i);
        else if (i % 3 == 1)
            snprintf(names[i], 64, "Last%d, First \"Nick\"", i);
        else
            snprintf(names[i], 64,
                     "Z\xc3\xb6\xc3\xab %d \xe5\xb1\xb1\xe7\x94\xb0", i);
        struct job_addr *a = i < 50 ? &to[i] : &cc[i - 50];
        a->email = mails[i];
        a->name = names[i];
    }
    j.to = to;
    j.nto = 50;
    j.cc = cc;
    j.ncc = 50;

    /* a long ASCII subject with spaces: folded, not encoded */
    struct buf sb;
    buf_init(&sb, 0);
    while (sb.len < 900)
        buf_puts(&sb, "lorem ipsum dolor sit amet ");
    char *subj = buf_take(&sb, NULL);
    j.subject = subj;
    size_t n;
    char *m = build(&j, &o, &n);
    if (m) {
        struct lines l = scan_lines(m, n, NULL, NULL);
        CHECK(l.crlf_only);
        CHECK_MSG(l.max_top_hdr <= 78, "header line of %zu", l.max_top_hdr);
        char *v = hdr_get(m, "Subject");
        CHECK_STR(v, subj);
        CHECK(v && strstr(v, "=?") == NULL);
        free(v);
        CHECK(ew_sizes_ok(m));
        for (int i = 0; i < 100; i++)
            CHECK(strstr(m, mails[i]) != NULL);
    }
    free(m);
    free(subj);

    /* 998 octets with no space: encoded words split it */
    subj = xmalloc(999);
    for (int i = 0; i < 998; i++)
        subj[i] = (char)('a' + i % 26);
    subj[998] = '\0';
    j.subject = subj;
    m = build(&j, &o, &n);
    if (m) {
        struct lines l = scan_lines(m, n, NULL, NULL);
        CHECK_MSG(l.max_top_hdr <= 78, "header line of %zu", l.max_top_hdr);
        CHECK(ew_sizes_ok(m));
        char *v = hdr_get(m, "Subject");
        char *d = v ? ew_decode(v) : NULL;
        CHECK_STR(d, subj);
        free(d);
        free(v);
    }
    free(m);

    /* 998 octets of CJK and emoji */
    struct buf u;
    buf_init(&u, 0);
    while (u.len + 7 <= 998)
        buf_puts(&u, "\xe6\x97\xa5\xf0\x9f\x8e\x89"); /* 日🎉 */
    free(subj);
    subj = buf_take(&u, NULL);
    j.subject = subj;
    m = build(&j, &o, &n);
    if (m) {
        struct lines l = scan_lines(m, n, NULL, NULL);
        CHECK_MSG(l.max_top_hdr <= 78, "header line of %zu", l.max_top_hdr);
        CHECK(ew_sizes_ok(m));
        char *v = hdr_get(m, "Subject");
        char *d = v ? ew_decode(v) : NULL;
        CHECK_STR(d, subj);
        free(d);
        free(v);
    }
    free(m);
    free(subj);

    /* a long X- header name leaves no room: never over 998 anyway */
    char xname[JOB_HEADER_NAME_MAX + 1];
    memset(xname, 'Y', sizeof xname);
    xname[0] = 'X';
    xname[1] = '-';
    xname[JOB_HEADER_NAME_MAX] = '\0';
    char *xval = xmalloc(JOB_HEADER_VALUE_MAX + 1);
    memset(xval, 'v', JOB_HEADER_VALUE_MAX);
    xval[JOB_HEADER_VALUE_MAX] = '\0';
    struct job_header xh[2] = {{xname, xval}, {A("X-Short"), xval}};
    j.headers = xh;
    j.nheaders = 2;
    j.subject = A("s");
    m = build(&j, &o, &n);
    if (m) {
        struct lines l = scan_lines(m, n, NULL, NULL);
        CHECK(l.max_line <= 998);
        char *v = hdr_get(m, xname);
        CHECK_STR(v, xval);
        free(v);
        v = hdr_get(m, "X-Short");
        CHECK_STR(v, xval);
        free(v);
    }
    free(m);
    free(xval);
}

static void
test_injection(void)
{
    const char *evil = "x\r\nBcc: evil@x\r\nevil: 1\nBcc: evil@y\rBcc: evil@z";
    struct job j;
    job_init(&j, "inj-1");
    struct job_addr to[2] = {{A("ann@example.org"), A(evil)},
                             {A("bob@example.org"), A("\r\nBcc: evil@x")}};
    struct job_addr cc[1] = {{A("carol@example.org"), A(evil)}};
    struct job_header xh[3] = {{A("X-Evil"), A(evil)},
                               {A("X-Long"), A("a b\r\n\r\nBcc: evil@x")},
                               {A("X-Utf"), A("\xc3\xa9\r\nBcc: evil@x")}};
    struct job_attachment att[1] = {
        {A(evil), A("text/plain"), (unsigned char *)"hi", 2}};
    j.to = to;
    j.nto = 2;
    j.cc = cc;
    j.ncc = 1;
    j.subject = A(evil);
    j.headers = xh;
    j.nheaders = 3;
    j.text = A("clean body");
    j.attachments = att;
    j.nattachments = 1;
    struct mime_opts o = opts_default();
    o.from.name = evil;

    size_t n;
    char *m = build(&j, &o, &n);
    if (m) {
        struct lines l = scan_lines(m, n, "Bcc:", "evil");
        CHECK(l.crlf_only);
        CHECK(!l.bad_start);
        CHECK(l.max_line <= 78);
        CHECK(hdr_get(m, "Bcc") == NULL);
        /* the values survive, line breaks turned into spaces */
        char *want = flat(evil);
        CHECK_STR(want, "x Bcc: evil@x evil: 1 Bcc: evil@y Bcc: evil@z");
        char *v = hdr_get(m, "Subject");
        char *d = v ? ew_decode(v) : NULL;
        CHECK_STR(d, want);
        free(d);
        free(v);
        v = hdr_get(m, "X-Evil");
        d = v ? ew_decode(v) : NULL;
        CHECK_STR(d, want);
        free(d);
        free(v);
        v = hdr_get(m, "X-Long");
        CHECK_STR(v, "a b Bcc: evil@x");
        free(v);
        v = hdr_get(m, "X-Utf");
        d = v ? ew_decode(v) : NULL;
        CHECK_STR(d, "\xc3\xa9 Bcc: evil@x");
        free(d);
        free(v);
        v = hdr_get(m, "To");
        char *q = xasprintf("\"%s\" <ann@example.org>", want);
        CHECK(v && strstr(v, q) != NULL);
        free(q);
        free(v);
        free(want);
    }
    free(m);

    /* what cannot be encoded is refused */
    struct herr e;
    char *out = NULL;
    size_t len = 0;
    to[0].email = A("ann@example.org\r\nBcc: evil@x");
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID);
    CHECK_STR(e.field, "to[0]");
    CHECK(out == NULL);
    const char *bad[] = {"a,b@example.org",
                         "a b@example.org",
                         "@example.org",
                         "ann@",
                         "ann",
                         "ann@exa mple.org",
                         "\xc3\xa9@example.org",
                         "a..b@example.org",
                         "\"a\"b\"@x.org",
                         "ann@[1.2.3.4",
                         "ann@x.org>, evil@x.org"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        to[0].email = A(bad[i]);
        CHECK_MSG(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID, "%s",
                  bad[i]);
    }
    const char *good[] = {"\"a b,c\"@example.org", "ann@[192.0.2.1]",
                          "a.b+tag@localhost", "\"q\\\"x\"@example.org"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        to[0].email = A(good[i]);
        CHECK_MSG(mime_build(&j, &o, &out, &len, &e) == 0, "%s", good[i]);
        if (out)
            CHECK(strstr(out, good[i]) != NULL);
        free(out);
        out = NULL;
    }
    to[0].email = A("ann@example.org");
    cc[0].email = A("<carol@example.org>");
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID);
    CHECK_STR(e.field, "cc[0]");
    cc[0].email = A("carol@example.org");
    xh[1].name = A("X-A\r\nBcc");
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID);
    CHECK_STR(e.field, "headers[1]");
    xh[1].name = A("Bcc");
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID);
    CHECK_STR(e.field, "headers[1]");
    xh[1].name = A("X-Colon:");
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID);
    xh[1].name = A("X-Long");
    att[0].content_type = A("text/plain\r\nBcc: evil@x");
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID);
    CHECK_STR(e.field, "attachments[0]");
    att[0].content_type = A("text/plain");
    o.reply_to = "a@b\r\nBcc: evil@x";
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID);
    CHECK_STR(e.field, "reply_to");
    o.reply_to = NULL;
    o.from.email = "a@b\nBcc: evil@x";
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID);
    CHECK_STR(e.field, "from");
    o.from.email = "noreply@acme.test";
    o.msgid_domain = "x\r\nBcc: evil@x";
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID);
    CHECK_STR(e.field, "msgid_domain");
    o.msgid_domain = "mail.acme.test";
    j.id = A("a\r\nBcc: evil@x");
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID);
    CHECK_STR(e.field, "id");
    j.id = NULL;
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_INVALID);
    CHECK_STR(e.field, "id");
    j.id = A("inj-1");
    CHECK(mime_build(&j, &o, &out, &len, &e) == 0);
    free(out);
}

static void
test_names_and_headers(void)
{
    struct job j;
    job_init(&j, "names-1");
    struct job_addr to[5] = {{A("a@example.org"), A("John Smith")},
                             {A("b@example.org"), A("J. R. \"Bob\" Dobbs")},
                             {A("c@example.org"), A("Zo\xc3\xab")},
                             {A("d@example.org"), A("back\\slash")},
                             {A("e@example.org"), A("=?utf-8?q?fake?=")}};
    struct job_header xh[3] = {{A("X-Herald-Id"), A("spoofed")},
                               {A("X-Accent"), A("d\xc3\xa9j\xc3\xa0 vu")},
                               {A("x-lower"), A("ok")}};
    j.to = to;
    j.nto = 5;
    j.subject = A("Caf\xc3\xa9");
    j.text = A("t");
    j.headers = xh;
    j.nheaders = 3;
    struct mime_opts o = opts_default();
    o.from.name = "Acme via Herald";
    char *m = build(&j, &o, NULL);
    if (m == NULL)
        return;
    char *v = hdr_get(m, "To");
    CHECK(v && strstr(v, "John Smith <a@example.org>"));
    CHECK(v && strstr(v, "\"J. R. \\\"Bob\\\" Dobbs\" <b@example.org>"));
    CHECK(v && strstr(v, "=?utf-8?q?Zo=C3=AB?= <c@example.org>"));
    CHECK(v && strstr(v, "\"back\\\\slash\" <d@example.org>"));
    /* text that looks like an encoded word is encoded itself */
    CHECK(v && strstr(v, "?q?fake?=") == NULL);
    free(v);
    v = hdr_get(m, "From");
    CHECK_STR(v, "Acme via Herald <noreply@acme.test>");
    free(v);
    v = hdr_get(m, "Subject");
    CHECK_STR(v, "=?utf-8?q?Caf=C3=A9?=");
    free(v);
    /* the job's X-Herald-Id does not replace or duplicate ours */
    CHECK(strstr(m, "spoofed") == NULL);
    CHECK(strstr(m, "X-Herald-Id: names-1\r\n") != NULL);
    v = hdr_get(m, "X-Accent");
    char *d = v ? ew_decode(v) : NULL;
    CHECK_STR(d, "d\xc3\xa9j\xc3\xa0 vu");
    free(d);
    free(v);
    v = hdr_get(m, "x-lower");
    CHECK_STR(v, "ok");
    free(v);
    free(m);
}

static void
test_filenames(void)
{
    struct job j;
    job_init(&j, "files-1");
    struct job_addr to[1] = {{A("ann@example.org"), NULL}};
    j.to = to;
    j.nto = 1;
    j.subject = A("s");
    j.text = A("t");
    char longname[256];
    struct buf lb;
    buf_init(&lb, 0);
    while (lb.len < 200)
        buf_puts(&lb, "r\xc3\xa9sum\xc3\xa9-");
    snprintf(longname, sizeof longname, "%s.pdf", lb.p);
    buf_free(&lb);
    struct job_attachment att[3] = {
        {A("r\xc3\xa9sum\xc3\xa9.pdf"), A("application/pdf"),
         (unsigned char *)"%PDF", 4},
        {longname, A("application/pdf"), (unsigned char *)"%PDF", 4},
        {A("a \"quoted\" name.txt"), A("text/plain"), (unsigned char *)"x", 1}};
    j.attachments = att;
    j.nattachments = 3;
    struct mime_opts o = opts_default();
    size_t n;
    char *m = build(&j, &o, &n);
    if (m == NULL)
        return;
    CHECK(strstr(m, "filename*=utf-8''r%C3%A9sum%C3%A9.pdf") != NULL);
    CHECK(strstr(m, "name*=utf-8''r%C3%A9sum%C3%A9.pdf") != NULL);
    CHECK(strstr(m, "filename*0*=utf-8''r%C3%A9sum") != NULL);
    CHECK(strstr(m, "filename*1*=") != NULL);
    CHECK(strstr(m, "filename=\"a \\\"quoted\\\" name.txt\"") != NULL);
    struct lines l = scan_lines(m, n, NULL, NULL);
    CHECK(l.crlf_only);
    CHECK_MSG(l.max_line <= 78, "line of %zu", l.max_line);
    free(m);
}

static void
test_boundary(void)
{
    struct job j;
    job_init(&j, "bnd-1");
    struct job_addr to[1] = {{A("ann@example.org"), NULL}};
    j.to = to;
    j.nto = 1;
    j.subject = A("s");
    j.text = A("plain");
    j.html = A("<p>html</p>");
    struct mime_opts o = opts_default();
    char *m = build(&j, &o, NULL);
    char *v = m ? hdr_get(m, "Content-Type") : NULL;
    char b1[128] = "";
    CHECK(v && boundary_of(v, b1, sizeof b1) == 0);
    free(v);
    free(m);

    /* a text that contains that boundary (as a delimiter line, in 7bit)
     * gets another one */
    char *text = xasprintf("before\n--%s\nafter\n--%s--\n", b1, b1);
    j.text = text;
    m = build(&j, &o, NULL);
    v = m ? hdr_get(m, "Content-Type") : NULL;
    char b2[128] = "";
    CHECK(v && boundary_of(v, b2, sizeof b2) == 0);
    CHECK(b2[0] && strcmp(b1, b2) != 0);
    CHECK(strstr(text, b2) == NULL);
    free(v);
    struct part parts[4];
    int np = m ? split_parts(body_of(m), b2, parts, 4) : -1;
    CHECK(np == 2);
    if (np == 2) {
        char *p0 = part_dup(&parts[0]);
        char *want = crlf(text); /* the delimiter's CRLF comes after */
        size_t dl;
        char *d = leaf_body(p0, &dl);
        CHECK(d && strcmp(d, want) == 0 && strlen(want) == dl);
        free(d);
        free(want);
        free(p0);
    }
    free(m);
    free(text);
}

static void
test_toobig(void)
{
    struct job j;
    job_init(&j, "big-1");
    struct job_addr to[1] = {{A("ann@example.org"), NULL}};
    j.to = to;
    j.nto = 1;
    j.subject = A("s");
    j.text = A("t");
    struct mime_opts o = opts_default();

    /* base64 of 12.6 MB passes 16 MiB: refused before any work */
    size_t big = MIME_MAX_BYTES / 4 * 3 + 1024;
    unsigned char *data = xcalloc(big, 1);
    struct job_attachment att[1] = {{A("big.bin"), NULL, data, big}};
    j.attachments = att;
    j.nattachments = 1;
    struct herr e;
    char *out = NULL;
    size_t len = 7;
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_TOOBIG);
    CHECK(out == NULL && len == 0);

    /* under the cap: fine */
    att[0].len = MIME_MAX_BYTES / 2;
    CHECK(mime_build(&j, &o, &out, &len, &e) == 0);
    CHECK(out && len > MIME_MAX_BYTES / 2 && len <= MIME_MAX_BYTES);
    free(out);
    out = NULL;
    free(data);

    /* 6 MB of 2-octet characters grow to 18 MB of quoted-printable */
    size_t tl = 6u * 1024 * 1024;
    char *text = xmalloc(tl + 1);
    for (size_t i = 0; i < tl; i += 2) {
        text[i] = (char)0xc3;
        text[i + 1] = (char)0xa9;
    }
    text[tl] = '\0';
    j.text = text;
    j.nattachments = 0;
    CHECK(mime_build(&j, &o, &out, &len, &e) == HERR_TOOBIG);
    CHECK(out == NULL);
    free(text);
}

static void
test_speed(void)
{
    struct job j;
    job_init(&j, "h-0123456789abcdef0123456789abcdef");
    struct job_addr to[2] = {{A("ann@example.org"), A("Ann Smith")},
                             {A("bob@example.org"), A("M\xc3\xbcller, Bob")}};
    j.to = to;
    j.nto = 2;
    j.subject = A("Your receipt for order #12345 \xe2\x80\x94 thank you");
    struct buf t;
    buf_init(&t, 0);
    while (t.len < 1200)
        buf_puts(&t, "Thank you for your order. It ships tomorrow.\n");
    char *text = buf_take(&t, NULL);
    j.text = text;
    j.html = A("<html><body><p>Thank you for your order.</p></body></html>");
    struct mime_opts o = opts_default();
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int ok = 1;
    size_t total = 0;
    for (int i = 0; i < 10000; i++) {
        char *out;
        size_t n = 0;
        if (mime_build(&j, &o, &out, &n, NULL) != 0)
            ok = 0;
        else
            free(out);
        total += n;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s =
        (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    CHECK(ok);
    fprintf(stderr, "mime: 10000 messages of %zu bytes in %.3f s\n",
            total / 10000, s);
    CHECK_MSG(s < 10.0, "%.3f s", s); /* generous: the SAN build too */
    free(text);
}

/* ---- samples for mime_check.py ---- */

/* A JSON string of what a header value decodes to (see flat). */
static json_t *
jflat(const char *s)
{
    char *f = flat(s ? s : "");
    json_t *v = json_string(f);
    free(f);
    return v;
}

static json_t *
addrs_json(const struct job_addr *a, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr,
                              json_pack("{s:o, s:s}", "name", jflat(a[i].name),
                                        "email", a[i].email));
    return arr;
}

static void
write_sample(const char *dir, int idx, const char *desc, const struct job *j,
             const struct mime_opts *o)
{
    char *m = build(j, o, NULL);
    if (m == NULL)
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/sample-%02d.eml", dir, idx);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fputs(m, f);
        CHECK(fclose(f) == 0);
    }

    json_t *x = json_object();
    json_object_set_new(x, "description", json_string(desc));
    json_object_set_new(x, "subject", jflat(j->subject));
    json_object_set_new(x, "from",
                        json_pack("{s:o, s:s}", "name", jflat(o->from.name),
                                  "email", o->from.email));
    json_object_set_new(x, "reply_to",
                        o->reply_to ? json_string(o->reply_to) : json_null());
    json_object_set_new(x, "to", addrs_json(j->to, j->nto));
    json_object_set_new(x, "cc", addrs_json(j->cc, j->ncc));
    json_object_set_new(x, "bcc", addrs_json(j->bcc, j->nbcc));
    char date[40];
    clock_rfc5322(o->date_ms, date);
    json_object_set_new(x, "date_epoch", json_integer(o->date_ms / 1000));
    char *mid = mime_message_id(j->id, o->msgid_domain);
    json_object_set_new(x, "message_id", json_string(mid));
    free(mid);
    json_object_set_new(x, "herald_id", json_string(j->id));
    json_t *hs = json_array();
    for (size_t i = 0; i < j->nheaders; i++)
        if (strcasecmp(j->headers[i].name, "X-Herald-Id") != 0)
            json_array_append_new(hs, json_pack("[s,o]", j->headers[i].name,
                                                jflat(j->headers[i].value)));
    json_object_set_new(x, "headers", hs);
    json_object_set_new(x, "text",
                        j->text ? json_string(j->text) : json_null());
    json_object_set_new(x, "html",
                        j->html ? json_string(j->html) : json_null());
    const char *ct = j->nattachments        ? "multipart/mixed"
                     : (j->text && j->html) ? "multipart/alternative"
                     : j->html              ? "text/html"
                                            : "text/plain";
    json_object_set_new(x, "content_type", json_string(ct));
    json_t *atts = json_array();
    for (size_t i = 0; i < j->nattachments; i++) {
        const struct job_attachment *a = &j->attachments[i];
        unsigned char md[SHA256_DIGEST_LENGTH];
        SHA256(a->data, a->len, md);
        char hex[2 * SHA256_DIGEST_LENGTH + 1];
        for (int k = 0; k < SHA256_DIGEST_LENGTH; k++)
            snprintf(hex + 2 * k, 3, "%02x", md[k]);
        json_array_append_new(
            atts, json_pack("{s:o, s:s, s:I, s:s}", "filename",
                            jflat(a->filename), "content_type",
                            a->content_type ? a->content_type
                                            : "application/octet-stream",
                            "size", (json_int_t)a->len, "sha256", hex));
    }
    json_object_set_new(x, "attachments", atts);

    snprintf(path, sizeof path, "%s/sample-%02d.json", dir, idx);
    CHECK(json_dump_file(x, path, JSON_INDENT(1) | JSON_SORT_KEYS) == 0);
    json_decref(x);
    free(m);
}

static void
write_samples(const char *dir)
{
    struct mime_opts o = opts_default();
    struct job j;
    int idx = 0;

    /* 1: text only, ASCII */
    job_init(&j, "order-1001");
    struct job_addr to1[1] = {{A("ann@example.org"), A("Ann Smith")}};
    struct job_addr bcc1[1] = {{A("audit@hidden.example"), A("Audit")}};
    j.to = to1;
    j.nto = 1;
    j.bcc = bcc1;
    j.nbcc = 1;
    j.subject = A("Your receipt");
    j.text = A("Hello Ann,\n\nThanks for your order.\n");
    o.reply_to = "billing@acme.test";
    write_sample(dir, ++idx, "text only, ASCII", &j, &o);
    o.reply_to = NULL;

    /* 2: accents, UTF-8 names with quotes and commas, cc */
    job_init(&j, "a:b");
    struct job_addr to2[2] = {
        {A("zoe@example.org"), A("Zo\xc3\xab \"the boss\", Ltd.")},
        {A("doe@example.org"), A("Doe, John")}};
    struct job_addr cc2[2] = {
        {A("mueller@example.de"), A("M\xc3\xbcller, J\xc3\xbcrgen")},
        {A("plain@example.org"), NULL}};
    j.to = to2;
    j.nto = 2;
    j.cc = cc2;
    j.ncc = 2;
    j.subject = A("R\xc3\xa9servation confirm\xc3\xa9\x65 \xe2\x80\x94 "
                  "caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9\x65");
    j.text = A("Bonjour Zo\xc3\xab,\nvotre r\xc3\xa9servation est "
               "confirm\xc3\xa9\x65.\n");
    struct mime_opts o2 = o;
    o2.from.name = "Caf\xc3\xa9 \"Le Z\xc3\xa8\x62re\", Paris";
    o2.reply_to = "contact@cafe.test";
    write_sample(dir, ++idx, "UTF-8 subject and names, cc", &j, &o2);

    /* 3: CJK and emoji subject, html only */
    job_init(&j, "..x..");
    struct job_addr to3[1] = {
        {A("yamada@example.jp"),
         A("\xe5\xb1\xb1\xe7\x94\xb0 \xe5\xa4\xaa\xe9\x83\x8e")}};
    j.to = to3;
    j.nto = 1;
    j.subject =
        A("\xe3\x81\x94\xe6\xb3\xa8\xe6\x96\x87\xe3\x81\x82\xe3\x82\x8a"
          "\xe3\x81\x8c\xe3\x81\xa8\xe3\x81\x86\xe3\x81\x94\xe3\x81\x96"
          "\xe3\x81\x84\xe3\x81\xbe\xe3\x81\x99 \xf0\x9f\x8e\x89\xf0\x9f"
          "\x9a\x80 \xe8\xae\xa2\xe5\x8d\x95\xe7\xa1\xae\xe8\xae\xa4");
    j.html = A("<html><body><p>\xe3\x81\x82\xe3\x82\x8a\xe3\x81\x8c\xe3\x81\xa8"
               "\xe3\x81\x86 \xf0\x9f\x8e\x89</p>\n</body></html>\n");
    write_sample(dir, ++idx, "CJK and emoji, html only", &j, &o);

    /* 4: text + html, long ASCII subject with spaces, X- headers */
    job_init(&j, "-");
    struct buf sb;
    buf_init(&sb, 0);
    while (sb.len < 300)
        buf_puts(&sb, "Reminder: your appointment is tomorrow at ten, ");
    buf_puts(&sb, "see you");
    char *subj4 = buf_take(&sb, NULL);
    struct job_addr to4[1] = {{A("ann@example.org"), NULL}};
    struct job_header xh4[4] = {
        {A("X-Campaign"), A("spring-2026")},
        {A("X-Note"),
         A("d\xc3\xa9j\xc3\xa0 vu \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac")},
        {A("X-Long"), A("one two three four five six seven eight nine ten "
                        "eleven twelve thirteen fourteen fifteen sixteen "
                        "seventeen eighteen nineteen twenty")},
        {A("X-Herald-Id"), A("spoofed")}};
    j.to = to4;
    j.nto = 1;
    j.subject = subj4;
    j.text = A("Plain version.\n");
    j.html = A("<p>HTML version.</p>\n");
    j.headers = xh4;
    j.nheaders = 4;
    write_sample(dir, ++idx, "alternative, long subject, X- headers", &j, &o);
    free(subj4);

    /* 5: 998-byte subject, no spaces */
    job_init(&j, "long-subject-1");
    char s5[999];
    for (int i = 0; i < 998; i++)
        s5[i] = (char)('A' + i % 26);
    s5[998] = '\0';
    j.to = to4;
    j.nto = 1;
    j.subject = s5;
    j.text = A("t\n");
    write_sample(dir, ++idx, "998-byte ASCII subject without spaces", &j, &o);

    /* 6: 998-byte UTF-8 subject */
    job_init(&j, "long-subject-2");
    struct buf ub;
    buf_init(&ub, 0);
    while (ub.len + 9 <= 998)
        buf_puts(&ub, "\xc3\xa9\xe6\x97\xa5\xf0\x9f\x8e\x89 "); /* é日🎉␠ */
    while (ub.len < 998)
        buf_puts(&ub, "x");
    char *s6 = buf_take(&ub, NULL);
    j.to = to4;
    j.nto = 1;
    j.subject = s6;
    j.text = A("t\n");
    write_sample(dir, ++idx, "998-byte UTF-8 subject", &j, &o);
    free(s6);

    /* 7: attachments: binary, non-ASCII filename, long filename */
    job_init(&j, "att-1");
    unsigned char bin[4096];
    uint32_t r = 12345;
    for (size_t i = 0; i < sizeof bin; i++) {
        r = r * 1103515245u + 12345u;
        bin[i] = i < 256 ? (unsigned char)i : (unsigned char)(r >> 16);
    }
    char longname[256];
    struct buf lb;
    buf_init(&lb, 0);
    while (lb.len < 180)
        buf_puts(&lb, "Rechnung \xc3\x9c\x62\x65rsicht ");
    snprintf(longname, sizeof longname, "%s.pdf", lb.p);
    buf_free(&lb);
    struct job_attachment att7[6] = {
        {A("data.bin"), A("application/octet-stream"), bin, sizeof bin},
        {A("r\xc3\xa9sum\xc3\xa9 \xe5\xb1\xa5\xe6\xad\xb4\xe6\x9b\xb8.pdf"),
         A("application/pdf"), bin, 1000},
        {longname, A("application/pdf"), bin + 7, 777},
        {A("notes \"v2\".txt"), A("text/plain"), (unsigned char *)"a\r\nb\r\n",
         6},
        {A("empty.dat"), NULL, NULL, 0},
        {A("photo.png"), A("image/png"), bin + 100, 57 * 3}};
    j.to = to2;
    j.nto = 2;
    j.subject = A("Documents");
    j.text = A("See attached.\n");
    j.html = A("<p>See attached.</p>\n");
    j.attachments = att7;
    j.nattachments = 6;
    write_sample(dir, ++idx, "mixed: alternative and six attachments", &j, &o);

    /* 8: long lines, dots, From lines, CR/LF mixtures, html + attachment */
    job_init(&j, "lines-1");
    struct buf tb;
    buf_init(&tb, 0);
    buf_puts(&tb, "First line\n.\n.starts with a dot\n..two dots\nFrom here "
                  "on\n>From quoted\nbare CR\rthen CRLF\r\nend spaces   \n"
                  "tab\tinside and end\t\n= sign =3D\n");
    for (int i = 0; i < 3000; i++)
        buf_append(&tb, &"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36], 1);
    buf_puts(&tb, "\nlast line without newline");
    char *t8 = buf_take(&tb, NULL);
    j.to = to4;
    j.nto = 1;
    j.subject = A("Lines");
    j.text = t8;
    write_sample(dir, ++idx, "long lines, dots, From lines, text only", &j, &o);

    job_init(&j, "lines-2");
    j.to = to4;
    j.nto = 1;
    j.subject = A("Lines again");
    j.html = t8;
    j.attachments = att7 + 3;
    j.nattachments = 1;
    write_sample(dir, ++idx, "same text as html, with an attachment", &j, &o);

    job_init(&j, "lines-3");
    j.to = to4;
    j.nto = 1;
    j.subject = A("ASCII only, 7bit");
    j.text = A("Line one\n.\nFrom the start\n..\n");
    j.html = A("<p>\n.\nFrom\n</p>");
    write_sample(dir, ++idx, "7bit alternative with dots and From", &j, &o);
    free(t8);

    /* 11: 100 recipients with names */
    job_init(&j, "many-1");
    static struct job_addr to11[50], cc11[50];
    static char names[100][64], mails[100][64];
    for (int i = 0; i < 100; i++) {
        snprintf(mails[i], 64, "person.%03d@example.org", i);
        switch (i % 4) {
        case 0:
            snprintf(names[i], 64, "Person %d", i);
            break;
        case 1:
            snprintf(names[i], 64, "Last%d, First", i);
            break;
        case 2:
            snprintf(names[i], 64, "J\xc3\xb6rg \"%d\" M\xc3\xbcller", i);
            break;
        default:
            names[i][0] = '\0';
        }
        struct job_addr *a = i < 50 ? &to11[i] : &cc11[i - 50];
        a->email = mails[i];
        a->name = names[i][0] ? names[i] : NULL;
    }
    j.to = to11;
    j.nto = 50;
    j.cc = cc11;
    j.ncc = 50;
    j.bcc = bcc1;
    j.nbcc = 1;
    j.subject = A("To many");
    j.text = A("Hello all\n");
    write_sample(dir, ++idx, "50 to and 50 cc with names", &j, &o);

    /* 12: header injection attempts everywhere */
    job_init(&j, "inj:1");
    const char *evil = "H\xc3\xa9llo\r\nBcc: evil@x\r\n";
    struct job_addr to12[1] = {{A("ann@example.org"), A(evil)}};
    struct job_header xh12[1] = {{A("X-Evil"), A(evil)}};
    struct job_attachment att12[1] = {
        {A(evil), A("text/plain"), (unsigned char *)"x", 1}};
    j.to = to12;
    j.nto = 1;
    j.subject = A(evil);
    j.headers = xh12;
    j.nheaders = 1;
    j.text = A("body\n");
    j.attachments = att12;
    j.nattachments = 1;
    struct mime_opts o12 = o;
    o12.from.name = evil;
    write_sample(dir, ++idx, "CR LF in every header value", &j, &o12);

    /* 13: specials in ASCII names, relay-style From, quoted-string folding */
    job_init(&j, "names-2");
    struct job_addr to13[3] = {
        {A("a@example.org"), A("O'Brien <boss> [team]; a@b")},
        {A("b@example.org"),
         A("A very long display name that certainly does not fit on one "
           "line together with the header name, Inc.")},
        {A("c@example.org"), A("back\\slash \"quote\"")}};
    struct job_addr cc13[2] = {{A("\"a b,c\"@example.org"), A("Quoted Local")},
                               {A("ops@[192.0.2.1]"), NULL}};
    j.to = to13;
    j.nto = 3;
    j.cc = cc13;
    j.ncc = 2;
    j.subject = A("=?utf-8?q?not_an_encoded_word?= and a trailing space ");
    j.text = A("x");
    struct mime_opts o13 = o;
    o13.from.name = "Acme, Inc. via Herald";
    write_sample(dir, ++idx, "ASCII specials in names", &j, &o13);

    /* 14: control characters in text, html only with emoji and long line */
    job_init(&j, "ctl-1");
    j.to = to4;
    j.nto = 1;
    j.subject = A("tab\tin subject");
    j.text = A("bell\a and escape \x1b[0m\n");
    write_sample(dir, ++idx, "control characters", &j, &o);

    printf("mime: wrote %d samples to %s\n", idx, dir);
}

int
main(void)
{
    test_text_only();
    test_structure();
    test_bodies();
    test_message_id();
    test_folding();
    test_injection();
    test_names_and_headers();
    test_filenames();
    test_boundary();
    test_toobig();
    test_speed();
    const char *dir = getenv("MIME_OUT");
    if (dir && dir[0])
        write_samples(dir);
    return T_DONE("mime");
}
