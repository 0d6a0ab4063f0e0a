/*
 * ctl — the pieces shared by heraldctl's commands (producer/ctl_*.c):
 * a small long-option parser, error reporting with the exit codes of
 * SPEC §1, and an aligned text table.
 *
 * Exit codes: CTL_OK (0) success, CTL_FAIL (1) runtime failure (Redis,
 * the store, an unknown id), CTL_USAGE (2) bad usage or bad input.
 * Usage errors are one plain line on stderr ("heraldctl: --status: ...");
 * runtime failures are JSON log lines (common/log.h).
 */
#ifndef HERALD_CTL_H
#define HERALD_CTL_H

#include "herald.h"
#include "settings.h"

#include <stddef.h>
#include <stdio.h>

enum { CTL_OK = 0, CTL_FAIL = 1, CTL_USAGE = 2 };

struct ctl {
    struct settings s;
    struct herald *h; /* opened lazily by ctl_herald() */
};

/* The handle (opened with HERALD_OPEN_LAZY on first call); NULL with
 * the failure reported (then exit CTL_USAGE or CTL_FAIL, see *code). */
struct herald *ctl_herald(struct ctl *c, int *code);

/* One option of a command. `has_arg`: the option takes a value, stored
 * in *val (borrowed from argv); otherwise *flag is set to 1. */
struct ctl_opt {
    const char *name; /* "--status" */
    int has_arg;
    const char **val;
    int *flag;
};

/*
 * Parses argv[0..argc) (the words after the command name) against
 * `opts` (ending with a zero entry): "--name value", "--name=value",
 * flags, "--" ending options. Positional words are stored in pos[]
 * (caller-allocated, argc entries) and counted in *npos. Returns CTL_OK,
 * or CTL_USAGE after printing which option is at fault.
 */
int ctl_parse(const char *cmd, int argc, char **argv,
              const struct ctl_opt *opts, char **pos, int *npos);

/* 1 when argv[0..argc) holds "--help" or "-h" before any "--". */
int ctl_wants_help(int argc, char **argv);

/* Prints "heraldctl: <msg>" on stderr and returns CTL_USAGE. */
int ctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Reports a failed library call: HERR_INVALID / HERR_TOOBIG as a usage
 * error (CTL_USAGE), anything else as an error log line (CTL_FAIL).
 * `what` prefixes the message ("mc list").
 */
int ctl_fail(const char *what, int rc, const struct herr *e);

/*
 * Human output never carries a value as it came (from a job, Redis, the
 * Message Center, DNS or a server): it goes through util_escape, so
 * control characters, C1 controls, bidirectional controls and bytes that
 * are not UTF-8 show as \x1b, \u009b, \u202e, \xff. ctl_cell for a table
 * cell or a "label: value" line, ctl_print_text for a body, util_escaped
 * for a value quoted inside a sentence (a printed line, a log message).
 * --json output is left exact.
 *
 * ctl_cell: a copy of `s` fit for one table cell or one line, escaped, and
 * cut to `max` characters (UTF-8 code points, an escape never split) with
 * "…" when longer (max 0: no cut). NULL or "" gives "-". New string.
 */
char *ctl_cell(const char *s, size_t max);

/*
 * Prints a multi-line text (a message body, a template part) on f,
 * escaped like ctl_cell except that its line breaks (LF, CR LF) stay line
 * breaks, and ending with a newline. NULL prints nothing.
 */
void ctl_print_text(FILE *f, const char *s);

/* RFC 3339 without milliseconds ("2026-11-26T14:58:07Z"); "-" for 0. */
void ctl_time(int64_t ms, char out[32]);

/* An aligned table: columns separated by two spaces, a header row. */
struct ctl_table {
    size_t ncols;
    const char *const *heads;
    char **cells; /* row-major, owned */
    size_t nrows, cap;
};

void ctl_table_init(struct ctl_table *t, size_t ncols,
                    const char *const *heads);
/* Appends one row; takes ownership of the ncols strings in `row`. */
void ctl_table_add(struct ctl_table *t, char **row);
void ctl_table_print(const struct ctl_table *t, FILE *f);
void ctl_table_free(struct ctl_table *t);

/* The commands (argv starts after "mc show", etc.). */
int ctl_mc_show(struct ctl *c, int argc, char **argv);
int ctl_mc_list(struct ctl *c, int argc, char **argv);
int ctl_mc_resend(struct ctl *c, int argc, char **argv);
int ctl_mc_purge(struct ctl *c, int argc, char **argv);
int ctl_mc_migrate(struct ctl *c, int argc, char **argv);
int ctl_mc_import(struct ctl *c, int argc, char **argv);
int ctl_token_create(struct ctl *c, int argc, char **argv);
int ctl_token_list(struct ctl *c, int argc, char **argv);
int ctl_token_revoke(struct ctl *c, int argc, char **argv);
int ctl_queue_stats(struct ctl *c, int argc, char **argv);
int ctl_queue_resume(struct ctl *c, int argc, char **argv);
int ctl_dead_list(struct ctl *c, int argc, char **argv);
int ctl_dead_replay(struct ctl *c, int argc, char **argv);
int ctl_template_set(struct ctl *c, int argc, char **argv);
int ctl_template_show(struct ctl *c, int argc, char **argv);
int ctl_template_list(struct ctl *c, int argc, char **argv);
int ctl_template_remove(struct ctl *c, int argc, char **argv);
int ctl_template_render(struct ctl *c, int argc, char **argv);
int ctl_scheme_add(struct ctl *c, int argc, char **argv);
int ctl_scheme_update(struct ctl *c, int argc, char **argv);
int ctl_scheme_list(struct ctl *c, int argc, char **argv);
int ctl_scheme_remove(struct ctl *c, int argc, char **argv);
int ctl_scheme_test(struct ctl *c, int argc, char **argv);
int ctl_key_rotate(struct ctl *c, int argc, char **argv);
int ctl_spf_check(struct ctl *c, int argc, char **argv);
int ctl_org_set(struct ctl *c, int argc, char **argv);
int ctl_org_show(struct ctl *c, int argc, char **argv);
int ctl_org_list(struct ctl *c, int argc, char **argv);

#endif
