/*
 * routes — herald-api's requests and answers (SPEC §9), apart from the
 * HTTP server (main.c drives libmicrohttpd): a request in, a response
 * out, through one libherald handle (the calling thread's own).
 *
 *   GET  /healthz                                   no token
 *   GET  /metrics                                   no token
 *   GET  /v1/messages?<§6.2 filters>&cursor&limit&format=csv
 *   GET  /v1/messages/{id}
 *   POST /v1/messages/{id}/resend   body {"to": [...]} optional
 *   GET  /v1/orgs/{org}/accounts/{account}/messages?cursor&limit&format
 *   GET, DELETE /v1/orgs/{org}/suppressions[/{addr}]   501 (not kept yet)
 *   GET  /, /console.js, /console.css               the console (console.h)
 *
 * Every /v1 request needs "Authorization: Bearer <token>" (401 without a
 * valid one, checked in Redis at most every half second per thread: a
 * revoked token stops within a second; herald_token_check).
 * A message outside the token's organisations answers 404 exactly like an
 * unknown id; a resend without the right, 403. Bad parameters or bodies:
 * 400 {"error", "field"}; a known path with another method: 405 (Allow);
 * an unknown path: 404. Redis or the store unreachable: 503.
 */
#ifndef HERALD_API_ROUTES_H
#define HERALD_API_ROUTES_H

#include "herald.h"
#include "metrics.h"
#include "params.h"

#include <stddef.h>

#define API_BODY_MAX 65536 /* bytes of a request body */

struct api_req {
    const char *method, *path; /* path without the query string */
    const char *authorization; /* the header, or NULL */
    const struct api_param *params;
    size_t nparams;
    const char *body; /* NULL or bodylen bytes */
    size_t bodylen;
};

struct api_resp {
    int status;
    const char *content_type; /* static */
    const char *allow;        /* for 405, static */
    /* NULL, or more headers: name, value, ..., NULL (static); a
     * Cache-Control among them replaces the default "no-store" */
    const char *const *headers;
    struct buf body;
};

/* Answers `rq` into `rs` (rs->body initialised by the caller); the route
 * it matched in *route (for metrics). */
void api_handle(struct herald *h, const struct api_req *rq, struct api_resp *rs,
                enum api_route *route);

#endif
