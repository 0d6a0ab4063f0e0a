/*
 * mc_store — the Message Center store (common/mc.h): mc_open picks the
 * backend by the URL's scheme (io/mc_sqlite.c, io/mc_pg.c), every write
 * passes the checks of common/mc.c first, and mc_import copies one store
 * into another.
 */
#include "mc.h"
#include "clock.h"
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mc {
    const struct mc_backend *be;
    void *state;
};

static const struct mc_backend *const backends[] = {
    &mc_backend_sqlite,
    &mc_backend_pg,
    &mc_backend_postgres,
};

/* mc_sqlite.c's SCHEMA_VERSION: that backend does not report it (no
 * `schema` entry), and a store it opened is at this version. */
#define MC_SQLITE_SCHEMA_VERSION 3

int
mc_open(const char *url, struct mc **out, struct herr *e)
{
    *out = NULL;
    if (url == NULL || url[0] == '\0')
        return herr_set(e, HERR_INVALID, "HERALD_MC",
                        "empty store URL; expected sqlite://PATH or "
                        "postgresql://...");
    const char *sep = strstr(url, "://");
    if (sep == NULL)
        return herr_set(e, HERR_INVALID, "HERALD_MC",
                        "\"%s\": expected SCHEME://..., e.g. "
                        "sqlite://./var/mc.db",
                        url);
    size_t slen = (size_t)(sep - url);
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        const struct mc_backend *be = backends[i];
        if (strlen(be->scheme) != slen || strncmp(url, be->scheme, slen) != 0)
            continue;
        void *state = NULL;
        int rc = be->open(sep + 3, &state, e);
        if (rc != 0)
            return rc;
        struct mc *m = xmalloc(sizeof *m);
        m->be = be;
        m->state = state;
        *out = m;
        return 0;
    }
    return herr_set(e, HERR_INVALID, "HERALD_MC",
                    "unknown store scheme \"%.*s\"; expected sqlite://PATH "
                    "or postgresql://...",
                    (int)(slen > 32 ? 32 : slen), url);
}

void
mc_close(struct mc *m)
{
    if (m == NULL)
        return;
    m->be->close(m->state);
    free(m);
}

int
mc_batch_begin(struct mc *m, struct herr *e)
{
    return m->be->begin(m->state, e);
}

int
mc_batch_commit(struct mc *m, struct herr *e)
{
    return m->be->commit(m->state, e);
}

void
mc_batch_rollback(struct mc *m)
{
    m->be->rollback(m->state);
}

int
mc_insert(struct mc *m, const struct mc_record *r, enum mc_status *existing,
          struct herr *e)
{
    int rc = mc_record_check(r, e);
    if (rc)
        return rc;
    return m->be->insert(m->state, r, existing, e);
}

int
mc_update(struct mc *m, const struct mc_update *u, struct herr *e)
{
    int rc = mc_update_check(u, e);
    if (rc)
        return rc;
    return m->be->update(m->state, u, clock_now_ms(), e);
}

void
mc_insert_deferred(struct mc *m, const struct mc_record *r,
                   struct mc_result *res)
{
    memset(res, 0, sizeof *res);
    if (m->be->insert_deferred == NULL) {
        res->rc = mc_insert(m, r, &res->existing, &res->err);
        return;
    }
    res->rc = mc_record_check(r, &res->err);
    if (res->rc == 0)
        m->be->insert_deferred(m->state, r, res);
}

void
mc_update_deferred(struct mc *m, const struct mc_update *u,
                   struct mc_result *res)
{
    memset(res, 0, sizeof *res);
    res->rc = mc_update_check(u, &res->err);
    if (res->rc)
        return;
    if (m->be->update_deferred == NULL)
        res->rc = m->be->update(m->state, u, clock_now_ms(), &res->err);
    else
        m->be->update_deferred(m->state, u, clock_now_ms(), res);
}

int
mc_batch_sync(struct mc *m, struct herr *e)
{
    return m->be->sync ? m->be->sync(m->state, e) : 0;
}

int
mc_purge(struct mc *m, int64_t records_before, int64_t bodies_before,
         int dry_run, long long max, struct mc_purge_result *out,
         struct herr *e)
{
    memset(out, 0, sizeof *out);
    if (records_before < 0 || bodies_before < 0)
        return herr_set(e, HERR_INVALID, NULL, "a cutoff before 1970");
    if (records_before == 0 && bodies_before == 0)
        return 0;
    return m->be->purge(m->state, records_before, bodies_before, dry_run, max,
                        out, e);
}

int
mc_get(struct mc *m, const char *id, struct mc_record **out, struct herr *e)
{
    *out = NULL;
    if (id == NULL || id[0] == '\0')
        return herr_set(e, HERR_INVALID, "id", "missing");
    return m->be->get(m->state, id, out, e);
}

int
mc_has_checkpoint(const struct mc *m)
{
    return m->be->checkpoint != NULL;
}

int
mc_checkpoint(struct mc *m, struct herr *e)
{
    return m->be->checkpoint ? m->be->checkpoint(m->state, e) : 0;
}

void
mc_checkpoint_elsewhere(struct mc *m)
{
    if (m->be->checkpoint_elsewhere)
        m->be->checkpoint_elsewhere(m->state);
}

int
mc_schema_version(struct mc *m, int *version, int *before)
{
    if (m->be->schema)
        return m->be->schema(m->state, version, before);
    *version = m->be == &mc_backend_sqlite ? MC_SQLITE_SCHEMA_VERSION : 0;
    *before = -1;
    return 0;
}

/* Copies one page of records; on a failure the page's batch is rolled
 * back and nothing of it counted. */
static int
import_page(struct mc *dst, struct mc_record **v, size_t n,
            struct mc_import_result *out, struct herr *e)
{
    long long copied = 0, skipped = 0;
    int rc = mc_batch_begin(dst, e);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct herr ie = {{0}, {0}};
        rc = mc_insert(dst, v[i], NULL, &ie);
        if (rc == 0) {
            copied++;
        } else if (rc == HERR_EXISTS) {
            skipped++;
            rc = 0;
        } else {
            char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
            herr_format(&ie, why, sizeof why);
            herr_set(e, rc == HERR_INVALID ? HERR_STORE : rc, ie.field,
                     "record %s: %s", v[i]->id, why);
            rc = rc == HERR_INVALID ? HERR_STORE : rc;
        }
    }
    if (rc == 0)
        rc = mc_batch_commit(dst, e);
    else
        mc_batch_rollback(dst);
    if (rc == 0) {
        out->copied += copied;
        out->skipped += skipped;
    }
    return rc;
}

int
mc_import(struct mc *dst, struct mc *src, struct mc_import_result *out,
          struct herr *e)
{
    memset(out, 0, sizeof *out);
    char *cursor = NULL;
    int rc = 0;
    do {
        struct mc_filter f;
        memset(&f, 0, sizeof f);
        f.limit = MC_LIST_MAX;
        f.cursor = cursor;
        struct mc_record **v = NULL;
        size_t n = 0;
        char *next = NULL;
        rc = mc_list(src, &f, &v, &n, &next, e);
        if (rc == 0) {
            /* once more after a failure the store may recover from (a
             * day's partition dropped meanwhile, a lost connection) */
            rc = import_page(dst, v, n, out, e);
            if (rc == HERR_STORE)
                rc = import_page(dst, v, n, out, e);
        }
        mc_records_free(v, n);
        free(cursor);
        cursor = next;
    } while (rc == 0 && cursor);
    free(cursor);
    return rc;
}

int
mc_list(struct mc *m, const struct mc_filter *f, struct mc_record ***out,
        size_t *n, char **next_cursor, struct herr *e)
{
    *out = NULL;
    *n = 0;
    if (next_cursor)
        *next_cursor = NULL;
    if (f->has_status && !mc_status_valid(f->status))
        return herr_set(e, HERR_INVALID, "status", "unknown status %d",
                        (int)f->status);
    if (f->since > 0 && f->until > 0 && f->until < f->since)
        return herr_set(e, HERR_INVALID, "until", "before since");
    if (f->limit > MC_LIST_MAX)
        return herr_set(e, HERR_INVALID, "limit", "%d is more than %d",
                        f->limit, MC_LIST_MAX);
    if (f->nscope > MC_SCOPE_MAX)
        return herr_set(e, HERR_INVALID, "scope", "more than %d organisations",
                        MC_SCOPE_MAX);
    struct mc_query q;
    memset(&q, 0, sizeof q);
    q.f = f;
    int page = f->limit <= 0 ? MC_LIST_DEFAULT : f->limit;
    q.limit = page + 1;
    int rc = 0;
    if (f->cursor) {
        rc = mc_cursor_parse(f->cursor, &q.cursor_at, q.cursor_id,
                             sizeof q.cursor_id, e);
        q.has_cursor = rc == 0;
    }
    if (rc == 0 && f->q)
        rc = mc_q_words(f->q, q.words, &q.nwords, e);
    if (rc)
        return rc;
    char *to = NULL, *from = NULL;
    if (f->to) {
        to = xstrdup(f->to);
        for (char *c = to; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        q.to = to;
    }
    if (f->from) {
        from = xstrdup(f->from);
        for (char *c = from; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        q.from = from;
    }
    rc = m->be->list(m->state, &q, out, n, e);
    free(to);
    free(from);
    if (rc)
        return rc;
    if (*n > (size_t)page) {
        /* the extra row says there is a next page; it is not returned */
        mc_record_free((*out)[page]);
        *n = (size_t)page;
        const struct mc_record *last = (*out)[page - 1];
        if (next_cursor)
            *next_cursor = mc_cursor_new(last->created_at, last->id);
    }
    return 0;
}
