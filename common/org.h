/*
 * org — an organisation's settings (SPEC §7 `heraldctl org set`): its
 * display name and its daily limit on the platform relay (SPEC §5).
 * Pure: no I/O.
 *
 * STORAGE CONTRACT (written by heraldctl / libherald, read by workers and
 * heraldctl queue stats)
 *
 *   <prefix>:orgs          hash   field <org> -> compact JSON below
 *   <prefix>:orgs:version  string integer INCR'd in the same atomic step
 *                                 as every change of the hash (writers use
 *                                 the compare-and-set redis/scheme_cas.lua of
 *                                 common/scheme.h); workers poll it and
 *                                 reload the hash when it moved (missing
 *                                 = 0)
 *
 * The value (members in this order, optional ones absent when unset):
 *   org                string  job_valid_org
 *   name               string  optional, 1-200 bytes UTF-8, no control
 *                              characters
 *   relay_daily_limit  integer optional, 1-SCHEME_LIMIT_MAX: recipients
 *                              per UTC day sent for this org through the
 *                              platform relay (paths "spf" and "relay")
 *   updated_at         string  RFC 3339 UTC
 * Readers ignore unknown members.
 */
#ifndef HERALD_ORG_H
#define HERALD_ORG_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

#define ORG_NAME_MAX 200
#define ORG_JSON_MAX 4096

struct org {
    char *org;
    char *name;                  /* NULL: none */
    long long relay_daily_limit; /* 0: none */
    int64_t updated_at;          /* ms */
};

void org_free(struct org *o);

/* 0, or HERR_INVALID with e->field the member at fault. */
int org_check(const struct org *o, struct herr *e);

/* Compact JSON (layout above). New string. */
char *org_to_json(const struct org *o);

/* Parses a stored value (at most ORG_JSON_MAX bytes); unknown members
 * ignored, known ones type-checked, org_check applied. */
int org_from_json(const char *json, size_t len, struct org **out,
                  struct herr *e);

#endif
