/*
 * curllib — libcurl, loaded when the worker makes its first Sent-folder
 * copy (worker/imapcopy.c), the worker's only use of it.
 *
 * Linked in, libcurl and what it brings (GnuTLS, p11-kit, SSH, RTMP,
 * LDAP, Kerberos) cost every worker ~3 MB of resident memory, copies or
 * not; io/pqlib.h says the same of libpq, which shares most of them. So
 * the worker links neither, and calls libcurl through this table, filled
 * by curllib_load() through io/dynlib.h (dlopen of Debian's libcurl4,
 * "libcurl.so.4"; the prototypes are curl.h's, taken with __typeof__).
 * heraldctl, a short-lived command, links libcurl as usual.
 *
 * Include this before any other curl header: it turns off curl.h's
 * type-checking macros, which would otherwise replace the table's
 * curl_easy_setopt member.
 *
 * curllib_load() is safe from any thread and any number of times: 0 when
 * the table is filled, else HERR_IO naming the library and why it could
 * not be loaded.
 */
#ifndef HERALD_CURLLIB_H
#define HERALD_CURLLIB_H

#include "err.h"

#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

#define CURLLIB_SONAME "libcurl.so.4"

#define CURLLIB_FUNCS(X)                                                       \
    X(curl_global_init_mem)                                                    \
    X(curl_easy_init)                                                          \
    X(curl_easy_escape)                                                        \
    X(curl_free)                                                               \
    X(curl_easy_setopt)                                                        \
    X(curl_easy_perform)                                                       \
    X(curl_easy_strerror)                                                      \
    X(curl_easy_cleanup)

struct curllib_api {
#define CURLLIB_MEMBER(f) __typeof__(f) *f;
    CURLLIB_FUNCS(CURLLIB_MEMBER)
#undef CURLLIB_MEMBER
};

/* Filled by curllib_load(); read only after it returned 0. */
extern struct curllib_api curllib;

int curllib_load(struct herr *e);

#endif
