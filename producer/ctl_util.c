#include "ctl.h"
#include "clock.h"
#include "log.h"
#include "util.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct herald *
ctl_herald(struct ctl *c, int *code)
{
    if (c->h)
        return c->h;
    struct herr e = {{0}, {0}};
    int rc = herald_open_ex(&c->s, HERALD_OPEN_LAZY, &c->h, &e);
    if (rc) {
        *code = ctl_fail("open", rc, &e);
        return NULL;
    }
    return c->h;
}

int
ctl_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    /* The message may quote an argument or a stored value. */
    char *line = util_escaped(msg);
    fprintf(stderr, "heraldctl: %s\n", line);
    free(line);
    free(msg);
    return CTL_USAGE;
}

int
ctl_fail(const char *what, int rc, const struct herr *e)
{
    char msg[HERR_FIELD_MAX + HERR_MSG_MAX + 8];
    if (e && (e->field[0] || e->msg[0]))
        herr_format(e, msg, sizeof msg);
    else
        snprintf(msg, sizeof msg, "%s", herr_str(rc));
    if (rc == HERR_INVALID || rc == HERR_TOOBIG)
        return ctl_usage_error("%s", msg);
    /* Library errors may quote what Redis or the store holds. */
    char *cell = util_escaped(msg);
    char *field = util_escaped(e ? e->field : NULL);
    char *line = xasprintf("%s: %s", what, cell);
    log_msg(LOG_ERROR, line, "field", field, "error", herr_str(rc), NULL);
    free(line);
    free(field);
    free(cell);
    return CTL_FAIL;
}

int
ctl_wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    }
    return 0;
}

int
ctl_parse(const char *cmd, int argc, char **argv, const struct ctl_opt *opts,
          char **pos, int *npos)
{
    *npos = 0;
    int only_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            pos[(*npos)++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t klen = eq ? (size_t)(eq - a) : strlen(a);
        const struct ctl_opt *o = NULL;
        for (const struct ctl_opt *p = opts; p->name; p++)
            if (strlen(p->name) == klen && strncmp(p->name, a, klen) == 0)
                o = p;
        if (o == NULL)
            return ctl_usage_error("%s: unknown flag '%.*s' (see heraldctl "
                                   "%s --help)",
                                   cmd, (int)klen, a, cmd);
        if (!o->has_arg) {
            if (eq)
                return ctl_usage_error("%s: %s takes no value", cmd, o->name);
            *o->flag = 1;
            continue;
        }
        if (eq) {
            *o->val = eq + 1;
        } else {
            if (i + 1 >= argc)
                return ctl_usage_error("%s: %s needs a value", cmd, o->name);
            *o->val = argv[++i];
        }
    }
    return CTL_OK;
}

char *
ctl_cell(const char *s, size_t max)
{
    if (s == NULL || *s == '\0')
        return xstrdup("-");
    struct buf b;
    buf_init(&b, 0);
    size_t len = strlen(s);
    if (util_escape(&b, s, len, 0, max ? max : SIZE_MAX, NULL) < len) {
        /* Too long: again one character shorter, for the ellipsis. */
        buf_reset(&b);
        util_escape(&b, s, len, 0, max - 1, NULL);
        buf_puts(&b, "\xe2\x80\xa6"); /* … */
    }
    return buf_take(&b, NULL);
}

void
ctl_print_text(FILE *f, const char *s)
{
    if (s == NULL)
        return;
    struct buf b;
    buf_init(&b, 0);
    util_escape(&b, s, strlen(s), UTIL_ESC_LINES, SIZE_MAX, NULL);
    if (b.len && b.p[b.len - 1] != '\n')
        buf_puts(&b, "\n");
    if (b.len)
        fwrite(b.p, 1, b.len, f);
    buf_free(&b);
}

void
ctl_time(int64_t ms, char out[32])
{
    if (ms <= 0) {
        snprintf(out, 32, "-");
        return;
    }
    char t[CLOCK_RFC3339_LEN];
    clock_rfc3339(ms, t);
    char *dot = strchr(t, '.');
    if (dot)
        snprintf(out, 32, "%.*sZ", (int)(dot - t), t);
    else
        snprintf(out, 32, "%s", t);
}

void
ctl_table_init(struct ctl_table *t, size_t ncols, const char *const *heads)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    t->heads = heads;
}

void
ctl_table_add(struct ctl_table *t, char **row)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = xrealloc(t->cells, t->cap * t->ncols * sizeof *t->cells);
    }
    memcpy(t->cells + t->nrows * t->ncols, row, t->ncols * sizeof *row);
    t->nrows++;
}

/* Display width, counted in code points. */
static size_t
width(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xc0) != 0x80)
            n++;
    return n;
}

void
ctl_table_print(const struct ctl_table *t, FILE *f)
{
    size_t *w = xcalloc(t->ncols, sizeof *w);
    for (size_t c = 0; c < t->ncols; c++)
        w[c] = width(t->heads[c]);
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t x = width(t->cells[r * t->ncols + c]);
            if (x > w[c])
                w[c] = x;
        }
    for (size_t r = 0; r <= t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s =
                r == 0 ? t->heads[c] : t->cells[(r - 1) * t->ncols + c];
            fputs(s, f);
            if (c + 1 < t->ncols)
                fprintf(f, "%*s", (int)(w[c] - width(s) + 2), "");
        }
        fputc('\n', f);
    }
    free(w);
}

void
ctl_table_free(struct ctl_table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}
