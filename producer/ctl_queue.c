#include "ctl.h"
#include "clock.h"
#include "log.h"
#include "util.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* A worker is alive when its heartbeat is younger than heartbeat_s. */
static int
alive(const struct ctl *c, const struct herald_worker_stat *w)
{
    return w->registered && w->age_ms >= 0 &&
           w->age_ms <= c->s.heartbeat_s * 1000;
}

static json_t *
time_or_null(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char t[CLOCK_RFC3339_LEN];
    clock_rfc3339(ms, t);
    return json_string(t);
}

/* Text from Redis may not be UTF-8: jansson refuses that, so such a
 * value is given escaped (always UTF-8; its bad bytes as \xHH). */
static json_t *
text(const char *s)
{
    json_t *j = json_string(s);
    if (j == NULL) {
        char *esc = util_escaped(s);
        j = json_string(esc);
        free(esc);
    }
    return j;
}

static json_t *
senders_json(const struct herald_stats *st)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < st->nsenders; i++) {
        const struct herald_sender_stat *x = &st->senders[i];
        json_t *o = json_object();
        json_object_set_new(o, "sender", text(x->sender));
        json_object_set_new(o, "org", x->org ? text(x->org) : json_null());
        if (x->email)
            json_object_set_new(o, "email", text(x->email));
        json_t *ws = json_array();
        for (size_t k = 0; k < x->nwindows; k++) {
            const struct herald_window_stat *w = &x->windows[k];
            json_t *wo = json_object();
            json_object_set_new(wo, "kind",
                                json_string(quota_kind_name(w->kind)));
            json_object_set_new(wo, "used", json_integer(w->used));
            json_object_set_new(wo, "limit", json_integer(w->limit));
            json_object_set_new(wo, "resets_at", time_or_null(w->end_ms));
            if (w->kind == QUOTA_DAY)
                json_object_set_new(wo, "time_zone",
                                    json_string(x->time_zone && !x->zone_error
                                                    ? x->time_zone
                                                    : "UTC"));
            json_array_append_new(ws, wo);
        }
        json_object_set_new(o, "windows", ws);
        json_object_set_new(o, "waiting", json_integer(x->waiting));
        json_object_set_new(o, "paused_until", time_or_null(x->paused_until));
        json_object_set_new(o, "pause_reason",
                            x->pause_reason ? text(x->pause_reason)
                                            : json_null());
        json_array_append_new(arr, o);
    }
    return arr;
}

static void
print_json(const struct ctl *c, const struct herald_stats *st)
{
    char at[CLOCK_RFC3339_LEN];
    clock_rfc3339(st->now_ms, at);
    json_t *o = json_object();
    json_object_set_new(o, "at", json_string(at));
    json_t *q = json_object();
    for (int p = 0; p < JOB_PRIO_COUNT; p++)
        json_object_set_new(q, job_priority_name((enum job_priority)p),
                            json_integer(st->queue[p]));
    json_object_set_new(o, "queues", q);
    json_object_set_new(o, "scheduled", json_integer(st->scheduled));
    json_object_set_new(o, "dead", json_integer(st->dead));
    json_object_set_new(o, "heartbeat_s", json_integer(c->s.heartbeat_s));
    json_t *ws = json_array();
    for (size_t i = 0; i < st->nworkers; i++) {
        const struct herald_worker_stat *w = &st->workers[i];
        json_t *x = json_object();
        json_object_set_new(x, "id", json_string(w->id));
        json_object_set_new(x, "registered", json_boolean(w->registered));
        if (w->heartbeat_ms > 0) {
            char hb[CLOCK_RFC3339_LEN];
            clock_rfc3339(w->heartbeat_ms, hb);
            json_object_set_new(x, "last_heartbeat", json_string(hb));
            json_object_set_new(x, "heartbeat_age_ms", json_integer(w->age_ms));
        } else {
            json_object_set_new(x, "last_heartbeat", json_null());
            json_object_set_new(x, "heartbeat_age_ms", json_null());
        }
        json_object_set_new(x, "alive", json_boolean(alive(c, w)));
        json_object_set_new(x, "processing", json_integer(w->processing));
        json_array_append_new(ws, x);
    }
    json_object_set_new(o, "workers", ws);
    json_object_set_new(o, "senders", senders_json(st));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (s == NULL)
        abort();
    puts(s);
    free(s);
}

static void
print_human(const struct ctl *c, const struct herald_stats *st)
{
    for (int p = 0; p < JOB_PRIO_COUNT; p++)
        printf("queue %-7s %lld\n", job_priority_name((enum job_priority)p),
               st->queue[p]);
    printf("%-13s %lld\n", "scheduled", st->scheduled);
    printf("%-13s %lld\n", "dead", st->dead);
    printf("%-13s %zu\n", "workers", st->nworkers);
    if (st->nworkers == 0)
        return;
    static const char *const heads[] = {"WORKER", "LAST HEARTBEAT", "AGE",
                                        "ALIVE", "PROCESSING"};
    struct ctl_table t;
    ctl_table_init(&t, 5, heads);
    for (size_t i = 0; i < st->nworkers; i++) {
        const struct herald_worker_stat *w = &st->workers[i];
        char hb[32], age[32];
        ctl_time(w->heartbeat_ms, hb);
        if (!w->registered)
            snprintf(hb, sizeof hb, "(not registered)");
        if (w->age_ms >= 0)
            snprintf(age, sizeof age, "%.1fs", (double)w->age_ms / 1000.0);
        else
            snprintf(age, sizeof age, "-");
        char *row[5] = {ctl_cell(w->id, 0), xstrdup(hb), xstrdup(age),
                        xstrdup(alive(c, w) ? "yes" : "no"),
                        xasprintf("%lld", w->processing)};
        ctl_table_add(&t, row);
    }
    putchar('\n');
    ctl_table_print(&t, stdout);
    ctl_table_free(&t);
}

/* The sender's window of `kind`, or NULL. */
static const struct herald_window_stat *
window_of(const struct herald_sender_stat *x, enum quota_kind kind)
{
    for (size_t k = 0; k < x->nwindows; k++)
        if (x->windows[k].kind == kind)
            return &x->windows[k];
    return NULL;
}

/* "3/5", or "-" without a window. */
static char *
used_cell(const struct herald_window_stat *w)
{
    return w ? xasprintf("%lld/%lld", w->used, w->limit) : xstrdup("-");
}

static char *
time_cell(int64_t ms)
{
    char t[32];
    ctl_time(ms, t);
    return xstrdup(t);
}

static void
print_senders(const struct herald_stats *st)
{
    printf("\n%-13s %zu\n", "senders", st->nsenders);
    if (st->nsenders == 0)
        return;
    static const char *const heads[] = {
        "SENDER",       "DAY USED/LIMIT",    "DAY RESETS AT",
        "DAY ZONE",     "MINUTE USED/LIMIT", "WAITING",
        "PAUSED UNTIL", "PAUSE REASON"};
    struct ctl_table t;
    ctl_table_init(&t, 8, heads);
    for (size_t i = 0; i < st->nsenders; i++) {
        const struct herald_sender_stat *x = &st->senders[i];
        const struct herald_window_stat *d = window_of(x, QUOTA_DAY);
        const struct herald_window_stat *m = window_of(x, QUOTA_MINUTE);
        const char *zone = !d                               ? "-"
                           : x->time_zone && !x->zone_error ? x->time_zone
                                                            : "UTC";
        char *row[8] = {ctl_cell(x->sender, 0),
                        used_cell(d),
                        d ? time_cell(d->end_ms) : xstrdup("-"),
                        ctl_cell(zone, 0),
                        used_cell(m),
                        xasprintf("%lld", x->waiting),
                        time_cell(x->paused_until),
                        x->paused_until ? ctl_cell(x->pause_reason, 60)
                                        : xstrdup("-")};
        ctl_table_add(&t, row);
    }
    putchar('\n');
    ctl_table_print(&t, stdout);
    ctl_table_free(&t);
}

/* What the figures leave out, on stderr. */
static void
warn_senders(const struct herald_stats *st)
{
    for (size_t i = 0; i < st->nsenders; i++) {
        const struct herald_sender_stat *x = &st->senders[i];
        if (x->zone_error == NULL)
            continue;
        char *cell = ctl_cell(x->sender, 0), *zone = util_escaped(x->time_zone);
        char *why = util_escaped(x->zone_error);
        char *msg = xasprintf("%s: time zone %s did not load (%s); its day "
                              "is shown as the UTC day",
                              cell, zone, why);
        log_msg(LOG_WARN, msg, "sender", cell, NULL);
        free(msg);
        free(why);
        free(zone);
        free(cell);
    }
    if (st->unreadable) {
        char *msg = xasprintf("%zu quota key%s could not be read (a key of "
                              "another type?); those figures are left out",
                              st->unreadable, st->unreadable == 1 ? "" : "s");
        log_msg(LOG_WARN, msg, NULL);
        free(msg);
    }
    if (st->invalid) {
        char *msg = xasprintf("%zu stored scheme%s or org%s do not parse and "
                              "are not in the sender figures (see scheme "
                              "list, org list)",
                              st->invalid, st->invalid == 1 ? "" : "s",
                              st->invalid == 1 ? "" : "s");
        log_msg(LOG_WARN, msg, NULL);
        free(msg);
    }
}

/* Workers re-read pauses about once a second: jobs made due sooner could
 * meet a pause a worker still remembers and wait for it again. */
#define RESUME_DUE_AFTER_MS 2000

int
ctl_queue_resume(struct ctl *c, int argc, char **argv)
{
    const struct ctl_opt opts[] = {{NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("queue resume", argc, argv, opts, pos, &npos);
    const char *sender = npos > 0 ? pos[0] : NULL;
    if (code == 0 && npos != 1)
        code = ctl_usage_error(npos == 0 ? "queue resume: SENDER is required"
                                         : "queue resume: one SENDER only");
    if (code == 0 && !quota_valid_sender(sender))
        code = ctl_usage_error("queue resume: SENDER '%.80s' is not a sender "
                               "(relay, org:ORG or scheme:ORG/EMAIL)",
                               sender);
    free(pos);
    if (code)
        return code;
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    int lifted;
    long long moved;
    struct herr e = {{0}, {0}};
    int rc = herald_sender_resume(
        h, sender, clock_now_ms() + RESUME_DUE_AFTER_MS, &lifted, &moved, &e);
    if (rc)
        return ctl_fail("queue resume", rc, &e);
    printf("%s: %s; %lld waiting job%s due now\n", sender,
           lifted ? "pause lifted" : "was not paused", moved,
           moved == 1 ? "" : "s");
    return CTL_OK;
}

int
ctl_queue_stats(struct ctl *c, int argc, char **argv)
{
    int json = 0;
    const struct ctl_opt opts[] = {{"--json", 0, NULL, &json},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("queue stats", argc, argv, opts, pos, &npos);
    if (code == 0 && npos > 0)
        code = ctl_usage_error("queue stats: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct herald_stats st;
    struct herr e = {{0}, {0}};
    int rc = herald_queue_stats(h, &st, &e);
    if (rc)
        return ctl_fail("queue stats", rc, &e);
    warn_senders(&st);
    if (json) {
        print_json(c, &st);
    } else {
        print_human(c, &st);
        print_senders(&st);
    }
    herald_stats_free(&st);
    return CTL_OK;
}
