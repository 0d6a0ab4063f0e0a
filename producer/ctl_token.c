/*
 * heraldctl token create|list|revoke — herald-api's bearer tokens (SPEC
 * §9; common/token.h). A new token is printed once; Redis keeps only its
 * SHA-256.
 */
#include "ctl.h"
#include "clock.h"
#include "log.h"
#include "token.h"
#include "util.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

int
ctl_token_create(struct ctl *c, int argc, char **argv)
{
    const char *name = NULL, *role = NULL;
    int resend = 0, code = CTL_OK, only_pos = 0;
    /* --org is repeatable: parsed here */
    const char **orgs = xcalloc((size_t)argc + 1, sizeof *orgs);
    size_t norgs = 0;
    for (int i = 0; i < argc && code == CTL_OK; i++) {
        const char *a = argv[i];
        const char **val = NULL;
        const char *flag = a;
        size_t fl = strcspn(a, "=");
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (only_pos || a[0] != '-') {
            code = ctl_usage_error("token create: unexpected argument '%s'", a);
            break;
        }
        if (strcmp(a, "--resend") == 0) {
            resend = 1;
            continue;
        }
        if (fl == 6 && strncmp(a, "--name", 6) == 0)
            val = &name;
        else if (fl == 6 && strncmp(a, "--role", 6) == 0)
            val = &role;
        else if (fl == 5 && strncmp(a, "--org", 5) == 0)
            val = &orgs[norgs];
        if (val == NULL) {
            code = ctl_usage_error("token create: unknown flag '%.*s' (see "
                                   "heraldctl token create --help)",
                                   (int)fl, flag);
            break;
        }
        if (a[fl] == '=')
            *val = a + fl + 1;
        else if (i + 1 < argc)
            *val = argv[++i];
        else
            code = ctl_usage_error("token create: %.*s needs a value", (int)fl,
                                   flag);
        if (val == &orgs[norgs] && code == CTL_OK)
            norgs++;
    }
    enum token_role r = TOKEN_SUPPORT;
    if (code == CTL_OK && name == NULL)
        code = ctl_usage_error("token create: --name is required");
    if (code == CTL_OK && role == NULL)
        code = ctl_usage_error("token create: --role is required (support or "
                               "app)");
    if (code == CTL_OK && token_role_parse(role, &r) != 0)
        code = ctl_usage_error("--role: '%s' is not support or app", role);
    struct herald *h = code == CTL_OK ? ctl_herald(c, &code) : NULL;
    if (h) {
        char tok[TOKEN_LEN + 1];
        struct herr e = {{0}, {0}};
        int rc = herald_token_create(h, name, r, orgs, norgs, resend, tok, &e);
        if (rc == HERR_EXISTS) {
            code = ctl_usage_error("--name: a token named '%s' exists (revoke "
                                   "it first)",
                                   name);
        } else if (rc == HERR_INVALID) {
            code = ctl_usage_error("--%s: %s", e.field, e.msg);
        } else if (rc) {
            code = ctl_fail("token create", rc, &e);
        } else {
            printf("%s\n", tok);
            fflush(stdout);
            OPENSSL_cleanse(tok, sizeof tok);
        }
    }
    free(orgs);
    return code;
}

int
ctl_token_list(struct ctl *c, int argc, char **argv)
{
    int json = 0;
    const struct ctl_opt opts[] = {{"--json", 0, NULL, &json},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("token list", argc, argv, opts, pos, &npos);
    if (code == 0 && npos > 0)
        code = ctl_usage_error("token list: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct token_rec *v;
    size_t n;
    struct herr e = {{0}, {0}};
    int rc = herald_token_list(h, &v, &n, &e);
    if (rc)
        return ctl_fail("token list", rc, &e);
    if (json) {
        fputc('[', stdout);
        for (size_t i = 0; i < n; i++) {
            char *s = token_rec_dump(&v[i]);
            printf("%s%s", i ? "," : "", s);
            free(s);
        }
        puts("]");
    } else if (n == 0) {
        puts("(no tokens)");
    } else {
        static const char *const heads[] = {"NAME", "ROLE", "ORGS", "RESEND",
                                            "CREATED"};
        struct ctl_table t;
        ctl_table_init(&t, 5, heads);
        for (size_t i = 0; i < n; i++) {
            struct buf orgs;
            buf_init(&orgs, 0);
            for (size_t k = 0; k < v[i].norgs; k++)
                buf_printf(&orgs, "%s%s", k ? "," : "", v[i].orgs[k]);
            char created[32];
            ctl_time(v[i].created_at, created);
            char *row[5] = {
                ctl_cell(v[i].name, 0),
                xstrdup(token_role_name(v[i].role)),
                xstrdup(v[i].norgs ? orgs.p : "(all)"),
                xstrdup(v[i].resend ? "yes" : "no"),
                xstrdup(created),
            };
            buf_free(&orgs);
            ctl_table_add(&t, row);
        }
        ctl_table_print(&t, stdout);
        ctl_table_free(&t);
    }
    herald_tokens_free(v, n);
    return CTL_OK;
}

int
ctl_token_revoke(struct ctl *c, int argc, char **argv)
{
    const struct ctl_opt opts[] = {{NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("token revoke", argc, argv, opts, pos, &npos);
    const char *name = npos == 1 ? pos[0] : NULL;
    if (code == 0 && npos != 1)
        code = ctl_usage_error("token revoke: one NAME");
    struct herald *h = code == 0 ? ctl_herald(c, &code) : NULL;
    if (h) {
        struct herr e = {{0}, {0}};
        int rc = herald_token_revoke(h, name, &e);
        if (rc == HERR_NOTFOUND) {
            char *shown = util_escaped(name);
            log_msg(LOG_ERROR, "no such token", "name", shown, NULL);
            free(shown);
            code = CTL_FAIL;
        } else if (rc) {
            code = ctl_fail("token revoke", rc, &e);
        } else {
            printf("token %s revoked\n", name);
        }
    }
    free(pos);
    return code;
}
