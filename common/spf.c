#include "spf.h"
#include "clock.h"
#include "util.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TERM_SHOW_MAX 80  /* bytes of a term quoted in a reason */
#define CIDR_DIGITS_MAX 3 /* "/128" */

/* ---- ASCII helpers (no locale) ---------------------------------------- */

static int
is_alpha(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static int
is_digit(int ch)
{
    return ch >= '0' && ch <= '9';
}

static int
is_alnum(int ch)
{
    return is_alpha(ch) || is_digit(ch);
}

static int
lower(int ch)
{
    return (ch >= 'A' && ch <= 'Z') ? ch - 'A' + 'a' : ch;
}

/* Case-insensitive equality of s[0..n) and the NUL-terminated word w. */
static int
word_eq(const char *s, size_t n, const char *w)
{
    size_t i;
    for (i = 0; i < n && w[i]; i++)
        if (lower((unsigned char)s[i]) != lower((unsigned char)w[i]))
            return 0;
    return i == n && w[i] == '\0';
}

/* ---- names -------------------------------------------------------------- */

/* Length of s[0..n) without one trailing dot. */
static size_t
strip_dot(const char *s, size_t n)
{
    return (n > 0 && s[n - 1] == '.') ? n - 1 : n;
}

/* Domain names equal, ignoring case and one trailing dot on either. */
static int
name_eq(const char *a, const char *b)
{
    size_t na = strip_dot(a, strlen(a)), nb = strip_dot(b, strlen(b));
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

int
spf_name_eq(const char *a, const char *b)
{
    return name_eq(a, b);
}

/* 1 when `name` is `parent` or a subdomain of it (no case, no dots). */
static int
name_within(const char *name, const char *parent)
{
    size_t nn = strip_dot(name, strlen(name));
    size_t np = strip_dot(parent, strlen(parent));
    if (np == 0 || nn < np)
        return 0;
    if (nn > np && name[nn - np - 1] != '.')
        return 0;
    for (size_t i = 0; i < np; i++)
        if (lower((unsigned char)name[nn - np + i]) !=
            lower((unsigned char)parent[i]))
            return 0;
    return 1;
}

/*
 * 1 when s[0..n) can be put in a query: 1..SPF_NAME_MAX bytes, every label
 * 1..63 bytes, no NUL. Any other byte is allowed (SPF names such as
 * "foo:bar/baz.example.com" are queried as they are).
 */
static int
dns_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > SPF_NAME_MAX)
        return 0;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\0')
            return 0;
        if (s[i] == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if (++label > SPF_LABEL_MAX) {
            return 0;
        }
    }
    return label > 0;
}

/* §4.3: a domain check_host() will look at; otherwise "none". */
static int
domain_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && s[0] != '[' && dns_name_ok(s, n) &&
           memchr(s, '.', n) != NULL;
}

/* ---- addresses ---------------------------------------------------------- */

int
spf_ip_parse(const char *s, struct spf_ip *out)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0,    0,
                                             0, 0, 0, 0, 0xff, 0xff};
    unsigned char b[16];
    memset(out, 0, sizeof *out);
    if (s == NULL)
        return HERR_INVALID;
    if (inet_pton(AF_INET, s, b) == 1) {
        out->family = 4;
        memcpy(out->b, b, 4);
        return 0;
    }
    if (inet_pton(AF_INET6, s, b) == 1) {
        if (memcmp(b, mapped, sizeof mapped) == 0) {
            out->family = 4;
            memcpy(out->b, b + 12, 4);
        } else {
            out->family = 6;
            memcpy(out->b, b, 16);
        }
        return 0;
    }
    return HERR_INVALID;
}

/* The first `bits` bits of a and b are equal. */
static int
prefix_eq(const unsigned char *a, const unsigned char *b, int bits)
{
    size_t full = (size_t)bits / 8;
    int rest = bits % 8;
    if (memcmp(a, b, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char m = (unsigned char)(0xffu << (8 - rest));
    return (a[full] & m) == (b[full] & m);
}

/* ---- answers ------------------------------------------------------------ */

void
spf_answer_init(struct spf_answer *a, enum spf_rrtype type)
{
    memset(a, 0, sizeof *a);
    a->type = type;
}

void
spf_answer_free(struct spf_answer *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->rr[i].name);
        free(a->rr[i].txt);
    }
    free(a->rr);
    enum spf_rrtype t = a->type;
    spf_answer_init(a, t);
}

/* A zeroed slot for one more record, or NULL when the answer is full. */
static struct spf_rr *
answer_slot(struct spf_answer *a, uint32_t ttl)
{
    if (a->n >= SPF_ANSWER_MAX) {
        a->truncated = 1;
        return NULL;
    }
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 4;
        a->rr = xrealloc(a->rr, a->cap * sizeof *a->rr);
    }
    struct spf_rr *rr = &a->rr[a->n++];
    memset(rr, 0, sizeof *rr);
    rr->ttl = ttl;
    return rr;
}

/* A copy of a name from DNS without its trailing dot, or NULL if too long. */
static char *
name_copy(const char *name)
{
    size_t n = strip_dot(name, strlen(name));
    if (n > SPF_NAME_MAX)
        return NULL;
    return xstrndup(name, n);
}

int
spf_answer_add_addr(struct spf_answer *a, const unsigned char *addr,
                    uint32_t ttl)
{
    if (a->type != SPF_RR_A && a->type != SPF_RR_AAAA)
        return HERR_INVALID;
    struct spf_rr *rr = answer_slot(a, ttl);
    if (rr == NULL)
        return HERR_TOOBIG;
    memcpy(rr->addr, addr, a->type == SPF_RR_A ? 4 : 16);
    return 0;
}

int
spf_answer_add_name(struct spf_answer *a, const char *name, uint32_t ttl)
{
    if (a->type != SPF_RR_PTR)
        return HERR_INVALID;
    char *copy = name_copy(name);
    if (copy == NULL)
        return HERR_INVALID;
    struct spf_rr *rr = answer_slot(a, ttl);
    if (rr == NULL) {
        free(copy);
        return HERR_TOOBIG;
    }
    rr->name = copy;
    return 0;
}

int
spf_answer_add_mx(struct spf_answer *a, uint16_t pref, const char *name,
                  uint32_t ttl)
{
    if (a->type != SPF_RR_MX)
        return HERR_INVALID;
    char *copy = name_copy(name);
    if (copy == NULL)
        return HERR_INVALID;
    struct spf_rr *rr = answer_slot(a, ttl);
    if (rr == NULL) {
        free(copy);
        return HERR_TOOBIG;
    }
    rr->pref = pref;
    rr->name = copy;
    return 0;
}

int
spf_answer_add_txt(struct spf_answer *a, const char *const *strings,
                   const size_t *lens, size_t nstrings, uint32_t ttl)
{
    if (a->type != SPF_RR_TXT || nstrings > SPF_TXT_STRINGS_MAX)
        return HERR_INVALID;
    struct spf_rr *rr = answer_slot(a, ttl);
    if (rr == NULL)
        return HERR_TOOBIG;
    size_t total = 0;
    for (size_t i = 0; i < nstrings; i++)
        total += lens[i] > SPF_TXT_MAX ? SPF_TXT_MAX + 1 : lens[i];
    size_t keep = total > SPF_TXT_MAX ? SPF_TXT_MAX : total;
    rr->txt = xmalloc(keep + 1);
    size_t at = 0;
    for (size_t i = 0; i < nstrings && at < keep; i++) {
        size_t take = lens[i] < keep - at ? lens[i] : keep - at;
        memcpy(rr->txt + at, strings[i], take);
        at += take;
    }
    rr->txt[at] = '\0';
    rr->txt_len = at;
    rr->truncated = total > SPF_TXT_MAX;
    return 0;
}

const char *
spf_res_str(enum spf_res r)
{
    switch (r) {
    case SPF_NONE:
        return "none";
    case SPF_NEUTRAL:
        return "neutral";
    case SPF_PASS:
        return "pass";
    case SPF_FAIL:
        return "fail";
    case SPF_SOFTFAIL:
        return "softfail";
    case SPF_TEMPERROR:
        return "temperror";
    case SPF_PERMERROR:
        return "permerror";
    }
    return "unknown";
}

/* ---- the evaluation context --------------------------------------------- */

struct ctx {
    const struct spf_resolver *r;
    struct spf_result *out;
    struct spf_ip ip;
    int reach;          /* spf_reaches_domain mode */
    const char *target; /* reach mode: the include target */
    char *sender, *local, *sdomain;
    const char *helo, *receiver;
    char ip_i[72]; /* %{i}: dotted quad or 32 dotted nibbles */
    char ip_c[48]; /* %{c} */
    int64_t now_s, deadline_ms;
    int deadline_hit;
    int lookups, voids;
    uint32_t ttl;
    int have_ttl;
    struct buf reason; /* first reason wins (reason_set) */
    /* validated PTR names of the client, computed on first use */
    int ptr_done;
    int ptr_rc; /* 0, HERR_NOTFOUND (void), HERR_TEMP */
    char *ptr_names[SPF_PTR_MAX];
    size_t nptr;
    /* the term that decided, at a level whose result is the final one */
    char *decided, *decided_in, *ended_in;
};

static void reason_vset(struct ctx *c, int force, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void
reason_vset(struct ctx *c, int force, const char *fmt, va_list ap)
{
    if (c->reason.len > 0 && !force)
        return;
    char line[SPF_REASON_MAX];
    vsnprintf(line, sizeof line, fmt, ap);
    /* Names in it may come from DNS (%{p}): keep it printable ASCII, so
     * it is valid UTF-8 wherever it is shown. */
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    buf_reset(&c->reason);
    buf_puts(&c->reason, line);
}

/* Sets the reason unless one is already set (the root cause comes first). */
static void reason_set(struct ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
reason_set(struct ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reason_vset(c, 0, fmt, ap);
    va_end(ap);
}

/* Replaces the reason. */
static void reason_force(struct ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
reason_force(struct ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reason_vset(c, 1, fmt, ap);
    va_end(ap);
}

static void
note_ttl(struct ctx *c, uint32_t ttl)
{
    if (!c->have_ttl || ttl < c->ttl)
        c->ttl = ttl;
    c->have_ttl = 1;
}

static const char *
rrtype_str(enum spf_rrtype t)
{
    switch (t) {
    case SPF_RR_A:
        return "A";
    case SPF_RR_AAAA:
        return "AAAA";
    case SPF_RR_MX:
        return "MX";
    case SPF_RR_PTR:
        return "PTR";
    case SPF_RR_TXT:
        return "TXT";
    }
    return "?";
}

/*
 * One DNS query through the seam: 0 (records in *a, maybe none),
 * HERR_NOTFOUND or HERR_TEMP. *a is always left initialised; the caller
 * frees it.
 */
static int
query(struct ctx *c, const char *name, enum spf_rrtype t, struct spf_answer *a)
{
    spf_answer_init(a, t);
    if (c->deadline_ms > 0 && clock_now_ms() >= c->deadline_ms) {
        c->deadline_hit = 1;
        return HERR_TEMP;
    }
    int rc = c->r->lookup(c->r->ud, name, t, a);
    if (rc == 0) {
        for (size_t i = 0; i < a->n; i++)
            note_ttl(c, a->rr[i].ttl);
        if (a->n == 0 && a->ttl > 0)
            note_ttl(c, a->ttl);
        return 0;
    }
    if (rc == HERR_NOTFOUND) {
        if (a->ttl > 0)
            note_ttl(c, a->ttl);
        spf_answer_free(a);
        return HERR_NOTFOUND;
    }
    spf_answer_free(a);
    return HERR_TEMP;
}

/* The reason for a temporary DNS failure of (t, name). */
static void
dns_fail(struct ctx *c, enum spf_rrtype t, const char *name)
{
    if (c->deadline_hit)
        reason_set(c,
                   "the time limit for the check ran out before the "
                   "%s look-up of %s",
                   rrtype_str(t), name);
    else
        reason_set(c,
                   "the DNS look-up of %s %s failed (timeout or server "
                   "failure)",
                   rrtype_str(t), name);
}

/* Counts a void look-up; 1 when that passes SPF_VOID_MAX (permerror). */
static int
void_hit(struct ctx *c, const char *name)
{
    if (++c->voids <= SPF_VOID_MAX)
        return 0;
    reason_set(c,
               "more than %d void DNS look-ups (names without records; the "
               "last was %s)",
               SPF_VOID_MAX, name);
    return 1;
}

/* ---- %{p}: the validated names of the client ---------------------------- */

/* "d.c.b.a.in-addr.arpa" or the 32 reversed nibbles + ".ip6.arpa". */
static void
reverse_name(const struct spf_ip *ip, char *out, size_t outlen)
{
    if (ip->family == 4) {
        snprintf(out, outlen, "%u.%u.%u.%u.in-addr.arpa", ip->b[3], ip->b[2],
                 ip->b[1], ip->b[0]);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    size_t at = 0;
    for (int i = 15; i >= 0; i--) {
        out[at++] = hex[ip->b[i] & 0xf];
        out[at++] = '.';
        out[at++] = hex[ip->b[i] >> 4];
        out[at++] = '.';
    }
    snprintf(out + at, outlen - at, "ip6.arpa");
}

/* 1 when an A/AAAA look-up of `name` includes the client address. */
static int
resolves_to_client(struct ctx *c, const char *name)
{
    struct spf_answer a;
    int hit = 0;
    if (query(c, name, c->ip.family == 4 ? SPF_RR_A : SPF_RR_AAAA, &a) == 0) {
        for (size_t i = 0; i < a.n && !hit; i++)
            hit =
                memcmp(a.rr[i].addr, c->ip.b, c->ip.family == 4 ? 4 : 16) == 0;
    }
    spf_answer_free(&a);
    return hit;
}

/*
 * §5.5: the PTR names of the client (the first SPF_PTR_MAX) whose forward
 * look-up gives the client back. A DNS error on a forward look-up skips
 * that name. Done once per check.
 */
static void
ptr_validate(struct ctx *c)
{
    if (c->ptr_done)
        return;
    c->ptr_done = 1;
    char rev[80];
    reverse_name(&c->ip, rev, sizeof rev);
    struct spf_answer a;
    int rc = query(c, rev, SPF_RR_PTR, &a);
    if (rc == HERR_TEMP) {
        c->ptr_rc = HERR_TEMP;
        return;
    }
    if (rc == HERR_NOTFOUND || a.n == 0) {
        c->ptr_rc = HERR_NOTFOUND;
        spf_answer_free(&a);
        return;
    }
    for (size_t i = 0; i < a.n && i < SPF_PTR_MAX; i++) {
        const char *n = a.rr[i].name;
        if (!dns_name_ok(n, strlen(n)))
            continue;
        if (resolves_to_client(c, n))
            c->ptr_names[c->nptr++] = xstrdup(n);
    }
    spf_answer_free(&a);
}

/* %{p} for current domain d. */
static const char *
macro_p(struct ctx *c, const char *d)
{
    if (c->reach)
        return "unknown";
    ptr_validate(c);
    for (size_t i = 0; i < c->nptr; i++)
        if (name_eq(c->ptr_names[i], d))
            return c->ptr_names[i];
    for (size_t i = 0; i < c->nptr; i++)
        if (name_within(c->ptr_names[i], d))
            return c->ptr_names[i];
    return c->nptr > 0 ? c->ptr_names[0] : "unknown";
}

/* ---- macros (§7) ------------------------------------------------------- */

enum {
    MF_EXP = 1, /* explanation text: c r t allowed, spaces are literal */
    MF_ANY = 2, /* unknown modifier: c r t allowed */
};

static int
is_delim(int ch)
{
    return ch != '\0' && strchr(".-+,/_=", ch) != NULL;
}

static int
is_unreserved(int ch)
{
    return is_alnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* The value of macro letter `l` (lower case) for current domain d. */
static const char *
macro_value(struct ctx *c, const char *d, int l, char *tbuf, size_t tlen)
{
    switch (l) {
    case 's':
        return c->sender;
    case 'l':
        return c->local;
    case 'o':
        return c->sdomain;
    case 'd':
        return d;
    case 'i':
        return c->ip_i;
    case 'p':
        return macro_p(c, d);
    case 'v':
        return c->ip.family == 4 ? "in-addr" : "ip6";
    case 'h':
        return c->helo;
    case 'c':
        return c->ip_c;
    case 'r':
        return c->receiver;
    case 't':
        snprintf(tbuf, tlen, "%lld", (long long)c->now_s);
        return tbuf;
    }
    return "";
}

/*
 * Appends one transformed macro value to out: split on the delimiters
 * (default "."), reversed when `rev`, the rightmost `keep` parts (0 = all),
 * joined with "."; URL-escaped when `escape`.
 */
static int
macro_put(struct buf *out, const char *v, const char *delims, size_t ndelims,
          int rev, unsigned keep, int escape)
{
    size_t vn = strlen(v), nparts = 1;
    for (size_t i = 0; i < vn; i++)
        if ((ndelims == 0 && v[i] == '.') ||
            (ndelims > 0 && memchr(delims, v[i], ndelims) != NULL))
            nparts++;
    size_t *off = xmalloc(nparts * sizeof *off);
    size_t *len = xmalloc(nparts * sizeof *len);
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= vn; i++) {
        int cut = i == vn || (ndelims == 0 && v[i] == '.') ||
                  (ndelims > 0 && memchr(delims, v[i], ndelims) != NULL);
        if (cut) {
            off[k] = start;
            len[k] = i - start;
            k++;
            start = i + 1;
        }
    }
    if (rev) {
        for (size_t i = 0; i < nparts / 2; i++) {
            size_t t = off[i];
            off[i] = off[nparts - 1 - i];
            off[nparts - 1 - i] = t;
            t = len[i];
            len[i] = len[nparts - 1 - i];
            len[nparts - 1 - i] = t;
        }
    }
    size_t first = (keep > 0 && keep < nparts) ? nparts - keep : 0;
    int rc = 0;
    for (size_t i = first; i < nparts && rc == 0; i++) {
        if (i > first)
            rc = buf_append(out, ".", 1);
        for (size_t j = 0; j < len[i] && rc == 0; j++) {
            unsigned char ch = (unsigned char)v[off[i] + j];
            if (escape && !is_unreserved(ch))
                rc = buf_printf(out, "%%%02X", ch);
            else
                rc = buf_append(out, &ch, 1);
        }
    }
    free(off);
    free(len);
    return rc;
}

/*
 * Scans the macro-string s[0..n) and, when `out` is not NULL, expands it
 * onto out (c may be NULL when out is NULL). Returns 0, HERR_INVALID with
 * *why (a syntax error), or HERR_TOOBIG (out's cap). *ends_macro (may be
 * NULL) is set to 1 when the string ends in a macro-expand.
 */
static int
macro_run(struct ctx *c, const char *d, const char *s, size_t n, int flags,
          struct buf *out, const char **why, int *ends_macro)
{
    int rc = 0;
    if (ends_macro)
        *ends_macro = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch != '%') {
            if (ch < 0x21 || ch > 0x7e) {
                if (!(ch == ' ' && (flags & MF_EXP))) {
                    *why = "a character that is not printable ASCII";
                    return HERR_INVALID;
                }
            }
            if (out)
                rc = buf_append(out, &ch, 1);
            if (ends_macro)
                *ends_macro = 0;
            continue;
        }
        if (i + 1 >= n) {
            *why = "a '%' at the end (write %% for a percent sign)";
            return HERR_INVALID;
        }
        char nx = s[++i];
        if (nx == '%' || nx == '_' || nx == '-') {
            if (out)
                rc = buf_puts(out, nx == '%' ? "%" : nx == '_' ? " " : "%20");
            if (ends_macro)
                *ends_macro = 1;
            continue;
        }
        if (nx != '{') {
            *why = "a '%' not followed by {, %, _ or -";
            return HERR_INVALID;
        }
        if (++i >= n) {
            *why = "an unclosed %{";
            return HERR_INVALID;
        }
        int letter = (unsigned char)s[i];
        int l = lower(letter);
        if (l == 0 || strchr("slodiphvcrt", l) == NULL) {
            *why = "an unknown macro letter";
            return HERR_INVALID;
        }
        if (strchr("crt", l) != NULL && !(flags & (MF_EXP | MF_ANY))) {
            *why = "macros c, r and t are only allowed in explanation text";
            return HERR_INVALID;
        }
        i++;
        unsigned keep = 0;
        int digits = 0;
        while (i < n && is_digit((unsigned char)s[i])) {
            if (keep < 1000)
                keep = keep * 10 + (unsigned)(s[i] - '0');
            digits = 1;
            i++;
        }
        if (digits && keep == 0) {
            *why = "a macro transformer of 0 parts";
            return HERR_INVALID;
        }
        int rev = 0;
        if (i < n && lower((unsigned char)s[i]) == 'r') {
            rev = 1;
            i++;
        }
        size_t dstart = i;
        while (i < n && is_delim((unsigned char)s[i]))
            i++;
        if (i >= n || s[i] != '}') {
            *why = "a malformed %{...} macro";
            return HERR_INVALID;
        }
        if (ends_macro)
            *ends_macro = 1;
        if (out) {
            char tbuf[32];
            const char *v = macro_value(c, d, l, tbuf, sizeof tbuf);
            rc = macro_put(out, v, s + dstart, i - dstart, rev, keep,
                           letter != l);
        }
    }
    if (rc)
        *why = "the macro expansion is too long";
    return rc;
}

/* §7.1 toplabel: alphanumerics and '-', not at either end, not all digits. */
static int
toplabel_ok(const char *s, size_t n)
{
    if (n == 0 || !is_alnum((unsigned char)s[0]) ||
        !is_alnum((unsigned char)s[n - 1]))
        return 0;
    int alpha = 0, dash = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '-')
            dash = 1;
        else if (is_alpha(ch))
            alpha = 1;
        else if (!is_digit(ch))
            return 0;
    }
    return alpha || dash;
}

/*
 * §7.1 domain-spec = macro-string domain-end, domain-end = "." toplabel
 * ["."] / macro-expand. Checked as written, before expansion.
 */
static int
spec_check(const char *s, size_t n, int flags, const char **why)
{
    if (n == 0) {
        *why = "an empty domain";
        return HERR_INVALID;
    }
    int ends_macro;
    if (macro_run(NULL, NULL, s, n, flags, NULL, why, &ends_macro) != 0)
        return HERR_INVALID;
    if (ends_macro)
        return 0;
    size_t end = strip_dot(s, n);
    size_t dot = end;
    while (dot > 0 && s[dot - 1] != '.')
        dot--;
    if (dot == 0) {
        *why = "a domain with a single label";
        return HERR_INVALID;
    }
    if (!toplabel_ok(s + dot, end - dot)) {
        *why = "a domain whose last label is not a valid top-level label";
        return HERR_INVALID;
    }
    return 0;
}

/*
 * Expands domain-spec s[0..n) for current domain d into out (reset
 * first): trailing dot removed, then labels dropped on the left while over
 * SPF_NAME_MAX (§7.3). Returns 0 or HERR_TOOBIG.
 */
static int
expand_domain(struct ctx *c, const char *d, const char *s, size_t n,
              struct buf *out)
{
    const char *why = NULL;
    buf_reset(out);
    int rc = macro_run(c, d, s, n, 0, out, &why, NULL);
    if (rc)
        return rc == HERR_INVALID ? HERR_INVALID : HERR_TOOBIG;
    size_t len = strip_dot(out->p, out->len);
    size_t from = 0;
    while (len - from > SPF_NAME_MAX) {
        const char *dot = memchr(out->p + from, '.', len - from);
        if (dot == NULL)
            break;
        from = (size_t)(dot - out->p) + 1;
    }
    memmove(out->p, out->p + from, len - from);
    out->len = len - from;
    out->p[out->len] = '\0';
    return 0;
}

/* ---- records ------------------------------------------------------------ */

enum mech { M_ALL, M_INCLUDE, M_A, M_MX, M_PTR, M_IP4, M_IP6, M_EXISTS };

struct term {
    enum mech m;
    char qual;        /* '+', '-', '~', '?' */
    const char *text; /* the term as written */
    size_t len;
    const char *spec; /* domain-spec, or NULL for the current domain */
    size_t spec_len;
    int cidr4, cidr6; /* prefix lengths (32 / 128 when not given) */
    unsigned char net[16];
};

struct record {
    struct term *t;
    size_t n;
    const char *redirect, *exp; /* domain-specs, NULL when absent */
    size_t redirect_len, exp_len;
};

/* "v=spf1" followed by a space or the end, case-insensitive (§4.5). */
static int
is_spf1(const char *s, size_t n)
{
    return n >= 6 && word_eq(s, 6, "v=spf1") && (n == 6 || s[6] == ' ');
}

/* Parses a prefix length "0" / [1-9][0-9]* up to max. -1 when invalid. */
static int
cidr_value(const char *s, size_t n, int max)
{
    if (n == 0 || n > CIDR_DIGITS_MAX || (n > 1 && s[0] == '0'))
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= max ? v : -1;
}

/*
 * Takes a trailing "/N" (slashes = 1) or "//N" (slashes = 2) off s[0..*n).
 * Returns 1 (taken, *val set, *n shortened), 0 (none there) or -1 (there,
 * but not a valid length up to max).
 */
static int
take_cidr(const char *s, size_t *n, int slashes, int max, int *val)
{
    size_t k = *n;
    while (k > 0 && is_digit((unsigned char)s[k - 1]))
        k--;
    if (k == *n || k < (size_t)slashes)
        return 0;
    for (int i = 1; i <= slashes; i++)
        if (s[k - (size_t)i] != '/')
            return 0;
    int v = cidr_value(s + k, *n - k, max);
    if (v < 0)
        return -1;
    *val = v;
    *n = k - (size_t)slashes;
    return 1;
}

/* ip4-network: four qnum, no leading zeros (§5.6). */
static int
ip4_parse(const char *s, size_t n, unsigned char out[4])
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= n || s[i] != '.')
                return -1;
            i++;
        }
        size_t st = i;
        unsigned v = 0;
        while (i < n && is_digit((unsigned char)s[i]) && i - st < 3)
            v = v * 10 + (unsigned)(s[i++] - '0');
        if (i == st || v > 255 || (i - st > 1 && s[st] == '0'))
            return -1;
        out[part] = (unsigned char)v;
    }
    return i == n ? 0 : -1;
}

static int
ip6_parse(const char *s, size_t n, unsigned char out[16])
{
    char tmp[64];
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET6, tmp, out) == 1 ? 0 : -1;
}

/* Parses one mechanism term into *t. 0, or HERR_INVALID with *why. */
static int
parse_mechanism(const char *tok, size_t len, struct term *t, const char **why)
{
    static const struct {
        const char *name;
        enum mech m;
    } names[] = {{"all", M_ALL}, {"include", M_INCLUDE}, {"a", M_A},
                 {"mx", M_MX},   {"ptr", M_PTR},         {"ip4", M_IP4},
                 {"ip6", M_IP6}, {"exists", M_EXISTS}};
    memset(t, 0, sizeof *t);
    t->text = tok;
    t->len = len;
    t->qual = '+';
    t->cidr4 = 32;
    t->cidr6 = 128;
    size_t i = 0;
    if (strchr("+-~?", tok[0]) != NULL) {
        t->qual = tok[0];
        i = 1;
    }
    size_t ns = i;
    while (i < len && tok[i] != ':' && tok[i] != '/')
        i++;
    size_t k;
    for (k = 0; k < sizeof names / sizeof names[0]; k++)
        if (word_eq(tok + ns, i - ns, names[k].name))
            break;
    if (k == sizeof names / sizeof names[0]) {
        *why = "unknown mechanism";
        return HERR_INVALID;
    }
    t->m = names[k].m;
    const char *rest = tok + i;
    size_t rn = len - i;

    switch (t->m) {
    case M_ALL:
        if (rn != 0) {
            *why = "\"all\" takes no argument";
            return HERR_INVALID;
        }
        return 0;
    case M_INCLUDE:
    case M_EXISTS:
        if (rn == 0 || rest[0] != ':') {
            *why = "a domain is required (name:domain)";
            return HERR_INVALID;
        }
        t->spec = rest + 1;
        t->spec_len = rn - 1;
        return spec_check(t->spec, t->spec_len, 0, why);
    case M_A:
    case M_MX: {
        int r6 = take_cidr(rest, &rn, 2, 128, &t->cidr6);
        int r4 = r6 < 0 ? 0 : take_cidr(rest, &rn, 1, 32, &t->cidr4);
        if (r6 < 0 || r4 < 0) {
            *why = "an invalid prefix length";
            return HERR_INVALID;
        }
        if (rn == 0)
            return 0;
        if (rest[0] != ':') {
            *why = "unexpected text after the mechanism name";
            return HERR_INVALID;
        }
        t->spec = rest + 1;
        t->spec_len = rn - 1;
        return spec_check(t->spec, t->spec_len, 0, why);
    }
    case M_PTR:
        if (rn == 0)
            return 0;
        if (rest[0] != ':') {
            *why = "\"ptr\" takes no prefix length";
            return HERR_INVALID;
        }
        t->spec = rest + 1;
        t->spec_len = rn - 1;
        return spec_check(t->spec, t->spec_len, 0, why);
    case M_IP4:
    case M_IP6: {
        if (rn < 2 || rest[0] != ':') {
            *why = "an address is required (ip4:192.0.2.0/24)";
            return HERR_INVALID;
        }
        rest++;
        rn--;
        int six = t->m == M_IP6;
        int r = take_cidr(rest, &rn, 1, six ? 128 : 32,
                          six ? &t->cidr6 : &t->cidr4);
        if (r < 0) {
            *why = "an invalid prefix length";
            return HERR_INVALID;
        }
        if ((six ? ip6_parse(rest, rn, t->net) : ip4_parse(rest, rn, t->net)) !=
            0) {
            *why = six ? "not an IPv6 address" : "not an IPv4 address";
            return HERR_INVALID;
        }
        return 0;
    }
    }
    return 0;
}

/* Fills why with "term \"...\": msg". */
static void
term_error(struct buf *why, const char *tok, size_t len, const char *msg)
{
    buf_reset(why);
    int show = (int)(len > TERM_SHOW_MAX ? TERM_SHOW_MAX : len);
    buf_printf(why, "\"%.*s%s\": %s", show, tok,
               len > TERM_SHOW_MAX ? "..." : "", msg);
}

/*
 * Parses a whole record (already checked to be printable ASCII and to
 * start with v=spf1). Every term is checked, whatever comes first (§4.6).
 * Returns 0 (rec->t owned by the caller) or HERR_INVALID with *why.
 */
static int
record_parse(const char *s, size_t n, struct record *rec, struct buf *why)
{
    memset(rec, 0, sizeof *rec);
    size_t maxterms = n / 2 + 1;
    rec->t = xcalloc(maxterms, sizeof *rec->t);
    size_t i = 6;
    while (i < n) {
        if (s[i] == ' ') {
            i++;
            continue;
        }
        size_t st = i;
        while (i < n && s[i] != ' ')
            i++;
        const char *tok = s + st;
        size_t len = i - st;
        const char *msg = NULL;

        /* modifier: name "=" ..., name = ALPHA *( ALPHA / DIGIT / - _ . ) */
        size_t j = 0;
        if (is_alpha((unsigned char)tok[0])) {
            j = 1;
            while (j < len && (is_alnum((unsigned char)tok[j]) ||
                               tok[j] == '-' || tok[j] == '_' || tok[j] == '.'))
                j++;
        }
        if (j > 0 && j < len && tok[j] == '=') {
            const char *v = tok + j + 1;
            size_t vn = len - j - 1;
            if (word_eq(tok, j, "redirect") || word_eq(tok, j, "exp")) {
                int redir = word_eq(tok, j, "redirect");
                if (redir ? rec->redirect != NULL : rec->exp != NULL) {
                    term_error(why, tok, len, "this modifier appears twice");
                    return HERR_INVALID;
                }
                if (spec_check(v, vn, 0, &msg) != 0) {
                    term_error(why, tok, len, msg);
                    return HERR_INVALID;
                }
                if (redir) {
                    rec->redirect = v;
                    rec->redirect_len = vn;
                } else {
                    rec->exp = v;
                    rec->exp_len = vn;
                }
            } else if (macro_run(NULL, NULL, v, vn, MF_ANY, NULL, &msg, NULL) !=
                       0) {
                term_error(why, tok, len, msg);
                return HERR_INVALID;
            }
            continue;
        }
        if (parse_mechanism(tok, len, &rec->t[rec->n], &msg) != 0) {
            term_error(why, tok, len, msg);
            return HERR_INVALID;
        }
        rec->n++;
    }
    return 0;
}

/* The record as shown to people: bytes outside printable ASCII as \xHH. */
static char *
record_show(const char *s, size_t n)
{
    struct buf b;
    buf_init(&b, 0);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch <= 0x7e && ch != '\\')
            buf_append(&b, &ch, 1);
        else if (ch == '\\')
            buf_puts(&b, "\\\\");
        else
            buf_printf(&b, "\\x%02x", ch);
    }
    return buf_take(&b, NULL);
}

/* ---- check_host() -------------------------------------------------------- */

static enum spf_res check_host(struct ctx *c, const char *domain,
                               enum spf_via via, int depth, int final);

static size_t
chain_add(struct ctx *c, const char *domain, enum spf_via via, int depth)
{
    struct spf_result *o = c->out;
    o->chain = xrealloc(o->chain, (o->nchain + 1) * sizeof *o->chain);
    struct spf_step *st = &o->chain[o->nchain];
    memset(st, 0, sizeof *st);
    st->domain = record_show(domain, strlen(domain));
    st->via = via;
    st->depth = depth;
    return o->nchain++;
}

static enum spf_res
qual_res(char q)
{
    switch (q) {
    case '-':
        return SPF_FAIL;
    case '~':
        return SPF_SOFTFAIL;
    case '?':
        return SPF_NEUTRAL;
    default:
        return SPF_PASS;
    }
}

/* Any address of (name, A or AAAA) within the term's prefix: 1 / 0 / -1. */
static int
match_addrs(struct ctx *c, const char *name, const struct term *t,
            int count_void, enum spf_res *err)
{
    struct spf_answer a;
    enum spf_rrtype ty = c->ip.family == 4 ? SPF_RR_A : SPF_RR_AAAA;
    int rc = query(c, name, ty, &a);
    if (rc == HERR_TEMP) {
        dns_fail(c, ty, name);
        *err = SPF_TEMPERROR;
        return -1;
    }
    if (rc == HERR_NOTFOUND || a.n == 0) {
        spf_answer_free(&a);
        if (count_void && void_hit(c, name)) {
            *err = SPF_PERMERROR;
            return -1;
        }
        return 0;
    }
    int bits = c->ip.family == 4 ? t->cidr4 : t->cidr6;
    int hit = 0;
    for (size_t i = 0; i < a.n && !hit; i++)
        hit = prefix_eq(a.rr[i].addr, c->ip.b, bits);
    spf_answer_free(&a);
    return hit;
}

static int
match_mx(struct ctx *c, const char *name, const struct term *t,
         enum spf_res *err)
{
    struct spf_answer a;
    int rc = query(c, name, SPF_RR_MX, &a);
    if (rc == HERR_TEMP) {
        dns_fail(c, SPF_RR_MX, name);
        *err = SPF_TEMPERROR;
        return -1;
    }
    if (rc == HERR_NOTFOUND || a.n == 0) {
        spf_answer_free(&a);
        if (void_hit(c, name)) {
            *err = SPF_PERMERROR;
            return -1;
        }
        return 0;
    }
    if (a.n > SPF_MX_MAX) {
        reason_set(c, "%s has %zu%s MX records; \"mx\" allows at most %d", name,
                   a.n, a.truncated ? "+" : "", SPF_MX_MAX);
        spf_answer_free(&a);
        *err = SPF_PERMERROR;
        return -1;
    }
    int hit = 0;
    for (size_t i = 0; i < a.n && hit == 0; i++) {
        const char *mx = a.rr[i].name;
        if (!dns_name_ok(mx, strlen(mx)))
            continue; /* a null MX ("."), or not a usable name */
        hit = match_addrs(c, mx, t, 0, err);
    }
    spf_answer_free(&a);
    return hit;
}

static int
match_ptr(struct ctx *c, const char *target, enum spf_res *err)
{
    ptr_validate(c);
    if (c->ptr_rc == HERR_TEMP)
        return 0; /* §5.5: a DNS error on the PTR look-up is no match */
    if (c->ptr_rc == HERR_NOTFOUND) {
        char rev[80];
        reverse_name(&c->ip, rev, sizeof rev);
        if (void_hit(c, rev)) {
            *err = SPF_PERMERROR;
            return -1;
        }
        return 0;
    }
    for (size_t i = 0; i < c->nptr; i++)
        if (name_within(c->ptr_names[i], target))
            return 1;
    return 0;
}

static int
match_exists(struct ctx *c, const char *name, enum spf_res *err)
{
    struct spf_answer a;
    int rc = query(c, name, SPF_RR_A, &a);
    if (rc == HERR_TEMP) {
        dns_fail(c, SPF_RR_A, name);
        *err = SPF_TEMPERROR;
        return -1;
    }
    int hit = rc == 0 && a.n > 0;
    spf_answer_free(&a);
    if (!hit && void_hit(c, name)) {
        *err = SPF_PERMERROR;
        return -1;
    }
    return hit;
}

/* Shows a term in a reason, cut. */
#define TERM_FMT "%.*s%s"
#define TERM_ARGS(t)                                                           \
    (int)((t)->len > TERM_SHOW_MAX ? TERM_SHOW_MAX : (t)->len), (t)->text,     \
        (t)->len > TERM_SHOW_MAX ? "..." : ""

/* Counts one DNS-querying term; 1 when that passes the limit. */
static int
lookup_hit(struct ctx *c, const char *what, int wlen, const char *d)
{
    if (++c->lookups <= SPF_LOOKUP_MAX)
        return 0;
    reason_set(c,
               "more than %d DNS-querying terms (include, a, mx, ptr, "
               "exists, redirect); the limit was passed at \"%.*s\" in %s",
               SPF_LOOKUP_MAX, wlen, what, d);
    return 1;
}

/* Evaluates one term for current domain d: 1 match, 0 no, -1 *err. */
static int
eval_term(struct ctx *c, const char *d, const struct term *t, int depth,
          enum spf_res *err)
{
    switch (t->m) {
    case M_ALL:
        return 1;
    case M_IP4:
        return !c->reach && c->ip.family == 4 &&
               prefix_eq(c->ip.b, t->net, t->cidr4);
    case M_IP6:
        return !c->reach && c->ip.family == 6 &&
               prefix_eq(c->ip.b, t->net, t->cidr6);
    default:
        break;
    }
    if (lookup_hit(c, t->text,
                   (int)(t->len > TERM_SHOW_MAX ? TERM_SHOW_MAX : t->len), d)) {
        *err = SPF_PERMERROR;
        return -1;
    }
    if (c->reach && t->m != M_INCLUDE)
        return 0;

    struct buf name;
    buf_init(&name, SPF_EXPAND_MAX);
    int rc = t->spec ? expand_domain(c, d, t->spec, t->spec_len, &name)
                     : buf_puts(&name, d);
    if (rc != 0) {
        reason_set(c,
                   "\"" TERM_FMT "\" in %s: the macro expansion is over %d "
                   "bytes",
                   TERM_ARGS(t), d, SPF_EXPAND_MAX);
        buf_free(&name);
        *err = SPF_PERMERROR;
        return -1;
    }
    const char *n = name.p;
    int usable = dns_name_ok(n, name.len);
    int hit = 0;

    switch (t->m) {
    case M_INCLUDE: {
        if (c->reach && name_eq(n, c->target)) {
            hit = 1;
            break;
        }
        enum spf_res sub = check_host(c, n, SPF_VIA_INCLUDE, depth + 1, 0);
        if (sub == SPF_PASS) {
            hit = 1;
        } else if (sub == SPF_TEMPERROR || sub == SPF_PERMERROR) {
            *err = sub;
            hit = -1;
        } else if (sub == SPF_NONE) {
            reason_force(c,
                         "\"" TERM_FMT "\" in %s: %s has no SPF record, which "
                         "is an error for include (RFC 7208 section 5.2)",
                         TERM_ARGS(t), d, n);
            *err = SPF_PERMERROR;
            hit = -1;
        }
        break;
    }
    case M_A:
        hit = usable ? match_addrs(c, n, t, 1, err) : 0;
        break;
    case M_MX:
        hit = usable ? match_mx(c, n, t, err) : 0;
        break;
    case M_PTR:
        hit = match_ptr(c, n, err);
        break;
    case M_EXISTS:
        hit = usable ? match_exists(c, n, err) : 0;
        break;
    default:
        break;
    }
    buf_free(&name);
    return hit;
}

/*
 * §6.2: the explanation for a "fail" decided by record of domain d. Any
 * problem (macro, DNS, not exactly one TXT record, bad text) means no
 * explanation.
 */
static void
explain(struct ctx *c, const char *d, const struct record *rec)
{
    struct buf name, text;
    struct spf_answer a;
    buf_init(&name, SPF_EXPAND_MAX);
    buf_init(&text, SPF_EXP_MAX);
    spf_answer_init(&a, SPF_RR_TXT);
    if (expand_domain(c, d, rec->exp, rec->exp_len, &name) != 0 ||
        !dns_name_ok(name.p, name.len))
        goto out;
    if (query(c, name.p, SPF_RR_TXT, &a) != 0 || a.n != 1 || a.rr[0].truncated)
        goto out;
    const char *why = NULL;
    if (macro_run(c, d, a.rr[0].txt, a.rr[0].txt_len, MF_EXP, &text, &why,
                  NULL) != 0)
        goto out;
    for (size_t i = 0; i < text.len; i++)
        if ((unsigned char)text.p[i] < 0x20 || (unsigned char)text.p[i] > 0x7e)
            goto out; /* a %{p} name from DNS with bytes a text cannot hold */
    free(c->out->explanation);
    c->out->explanation = buf_take(&text, NULL);
out:
    spf_answer_free(&a);
    buf_free(&name);
    buf_free(&text);
}

static void
decide(struct ctx *c, const struct term *t, const char *d)
{
    free(c->decided);
    free(c->decided_in);
    c->decided = xstrndup(t->text, t->len);
    c->decided_in = xstrdup(d);
}

/*
 * The body of check_host() for one domain. `final` is set when this
 * level's result is the result of the whole check (the checked domain and
 * redirect targets from it; never inside include), which is when exp=
 * applies and the deciding term is recorded.
 */
static enum spf_res
eval_domain(struct ctx *c, const char *domain, size_t si, int depth, int final)
{
    if (!domain_ok(domain)) {
        reason_set(c, "\"%s\" is not a domain name SPF can check", domain);
        return SPF_NONE;
    }
    struct spf_answer a;
    int rc = query(c, domain, SPF_RR_TXT, &a);
    if (rc == HERR_TEMP) {
        dns_fail(c, SPF_RR_TXT, domain);
        return SPF_TEMPERROR;
    }
    if (rc == HERR_NOTFOUND) {
        reason_set(c, "%s does not exist (NXDOMAIN), so it has no SPF record",
                   domain);
        return SPF_NONE;
    }
    size_t found = 0, at = 0;
    for (size_t i = 0; i < a.n; i++) {
        if (is_spf1(a.rr[i].txt, a.rr[i].txt_len)) {
            if (found++ == 0)
                at = i;
        }
    }
    if (found == 0) {
        spf_answer_free(&a);
        reason_set(c,
                   "%s publishes no SPF record (no TXT record starting "
                   "with v=spf1)",
                   domain);
        return SPF_NONE;
    }
    if (found > 1) {
        spf_answer_free(&a);
        reason_set(c, "%s publishes %zu SPF records; exactly one is allowed",
                   domain, found);
        return SPF_PERMERROR;
    }
    size_t len = a.rr[at].txt_len;
    char *s = xmalloc(len + 1);
    memcpy(s, a.rr[at].txt, len);
    s[len] = '\0';
    int truncated = a.rr[at].truncated;
    spf_answer_free(&a);
    c->out->chain[si].record = record_show(s, len);

    enum spf_res res = SPF_NEUTRAL;
    struct record rec = {0};
    struct buf why;
    buf_init(&why, SPF_REASON_MAX);
    if (truncated) {
        reason_set(c, "the SPF record of %s is longer than %d bytes", domain,
                   SPF_TXT_MAX);
        res = SPF_PERMERROR;
        goto done;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch > 0x7e) {
            reason_set(c,
                       "the SPF record of %s holds byte 0x%02x at offset %zu; "
                       "only printable ASCII and spaces are allowed",
                       domain, ch, i);
            res = SPF_PERMERROR;
            goto done;
        }
    }
    if (record_parse(s, len, &rec, &why) != 0) {
        reason_set(c, "the SPF record of %s is invalid: %s", domain, why.p);
        res = SPF_PERMERROR;
        goto done;
    }
    for (size_t i = 0; i < rec.n; i++) {
        enum spf_res err = SPF_PERMERROR;
        int m = eval_term(c, domain, &rec.t[i], depth, &err);
        if (m < 0) {
            res = err;
            goto done;
        }
        if (m > 0) {
            res = qual_res(rec.t[i].qual);
            if (final) {
                decide(c, &rec.t[i], domain);
                if (res == SPF_FAIL && rec.exp && !c->reach)
                    explain(c, domain, &rec);
            }
            goto done;
        }
    }
    if (rec.redirect) {
        const char *what = rec.redirect - 9; /* "redirect=" as written */
        if (lookup_hit(c, what, (int)(rec.redirect_len + 9), domain)) {
            res = SPF_PERMERROR;
            goto done;
        }
        struct buf name;
        buf_init(&name, SPF_EXPAND_MAX);
        if (expand_domain(c, domain, rec.redirect, rec.redirect_len, &name)) {
            reason_set(c,
                       "redirect= in %s: the macro expansion is over %d "
                       "bytes",
                       domain, SPF_EXPAND_MAX);
            res = SPF_PERMERROR;
        } else {
            res = check_host(c, name.p, SPF_VIA_REDIRECT, depth + 1, final);
            if (res == SPF_NONE) {
                reason_force(c,
                             "redirect=%s in %s: %s has no SPF record, which "
                             "is an error for redirect (RFC 7208 section 6.1)",
                             name.p, domain, name.p);
                res = SPF_PERMERROR;
            }
        }
        buf_free(&name);
        goto done;
    }
    if (final) {
        free(c->ended_in);
        c->ended_in = xstrdup(domain);
    }
done:
    free(rec.t);
    buf_free(&why);
    free(s);
    return res;
}

static enum spf_res
check_host(struct ctx *c, const char *domain, enum spf_via via, int depth,
           int final)
{
    size_t si = chain_add(c, domain, via, depth);
    enum spf_res res = eval_domain(c, domain, si, depth, final);
    c->out->chain[si].result = res;
    return res;
}

/* ---- entry points ------------------------------------------------------- */

static void
ctx_init(struct ctx *c, const struct spf_resolver *r, struct spf_result *out,
         const struct spf_ip *ip)
{
    memset(c, 0, sizeof *c);
    memset(out, 0, sizeof *out);
    c->r = r;
    c->out = out;
    c->ip = *ip;
    if (c->ip.family != 6)
        c->ip.family = 4; /* a zeroed spf_ip is 0.0.0.0 */
    buf_init(&c->reason, SPF_REASON_MAX);
    if (c->ip.family == 6) {
        static const char hex[] = "0123456789ABCDEF";
        size_t at = 0;
        for (int i = 0; i < 16; i++) {
            c->ip_i[at++] = hex[ip->b[i] >> 4];
            c->ip_i[at++] = '.';
            c->ip_i[at++] = hex[ip->b[i] & 0xf];
            c->ip_i[at++] = i < 15 ? '.' : '\0';
        }
        inet_ntop(AF_INET6, ip->b, c->ip_c, sizeof c->ip_c);
    } else {
        snprintf(c->ip_i, sizeof c->ip_i, "%u.%u.%u.%u", ip->b[0], ip->b[1],
                 ip->b[2], ip->b[3]);
        snprintf(c->ip_c, sizeof c->ip_c, "%u.%u.%u.%u", ip->b[0], ip->b[1],
                 ip->b[2], ip->b[3]);
    }
}

/* Sets sender, local part and domain from MAIL FROM and EHLO (§4.3). */
static void
ctx_sender(struct ctx *c, const char *sender, const char *helo)
{
    const char *at = sender ? strrchr(sender, '@') : NULL;
    if (sender == NULL || sender[0] == '\0') {
        c->local = xstrdup("postmaster");
        c->sdomain = xstrdup(helo);
    } else if (at == NULL) {
        c->local = xstrdup("postmaster");
        c->sdomain = xstrdup(sender);
    } else {
        c->local = at == sender ? xstrdup("postmaster")
                                : xstrndup(sender, (size_t)(at - sender));
        c->sdomain = xstrdup(at + 1);
    }
    c->sdomain[strip_dot(c->sdomain, strlen(c->sdomain))] = '\0';
    c->sender = xasprintf("%s@%s", c->local, c->sdomain);
}

static enum spf_res
run(struct ctx *c)
{
    struct spf_result *o = c->out;
    o->domain = record_show(c->sdomain, strlen(c->sdomain));
    enum spf_res res = check_host(c, c->sdomain, SPF_VIA_CHECK, 0, 1);
    o->result = res;
    o->lookups = c->lookups > SPF_LOOKUP_MAX ? SPF_LOOKUP_MAX : c->lookups;
    o->voids = c->voids;
    o->ttl = c->have_ttl ? c->ttl : UINT32_MAX;
    if (o->nchain > 0 && o->chain[0].record)
        o->record = xstrdup(o->chain[0].record);
    o->mechanism = c->decided;
    c->decided = NULL;
    if (res == SPF_PASS || res == SPF_FAIL || res == SPF_SOFTFAIL ||
        res == SPF_NEUTRAL) {
        buf_reset(&c->reason);
        if (o->mechanism && c->reach && res == SPF_PASS)
            buf_printf(&c->reason,
                       "the policy of %s reaches include:%s (%s "
                       "in %s)",
                       o->domain, c->target, o->mechanism, c->decided_in);
        else if (o->mechanism)
            buf_printf(&c->reason, "%s in %s matched", o->mechanism,
                       c->decided_in);
        else
            buf_printf(&c->reason,
                       "no mechanism matched in %s, so the "
                       "result is neutral",
                       c->ended_in ? c->ended_in : o->domain);
    }
    o->reason = buf_take(&c->reason, NULL);
    for (size_t i = 0; i < c->nptr; i++)
        free(c->ptr_names[i]);
    free(c->sender);
    free(c->local);
    free(c->sdomain);
    free(c->decided_in);
    free(c->ended_in);
    return res;
}

enum spf_res
spf_check_host(const struct spf_request *req, const struct spf_resolver *r,
               struct spf_result *out)
{
    struct ctx c;
    ctx_init(&c, r, out, &req->ip);
    c.helo = req->helo ? req->helo : "unknown";
    c.receiver = req->receiver ? req->receiver : "unknown";
    c.now_s = req->now_s ? req->now_s : clock_now_ms() / 1000;
    c.deadline_ms = req->deadline_ms;
    ctx_sender(&c, req->sender, c.helo);
    return run(&c);
}

int
spf_reaches_domain(const char *domain, const char *target,
                   const struct spf_resolver *r, int64_t deadline_ms,
                   struct spf_result *out)
{
    struct spf_ip none = {.family = 4};
    struct ctx c;
    ctx_init(&c, r, out, &none);
    c.reach = 1;
    c.target = target ? target : "";
    c.helo = domain;
    c.receiver = "unknown";
    c.now_s = clock_now_ms() / 1000;
    c.deadline_ms = deadline_ms;
    ctx_sender(&c, domain, domain);
    return run(&c) == SPF_PASS;
}

void
spf_result_free(struct spf_result *out)
{
    if (out == NULL)
        return;
    for (size_t i = 0; i < out->nchain; i++) {
        free(out->chain[i].domain);
        free(out->chain[i].record);
    }
    free(out->chain);
    free(out->domain);
    free(out->record);
    free(out->mechanism);
    free(out->reason);
    free(out->explanation);
    memset(out, 0, sizeof *out);
}

/* ---- advice -------------------------------------------------------------- */

/* Where include:target stands in a record. */
struct placement {
    int present;   /* an include of target, any qualifier */
    char qual;     /* its qualifier ('+' when none written) */
    int after_all; /* it comes after an "all" mechanism */
    int has_all;
};

static int
tok_is_all(const char *t, size_t n)
{
    if (n > 0 && strchr("+-~?", t[0]) != NULL) {
        t++;
        n--;
    }
    return word_eq(t, n, "all");
}

/* 1 when the token is [q]include:<target> (target without case / dot). */
static int
tok_is_include_of(const char *t, size_t n, const char *target, char *q)
{
    *q = '+';
    if (n > 0 && strchr("+-~?", t[0]) != NULL) {
        *q = t[0];
        t++;
        n--;
    }
    if (n < 8 || !word_eq(t, 8, "include:"))
        return 0;
    size_t tn = strip_dot(target, strlen(target));
    size_t vn = strip_dot(t + 8, n - 8);
    if (tn == 0 || vn != tn)
        return 0;
    for (size_t i = 0; i < tn; i++)
        if (lower((unsigned char)t[8 + i]) != lower((unsigned char)target[i]))
            return 0;
    return 1;
}

/* 1 when the token is a modifier (name=...). */
static int
tok_is_modifier(const char *t, size_t n)
{
    if (n == 0 || !is_alpha((unsigned char)t[0]))
        return 0;
    size_t j = 1;
    while (j < n && (is_alnum((unsigned char)t[j]) || t[j] == '-' ||
                     t[j] == '_' || t[j] == '.'))
        j++;
    return j < n && t[j] == '=';
}

static void
placement_of(const char *rec, const char *target, struct placement *p)
{
    memset(p, 0, sizeof *p);
    size_t n = strlen(rec), i = 0;
    while (i < n) {
        if (rec[i] == ' ') {
            i++;
            continue;
        }
        size_t st = i;
        while (i < n && rec[i] != ' ')
            i++;
        char q;
        if (tok_is_all(rec + st, i - st)) {
            p->has_all = 1;
        } else if (!p->present &&
                   tok_is_include_of(rec + st, i - st, target, &q)) {
            p->present = 1;
            p->qual = q;
            p->after_all = p->has_all;
        }
    }
}

/*
 * The record with include:target where it works: any include of target
 * removed, then "include:target" before the first "all", or after the
 * last mechanism when there is no "all".
 */
static char *
suggest(const char *rec, const char *target)
{
    struct buf b;
    buf_init(&b, 0);
    size_t n = strlen(rec), i = 6, last_mech_end = 0, all_at = 0;
    int seen_all = 0;
    buf_puts(&b, "v=spf1");
    /* Pass 1: the kept tokens, remembering where to insert. */
    struct buf toks;
    buf_init(&toks, 0);
    while (i < n) {
        if (rec[i] == ' ') {
            i++;
            continue;
        }
        size_t st = i;
        while (i < n && rec[i] != ' ')
            i++;
        char q;
        if (tok_is_include_of(rec + st, i - st, target, &q))
            continue;
        if (!seen_all && tok_is_all(rec + st, i - st)) {
            seen_all = 1;
            all_at = toks.len;
        }
        buf_puts(&toks, " ");
        buf_append(&toks, rec + st, i - st);
        if (!tok_is_modifier(rec + st, i - st))
            last_mech_end = toks.len;
    }
    size_t at = seen_all ? all_at : last_mech_end;
    char *ins = xasprintf(" include:%s", target);
    buf_append(&b, toks.p ? toks.p : "", at);
    buf_puts(&b, ins);
    buf_append(&b, toks.p ? toks.p + at : "", toks.len - at);
    free(ins);
    buf_free(&toks);
    return buf_take(&b, NULL);
}

char *
spf_advice(const struct spf_result *res, const char *target)
{
    struct buf b;
    buf_init(&b, 0);
    const char *d = res->domain ? res->domain : "the domain";
    const char *rec = res->record;
    char *t = xstrndup(target, strip_dot(target, strlen(target)));

    switch (res->result) {
    case SPF_PASS:
        buf_printf(&b, "%s authorises the platform (%s): nothing to do.", d,
                   res->mechanism ? res->mechanism : "pass");
        break;
    case SPF_NONE:
        buf_printf(&b,
                   "No SPF policy applies: %s. To let the platform send as "
                   "%s, publish this TXT record at %s: v=spf1 include:%s ~all",
                   res->reason ? res->reason : "no record", d, d, t);
        break;
    case SPF_TEMPERROR:
        buf_printf(&b,
                   "The SPF check of %s could not finish: %s. This is usually "
                   "temporary and is checked again later; until it succeeds, "
                   "mail goes out from the platform's own address.",
                   d, res->reason ? res->reason : "a DNS error");
        break;
    case SPF_PERMERROR: {
        buf_printf(
            &b,
            "The SPF policy of %s is broken (permerror): %s. Receivers treat a "
            "broken policy as an error, so it authorises nobody; fix "
            "it first",
            d, res->reason ? res->reason : "permerror");
        struct placement p;
        if (rec) {
            placement_of(rec, t, &p);
            if (!p.present)
                buf_printf(&b,
                           ", and add include:%s before the all "
                           "mechanism",
                           t);
        }
        buf_puts(&b, ".");
        break;
    }
    default: {
        struct placement p = {0};
        int reached = 0;
        if (rec)
            placement_of(rec, t, &p);
        for (size_t i = 0; i < res->nchain; i++)
            if (res->chain[i].via == SPF_VIA_INCLUDE &&
                name_eq(res->chain[i].domain, t))
                reached = 1;
        const char *r = spf_res_str(res->result);
        if ((p.present && p.qual == '+' && !p.after_all) ||
            (!p.present && reached)) {
            buf_printf(&b,
                       "%s already includes %s, yet the result is %s (%s): a "
                       "mechanism before the include matched first, or the "
                       "platform's own record at %s does not list this host.",
                       d, t, r, res->reason ? res->reason : r, t);
            break;
        }
        char *s =
            rec ? suggest(rec, t) : xasprintf("v=spf1 include:%s ~all", t);
        if (p.present && p.after_all)
            buf_printf(&b,
                       "The result is %s because include:%s comes after "
                       "the all mechanism, where it is never reached. Move it "
                       "before the all mechanism: %s",
                       r, t, s);
        else if (p.present)
            buf_printf(&b,
                       "The result is %s because the include has the "
                       "qualifier '%c', so a match does not authorise. Change "
                       "%cinclude:%s to include:%s: %s",
                       r, p.qual, p.qual, t, t, s);
        else if (p.has_all)
            buf_printf(&b,
                       "The result is %s: %s does not include %s. Add "
                       "include:%s before the all mechanism: %s",
                       r, d, t, t, s);
        else
            buf_printf(&b,
                       "The result is %s: %s does not include %s. Add "
                       "include:%s to the record: %s",
                       r, d, t, t, s);
        if (strlen(s) > 255)
            buf_puts(&b, " (over 255 characters: publish it as several "
                         "quoted strings in one TXT record)");
        free(s);
        if (res->lookups + 1 > SPF_LOOKUP_MAX)
            buf_printf(&b,
                       ". Note: the record already uses %d of the %d DNS "
                       "look-ups RFC 7208 allows, so the include would pass "
                       "the limit; remove or flatten another include first",
                       res->lookups, SPF_LOOKUP_MAX);
        break;
    }
    }
    free(t);
    return buf_take(&b, NULL);
}

int
spf_platform_verdict(const char *domain, const char *target,
                     const struct spf_ip *ips, size_t nips,
                     const struct spf_resolver *r, int64_t deadline_ms,
                     struct spf_result *out)
{
    if (nips == 0)
        return spf_reaches_domain(domain, target, r, deadline_ms, out);
    char sender[SPF_NAME_MAX + 16];
    snprintf(sender, sizeof sender, "postmaster@%s", domain);
    struct spf_result *per = xcalloc(nips, sizeof *per);
    for (size_t i = 0; i < nips; i++) {
        struct spf_request req;
        memset(&req, 0, sizeof req);
        req.ip = ips[i];
        req.sender = sender;
        req.helo = target;
        req.deadline_ms = deadline_ms;
        spf_check_host(&req, r, &per[i]);
    }
    size_t decide = nips;
    for (size_t i = 0; i < nips && decide == nips; i++)
        if (per[i].result == SPF_TEMPERROR)
            decide = i;
    for (size_t i = 0; i < nips && decide == nips; i++)
        if (per[i].result != SPF_PASS)
            decide = i;
    if (decide == nips)
        decide = 0;
    *out = per[decide];
    for (size_t i = 0; i < nips; i++)
        if (i != decide)
            spf_result_free(&per[i]);
    free(per);
    return out->result == SPF_PASS;
}
