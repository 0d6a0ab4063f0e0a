/*
 * console — the support console (SPEC §9 "The console"): one page,
 * api/console/index.html with its console.css and console.js, compiled
 * into herald-api (console.c takes the files in with the assembler's
 * .incbin), so nothing is read from disk or loaded from elsewhere.
 *
 * The page is plain JavaScript over the JSON API of routes.c; every value
 * of a message is set as text, never as markup, and the message's HTML is
 * shown in an <iframe sandbox> that runs no script. API_CONSOLE_CSP is the
 * Content-Security-Policy every console response carries.
 */
#ifndef HERALD_API_CONSOLE_H
#define HERALD_API_CONSOLE_H

#include <stddef.h>

/* Scripts only from the page's origin (none inline); the API only to the
 * page's origin; no form posts, no <base>, no framing of the console.
 * Styles allow 'unsafe-inline' for one reason: the message's HTML, shown
 * in the srcdoc iframe, inherits this policy, and e-mail HTML is styled
 * inline; the console itself has no inline style and inserts no markup.
 * Images: the origin and data: URLs, so a message's remote images (and
 * tracking pixels) are not fetched when support staff look at it. */
#define API_CONSOLE_CSP                                                        \
    "default-src 'none'; script-src 'self'; "                                  \
    "style-src 'self' 'unsafe-inline'; connect-src 'self'; "                   \
    "img-src 'self' data:; frame-src 'self'; frame-ancestors 'none'; "         \
    "base-uri 'none'; form-action 'none'"

/* The asset served at `path` ("/", "/console.js", "/console.css"): 0 with
 * *body (static, *len bytes, not NUL-terminated) and *content_type
 * (static) set, or HERR_NOTFOUND for any other path. */
int api_console_asset(const char *path, const char **body, size_t *len,
                      const char **content_type);

#endif
