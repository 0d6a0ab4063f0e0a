#include "dead.h"
#include "clock.h"
#include "err.h"
#include "util.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <string.h>

/* Valid UTF-8 without NUL: what a JSON string can carry as text. */
static int
utf8_ok(const unsigned char *s, size_t n)
{
    return memchr(s, 0, n) == NULL && utf8_check(s, n) == n;
}

char *
dead_entry_new(const char *raw, size_t rawlen, const char *reason,
               const char *field, const char *error, const char *id,
               int64_t at_ms)
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
    if (utf8_ok((const unsigned char *)raw, rawlen)) {
        json_object_set_new(o, "job", json_stringn(raw, rawlen));
    } else {
        size_t cap = 4 * ((rawlen + 2) / 3) + 1;
        char *b64 = xmalloc(cap);
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)raw,
                        (int)rawlen);
        json_object_set_new(o, "job_base64", json_string(b64));
        free(b64);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s == NULL)
        abort();
    char *out = xstrdup(s);
    free(s);
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
