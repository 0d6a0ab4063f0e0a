/*
 * mc — the Message Center's pure parts: status names, the checks every
 * write passes, subject words, cursors, CSV and the record's JSON forms.
 * The store itself (dispatch to the backends, import) is io/mc_store.c;
 * the backends (io/mc_sqlite.c, io/mc_pg.c) only store and load.
 */
#include "mc.h"
#include "jfast.h"
#include "clock.h"
#include "util.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {
    [MC_QUEUED] = "queued",     [MC_SENDING] = "sending", [MC_SENT] = "sent",
    [MC_DEFERRED] = "deferred", [MC_FAILED] = "failed",
};
#define NSTATUS (sizeof status_names / sizeof status_names[0])

const char *
mc_status_name(enum mc_status s)
{
    if ((unsigned)s < NSTATUS)
        return status_names[s];
    return "unknown";
}

int
mc_status_parse(const char *s, enum mc_status *out)
{
    for (size_t i = 0; s && i < NSTATUS; i++)
        if (strcmp(s, status_names[i]) == 0) {
            if (out)
                *out = (enum mc_status)i;
            return 0;
        }
    return HERR_INVALID;
}

int
mc_status_valid(enum mc_status s)
{
    return (unsigned)s < NSTATUS;
}

int
mc_record_check(const struct mc_record *r, struct herr *e)
{
    if (r->id == NULL || r->id[0] == '\0')
        return herr_set(e, HERR_INVALID, "id", "missing");
    if (r->org == NULL)
        return herr_set(e, HERR_INVALID, "org", "missing");
    if (r->account == NULL)
        return herr_set(e, HERR_INVALID, "account", "missing");
    if (r->type == NULL)
        return herr_set(e, HERR_INVALID, "type", "missing");
    if (r->from == NULL)
        return herr_set(e, HERR_INVALID, "from", "missing");
    if (!mc_status_valid(r->status))
        return herr_set(e, HERR_INVALID, "status", "unknown status %d",
                        (int)r->status);
    if (r->created_at <= 0)
        return herr_set(e, HERR_INVALID, "created_at", "not set");
    return 0;
}

void
mc_update_init(struct mc_update *u, const char *id, enum mc_status status)
{
    memset(u, 0, sizeof *u);
    u->id = id;
    u->status = status;
    u->sent_at = -1;
    u->next_attempt_at = -1;
}

int
mc_update_check(const struct mc_update *u, struct herr *e)
{
    if (u->id == NULL || u->id[0] == '\0')
        return herr_set(e, HERR_INVALID, "id", "missing");
    if (!mc_status_valid(u->status))
        return herr_set(e, HERR_INVALID, "status", "unknown status %d",
                        (int)u->status);
    return 0;
}

void
mc_purge_cutoffs(long retention_days, long body_days, int64_t now_ms,
                 int64_t *records_before, int64_t *bodies_before)
{
    const int64_t day = 86400000;
    *records_before = retention_days > 0 ? now_ms - retention_days * day : 0;
    *bodies_before = body_days > 0 ? now_ms - body_days * day : 0;
    if (*records_before < 0)
        *records_before = 0;
    if (*bodies_before < 0)
        *bodies_before = 0;
}

/* ---- subject words, cursors ---- */

static int
word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c >= 0x80;
}

const char *
mc_word_next(const char **p, size_t *len)
{
    const unsigned char *s = (const unsigned char *)*p;
    while (*s && !word_byte(*s))
        s++;
    if (*s == '\0') {
        *p = (const char *)s;
        return NULL;
    }
    const unsigned char *w = s;
    while (*s && word_byte(*s))
        s++;
    *len = (size_t)(s - w);
    *p = (const char *)s;
    return (const char *)w;
}

int
mc_q_words(const char *q, char words[MC_Q_WORDS_MAX][MC_Q_WORD_MAX + 1],
           size_t *n, struct herr *e)
{
    *n = 0;
    if (utf8_check((const unsigned char *)q, strlen(q)) != strlen(q))
        return herr_set(e, HERR_INVALID, "q", "not valid UTF-8");
    const char *p = q, *word;
    size_t len;
    while ((word = mc_word_next(&p, &len)) != NULL) {
        const unsigned char *w = (const unsigned char *)word;
        if (*n == MC_Q_WORDS_MAX)
            return herr_set(e, HERR_INVALID, "q", "more than %d words",
                            MC_Q_WORDS_MAX);
        if (len > MC_Q_WORD_MAX)
            return herr_set(e, HERR_INVALID, "q",
                            "a word of more than %d bytes", MC_Q_WORD_MAX);
        for (size_t i = 0; i < len; i++)
            words[*n][i] =
                (char)(w[i] >= 'A' && w[i] <= 'Z' ? w[i] - 'A' + 'a' : w[i]);
        words[*n][len] = '\0';
        (*n)++;
    }
    if (*n == 0)
        return herr_set(e, HERR_INVALID, "q",
                        "no word to search for (letters or digits)");
    /* A word that begins another one, or repeats an earlier one, adds
     * nothing (a subject word that begins with "camp" begins with "cam"):
     * dropped, so that a store's planner does not take "receipt receipt"
     * for rarer than "receipt" (PostgreSQL multiplies the frequencies). */
    int drop[MC_Q_WORDS_MAX] = {0};
    for (size_t i = 0; i < *n; i++)
        for (size_t j = 0; j < *n && !drop[i]; j++) {
            size_t li = strlen(words[i]), lj = strlen(words[j]);
            if (j != i && (li < lj ? strncmp(words[i], words[j], li) == 0
                                   : li == lj && j < i &&
                                         strcmp(words[i], words[j]) == 0))
                drop[i] = 1;
        }
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++)
        if (!drop[i]) {
            if (kept != i)
                memcpy(words[kept], words[i], strlen(words[i]) + 1);
            kept++;
        }
    *n = kept;
    return 0;
}

/* "<created_at>.<id>" in base64url without padding. */
char *
mc_cursor_new(int64_t created_at, const char *id)
{
    char raw[32 + JOB_ID_MAX];
    int n = snprintf(raw, sizeof raw, "%lld.%s", (long long)created_at, id);
    if (n < 0 || (size_t)n >= sizeof raw)
        abort(); /* ids are at most JOB_ID_MAX */
    char *out = xmalloc(4 * (((size_t)n + 2) / 3) + 1);
    int k =
        EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)raw, n);
    while (k > 0 && out[k - 1] == '=')
        k--;
    out[k] = '\0';
    for (char *c = out; *c; c++)
        *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
    return out;
}

int
mc_cursor_parse(const char *cursor, int64_t *created_at, char *id,
                size_t idsize, struct herr *e)
{
    size_t len = strlen(cursor);
    char b64[MC_CURSOR_MAX + 4];
    if (len == 0 || len > MC_CURSOR_MAX || len % 4 == 1)
        goto bad;
    for (size_t i = 0; i < len; i++) {
        char c = cursor[i];
        if (!(isalnum((unsigned char)c) || c == '-' || c == '_'))
            goto bad;
        b64[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    int pads = 0;
    while (len % 4) {
        b64[len++] = '=';
        pads++;
    }
    b64[len] = '\0';
    unsigned char raw[MC_CURSOR_MAX];
    int n = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)len);
    if (n < pads)
        goto bad;
    n -= pads; /* EVP_DecodeBlock counts padding as zero bytes */
    raw[n] = '\0';
    char *dot = memchr(raw, '.', (size_t)n);
    if (dot == NULL || dot == (char *)raw || (size_t)(dot - (char *)raw) > 19)
        goto bad;
    int64_t at = 0;
    for (char *c = (char *)raw; c < dot; c++) {
        if (*c < '0' || *c > '9')
            goto bad;
        at = at * 10 + (*c - '0');
    }
    if (!job_valid_id(dot + 1) || strlen(dot + 1) >= idsize)
        goto bad;
    *created_at = at;
    strcpy(id, dot + 1);
    return 0;
bad:
    return herr_set(e, HERR_INVALID, "cursor",
                    "not a cursor this store gave (use next_cursor as is)");
}

/* ---- CSV ---- */

static void
csv_cell(struct buf *out, const char *s, int last)
{
    s = s ? s : "";
    int formula = s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' ||
                  s[0] == '\t' || s[0] == '\r';
    buf_puts(out, "\"");
    if (formula)
        buf_puts(out, "'");
    for (const char *p = s; *p; p++) {
        const char *q = strchr(p, '"');
        if (q == NULL) {
            buf_puts(out, p);
            break;
        }
        buf_append(out, p, (size_t)(q - p) + 1);
        buf_puts(out, "\"");
        p = q;
    }
    buf_puts(out, last ? "\"\r\n" : "\",");
}

void
mc_csv_header(struct buf *out)
{
    buf_puts(out, "id,created_at,org,account,type,status,path,from,to,"
                  "subject,attempts,sent_at,last_error\r\n");
}

/* Every address of a [{"email"...}] array, "; "-separated, onto b. */
static void
csv_addrs(struct buf *b, const char *js)
{
    json_t *a = js ? json_loads(js, 0, NULL) : NULL;
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o)
    {
        const char *em = json_string_value(json_object_get(o, "email"));
        if (em == NULL)
            continue;
        if (b->len)
            buf_puts(b, "; ");
        buf_puts(b, em);
    }
    json_decref(a);
}

void
mc_csv_row(struct buf *out, const struct mc_record *r)
{
    char created[CLOCK_RFC3339_LEN] = "", sent[CLOCK_RFC3339_LEN] = "";
    char attempts[16];
    if (r->created_at)
        clock_rfc3339(r->created_at, created);
    if (r->sent_at)
        clock_rfc3339(r->sent_at, sent);
    snprintf(attempts, sizeof attempts, "%d", r->attempts);
    struct buf to;
    buf_init(&to, 0);
    csv_addrs(&to, r->to_json);
    csv_addrs(&to, r->cc_json);
    const char *cells[] = {r->id,        created,  r->org,
                           r->account,   r->type,  mc_status_name(r->status),
                           r->path,      r->from,  to.p,
                           r->subject,   attempts, sent,
                           r->last_error};
    size_t nc = sizeof cells / sizeof cells[0];
    for (size_t i = 0; i < nc; i++)
        csv_cell(out, cells[i], i + 1 == nc);
    buf_free(&to);
}

void
mc_record_free(struct mc_record *r)
{
    if (r == NULL)
        return;
    char **strs[] = {
        &r->id,
        &r->org,
        &r->account,
        &r->type,
        &r->path,
        &r->path_reason,
        &r->from,
        &r->from_name,
        &r->sender,
        &r->reply_to,
        &r->to_json,
        &r->cc_json,
        &r->bcc_json,
        &r->subject,
        &r->text,
        &r->html,
        &r->attachments_json,
        &r->meta_json,
        &r->recipients_json,
        &r->last_error,
        &r->smtp_reply,
        &r->resend_of,
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        free(*strs[i]);
    free(r);
}

void
mc_records_free(struct mc_record **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        mc_record_free(v[i]);
    free(v);
}

static char *
dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0. */
static size_t
utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned min;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, min = 0x10000;
    else
        return 0;
    unsigned cp = c & (0x3F >> (n - 1));
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

static json_t *
str_or_null(const char *s)
{
    if (s == NULL)
        return json_null();
    json_t *v = json_string(s);
    if (v)
        return v;
    /* Not UTF-8 (a stored SMTP reply may carry anything): keep the text,
     * with each bad byte shown as U+FFFD, rather than lose the field. */
    struct buf b;
    buf_init(&b, 0);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_len(p);
        if (n) {
            buf_append(&b, p, n);
            p += n;
        } else {
            buf_puts(&b, "\xEF\xBF\xBD");
            p++;
        }
    }
    size_t len;
    char *t = buf_take(&b, &len);
    v = json_stringn(t ? t : "", t ? len : 0);
    free(t);
    return v ? v : json_string("");
}

static int w_str(struct buf *b, const char *s);

/* The JSON texts of a new record, written as json_dumps(JSON_COMPACT)
 * would write the arrays jansson built here before (same keys, same
 * order, same escapes): building and dumping them was a tenth of the
 * Message Center thread's time in make bench. */
static char *
addr_list(const struct job_addr *a, size_t n)
{
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "[");
    for (size_t i = 0; i < n; i++) {
        buf_puts(&b, i ? ",{\"email\":" : "{\"email\":");
        w_str(&b, a[i].email);
        if (a[i].name) {
            buf_puts(&b, ",\"name\":");
            w_str(&b, a[i].name);
        }
        buf_puts(&b, "}");
    }
    buf_puts(&b, "]");
    return buf_take(&b, NULL);
}

static void
rcpt_add(struct buf *b, const struct job_addr *a, size_t n, const char *kind)
{
    for (size_t i = 0; i < n; i++) {
        buf_puts(b, b->len > 1 ? ",{\"email\":" : "{\"email\":");
        w_str(b, a[i].email);
        buf_puts(b, ",\"kind\":\"");
        buf_puts(b, kind);
        buf_puts(b, "\",\"status\":\"pending\"}");
    }
}

struct mc_record *
mc_record_from_job(const struct job *j)
{
    if (j->id == NULL)
        return NULL;
    struct mc_record *r = xcalloc(1, sizeof *r);
    r->id = xstrdup(j->id);
    r->org = dup_or_null(j->org);
    r->account = dup_or_null(j->account);
    r->type = dup_or_null(j->type);
    r->status = MC_QUEUED;
    r->from = dup_or_null(j->from);
    r->from_name = dup_or_null(j->from_name);
    r->reply_to = dup_or_null(j->reply_to ? j->reply_to : j->from);
    r->to_json = addr_list(j->to, j->nto);
    r->cc_json = addr_list(j->cc, j->ncc);
    r->bcc_json = addr_list(j->bcc, j->nbcc);
    r->subject = dup_or_null(j->subject);
    r->text = dup_or_null(j->text);
    r->html = dup_or_null(j->html);

    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "[");
    for (size_t i = 0; i < j->nattachments; i++) {
        const struct job_attachment *a = &j->attachments[i];
        buf_puts(&b, i ? ",{\"filename\":" : "{\"filename\":");
        w_str(&b, a->filename);
        buf_puts(&b, ",\"content_type\":");
        w_str(&b,
              a->content_type ? a->content_type : "application/octet-stream");
        char size[32];
        snprintf(size, sizeof size, ",\"size\":%zu}", a->len);
        buf_puts(&b, size);
    }
    buf_puts(&b, "]");
    r->attachments_json = buf_take(&b, NULL);
    r->meta_json = dup_or_null(j->meta_json);
    r->resend_of = dup_or_null(j->resend_of);

    buf_init(&b, 0);
    buf_puts(&b, "[");
    rcpt_add(&b, j->to, j->nto, "to");
    rcpt_add(&b, j->cc, j->ncc, "cc");
    rcpt_add(&b, j->bcc, j->nbcc, "bcc");
    buf_puts(&b, "]");
    r->recipients_json = buf_take(&b, NULL);

    r->created_at = r->updated_at = clock_now_ms();
    r->attempts = 0;
    return r;
}

/* Embeds stored JSON text as JSON; text that does not parse (it never
 * should) is kept as a string so nothing is hidden from support staff.
 * jfast first (a listing embeds six fields per record: jansson's own
 * parser was most of herald-api's CPU), jansson's when jfast refuses. */
static json_t *
embed(const char *s)
{
    if (s == NULL)
        return json_null();
    size_t len = strlen(s);
    json_t *v = NULL;
    if (utf8_check((const unsigned char *)s, len) == len)
        v = jfast_loadb(s, len, NULL);
    if (v == NULL)
        v = json_loads(s, JSON_DECODE_ANY, NULL);
    return v ? v : str_or_null(s);
}

/* ---- a record as JSON: written, not built ---- */

/* `s` as a JSON string (each byte that is not UTF-8 shown as U+FFFD, as
 * str_or_null does), or null. */
static int
w_str(struct buf *b, const char *s)
{
    if (s == NULL)
        return buf_append(b, "null", 4);
    size_t n = strlen(s);
    if (utf8_check((const unsigned char *)s, n) == n)
        return jfast_dump_string(b, s, n);
    json_t *v = str_or_null(s);
    int rc = jfast_dumpb(v, b);
    json_decref(v);
    return rc;
}

static int
w_time(struct buf *b, int64_t ms)
{
    if (ms <= 0)
        return buf_append(b, "null", 4);
    char t[CLOCK_RFC3339_LEN];
    clock_rfc3339(ms, t);
    return jfast_dump_string(b, t, strlen(t));
}

/* Stored JSON text embedded as embed() makes it; without the entries of
 * kind "bcc" when drop_bcc (the recipients of an inbox row). The usual
 * empty values are copied as they are. */
static int
w_embed(struct buf *b, const char *s, int drop_bcc)
{
    if (s == NULL)
        return buf_append(b, "null", 4);
    if (!drop_bcc && (strcmp(s, "[]") == 0 || strcmp(s, "{}") == 0 ||
                      strcmp(s, "null") == 0))
        return buf_puts(b, s);
    json_t *v = embed(s);
    if (drop_bcc && json_is_array(v)) {
        size_t k = 0;
        while (k < json_array_size(v)) {
            const char *kind = json_string_value(
                json_object_get(json_array_get(v, k), "kind"));
            if (kind && strcmp(kind, "bcc") == 0)
                json_array_remove(v, k);
            else
                k++;
        }
    }
    size_t mark = b->len;
    int rc = jfast_dumpb(v, b);
    json_decref(v);
    if (rc == -1) { /* nested past what jfast writes: shown as text */
        b->len = mark;
        rc = w_str(b, s);
    }
    return rc;
}

int
mc_record_write(struct buf *b, const struct mc_record *r, unsigned flags)
{
    int nobcc = (flags & MC_JSON_NO_BCC) != 0;
    int rc = buf_puts(b, "{\"id\":");
#define W_KEY(k) (rc == 0 && (rc = buf_puts(b, ",\"" k "\":")) == 0)
    if (rc == 0)
        rc = w_str(b, r->id);
    if (W_KEY("org"))
        rc = w_str(b, r->org);
    if (W_KEY("account"))
        rc = w_str(b, r->account);
    if (W_KEY("type"))
        rc = w_str(b, r->type);
    if (W_KEY("status"))
        rc = w_str(b, mc_status_name(r->status));
    if (W_KEY("path"))
        rc = w_str(b, r->path);
    if (W_KEY("path_reason"))
        rc = w_str(b, r->path_reason);
    if (W_KEY("from"))
        rc = w_str(b, r->from);
    if (W_KEY("from_name"))
        rc = w_str(b, r->from_name);
    if (W_KEY("sender"))
        rc = w_str(b, r->sender);
    if (W_KEY("reply_to"))
        rc = w_str(b, r->reply_to);
    if (W_KEY("to"))
        rc = w_embed(b, r->to_json, 0);
    if (W_KEY("cc"))
        rc = w_embed(b, r->cc_json, 0);
    if (!nobcc && W_KEY("bcc"))
        rc = w_embed(b, r->bcc_json, 0);
    if (W_KEY("subject"))
        rc = w_str(b, r->subject);
    if (!(flags & MC_JSON_NO_BODIES)) {
        if (W_KEY("text"))
            rc = w_str(b, r->text);
        if (W_KEY("html"))
            rc = w_str(b, r->html);
    }
    if (W_KEY("attachments"))
        rc = w_embed(b, r->attachments_json, 0);
    if (W_KEY("meta"))
        rc = w_embed(b, r->meta_json, 0);
    if (W_KEY("recipients"))
        rc = w_embed(b, r->recipients_json, nobcc);
    if (W_KEY("created_at"))
        rc = w_time(b, r->created_at);
    if (W_KEY("updated_at"))
        rc = w_time(b, r->updated_at);
    if (W_KEY("sent_at"))
        rc = w_time(b, r->sent_at);
    if (W_KEY("attempts"))
        rc = buf_printf(b, "%d", r->attempts);
    if (W_KEY("next_attempt_at"))
        rc = w_time(b, r->next_attempt_at);
    if (W_KEY("last_error"))
        rc = w_str(b, r->last_error);
    if (W_KEY("smtp_reply"))
        rc = w_str(b, r->smtp_reply);
    if (W_KEY("resend_of"))
        rc = w_str(b, r->resend_of);
    if (W_KEY("body_expired"))
        rc = buf_puts(b, r->body_expired ? "true" : "false");
#undef W_KEY
    return rc ? rc : buf_append(b, "}", 1);
}

json_t *
mc_record_json(const struct mc_record *r, unsigned flags)
{
    struct buf b;
    buf_init(&b, 0);
    json_t *v = NULL;
    if (mc_record_write(&b, r, flags) == 0) {
        v = jfast_loadb(b.p, b.len, NULL); /* over its value cap: jansson */
        if (v == NULL)
            v = json_loadb(b.p, b.len, 0, NULL);
    }
    buf_free(&b);
    if (v == NULL)
        abort(); /* no memory */
    return v;
}

char *
mc_record_to_json(const struct mc_record *r)
{
    struct buf b;
    buf_init(&b, 0);
    if (mc_record_write(&b, r, 0) != 0)
        abort(); /* no maximum: only out of memory */
    size_t len;
    char *s = buf_take(&b, &len);
    if (s == NULL)
        abort();
    return s;
}
