#include "mime.h"
#include "clock.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FOLD_COL 78 /* RFC 5322 SHOULD */
#define EW_MAX 75   /* RFC 2047 encoded-word length limit */
#define EW_MIN 24   /* smallest word that holds any one character */
/* An unbroken ASCII run longer than this is written as encoded words,
 * which can be split, so no header line can reach 998 octets. */
#define ASCII_RUN_MAX 900
#define QP_COL 76
#define B64_IN_LINE 57 /* 57 input octets = 76 base64 characters */
#define BOUNDARY_PREFIX "=_herald_"
#define BOUNDARY_LEN (sizeof BOUNDARY_PREFIX - 1 + 16)
#define ADDR_MAX 254
#define CTYPE_MAX 255 /* attachment "type/subtype", as the job allows */

/*
 * The writer: one buffer with a hard cap, a sticky error so encoders can
 * run to the end without checking every append, and the column of the
 * current header line so that folding decisions are local.
 */
struct w {
    struct buf b;
    int rc;
    size_t col;  /* octets on the current header line */
    size_t vcol; /* column where the current header's value begins */
};

static void
w_put(struct w *w, const void *p, size_t n)
{
    if (w->rc == 0)
        w->rc = buf_append(&w->b, p, n);
}

static void
w_str(struct w *w, const char *s)
{
    w_put(w, s, strlen(s));
}

/* ---- header primitives: none of them can write CR or LF except the
 * fold ("\r\n" followed by a space the caller always writes next) and
 * the header end. Values reach the output only through the encoders
 * below, which emit printable ASCII (or UTF-8 addresses) only. ---- */

static void
h_begin(struct w *w, const char *name)
{
    w_str(w, name);
    w_put(w, ":", 1);
    w->col = strlen(name) + 1;
    w->vcol = w->col;
}

static void
h_end(struct w *w)
{
    w_put(w, "\r\n", 2);
    w->col = 0;
}

/* Writes bytes on the current line (no fold before them). */
static void
h_raw(struct w *w, const char *s, size_t n)
{
    w_put(w, s, n);
    w->col += n;
}

/*
 * Makes room for a token of `n` octets that begins with whitespace: folds
 * first when it would pass column 78 and something already stands on the
 * value's first line (a fold right after "Name:" would gain nothing).
 */
static void
h_room(struct w *w, size_t n)
{
    if (w->col > w->vcol && w->col + n > FOLD_COL) {
        w_put(w, "\r\n", 2);
        w->col = 0;
    }
}

static int
is_atext(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* Length of the UTF-8 character at s (1 for an invalid byte). */
static size_t
u8_len(const unsigned char *s, size_t n)
{
    size_t len;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4;
    else
        return 1;
    if (len > n)
        return 1;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 1;
    return len;
}

/*
 * Whether `s` may be written as plain ASCII: printable only (so no CR,
 * LF or other control), nothing that a reader would take for an encoded
 * word, and no whitespace-separated run (with `quoted`, counting the
 * backslashes a quoted-string adds) longer than ASCII_RUN_MAX.
 */
static int
plain_ok(const char *s, size_t n, int quoted)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e)
            return 0;
        if (c == '=' && i + 1 < n && s[i + 1] == '?')
            return 0;
        if (c == ' ') {
            run = 0;
            continue;
        }
        run += (quoted && (c == '"' || c == '\\')) ? 2 : 1;
        if (run > ASCII_RUN_MAX)
            return 0;
    }
    return 1;
}

/* Q encoding as allowed in a phrase (RFC 2047 5(3)), used everywhere. */
static int
q_plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '!' || c == '*' || c == '+' ||
           c == '-' || c == '/';
}

static const char hexd[] = "0123456789ABCDEF";
static const char b64d[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t
b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v =
            (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64d[v >> 18];
        out[o++] = b64d[(v >> 12) & 63];
        out[o++] = b64d[(v >> 6) & 63];
        out[o++] = b64d[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        out[o++] = b64d[v >> 18];
        out[o++] = b64d[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64d[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

/*
 * Writes `s` as RFC 2047 encoded words (UTF-8; Q unless it is more than
 * half as long again as B, for the whole value), each holding whole characters
 * and sized to end by column 78, separated by folds. Any byte, CR and LF
 * included, comes out encoded.
 */
static void
h_ewords(struct w *w, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t qlen = 0;
    for (size_t i = 0; i < n; i++)
        qlen += (q_plain(s[i]) || s[i] == ' ') ? 1 : 3;
    /* Q stays readable for mostly-Latin text; B wins for CJK */
    int q = qlen * 2 <= (n + 2) / 3 * 4 * 3;
    const char *pre = q ? "=?utf-8?q?" : "=?utf-8?b?";

    size_t i = 0;
    while (i < n) {
        size_t avail = w->col + 1 < FOLD_COL ? FOLD_COL - w->col - 1 : 0;
        size_t max = EW_MAX;
        if (avail >= EW_MIN) {
            if (avail < max)
                max = avail;
        } else if (w->col > w->vcol) {
            w_put(w, "\r\n", 2);
            w->col = 0;
        }
        size_t budget = max - 12; /* prefix and "?=" */
        char word[EW_MAX + 1];
        size_t wl = 10;
        memcpy(word, pre, 10);
        if (q) {
            while (i < n) {
                size_t cl = u8_len(s + i, n - i), cost = 0;
                for (size_t k = 0; k < cl; k++)
                    cost += (q_plain(s[i + k]) || s[i + k] == ' ') ? 1 : 3;
                if (wl - 10 + cost > budget)
                    break;
                for (size_t k = 0; k < cl; k++) {
                    unsigned char c = s[i + k];
                    if (q_plain(c)) {
                        word[wl++] = (char)c;
                    } else if (c == ' ') {
                        word[wl++] = '_';
                    } else {
                        word[wl++] = '=';
                        word[wl++] = hexd[c >> 4];
                        word[wl++] = hexd[c & 15];
                    }
                }
                i += cl;
            }
        } else {
            size_t start = i, bytes = 0;
            while (i < n) {
                size_t cl = u8_len(s + i, n - i);
                if ((bytes + cl + 2) / 3 * 4 > budget)
                    break;
                bytes += cl;
                i += cl;
            }
            wl += b64_encode(s + start, bytes, word + wl);
        }
        word[wl++] = '?';
        word[wl++] = '=';
        h_raw(w, " ", 1);
        h_raw(w, word, wl);
    }
}

/*
 * A header value never decodes to a line break either: each run of CR and
 * LF becomes one space before encoding (readers such as Python's email
 * package refuse a display name holding CR or LF, and a decoded subject or
 * file name with one is a trap for whoever handles it next). Returns NULL
 * when `s` has none.
 */
static char *
unbreak(const char *s)
{
    if (strpbrk(s, "\r\n") == NULL)
        return NULL;
    char *t = xstrdup(s), *o = t;
    for (const char *p = s; *p;) {
        if (*p == '\r' || *p == '\n') {
            p += strspn(p, "\r\n");
            *o++ = ' ';
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return t;
}

/* Unstructured text (Subject, X- values): plain and folded at spaces when
 * plain_ok, else encoded words. */
static void
text_out(struct w *w, const char *s)
{
    size_t n = strlen(s);
    if (!plain_ok(s, n, 0)) {
        h_ewords(w, s, n);
        return;
    }
    size_t i = 0;
    while (i < n) {
        size_t st = i;
        while (i < n && s[i] == ' ')
            i++;
        size_t ws = i - st;
        while (i < n && s[i] != ' ')
            i++;
        if (i - st == ws) { /* trailing spaces: never a blank fold line */
            h_raw(w, s + st, ws);
        } else if (ws == 0) { /* first word: the space after the colon */
            h_room(w, 1 + i - st);
            h_raw(w, " ", 1);
            h_raw(w, s + st, i - st);
        } else {
            h_room(w, i - st);
            h_raw(w, s + st, i - st);
        }
    }
}

/* Writes s[0..n) inside a quoted-string, escaping '"' and '\'. */
static void
h_qcontent(struct w *w, const char *s, size_t n)
{
    size_t st = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            h_raw(w, s + st, i - st);
            h_raw(w, "\\", 1);
            st = i;
        }
    }
    h_raw(w, s + st, n - st);
}

static size_t
qlen(const char *s, size_t n)
{
    size_t l = n;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '"' || s[i] == '\\')
            l++;
    return l;
}

/*
 * A display name: atoms when it is plain atext words separated by single
 * spaces; a quoted-string (folded at its spaces) when it is printable
 * ASCII with specials; encoded words otherwise.
 */
static void
phrase_out(struct w *w, const char *s)
{
    size_t n = strlen(s);
    if (!plain_ok(s, n, 1)) {
        h_ewords(w, s, n);
        return;
    }
    int atoms = s[0] != ' ' && s[n - 1] != ' ';
    for (size_t i = 0; atoms && i < n; i++)
        if (!is_atext((unsigned char)s[i]) && !(s[i] == ' ' && s[i + 1] != ' '))
            atoms = 0;
    if (atoms) {
        text_out(w, s);
        return;
    }
    /* chunks are [spaces]word; the quotes ride on the first and last */
    size_t i = 0;
    int first = 1;
    while (i < n) {
        size_t st = i;
        while (i < n && s[i] == ' ')
            i++;
        size_t ws = i - st;
        while (i < n && s[i] != ' ')
            i++;
        size_t len = qlen(s + st, i - st) + (i == n);
        if (first) {
            h_room(w, 2 + len);
            h_raw(w, " \"", 2);
            first = 0;
        } else if (i - st > ws) {
            h_room(w, len);
        }
        h_qcontent(w, s + st, i - st);
    }
    if (first)
        h_raw(w, " \"", 2);
    h_raw(w, "\"", 1);
}

static void
h_text(struct w *w, const char *s)
{
    char *t = unbreak(s);
    text_out(w, t ? t : s);
    free(t);
}

static void
h_phrase(struct w *w, const char *s)
{
    char *t = unbreak(s);
    phrase_out(w, t ? t : s);
    free(t);
}

/* Whether s[0..n) is dot-atom-text. */
static int
dot_atom(const char *s, size_t n)
{
    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' ? s[i + 1] == '.' : !is_atext((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

/*
 * Whether an address is an RFC 5322 addr-spec in ASCII, at most 254
 * octets: dot-atom or quoted-string local part, dot-atom or
 * [domain-literal] domain. Such an address can be written as it is (no
 * CR, LF, comma or bracket can break out of it), and the message stays
 * 7-bit.
 */
static int
addr_ok(const char *s)
{
    if (s == NULL)
        return 0;
    size_t n = strlen(s);
    const char *at = strrchr(s, '@');
    if (n > ADDR_MAX || at == NULL)
        return 0;
    size_t ll = (size_t)(at - s), dl = n - ll - 1;
    if (ll >= 2 && s[0] == '"' && s[ll - 1] == '"') {
        for (size_t i = 1; i < ll - 1; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '\\' && i + 1 < ll - 1 && s[i + 1] >= 0x20 &&
                s[i + 1] <= 0x7e)
                i++;
            else if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
                return 0;
        }
    } else if (!dot_atom(s, ll)) {
        return 0;
    }
    const char *d = at + 1;
    if (dl >= 2 && d[0] == '[' && d[dl - 1] == ']') {
        for (size_t i = 1; i < dl - 1; i++)
            if (d[i] < 0x21 || d[i] > 0x7e || d[i] == '[' || d[i] == ']' ||
                d[i] == '\\')
                return 0;
        return 1;
    }
    return dot_atom(d, dl);
}

static void
h_mailbox(struct w *w, const char *name, const char *email, int comma)
{
    size_t el = strlen(email);
    if (name && name[0]) {
        h_phrase(w, name);
        h_room(w, 3 + el + (size_t)comma);
        h_raw(w, " <", 2);
        h_raw(w, email, el);
        h_raw(w, ">", 1);
    } else {
        h_room(w, 1 + el + (size_t)comma);
        h_raw(w, " ", 1);
        h_raw(w, email, el);
    }
    if (comma)
        h_raw(w, ",", 1);
}

static void
h_addrlist(struct w *w, const char *name, const struct job_addr *a, size_t n)
{
    h_begin(w, name);
    if (n == 0)
        h_raw(w, " undisclosed-recipients:;", 25);
    for (size_t i = 0; i < n; i++)
        h_mailbox(w, a[i].name, a[i].email, i + 1 < n);
    h_end(w);
}

/* RFC 2231 attr-char */
static int
attr_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$&+-.^_`|~", c) != NULL);
}

/* Percent-encodes characters of s[*i..n) while they fit in `limit`
 * octets (at least one), writing them on the current line. */
static void
h_pct(struct w *w, const unsigned char *s, size_t n, size_t *i, size_t limit)
{
    char out[FOLD_COL + 16];
    size_t ol = 0;
    while (*i < n) {
        size_t cl = u8_len(s + *i, n - *i), cost = 0;
        for (size_t k = 0; k < cl; k++)
            cost += attr_char(s[*i + k]) ? 1 : 3;
        if (ol > 0 && ol + cost > limit)
            break;
        for (size_t k = 0; k < cl; k++) {
            unsigned char c = s[*i + k];
            if (attr_char(c)) {
                out[ol++] = (char)c;
            } else {
                out[ol++] = '%';
                out[ol++] = hexd[c >> 4];
                out[ol++] = hexd[c & 15];
            }
        }
        *i += cl;
    }
    h_raw(w, out, ol);
}

/*
 * Writes "; attr=value": a quoted-string when the value is printable
 * ASCII that fits on a line, else RFC 2231 (attr*=utf-8''%XX...), split
 * into continuations attr*0*=, attr*1*=, ... one per line when needed.
 */
static void
param_out(struct w *w, const char *attr, const char *v)
{
    size_t n = strlen(v), al = strlen(attr);
    const unsigned char *s = (const unsigned char *)v;
    h_raw(w, ";", 1);
    if (plain_ok(v, n, 1) && 1 + al + 2 + qlen(v, n) + 1 <= FOLD_COL) {
        h_room(w, 1 + al + 2 + qlen(v, n) + 1);
        h_raw(w, " ", 1);
        h_raw(w, attr, al);
        h_raw(w, "=\"", 2);
        h_qcontent(w, v, n);
        h_raw(w, "\"", 1);
        return;
    }
    size_t enc = 0, i = 0;
    for (size_t k = 0; k < n; k++)
        enc += attr_char(s[k]) ? 1 : 3;
    if (1 + al + 9 + enc <= FOLD_COL) {
        h_room(w, 1 + al + 9 + enc);
        h_raw(w, " ", 1);
        h_raw(w, attr, al);
        h_raw(w, "*=utf-8''", 9);
        h_pct(w, s, n, &i, enc);
        return;
    }
    for (unsigned seg = 0; i < n; seg++) {
        char head[96];
        int hl = snprintf(head, sizeof head, " %s*%u*=%s", attr, seg,
                          seg == 0 ? "utf-8''" : "");
        if (seg > 0)
            h_raw(w, ";", 1);
        w_put(w, "\r\n", 2);
        w->col = 0;
        h_raw(w, head, (size_t)hl);
        /* leave room for the ';' that may follow */
        h_pct(w, s, n, &i, FOLD_COL - 1 - (size_t)hl);
    }
}

static void
h_param(struct w *w, const char *attr, const char *v)
{
    char *t = unbreak(v);
    param_out(w, attr, t ? t : v);
    free(t);
}

/* ---- validation of what goes out unencoded ---- */

static int
id_ok(const char *id)
{
    if (id == NULL || id[0] == '\0')
        return 0;
    size_t n = 0;
    for (; id[n]; n++) {
        unsigned char c = (unsigned char)id[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
              c == '-'))
            return 0;
    }
    return n <= JOB_ID_MAX;
}

/* dot-atom-text of at most 253 octets */
static int
domain_ok(const char *d)
{
    return d != NULL && strlen(d) <= 253 && dot_atom(d, strlen(d));
}

/* ftext (printable ASCII but ':'), "X-" prefix, at most 76 octets */
static int
xname_ok(const char *s)
{
    if (s == NULL || (s[0] != 'X' && s[0] != 'x') || s[1] != '-' || !s[2])
        return 0;
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 33 || (unsigned char)s[n] > 126 ||
            s[n] == ':')
            return 0;
    return n <= JOB_HEADER_NAME_MAX;
}

/* RFC 2045 token */
static size_t
token_len(const char *s)
{
    size_t n = 0;
    while (s[n] > 32 && (unsigned char)s[n] < 127 &&
           strchr("()<>@,;:\\\"/[]?=", s[n]) == NULL)
        n++;
    return n;
}

static int
ctype_ok(const char *s)
{
    size_t a = token_len(s);
    if (a == 0 || s[a] != '/')
        return 0;
    size_t b = token_len(s + a + 1);
    return b > 0 && s[a + 1 + b] == '\0' && a + 1 + b <= CTYPE_MAX;
}

/* ---- Message-ID ---- */

/*
 * id-left is "herald." + the id with every byte outside [A-Za-z0-9_-]
 * written as "=XX" (uppercase hex), except a '.' that has a non-'.'
 * before it and any character after it in the id: those stay, so the
 * result is always dot-atom-text. '=' never occurs in a job id, so the
 * mapping is one-to-one.
 */
char *
mime_message_id(const char *id, const char *domain)
{
    if (id == NULL)
        id = "";
    if (!domain_ok(domain))
        domain = "invalid";
    size_t n = strlen(id);
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "<herald");
    if (n > 0)
        buf_puts(&b, ".");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        int keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                   (c == '.' && i > 0 && id[i - 1] != '.' && i + 1 < n);
        if (keep) {
            buf_append(&b, &id[i], 1);
        } else {
            char esc[3] = {'=', hexd[c >> 4], hexd[c & 15]};
            buf_append(&b, esc, 3);
        }
    }
    buf_printf(&b, "@%s>", domain);
    return buf_take(&b, NULL);
}

/* ---- boundaries ---- */

static uint64_t
fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/*
 * "=_herald_" + 16 hex of a hash of (id, counter). "=_" cannot occur in
 * quoted-printable or base64 output, and a candidate found in the text or
 * html source (which 7bit bodies copy) or equal to `other` is skipped.
 */
static void
boundary_make(const struct job *j, unsigned *counter, const char *other,
              char out[BOUNDARY_LEN + 1])
{
    for (;;) {
        uint64_t h = fnv1a(0xcbf29ce484222325ULL, j->id, strlen(j->id) + 1);
        unsigned c = (*counter)++;
        unsigned char cb[4] = {(unsigned char)(c >> 24),
                               (unsigned char)(c >> 16),
                               (unsigned char)(c >> 8), (unsigned char)c};
        h = fnv1a(h, cb, sizeof cb);
        h ^= h >> 33; /* finalizer: FNV's last byte barely moves the top */
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
        snprintf(out, BOUNDARY_LEN + 1, BOUNDARY_PREFIX "%016" PRIx64, h);
        if (other && strcmp(out, other) == 0)
            continue;
        if (j->text && strstr(j->text, out))
            continue;
        if (j->html && strstr(j->html, out))
            continue;
        return;
    }
}

/* ---- bodies ---- */

/* 7bit needs ASCII without controls (TAB aside), lines <= 998 octets;
 * bare CR and LF count as line ends (they are rewritten as CRLF). */
static int
needs_qp(const char *s)
{
    size_t line = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if (c == '\r' || c == '\n') {
            line = 0;
            continue;
        }
        if (c >= 0x7f || (c < 0x20 && c != '\t'))
            return 1;
        if (++line > 998)
            return 1;
    }
    return 0;
}

static void
body_7bit(struct w *w, const char *s)
{
    while (*s) {
        size_t run = strcspn(s, "\r\n");
        w_put(w, s, run);
        s += run;
        if (*s == '\0')
            break;
        if (s[0] == '\r' && s[1] == '\n')
            s++;
        s++;
        w_put(w, "\r\n", 2);
    }
}

/* What a byte is to quoted-printable: written as it is (33..126 but
 * '='), white space (as it is unless it ends a line), a line break, or
 * "=XX" (the rest, and NUL, which ends the text). */
enum { QP_HEX = 0, QP_LIT, QP_WSP, QP_EOL };

static const unsigned char qp_class[256] = {
    ['\t'] = QP_WSP, ['\n'] = QP_EOL, ['\r'] = QP_EOL, [' '] = QP_WSP,
#define L4(c) [c] = QP_LIT, [c + 1] = QP_LIT, [c + 2] = QP_LIT, [c + 3] = QP_LIT
#define L16(c) L4(c), L4(c + 4), L4(c + 8), L4(c + 12)
    [33] = QP_LIT,   [34] = QP_LIT,   [35] = QP_LIT,   L4(36),
    L4(40),          L4(44),          L4(48),          L4(52),
    L4(56),          [60] = QP_LIT,   [62] = QP_LIT,   [63] = QP_LIT,
    L16(64),         L16(80),         L16(96),         L4(112),
    L4(116),         L4(120),         [124] = QP_LIT,  [125] = QP_LIT,
    [126] = QP_LIT,
#undef L16
#undef L4
};

/* White space at p ends its line (the text's end or a break follows):
 * written "=XX", as trailing white space may be lost in transit. */
static int
qp_wsp_last(const unsigned char *p)
{
    return p[1] == '\0' || qp_class[p[1]] == QP_EOL;
}

/*
 * Quoted-printable (RFC 2045 6.7), lines of at most QP_COL - 1 characters
 * and a soft break "=". Runs of bytes written as they are go out in one
 * copy (the text of a typical message is one run a line: a byte at a time
 * this was the worker's largest cost of building a message).
 */
static void
body_qp(struct w *w, const char *str)
{
    const unsigned char *p = (const unsigned char *)str;
    char out[1024];
    size_t o = 0, col = 0;
    while (*p && w->rc == 0) {
        unsigned char cls = qp_class[*p];
        if (cls == QP_EOL) {
            if (p[0] == '\r' && p[1] == '\n')
                p++;
            p++;
            out[o++] = '\r';
            out[o++] = '\n';
            col = 0;
        } else if (cls == QP_LIT || (cls == QP_WSP && !qp_wsp_last(p))) {
            if (col + 1 > QP_COL - 1) { /* keep room for the '=' */
                out[o++] = '=';
                out[o++] = '\r';
                out[o++] = '\n';
                col = 0;
            }
            size_t limit = QP_COL - 1 - col, k = 1;
            while (k < limit &&
                   (qp_class[p[k]] == QP_LIT ||
                    (qp_class[p[k]] == QP_WSP && !qp_wsp_last(p + k))))
                k++;
            memcpy(out + o, p, k);
            o += k;
            col += k;
            p += k;
        } else {
            if (col + 3 > QP_COL - 1) {
                out[o++] = '=';
                out[o++] = '\r';
                out[o++] = '\n';
                col = 0;
            }
            out[o++] = '=';
            out[o++] = hexd[*p >> 4];
            out[o++] = hexd[*p & 15];
            col += 3;
            p++;
        }
        if (o > sizeof out - QP_COL - 8) {
            w_put(w, out, o);
            o = 0;
        }
    }
    w_put(w, out, o);
}

static void
body_b64(struct w *w, const unsigned char *d, size_t n)
{
    char out[1024];
    size_t o = 0;
    for (size_t i = 0; i < n && w->rc == 0; i += B64_IN_LINE) {
        size_t k = n - i < B64_IN_LINE ? n - i : B64_IN_LINE;
        o += b64_encode(d + i, k, out + o);
        out[o++] = '\r';
        out[o++] = '\n';
        if (o > sizeof out - 80) {
            w_put(w, out, o);
            o = 0;
        }
    }
    w_put(w, out, o);
}

static void
h_line(struct w *w, const char *name, const char *value)
{
    h_begin(w, name);
    h_raw(w, " ", 1);
    h_raw(w, value, strlen(value));
    h_end(w);
}

/* Content headers, blank line and body of a text/{subtype} part. */
static void
part_text(struct w *w, const char *subtype, const char *body)
{
    int qp = needs_qp(body);
    h_begin(w, "Content-Type");
    h_raw(w, " text/", 6);
    h_raw(w, subtype, strlen(subtype));
    h_raw(w, "; charset=utf-8", 15);
    h_end(w);
    h_line(w, "Content-Transfer-Encoding", qp ? "quoted-printable" : "7bit");
    w_put(w, "\r\n", 2);
    if (qp)
        body_qp(w, body);
    else
        body_7bit(w, body);
}

static void
multipart_header(struct w *w, const char *subtype, const char *boundary)
{
    h_begin(w, "Content-Type");
    h_raw(w, " multipart/", 11);
    h_raw(w, subtype, strlen(subtype));
    h_raw(w, ";", 1);
    h_room(w, 12 + BOUNDARY_LEN);
    h_raw(w, " boundary=\"", 11);
    h_raw(w, boundary, BOUNDARY_LEN);
    h_raw(w, "\"", 1);
    h_end(w);
    w_put(w, "\r\n", 2);
}

static void
delim(struct w *w, const char *boundary, int first, int close)
{
    w_str(w, first ? "--" : "\r\n--");
    w_put(w, boundary, BOUNDARY_LEN);
    w_str(w, close ? "--\r\n" : "\r\n");
}

/* The body proper: text, html or both (multipart/alternative). */
static void
part_body(struct w *w, const struct job *j, unsigned *counter,
          const char *outer)
{
    if (j->text && j->html) {
        char b[BOUNDARY_LEN + 1];
        boundary_make(j, counter, outer, b);
        multipart_header(w, "alternative", b);
        delim(w, b, 1, 0);
        part_text(w, "plain", j->text);
        delim(w, b, 0, 0);
        part_text(w, "html", j->html);
        delim(w, b, 0, 1);
    } else if (j->html) {
        part_text(w, "html", j->html);
    } else {
        part_text(w, "plain", j->text ? j->text : "");
    }
}

static const char *
att_ctype(const struct job_attachment *a)
{
    const char *t = a->content_type;
    if (t == NULL)
        return "application/octet-stream";
    /* composite types may not be base64-encoded (RFC 2046 5) */
    if (strncasecmp(t, "multipart/", 10) == 0 ||
        strncasecmp(t, "message/", 8) == 0)
        return "application/octet-stream";
    return t;
}

static void
part_attachment(struct w *w, const struct job_attachment *a)
{
    const char *t = att_ctype(a);
    h_begin(w, "Content-Type");
    h_raw(w, " ", 1);
    h_raw(w, t, strlen(t));
    if (a->filename)
        h_param(w, "name", a->filename);
    h_end(w);
    h_begin(w, "Content-Disposition");
    h_raw(w, " attachment", 11);
    if (a->filename)
        h_param(w, "filename", a->filename);
    h_end(w);
    h_line(w, "Content-Transfer-Encoding", "base64");
    w_put(w, "\r\n", 2);
    body_b64(w, a->data, a->len);
}

/* ---- the message ---- */

static int
check(const struct job *j, const struct mime_opts *o, struct herr *e)
{
    char field[HERR_FIELD_MAX];
    if (!id_ok(j->id))
        return herr_set(e, HERR_INVALID, "id", "missing or not a job id");
    if (!addr_ok(o->from.email))
        return herr_set(e, HERR_INVALID, "from", "not a usable address");
    if (o->reply_to && !addr_ok(o->reply_to))
        return herr_set(e, HERR_INVALID, "reply_to", "not a usable address");
    if (!domain_ok(o->msgid_domain))
        return herr_set(e, HERR_INVALID, "msgid_domain", "not a domain");
    for (size_t i = 0; i < j->nto + j->ncc; i++) {
        int to = i < j->nto;
        const struct job_addr *a = to ? &j->to[i] : &j->cc[i - j->nto];
        if (!addr_ok(a->email)) {
            snprintf(field, sizeof field, "%s[%zu]", to ? "to" : "cc",
                     to ? i : i - j->nto);
            return herr_set(e, HERR_INVALID, field, "not a usable address");
        }
    }
    for (size_t i = 0; i < j->nheaders; i++) {
        snprintf(field, sizeof field, "headers[%zu]", i);
        if (!xname_ok(j->headers[i].name))
            return herr_set(e, HERR_INVALID, field, "not an X- header name");
        if (j->headers[i].value == NULL)
            return herr_set(e, HERR_INVALID, field, "no value");
    }
    for (size_t i = 0; i < j->nattachments; i++) {
        const struct job_attachment *a = &j->attachments[i];
        snprintf(field, sizeof field, "attachments[%zu]", i);
        if (a->content_type && !ctype_ok(a->content_type))
            return herr_set(e, HERR_INVALID, field, "bad content_type");
        if (a->len > 0 && a->data == NULL)
            return herr_set(e, HERR_INVALID, field, "no data");
    }
    return 0;
}

/* A lower bound of the output size (to fail early) and a first guess of
 * it (to allocate once for typical messages). */
static void
estimate(const struct job *j, const struct mime_opts *o, size_t *min,
         size_t *guess)
{
    size_t body = 0, hdr = 1024, att = 0;
    if (j->text)
        body += strlen(j->text);
    if (j->html)
        body += strlen(j->html);
    for (size_t i = 0; i < j->nattachments; i++)
        att += (j->attachments[i].len + 2) / 3 * 4 +
               (j->attachments[i].len / B64_IN_LINE + 1) * 2;
    if (j->subject)
        hdr += strlen(j->subject) * 3;
    if (o->from.name)
        hdr += strlen(o->from.name) * 3;
    for (size_t i = 0; i < j->nto + j->ncc; i++) {
        const struct job_addr *a = i < j->nto ? &j->to[i] : &j->cc[i - j->nto];
        hdr += strlen(a->email) + 8 + (a->name ? strlen(a->name) * 3 : 0);
    }
    for (size_t i = 0; i < j->nheaders; i++)
        hdr += strlen(j->headers[i].name) + strlen(j->headers[i].value) * 3;
    hdr += j->nattachments * 512;
    *min = body + att;
    *guess = hdr + body + body / 8 + att;
}

int
mime_build(const struct job *j, const struct mime_opts *o, char **out,
           size_t *outlen, struct herr *e)
{
    *out = NULL;
    if (outlen)
        *outlen = 0;
    if (j == NULL || o == NULL)
        return herr_set(e, HERR_INVALID, NULL, "no job or no options");
    int rc = check(j, o, e);
    if (rc)
        return rc;
    size_t min, guess;
    estimate(j, o, &min, &guess);
    if (min > MIME_MAX_BYTES)
        return herr_set(e, HERR_TOOBIG, NULL, "message over %u bytes",
                        MIME_MAX_BYTES);

    struct w w = {.rc = 0};
    buf_init(&w.b, MIME_MAX_BYTES);
    /* one allocation for the common case; struct buf's fields are
     * public and this keeps its invariant (NUL-terminated, cap counts the
     * terminator) */
    if (guess > MIME_MAX_BYTES)
        guess = MIME_MAX_BYTES;
    w.b.cap = guess + 1;
    w.b.p = xmalloc(w.b.cap);
    w.b.p[0] = '\0';

    char date[40];
    clock_rfc5322(o->date_ms, date);
    h_line(&w, "Date", date);

    h_begin(&w, "From");
    h_mailbox(&w, o->from.name, o->from.email, 0);
    h_end(&w);
    if (o->reply_to) {
        h_begin(&w, "Reply-To");
        h_mailbox(&w, NULL, o->reply_to, 0);
        h_end(&w);
    }
    h_addrlist(&w, "To", j->to, j->nto);
    if (j->ncc > 0)
        h_addrlist(&w, "Cc", j->cc, j->ncc);

    h_begin(&w, "Subject");
    h_text(&w, j->subject ? j->subject : "");
    h_end(&w);

    char *mid = mime_message_id(j->id, o->msgid_domain);
    h_line(&w, "Message-ID", mid);
    free(mid);
    h_line(&w, "MIME-Version", "1.0");
    h_line(&w, "X-Herald-Id", j->id);
    for (size_t i = 0; i < j->nheaders; i++) {
        if (strcasecmp(j->headers[i].name, "X-Herald-Id") == 0)
            continue; /* ours is the one that identifies the message */
        h_begin(&w, j->headers[i].name);
        h_text(&w, j->headers[i].value);
        h_end(&w);
    }

    unsigned counter = 0;
    if (j->nattachments > 0) {
        char b[BOUNDARY_LEN + 1];
        boundary_make(j, &counter, NULL, b);
        multipart_header(&w, "mixed", b);
        delim(&w, b, 1, 0);
        part_body(&w, j, &counter, b);
        for (size_t i = 0; i < j->nattachments; i++) {
            delim(&w, b, 0, 0);
            part_attachment(&w, &j->attachments[i]);
        }
        delim(&w, b, 0, 1);
    } else {
        part_body(&w, j, &counter, NULL);
        if (w.rc == 0 && w.b.len >= 2 &&
            memcmp(w.b.p + w.b.len - 2, "\r\n", 2) != 0)
            w_put(&w, "\r\n", 2);
    }

    if (w.rc) {
        buf_free(&w.b);
        return herr_set(e, w.rc, NULL, "message over %u bytes", MIME_MAX_BYTES);
    }
    *out = buf_take(&w.b, outlen);
    return 0;
}
