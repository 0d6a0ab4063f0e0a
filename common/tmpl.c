#include "tmpl.h"
#include "util.h"

#include <jansson.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- character rules --------------------------------------------------- */

static int
is_word(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
}

static int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int
tmpl_valid_name(const char *s)
{
    if (s == NULL)
        return 0;
    size_t n = strlen(s);
    if (n == 0 || n > TMPL_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_word(c) && c != '.' && c != '-')
            return 0;
    }
    return 1;
}

/* [A-Za-z0-9_]+(\.[A-Za-z0-9_]+)* */
static int
valid_var(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    int need_word = 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (need_word)
                return 0;
            need_word = 1;
        } else if (is_word(c)) {
            need_word = 0;
        } else {
            return 0;
        }
    }
    return !need_word;
}

/*
 * The first header-unsafe character of s (valid UTF-8): C0 controls, DEL,
 * C1 controls (U+0080..U+009F) and U+2028 / U+2029 — the rule job.c
 * applies to a job's subject. Returns the code point, or -1 when clean;
 * CR and LF are reported as themselves.
 */
static long
first_control(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c < 0x20 || c == 0x7F)
            return c;
        if (c == 0xC2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F)
            return p[i + 1];
        if (c == 0xE2 && i + 2 < n && p[i + 1] == 0x80 &&
            (p[i + 2] == 0xA8 || p[i + 2] == 0xA9))
            return 0x2000 + p[i + 2] - 0x80;
    }
    return -1;
}

static int
control_error(struct herr *e, const char *field, const char *prefix, long cp)
{
    if (cp == '\r' || cp == '\n')
        return herr_set(e, HERR_INVALID, field, "%scontains a line break",
                        prefix);
    return herr_set(e, HERR_INVALID, field,
                    "%scontains a control character (U+%04lX)", prefix, cp);
}

/* ---- the scanner: one pass shared by parse (checks) and render --------- */

/*
 * Called for each piece of a part in order: literal text (var == 0) or a
 * {{name}} (var == 1; raw for {{{name}}}). Returns 0 or an error code
 * (the scan stops and returns it).
 */
struct piece {
    const char *s; /* literal bytes, or the name */
    size_t n;
    int var, raw;
    size_t at; /* byte offset of the opening {{ */
};

typedef int (*piece_cb)(void *arg, const struct piece *p);

static const char *
find2(const char *s, size_t n, char c)
{
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == c && s[i + 1] == c)
            return s + i;
    return NULL;
}

/* 'name' for a message: short printable ASCII only, else "". */
static void
show_name(char *out, size_t outlen, const char *s, size_t n)
{
    out[0] = '\0';
    if (n > 40)
        return;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7F)
            return;
    snprintf(out, outlen, " '%.*s'", (int)n, s);
}

static int
scan(const char *part, const char *s, size_t n, int allow_raw, piece_cb cb,
     void *arg, struct herr *e)
{
    size_t pos = 0;
    while (pos < n) {
        const char *o = find2(s + pos, n - pos, '{');
        size_t open = o ? (size_t)(o - s) : n;
        if (open > pos && cb) {
            struct piece lit = {s + pos, open - pos, 0, 0, pos};
            int rc = cb(arg, &lit);
            if (rc)
                return rc;
        }
        if (o == NULL)
            break;
        int raw = open + 2 < n && s[open + 2] == '{';
        size_t start = open + (raw ? 3 : 2);
        const char *c = find2(s + start, n - start, '}');
        /* A "{{" before the close means this one was never closed. */
        if (c == NULL || find2(s + start, (size_t)(c - s) - start, '{'))
            return herr_set(e, HERR_INVALID, part, "unclosed %s at byte %zu",
                            raw ? "{{{" : "{{", open);
        size_t close = (size_t)(c - s);
        if (raw && (close + 2 >= n || s[close + 2] != '}'))
            return herr_set(e, HERR_INVALID, part,
                            "{{{ at byte %zu is closed by }}, not }}}", open);
        if (raw && !allow_raw)
            return herr_set(e, HERR_INVALID, part,
                            "{{{ at byte %zu: raw {{{ }}} is only allowed in "
                            "html",
                            open);
        size_t a = start, b = close;
        while (a < b && is_space((unsigned char)s[a]))
            a++;
        while (b > a && is_space((unsigned char)s[b - 1]))
            b--;
        if (a == b)
            return herr_set(e, HERR_INVALID, part, "empty %s at byte %zu",
                            raw ? "{{{ }}}" : "{{ }}", open);
        if (!valid_var(s + a, b - a)) {
            char shown[64];
            show_name(shown, sizeof shown, s + a, b - a);
            return herr_set(e, HERR_INVALID, part,
                            "bad name%s at byte %zu (names are letters, "
                            "digits and _, joined by dots)",
                            shown, open);
        }
        if (b - a > TMPL_VAR_MAX)
            return herr_set(e, HERR_INVALID, part,
                            "name at byte %zu is %zu bytes, at most %d", open,
                            b - a, TMPL_VAR_MAX);
        if (cb) {
            struct piece var = {s + a, b - a, 1, raw, open};
            int rc = cb(arg, &var);
            if (rc)
                return rc;
        }
        pos = close + (raw ? 3 : 2);
    }
    return 0;
}

/* ---- parse ------------------------------------------------------------- */

static int
take_part(json_t *root, const char *name, int required, size_t max, char **out,
          struct herr *e)
{
    *out = NULL;
    json_t *v = json_object_get(root, name);
    if (v == NULL) {
        if (required)
            return herr_set(e, HERR_INVALID, name, "is required");
        return 0;
    }
    if (!json_is_string(v))
        return herr_set(e, HERR_INVALID, name, "must be a string");
    size_t n = json_string_length(v);
    if (n > max)
        return herr_set(e, HERR_TOOBIG, name, "is %zu bytes, at most %zu", n,
                        max);
    *out = xstrndup(json_string_value(v), n);
    return 0;
}

int
tmpl_parse(const char *json, size_t len, struct tmpl **out, struct herr *e)
{
    *out = NULL;
    if (len > TMPL_JSON_MAX)
        return herr_set(e, HERR_TOOBIG, "", "template is %zu bytes, at most %u",
                        len, TMPL_JSON_MAX);
    json_error_t jerr;
    json_t *root =
        json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL)
        return herr_set(e, HERR_INVALID, "",
                        "not JSON: %s (line %d, column %d)", jerr.text,
                        jerr.line, jerr.column);
    if (!json_is_object(root)) {
        json_decref(root);
        return herr_set(e, HERR_INVALID, "", "must be a JSON object");
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "subject") && strcmp(key, "text") &&
            strcmp(key, "html")) {
            char shown[64];
            show_name(shown, sizeof shown, key, strlen(key));
            /* The key names the field when it is printable. */
            int rc = herr_set(e, HERR_INVALID, shown[0] ? key : "",
                              "unknown member (only subject, text, html)");
            json_decref(root);
            return rc;
        }
    }
    struct tmpl *t = xcalloc(1, sizeof *t);
    int rc = take_part(root, "subject", 1, TMPL_SUBJECT_MAX, &t->subject, e);
    if (rc == 0)
        rc = take_part(root, "text", 0, TMPL_PART_MAX, &t->text, e);
    if (rc == 0)
        rc = take_part(root, "html", 0, TMPL_PART_MAX, &t->html, e);
    json_decref(root);
    if (rc == 0 && t->text == NULL && t->html == NULL)
        rc = herr_set(e, HERR_INVALID, "text",
                      "text or html is required (or both)");
    if (rc == 0) {
        long cp = first_control(t->subject, strlen(t->subject));
        if (cp >= 0)
            rc = control_error(e, "subject", "", cp);
    }
    if (rc == 0)
        rc = scan("subject", t->subject, strlen(t->subject), 0, NULL, NULL, e);
    if (rc == 0 && t->text)
        rc = scan("text", t->text, strlen(t->text), 0, NULL, NULL, e);
    if (rc == 0 && t->html)
        rc = scan("html", t->html, strlen(t->html), 1, NULL, NULL, e);
    if (rc) {
        tmpl_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void
tmpl_free(struct tmpl *t)
{
    if (t == NULL)
        return;
    free(t->subject);
    free(t->text);
    free(t->html);
    free(t);
}

static int
buf_sink(const char *p, size_t n, void *data)
{
    return buf_append(data, p, n) ? -1 : 0;
}

char *
tmpl_to_json(const struct tmpl *t)
{
    json_t *o = json_object();
    const char *names[3] = {"subject", "text", "html"};
    const char *vals[3] = {t->subject, t->text, t->html};
    for (int i = 0; i < 3; i++) {
        if (vals[i] == NULL)
            continue;
        json_t *s = json_string(vals[i]);
        if (s == NULL) /* not UTF-8: only a template not from tmpl_parse */
            abort();
        json_object_set_new(o, names[i], s);
    }
    struct buf b;
    buf_init(&b, 0);
    if (json_dump_callback(o, buf_sink, &b, JSON_COMPACT | JSON_PRESERVE_ORDER))
        abort(); /* only allocation can fail here, and that aborts first */
    json_decref(o);
    return buf_take(&b, NULL);
}

/* ---- render ------------------------------------------------------------ */

struct render {
    json_t *data;
    const char *part;
    int subject, html;
    struct buf out;
    size_t room; /* bytes this part may still add */
    size_t total_room;
    struct herr *e;
};

/* A real in the shortest %.*g form that reads back to the same double,
 * with ".0" added when it would read as an integer (as jansson does). */
static void
format_real(double d, char *out, size_t outlen)
{
    if (!isfinite(d)) { /* jansson never yields these; be safe */
        snprintf(out, outlen, "null");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, outlen, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    if (strpbrk(out, ".eE") == NULL) {
        size_t l = strlen(out);
        if (l + 2 < outlen)
            memcpy(out + l, ".0", 3);
    }
}

static int
out_of_room(struct render *r, const char *field)
{
    if (r->subject)
        return herr_set(r->e, HERR_TOOBIG, field,
                        "subject: longer than %d bytes after rendering",
                        TMPL_SUBJECT_MAX);
    return herr_set(r->e, HERR_TOOBIG, field,
                    "%s: rendered output over %u bytes in all", r->part,
                    TMPL_OUTPUT_MAX);
}

static int
put(struct render *r, const char *field, const char *s, size_t n)
{
    if (n > r->room)
        return out_of_room(r, field);
    buf_append(&r->out, s, n);
    r->room -= n;
    return 0;
}

static int
put_escaped(struct render *r, const char *field, const char *s, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep;
        switch (s[i]) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            continue;
        }
        int rc = put(r, field, s + run, i - run);
        if (rc == 0)
            rc = put(r, field, rep, strlen(rep));
        if (rc)
            return rc;
        run = i + 1;
    }
    return put(r, field, s + run, n - run);
}

/* Looks up a dotted name in data; *v is the value, or an error. */
static int
lookup(struct render *r, const struct piece *p, const char *field, json_t **v)
{
    char name[TMPL_VAR_MAX + 1];
    memcpy(name, p->s, p->n);
    name[p->n] = '\0';
    json_t *cur = r->data;
    char *save = NULL;
    for (char *k = strtok_r(name, ".", &save); k;
         k = strtok_r(NULL, ".", &save)) {
        if (!json_is_object(cur))
            return herr_set(r->e, HERR_INVALID, field,
                            "missing (data.%.*s is not an object)",
                            (int)(k - name - 1), p->s);
        cur = json_object_get(cur, k);
        if (cur == NULL)
            return herr_set(r->e, HERR_INVALID, field, "missing");
    }
    *v = cur;
    return 0;
}

static int
render_piece(void *arg, const struct piece *p)
{
    struct render *r = arg;
    if (!p->var)
        return put(r, r->part, p->s, p->n);
    char field[HERR_FIELD_MAX];
    snprintf(field, sizeof field, "data.%.*s", (int)p->n, p->s);
    json_t *v = NULL;
    int rc = lookup(r, p, field, &v);
    if (rc)
        return rc;
    char num[64];
    const char *s;
    size_t n;
    switch (json_typeof(v)) {
    case JSON_STRING:
        s = json_string_value(v);
        n = json_string_length(v);
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        s = num;
        n = strlen(num);
        break;
    case JSON_REAL:
        format_real(json_real_value(v), num, sizeof num);
        s = num;
        n = strlen(num);
        break;
    case JSON_TRUE:
        s = "true";
        n = 4;
        break;
    case JSON_FALSE:
        s = "false";
        n = 5;
        break;
    case JSON_NULL:
        s = "";
        n = 0;
        break;
    case JSON_OBJECT:
        return herr_set(r->e, HERR_INVALID, field, "is an object, not a value");
    case JSON_ARRAY:
    default:
        return herr_set(r->e, HERR_INVALID, field, "is an array, not a value");
    }
    if (r->subject) {
        long cp = first_control(s, n);
        if (cp >= 0)
            return control_error(r->e, field, "subject: ", cp);
    }
    if (r->html && !p->raw)
        return put_escaped(r, field, s, n);
    return put(r, field, s, n);
}

/* Renders one part into *out (NULL when the part is absent). */
static int
render_part(struct render *r, const char *part, const char *src, int is_subject,
            int is_html, char **out)
{
    *out = NULL;
    if (src == NULL)
        return 0;
    r->part = part;
    r->subject = is_subject;
    r->html = is_html;
    buf_init(&r->out, 0);
    r->room = is_subject ? TMPL_SUBJECT_MAX : r->total_room;
    if (r->room > r->total_room)
        r->room = r->total_room;
    size_t start_room = r->room;
    int rc = scan(part, src, strlen(src), is_html, render_piece, r, r->e);
    if (rc) {
        buf_free(&r->out);
        return rc;
    }
    r->total_room -= start_room - r->room;
    *out = buf_take(&r->out, NULL);
    return 0;
}

int
tmpl_render(const struct tmpl *t, const char *data_json, char **subject,
            char **text, char **html, struct herr *e)
{
    char *parts[3] = {NULL, NULL, NULL};
    char **outs[3] = {subject, text, html};
    for (int i = 0; i < 3; i++)
        if (outs[i])
            *outs[i] = NULL;
    struct render r;
    memset(&r, 0, sizeof r);
    r.e = e;
    r.total_room = TMPL_OUTPUT_MAX;
    if (data_json) {
        size_t dl = strlen(data_json);
        if (dl > TMPL_DATA_MAX)
            return herr_set(e, HERR_TOOBIG, "data", "is %zu bytes, at most %u",
                            dl, TMPL_DATA_MAX);
        json_error_t jerr;
        r.data = json_loadb(data_json, dl,
                            JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (r.data == NULL)
            return herr_set(e, HERR_INVALID, "data",
                            "not JSON: %s (line %d, column %d)", jerr.text,
                            jerr.line, jerr.column);
        if (!json_is_object(r.data)) {
            json_decref(r.data);
            return herr_set(e, HERR_INVALID, "data", "must be an object");
        }
    } else {
        r.data = json_object();
    }
    int rc = render_part(&r, "subject", t->subject, 1, 0, &parts[0]);
    if (rc == 0)
        rc = render_part(&r, "text", t->text, 0, 0, &parts[1]);
    if (rc == 0)
        rc = render_part(&r, "html", t->html, 0, 1, &parts[2]);
    json_decref(r.data);
    for (int i = 0; i < 3; i++) {
        if (rc == 0 && outs[i])
            *outs[i] = parts[i];
        else
            free(parts[i]);
    }
    return rc;
}
