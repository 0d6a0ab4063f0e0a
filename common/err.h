/*
 * err — the one error convention of Herald.
 *
 * Every function that can fail returns 0 or one of the negative codes
 * below. Details go into an optional caller-supplied `struct herr`: the
 * field at fault (a JSON path such as "to[2]" or a setting name) and a
 * human sentence. Either pointer may be NULL when the caller does not
 * care.
 */
#ifndef HERALD_ERR_H
#define HERALD_ERR_H

#include <stddef.h>

enum {
    HERR_OK = 0,
    HERR_INVALID = -1,  /* bad input: a job, a flag, a setting */
    HERR_TOOBIG = -2,   /* input over a named cap */
    HERR_NOTFOUND = -3, /* no such record / key */
    HERR_IO = -4,       /* a file or socket operation failed */
    HERR_STORE = -5,    /* the Message Center backend failed */
    HERR_REDIS = -6,    /* Redis failed or is unreachable */
    HERR_TEMP = -7,     /* transient failure: try again later */
    HERR_PERM = -8,     /* permanent failure: do not retry */
    HERR_EXISTS = -9,   /* already there (duplicate id, ...) */
};

#define HERR_FIELD_MAX 64
#define HERR_MSG_MAX 256

struct herr {
    char field[HERR_FIELD_MAX]; /* "" when no single field is at fault */
    char msg[HERR_MSG_MAX];     /* the sentence, without the field */
};

/* Returns a static description of a code ("invalid input", ...). */
const char *herr_str(int code);

/*
 * Fills `e` (if not NULL) and returns `code`, so callers can write
 * `return herr_set(e, HERR_INVALID, "to[2]", "not an address");`.
 * `field` may be NULL.
 */
int herr_set(struct herr *e, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "field: msg", or "msg" when no field; writes into out (always NUL-ended). */
void herr_format(const struct herr *e, char *out, size_t outlen);

#endif
