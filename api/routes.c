#include "routes.h"
#include "console.h"
#include "jfast.h"
#include "job.h"
#include "token.h"
#include "util.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_TYPE "application/json"

/* (jfast_dumpb: json_dumps' bytes, a third of the CPU of a page of
 * records sooner). A value it cannot write (nested deeper than any
 * parser of ours makes), or none (o NULL: an answer written elsewhere
 * that failed), is a 500 saying so, not an abort. */
static void
answer_json(struct api_resp *rs, int status, json_t *o)
{
    rs->status = status;
    rs->content_type = JSON_TYPE;
    buf_reset(&rs->body);
    int rc = o ? jfast_dumpb(o, &rs->body) : -1;
    json_decref(o);
    if (rc == 0 && buf_puts(&rs->body, "\n") == 0)
        return;
    rs->status = 500;
    buf_reset(&rs->body);
    buf_puts(&rs->body, "{\"error\":\"the answer could not be written as "
                        "JSON\"}\n");
}

static void answer_error(struct api_resp *rs, int status, const char *field,
                         const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
answer_error(struct api_resp *rs, int status, const char *field,
             const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* a message may quote input: keep it valid UTF-8 for JSON */
    size_t ok = utf8_check((const unsigned char *)msg, strlen(msg));
    msg[ok] = '\0';
    json_t *o = json_object();
    json_object_set_new(o, "error", json_string(msg));
    if (field)
        json_object_set_new(o, "field", json_string(field));
    answer_json(rs, status, o);
}

static void
answer_herr(struct api_resp *rs, int rc, const struct herr *e)
{
    switch (rc) {
    case HERR_INVALID:
    case HERR_TOOBIG:
        answer_error(rs, 400, e->field, "%s", e->msg);
        break;
    case HERR_NOTFOUND:
        answer_error(rs, 404, NULL, "no such message");
        break;
    case HERR_PERM:
        answer_error(rs, 409, e->field[0] ? e->field : NULL, "%s", e->msg);
        break;
    default:
        /* Redis or the store: the client may try again */
        answer_error(rs, 503, NULL, "%s unavailable: %s",
                     rc == HERR_REDIS ? "redis" : "the message center", e->msg);
        break;
    }
}

/* ---- records as the API shows them ---- */

/* A page of records ({"messages": [...], "next_cursor"}), or with `one`
 * a record alone, written straight into the answer (mc_record_write):
 * list rows without their bodies, an account's inbox without its bcc
 * (the recipients' list too). */
static void
answer_records(struct api_resp *rs, struct mc_record *const *v, size_t n,
               const char *next, int one, int inbox)
{
    unsigned flags =
        (one ? 0 : MC_JSON_NO_BODIES) | (inbox ? MC_JSON_NO_BCC : 0);
    rs->status = 200;
    rs->content_type = JSON_TYPE;
    buf_reset(&rs->body);
    int rc = one ? 0 : buf_puts(&rs->body, "{\"messages\":[");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (i)
            rc = buf_append(&rs->body, ",", 1);
        if (rc == 0)
            rc = mc_record_write(&rs->body, v[i], flags);
    }
    if (rc == 0 && !one) {
        rc = buf_puts(&rs->body, "],\"next_cursor\":");
        if (rc == 0)
            rc = next ? jfast_dump_string(&rs->body, next, strlen(next))
                      : buf_puts(&rs->body, "null");
        if (rc == 0)
            rc = buf_puts(&rs->body, "}");
    }
    if (rc == 0 && buf_puts(&rs->body, "\n") == 0)
        return;
    answer_json(rs, 500, NULL);
}

/* ---- authentication ---- */

static int
authenticate(struct herald *h, const struct api_req *rq, struct token_rec *t,
             struct api_resp *rs)
{
    const char *a = rq->authorization;
    if (a == NULL || strncasecmp(a, "Bearer ", 7) != 0) {
        answer_error(rs, 401, NULL,
                     "an Authorization: Bearer token is required");
        return -1;
    }
    struct herr e = {{0}, {0}};
    int rc = herald_token_check(h, a + 7, t, &e);
    if (rc == HERR_NOTFOUND) {
        answer_error(rs, 401, NULL, "unknown or revoked token");
        return -1;
    }
    if (rc) {
        answer_herr(rs, rc, &e);
        return -1;
    }
    return 0;
}

/* ---- routes ---- */

static void
list(struct herald *h, const struct api_req *rq, const struct token_rec *t,
     const char *org, const char *account, struct api_resp *rs)
{
    static const char *const inbox_keys[] = {"cursor", "limit", "format", NULL};
    struct api_list l;
    struct herr e = {{0}, {0}};
    if (api_params_list(rq->params, rq->nparams, account ? inbox_keys : NULL,
                        &l, &e) != 0) {
        answer_error(rs, 400, e.field, "%s", e.msg);
        return;
    }
    if (account) {
        l.f.org = org;
        l.f.account = account;
    }
    /* the token's organisations: a filter outside them finds nothing */
    if (t->norgs || t->role == TOKEN_APP) {
        l.f.scope = (const char *const *)t->orgs;
        l.f.nscope = t->norgs;
    }
    struct mc_record **v = NULL;
    size_t n = 0;
    char *next = NULL;
    l.f.no_bodies = 1; /* list rows and CSV carry no text or html */
    int rc = herald_mc_list(h, &l.f, &v, &n, &next, &e);
    if (rc) {
        answer_herr(rs, rc, &e);
        return;
    }
    if (l.csv) {
        rs->status = 200;
        rs->content_type = "text/csv; charset=utf-8";
        buf_reset(&rs->body);
        mc_csv_header(&rs->body);
        for (size_t i = 0; i < n; i++)
            mc_csv_row(&rs->body, v[i]);
    } else {
        answer_records(rs, v, n, next, 0, account != NULL);
    }
    free(next);
    mc_records_free(v, n);
}

/* The record of `id` if the token may read it: else 404 answered. */
static struct mc_record *
readable(struct herald *h, const char *id, const struct token_rec *t,
         struct api_resp *rs)
{
    struct mc_record *r = NULL;
    struct herr e = {{0}, {0}};
    int rc = herald_mc_get(h, id, &r, &e);
    if (rc) {
        answer_herr(rs, rc, &e);
        return NULL;
    }
    if (!token_may_read(t, r->org)) {
        mc_record_free(r);
        answer_error(rs, 404, NULL, "no such message"); /* as unknown */
        return NULL;
    }
    return r;
}

static void
resend(struct herald *h, const struct api_req *rq, const char *id,
       const struct token_rec *t, struct api_resp *rs)
{
    struct mc_record *r = readable(h, id, t, rs);
    if (r == NULL)
        return;
    mc_record_free(r);
    if (!t->resend) {
        answer_error(rs, 403, NULL, "this token may not resend");
        return;
    }
    const char *to[JOB_TO_MAX];
    size_t nto = 0;
    json_t *o = NULL;
    if (rq->bodylen > 0) {
        json_error_t je;
        o = json_loadb(rq->body, rq->bodylen, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(o)) {
            json_decref(o);
            answer_error(rs, 400, "", "the body is not a JSON object");
            return;
        }
        const char *k;
        json_t *v;
        json_object_foreach(o, k, v)
        {
            if (strcmp(k, "to") != 0) {
                answer_error(rs, 400, "", "unknown member '%.64s'", k);
                json_decref(o);
                return;
            }
        }
        json_t *a = json_object_get(o, "to");
        if (a && (!json_is_array(a) || json_array_size(a) == 0 ||
                  json_array_size(a) > JOB_TO_MAX)) {
            answer_error(rs, 400, "to", "an array of 1 to %d addresses",
                         JOB_TO_MAX);
            json_decref(o);
            return;
        }
        size_t i;
        json_array_foreach(a, i, v)
        {
            const char *s = json_string_value(v);
            if (s == NULL || !job_valid_email(s)) {
                char field[32];
                snprintf(field, sizeof field, "to[%zu]", i);
                answer_error(rs, 400, field, "not an address");
                json_decref(o);
                return;
            }
            to[nto++] = s;
        }
    }
    char new_id[JOB_ID_MAX + 1];
    struct herr e = {{0}, {0}};
    int rc = herald_mc_resend(h, id, to, nto, new_id, &e);
    json_decref(o); /* the addresses were borrowed from it */
    if (rc) {
        answer_herr(rs, rc, &e);
        return;
    }
    json_t *out = json_object();
    json_object_set_new(out, "id", json_string(new_id));
    answer_json(rs, 202, out);
}

/* ---- the console ---- */

/* clang-format off */
static const char *const api_console_headers[] = {
    "Content-Security-Policy", API_CONSOLE_CSP,
    "Referrer-Policy", "no-referrer",
    "Cache-Control", "no-cache", /* revalidated: a new build shows at once */
    NULL};
/* clang-format on */

/* Answers a console asset's path (no token: the page asks for one). */
static int
api_console_answer(const struct api_req *rq, struct api_resp *rs)
{
    const char *body, *type;
    size_t len;
    if (api_console_asset(rq->path, &body, &len, &type) != 0)
        return -1;
    rs->headers = api_console_headers;
    if (strcmp(rq->method, "GET") != 0) {
        rs->allow = "GET";
        answer_error(rs, 405, NULL, "method not allowed (GET)");
        return 0;
    }
    rs->status = 200;
    rs->content_type = type;
    buf_reset(&rs->body);
    if (buf_append(&rs->body, body, len) != 0)
        abort(); /* the body has no cap */
    return 0;
}

/* Splits path "/a/b/c" into at most 8 parts (borrowed, in buf). */
static size_t
split(const char *path, char *buf, size_t bufsize, char **parts)
{
    snprintf(buf, bufsize, "%s", path);
    size_t n = 0;
    char *save = NULL;
    for (char *p = strtok_r(buf, "/", &save); p && n < 8;
         p = strtok_r(NULL, "/", &save))
        parts[n++] = p;
    return n;
}

void
api_handle(struct herald *h, const struct api_req *rq, struct api_resp *rs,
           enum api_route *route)
{
    char buf[1024];
    char *p[8];
    *route = API_R_OTHER;
    if (strlen(rq->path) >= sizeof buf) {
        answer_error(rs, 414, NULL, "the path is too long");
        return;
    }
    if (api_console_answer(rq, rs) == 0)
        return;
    size_t n = split(rq->path, buf, sizeof buf, p);
    int get = strcmp(rq->method, "GET") == 0;
    if (n == 1 && strcmp(p[0], "healthz") == 0) {
        *route = API_R_HEALTHZ;
        if (!get) {
            rs->allow = "GET";
            answer_error(rs, 405, NULL, "method not allowed");
            return;
        }
        struct mc_record *r = NULL;
        struct herr e = {{0}, {0}};
        int rc = herald_mc_get(h, "herald-healthz-probe", &r, &e);
        mc_record_free(r);
        if (rc == 0 || rc == HERR_NOTFOUND) {
            json_t *o = json_object();
            json_object_set_new(o, "status", json_string("ok"));
            answer_json(rs, 200, o);
        } else {
            answer_error(rs, 503, NULL,
                         "the message center does not "
                         "answer: %s",
                         e.msg);
        }
        return;
    }
    if (n == 1 && strcmp(p[0], "metrics") == 0) {
        *route = API_R_METRICS;
        if (!get) {
            rs->allow = "GET";
            answer_error(rs, 405, NULL, "method not allowed");
            return;
        }
        rs->status = 200;
        rs->content_type = "text/plain; version=0.0.4; charset=utf-8";
        buf_reset(&rs->body);
        api_metrics_text(&rs->body);
        return;
    }
    if (n < 2 || strcmp(p[0], "v1") != 0) {
        answer_error(rs, 404, NULL, "no such route");
        return;
    }
    /* the /v1 routes: match first (405 and 404 need no token) */
    const char *allow = NULL, *id = NULL, *org = NULL, *account = NULL;
    if (n == 2 && strcmp(p[1], "messages") == 0) {
        *route = API_R_MESSAGES;
        allow = "GET";
    } else if (n == 3 && strcmp(p[1], "messages") == 0) {
        *route = API_R_MESSAGE;
        allow = "GET";
        id = p[2];
    } else if (n == 4 && strcmp(p[1], "messages") == 0 &&
               strcmp(p[3], "resend") == 0) {
        *route = API_R_RESEND;
        allow = "POST";
        id = p[2];
    } else if (n == 6 && strcmp(p[1], "orgs") == 0 &&
               strcmp(p[3], "accounts") == 0 && strcmp(p[5], "messages") == 0) {
        *route = API_R_INBOX;
        allow = "GET";
        org = p[2];
        account = p[4];
    } else if ((n == 4 || n == 5) && strcmp(p[1], "orgs") == 0 &&
               strcmp(p[3], "suppressions") == 0) {
        *route = API_R_SUPPRESSIONS;
        allow = n == 4 ? "GET" : "DELETE";
    } else {
        answer_error(rs, 404, NULL, "no such route");
        return;
    }
    if (strcmp(rq->method, allow) != 0) {
        rs->allow = allow;
        answer_error(rs, 405, NULL, "method not allowed (%s)", allow);
        return;
    }
    struct token_rec t;
    if (authenticate(h, rq, &t, rs) != 0)
        return;
    switch (*route) {
    case API_R_MESSAGES:
        list(h, rq, &t, NULL, NULL, rs);
        break;
    case API_R_MESSAGE:
    case API_R_RESEND:
        if (!job_valid_id(id)) {
            answer_error(rs, 404, NULL, "no such message");
            break;
        }
        if (*route == API_R_RESEND) {
            resend(h, rq, id, &t, rs);
        } else {
            struct mc_record *r = readable(h, id, &t, rs);
            if (r) {
                answer_records(rs, &r, 1, NULL, 1, 0);
                mc_record_free(r);
            }
        }
        break;
    case API_R_INBOX:
        if (!job_valid_org(org) || !job_valid_org(account) ||
            !token_may_read(&t, org))
            answer_error(rs, 404, NULL, "no such organisation or account");
        else
            list(h, rq, &t, org, account, rs);
        break;
    case API_R_SUPPRESSIONS:
        answer_error(rs, 501, NULL,
                     "suppression lists are not kept by this version");
        break;
    default:
        answer_error(rs, 404, NULL, "no such route");
        break;
    }
    token_rec_clear(&t);
}
