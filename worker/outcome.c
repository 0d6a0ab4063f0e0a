/*
 * outcome — one SMTP transaction and what its reply means (task.h):
 * accepted (ledger "sent" first), accepted by some recipients (the others
 * retried alone), a provider's throttle (pause the sender), transient
 * (backoff with full jitter, then "expired"), permanent ("rejected"); and
 * the waits that are not failures: a quota window, a pause, a held scheme.
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

static char *
rcpt_json(const struct task *t, const struct mail_result *r)
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

static int64_t
backoff_ms(const struct settings *s, int attempt)
{
    return outcome_backoff_ms(s->retry_base_s, s->retry_cap_s, attempt,
                              outcome_rand32());
}

void
outcome_to_dead(struct task *t)
{
    char *entry = dead_entry_new(t->raw, t->rawlen, t->dead_reason,
                                 t->dead_field ? t->dead_field : "", t->error,
                                 t->job ? t->job->id : NULL, clock_now_ms());
    queue_finish_dead(t->w->q, t->raw, t->rawlen, entry, worker_ledger_id(t),
                      worker_on_final_reply, t);
    free(entry);
}

/*
 * The job failed for good: every recipient that has not accepted it (nor
 * been refused, which is final already) failed too, with the reply that
 * ended it — its own failure reply when it had one, else the job's last
 * server reply, else the error. Nothing stays "pending" or "deferred",
 * and no RCPT "250" is left standing beside a failure.
 */
static void
rcpt_final(struct task *t, const char *error)
{
    if (t->rcpt_json == NULL)
        t->rcpt_json = rcpt_json(t, NULL);
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

void
outcome_fail_task(struct task *t, const char *reason, const char *error)
{
    t->dead_reason = reason;
    free(t->error);
    t->error = xstrdup(error);
    rcpt_final(t, error);
    log_job(LOG_WARN, worker_tid(t), worker_torg(t), t->attempt, "job failed",
            "reason", reason, "error", error, NULL);
    worker_release_slot(t);
    record_queue(t, MCW_FAILED);
}

/* Transient failure: retry later (not before not_before_ms, when the
 * server named a time), or fail with `reason` ("expired", "auth") when
 * out of attempts or age. */
static void
defer_or_expire_at(struct task *t, const char *error, int64_t not_before_ms,
                   const char *reason)
{
    const struct settings *s = t->w->s;
    int64_t now = clock_now_ms();
    free(t->error);
    t->error = xstrdup(error);
    int64_t delay = backoff_ms(s, t->attempt);
    if (now + delay < not_before_ms)
        delay = not_before_ms - now;
    int64_t age = now - t->first_at;
    if (t->attempt >= s->retry_max_attempts ||
        age + delay > s->retry_max_age_s * 1000) {
        char *why = xasprintf("gave up after %d attempts over %llds: %s",
                              t->attempt, (long long)(age / 1000), error);
        outcome_fail_task(t, reason, why);
        free(why);
        return;
    }
    t->next_at = now + delay;
    char when[CLOCK_RFC3339_LEN];
    clock_rfc3339(t->next_at, when);
    log_job(LOG_WARN, worker_tid(t), worker_torg(t), t->attempt,
            "delivery deferred", "error", error, "next_attempt_at", when, NULL);
    worker_release_slot(t);
    record_queue(t, MCW_DEFERRED);
}

void
outcome_defer_or_expire(struct task *t, const char *error)
{
    defer_or_expire_at(t, error, 0, "expired");
}

/* The job waits for its sender (a quota window, a pause, a held scheme)
 * until due_ms: deferred, never failed for it. `attempted`: a delivery
 * attempt was made (the sender's throttle reply); otherwise the claim's
 * attempt is taken back. */
void
outcome_wait_for_sender(struct task *t, int64_t due_ms, const char *error,
                        const char *sender, int attempted)
{
    struct worker *w = t->w;
    int64_t now = clock_now_ms();
    free(t->error);
    t->error = xstrdup(error);
    t->next_at = due_ms;
    t->uncount = !attempted;
    char when[CLOCK_RFC3339_LEN];
    clock_rfc3339(due_ms, when);
    log_job(LOG_WARN, worker_tid(t), worker_torg(t), t->attempt,
            "waiting for its sender", "sender", sender, "error", error,
            "next_attempt_at", when, NULL);
    worker_quota_drop(t);
    worker_release_slot(t);
    if (sender && *sender)
        senders_wait(w->senders, sender, t->job->id, due_ms, now);
    record_queue(t, MCW_DEFERRED);
}

uint32_t
outcome_rand32(void)
{
    uint32_t r;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        r = (uint32_t)rand();
    return r;
}

/* Accepted for some recipients, refused for a while by others (4xx at
 * RCPT): the ledger remembers who has it — at once, like "sent" — and
 * the job is retried for the others only. */
static void
partial(struct task *t, const struct mail_result *r, size_t refused)
{
    struct buf acc;
    buf_init(&acc, 0);
    for (size_t i = 0; i < r->nrcpt; i++) {
        if (r->rcpt[i].code >= 400)
            continue;
        if (acc.len)
            buf_append(&acc, "\n", 1);
        buf_append(&acc, t->rcpt[i], strlen(t->rcpt[i]));
    }
    buf_append(&acc, "", 1);
    queue_mark_partial(t->w->q, t->job->id, acc.p, NULL, NULL);
    t->t250 = 0;
    t->quota_keep = (int)(r->nrcpt - refused); /* the accepted ones */
    worker_quota_drop(t);
    const char *worst = "";
    for (size_t i = 0; i < r->nrcpt; i++)
        if (r->rcpt[i].code >= 400 && r->rcpt[i].code < 500)
            worst = r->rcpt[i].reply;
    char *e = xasprintf("accepted for %zu of %zu recipients; the others are "
                        "retried: %s",
                        r->nrcpt - refused, r->nrcpt, worst);
    log_job(LOG_WARN, worker_tid(t), worker_torg(t), t->attempt,
            "delivered to some recipients; retrying the others", "accepted",
            acc.p, "smtp_reply", worst, NULL);
    buf_free(&acc);
    outcome_defer_or_expire(t, e);
    free(e);
}

/* The sender is paused until `until` for `reason` (a throttle reply):
 * this job waits for it, with the attempt it made counted. */
static void
pause_wait(struct task *t, const char *sender, const char *reason,
           int64_t until)
{
    char u[CLOCK_RFC3339_LEN];
    clock_rfc3339(until, u);
    log_job(LOG_WARN, worker_tid(t), worker_torg(t), t->attempt,
            "the provider throttles this sender; pausing it", "sender", sender,
            "until", u, "smtp_reply", t->reply, NULL);
    char *e = xasprintf("%s; sender %s paused until %s", reason, sender, u);
    outcome_wait_for_sender(
        t, until + quota_jitter_ms(QUOTA_MINUTE, outcome_rand32()), e, sender,
        1);
    free(e);
}

struct probe_wait {
    struct task *t;
    char sender[SENDER_MAX];
    char reason[sizeof((struct smtp_class *)0)->reason];
};

static void
on_probe(void *ud, int64_t until)
{
    struct probe_wait *pw = ud;
    struct task *t = pw->t;
    pause_wait(t, pw->sender, pw->reason, until);
    free(pw);
}

static void
on_mail_done(struct mail_req *req, const struct mail_result *r)
{
    struct task *t = req->ud;
    struct worker *w = t->w;
    if (r->withdrawn) {
        /* task_may_start said no: nothing was sent, the record still
         * says "queued". Its claim is checked before it goes again. */
        if (w->stopping) {
            /* not started: it stays in the processing list and is
             * handed back, like the ready tasks at worker_stop */
            worker_task_free(t);
            return;
        }
        worker_check_claim(t);
        return;
    }
    if (t->route.path == ROUTE_SCHEME) {
        /* A refused login marks the scheme first, then the gate wakes
         * the jobs that waited on these credentials: they route again
         * and see it. */
        if (r->auth_failed)
            schemes_mark_failed(w->schemes, t->route.scheme_field, r->reply);
        logingate_result(w->gate, t->route.scheme_field, t->route.scheme_fp, t,
                         r->auth_ok, r->auth_failed);
    }
    if (r->cls == MAIL_OK && t->route.imap_url)
        imapcopy_append(t->w->imap, worker_tid(t), worker_torg(t),
                        t->route.imap_url, t->route.user, t->route.password,
                        t->route.sent_folder, t->msg, t->msglen);
    free(t->msg); /* a retry builds it again */
    t->msg = NULL;
    free(t->reply);
    t->reply = xstrdup(r->reply);
    free(t->rcpt_json);
    t->rcpt_json = rcpt_json(t, r);
    if (r->cls == MAIL_OK) {
        /* First, before anything else: the ledger says "sent", so no
         * copy of this job is ever sent again. */
        t->t250 = uv_hrtime();
        size_t refused = 0, later = 0;
        for (size_t i = 0; i < r->nrcpt; i++) {
            if (r->rcpt[i].code >= 400)
                refused++;
            if (r->rcpt[i].code >= 400 && r->rcpt[i].code < 500)
                later++;
        }
        if (later) {
            partial(t, r, refused);
            worker_pump(t->w);
            return;
        }
        record_mark_sent_later(t);
        /* the counters keep what was accepted */
        t->quota_keep = (int)(r->nrcpt - refused); /* the accepted ones */
        worker_quota_drop(t);
        free(t->error);
        t->error = NULL;
        if (refused) {
            t->error =
                xasprintf("%zu of %zu recipients refused", refused, r->nrcpt);
            log_job(LOG_WARN, worker_tid(t), worker_torg(t), t->attempt,
                    "delivered; some recipients refused", "smtp_reply",
                    r->reply, "refused", t->error, NULL);
        } else if (log_enabled(LOG_INFO) && r->transactions > 1) {
            char n[16];
            snprintf(n, sizeof n, "%d", r->transactions);
            log_job(LOG_INFO, worker_tid(t), worker_torg(t), t->attempt,
                    "delivered (the server takes fewer recipients per "
                    "message: sent as several, one attempt)",
                    "path", t->route.path_name, "transactions", n, "smtp_reply",
                    r->reply, NULL);
        } else if (log_enabled(LOG_INFO)) {
            log_job(LOG_INFO, worker_tid(t), worker_torg(t), t->attempt,
                    "delivered", "path", t->route.path_name, "smtp_reply",
                    r->reply, NULL);
        }
        worker_release_slot(t);
        record_queue(t, MCW_SENT);
        worker_pump(t->w);
        return;
    }
    worker_quota_drop(t); /* nothing was accepted */
    if (r->auth_failed && t->route.path == ROUTE_SCHEME) {
        /* The organisation's server refused the scheme's credentials
         * (marked above): route this job again: fallback to the relay,
         * or hold, as the scheme says. */
        log_job(LOG_WARN, worker_tid(t), worker_torg(t), t->attempt,
                "the sending scheme's login was refused; routing again",
                "smtp_reply", r->reply, NULL);
        worker_release_slot(t);
        resolver_route_clear(&t->route);
        t->routed = 0;
        worker_prepare(t);
        worker_pump(t->w);
        return;
    }
    if (r->auth_failed) {
        /* the relay refused the platform's own credentials */
        char *e = xasprintf("the relay refused HERALD_RELAY_USER's "
                            "credentials: %s",
                            r->reply);
        defer_or_expire_at(t, e, 0, "auth");
        free(e);
        worker_pump(t->w);
        return;
    }
    int64_t now = clock_now_ms();
    struct smtp_class c;
    smtp_classify(r->stage, r->code, r->reply, now, &c);
    switch (c.v) {
    case SMTPV_PAUSE_SENDER: {
        const char *sender =
            t->plan.pause_sender[0] ? t->plan.pause_sender : QUOTA_SENDER_RELAY;
        int64_t until = c.pause_until_ms;
        if (until <= now && !c.window) {
            /* no end named, no quota window: try again soon, and later
             * each time the probe still fails */
            worker_release_slot(t);
            struct probe_wait *pw = xmalloc(sizeof *pw);
            pw->t = t;
            snprintf(pw->sender, sizeof pw->sender, "%s", sender);
            snprintf(pw->reason, sizeof pw->reason, "%s", c.reason);
            senders_probe(w->senders, sender, c.reason, now, on_probe, pw);
            break;
        }
        if (until <= now)
            until = senders_next_day(w->senders, &t->route, now);
        senders_pause(w->senders, sender, until, c.reason);
        pause_wait(t, sender, c.reason, until);
        break;
    }
    case SMTPV_PERM_MESSAGE:
    case SMTPV_PERM_RCPT:
        outcome_fail_task(t, "rejected", r->reply);
        break;
    case SMTPV_OK: /* a 2xx that is not an acceptance: a broken server */
    case SMTPV_RETRY:
        defer_or_expire_at(t, r->reply, c.pause_until_ms, "expired");
        break;
    }
    worker_pump(t->w);
}

/* Just before the transaction gets its connection (it may have waited
 * for one while this worker's heartbeat lapsed and another worker
 * re-took the job, or while the worker began to stop: then it is handed
 * back): it goes when the heartbeat is fresh or the claim was
 * just checked (on_fence); otherwise it comes back withdrawn and its
 * claim is checked. Going, the record says "sending" (its write waits
 * MC_SENDING_MS for the outcome to replace it): a job waiting for a
 * connection to its server stays "queued". */
static int
task_may_start(struct mail_req *req)
{
    struct task *t = req->ud;
    if (t->w->stopping)
        return 1; /* handed back, not started (on_mail_done) */
    int go = t->fence_checked || !t->fence || queue_lease_fresh(t->w->q);
    t->fence_checked = 0;
    if (go)
        record_queue(t, MCW_SENDING);
    return go ? 0 : 1;
}

void
outcome_start_send(struct task *t)
{
    struct worker *w = t->w;
    t->req.url = t->route.url;
    t->req.tls = t->route.tls;
    t->req.max_conns = t->route.max_conns;
    t->req.tag = t->route.scheme_fp;
    t->req.flow = t->job->org;
    t->req.user = t->route.user;
    t->req.password = t->route.password;
    t->req.mail_from = t->route.envelope_from;
    t->req.rcpt = t->rcpt;
    t->req.nrcpt = t->nrcpt;
    t->req.data = t->msg;
    t->req.len = t->msglen;
    t->req.done = on_mail_done;
    t->req.ud = t;
    t->req.may_start = task_may_start;
    if (mailer_send(w->mailer, &t->req) != 0)
        outcome_defer_or_expire(t, "could not start an SMTP transaction");
}

/* A held scheme (its login refused, "hold"; or its password cannot be
 * opened here): the job waits on its own clock, without spending
 * attempts, and fails ("auth") only when older than
 * HERALD_RETRY_MAX_AGE_S. */
void
outcome_hold(struct task *t)
{
    const struct settings *s = t->w->s;
    int64_t now = clock_now_ms();
    const char *reason = t->route.hold_auth ? "auth" : "expired";
    if (now - t->first_at > s->retry_max_age_s * 1000) {
        char *why = xasprintf("held for longer than HERALD_RETRY_MAX_AGE_S "
                              "(%llds): %s",
                              (long long)s->retry_max_age_s, t->route.reason);
        outcome_fail_task(t, reason, why);
        free(why);
        return;
    }
    char sender[SENDER_MAX] = "";
    if (t->route.scheme_field)
        quota_sender_scheme(sender, sizeof sender, t->route.scheme_field);
    int64_t step = (int64_t)s->retry_base_s * 1000;
    outcome_wait_for_sender(
        t, now + step + (int64_t)(outcome_rand32() % (uint32_t)(step + 1)),
        t->route.reason, sender, 0);
}

static void
on_quota(void *ud, int verdict, int64_t until_ms)
{
    struct task *t = ud;
    if (t->abandoned) {
        worker_task_free(t);
        return;
    }
    struct worker *w = t->w;
    const struct sender_plan *p = &t->plan;
    if (verdict == 0) {
        t->quota_n = (int)t->nrcpt;
        worker_prepare(t);
        return;
    }
    t->quota_asked = 0;
    if (verdict == -2) {
        outcome_defer_or_expire(t, "the quota could not be checked in Redis");
        return;
    }
    if (verdict == -1) {
        senders_pause(w->senders, p->pause_sender, until_ms, "paused");
        char *e = xasprintf("sender %s is paused", p->pause_sender);
        outcome_wait_for_sender(
            t, until_ms + quota_jitter_ms(QUOTA_MINUTE, outcome_rand32()), e,
            p->count_sender, 0);
        free(e);
        return;
    }
    int i = verdict - 1;
    if (i >= p->n)
        i = p->n - 1;
    char resets[CLOCK_RFC3339_LEN];
    clock_rfc3339(p->win[i].end_ms, resets);
    char *e = xasprintf("over quota: the %s limit of %lld recipients for %s "
                        "is reached; the window resets at %s",
                        quota_kind_name(p->kind[i]), p->limit[i],
                        p->count_sender, resets);
    outcome_wait_for_sender(
        t, p->win[i].end_ms + quota_jitter_ms(p->kind[i], outcome_rand32()), e,
        p->count_sender, 0);
    free(e);
}

/* Takes this job's recipients from its sender's counters. */
void
outcome_take_quota(struct task *t)
{
    const struct sender_plan *p = &t->plan;
    for (int i = 0; i < p->n; i++) {
        if ((long long)t->nrcpt > p->limit[i]) {
            char *e = xasprintf("the job has %zu recipients; %s allows at "
                                "most %lld per %s, so it can never be sent "
                                "within its quota",
                                t->nrcpt, p->count_sender, p->limit[i],
                                quota_kind_name(p->kind[i]));
            outcome_fail_task(t, "quota", e);
            free(e);
            return;
        }
    }
    t->quota_asked = 1;
    senders_take(t->w->senders, p, t->job->id, t->fence, (int)t->nrcpt,
                 clock_now_ms(), on_quota, t);
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
