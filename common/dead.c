#include "dead.h"
#include "clock.h"
#include "err.h"
#include "util.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

/* Valid UTF-8 without NUL: what a JSON string can carry as text. */
int
dead_is_text(const char *raw, size_t n)
{
    return memchr(raw, 0, n) == NULL &&
           utf8_check((const unsigned char *)raw, n) == n;
}

/* The length of the UTF-8 sequence a lead byte starts (1 for ASCII and for
 * bytes that cannot lead: utf8_check refuses those). */
static size_t
seq_len(unsigned char c)
{
    if (c >= 0xF0 && c <= 0xF7)
        return 4;
    if (c >= 0xE0)
        return c <= 0xEF ? 3 : 1;
    if (c >= 0xC0)
        return 2;
    return 1;
}

void
dead_scan_feed(struct dead_scan *s, const char *chunk, size_t n)
{
    const unsigned char *p = (const unsigned char *)chunk;
    size_t i = 0;
    if (s->bad)
        return;
    if (s->ncarry) {
        /* complete the sequence the last chunk cut */
        unsigned char tmp[8];
        size_t k = s->ncarry, need = seq_len(s->carry[0]);
        memcpy(tmp, s->carry, k);
        while (k < need && i < n)
            tmp[k++] = p[i++];
        if (k < need) {
            memcpy(s->carry, tmp, k);
            s->ncarry = k;
            return;
        }
        s->ncarry = 0;
        if (utf8_check(tmp, k) != k) {
            s->bad = 1;
            return;
        }
    }
    /* a sequence cut by the end of this chunk waits for the next one */
    size_t end = n;
    for (size_t back = 1; back <= 3 && back <= n - i; back++) {
        unsigned char c = p[n - back];
        if ((c & 0xC0) == 0x80)
            continue;
        if (c >= 0xC0 && seq_len(c) > back)
            end = n - back;
        break;
    }
    if (memchr(p + i, 0, end - i) != NULL ||
        utf8_check(p + i, end - i) != end - i) {
        s->bad = 1;
        return;
    }
    memcpy(s->carry, p + end, n - end);
    s->ncarry = n - end;
}

int
dead_scan_text(const struct dead_scan *s)
{
    return !s->bad && s->ncarry == 0;
}

/* ---- JSON string escaping (only ASCII changes: UTF-8 passes) ---- */

static size_t
esc_len(const unsigned char *p, size_t n)
{
    size_t len = n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' ||
            c == '\r' || c == '\t')
            len += 1;
        else if (c < 0x20)
            len += 5; /* \u00XX */
    }
    return len;
}

static size_t
esc_write(char *out, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        const char *e = NULL;
        switch (c) {
        case '"':
            e = "\\\"";
            break;
        case '\\':
            e = "\\\\";
            break;
        case '\b':
            e = "\\b";
            break;
        case '\f':
            e = "\\f";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\t':
            e = "\\t";
            break;
        default:
            break;
        }
        if (e) {
            out[o++] = e[0];
            out[o++] = e[1];
        } else if (c < 0x20) {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            out[o++] = (char)c;
        }
    }
    return o;
}

size_t
dead_entry_text_len(const char *p, size_t n)
{
    return esc_len((const unsigned char *)p, n);
}

void
dead_entry_text(struct buf *out, const char *p, size_t n)
{
    size_t len = esc_len((const unsigned char *)p, n);
    char *tmp = xmalloc(len + 1);
    esc_write(tmp, (const unsigned char *)p, n);
    if (buf_append(out, tmp, len) != 0)
        abort(); /* the caller's buffer has no cap */
    free(tmp);
}

/* ---- base64 in chunks ---- */

static void
b64_append(struct buf *out, const unsigned char *p, size_t n)
{
    char *tmp = xmalloc(4 * ((n + 2) / 3) + 1);
    int k = EVP_EncodeBlock((unsigned char *)tmp, p, (int)n);
    if (buf_append(out, tmp, (size_t)k) != 0)
        abort();
    free(tmp);
}

void
dead_entry_b64(struct buf *out, struct dead_b64 *st, const char *chunk,
               size_t n)
{
    const unsigned char *p = (const unsigned char *)chunk;
    if (st->ncarry) {
        unsigned char g[3];
        size_t k = st->ncarry;
        memcpy(g, st->carry, k);
        while (k < 3 && n) {
            g[k++] = *p++;
            n--;
        }
        if (k < 3) {
            memcpy(st->carry, g, k);
            st->ncarry = k;
            return;
        }
        st->ncarry = 0;
        b64_append(out, g, 3);
    }
    size_t whole = n - n % 3;
    if (whole)
        b64_append(out, p, whole);
    memcpy(st->carry, p + whole, n - whole);
    st->ncarry = n - whole;
}

void
dead_entry_b64_end(struct buf *out, struct dead_b64 *st)
{
    if (st->ncarry)
        b64_append(out, st->carry, st->ncarry);
    st->ncarry = 0;
}

/* ---- whole entries ---- */

char *
dead_entry_head(const char *reason, const char *field, const char *error,
                const char *id, int64_t at_ms, int base64)
{
    char at[CLOCK_RFC3339_LEN];
    clock_rfc3339(at_ms, at);
    json_t *o = json_object();
    json_object_set_new(o, "error", json_string(error ? error : ""));
    json_object_set_new(o, "field", json_string(field ? field : ""));
    json_object_set_new(o, "reason", json_string(reason));
    json_object_set_new(o, "at", json_string(at));
    if (id)
        json_object_set_new(o, "id", json_string(id));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (s == NULL)
        abort();
    /* "{…}" -> "{…,\"job\":\"" */
    size_t n = strlen(s);
    char *head = xasprintf("%.*s,\"%s\":\"", (int)(n - 1), s,
                           base64 ? "job_base64" : "job");
    free(s);
    return head;
}

char *
dead_entry_new(const char *raw, size_t rawlen, const char *reason,
               const char *field, const char *error, const char *id,
               int64_t at_ms)
{
    int text = dead_is_text(raw, rawlen);
    char *head = dead_entry_head(reason, field, error, id, at_ms, !text);
    size_t hl = strlen(head), tl = strlen(DEAD_ENTRY_TAIL);
    size_t body = text ? esc_len((const unsigned char *)raw, rawlen)
                       : 4 * ((rawlen + 2) / 3);
    char *out = xmalloc(hl + body + tl + 1);
    memcpy(out, head, hl);
    free(head);
    size_t o = hl;
    if (text)
        o += esc_write(out + o, (const unsigned char *)raw, rawlen);
    else
        o += (size_t)EVP_EncodeBlock((unsigned char *)out + o,
                                     (const unsigned char *)raw, (int)rawlen);
    memcpy(out + o, DEAD_ENTRY_TAIL, tl + 1);
    return out;
}

static char *
get_str(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v)
               ? xstrndup(json_string_value(v), json_string_length(v))
               : NULL;
}

int
dead_entry_parse(const char *s, size_t len, struct dead_entry *out)
{
    memset(out, 0, sizeof *out);
    json_t *o = json_loadb(s, len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return HERR_INVALID;
    }
    out->error = get_str(o, "error");
    out->field = get_str(o, "field");
    out->reason = get_str(o, "reason");
    out->at = get_str(o, "at");
    out->id = get_str(o, "id");
    json_t *job = json_object_get(o, "job");
    json_t *b64 = json_object_get(o, "job_base64");
    int rc = 0;
    if (json_is_string(job)) {
        out->joblen = json_string_length(job);
        out->job = xstrndup(json_string_value(job), out->joblen);
    } else if (json_is_string(b64)) {
        size_t n = json_string_length(b64);
        out->job = xmalloc(n / 4 * 3 + 4);
        int m = EVP_DecodeBlock((unsigned char *)out->job,
                                (const unsigned char *)json_string_value(b64),
                                (int)n);
        if (m < 0) {
            rc = HERR_INVALID;
        } else {
            /* EVP_DecodeBlock counts padding bytes as data: drop them. */
            const char *t = json_string_value(b64);
            if (n >= 1 && t[n - 1] == '=')
                m--;
            if (n >= 2 && t[n - 2] == '=')
                m--;
            out->joblen = (size_t)m;
            out->job[m] = '\0';
        }
    } else {
        rc = HERR_INVALID;
    }
    json_decref(o);
    if (rc)
        dead_entry_free(out);
    return rc;
}

void
dead_entry_free(struct dead_entry *d)
{
    free(d->error);
    free(d->field);
    free(d->reason);
    free(d->at);
    free(d->id);
    free(d->job);
    memset(d, 0, sizeof *d);
}
