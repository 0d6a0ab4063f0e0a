/*
 * outcome — what a task's outcome says, computed from the task alone
 * (task.h): each recipient's status and reply for the record, the job's
 * final recipients' statuses when it fails, the envelope without the
 * recipients an earlier attempt delivered to, and the retry backoff. No
 * I/O and no calls back into the task's machine (task.c).
 */
#include "task.h"
#include "clock.h"
#include "dead.h"
#include "job.h"
#include "keys.h"
#include "log.h"
#include "smtpclass.h"
#include "util.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

static int
was_accepted(const struct task *t, const char *email)
{
    for (size_t i = 0; i < t->nprev_acc; i++)
        if (strcasecmp(t->prev_acc[i], email) == 0)
            return 1;
    return 0;
}

char *
outcome_rcpt_json(const struct task *t, const struct mail_result *r)
{
    const struct job *j = t->job;
    json_t *a = json_array();
    const struct {
        const struct job_addr *v;
        size_t n;
        const char *kind;
    } lists[3] = {
        {j->to, j->nto, "to"}, {j->cc, j->ncc, "cc"}, {j->bcc, j->nbcc, "bcc"}};
    for (int l = 0; l < 3; l++) {
        for (size_t i = 0; i < lists[l].n; i++) {
            const char *email = lists[l].v[i].email;
            json_t *o = json_object();
            json_object_set_new(o, "email", json_string(email));
            json_object_set_new(o, "kind", json_string(lists[l].kind));
            const char *status = "pending";
            const char *reply = NULL;
            if (was_accepted(t, email)) {
                status = "accepted";
                reply = "accepted in an earlier attempt";
            } else if (r) {
                /* the envelope holds each address once */
                for (size_t k = 0; k < t->nrcpt; k++) {
                    if (strcasecmp(t->rcpt[k], email) != 0)
                        continue;
                    const struct mail_rcpt_result *rr = &r->rcpt[k];
                    if (rr->code >= 500)
                        status = "refused";
                    else if (rr->code >= 400)
                        status = "deferred"; /* retried, alone if need be */
                    else if (r->cls == MAIL_OK)
                        status = "accepted";
                    else if (r->cls == MAIL_PERM)
                        status = "failed";
                    else
                        status = "deferred";
                    if (rr->code)
                        reply = rr->reply;
                    break;
                }
            }
            json_object_set_new(o, "status", json_string(status));
            if (reply)
                json_object_set_new(o, "reply", json_string(reply));
            json_array_append_new(a, o);
        }
    }
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    char *out = xstrdup(s ? s : "[]");
    free(s);
    return out;
}

int64_t
outcome_backoff_ms(long base_s, long cap_s, int attempt, uint32_t r)
{
    double cap = (double)cap_s * 1000.0;
    double d = (double)base_s * 1000.0;
    for (int i = 1; i < attempt && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    int64_t ms = (int64_t)(d * ((double)r / 4294967296.0)); /* full jitter */
    return ms < 1000 ? 1000 : ms;
}

/*
 * The job failed for good: every recipient that has not accepted it (nor
 * been refused, which is final already) failed too, with the reply that
 * ended it — its own failure reply when it had one, else the job's last
 * server reply, else the error. Nothing stays "pending" or "deferred",
 * and no RCPT "250" is left standing beside a failure.
 */
void
outcome_rcpt_final(struct task *t, const char *error)
{
    if (t->rcpt_json == NULL)
        t->rcpt_json = outcome_rcpt_json(t, NULL);
    json_t *a = json_loads(t->rcpt_json, 0, NULL);
    if (!json_is_array(a)) {
        json_decref(a);
        return;
    }
    const char *ending = t->reply && *t->reply ? t->reply : error;
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o)
    {
        const char *st = json_string_value(json_object_get(o, "status"));
        if (st && (strcmp(st, "accepted") == 0 || strcmp(st, "refused") == 0))
            continue;
        const char *own = json_string_value(json_object_get(o, "reply"));
        int own_failed = own && own[0] >= '4' && own[0] <= '5';
        json_object_set_new(o, "status", json_string("failed"));
        if (!own_failed)
            json_object_set_new(o, "reply", json_string(ending ? ending : ""));
    }
    char *js = json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(a);
    if (js) {
        free(t->rcpt_json);
        t->rcpt_json = xstrdup(js);
        free(js);
    }
}

uint32_t
outcome_rand32(void)
{
    uint32_t r;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        r = (uint32_t)rand();
    return r;
}

/* Envelope recipients: to, cc, bcc, each address once. */
void
outcome_build_envelope(struct task *t)
{
    const struct job *j = t->job;
    size_t n = j->nto + j->ncc + j->nbcc;
    t->rcpt = xcalloc(n, sizeof *t->rcpt);
    t->nrcpt = 0;
    const struct job_addr *lists[3] = {j->to, j->cc, j->bcc};
    size_t counts[3] = {j->nto, j->ncc, j->nbcc};
    for (int l = 0; l < 3; l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            const char *a = lists[l][i].email;
            if (was_accepted(t, a))
                continue; /* not again */
            size_t k;
            for (k = 0; k < t->nrcpt; k++)
                if (strcasecmp(t->rcpt[k], a) == 0)
                    break;
            if (k == t->nrcpt)
                t->rcpt[t->nrcpt++] = a;
        }
    }
}
