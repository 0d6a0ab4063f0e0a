/*
 * params — the query string of herald-api's list requests (SPEC §6.2,
 * §9) as a Message Center filter. Pure: no I/O; fuzzed (fuzz_api_params).
 *
 * Accepted: org, account, status, type, path, to, from, q, since, until
 * (RFC 3339), limit (1..MC_LIST_MAX), cursor, format (json or csv). Each
 * at most once and at most API_PARAM_MAX bytes; anything else is refused
 * naming the parameter (the API answers 400 {"error", "field"}). The
 * values are validated as heraldctl validates its flags.
 */
#ifndef HERALD_API_PARAMS_H
#define HERALD_API_PARAMS_H

#include "err.h"
#include "mc.h"

#include <stddef.h>

#define API_PARAM_MAX 512 /* bytes in one value */
#define API_PARAMS_MAX 32 /* parameters in one request */

struct api_param {
    const char *key, *value; /* value NULL: given without '=' */
};

struct api_list {
    struct mc_filter f; /* strings point into the params given */
    int csv;
};

/* Fills *out from params[0..n). `allowed` limits the keys further (NULL:
 * every one above; the inbox takes only cursor, limit and format). 0 or
 * HERR_INVALID with e->field the parameter at fault. */
int api_params_list(const struct api_param *params, size_t n,
                    const char *const *allowed, struct api_list *out,
                    struct herr *e);

#endif
