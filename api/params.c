#include "params.h"
#include "clock.h"
#include "job.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const all_keys[] = {
    "org", "account", "status", "type",  "path",   "to",     "from",
    "q",   "since",   "until",  "limit", "cursor", "format", NULL};

static int
listed(const char *const *keys, const char *k)
{
    for (size_t i = 0; keys[i]; i++)
        if (strcmp(keys[i], k) == 0)
            return 1;
    return 0;
}

static int
bad(struct herr *e, const char *field, const char *why)
{
    return herr_set(e, HERR_INVALID, field, "%s", why);
}

static int
set_value(struct api_list *out, const char *k, const char *v, struct herr *e)
{
    struct mc_filter *f = &out->f;
    if (strcmp(k, "org") == 0) {
        if (!job_valid_org(v))
            return bad(e, k, "not an organisation ([A-Za-z0-9._-]{1,64})");
        f->org = v;
    } else if (strcmp(k, "account") == 0) {
        if (!job_valid_org(v))
            return bad(e, k, "not an account ([A-Za-z0-9._-]{1,64})");
        f->account = v;
    } else if (strcmp(k, "status") == 0) {
        if (mc_status_parse(v, &f->status) != 0)
            return bad(e, k,
                       "not one of queued, sending, sent, deferred, "
                       "failed");
        f->has_status = 1;
    } else if (strcmp(k, "type") == 0) {
        if (!job_valid_type(v))
            return bad(e, k, "not a type ([a-z0-9_-]{1,32})");
        f->type = v;
    } else if (strcmp(k, "path") == 0) {
        if (strcmp(v, "scheme") && strcmp(v, "spf") && strcmp(v, "relay"))
            return bad(e, k, "not one of scheme, spf, relay");
        f->path = v;
    } else if (strcmp(k, "to") == 0) {
        if (!job_valid_email(v))
            return bad(e, k, "not an address");
        f->to = v;
    } else if (strcmp(k, "from") == 0) {
        if (!job_valid_email(v))
            return bad(e, k, "not an address");
        f->from = v;
    } else if (strcmp(k, "q") == 0) {
        char words[MC_Q_WORDS_MAX][MC_Q_WORD_MAX + 1];
        size_t nw;
        if (mc_q_words(v, words, &nw, e) != 0)
            return HERR_INVALID;
        f->q = v;
    } else if (strcmp(k, "since") == 0 || strcmp(k, "until") == 0) {
        int64_t *t = k[0] == 's' ? &f->since : &f->until;
        if (clock_parse_rfc3339(v, t) != 0 || *t <= 0)
            return bad(e, k, "not an RFC 3339 time (2026-11-26T14:58:07Z)");
    } else if (strcmp(k, "limit") == 0) {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (errno || end == v || *end || n < 1 || n > MC_LIST_MAX)
            return herr_set(e, HERR_INVALID, k, "not a number in 1..%d",
                            MC_LIST_MAX);
        f->limit = (int)n;
    } else if (strcmp(k, "cursor") == 0) {
        int64_t at;
        char id[JOB_ID_MAX + 1];
        if (mc_cursor_parse(v, &at, id, sizeof id, e) != 0)
            return HERR_INVALID;
        f->cursor = v;
    } else if (strcmp(k, "format") == 0) {
        if (strcmp(v, "json") && strcmp(v, "csv"))
            return bad(e, k, "not json or csv");
        out->csv = strcmp(v, "csv") == 0;
    }
    return 0;
}

int
api_params_list(const struct api_param *params, size_t n,
                const char *const *allowed, struct api_list *out,
                struct herr *e)
{
    memset(out, 0, sizeof *out);
    if (n > API_PARAMS_MAX)
        return herr_set(e, HERR_INVALID, "", "more than %d parameters",
                        API_PARAMS_MAX);
    for (size_t i = 0; i < n; i++) {
        const char *k = params[i].key ? params[i].key : "";
        const char *v = params[i].value;
        /* the field named in an error: the key itself, made safe */
        char field[HERR_FIELD_MAX];
        size_t kl = strlen(k), o = 0;
        for (size_t c = 0; c < kl && o + 5 < sizeof field; c++) {
            unsigned char ch = (unsigned char)k[c];
            if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
                field[o++] = (char)ch;
            else
                o += (size_t)snprintf(field + o, sizeof field - o, "\\x%02x",
                                      ch);
        }
        field[o] = '\0';
        if (!listed(all_keys, k) || (allowed && !listed(allowed, k)))
            return bad(e, field, "not a parameter of this request");
        for (size_t j = 0; j < i; j++)
            if (params[j].key && strcmp(params[j].key, k) == 0)
                return bad(e, field, "given twice");
        if (v == NULL || *v == '\0')
            return bad(e, field, "needs a value");
        if (strlen(v) > API_PARAM_MAX)
            return herr_set(e, HERR_INVALID, field, "longer than %d bytes",
                            API_PARAM_MAX);
        if (utf8_check((const unsigned char *)v, strlen(v)) != strlen(v))
            return bad(e, field, "not valid UTF-8");
        int rc = set_value(out, k, v, e);
        if (rc)
            return rc;
    }
    if (out->f.since && out->f.until && out->f.until < out->f.since)
        return bad(e, "until", "before since");
    return 0;
}
