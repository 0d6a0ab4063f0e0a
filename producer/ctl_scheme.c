/*
 * heraldctl scheme add|update|list|remove and key rotate — Email Sending
 * Schemes in <prefix>:schemes (layout: common/scheme.h; library:
 * herald_scheme_* in herald.h).
 *
 * Passwords come only from stdin (--password-stdin, one line); a password
 * flag is refused so none ever sits in argv (visible in ps). The clear
 * password lives in one stack buffer, wiped before return, and is handed
 * to libherald only to be sealed.
 */
#include "ctl.h"
#include "log.h"
#include "tzwin.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define PASSWORD_FLAG "--password-stdin"

/* The flag an error field stands for: "smtp_port" -> "--smtp-port",
 * "password" -> "--password-stdin"; setting names stay as they are. */
static void
flag_of(const char *field, char *out, size_t n)
{
    if (strcmp(field, "password") == 0) {
        snprintf(out, n, "%s", PASSWORD_FLAG);
        return;
    }
    int lower = *field != '\0';
    for (const char *p = field; *p; p++)
        if (isupper((unsigned char)*p))
            lower = 0;
    if (!lower) {
        snprintf(out, n, "%s", field);
        return;
    }
    /* "--" + the field, '_' -> '-', cut to fit. */
    size_t k = 0;
    for (const char *p = "--"; *p && k + 1 < n; p++)
        out[k++] = *p;
    for (const char *p = field; *p && k + 1 < n; p++)
        out[k++] = *p == '_' ? '-' : *p;
    out[k] = '\0';
}

/* ctl_fail with the field turned into its flag, and the "no such" /
 * "already exists" answers counted as bad input (exit 2). */
static int
fail(const char *what, int rc, const struct herr *e)
{
    struct herr f = *e;
    if (f.field[0])
        flag_of(e->field, f.field, sizeof f.field);
    if (rc == HERR_NOTFOUND || rc == HERR_EXISTS)
        rc = HERR_INVALID;
    return ctl_fail(what, rc, &f);
}

/* Refuses a password given as a flag, before anything else is parsed. */
static int
refuse_password_flag(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--password") == 0 ||
            strncmp(argv[i], "--password=", 11) == 0 ||
            strcmp(argv[i], "-p") == 0)
            return ctl_usage_error("--password: passwords are not taken on "
                                   "the command line; use --password-stdin");
    }
    return CTL_OK;
}

static void
log_key_warnings(const struct seal_key *k, const char *setting)
{
    unsigned w = seal_key_warnings(k);
    for (unsigned bit = 1; bit && bit <= w; bit <<= 1)
        if (w & bit)
            log_msg(LOG_WARN, seal_warning_str(bit), "field", setting, NULL);
}

/* Loads a key file, reporting problems; CTL_OK with *k, or the exit code. */
static int
load_key(const char *path, const char *setting, struct seal_key **k)
{
    struct herr e = {{0}, {0}};
    int rc = herald_key_load(path, setting, k, &e);
    if (rc)
        return ctl_fail("key", rc, &e);
    log_key_warnings(*k, setting);
    return CTL_OK;
}

/*
 * Reads one line from stdin into pw (SCHEME_PASSWORD_MAX + 2 bytes): the
 * newline ("\n" or "\r\n") is not part of it. On a terminal, echo is off.
 * CTL_OK with *len, or the exit code (the buffer is wiped then).
 */
static int
read_password(char *pw, size_t cap, size_t *len)
{
    struct termios old, quiet;
    int tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        fputs("Password: ", stderr);
    }
    size_t n = 0;
    int nl = 0, err = 0;
    while (n < cap) {
        ssize_t r = read(STDIN_FILENO, pw + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            err = errno;
        if (r <= 0)
            break;
        if (pw[n] == '\n') {
            nl = 1;
            break;
        }
        n++;
    }
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    int code = CTL_OK;
    if (err) {
        char *msg = xasprintf("reading stdin: %s", strerror(err));
        log_msg(LOG_ERROR, msg, "field", PASSWORD_FLAG, NULL);
        free(msg);
        code = CTL_FAIL;
    } else if (!nl && n == cap) {
        code = ctl_usage_error("%s: the password is longer than %d bytes",
                               PASSWORD_FLAG, SCHEME_PASSWORD_MAX);
    } else {
        if (n > 0 && pw[n - 1] == '\r')
            n--;
        if (n == 0)
            code = ctl_usage_error("%s: no password on stdin (an empty line "
                                   "or none)",
                                   PASSWORD_FLAG);
        else if (memchr(pw, '\0', n))
            code = ctl_usage_error("%s: the password contains a NUL byte",
                                   PASSWORD_FLAG);
        else if (n > SCHEME_PASSWORD_MAX)
            code = ctl_usage_error("%s: the password is longer than %d bytes",
                                   PASSWORD_FLAG, SCHEME_PASSWORD_MAX);
    }
    if (code != CTL_OK) {
        OPENSSL_cleanse(pw, cap);
        return code;
    }
    pw[n] = '\0';
    *len = n;
    return CTL_OK;
}

/* ---- add / update ---- */

struct scheme_args {
    const char *org, *email, *smtp_host, *smtp_port, *imap_host, *imap_port;
    const char *username, *tls, *daily_limit, *minute_limit, *on_auth;
    const char *sent_folder, *time_zone;
    int password_stdin, no_imap, no_daily, no_minute, no_folder, no_tz;
};

static int
parse_scheme_args(const char *cmd, int update, int argc, char **argv,
                  struct scheme_args *a, struct scheme_patch *p)
{
    memset(a, 0, sizeof *a);
    scheme_patch_init(p);
    int code = refuse_password_flag(argc, argv);
    if (code)
        return code;
    const struct ctl_opt all[] = {{"--org", 1, &a->org, NULL},
                                  {"--email", 1, &a->email, NULL},
                                  {"--smtp-host", 1, &a->smtp_host, NULL},
                                  {"--smtp-port", 1, &a->smtp_port, NULL},
                                  {"--imap-host", 1, &a->imap_host, NULL},
                                  {"--imap-port", 1, &a->imap_port, NULL},
                                  {"--username", 1, &a->username, NULL},
                                  {PASSWORD_FLAG, 0, NULL, &a->password_stdin},
                                  {"--tls", 1, &a->tls, NULL},
                                  {"--daily-limit", 1, &a->daily_limit, NULL},
                                  {"--minute-limit", 1, &a->minute_limit, NULL},
                                  {"--on-auth-failure", 1, &a->on_auth, NULL},
                                  {"--sent-folder", 1, &a->sent_folder, NULL},
                                  {"--time-zone", 1, &a->time_zone, NULL},
                                  /* update only: */
                                  {"--no-imap", 0, NULL, &a->no_imap},
                                  {"--no-daily-limit", 0, NULL, &a->no_daily},
                                  {"--no-minute-limit", 0, NULL, &a->no_minute},
                                  {"--no-sent-folder", 0, NULL, &a->no_folder},
                                  {"--no-time-zone", 0, NULL, &a->no_tz},
                                  {NULL, 0, NULL, NULL}};
    struct ctl_opt opts[sizeof all / sizeof all[0]];
    size_t k = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (update || all[i].name == NULL || strncmp(all[i].name, "--no-", 5))
            opts[k++] = all[i];
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos;
    code = ctl_parse(cmd, argc, argv, opts, pos, &npos);
    if (code == CTL_OK && npos > 0)
        code = ctl_usage_error("%s: unexpected argument '%s'", cmd, pos[0]);
    free(pos);
    if (code)
        return code;
    if (a->org == NULL)
        return ctl_usage_error("--org: required");
    if (a->email == NULL)
        return ctl_usage_error("--email: required");
    if (!job_valid_org(a->org))
        return ctl_usage_error("--org: '%s' is not an organisation "
                               "([A-Za-z0-9._-]{1,64})",
                               a->org);
    if (!job_valid_email(a->email))
        return ctl_usage_error("--email: '%s' is not an address", a->email);
    if (!update) {
        if (a->smtp_host == NULL)
            return ctl_usage_error("--smtp-host: required");
        if (a->smtp_port == NULL)
            return ctl_usage_error("--smtp-port: required");
        if (a->username == NULL)
            return ctl_usage_error("--username: required");
        if (!a->password_stdin)
            return ctl_usage_error("%s: required (the password is read "
                                   "from stdin, one line)",
                                   PASSWORD_FLAG);
    }
    struct herr e = {{0}, {0}};
    int rc = 0;
    p->smtp_host = a->smtp_host;
    p->imap_host = a->imap_host;
    p->username = a->username;
    p->sent_folder = a->sent_folder;
    if (a->smtp_host && !scheme_valid_host(a->smtp_host))
        return ctl_usage_error("--smtp-host: '%s' is not a host name or IP "
                               "address",
                               a->smtp_host);
    if (a->imap_host && !scheme_valid_host(a->imap_host))
        return ctl_usage_error("--imap-host: '%s' is not a host name or IP "
                               "address",
                               a->imap_host);
    if ((a->smtp_port && (rc = scheme_parse_port(a->smtp_port, "--smtp-port",
                                                 &p->smtp_port, &e))) ||
        (a->imap_port && (rc = scheme_parse_port(a->imap_port, "--imap-port",
                                                 &p->imap_port, &e))) ||
        (a->daily_limit &&
         (rc = scheme_parse_limit(a->daily_limit, "--daily-limit",
                                  &p->daily_limit, &e))) ||
        (a->minute_limit &&
         (rc = scheme_parse_limit(a->minute_limit, "--minute-limit",
                                  &p->minute_limit, &e))))
        return ctl_fail(cmd, rc, &e);
    if (a->tls) {
        enum scheme_tls t;
        if (scheme_tls_parse(a->tls, &t))
            return ctl_usage_error("--tls: '%s' is not one of ssl, starttls, "
                                   "none",
                                   a->tls);
        p->tls = (int)t;
    }
    if (a->on_auth) {
        enum scheme_on_auth o;
        if (scheme_on_auth_parse(a->on_auth, &o))
            return ctl_usage_error("--on-auth-failure: '%s' is not one of "
                                   "fallback, hold",
                                   a->on_auth);
        p->on_auth_failure = (int)o;
    }
    if (a->time_zone) {
        /* The zone must exist here, not only be well formed. */
        struct tzwin *z = NULL;
        if ((rc = tzwin_load(NULL, a->time_zone, &z, &e)) != 0)
            return fail(cmd, rc, &e);
        tzwin_free(z);
        p->time_zone = a->time_zone;
    }
    p->clear_imap = a->no_imap;
    p->clear_daily_limit = a->no_daily;
    p->clear_minute_limit = a->no_minute;
    p->clear_sent_folder = a->no_folder;
    p->clear_time_zone = a->no_tz;
    return CTL_OK;
}

static int
add_or_update(struct ctl *c, int update, int argc, char **argv)
{
    const char *cmd = update ? "scheme update" : "scheme add";
    struct scheme_args a;
    struct scheme_patch p;
    int code = parse_scheme_args(cmd, update, argc, argv, &a, &p);
    if (code)
        return code;
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct seal_key *key = NULL;
    if (a.password_stdin &&
        (code = load_key(c->s.secret_key_file, "HERALD_SECRET_KEY_FILE", &key)))
        return code;
    char pw[SCHEME_PASSWORD_MAX + 2];
    size_t pwlen = 0;
    if (a.password_stdin &&
        (code = read_password(pw, sizeof pw, &pwlen)) != CTL_OK) {
        seal_key_free(key);
        return code;
    }
    struct herr e = {{0}, {0}};
    int rc =
        update
            ? herald_scheme_update(h, a.org, a.email, &p,
                                   a.password_stdin ? pw : NULL, pwlen, key, &e)
            : herald_scheme_add(h, a.org, a.email, &p, pw, pwlen, key, &e);
    OPENSSL_cleanse(pw, sizeof pw);
    seal_key_free(key);
    if (rc)
        return fail(cmd, rc, &e);
    char field[SCHEME_FIELD_MAX];
    scheme_field(field, sizeof field, a.org, a.email);
    printf("scheme %s %s\n", field, update ? "updated" : "added");
    return CTL_OK;
}

int
ctl_scheme_add(struct ctl *c, int argc, char **argv)
{
    return add_or_update(c, 0, argc, argv);
}

int
ctl_scheme_update(struct ctl *c, int argc, char **argv)
{
    return add_or_update(c, 1, argc, argv);
}

/* ---- list ---- */

static char *
host_port(const char *host, int port)
{
    if (host == NULL)
        return xstrdup("-");
    char *cell = ctl_cell(host, 60);
    char *s = strchr(cell, ':') ? xasprintf("[%s]:%d", cell, port)
                                : xasprintf("%s:%d", cell, port);
    free(cell);
    return s;
}

static char *
limit_cell(long long v)
{
    return v ? xasprintf("%lld", v) : xstrdup("-");
}

int
ctl_scheme_list(struct ctl *c, int argc, char **argv)
{
    const char *org = NULL;
    int json = 0;
    const struct ctl_opt opts[] = {{"--org", 1, &org, NULL},
                                   {"--json", 0, NULL, &json},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("scheme list", argc, argv, opts, pos, &npos);
    if (code == CTL_OK && npos > 0)
        code = ctl_usage_error("scheme list: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    if (org && !job_valid_org(org))
        return ctl_usage_error("--org: '%s' is not an organisation "
                               "([A-Za-z0-9._-]{1,64})",
                               org);
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct herald_scheme_row *rows;
    size_t n;
    struct herr e = {{0}, {0}};
    int rc = herald_scheme_list(h, org, &rows, &n, &e);
    if (rc)
        return fail("scheme list", rc, &e);
    for (size_t i = 0; i < n; i++) {
        if (rows[i].scheme)
            continue;
        char buf[HERR_FIELD_MAX + HERR_MSG_MAX + 8];
        herr_format(&rows[i].err, buf, sizeof buf);
        char *cell = ctl_cell(rows[i].field, 0), *why = util_escaped(buf);
        char *field = util_escaped(rows[i].err.field);
        char *msg = xasprintf("scheme %s is stored but invalid: %s", cell, why);
        log_msg(LOG_WARN, msg, "scheme", cell, "field", field, NULL);
        free(msg);
        free(field);
        free(why);
        free(cell);
    }
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            if (!rows[i].scheme)
                continue;
            char *s = scheme_to_json(rows[i].scheme, SCHEME_JSON_PUBLIC);
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
    } else if (n == 0) {
        puts("(no schemes)");
    } else {
        static const char *const heads[] = {
            "ORG",   "EMAIL",    "SMTP",        "TLS",       "IMAP",
            "USER",  "DAILY",    "PER-MINUTE",  "TIME-ZONE", "ON-AUTH-FAILURE",
            "STATE", "STATE-AT", "STATE-REASON"};
        struct ctl_table t;
        ctl_table_init(&t, 13, heads);
        for (size_t i = 0; i < n; i++) {
            const struct scheme *s = rows[i].scheme;
            if (s == NULL)
                continue;
            char at[32];
            ctl_time(s->state_at, at);
            char *row[13] = {ctl_cell(s->org, 0),
                             ctl_cell(s->email, 0),
                             host_port(s->smtp_host, s->smtp_port),
                             xstrdup(scheme_tls_name(s->tls)),
                             host_port(s->imap_host, s->imap_port),
                             ctl_cell(s->username, 40),
                             limit_cell(s->daily_limit),
                             limit_cell(s->minute_limit),
                             ctl_cell(s->time_zone ? s->time_zone : "UTC", 0),
                             xstrdup(scheme_on_auth_name(s->on_auth_failure)),
                             xstrdup(scheme_state_name(s->state)),
                             xstrdup(s->state == SCHEME_STATE_OK ? "-" : at),
                             ctl_cell(s->state_reason, 60)};
            ctl_table_add(&t, row);
        }
        ctl_table_print(&t, stdout);
        ctl_table_free(&t);
    }
    herald_scheme_rows_free(rows, n);
    return CTL_OK;
}

/* ---- remove ---- */

int
ctl_scheme_remove(struct ctl *c, int argc, char **argv)
{
    const char *org = NULL, *email = NULL;
    const struct ctl_opt opts[] = {{"--org", 1, &org, NULL},
                                   {"--email", 1, &email, NULL},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("scheme remove", argc, argv, opts, pos, &npos);
    if (code == CTL_OK && npos > 0)
        code =
            ctl_usage_error("scheme remove: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    if (org == NULL)
        return ctl_usage_error("--org: required");
    if (email == NULL)
        return ctl_usage_error("--email: required");
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct herr e = {{0}, {0}};
    int rc = herald_scheme_remove(h, org, email, &e);
    if (rc)
        return fail("scheme remove", rc, &e);
    char field[SCHEME_FIELD_MAX];
    scheme_field(field, sizeof field, org, email);
    printf("scheme %s removed\n", field);
    return CTL_OK;
}

/* ---- key rotate ---- */

static void
rotate_report(void *arg, const struct herald_rotate *r)
{
    (void)arg;
    if (r->rc == 0)
        return;
    char buf[HERR_FIELD_MAX + HERR_MSG_MAX + 8];
    herr_format(&r->err, buf, sizeof buf);
    char *cell = ctl_cell(r->field, 0), *why = util_escaped(buf);
    char *msg = xasprintf("scheme %s: not re-sealed: %s", cell, why);
    log_msg(LOG_ERROR, msg, "scheme", cell, "error", herr_str(r->rc), NULL);
    free(msg);
    free(why);
    free(cell);
}

int
ctl_key_rotate(struct ctl *c, int argc, char **argv)
{
    const char *new_file = NULL;
    const struct ctl_opt opts[] = {{"--new-key-file", 1, &new_file, NULL},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("key rotate", argc, argv, opts, pos, &npos);
    if (code == CTL_OK && npos > 0)
        code = ctl_usage_error("key rotate: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    if (new_file == NULL)
        return ctl_usage_error("--new-key-file: required");
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct seal_key *old_key = NULL, *new_key = NULL;
    if ((code = load_key(c->s.secret_key_file, "HERALD_SECRET_KEY_FILE",
                         &old_key)))
        return code;
    if ((code = load_key(new_file, "--new-key-file", &new_key))) {
        seal_key_free(old_key);
        return code;
    }
    size_t resealed = 0, already = 0, failed = 0;
    struct herr e = {{0}, {0}};
    int rc = herald_key_rotate(h, old_key, new_key, rotate_report, NULL,
                               &resealed, &already, &failed, &e);
    char id[SEAL_KEYID_LEN + 1];
    snprintf(id, sizeof id, "%s", seal_key_id(new_key));
    seal_key_free(old_key);
    seal_key_free(new_key);
    if (rc)
        return ctl_fail("key rotate", rc, &e);
    printf("re-sealed %zu scheme password%s under key %s (%zu already under "
           "it, %zu failed)\n",
           resealed, resealed == 1 ? "" : "s", id, already, failed);
    if (failed) {
        char *msg = xasprintf("%zu scheme password%s could not be opened with "
                              "the current or the new key; run again once "
                              "fixed (updating those schemes' passwords)",
                              failed, failed == 1 ? "" : "s");
        log_msg(LOG_ERROR, msg, NULL);
        free(msg);
        return CTL_FAIL;
    }
    return CTL_OK;
}
