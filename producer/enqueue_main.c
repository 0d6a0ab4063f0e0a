/*
 * herald-enqueue — validates jobs and pushes them onto their lanes
 * (SPEC §1, §3). One JSON job from an argument, a file or stdin, or with
 * --ndjson one job per line, pipelined in batches.
 *
 * Exit: 0 every job enqueued; 2 bad usage or any job rejected (in bulk
 * mode the valid ones are still enqueued); 1 runtime failure (Redis
 * unreachable, unreadable input).
 */
#include "clock.h"
#include "herald.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef HERALD_VERSION
#define HERALD_VERSION "0.0.0"
#endif

enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE = 2 };

#define LINE_CAP                                                               \
    (JOB_MAX_BYTES + 1) /* kept of one line: enough to be                      \
                           rejected as too big by job_parse */
#define BATCH_BYTES (16u * 1024 * 1024)
#define PROGRESS_MS 100

static const char *prog = "herald-enqueue";

static void
usage(FILE *f)
{
    fputs(
        "Usage: herald-enqueue [SETTINGS] 'JSON'\n"
        "       herald-enqueue [SETTINGS] -f FILE | -        (one job)\n"
        "       herald-enqueue [SETTINGS] --ndjson [-f FILE | -]\n"
        "       herald-enqueue --help | --version | --print-config\n\n"
        "Validates a notification job (SPEC §3) exactly as the worker does,\n"
        "assigns an id when it has none, and pushes it onto\n"
        "<prefix>:queue:<priority>. Prints each enqueued job's id on stdout,\n"
        "one per line. With no JSON argument and no -f, the job is read from\n"
        "stdin (when stdin is not a terminal).\n\n"
        "  -f, --file FILE  read from FILE ('-' for stdin)\n"
        "  --ndjson         bulk: one job per line (blank lines skipped),\n"
        "                   pipelined; rejected lines are reported by line\n"
        "                   number and field, the others are enqueued; a\n"
        "                   summary is logged at the end\n"
        "  --print-config   print the effective settings (secrets hidden)\n\n"
        "Exit codes: 0 all enqueued; 2 bad usage or a job rejected (with\n"
        "--ndjson the valid lines are still enqueued); 1 runtime failure\n"
        "(Redis unreachable, input unreadable).\n\n",
        f);
    settings_usage(f);
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int
usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    char *line = util_escaped(msg);
    fprintf(stderr, "%s: %s\n", prog, line);
    free(line);
    free(msg);
    return EX_USAGE;
}

/* ---- progress (bulk mode, stderr a terminal) ---- */

struct progress {
    int on;
    int shown;
    int64_t last_ms;
};

static void
progress_clear(struct progress *p)
{
    if (p->shown) {
        fputs("\r\033[K", stderr);
        p->shown = 0;
    }
}

static void
progress_show(struct progress *p, size_t done, size_t rejected, int force)
{
    if (!p->on)
        return;
    int64_t now = clock_now_ms();
    if (!force && now - p->last_ms < PROGRESS_MS)
        return;
    p->last_ms = now;
    fprintf(stderr, "\r\033[Kenqueued %zu, rejected %zu", done, rejected);
    fflush(stderr);
    p->shown = 1;
}

/* ---- input ---- */

/*
 * Reads one line (without its '\n') into b, keeping at most `cap` bytes
 * (the rest of a longer line is read and dropped). Returns 1 when a line
 * was read, 0 at the end of input.
 */
static int
read_line(FILE *f, struct buf *b, size_t cap)
{
    char tmp[8192];
    size_t t = 0;
    int c, any = 0;
    buf_reset(b);
    while ((c = getc_unlocked(f)) != EOF) {
        any = 1;
        if (c == '\n')
            break;
        if (b->len + t < cap) {
            tmp[t++] = (char)c;
            if (t == sizeof tmp) {
                buf_append(b, tmp, t);
                t = 0;
            }
        }
    }
    if (t)
        buf_append(b, tmp, t);
    return any;
}

static int
blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

/* Reads all of f, keeping at most `cap` bytes (enough for job_parse to
 * reject an oversized job). 0, or HERR_IO. */
static int
read_all(FILE *f, struct buf *b, size_t cap)
{
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (b->len < cap) {
            size_t k = cap - b->len < n ? cap - b->len : n;
            buf_append(b, tmp, k);
        }
    }
    return ferror(f) ? HERR_IO : 0;
}

static FILE *
open_input(const char *file, const char **name)
{
    if (file == NULL || strcmp(file, "-") == 0) {
        *name = "stdin";
        return stdin;
    }
    *name = file;
    return fopen(file, "rb");
}

static void
log_herr(enum log_level lvl, const char *prefix, const struct herr *e,
         const char *line)
{
    char buf[HERR_FIELD_MAX + HERR_MSG_MAX + 8];
    herr_format(e, buf, sizeof buf);
    /* A rejected job's field path can hold any character of its keys. */
    char *what = util_escaped(buf), *field = util_escaped(e->field);
    char *why = util_escaped(e->msg);
    char *msg = xasprintf("%s%s", prefix, what);
    if (line)
        log_msg(lvl, msg, "line", line, "field", field, "error", why, NULL);
    else
        log_msg(lvl, msg, "field", field, "error", why, NULL);
    free(msg);
    free(why);
    free(field);
    free(what);
}

/* ---- one job ---- */

static int
enqueue_one(struct herald *h, const char *json, size_t len)
{
    char id[JOB_ID_MAX + 1];
    struct herr e = {{0}, {0}};
    int rc = herald_enqueue(h, json, len, id, &e);
    if (rc == HERR_INVALID || rc == HERR_TOOBIG) {
        log_herr(LOG_ERROR, "job rejected: ", &e, NULL);
        return EX_USAGE;
    }
    if (rc) {
        log_herr(LOG_ERROR, "", &e, NULL);
        return EX_FAIL;
    }
    puts(id);
    return EX_OK;
}

/* ---- bulk ---- */

struct bulk {
    struct herald *h;
    struct herald_item *items;
    char **lines;
    size_t *lineno;
    struct herald_result *results;
    size_t n, bytes;
    size_t enqueued, rejected, unconfirmed;
    int redis_failed;
    struct herr redis_err;
    struct progress prog;
};

static void
bulk_flush(struct bulk *b)
{
    if (b->n == 0)
        return;
    struct herr e = {{0}, {0}};
    if (herald_enqueue_many(b->h, b->items, b->n, b->results, &e) != 0) {
        b->redis_failed = 1;
        b->redis_err = e;
    }
    for (size_t i = 0; i < b->n; i++) {
        const struct herald_result *r = &b->results[i];
        if (r->rc == 0) {
            puts(r->id);
            b->enqueued++;
        } else if (r->rc == HERR_INVALID || r->rc == HERR_TOOBIG) {
            char ln[32], pre[48];
            snprintf(ln, sizeof ln, "%zu", b->lineno[i]);
            snprintf(pre, sizeof pre, "line %zu: ", b->lineno[i]);
            progress_clear(&b->prog);
            log_herr(LOG_ERROR, pre, &r->err, ln);
            b->rejected++;
        } else {
            b->unconfirmed++;
        }
        free(b->lines[i]);
    }
    fflush(stdout);
    b->n = 0;
    b->bytes = 0;
    progress_show(&b->prog, b->enqueued, b->rejected, 0);
}

static int
enqueue_bulk(struct herald *h, FILE *in, const char *name)
{
    struct bulk b;
    memset(&b, 0, sizeof b);
    b.h = h;
    b.items = xcalloc(HERALD_PIPELINE_MAX, sizeof *b.items);
    b.lines = xcalloc(HERALD_PIPELINE_MAX, sizeof *b.lines);
    b.lineno = xcalloc(HERALD_PIPELINE_MAX, sizeof *b.lineno);
    b.results = xcalloc(HERALD_PIPELINE_MAX, sizeof *b.results);
    b.prog.on = isatty(STDERR_FILENO);
    struct buf line;
    buf_init(&line, 0);
    size_t lineno = 0;
    while (!b.redis_failed && read_line(in, &line, LINE_CAP)) {
        lineno++;
        if (blank(line.p ? line.p : "", line.len))
            continue;
        size_t len;
        char *data = buf_take(&line, &len);
        b.lines[b.n] = data;
        b.items[b.n].json = data;
        b.items[b.n].len = len;
        b.lineno[b.n] = lineno;
        b.n++;
        b.bytes += len;
        if (b.n == HERALD_PIPELINE_MAX || b.bytes >= BATCH_BYTES)
            bulk_flush(&b);
    }
    int read_err = ferror(in) ? errno : 0;
    bulk_flush(&b);
    buf_free(&line);
    free(b.items);
    free(b.lines);
    free(b.lineno);
    free(b.results);
    progress_clear(&b.prog);

    char en[32], rj[32], un[32];
    snprintf(en, sizeof en, "%zu", b.enqueued);
    snprintf(rj, sizeof rj, "%zu", b.rejected);
    snprintf(un, sizeof un, "%zu", b.unconfirmed);
    int code = EX_OK;
    if (b.redis_failed) {
        log_herr(LOG_ERROR, "", &b.redis_err, NULL);
        char *msg = xasprintf("stopped at line %zu: enqueued %zu, rejected "
                              "%zu, not confirmed %zu",
                              lineno, b.enqueued, b.rejected, b.unconfirmed);
        log_msg(LOG_ERROR, msg, "enqueued", en, "rejected", rj, "not_confirmed",
                un, NULL);
        free(msg);
        return EX_FAIL;
    }
    if (read_err) {
        char *msg = xasprintf("reading %s: %s", name, strerror(read_err));
        log_msg(LOG_ERROR, msg, NULL);
        free(msg);
        code = EX_FAIL;
    } else if (b.rejected) {
        code = EX_USAGE;
    }
    char *msg = xasprintf("enqueued %zu, rejected %zu", b.enqueued, b.rejected);
    log_msg(b.rejected || read_err ? LOG_WARN : LOG_INFO, msg, "enqueued", en,
            "rejected", rj, NULL);
    free(msg);
    return code;
}

/* ---- main ---- */

static int
has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], flag) == 0)
            return 1;
    }
    return 0;
}

static int
run(struct settings *s, int argc, char **argv)
{
    const char *file = NULL, *json = NULL;
    int ndjson = 0, print_config = 0, only_pos = 0, from_stdin = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
        } else if (!only_pos && strcmp(a, "--ndjson") == 0) {
            ndjson = 1;
        } else if (!only_pos && strcmp(a, "--print-config") == 0) {
            print_config = 1;
        } else if (!only_pos &&
                   (strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0)) {
            if (i + 1 >= argc)
                return usage_error("%s needs a file name", a);
            if (file || from_stdin)
                return usage_error("%s: only one input", a);
            file = argv[++i];
        } else if (!only_pos && strncmp(a, "--file=", 7) == 0) {
            if (file || from_stdin)
                return usage_error("--file: only one input");
            file = a + 7;
        } else if (!only_pos && strcmp(a, "-") == 0) {
            if (file || from_stdin)
                return usage_error("-: only one input");
            from_stdin = 1;
        } else if (!only_pos && a[0] == '-') {
            return usage_error("unknown flag '%s' (see %s --help)", a, prog);
        } else {
            if (json)
                return usage_error("one job per argument; use --ndjson for "
                                   "many");
            json = a;
        }
    }
    if (print_config) {
        settings_print(s, stdout);
        return EX_OK;
    }
    if (json && (file || from_stdin))
        return usage_error("give the job as an argument or with -f/-, not "
                           "both");
    if (json && ndjson)
        return usage_error("--ndjson reads a file or stdin, not an "
                           "argument");
    if (!json && !file && !from_stdin && isatty(STDIN_FILENO))
        return usage_error("no job given (an argument, -f FILE, or stdin; "
                           "see --help)");

    struct herald *h;
    struct herr e = {{0}, {0}};
    /* Connect lazily: a job that is rejected never needs Redis. */
    int rc = herald_open_ex(s, HERALD_OPEN_LAZY, &h, &e);
    if (rc) {
        log_herr(LOG_ERROR, "", &e, NULL);
        return rc == HERR_INVALID ? EX_USAGE : EX_FAIL;
    }
    int code;
    if (json) {
        code = enqueue_one(h, json, strlen(json));
    } else {
        const char *name;
        FILE *in = open_input(file, &name);
        if (in == NULL) {
            char *msg = xasprintf("cannot open %s: %s", name, strerror(errno));
            log_msg(LOG_ERROR, msg, "file", name, NULL);
            free(msg);
            herald_close(h);
            return EX_FAIL;
        }
        if (ndjson) {
            code = enqueue_bulk(h, in, name);
        } else {
            struct buf b;
            buf_init(&b, 0);
            if (read_all(in, &b, LINE_CAP) != 0) {
                char *msg = xasprintf("reading %s: %s", name, strerror(errno));
                log_msg(LOG_ERROR, msg, NULL);
                free(msg);
                code = EX_FAIL;
            } else {
                code = enqueue_one(h, b.p ? b.p : "", b.len);
            }
            buf_free(&b);
        }
        if (in != stdin)
            fclose(in);
    }
    herald_close(h);
    return code;
}

int
main(int argc, char **argv)
{
    log_init(prog, "info");
    if (has_flag(argc, argv, "--help") || has_flag(argc, argv, "-h")) {
        usage(stdout);
        return EX_OK;
    }
    if (has_flag(argc, argv, "--version")) {
        printf("%s %s\n", prog, HERALD_VERSION);
        return EX_OK;
    }
    struct settings s;
    struct herr e = {{0}, {0}};
    settings_defaults(&s);
    if (settings_load_env(&s, &e) != 0 ||
        settings_load_args(&s, &argc, argv, &e) != 0) {
        char msg[HERR_FIELD_MAX + HERR_MSG_MAX + 8];
        herr_format(&e, msg, sizeof msg);
        settings_free(&s);
        return usage_error("%s", msg);
    }
    log_init(prog, s.log_level);
    int code = run(&s, argc, argv);
    settings_free(&s);
    if (fflush(stdout) != 0 && code == EX_OK)
        code = EX_FAIL;
    return code;
}
