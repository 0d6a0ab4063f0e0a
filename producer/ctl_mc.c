#include "ctl.h"
#include "clock.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define CTL_SUBJECT_CELL 48

/* ---- mc show ---- */

static void
show_line(const char *label, const char *v)
{
    char *cell = ctl_cell(v, 0);
    printf("%-14s %s\n", label, cell);
    free(cell);
}

static void
show_time(const char *label, int64_t ms)
{
    char t[CLOCK_RFC3339_LEN];
    if (ms > 0)
        clock_rfc3339(ms, t);
    else
        snprintf(t, sizeof t, "-");
    printf("%-14s %s\n", label, t);
}

/* "Name <a@b>, c@d" from a [{"email","name"}] array. */
static char *
addr_list(const char *json)
{
    json_t *a = json ? json_loads(json, 0, NULL) : NULL;
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "");
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        const char *email = json_string_value(json_object_get(v, "email"));
        const char *name = json_string_value(json_object_get(v, "name"));
        if (email == NULL)
            email = json_string_value(v);
        if (i)
            buf_puts(&b, ", ");
        if (name && *name)
            buf_printf(&b, "%s <%s>", name, email ? email : "?");
        else
            buf_puts(&b, email ? email : "?");
    }
    json_decref(a);
    return buf_take(&b, NULL);
}

static void
show_attachments(const char *json)
{
    json_t *a = json ? json_loads(json, 0, NULL) : NULL;
    if (json_array_size(a) == 0) {
        show_line("attachments:", NULL);
        json_decref(a);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "filename"));
        const char *type =
            json_string_value(json_object_get(v, "content_type"));
        char *line = xasprintf(
            "%s (%s, %lld bytes)", name ? name : "?", type ? type : "?",
            (long long)json_integer_value(json_object_get(v, "size")));
        show_line(i ? "" : "attachments:", line);
        free(line);
    }
    json_decref(a);
}

static void
show_recipients(const char *json)
{
    json_t *a = json ? json_loads(json, 0, NULL) : NULL;
    if (json_array_size(a) == 0) {
        json_decref(a);
        return;
    }
    static const char *const heads[] = {"  EMAIL", "KIND", "STATUS", "REPLY"};
    struct ctl_table t;
    ctl_table_init(&t, 4, heads);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        char *email =
            ctl_cell(json_string_value(json_object_get(v, "email")), 0);
        char *row[4] = {
            xasprintf("  %s", email),
            ctl_cell(json_string_value(json_object_get(v, "kind")), 0),
            ctl_cell(json_string_value(json_object_get(v, "status")), 0),
            ctl_cell(json_string_value(json_object_get(v, "reply")), 100),
        };
        free(email);
        ctl_table_add(&t, row);
    }
    json_decref(a);
    printf("recipients:\n");
    ctl_table_print(&t, stdout);
    ctl_table_free(&t);
}

static void
show_human(const struct mc_record *r)
{
    show_line("id:", r->id);
    show_line("status:", mc_status_name(r->status));
    show_line("org:", r->org);
    show_line("account:", r->account);
    show_line("type:", r->type);
    if (r->path) {
        char *p = r->path_reason ? xasprintf("%s (%s)", r->path, r->path_reason)
                                 : xstrdup(r->path);
        show_line("path:", p);
        free(p);
    } else {
        show_line("path:", NULL);
    }
    char *from = r->from_name ? xasprintf("%s <%s>", r->from_name, r->from)
                              : xstrdup(r->from ? r->from : "");
    show_line("from:", from);
    free(from);
    show_line("sender:", r->sender);
    show_line("reply-to:", r->reply_to);
    const char *lists[3] = {r->to_json, r->cc_json, r->bcc_json};
    const char *labels[3] = {"to:", "cc:", "bcc:"};
    for (int i = 0; i < 3; i++) {
        char *l = addr_list(lists[i]);
        show_line(labels[i], l);
        free(l);
    }
    show_line("subject:", r->subject);
    show_time("created:", r->created_at);
    show_time("updated:", r->updated_at);
    show_time("sent:", r->sent_at);
    show_time("next attempt:", r->next_attempt_at);
    printf("%-14s %d\n", "attempts:", r->attempts);
    show_line("last error:", r->last_error);
    show_line("smtp reply:", r->smtp_reply);
    show_attachments(r->attachments_json);
    show_line("meta:", r->meta_json);
    show_recipients(r->recipients_json);
    if (r->html)
        printf("%-14s %zu bytes\n", "html:", strlen(r->html));
    if (r->text) {
        printf("text (%zu bytes):\n", strlen(r->text));
        ctl_print_text(stdout, r->text);
    }
}

int
ctl_mc_show(struct ctl *c, int argc, char **argv)
{
    int json = 0;
    const struct ctl_opt opts[] = {{"--json", 0, NULL, &json},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("mc show", argc, argv, opts, pos, &npos);
    const char *id = npos == 1 ? pos[0] : NULL;
    free(pos);
    if (code)
        return code;
    if (npos == 0)
        return ctl_usage_error("mc show: missing ID (heraldctl mc show ID "
                               "[--json])");
    if (npos > 1)
        return ctl_usage_error("mc show: one ID at a time");
    if (!job_valid_id(id))
        return ctl_usage_error("ID: '%s' is not a job id "
                               "([A-Za-z0-9._:-]{1,128})",
                               id);
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct mc_record *r;
    struct herr e = {{0}, {0}};
    int rc = herald_mc_get(h, id, &r, &e);
    if (rc == HERR_NOTFOUND) {
        char *msg = xasprintf("no such message: %s", id);
        log_msg(LOG_ERROR, msg, "id", id, NULL);
        free(msg);
        return CTL_FAIL;
    }
    if (rc)
        return ctl_fail("mc show", rc, &e);
    if (json) {
        char *s = mc_record_to_json(r);
        puts(s);
        free(s);
    } else {
        show_human(r);
    }
    mc_record_free(r);
    return CTL_OK;
}

/* ---- mc list ---- */

/* "first@x +2" from the to list. */
static char *
to_cell(const char *json)
{
    json_t *a = json ? json_loads(json, 0, NULL) : NULL;
    size_t n = json_array_size(a);
    char *out;
    if (n == 0) {
        out = xstrdup("-");
    } else {
        json_t *v = json_array_get(a, 0);
        const char *email = json_string_value(json_object_get(v, "email"));
        if (email == NULL)
            email = json_string_value(v);
        char *first = ctl_cell(email, 60);
        out = n > 1 ? xasprintf("%s +%zu", first, n - 1) : xstrdup(first);
        free(first);
    }
    json_decref(a);
    return out;
}

static int
parse_time(const char *flag, const char *v, int64_t *ms)
{
    if (v == NULL)
        return 0;
    if (clock_parse_rfc3339(v, ms) != 0)
        return ctl_usage_error("%s: '%s' is not an RFC 3339 time "
                               "(e.g. 2026-11-26T14:58:07Z)",
                               flag, v);
    return 0;
}

int
ctl_mc_list(struct ctl *c, int argc, char **argv)
{
    const char *org = NULL, *account = NULL, *status = NULL, *to = NULL;
    const char *since = NULL, *until = NULL, *limit = NULL;
    const char *type = NULL, *path = NULL, *from = NULL, *q = NULL;
    const char *cursor = NULL;
    int json = 0, csv = 0;
    const struct ctl_opt opts[] = {
        {"--org", 1, &org, NULL},       {"--account", 1, &account, NULL},
        {"--status", 1, &status, NULL}, {"--to", 1, &to, NULL},
        {"--since", 1, &since, NULL},   {"--until", 1, &until, NULL},
        {"--limit", 1, &limit, NULL},   {"--json", 0, NULL, &json},
        {"--type", 1, &type, NULL},     {"--path", 1, &path, NULL},
        {"--from", 1, &from, NULL},     {"--q", 1, &q, NULL},
        {"--cursor", 1, &cursor, NULL}, {"--csv", 0, NULL, &csv},
        {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("mc list", argc, argv, opts, pos, &npos);
    if (code == 0 && npos > 0)
        code = ctl_usage_error("mc list: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;

    struct mc_filter f;
    memset(&f, 0, sizeof f);
    if (org && !job_valid_org(org))
        return ctl_usage_error("--org: '%s' is not an organisation "
                               "([A-Za-z0-9._-]{1,64})",
                               org);
    if (account && !job_valid_org(account))
        return ctl_usage_error("--account: '%s' is not an account "
                               "([A-Za-z0-9._-]{1,64})",
                               account);
    if (to && !job_valid_email(to))
        return ctl_usage_error("--to: '%s' is not an address", to);
    if (from && !job_valid_email(from))
        return ctl_usage_error("--from: '%s' is not an address", from);
    if (type && !job_valid_type(type))
        return ctl_usage_error("--type: '%s' is not a type ([a-z0-9_-]{1,32})",
                               type);
    if (path && strcmp(path, "scheme") && strcmp(path, "spf") &&
        strcmp(path, "relay"))
        return ctl_usage_error("--path: '%s' is not one of scheme, spf, relay",
                               path);
    if (json && csv)
        return ctl_usage_error("--json and --csv: one or the other");
    f.org = org;
    f.account = account;
    f.to = to;
    f.type = type;
    f.path = path;
    f.from = from;
    f.q = q;
    f.cursor = cursor;
    if (status) {
        if (mc_status_parse(status, &f.status) != 0)
            return ctl_usage_error("--status: '%s' is not one of queued, "
                                   "sending, sent, deferred, failed",
                                   status);
        f.has_status = 1;
    }
    if ((code = parse_time("--since", since, &f.since)) ||
        (code = parse_time("--until", until, &f.until)))
        return code;
    if (since && until && f.until < f.since)
        return ctl_usage_error("--until: before --since");
    if (limit) {
        char *end;
        errno = 0;
        long n = strtol(limit, &end, 10);
        if (errno || end == limit || *end || n < 1 || n > MC_LIST_MAX)
            return ctl_usage_error("--limit: '%s' is not a number in 1..%d",
                                   limit, MC_LIST_MAX);
        f.limit = (int)n;
    }

    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct mc_record **v;
    size_t n;
    char *next = NULL;
    struct herr e = {{0}, {0}};
    f.no_bodies = !json; /* the table and CSV show no text or html */
    int rc = herald_mc_list(h, &f, &v, &n, &next, &e);
    if (rc == HERR_INVALID) {
        /* a filter the store refused (q, cursor): the caller's input */
        char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&e, why, sizeof why);
        return ctl_usage_error("--%s", why);
    }
    if (rc)
        return ctl_fail("mc list", rc, &e);
    if (csv) {
        struct buf b;
        buf_init(&b, 0);
        mc_csv_header(&b);
        for (size_t i = 0; i < n; i++)
            mc_csv_row(&b, v[i]);
        fwrite(b.p, 1, b.len, stdout);
        buf_free(&b);
    } else if (json) {
        fputc('[', stdout);
        for (size_t i = 0; i < n; i++) {
            char *s = mc_record_to_json(v[i]);
            if (i)
                fputc(',', stdout);
            fputs(s, stdout);
            free(s);
        }
        fputs("]\n", stdout);
    } else if (n == 0) {
        puts("(no messages)");
    } else {
        static const char *const heads[] = {"CREATED", "ID",      "STATUS",
                                            "ORG",     "ACCOUNT", "PATH",
                                            "TO",      "SUBJECT"};
        struct ctl_table t;
        ctl_table_init(&t, 8, heads);
        for (size_t i = 0; i < n; i++) {
            char created[32];
            ctl_time(v[i]->created_at, created);
            char *row[8] = {
                xstrdup(created),
                ctl_cell(v[i]->id, 0),
                xstrdup(mc_status_name(v[i]->status)),
                ctl_cell(v[i]->org, 0),
                ctl_cell(v[i]->account, 0),
                ctl_cell(v[i]->path, 0),
                to_cell(v[i]->to_json),
                ctl_cell(v[i]->subject, CTL_SUBJECT_CELL),
            };
            ctl_table_add(&t, row);
        }
        ctl_table_print(&t, stdout);
        ctl_table_free(&t);
        if (next)
            printf("(more: the next page is --cursor %s)\n", next);
    }
    if (next && (json || csv))
        log_msg(LOG_INFO, "more results: the next page is --cursor",
                "next_cursor", next, NULL);
    free(next);
    mc_records_free(v, n);
    return CTL_OK;
}

int
ctl_mc_resend(struct ctl *c, int argc, char **argv)
{
    /* --to is repeatable: parsed here rather than by ctl_parse */
    const char **to = xcalloc((size_t)argc + 1, sizeof *to);
    size_t nto = 0;
    const char *id = NULL;
    int code = CTL_OK, only_pos = 0;
    for (int i = 0; i < argc && code == CTL_OK; i++) {
        const char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
        } else if (!only_pos && strcmp(a, "--to") == 0) {
            if (i + 1 >= argc)
                code = ctl_usage_error("mc resend: --to needs a value");
            else
                to[nto++] = argv[++i];
        } else if (!only_pos && strncmp(a, "--to=", 5) == 0) {
            to[nto++] = a + 5;
        } else if (!only_pos && a[0] == '-') {
            code = ctl_usage_error("mc resend: unknown flag '%s' (see "
                                   "heraldctl mc resend --help)",
                                   a);
        } else if (id) {
            code = ctl_usage_error("mc resend: one ID only ('%s')", a);
        } else {
            id = a;
        }
    }
    if (code == CTL_OK && id == NULL)
        code = ctl_usage_error("mc resend: which message? (an ID)");
    if (code == CTL_OK && !job_valid_id(id))
        code = ctl_usage_error("mc resend: '%s' is not a job id", id);
    for (size_t i = 0; code == CTL_OK && i < nto; i++)
        if (!job_valid_email(to[i]))
            code = ctl_usage_error("--to: '%s' is not an address", to[i]);
    if (code == CTL_OK && nto > JOB_TO_MAX)
        code = ctl_usage_error("--to: at most %d addresses", JOB_TO_MAX);
    struct herald *h = code == CTL_OK ? ctl_herald(c, &code) : NULL;
    if (h) {
        char new_id[JOB_ID_MAX + 1];
        struct herr e = {{0}, {0}};
        int rc = herald_mc_resend(h, id, to, nto, new_id, &e);
        if (rc == HERR_NOTFOUND) {
            char *shown = util_escaped(id);
            log_msg(LOG_ERROR, "no such message", "id", shown, NULL);
            free(shown);
            code = CTL_FAIL;
        } else if (rc) {
            code = ctl_fail("mc resend", rc, &e);
        } else {
            printf("%s\n", new_id);
        }
    }
    free(to);
    return code;
}

int
ctl_mc_purge(struct ctl *c, int argc, char **argv)
{
    int dry = 0;
    const struct ctl_opt opts[] = {{"--dry-run", 0, NULL, &dry},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("mc purge", argc, argv, opts, pos, &npos);
    if (code == 0 && npos > 0)
        code = ctl_usage_error("mc purge: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    const struct settings *s = &c->s;
    if (s->mc_retention_days == 0 && s->mc_body_days == 0) {
        puts("nothing to purge: HERALD_MC_RETENTION_DAYS and "
             "HERALD_MC_BODY_DAYS are 0 (keep forever)");
        return CTL_OK;
    }
    struct mc_purge_result res;
    struct herr e = {{0}, {0}};
    int rc = herald_mc_purge(h, dry, &res, &e);
    if (rc)
        return ctl_fail("mc purge", rc, &e);
    printf("%s %lld record%s (older than %ld days), %s the body of %lld "
           "more (older than %ld days)\n",
           dry ? "would remove" : "removed", res.records,
           res.records == 1 ? "" : "s", s->mc_retention_days,
           dry ? "would clear" : "cleared", res.bodies, s->mc_body_days);
    return CTL_OK;
}

/* ---- mc migrate, mc import ---- */

int
ctl_mc_migrate(struct ctl *c, int argc, char **argv)
{
    const struct ctl_opt opts[] = {{NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("mc migrate", argc, argv, opts, pos, &npos);
    if (code == 0 && npos > 0)
        code = ctl_usage_error("mc migrate: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    int version = 0, before = -1;
    struct herr e = {{0}, {0}};
    int rc = herald_mc_migrate(h, &version, &before, &e);
    if (rc)
        return ctl_fail("mc migrate", rc, &e);
    char store[512];
    herald_redact_url(c->s.mc, store, sizeof store);
    char *shown = util_escaped(store);
    if (before == 0)
        printf("created the Message Center schema, version %d (%s)\n", version,
               shown);
    else if (before > 0 && before < version)
        printf("upgraded the Message Center schema from version %d to %d "
               "(%s)\n",
               before, version, shown);
    else
        printf("the Message Center schema is up to date, version %d (%s)\n",
               version, shown);
    free(shown);
    return CTL_OK;
}

int
ctl_mc_import(struct ctl *c, int argc, char **argv)
{
    const char *from = NULL;
    const struct ctl_opt opts[] = {{"--from", 1, &from, NULL},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("mc import", argc, argv, opts, pos, &npos);
    if (code == 0 && npos > 0)
        code = ctl_usage_error("mc import: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    if (from == NULL || *from == '\0')
        return ctl_usage_error("mc import: --from STORE-URL is required "
                               "(e.g. --from sqlite:///var/mc.db)");
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct mc_import_result res;
    struct herr e = {{0}, {0}};
    int rc = herald_mc_import(h, from, &res, &e);
    char src[512];
    herald_redact_url(from, src, sizeof src);
    char *shown = util_escaped(src);
    if (rc == 0)
        printf("copied %lld record%s, skipped %lld already there (from %s)\n",
               res.copied, res.copied == 1 ? "" : "s", res.skipped, shown);
    else if (res.copied || res.skipped)
        printf("copied %lld record%s, skipped %lld already there before the "
               "failure (from %s)\n",
               res.copied, res.copied == 1 ? "" : "s", res.skipped, shown);
    free(shown);
    if (rc == HERR_INVALID && strcmp(e.field, "from") == 0) {
        char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&e, why, sizeof why);
        return ctl_usage_error("--%s", why);
    }
    return rc ? ctl_fail("mc import", rc, &e) : CTL_OK;
}
