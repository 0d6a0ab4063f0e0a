#include "ctl.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define CTL_ERROR_CELL 60

/* ---- dead list ---- */

/* An entry for --json: the stored object itself; something that is not
 * a JSON object is wrapped as {"unparseable": true, "raw"|"raw_base64"}. */
static json_t *
entry_json(const struct herald_dead *d)
{
    json_t *o = json_loadb(d->raw, d->rawlen, 0, NULL);
    if (json_is_object(o))
        return o;
    json_decref(o);
    o = json_object();
    json_object_set_new(o, "unparseable", json_true());
    json_t *s = json_stringn(d->raw, d->rawlen);
    if (s) {
        json_object_set_new(o, "raw", s);
    } else {
        char *b64 = xmalloc(4 * ((d->rawlen + 2) / 3) + 1);
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)d->raw,
                        (int)d->rawlen);
        json_object_set_new(o, "raw_base64", json_string(b64));
        free(b64);
    }
    return o;
}

int
ctl_dead_list(struct ctl *c, int argc, char **argv)
{
    int json = 0;
    const char *limit = NULL;
    const struct ctl_opt opts[] = {{"--json", 0, NULL, &json},
                                   {"--limit", 1, &limit, NULL},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("dead list", argc, argv, opts, pos, &npos);
    if (code == 0 && npos > 0)
        code = ctl_usage_error("dead list: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    size_t max = 0;
    if (limit) {
        char *end;
        errno = 0;
        long n = strtol(limit, &end, 10);
        if (errno || end == limit || *end || n < 1)
            return ctl_usage_error("--limit: '%s' is not a positive number",
                                   limit);
        max = (size_t)n;
    }
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct herald_dead *v;
    size_t n;
    struct herr e = {{0}, {0}};
    int rc = herald_dead_list(h, max, &v, &n, &e);
    if (rc)
        return ctl_fail("dead list", rc, &e);
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, entry_json(&v[i]));
        char *s = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        if (s == NULL)
            abort();
        puts(s);
        free(s);
    } else if (n == 0) {
        puts("(no dead letters)");
    } else {
        static const char *const heads[] = {"AT", "ID", "REASON", "FIELD",
                                            "ERROR"};
        struct ctl_table t;
        ctl_table_init(&t, 5, heads);
        for (size_t i = 0; i < n; i++) {
            const struct herald_dead *d = &v[i];
            char *row[5];
            if (d->parsed) {
                row[0] = ctl_cell(d->entry.at, 0);
                row[1] = ctl_cell(d->job_id, 0);
                row[2] = ctl_cell(d->entry.reason, 0);
                row[3] = ctl_cell(d->entry.field, 0);
                row[4] = ctl_cell(d->entry.error, CTL_ERROR_CELL);
            } else {
                row[0] = xstrdup("-");
                row[1] = xstrdup("-");
                row[2] = xstrdup("(unparseable)");
                row[3] = xstrdup("-");
                row[4] = ctl_cell(d->raw, CTL_ERROR_CELL);
            }
            ctl_table_add(&t, row);
        }
        ctl_table_print(&t, stdout);
        ctl_table_free(&t);
    }
    herald_dead_free(v, n);
    return CTL_OK;
}

/* ---- dead replay ---- */

struct replay_tally {
    size_t invalid, missing;
};

static void
on_replay(void *arg, const struct herald_replay *r)
{
    struct replay_tally *t = arg;
    /* The id and the error come from the stored entry: escaped. */
    char *id = util_escaped(r->job_id      ? r->job_id
                            : r->requested ? r->requested
                                           : "(no id)");
    if (r->rc == 0) {
        printf("replayed %s to %s\n", id, job_priority_name(r->lane));
        free(id);
        return;
    }
    char buf[HERR_FIELD_MAX + HERR_MSG_MAX + 8];
    herr_format(&r->err, buf, sizeof buf);
    char *why = util_escaped(buf), *field = util_escaped(r->err.field);
    char *msg;
    if (r->rc == HERR_INVALID || r->rc == HERR_TOOBIG) {
        t->invalid++;
        msg = xasprintf("not replayed: %s: invalid job (%s); it stays in "
                        "dead",
                        id, why);
    } else if (r->rc == HERR_NOTFOUND) {
        t->missing++;
        msg = xasprintf("not replayed: %s: %s", id, why);
    } else {
        msg = xasprintf("not replayed: %s: %s", id, why);
    }
    log_msg(LOG_WARN, msg, "id", id, "field", field, NULL);
    free(msg);
    free(why);
    free(field);
    free(id);
}

int
ctl_dead_replay(struct ctl *c, int argc, char **argv)
{
    int all = 0;
    const struct ctl_opt opts[] = {{"--all", 0, NULL, &all},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("dead replay", argc, argv, opts, pos, &npos);
    if (code == 0 && npos == 0 && !all)
        code = ctl_usage_error("dead replay: give job IDs or --all");
    if (code == 0 && npos > 0 && all)
        code = ctl_usage_error("dead replay: give job IDs or --all, not both");
    for (int i = 0; code == 0 && i < npos; i++)
        if (pos[i][0] == '\0' || strlen(pos[i]) > JOB_ID_MAX)
            code = ctl_usage_error("ID: '%s' is not a job id", pos[i]);
    struct herald *h = code ? NULL : ctl_herald(c, &code);
    if (h == NULL) {
        free(pos);
        return code;
    }
    struct replay_tally tally = {0, 0};
    size_t replayed = 0, kept = 0;
    struct herr e = {{0}, {0}};
    int rc = herald_dead_replay(h, all ? NULL : (const char *const *)pos,
                                (size_t)npos, on_replay, &tally, &replayed,
                                &kept, &e);
    free(pos);
    if (rc)
        return ctl_fail("dead replay", rc, &e);
    printf("replayed %zu, not replayed %zu\n", replayed, kept);
    if (tally.missing)
        return CTL_FAIL;
    if (tally.invalid)
        return CTL_USAGE;
    return CTL_OK;
}
