/*
 * heraldctl template set|show|list|remove|render — message templates in
 * <prefix>:templates (common/tmpl.h has the layout and the syntax).
 */
#include "ctl.h"
#include "log.h"
#include "tmpl.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Common start of a command taking one NAME: parses, checks the name.
 * Returns CTL_OK with *name set, or the exit code. */
static int
parse_named(const char *cmd, int argc, char **argv, const struct ctl_opt *opts,
            const char *synopsis, const char **name)
{
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse(cmd, argc, argv, opts, pos, &npos);
    *name = npos == 1 ? pos[0] : NULL;
    const char *extra = npos > 1 ? pos[1] : NULL;
    free(pos);
    if (code)
        return code;
    if (npos == 0)
        return ctl_usage_error("%s: missing NAME (%s)", cmd, synopsis);
    if (extra)
        return ctl_usage_error("%s: unexpected argument '%s' (one NAME)", cmd,
                               extra);
    if (!tmpl_valid_name(*name))
        return ctl_usage_error("NAME: '%s' is not a template name "
                               "([A-Za-z0-9._-]{1,64})",
                               *name);
    return CTL_OK;
}

static int
no_such_template(const char *name)
{
    char *msg = xasprintf("no such template: %s", name);
    log_msg(LOG_ERROR, msg, "template", name, NULL);
    free(msg);
    return CTL_FAIL;
}

/*
 * Reads all of `path` ("-" = stdin), at most `max` bytes. Returns 0 with
 * a new buffer in *out (NUL-terminated, length in *len); on failure
 * prints the reason and returns the exit code: CTL_FAIL when the file
 * cannot be read, CTL_USAGE when it is over `max`.
 */
static int
read_input(const char *flag, const char *path, size_t max, char **out,
           size_t *len)
{
    *out = NULL;
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL) {
        char *msg = xasprintf("cannot open %s: %s", path, strerror(errno));
        log_msg(LOG_ERROR, msg, "field", flag, NULL);
        free(msg);
        return CTL_FAIL;
    }
    struct buf b;
    buf_init(&b, 0);
    char tmp[65536];
    size_t n;
    int over = 0;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (n > max - b.len) {
            over = 1;
            break;
        }
        buf_append(&b, tmp, n);
    }
    int err = ferror(f) ? errno : 0;
    if (f != stdin)
        fclose(f);
    if (err) {
        buf_free(&b);
        char *msg = xasprintf("reading %s: %s", path, strerror(err));
        log_msg(LOG_ERROR, msg, "field", flag, NULL);
        free(msg);
        return CTL_FAIL;
    }
    if (over) {
        buf_free(&b);
        return ctl_usage_error("%s: %s is over %zu bytes", flag, path, max);
    }
    *out = buf_take(&b, len);
    return CTL_OK;
}

/* Adds the contents of `path` as member `key`; 0 or the exit code. */
static int
add_file_part(json_t *o, const char *key, const char *flag, const char *path)
{
    char *data;
    size_t len;
    int code = read_input(flag, path, TMPL_PART_MAX, &data, &len);
    if (code)
        return code;
    if (memchr(data, '\0', len)) {
        free(data);
        return ctl_usage_error("%s: %s contains a NUL byte", flag, path);
    }
    json_t *s = json_stringn(data, len);
    free(data);
    if (s == NULL)
        return ctl_usage_error("%s: %s is not valid UTF-8", flag, path);
    json_object_set_new(o, key, s);
    return CTL_OK;
}

/* ---- template set ---- */

int
ctl_template_set(struct ctl *c, int argc, char **argv)
{
    const char *subject = NULL, *text_file = NULL, *html_file = NULL;
    const char *file = NULL;
    const struct ctl_opt opts[] = {{"--subject", 1, &subject, NULL},
                                   {"--text-file", 1, &text_file, NULL},
                                   {"--html-file", 1, &html_file, NULL},
                                   {"--file", 1, &file, NULL},
                                   {NULL, 0, NULL, NULL}};
    const char *name;
    int code = parse_named("template set", argc, argv, opts,
                           "heraldctl template set NAME --subject S "
                           "[--text-file F] [--html-file F] | --file F",
                           &name);
    if (code)
        return code;
    int parts = subject || text_file || html_file;
    if (file && parts)
        return ctl_usage_error("--file: not together with --subject, "
                               "--text-file or --html-file");
    if (!file && !parts)
        return ctl_usage_error("template set: give --file F, or --subject S "
                               "with --text-file F and/or --html-file F");
    if (!file && subject == NULL)
        return ctl_usage_error("--subject: required with --text-file / "
                               "--html-file");
    if (!file && !text_file && !html_file)
        return ctl_usage_error("--text-file: --text-file or --html-file (or "
                               "both) is required with --subject");
    if (text_file && html_file && strcmp(text_file, "-") == 0 &&
        strcmp(html_file, "-") == 0)
        return ctl_usage_error("--html-file: stdin ('-') can be read once");

    char *json;
    size_t len;
    if (file) {
        if ((code = read_input("--file", file, TMPL_JSON_MAX, &json, &len)))
            return code;
    } else {
        json_t *o = json_object();
        json_t *s = json_string(subject);
        if (s == NULL) {
            json_decref(o);
            return ctl_usage_error("--subject: not valid UTF-8");
        }
        json_object_set_new(o, "subject", s);
        if ((text_file &&
             (code = add_file_part(o, "text", "--text-file", text_file))) ||
            (html_file &&
             (code = add_file_part(o, "html", "--html-file", html_file)))) {
            json_decref(o);
            return code;
        }
        json = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (json == NULL)
            abort(); /* only allocation fails here */
        len = strlen(json);
    }

    struct herald *h = ctl_herald(c, &code);
    if (h == NULL) {
        free(json);
        return code;
    }
    struct herr e = {{0}, {0}};
    int rc = herald_template_set(h, name, json, len, &e);
    free(json);
    if (rc)
        return ctl_fail("template set", rc, &e);
    printf("template %s stored\n", name);
    return CTL_OK;
}

/* ---- template show ---- */

/* The stored or rendered texts are shown escaped (ctl.h). */
static void
show_subject(const char *s)
{
    char *v = util_escaped(s);
    printf("subject: %s\n", v);
    free(v);
}

static void
show_body(const char *label, const char *s)
{
    if (s == NULL)
        return;
    printf("%s (%zu bytes):\n", label, strlen(s));
    ctl_print_text(stdout, s);
}

/* Loads and parses a stored template; 0 or the exit code. */
static int
load(struct herald *h, const char *cmd, const char *name, char **json,
     struct tmpl **t)
{
    struct herr e = {{0}, {0}};
    *t = NULL;
    int rc = herald_template_get(h, name, json, &e);
    if (rc == HERR_NOTFOUND)
        return no_such_template(name);
    if (rc)
        return ctl_fail(cmd, rc, &e);
    rc = tmpl_parse(*json, strlen(*json), t, &e);
    if (rc) {
        /* Not the caller's input: the stored value is broken. */
        char buf[HERR_FIELD_MAX + HERR_MSG_MAX + 8];
        herr_format(&e, buf, sizeof buf);
        char *why = util_escaped(buf), *field = util_escaped(e.field);
        char *msg =
            xasprintf("template %s is stored but invalid: %s", name, why);
        log_msg(LOG_ERROR, msg, "template", name, "field", field, NULL);
        free(msg);
        free(field);
        free(why);
        return CTL_FAIL;
    }
    return CTL_OK;
}

int
ctl_template_show(struct ctl *c, int argc, char **argv)
{
    int json = 0;
    const struct ctl_opt opts[] = {{"--json", 0, NULL, &json},
                                   {NULL, 0, NULL, NULL}};
    const char *name;
    int code = parse_named("template show", argc, argv, opts,
                           "heraldctl template show NAME [--json]", &name);
    if (code)
        return code;
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    if (json) {
        /* As stored, so it can be fed back to "template set --file". */
        char *s;
        struct herr e = {{0}, {0}};
        int rc = herald_template_get(h, name, &s, &e);
        if (rc == HERR_NOTFOUND)
            return no_such_template(name);
        if (rc)
            return ctl_fail("template show", rc, &e);
        puts(s);
        free(s);
        return CTL_OK;
    }
    char *s;
    struct tmpl *t;
    code = load(h, "template show", name, &s, &t);
    if (code) {
        free(s);
        return code;
    }
    printf("template: %s\n", name);
    show_subject(t->subject);
    show_body("text", t->text);
    show_body("html", t->html);
    tmpl_free(t);
    free(s);
    return CTL_OK;
}

/* ---- template list ---- */

int
ctl_template_list(struct ctl *c, int argc, char **argv)
{
    int json = 0;
    const struct ctl_opt opts[] = {{"--json", 0, NULL, &json},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("template list", argc, argv, opts, pos, &npos);
    if (code == 0 && npos > 0)
        code =
            ctl_usage_error("template list: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    char **names;
    size_t n;
    struct herr e = {{0}, {0}};
    int rc = herald_template_list(h, &names, &n, &e);
    if (rc)
        return ctl_fail("template list", rc, &e);
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            /* A field written by hand may not be UTF-8: leave it out of
             * JSON rather than print something that does not parse. */
            json_t *v = json_string(names[i]);
            if (v)
                json_array_append_new(a, v);
        }
        char *s = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        if (s == NULL)
            abort();
        puts(s);
        free(s);
    } else if (n == 0) {
        puts("(no templates)");
    } else {
        for (size_t i = 0; i < n; i++) {
            char *cell = ctl_cell(names[i], 0);
            puts(cell);
            free(cell);
        }
    }
    herald_template_names_free(names, n);
    return CTL_OK;
}

/* ---- template remove ---- */

int
ctl_template_remove(struct ctl *c, int argc, char **argv)
{
    const struct ctl_opt opts[] = {{NULL, 0, NULL, NULL}};
    const char *name;
    int code = parse_named("template remove", argc, argv, opts,
                           "heraldctl template remove NAME", &name);
    if (code)
        return code;
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    struct herr e = {{0}, {0}};
    int rc = herald_template_remove(h, name, &e);
    if (rc == HERR_NOTFOUND)
        return no_such_template(name);
    if (rc)
        return ctl_fail("template remove", rc, &e);
    printf("template %s removed\n", name);
    return CTL_OK;
}

/* ---- template render ---- */

int
ctl_template_render(struct ctl *c, int argc, char **argv)
{
    const char *data = NULL;
    int json = 0;
    const struct ctl_opt opts[] = {{"--data", 1, &data, NULL},
                                   {"--json", 0, NULL, &json},
                                   {NULL, 0, NULL, NULL}};
    const char *name;
    int code =
        parse_named("template render", argc, argv, opts,
                    "heraldctl template render NAME [--data JSON]", &name);
    if (code)
        return code;
    if (data) {
        /* Checked here so the message names the flag, not "data". */
        json_error_t jerr;
        json_t *d = json_loads(data, JSON_DECODE_ANY, &jerr);
        int ok = json_is_object(d);
        json_decref(d);
        if (d == NULL)
            return ctl_usage_error("--data: not JSON: %s (column %d)",
                                   jerr.text, jerr.column);
        if (!ok)
            return ctl_usage_error("--data: must be a JSON object");
    }
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;
    char *stored;
    struct tmpl *t;
    code = load(h, "template render", name, &stored, &t);
    free(stored);
    if (code)
        return code;
    char *subject, *text, *html;
    struct herr e = {{0}, {0}};
    int rc = tmpl_render(t, data, &subject, &text, &html, &e);
    tmpl_free(t);
    if (rc)
        return ctl_fail("template render", rc, &e);
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "subject", json_string(subject));
        if (text)
            json_object_set_new(o, "text", json_string(text));
        if (html)
            json_object_set_new(o, "html", json_string(html));
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (s == NULL)
            abort();
        puts(s);
        free(s);
    } else {
        show_subject(subject);
        show_body("text", text);
        show_body("html", html);
    }
    free(subject);
    free(text);
    free(html);
    return CTL_OK;
}
