/*
 * pqlib — libpq, loaded when the first PostgreSQL store is opened.
 *
 * Only a process whose Message Center is PostgreSQL needs libpq, and
 * libpq brings LDAP, Kerberos and GnuTLS with it: linked in, they cost
 * every worker ~3.6 MB of resident memory (their pages touched at load
 * and by their constructors), on SQLite too. So nothing links libpq;
 * io/mc_pg.c calls it through this table, filled by pqlib_load() through
 * io/dynlib.h (dlopen of Debian's libpq5, "libpq.so.5"). The prototypes
 * are libpq-fe.h's, taken with __typeof__: a call is checked as if
 * linked.
 *
 * pqlib_load() is safe from any thread and any number of times: 0 when
 * the table is filled, else HERR_STORE (field HERALD_MC) naming the
 * library and why it could not be loaded.
 */
#ifndef HERALD_PQLIB_H
#define HERALD_PQLIB_H

#include "err.h"

#include <libpq-fe.h>

#define PQLIB_SONAME "libpq.so.5"

#define PQLIB_FUNCS(X)                                                         \
    X(PQclear)                                                                 \
    X(PQcmdStatus)                                                             \
    X(PQcmdTuples)                                                             \
    X(PQconnectdb)                                                             \
    X(PQconnectdbParams)                                                       \
    X(PQdb)                                                                    \
    X(PQenterPipelineMode)                                                     \
    X(PQerrorMessage)                                                          \
    X(PQexec)                                                                  \
    X(PQexecParams)                                                            \
    X(PQexecPrepared)                                                          \
    X(PQexitPipelineMode)                                                      \
    X(PQfinish)                                                                \
    X(PQflush)                                                                 \
    X(PQgetResult)                                                             \
    X(PQgetisnull)                                                             \
    X(PQgetlength)                                                             \
    X(PQgetvalue)                                                              \
    X(PQhost)                                                                  \
    X(PQntuples)                                                               \
    X(PQparameterStatus)                                                       \
    X(PQpipelineStatus)                                                        \
    X(PQpipelineSync)                                                          \
    X(PQprepare)                                                               \
    X(PQreset)                                                                 \
    X(PQresultErrorField)                                                      \
    X(PQresultStatus)                                                          \
    X(PQsendQueryParams)                                                       \
    X(PQsendQueryPrepared)                                                     \
    X(PQserverVersion)                                                         \
    X(PQsetNoticeProcessor)                                                    \
    X(PQstatus)

struct pqlib_api {
#define PQLIB_MEMBER(f) __typeof__(f) *f;
    PQLIB_FUNCS(PQLIB_MEMBER)
#undef PQLIB_MEMBER
};

/* Filled by pqlib_load(); read only after it returned 0. */
extern struct pqlib_api pqlib;

int pqlib_load(struct herr *e);

#endif
