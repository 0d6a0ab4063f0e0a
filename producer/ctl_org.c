/*
 * heraldctl org set|show|list — organisations' settings in <prefix>:orgs
 * (layout: common/org.h; library: herald_org_* in herald.h): a display
 * name and the daily limit on the platform relay (SPEC §5, §7).
 */
#include "ctl.h"
#include "log.h"
#include "util.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* The command-line spelling of an org member named in an error. */
static const char *
flag_of(const char *field)
{
    if (strcmp(field, "name") == 0)
        return "--name";
    if (strcmp(field, "relay_daily_limit") == 0)
        return "--relay-daily-limit";
    if (strcmp(field, "org") == 0)
        return "ORG";
    return field;
}

static int
fail(const char *what, int rc, const struct herr *e)
{
    struct herr f = *e;
    snprintf(f.field, sizeof f.field, "%s", flag_of(e->field));
    return ctl_fail(what, rc, &f);
}

/* Parses "CMD ORG [options]": CTL_OK with *org, or the exit code. */
static int
parse_org(const char *cmd, int argc, char **argv, const struct ctl_opt *opts,
          const char **org)
{
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse(cmd, argc, argv, opts, pos, &npos);
    if (code == CTL_OK && npos == 0)
        code =
            ctl_usage_error("%s: missing ORG (heraldctl %s ORG ...)", cmd, cmd);
    else if (code == CTL_OK && npos > 1)
        code = ctl_usage_error("%s: one ORG only, got also '%s'", cmd, pos[1]);
    *org = code == CTL_OK ? pos[0] : NULL;
    free(pos);
    if (code)
        return code;
    if (!job_valid_org(*org))
        return ctl_usage_error("%s: ORG '%s' is not an organisation "
                               "([A-Za-z0-9._-]{1,64})",
                               cmd, *org);
    return CTL_OK;
}

static char *
limit_text(long long v)
{
    return v ? xasprintf("%lld", v) : xstrdup("none");
}

int
ctl_org_set(struct ctl *c, int argc, char **argv)
{
    const char *name = NULL, *limit = NULL, *org;
    int no_limit = 0;
    const struct ctl_opt opts[] = {
        {"--name", 1, &name, NULL},
        {"--relay-daily-limit", 1, &limit, NULL},
        {"--no-relay-daily-limit", 0, NULL, &no_limit},
        {NULL, 0, NULL, NULL}};
    int code = parse_org("org set", argc, argv, opts, &org);
    if (code)
        return code;
    struct herald_org_patch p = {.name = name,
                                 .clear_relay_daily_limit = no_limit};
    struct herr e = {{0}, {0}};
    if (name == NULL && limit == NULL && !no_limit)
        return ctl_usage_error("org set: nothing to change (give --name, "
                               "--relay-daily-limit or "
                               "--no-relay-daily-limit)");
    if (limit && no_limit)
        return ctl_usage_error("--no-relay-daily-limit: not together with "
                               "--relay-daily-limit '%s'",
                               limit);
    if (limit && scheme_parse_limit(limit, "--relay-daily-limit",
                                    &p.relay_daily_limit, &e))
        return ctl_fail("org set", HERR_INVALID, &e);
    struct org probe = {.org = (char *)org, .name = (char *)name};
    int rc = org_check(&probe, &e);
    if (rc)
        return fail("org set", rc, &e);
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct org *o;
    rc = herald_org_set(h, org, &p, &o, &e);
    if (rc)
        return fail("org set", rc, &e);
    char *id = ctl_cell(o->org, 0), *cell = ctl_cell(o->name, 60);
    char *lim = limit_text(o->relay_daily_limit);
    printf("org %s set: name %s, relay daily limit %s\n", id, cell, lim);
    free(id);
    free(cell);
    free(lim);
    org_free(o);
    return CTL_OK;
}

int
ctl_org_show(struct ctl *c, int argc, char **argv)
{
    const char *org;
    int json = 0;
    const struct ctl_opt opts[] = {{"--json", 0, NULL, &json},
                                   {NULL, 0, NULL, NULL}};
    int code = parse_org("org show", argc, argv, opts, &org);
    if (code)
        return code;
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct org *o;
    struct herr e = {{0}, {0}};
    int rc = herald_org_get(h, org, &o, &e);
    if (rc)
        return fail("org show", rc, &e);
    if (json) {
        char *s = org_to_json(o);
        puts(s);
        free(s);
    } else {
        char at[32];
        ctl_time(o->updated_at, at);
        char *id = ctl_cell(o->org, 0), *cell = ctl_cell(o->name, 0);
        char *lim = limit_text(o->relay_daily_limit);
        printf("org                %s\n"
               "name               %s\n"
               "relay daily limit  %s\n"
               "updated at         %s\n",
               id, cell, lim, at);
        free(id);
        free(cell);
        free(lim);
    }
    org_free(o);
    return CTL_OK;
}

int
ctl_org_list(struct ctl *c, int argc, char **argv)
{
    int json = 0;
    const struct ctl_opt opts[] = {{"--json", 0, NULL, &json},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("org list", argc, argv, opts, pos, &npos);
    if (code == CTL_OK && npos > 0)
        code = ctl_usage_error("org list: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct herald_org_row *rows;
    size_t n;
    struct herr e = {{0}, {0}};
    int rc = herald_org_list(h, &rows, &n, &e);
    if (rc)
        return fail("org list", rc, &e);
    size_t shown = 0;
    for (size_t i = 0; i < n; i++) {
        if (rows[i].org) {
            shown++;
            continue;
        }
        char buf[HERR_FIELD_MAX + HERR_MSG_MAX + 8];
        herr_format(&rows[i].err, buf, sizeof buf);
        char *cell = ctl_cell(rows[i].field, 0), *why = util_escaped(buf);
        char *field = util_escaped(rows[i].err.field);
        char *msg = xasprintf("org %s is stored but invalid: %s", cell, why);
        log_msg(LOG_WARN, msg, "org", cell, "field", field, NULL);
        free(msg);
        free(field);
        free(why);
        free(cell);
    }
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            if (!rows[i].org)
                continue;
            char *s = org_to_json(rows[i].org);
            json_t *o = json_loads(s, 0, NULL);
            free(s);
            if (o)
                json_array_append_new(arr, o);
        }
        char *s = json_dumps(arr, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(arr);
        if (s == NULL)
            abort();
        puts(s);
        free(s);
    } else if (shown == 0) {
        puts("(no orgs)");
    } else {
        static const char *const heads[] = {"ORG", "NAME", "RELAY-DAILY-LIMIT",
                                            "UPDATED-AT"};
        struct ctl_table t;
        ctl_table_init(&t, 4, heads);
        for (size_t i = 0; i < n; i++) {
            const struct org *o = rows[i].org;
            if (o == NULL)
                continue;
            char at[32];
            ctl_time(o->updated_at, at);
            char *row[4] = {ctl_cell(o->org, 0), ctl_cell(o->name, 60),
                            o->relay_daily_limit
                                ? xasprintf("%lld", o->relay_daily_limit)
                                : xstrdup("-"),
                            xstrdup(at)};
            ctl_table_add(&t, row);
        }
        ctl_table_print(&t, stdout);
        ctl_table_free(&t);
    }
    herald_org_rows_free(rows, n);
    return CTL_OK;
}
