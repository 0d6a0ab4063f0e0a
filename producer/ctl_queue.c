#include "ctl.h"
#include "clock.h"
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
    char *s = json_dumps(o, JSON_COMPACT);
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
    if (json)
        print_json(c, &st);
    else
        print_human(c, &st);
    herald_stats_free(&st);
    return CTL_OK;
}
