/*
 * task — one job's life in this worker, as one state machine (task.h):
 * parsed, claimed, rendered, routed, gated, quota taken, recorded, ready,
 * sending, and what the server's reply means; each step waits on one
 * leaf (queue.h for Redis, record.c for the Message Center, the mailer,
 * the resolver's SPF cache, the login gate, the senders' quotas) whose
 * callback brings the task back here. task_enter() is the one place a
 * task changes state.
 */
#include "task.h"
#include "clock.h"
#include "dead.h"
#include "job.h"
#include "keys.h"
#include "log.h"
#include "mime.h"
#include "smtpclass.h"
#include "tmpl.h"
#include "util.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* A copy of a job id another live worker is sending checks again after
 * this long. */
#define BUSY_RECHECK_MS 5000

static void task_prepare(struct task *t);
static void task_pump(struct worker *w);
static void task_check_claim(struct task *t);

/* ---- the states ---- */

static const char *const state_names[TASK_NSTATES] = {
    [TASK_NEW] = "new",
    [TASK_RENAMING] = "renaming",
    [TASK_CLAIMING] = "claiming",
    [TASK_CLAIM_RETRY] = "claim_retry",
    [TASK_READING] = "reading",
    [TASK_RENDERING] = "rendering",
    [TASK_RESOLVING] = "resolving",
    [TASK_GATED] = "gated",
    [TASK_QUOTA] = "quota",
    [TASK_RECORDING] = "recording",
    [TASK_READY] = "ready",
    [TASK_FENCING] = "fencing",
    [TASK_SENDING] = "sending",
    [TASK_PROBING] = "probing",
    [TASK_FINISHING] = "finishing",
    [TASK_DONE] = "done",
};

const char *
task_state_name(enum task_state s)
{
    return (unsigned)s < TASK_NSTATES && state_names[s] ? state_names[s] : "?";
}

#define B(s) (1u << (s))
/* What follows task_prepare, which runs after the claim and after each
 * of its own waits: another of its waits, the record it waits for (the
 * "queued" that gates the transaction, or a deferral or failure), or a
 * final Redis step. */
#define AFTER_PREPARE                                                          \
    (B(TASK_READING) | B(TASK_RENDERING) | B(TASK_RESOLVING) | B(TASK_GATED) | \
     B(TASK_QUOTA) | B(TASK_RECORDING) | B(TASK_FINISHING))
/* What follows a parsed job's routing (route_task, and a claim that the
 * take made already): dropped as a duplicate, rendered and recorded as
 * scheduled, claimed -- and what follows that claim. */
#define AFTER_ROUTE (AFTER_PREPARE | B(TASK_CLAIMING))

/* next[s]: the states a task in s may move to. Every state may end in
 * TASK_DONE (freed: finished, or a shutdown or a close giving it up). */
static const unsigned next_states[TASK_NSTATES] = {
    [TASK_NEW] = B(TASK_RENAMING) | AFTER_ROUTE,
    [TASK_RENAMING] = AFTER_ROUTE,
    [TASK_CLAIMING] = B(TASK_CLAIM_RETRY) | AFTER_PREPARE,
    [TASK_CLAIM_RETRY] = B(TASK_CLAIMING),
    [TASK_READING] = AFTER_PREPARE,
    /* a scheduled job's template is rendered before it is claimed */
    [TASK_RENDERING] = AFTER_ROUTE,
    [TASK_RESOLVING] = AFTER_PREPARE,
    [TASK_GATED] = AFTER_PREPARE,
    [TASK_QUOTA] = AFTER_PREPARE,
    /* "queued" committed: ready; any other record: its final Redis step;
     * a record the Message Center refused waits there for the retry */
    [TASK_RECORDING] = B(TASK_READY) | B(TASK_FINISHING),
    [TASK_READY] = B(TASK_FENCING) | B(TASK_SENDING),
    /* the claim is ours: send; it is not: drop; Redis failed: defer */
    [TASK_FENCING] = B(TASK_SENDING) | B(TASK_RECORDING) | B(TASK_FINISHING),
    /* withdrawn before its connection came (claim checked again); its
     * outcome recorded; its sender probed; its scheme's login refused
     * (routed again: task_prepare) */
    [TASK_SENDING] = B(TASK_FENCING) | B(TASK_PROBING) | AFTER_PREPARE,
    [TASK_PROBING] = B(TASK_RECORDING),
    [TASK_FINISHING] = 0,
    [TASK_DONE] = 0,
};

int
task_transition_ok(enum task_state from, enum task_state to)
{
    if ((unsigned)from >= TASK_NSTATES || (unsigned)to >= TASK_NSTATES)
        return 0;
    if (from == TASK_DONE)
        return 0;
    if (to == TASK_DONE)
        return 1;
    return (next_states[from] & B(to)) != 0;
}

static int
holds_slot(enum task_state s)
{
    return s == TASK_FENCING || s == TASK_SENDING;
}

void
task_enter(struct task *t, enum task_state to)
{
    struct worker *w = t->w;
    enum task_state from = t->state;
    if (from == to)
        return;
    if (!task_transition_ok(from, to)) {
        w->task_illegal++;
        log_job(LOG_ERROR, task_id(t), task_org(t), t->attempt,
                "illegal task transition (a bug in worker/task.c; the job "
                "goes on)",
                "from", task_state_name(from), "to", task_state_name(to), NULL);
    }
    if (holds_slot(from) && !holds_slot(to))
        w->slots--;
    if (!holds_slot(from) && holds_slot(to)) {
        w->slots++;
        t->has_slot_ever = 1;
    }
    if (from == TASK_GATED)
        w->ngated--;
    if (to == TASK_GATED)
        w->ngated++;
    if (w->trace_states) {
        uint64_t now = uv_hrtime();
        if (t->state_since) {
            w->state_ns[from] += now - t->state_since;
            w->state_n[from]++;
        }
        t->state_since = now;
    }
    t->state = to;
}

/* ---- tasks ---- */

static const char *
task_ledger_id(const struct task *t)
{
    return t->claimed && t->job ? t->job->id : NULL;
}

/* Queues the task's record write of `step`; every step but "sending"
 * (written beside the transaction) is one the task waits for. */
static void
task_record(struct task *t, enum mc_step step)
{
    if (step != MCW_SENDING)
        task_enter(t, TASK_RECORDING);
    record_queue(t, step);
}

/* Recipients taken and not accepted (all but quota_keep) go back to the
 * sender's counters. */
static void
task_quota_drop(struct task *t)
{
    if (t->quota_n > 0)
        senders_settle(t->w->senders, &t->plan, t->job->id, t->fence,
                       t->quota_keep);
    t->quota_n = 0;
    t->quota_keep = 0;
    t->quota_asked = 0;
    t->planned = 0;
}

static void id_unlink(struct task *t);

void
task_free(struct task *t)
{
    struct worker *w = t->w;
    task_enter(t, TASK_DONE);
    task_quota_drop(t);
    logingate_forget(w->gate, t);
    if (t->prev)
        t->prev->next = t->next;
    else
        w->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    w->ntasks--;
    w->held_bytes -= t->rawlen;
    id_unlink(t);
    if (t->routed)
        resolver_route_clear(&t->route);
    if (t->job)
        job_free(t->job);
    free(t->raw);
    free(t->msg);
    free(t->rcpt);
    free(t->reply);
    free(t->error);
    free(t->rcpt_json);
    free(t->spf_why);
    for (size_t i = 0; i < t->nprev_acc; i++)
        free(t->prev_acc[i]);
    free(t->prev_acc);
    free(t);
    if (w->stopping)
        w->hooks.idle(w);
    else
        queue_kick(w->q);
}

/* A reply that only ends the task (finish / dead / schedule). */
static void
task_on_final_reply(void *ud, redisReply *r)
{
    struct task *t = ud;
    if (r->type == REDIS_REPLY_ERROR)
        log_job(LOG_ERROR, task_id(t), task_org(t), t->attempt,
                "redis refused to finish the job; it stays in the "
                "processing list",
                "error", r->str, NULL);
    task_free(t);
}

static void
task_finish(struct task *t)
{
    task_enter(t, TASK_FINISHING);
    queue_finish(t->w->q, t->raw, t->rawlen, task_on_final_reply, t);
}

static int64_t
backoff_ms(const struct settings *s, int attempt)
{
    return outcome_backoff_ms(s->retry_base_s, s->retry_cap_s, attempt,
                              outcome_rand32());
}

/* Moves the job to dead with t->dead_reason (after its record says so). */
static void
task_to_dead(struct task *t)
{
    task_enter(t, TASK_FINISHING);
    char *entry = dead_entry_new(t->raw, t->rawlen, t->dead_reason,
                                 t->dead_field ? t->dead_field : "", t->error,
                                 t->job ? t->job->id : NULL, clock_now_ms());
    queue_finish_dead(t->w->q, t->raw, t->rawlen, entry, task_ledger_id(t),
                      task_on_final_reply, t);
    free(entry);
}

/* The job failed for good: recorded "failed", then moved to dead with
 * `reason`. */
static void
task_fail(struct task *t, const char *reason, const char *error)
{
    t->dead_reason = reason;
    free(t->error);
    t->error = xstrdup(error);
    outcome_rcpt_final(t, error);
    log_job(LOG_WARN, task_id(t), task_org(t), t->attempt, "job failed",
            "reason", reason, "error", error, NULL);
    task_record(t, MCW_FAILED);
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
        task_fail(t, reason, why);
        free(why);
        return;
    }
    t->next_at = now + delay;
    char when[CLOCK_RFC3339_LEN];
    clock_rfc3339(t->next_at, when);
    log_job(LOG_WARN, task_id(t), task_org(t), t->attempt, "delivery deferred",
            "error", error, "next_attempt_at", when, NULL);
    task_record(t, MCW_DEFERRED);
}

/* Transient failure: retry later, or fail ("expired") when out of
 * attempts or age. */
static void
task_defer_or_expire(struct task *t, const char *error)
{
    defer_or_expire_at(t, error, 0, "expired");
}

/* The job waits for its sender (a quota window, a pause, a held scheme)
 * until due_ms: deferred, never failed for it. `attempted`: a delivery
 * attempt was made (the sender's throttle reply); otherwise the claim's
 * attempt is taken back. */
static void
task_wait_for_sender(struct task *t, int64_t due_ms, const char *error,
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
    log_job(LOG_WARN, task_id(t), task_org(t), t->attempt,
            "waiting for its sender", "sender", sender, "error", error,
            "next_attempt_at", when, NULL);
    task_quota_drop(t);
    if (sender && *sender)
        senders_wait(w->senders, sender, t->job->id, due_ms, now);
    task_record(t, MCW_DEFERRED);
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
    task_quota_drop(t);
    const char *worst = "";
    for (size_t i = 0; i < r->nrcpt; i++)
        if (r->rcpt[i].code >= 400 && r->rcpt[i].code < 500)
            worst = r->rcpt[i].reply;
    char *e = xasprintf("accepted for %zu of %zu recipients; the others are "
                        "retried: %s",
                        r->nrcpt - refused, r->nrcpt, worst);
    log_job(LOG_WARN, task_id(t), task_org(t), t->attempt,
            "delivered to some recipients; retrying the others", "accepted",
            acc.p, "smtp_reply", worst, NULL);
    buf_free(&acc);
    task_defer_or_expire(t, e);
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
    log_job(LOG_WARN, task_id(t), task_org(t), t->attempt,
            "the provider throttles this sender; pausing it", "sender", sender,
            "until", u, "smtp_reply", t->reply, NULL);
    char *e = xasprintf("%s; sender %s paused until %s", reason, sender, u);
    task_wait_for_sender(
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
            task_free(t);
            return;
        }
        task_check_claim(t);
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
        imapcopy_append(t->w->imap, task_id(t), task_org(t), t->route.imap_url,
                        t->route.user, t->route.password, t->route.sent_folder,
                        t->msg, t->msglen);
    free(t->msg); /* a retry builds it again */
    t->msg = NULL;
    free(t->reply);
    t->reply = xstrdup(r->reply);
    free(t->rcpt_json);
    t->rcpt_json = outcome_rcpt_json(t, r);
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
            task_pump(t->w);
            return;
        }
        record_mark_sent_later(t);
        /* the counters keep what was accepted */
        t->quota_keep = (int)(r->nrcpt - refused); /* the accepted ones */
        task_quota_drop(t);
        free(t->error);
        t->error = NULL;
        if (refused) {
            t->error =
                xasprintf("%zu of %zu recipients refused", refused, r->nrcpt);
            log_job(LOG_WARN, task_id(t), task_org(t), t->attempt,
                    "delivered; some recipients refused", "smtp_reply",
                    r->reply, "refused", t->error, NULL);
        } else if (log_enabled(LOG_INFO) && r->transactions > 1) {
            char n[16];
            snprintf(n, sizeof n, "%d", r->transactions);
            log_job(LOG_INFO, task_id(t), task_org(t), t->attempt,
                    "delivered (the server takes fewer recipients per "
                    "message: sent as several, one attempt)",
                    "path", t->route.path_name, "transactions", n, "smtp_reply",
                    r->reply, NULL);
        } else if (log_enabled(LOG_INFO)) {
            log_job(LOG_INFO, task_id(t), task_org(t), t->attempt, "delivered",
                    "path", t->route.path_name, "smtp_reply", r->reply,
                    "connection",
                    r->chained  ? "chained"
                    : r->reused ? "reused"
                                : "new",
                    NULL);
        }
        task_record(t, MCW_SENT);
        task_pump(t->w);
        return;
    }
    task_quota_drop(t); /* nothing was accepted */
    if (r->auth_failed && t->route.path == ROUTE_SCHEME) {
        /* The organisation's server refused the scheme's credentials
         * (marked above): route this job again: fallback to the relay,
         * or hold, as the scheme says. */
        log_job(LOG_WARN, task_id(t), task_org(t), t->attempt,
                "the sending scheme's login was refused; routing again",
                "smtp_reply", r->reply, NULL);
        resolver_route_clear(&t->route);
        t->routed = 0;
        task_prepare(t);
        task_pump(t->w);
        return;
    }
    if (r->auth_failed) {
        /* the relay refused the platform's own credentials */
        char *e = xasprintf("the relay refused HERALD_RELAY_USER's "
                            "credentials: %s",
                            r->reply);
        defer_or_expire_at(t, e, 0, "auth");
        free(e);
        task_pump(t->w);
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
            task_enter(t, TASK_PROBING);
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
        task_fail(t, "rejected", r->reply);
        break;
    case SMTPV_OK: /* a 2xx that is not an acceptance: a broken server */
    case SMTPV_RETRY:
        defer_or_expire_at(t, r->reply, c.pause_until_ms, "expired");
        break;
    }
    task_pump(t->w);
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
        task_record(t, MCW_SENDING);
    return go ? 0 : 1;
}

/* Hands the task to the mailer (TASK_SENDING), with its message built
 * now: not while it waits for its record (memory: a task waiting for a
 * batch holds no message, ~2.5 KB each at ~2 KB a job), and with the Date
 * of the attempt. */
static void
task_start_send(struct task *t)
{
    struct worker *w = t->w;
    task_enter(t, TASK_SENDING);
    if (t->msg == NULL) {
        struct mime_opts o = {
            .from = {.name = t->route.from_name, .email = t->route.from_addr},
            .reply_to = t->route.reply_to,
            .msgid_domain = w->msgid_domain,
            .date_ms = clock_now_ms(),
        };
        struct herr e;
        if (mime_build(t->job, &o, &t->msg, &t->msglen, &e) != 0) {
            char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
            herr_format(&e, why, sizeof why);
            task_fail(t, "invalid", why);
            return;
        }
    }
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
        task_defer_or_expire(t, "could not start an SMTP transaction");
}

/* A held scheme (its login refused, "hold"; or its password cannot be
 * opened here): the job waits on its own clock, without spending
 * attempts, and fails ("auth") only when older than
 * HERALD_RETRY_MAX_AGE_S. */
static void
task_hold(struct task *t)
{
    const struct settings *s = t->w->s;
    int64_t now = clock_now_ms();
    const char *reason = t->route.hold_auth ? "auth" : "expired";
    if (now - t->first_at > s->retry_max_age_s * 1000) {
        char *why = xasprintf("held for longer than HERALD_RETRY_MAX_AGE_S "
                              "(%llds): %s",
                              (long long)s->retry_max_age_s, t->route.reason);
        task_fail(t, reason, why);
        free(why);
        return;
    }
    char sender[SENDER_MAX] = "";
    if (t->route.scheme_field)
        quota_sender_scheme(sender, sizeof sender, t->route.scheme_field);
    int64_t step = (int64_t)s->retry_base_s * 1000;
    task_wait_for_sender(
        t, now + step + (int64_t)(outcome_rand32() % (uint32_t)(step + 1)),
        t->route.reason, sender, 0);
}

static void
on_quota(void *ud, int verdict, int64_t until_ms)
{
    struct task *t = ud;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    struct worker *w = t->w;
    const struct sender_plan *p = &t->plan;
    if (verdict == 0) {
        t->quota_n = (int)t->nrcpt;
        task_prepare(t);
        return;
    }
    t->quota_asked = 0;
    if (verdict == -2) {
        task_defer_or_expire(t, "the quota could not be checked in Redis");
        return;
    }
    if (verdict == -1) {
        senders_pause(w->senders, p->pause_sender, until_ms, "paused");
        char *e = xasprintf("sender %s is paused", p->pause_sender);
        task_wait_for_sender(
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
    task_wait_for_sender(
        t, p->win[i].end_ms + quota_jitter_ms(p->kind[i], outcome_rand32()), e,
        p->count_sender, 0);
    free(e);
}

/* Takes this job's recipients from its sender's counters. */
static void
task_take_quota(struct task *t)
{
    const struct sender_plan *p = &t->plan;
    for (int i = 0; i < p->n; i++) {
        if ((long long)t->nrcpt > p->limit[i]) {
            char *e = xasprintf("the job has %zu recipients; %s allows at "
                                "most %lld per %s, so it can never be sent "
                                "within its quota",
                                t->nrcpt, p->count_sender, p->limit[i],
                                quota_kind_name(p->kind[i]));
            task_fail(t, "quota", e);
            free(e);
            return;
        }
    }
    t->quota_asked = 1;
    task_enter(t, TASK_QUOTA);
    senders_take(t->w->senders, p, t->job->id, t->fence, (int)t->nrcpt,
                 clock_now_ms(), on_quota, t);
}

/* ---- preparing: template, route, gate, quota, build ---- */

/* The scheme's first login is decided: route again (the scheme may be
 * auth_failed now). */
static void
on_gate_wake(void *ud)
{
    struct task *t = ud;
    task_quota_drop(t);
    resolver_route_clear(&t->route);
    t->routed = 0;
    task_prepare(t);
}

/* The SPF verdict for the job's from domain: route again with it. */
static void
on_spf(void *ud, int authorised, const char *why)
{
    struct task *t = ud;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    t->spf_known = 1;
    t->spf_ok = authorised;
    free(t->spf_why);
    t->spf_why = xstrdup(why);
    task_prepare(t);
}

static void route_task(struct task *t);

/* Renders the job's template into the parts the job does not carry
 * itself (a job's own subject, text or html win). */
static void
apply_template(struct task *t, const char *json)
{
    struct job *j = t->job;
    struct herr e = {{0}, {0}};
    char why[HERR_FIELD_MAX + HERR_MSG_MAX + 32];
    if (json == NULL) {
        snprintf(why, sizeof why, "template: no template named \"%s\"",
                 j->template_name);
        t->dead_field = "template";
        task_fail(t, "invalid", why);
        return;
    }
    struct tmpl *tp = NULL;
    char *subject = NULL, *text = NULL, *html = NULL;
    int rc = tmpl_parse(json, strlen(json), &tp, &e);
    if (rc == 0)
        rc = tmpl_render(tp, j->data_json, &subject, &text, &html, &e);
    tmpl_free(tp);
    if (rc != 0) {
        char detail[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&e, detail, sizeof detail);
        snprintf(why, sizeof why, "template %s: %s", j->template_name, detail);
        t->dead_field = e.field[0] ? "data" : "template";
        task_fail(t, "invalid", why);
        return;
    }
    if (j->subject == NULL) {
        j->subject = subject;
        subject = NULL;
    }
    if (j->text == NULL && j->html == NULL) {
        j->text = text;
        j->html = html;
        text = html = NULL;
    }
    free(subject);
    free(text);
    free(html);
    t->rendered = 1;
    if (t->claimed)
        task_prepare(t);
    else
        route_task(t); /* a send_at in the future: record, then schedule */
}

static struct tmpl_entry *
tcache_find(struct worker *w, const char *name)
{
    for (size_t i = 0; i < w->ntcache; i++)
        if (strcmp(w->tcache[i].name, name) == 0)
            return &w->tcache[i];
    return NULL;
}

static void
tcache_put(struct worker *w, const char *name, const char *json)
{
    struct tmpl_entry *e = tcache_find(w, name);
    if (e == NULL) {
        if (w->ntcache == TMPL_CACHE_MAX) {
            /* full: drop the oldest */
            size_t old = 0;
            for (size_t i = 1; i < w->ntcache; i++)
                if (w->tcache[i].at < w->tcache[old].at)
                    old = i;
            free(w->tcache[old].name);
            free(w->tcache[old].json);
            w->tcache[old] = w->tcache[--w->ntcache];
        }
        e = &w->tcache[w->ntcache++];
        e->name = xstrdup(name);
        e->json = NULL;
    }
    free(e->json);
    e->json = json ? xstrdup(json) : NULL;
    e->at = uv_now(w->loop);
}

static void
on_template(void *ud, redisReply *r)
{
    struct task *t = ud;
    if (r->type == REDIS_REPLY_ERROR) {
        task_defer_or_expire(t, "could not read the template from Redis");
        return;
    }
    const char *json = r->type == REDIS_REPLY_STRING ? r->str : NULL;
    tcache_put(t->w, t->job->template_name, json);
    apply_template(t, json);
}

static void
fetch_template(struct task *t)
{
    struct worker *w = t->w;
    struct tmpl_entry *e = tcache_find(w, t->job->template_name);
    if (e && uv_now(w->loop) - e->at < TMPL_TTL_MS) {
        apply_template(t, e->json);
        return;
    }
    task_enter(t, TASK_RENDERING);
    queue_template_get(w->q, t->job->template_name, on_template, t);
}

/* Claimed: render, resolve the sender, check its pause and its scheme's
 * login gate, build the envelope, take the quota, build the bytes, then
 * record "queued" before the transaction starts. Runs again after each
 * of its waits (RENDERING, RESOLVING, GATED, QUOTA), which it enters. */
static void
task_prepare(struct task *t)
{
    struct worker *w = t->w;
    if (t->job->template_name && !t->rendered) {
        /* First: every record of this job holds the message as sent */
        fetch_template(t);
        return;
    }
    if (!t->routed) {
        resolver_route(w->resolver, t->job, t->spf_known ? t->spf_ok : -1,
                       t->spf_why, &t->route);
        if (t->route.need_spf) {
            resolver_route_clear(&t->route);
            const char *at = strrchr(t->job->from, '@');
            task_enter(t, TASK_RESOLVING);
            spfcache_check(w->spf, at ? at + 1 : t->job->from, on_spf, t);
            return;
        }
        t->routed = 1;
    }
    if (t->route.hold) {
        task_hold(t);
        return;
    }
    int64_t now = clock_now_ms();
    if (!t->planned) {
        senders_plan(w->senders, &t->route, t->job->org, now, &t->plan);
        t->planned = 1;
    }
    const char *pause_why = NULL;
    int64_t until =
        senders_paused(w->senders, t->plan.pause_sender, now, &pause_why);
    if (until) {
        char *e = xasprintf("sender %s paused until the provider allows it "
                            "again: %s",
                            t->plan.pause_sender, pause_why);
        task_wait_for_sender(
            t, until + quota_jitter_ms(QUOTA_MINUTE, outcome_rand32()), e,
            t->plan.pause_sender, 0);
        free(e);
        return;
    }
    if (t->route.path == ROUTE_SCHEME &&
        !logingate_enter(w->gate, t->route.scheme_field, t->route.scheme_fp,
                         on_gate_wake, t)) {
        /* another transaction tries these credentials */
        task_enter(t, TASK_GATED);
        queue_kick(w->q); /* it holds no place meanwhile: take more */
        return;
    }
    if (t->rcpt == NULL)
        outcome_build_envelope(t);
    if (t->nrcpt == 0) {
        /* every recipient accepted in earlier attempts */
        record_mark_sent_later(t);
        task_record(t, MCW_SENT);
        return;
    }
    if (t->plan.n && !t->quota_asked) {
        task_take_quota(t);
        return;
    }
    task_record(t, MCW_START);
}

static void claimed(struct task *t, const struct queue_claim *c);

static void
on_claim(void *ud, redisReply *r)
{
    struct task *t = ud;
    struct worker *w = t->w;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        log_job(LOG_ERROR, task_id(t), task_org(t), 0, "claim failed; retrying",
                "error", r->type == REDIS_REPLY_ERROR ? r->str : "bad reply",
                NULL);
        task_enter(t, TASK_CLAIM_RETRY);
        tq_push(&w->retry, t);
        return;
    }
    struct queue_claim c;
    memset(&c, 0, sizeof c);
    snprintf(c.status, sizeof c.status, "%s", r->element[0]->str);
    c.attempts = r->element[1]->integer;
    c.first_at = r->element[2]->integer;
    if (r->elements >= 5) {
        c.fence = r->element[3]->integer;
        c.partial = r->element[4]->integer != 0;
    }
    claimed(t, &c);
}

/* The recipients that accepted this job in an earlier attempt (the
 * ledger's "accepted"): left out of this one. */
static void
on_accepted(void *ud, redisReply *r)
{
    struct task *t = ud;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        task_defer_or_expire(t,
                             "could not read the ledger's accepted recipients");
        return;
    }
    if (r->type == REDIS_REPLY_STRING) {
        const char *p = r->str, *end = r->str + r->len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
            if (n) {
                t->prev_acc = xrealloc(t->prev_acc, (t->nprev_acc + 1) *
                                                        sizeof *t->prev_acc);
                t->prev_acc[t->nprev_acc++] = xstrndup(p, n);
            }
            p += n + 1;
        }
    }
    task_prepare(t);
}

/* What the ledger said of this job's id (see queue_claim). */
static void
claimed(struct task *t, const struct queue_claim *c)
{
    if (strcmp(c->status, "ok") == 0) {
        t->claimed = 1;
        t->attempt = (int)c->attempts;
        t->first_at = c->first_at;
        t->fence = c->fence;
        if (c->partial) {
            char key[KEYS_MAX];
            keys_ledger(key, sizeof key, queue_prefix(t->w->q), t->job->id);
            const char *argv[3] = {"HGET", key, "accepted"};
            size_t lens[3] = {4, strlen(key), 8};
            task_enter(t, TASK_READING);
            queue_command(t->w->q, 3, argv, lens, on_accepted, t);
            return;
        }
        task_prepare(t);
        return;
    }
    if (strcmp(c->status, "sent") == 0) {
        log_job(LOG_INFO, task_id(t), task_org(t), 0,
                "duplicate of a delivered job; not sent again", NULL);
        task_record(t, MCW_LEDGER_SENT);
    } else {
        /* Another live worker holds this id. Not dropped: if that claim
         * is stale (a job handed back under it), dropping would lose the
         * job. This copy checks again shortly; the ledger then says
         * "sent" (dropped then) or lets it go. The ledger and the record
         * stay the other copy's. */
        int64_t due = clock_now_ms() + BUSY_RECHECK_MS;
        log_job(LOG_INFO, task_id(t), task_org(t), 0,
                "another worker is sending this id; this copy checks again "
                "in a few seconds",
                NULL);
        task_enter(t, TASK_FINISHING);
        queue_finish_schedule(t->w->q, t->raw, t->rawlen, t->raw, due, NULL, 0,
                              task_on_final_reply, t);
    }
}

/* Continues a task after its Message Center write of `step` committed. */
void
task_recorded(struct task *t, enum mc_step step)
{
    struct worker *w = t->w;
    if (!t->in_mcq)
        t->step = MCW_NONE;
    switch (step) {
    case MCW_SCHEDULE:
        task_enter(t, TASK_FINISHING);
        queue_finish_schedule(w->q, t->raw, t->rawlen, t->raw,
                              t->job->send_at_ms, NULL, 0, task_on_final_reply,
                              t);
        break;
    case MCW_START:
        if (t->dup_sent) {
            log_job(LOG_INFO, task_id(t), task_org(t), t->attempt,
                    "the message center says this job was delivered; not "
                    "sent again",
                    NULL);
            const char *id = t->job->id;
            queue_mark_sent(w->q, &id, &t->fence, 1, NULL, NULL);
            task_finish(t);
        } else if (w->stopping) {
            /* not started: handed back at the end of the shutdown */
            task_free(t);
        } else {
            task_enter(t, TASK_READY);
            tq_push(&w->ready, t);
            task_pump(w);
        }
        break;
    case MCW_SENDING:
        t->attempt_recorded = 1;
        break;
    case MCW_LEDGER_SENT:
        task_finish(t);
        break;
    case MCW_SENT:
        t->attempt_recorded = 1;
        /* leaves with the rest of its batch, then hooks.left */
        task_enter(t, TASK_FINISHING);
        record_leave(t);
        break;
    case MCW_DEFERRED:
        t->attempt_recorded = 1;
        task_enter(t, TASK_FINISHING);
        queue_finish_schedule(w->q, t->raw, t->rawlen, t->raw, t->next_at,
                              task_ledger_id(t), t->uncount,
                              task_on_final_reply, t);
        break;
    case MCW_FAILED:
        t->attempt_recorded = 1;
        task_to_dead(t);
        break;
    case MCW_NONE:
        break;
    }
}

static void
on_fence(void *ud, redisReply *r)
{
    struct task *t = ud;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        t->fence_checked = 1; /* task_may_start lets it go */
        task_start_send(t);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        task_defer_or_expire(t, "could not check the job's claim in Redis");
        return;
    }
    log_job(LOG_WARN, task_id(t), task_org(t), t->attempt,
            "not sent: this worker's claim is no longer current (its "
            "heartbeat lapsed and another worker re-took the job)",
            NULL);
    task_finish(t);
}

/* Our heartbeat lapsed: another worker may have re-taken t's job. Redis
 * says whether the claim is still ours before the transaction starts
 * (on_fence). */
static void
task_check_claim(struct task *t)
{
    task_enter(t, TASK_FENCING);
    queue_fence_check(t->w->q, t->job->id, t->fence, on_fence, t);
}

/* Hands every ready task to the mailer, which gives each a connection
 * to its server when one is free there and fewer than HERALD_CONCURRENCY
 * transactions run (mailer.h): a task waits in its server's queue, not
 * in front of everyone else's. `slots` counts the tasks in the mailer. */
static void
task_pump(struct worker *w)
{
    while (!w->stopping && w->ready.head) {
        struct task *t = tq_pop(&w->ready);
        if (t->fence && !queue_lease_fresh(w->q)) {
            task_check_claim(t);
            continue;
        }
        task_start_send(t);
    }
    if (w->mailer && mailer_waiting(w->mailer) > 0)
        queue_kick(w->q); /* those waiting hold no place: take more */
}

/* ---- taking ---- */

/* Another task of this worker with the id of `t`'s job: a take's every
 * job is looked for (a scan of all the tasks was 2.5 % of the worker's
 * CPU at 512 in flight). */
static struct task *
task_with_id(struct worker *w, const struct task *t)
{
    if (w->idtab == NULL)
        return NULL;
    for (struct task *o = w->idtab[t->idhash & w->idmask]; o; o = o->idnext)
        if (o != t && o->idhash == t->idhash &&
            strcmp(o->job->id, t->job->id) == 0)
            return o;
    return NULL;
}

static void
id_link(struct task *t)
{
    struct worker *w = t->w;
    if (w->idtab == NULL) {
        /* twice the most tasks a worker holds (worker.c: 64 x the slots) */
        size_t want = 128 * (size_t)(w->s ? w->s->concurrency : 16), n = 256;
        while (n < want)
            n *= 2;
        w->idtab = xcalloc(n, sizeof *w->idtab);
        w->idmask = n - 1;
    }
    struct task **b = &w->idtab[t->idhash & w->idmask];
    t->idnext = *b;
    *b = t;
    t->idlinked = 1;
}

static void
id_unlink(struct task *t)
{
    if (!t->idlinked)
        return;
    struct task **p = &t->w->idtab[t->idhash & t->w->idmask];
    while (*p != t)
        p = &(*p)->idnext;
    *p = t->idnext;
    t->idlinked = 0;
}

static void
route_task(struct task *t)
{
    struct worker *w = t->w;
    if (task_with_id(w, t)) {
        log_job(LOG_INFO, task_id(t), task_org(t), 0,
                "duplicate of a job this worker holds; dropped", NULL);
        task_finish(t);
        return;
    }
    if (t->job->send_at_ms > clock_now_ms()) { /* never before */
        if (t->job->template_name && !t->rendered) {
            /* the record shows what will be sent (rendered again, and
             * recorded again, when it is due) */
            fetch_template(t);
            return;
        }
        task_record(t, MCW_SCHEDULE);
        return;
    }
    if (t->preclaimed && strcmp(t->pre.id, t->job->id) == 0) {
        claimed(t, &t->pre);
        return;
    }
    task_claim(t);
}

void
task_claim(struct task *t)
{
    task_enter(t, TASK_CLAIMING);
    queue_claim(t->w->q, t->job->id, on_claim, t);
}

static void
on_replaced(void *ud, redisReply *r)
{
    (void)r;
    struct task *t = ud;
    if (t->abandoned) {
        task_free(t);
        return;
    }
    route_task(t);
}

/* `who`: the id and org job_parse could read (never parsed again). */
static void
invalid_job(struct task *t, const struct herr *e, const struct job_ident *who)
{
    char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
    herr_format(e, why, sizeof why);
    const char *id = who->id[0] ? who->id : NULL;
    const char *org = who->org[0] ? who->org : NULL;
    log_job(LOG_WARN, id, org, 0, "invalid job moved to dead", "field",
            e->field, "error", why, NULL);
    char *entry = dead_entry_new(t->raw, t->rawlen, "invalid", e->field, why,
                                 id, clock_now_ms());
    /* A claim the take made for this id is released (ledger "failed"),
     * so a corrected job with the same id can go out; a "sent" or
     * another worker's claim is left alone. */
    int ours = t->preclaimed && strcmp(t->pre.status, "ok") == 0;
    task_enter(t, TASK_FINISHING);
    queue_finish_dead(t->w->q, t->raw, t->rawlen, entry,
                      ours ? t->pre.id : NULL, task_on_final_reply, t);
    free(entry);
}

/* Parsed: a new id goes into the processing list first; then route. */
void
task_parsed(struct task *t, int rc, struct job *job, const struct herr *e,
            const struct job_ident *who, char *canon)
{
    struct worker *w = t->w;
    if (rc != 0) {
        invalid_job(t, e, who);
        return;
    }
    t->job = job;
    if (job->id) {
        t->idhash = util_hash(job->id);
        id_link(t);
    }
    if (canon) {
        /* Give it an id and make the processing list hold that form, so
         * retries and hand-backs keep the same id. */
        task_enter(t, TASK_RENAMING);
        queue_replace(w->q, t->raw, t->rawlen, canon, on_replaced, t);
        free(t->raw);
        w->held_bytes -= t->rawlen;
        t->raw = canon;
        t->rawlen = strlen(canon);
        w->held_bytes += t->rawlen;
        return;
    }
    route_task(t);
}
