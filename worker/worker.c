#include "worker.h"
#include "task.h"
#include "clock.h"
#include "dead.h"
#include "job.h"
#include "keys.h"
#include "log.h"
#include "mailer.h"
#include "mc.h"
#include "mime.h"
#include "queue.h"
#include "resolver.h"
#include "schemes.h"
#include "senders.h"
#include "smtpclass.h"
#include "imapcopy.h"
#include "logingate.h"
#include "spfcache.h"
#include "tmpl.h"
#include "util.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A copy of a job id another live worker is sending checks again after
 * this long. */
#define BUSY_RECHECK_MS 5000

/* ---- tasks ---- */

const char *
worker_tid(const struct task *t)
{
    return t->job && t->job->id ? t->job->id : "-";
}

const char *
worker_torg(const struct task *t)
{
    return t->job ? t->job->org : NULL;
}

const char *
worker_ledger_id(const struct task *t)
{
    return t->claimed && t->job ? t->job->id : NULL;
}

void
worker_release_slot(struct task *t)
{
    if (t->has_slot) {
        t->has_slot = 0;
        t->w->slots--;
    }
}

/* Recipients taken and not accepted (all but quota_keep) go back to the
 * sender's counters. */
void
worker_quota_drop(struct task *t)
{
    if (t->quota_n > 0)
        senders_settle(t->w->senders, &t->plan, t->job->id, t->fence,
                       t->quota_keep);
    t->quota_n = 0;
    t->quota_keep = 0;
    t->quota_asked = 0;
    t->planned = 0;
}

void
worker_task_free(struct task *t)
{
    struct worker *w = t->w;
    worker_release_slot(t);
    worker_quota_drop(t);
    logingate_forget(w->gate, t);
    if (t->gated)
        w->ngated--;
    if (t->prev)
        t->prev->next = t->next;
    else
        w->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    w->ntasks--;
    w->held_bytes -= t->rawlen;
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
        worker_maybe_finish_stop(w);
    else
        queue_kick(w->q);
}

/* A reply that only ends the task (finish / dead / schedule). */
void
worker_on_final_reply(void *ud, redisReply *r)
{
    struct task *t = ud;
    if (r->type == REDIS_REPLY_ERROR)
        log_job(LOG_ERROR, worker_tid(t), worker_torg(t), t->attempt,
                "redis refused to finish the job; it stays in the "
                "processing list",
                "error", r->str, NULL);
    worker_task_free(t);
}

void
worker_finish(struct task *t)
{
    queue_finish(t->w->q, t->raw, t->rawlen, worker_on_final_reply, t);
}

/* ---- Message Center batching ---- */

/* ---- outcome helpers ---- */

/* ---- sending ---- */

/* The scheme's first login is decided: route again (the scheme may be
 * auth_failed now). */
static void
on_gate_wake(void *ud)
{
    struct task *t = ud;
    t->gated = 0;
    t->w->ngated--;
    worker_quota_drop(t);
    resolver_route_clear(&t->route);
    t->routed = 0;
    worker_prepare(t);
}

/* The SPF verdict for the job's from domain: route again with it. */
static void
on_spf(void *ud, int authorised, const char *why)
{
    struct task *t = ud;
    if (t->abandoned) {
        worker_task_free(t);
        return;
    }
    t->spf_known = 1;
    t->spf_ok = authorised;
    free(t->spf_why);
    t->spf_why = xstrdup(why);
    worker_prepare(t);
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
        outcome_fail_task(t, "invalid", why);
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
        outcome_fail_task(t, "invalid", why);
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
        worker_prepare(t);
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
        outcome_defer_or_expire(t, "could not read the template from Redis");
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
    queue_template_get(w->q, t->job->template_name, on_template, t);
}

/* Claimed: render, resolve the sender and build the bytes, then record
 * "sending" before the transaction starts. */
void
worker_prepare(struct task *t)
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
            spfcache_check(w->spf, at ? at + 1 : t->job->from, on_spf, t);
            return;
        }
        t->routed = 1;
    }
    if (t->route.hold) {
        outcome_hold(t);
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
        outcome_wait_for_sender(
            t, until + quota_jitter_ms(QUOTA_MINUTE, outcome_rand32()), e,
            t->plan.pause_sender, 0);
        free(e);
        return;
    }
    if (t->route.path == ROUTE_SCHEME &&
        !logingate_enter(w->gate, t->route.scheme_field, t->route.scheme_fp,
                         on_gate_wake, t)) {
        t->gated = 1; /* another transaction tries these credentials */
        w->ngated++;
        queue_kick(w->q); /* it holds no place meanwhile: take more */
        return;
    }
    struct mime_opts o = {
        .from = {.name = t->route.from_name, .email = t->route.from_addr},
        .reply_to = t->route.reply_to,
        .msgid_domain = w->msgid_domain,
        .date_ms = clock_now_ms(),
    };
    if (t->rcpt == NULL)
        outcome_build_envelope(t);
    if (t->nrcpt == 0) {
        /* every recipient accepted in earlier attempts */
        record_mark_sent_later(t);
        record_queue(t, MCW_SENT);
        return;
    }
    if (t->plan.n && !t->quota_asked) {
        outcome_take_quota(t);
        return;
    }
    struct herr e;
    free(t->msg);
    t->msg = NULL;
    if (mime_build(t->job, &o, &t->msg, &t->msglen, &e) != 0) {
        char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&e, why, sizeof why);
        outcome_fail_task(t, "invalid", why);
        return;
    }
    record_queue(t, MCW_START);
}

static void claimed(struct task *t, const struct queue_claim *c);

static void
on_claim(void *ud, redisReply *r)
{
    struct task *t = ud;
    struct worker *w = t->w;
    if (t->abandoned) {
        worker_task_free(t);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        log_job(LOG_ERROR, worker_tid(t), worker_torg(t), 0,
                "claim failed; retrying", "error",
                r->type == REDIS_REPLY_ERROR ? r->str : "bad reply", NULL);
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
        worker_task_free(t);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        outcome_defer_or_expire(
            t, "could not read the ledger's accepted recipients");
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
    worker_prepare(t);
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
            queue_command(t->w->q, 3, argv, lens, on_accepted, t);
            return;
        }
        worker_prepare(t);
        return;
    }
    if (strcmp(c->status, "sent") == 0) {
        log_job(LOG_INFO, worker_tid(t), worker_torg(t), 0,
                "duplicate of a delivered job; not sent again", NULL);
        record_queue(t, MCW_LEDGER_SENT);
    } else {
        /* Another live worker holds this id. Not dropped: if that claim
         * is stale (a job handed back under it), dropping would lose the
         * job. This copy checks again shortly; the ledger then says
         * "sent" (dropped then) or lets it go. The ledger and the record
         * stay the other copy's. */
        int64_t due = clock_now_ms() + BUSY_RECHECK_MS;
        log_job(LOG_INFO, worker_tid(t), worker_torg(t), 0,
                "another worker is sending this id; this copy checks again "
                "in a few seconds",
                NULL);
        queue_finish_schedule(t->w->q, t->raw, t->rawlen, t->raw, due, NULL, 0,
                              worker_on_final_reply, t);
    }
}

/* Continues a task after its Message Center write of `step` committed. */
void
worker_after_mc(struct task *t, enum mc_step step)
{
    struct worker *w = t->w;
    if (!t->in_mcq)
        t->step = MCW_NONE;
    switch (step) {
    case MCW_SCHEDULE:
        queue_finish_schedule(w->q, t->raw, t->rawlen, t->raw,
                              t->job->send_at_ms, NULL, 0,
                              worker_on_final_reply, t);
        break;
    case MCW_START:
        if (t->dup_sent) {
            log_job(LOG_INFO, worker_tid(t), worker_torg(t), t->attempt,
                    "the message center says this job was delivered; not "
                    "sent again",
                    NULL);
            worker_release_slot(t);
            const char *id = t->job->id;
            queue_mark_sent(w->q, &id, &t->fence, 1, NULL, NULL);
            worker_finish(t);
        } else if (w->stopping) {
            /* not started: handed back at the end of the shutdown */
            worker_task_free(t);
        } else {
            tq_push(&w->ready, t);
            worker_pump(w);
        }
        break;
    case MCW_SENDING:
        t->attempt_recorded = 1;
        break;
    case MCW_LEDGER_SENT:
        worker_finish(t);
        break;
    case MCW_SENT:
        t->attempt_recorded = 1;
        /* left with the rest of its batch: see flush_done */
        w->done_list[w->ndone++] = t;
        break;
    case MCW_DEFERRED:
        t->attempt_recorded = 1;
        queue_finish_schedule(w->q, t->raw, t->rawlen, t->raw, t->next_at,
                              worker_ledger_id(t), t->uncount,
                              worker_on_final_reply, t);
        break;
    case MCW_FAILED:
        t->attempt_recorded = 1;
        outcome_to_dead(t);
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
        worker_task_free(t);
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        t->fence_checked = 1; /* task_may_start lets it go */
        outcome_start_send(t);
        return;
    }
    worker_release_slot(t);
    if (r->type == REDIS_REPLY_ERROR) {
        outcome_defer_or_expire(t, "could not check the job's claim in Redis");
        return;
    }
    log_job(LOG_WARN, worker_tid(t), worker_torg(t), t->attempt,
            "not sent: this worker's claim is no longer current (its "
            "heartbeat lapsed and another worker re-took the job)",
            NULL);
    worker_finish(t);
}

/* Our heartbeat lapsed: another worker may have re-taken t's job. Redis
 * says whether the claim is still ours before the transaction starts
 * (on_fence). */
void
worker_check_claim(struct task *t)
{
    queue_fence_check(t->w->q, t->job->id, t->fence, on_fence, t);
}

/* Hands every ready task to the mailer, which gives each a connection
 * to its server when one is free there and fewer than HERALD_CONCURRENCY
 * transactions run (mailer.h): a task waits in its server's queue, not
 * in front of everyone else's. `slots` counts the tasks in the mailer. */
void
worker_pump(struct worker *w)
{
    while (!w->stopping && w->ready.head) {
        struct task *t = tq_pop(&w->ready);
        t->has_slot = 1;
        t->has_slot_ever = 1;
        w->slots++;
        if (t->fence && !queue_lease_fresh(w->q)) {
            worker_check_claim(t);
            continue;
        }
        outcome_start_send(t);
    }
    if (w->mailer && mailer_waiting(w->mailer) > 0)
        queue_kick(w->q); /* those waiting hold no place: take more */
}

/* ---- taking ---- */

static struct task *
task_with_id(struct worker *w, const char *id, const struct task *except)
{
    for (struct task *t = w->tasks; t; t = t->next)
        if (t != except && t->job && t->job->id && strcmp(t->job->id, id) == 0)
            return t;
    return NULL;
}

static void
route_task(struct task *t)
{
    struct worker *w = t->w;
    if (task_with_id(w, t->job->id, t)) {
        log_job(LOG_INFO, worker_tid(t), worker_torg(t), 0,
                "duplicate of a job this worker holds; dropped", NULL);
        worker_finish(t);
        return;
    }
    if (t->job->send_at_ms > clock_now_ms()) { /* never before */
        if (t->job->template_name && !t->rendered) {
            /* the record shows what will be sent (rendered again, and
             * recorded again, when it is due) */
            fetch_template(t);
            return;
        }
        record_queue(t, MCW_SCHEDULE);
        return;
    }
    if (t->preclaimed && strcmp(t->pre.id, t->job->id) == 0) {
        claimed(t, &t->pre);
        return;
    }
    queue_claim(w->q, t->job->id, on_claim, t);
}

static void
on_replaced(void *ud, redisReply *r)
{
    (void)r;
    struct task *t = ud;
    if (t->abandoned) {
        worker_task_free(t);
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
    queue_finish_dead(t->w->q, t->raw, t->rawlen, entry,
                      ours ? t->pre.id : NULL, worker_on_final_reply, t);
    free(entry);
}

/* A job this large is parsed (and given its id) on libuv's thread pool:
 * a 10 MiB job takes a few hundred milliseconds to parse and check, which
 * the loop does not stop for. */
#define PARSE_OFF_LOOP_BYTES (256 * 1024)

struct parse_work {
    uv_work_t req;
    struct task *t;
    struct job *job;
    int rc;
    struct herr e;
    struct job_ident who;
    char *canon; /* the job with its assigned id, when it had none */
};

/* Parsed: a new id goes into the processing list first; then route. */
static void
parsed(struct task *t, int rc, struct job *job, const struct herr *e,
       const struct job_ident *who, char *canon)
{
    struct worker *w = t->w;
    if (rc != 0) {
        invalid_job(t, e, who);
        return;
    }
    t->job = job;
    if (canon) {
        /* Give it an id and make the processing list hold that form, so
         * retries and hand-backs keep the same id. */
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

/* On the thread pool: reads only the task's raw bytes, which stay put. */
static void
parse_run(uv_work_t *req)
{
    struct parse_work *pw = req->data;
    pw->rc =
        job_parse_ident(pw->t->raw, pw->t->rawlen, &pw->job, &pw->e, &pw->who);
    if (pw->rc == 0 && pw->job->id == NULL) {
        job_assign_id(pw->job);
        pw->canon = job_to_json(pw->job);
    }
}

static void
parse_done(uv_work_t *req, int status)
{
    (void)status;
    struct parse_work *pw = req->data;
    struct task *t = pw->t;
    struct worker *w = t->w;
    w->nparsing--;
    if (w->stopping) {
        /* not started: it stays in the processing list, handed back */
        if (pw->job)
            job_free(pw->job);
        free(pw->canon);
        free(pw);
        worker_task_free(t);
        if (w->close_after_flush && !w->flushing && w->nparsing == 0)
            worker_close_all(w);
        return;
    }
    parsed(t, pw->rc, pw->job, &pw->e, &pw->who, pw->canon);
    free(pw);
}

static void
on_job(void *ud, char *raw, size_t len, const struct queue_claim *pre)
{
    struct worker *w = ud;
    struct task *t = xcalloc(1, sizeof *t);
    t->w = w;
    if (pre) {
        t->preclaimed = 1;
        t->pre = *pre;
    }
    t->raw = raw;
    t->rawlen = len;
    w->held_bytes += len;
    t->next = w->tasks;
    if (w->tasks)
        w->tasks->prev = t;
    w->tasks = t;
    w->ntasks++;
    t->first_at = clock_now_ms();
    if (len > PARSE_OFF_LOOP_BYTES) {
        struct parse_work *pw = xcalloc(1, sizeof *pw);
        pw->t = t;
        pw->req.data = pw;
        w->nparsing++;
        if (uv_queue_work(w->loop, &pw->req, parse_run, parse_done) != 0)
            abort(); /* only fails for a NULL callback */
        return;
    }
    struct herr e = {{0}, {0}};
    struct job_ident who;
    struct job *job = NULL;
    int rc = job_parse_ident(raw, len, &job, &e, &who);
    char *canon = NULL;
    if (rc == 0 && job->id == NULL) {
        job_assign_id(job);
        canon = job_to_json(job);
    }
    parsed(t, rc, job, &e, &who, canon);
}

static void
on_oversize(void *ud, size_t len)
{
    struct worker *w = ud;
    bigjob_add(w->big, len);
}

static size_t
count_local(void *ud, const char *raw, size_t len)
{
    struct worker *w = ud;
    if (raw == NULL)
        return bigjob_count(w->big, len);
    size_t n = 0;
    for (struct task *t = w->tasks; t; t = t->next)
        if (t->rawlen == len && memcmp(t->raw, raw, len) == 0)
            n++;
    return n;
}

static int
room(void *ud, size_t *bytes)
{
    struct worker *w = ud;
    *bytes = 0;
    if (w->stopping || !schemes_loaded(w->schemes) ||
        !senders_loaded(w->senders))
        return 0; /* no job is routed before the schemes are known */
    /* Eight times the SMTP slots: jobs being claimed and recorded ahead
     * of a free slot, and jobs whose outcome is being recorded (a batch
     * commit, then leaving the processing list), must not starve the
     * SMTP connections. A job waiting in the queue of a server with
     * fewer connections than slots (an organisation's own, maybe slow),
     * or for its scheme's first login, holds no place there (SPEC §8: it
     * must not hold up other servers' jobs); all tasks together stay
     * under 64 times the slots. A task is a few KB. */
    long working = (long)w->ntasks - (long)w->ngated -
                   (long)(w->mailer ? mailer_waiting(w->mailer) : 0);
    long r = 8 * w->s->concurrency - working;
    long all = 64 * w->s->concurrency - (long)w->ntasks;
    if (all < r)
        r = all;
    /* And the bytes they hold, HERALD_MAX_INFLIGHT_BYTES: a take stops
     * there after its first job (one job always fits), so a worker holds
     * at most the budget plus one job of raw text (a task holds a few
     * times its raw size: parsed, built, recorded). */
    size_t budget = (size_t)w->s->max_inflight_bytes;
    if (w->held_bytes >= budget && w->ntasks > 0)
        return 0;
    *bytes = w->held_bytes < budget ? budget - w->held_bytes : 1;
    return r > 0 ? (int)r : 0;
}

static void
on_ready(void *ud)
{
    (void)ud;
}

static void
on_retry_timer(uv_timer_t *timer)
{
    struct worker *w = timer->data;
    if (!w->stopping && queue_is_ready(w->q)) {
        schemes_poll(w->schemes); /* a change is seen within a second */
        senders_poll(w->senders);
        logingate_tick(w->gate);
    }
    if (log_enabled(LOG_DEBUG)) {
        size_t nready = 0;
        for (struct task *r = w->ready.head; r; r = r->qnext)
            nready++;
        char a[32], b[32], c[32], d[32], e[32];
        snprintf(a, sizeof a, "%zu", w->ntasks);
        snprintf(b, sizeof b, "%d", w->slots);
        snprintf(c, sizeof c, "%zu", nready);
        snprintf(d, sizeof d, "%zu", w->nmcq);
        snprintf(e, sizeof e, "%zu", queue_pending(w->q));
        log_msg(LOG_DEBUG, "pipeline", "tasks", a, "smtp", b, "ready", c,
                "mc_pending", d, "redis_pending", e, "mc_flushing",
                w->flushing ? "yes" : "no", "flush_armed",
                w->flush_armed ? "yes" : "no", NULL);
    }
    struct task *t;
    while ((t = tq_pop(&w->retry)) != NULL) {
        if (w->stopping)
            worker_task_free(t);
        else
            queue_claim(w->q, t->job->id, on_claim, t);
    }
}

/* ---- life cycle ---- */

static void
on_handle_closed(uv_handle_t *h)
{
    struct worker *w = h->data;
    if (--w->open_handles > 0)
        return;
    void (*done)(void *, int) = w->done;
    void *ud = w->done_ud;
    int code = w->exit_code;
    record_log_window(w);
    if (w->mc)
        mc_close(w->mc);
    resolver_free(w->resolver);
    schemes_free(w->schemes);
    senders_free(w->senders);
    logingate_free(w->gate);
    bigjob_free(w->big); /* the queue is closed: no reply can come */
    free(w->fb_task);
    free(w->fb_step);
    free(w->done_list);
    free(w->mark);
    while (w->batches) { /* Redis never answered: the jobs stay in it */
        struct finish_batch *b = w->batches;
        w->batches = b->next;
        free(b);
    }
    for (size_t i = 0; i < w->ntcache; i++) {
        free(w->tcache[i].name);
        free(w->tcache[i].json);
    }
    free(w->id);
    free(w->msgid_domain);
    free(w);
    if (done)
        done(ud, code);
}

static void
on_queue_closed(void *ud)
{
    struct worker *w = ud;
    uv_handle_t fake = {.data = w};
    on_handle_closed(&fake);
}

static void
on_mailer_closed(void *ud)
{
    on_queue_closed(ud);
}

void
worker_close_all(struct worker *w)
{
    if (w->closing)
        return;
    if (w->flushing || w->nparsing) {
        /* the thread pool is writing (or parsing) tasks we are about to
         * free */
        w->close_after_flush = 1;
        return;
    }
    w->closing = 1;
    /* remaining tasks (a dead Redis): their jobs are safe in Redis */
    while (w->tasks) {
        struct task *t = w->tasks;
        t->w->stopping = 1;
        worker_task_free(t);
    }
    w->open_handles = 9; /* 3 timers, the check, the queue, the mailer,
                            the SPF cache, the IMAP copier, the purge */
    purge_close(w->purge, on_queue_closed, w);
    imapcopy_close(w->imap, on_queue_closed, w);
    spfcache_close(w->spf, on_queue_closed, w);
    uv_close((uv_handle_t *)&w->t_check, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_flush, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_retry, on_handle_closed);
    uv_close((uv_handle_t *)&w->t_grace, on_handle_closed);
    mailer_close(w->mailer, on_mailer_closed, w);
    queue_close(w->q, on_queue_closed, w);
}

static void
on_handback(void *ud, int rc)
{
    struct worker *w = ud;
    if (rc != 0) {
        log_msg(LOG_ERROR,
                "could not hand back jobs: Redis unreachable; they stay in "
                "this worker's processing list",
                NULL);
        w->exit_code = 1;
    }
    w->handback_done = 1;
    worker_close_all(w);
}

void
worker_maybe_finish_stop(struct worker *w)
{
    if (!w->stopping || w->closing || w->handback_done == -1)
        return;
    if (w->ntasks > 0 || w->mcq.head || w->flushing)
        return;
    w->handback_done = -1; /* in progress */
    uv_timer_stop(&w->t_grace);
    queue_handback(w->q, 5000, on_handback, w);
}

static void
on_grace(uv_timer_t *timer)
{
    struct worker *w = timer->data;
    if (!w->grace_over) {
        w->grace_over = 1;
        if (mailer_active(w->mailer))
            log_msg(LOG_WARN,
                    "shutdown grace over: aborting SMTP transactions in "
                    "flight; they are retried later",
                    NULL);
        mailer_abort_all(w->mailer);
        /* give their outcomes a few seconds to be recorded */
        uv_timer_start(&w->t_grace, on_grace, 5000, 0);
        return;
    }
    log_msg(LOG_ERROR, "shutdown: outcomes could not be recorded in time",
            NULL);
    w->exit_code = 1;
    worker_close_all(w);
}

static struct task *
first_gated(struct worker *w)
{
    for (struct task *t = w->tasks; t; t = t->next)
        if (t->gated)
            return t;
    return NULL;
}

void
worker_stop(struct worker *w, void (*done)(void *ud, int code), void *ud)
{
    if (w->stopping) {
        if (!w->grace_over && !w->closing) {
            uv_timer_stop(&w->t_grace);
            uv_timer_start(&w->t_grace, on_grace, 0, 0);
        }
        return;
    }
    w->stopping = 1;
    w->done = done;
    w->done_ud = ud;
    log_msg(LOG_INFO, "stopping: no more takes; finishing jobs in flight",
            NULL);
    queue_stop_taking(w->q);
    bigjob_stop(w->big); /* its job stays in the list: handed back */
    /* Not started yet: leave them in the processing list. */
    struct task *t;
    while ((t = tq_pop(&w->ready)) != NULL)
        worker_task_free(t);
    while ((t = tq_pop(&w->retry)) != NULL)
        worker_task_free(t);
    while ((t = first_gated(w)) != NULL)
        worker_task_free(t); /* waited on a scheme's first login: not started */
    for (t = w->tasks; t; t = t->next)
        if (t->job && t->job->id && t->step == MCW_NONE && !t->routed &&
            !t->has_slot_ever)
            t->abandoned = 1; /* claim or id replacement outstanding */
    uv_timer_start(&w->t_grace, on_grace,
                   (uint64_t)w->s->shutdown_grace_s * 1000, 0);
    worker_maybe_finish_stop(w);
}

int
worker_new(uv_loop_t *loop, const struct settings *s, const char *id,
           struct worker **out, struct herr *e)
{
    struct worker *w = xcalloc(1, sizeof *w);
    w->loop = loop;
    w->s = s;
    w->id = xstrdup(id);
    const char *at = strrchr(s->default_from, '@');
    w->msgid_domain = xstrdup(at ? at + 1 : "localhost");
    int rc = schemes_new(s, &w->schemes, e);
    if (rc == 0)
        rc = mc_open(s->mc, &w->mc, e);
    if (rc != 0) {
        schemes_free(w->schemes);
        free(w->id);
        free(w->msgid_domain);
        free(w);
        return rc;
    }
    w->resolver = resolver_new(s, w->schemes);
    char helo[256];
    if (settings_helo_name(s, helo, sizeof helo))
        log_msg(LOG_INFO, "EHLO name", "name", helo, NULL);
    else
        log_msg(LOG_INFO,
                "EHLO name: each connection's address literal (this host's "
                "name is not fully qualified; HERALD_HELO_NAME sets one)",
                NULL);
    struct mailer_opts mo = {
        .connect_timeout_s = s->connect_timeout_s,
        .step_timeout_s = s->smtp_timeout_s,
        .ca_file = s->ca_file,
        .helo = helo,
        .max_conns = s->concurrency,
        .max_busy = s->concurrency,
    };
    if (mailer_new(loop, &mo, &w->mailer) != 0) {
        mc_close(w->mc);
        resolver_free(w->resolver);
        schemes_free(w->schemes);
        free(w->id);
        free(w->msgid_domain);
        free(w);
        return herr_set(e, HERR_IO, "", "could not set up TLS");
    }
    uv_timer_init(loop, &w->t_flush);
    uv_timer_init(loop, &w->t_retry);
    uv_timer_init(loop, &w->t_grace);
    uv_check_init(loop, &w->t_check);
    w->t_check.data = w;
    uv_check_start(&w->t_check, record_on_check);
    w->t_flush.data = w->t_retry.data = w->t_grace.data = w;
    uv_timer_start(&w->t_retry, on_retry_timer, RETRY_CLAIM_MS, RETRY_CLAIM_MS);
    struct queue_events ev = {
        .job = on_job,
        .oversize = on_oversize,
        .count_local = count_local,
        .room = room,
        .ready = on_ready,
        .ud = w,
    };
    queue_new(loop, s, id, &ev, &w->q);
    w->big = bigjob_new(w->q);
    w->purge = purge_new(loop, s, w->q, id);
    schemes_set_queue(w->schemes, w->q);
    w->senders = senders_new(w->q);
    w->gate = logingate_new(
        w->q, id, (s->connect_timeout_s + 4 * s->smtp_timeout_s) * 1000);
    if (imapcopy_new(loop, s, &w->imap) != 0) {
        log_msg(LOG_FATAL, "cannot start libcurl", NULL);
        exit(1);
    }
    if (spfcache_new(loop, s, w->q, &w->spf, e) != 0) {
        /* a malformed HERALD_DNS or HERALD_SENDER_IPS: fatal at start,
         * like any bad setting */
        log_msg(LOG_FATAL, "cannot start", "field", e->field, "error", e->msg,
                NULL);
        exit(2);
    }
    schemes_poll(w->schemes);
    senders_poll(w->senders);
    *out = w;
    return 0;
}
