#include "../../common/mc.h"
#include "../../common/clock.h"
#include "../../common/util.h"
#include "t.h"

#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define T0 1790000000000LL /* 2026-09-21T... fixed test clock */
#define DAY 86400000LL

/*
 * The store-independent tests run twice when $HERALD_TEST_PG is set (a
 * libpq URL of an empty database, e.g. postgresql:///t?host=/sock/dir,
 * as tests/integration/test_mc_pg.py gives): once on SQLite, once on
 * PostgreSQL. There a test's "directory" names its own schema (a fresh
 * one per tmpdir(), dropped by rmtree()), put first in the connection's
 * search path, so every test starts from an empty store.
 */
static const char *pg_base; /* $HERALD_TEST_PG, or NULL */
static int pg_mode;         /* this pass runs on PostgreSQL */
static PGconn *pg_admin;    /* for creating schemas and looking inside */

/* ---- helpers ---------------------------------------------------------- */

/* The schema of a test directory: "tmc_" and the hex of its name. */
static void
pg_schema(const char *dir, char out[64])
{
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    int n = snprintf(out, 64, "tmc_");
    for (const char *c = base; *c && n < 60; c++)
        n += snprintf(out + n, (size_t)(64 - n), "%02x", (unsigned char)*c);
}

/* Runs `sql` in the schema of `dir`: the first column of its last
 * result as an integer (-1 on failure; errors printed). */
static long long
pg_int(const char *dir, const char *sql)
{
    char schema[64];
    pg_schema(dir, schema);
    char *all = xasprintf("SET search_path = %s; %s", schema, sql);
    PGresult *res = PQexec(pg_admin, all);
    free(all);
    long long v = -1;
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK && PQntuples(res) > 0)
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    else if (st == PGRES_COMMAND_OK)
        v = 0;
    else
        fprintf(stderr, "pg_int: %s: %s", sql, PQerrorMessage(pg_admin));
    PQclear(res);
    return v;
}

static char *
tmpdir(void)
{
    char tmpl[] = "/tmp/test_mc.XXXXXX";
    char *d = mkdtemp(tmpl);
    if (d == NULL) {
        perror("mkdtemp");
        exit(2);
    }
    return xstrdup(d);
}

static int
rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void
rmtree(char *dir)
{
    if (pg_mode) {
        char schema[64];
        pg_schema(dir, schema);
        char *sql = xasprintf("DROP SCHEMA IF EXISTS %s CASCADE", schema);
        PQclear(PQexec(pg_admin, sql));
        free(sql);
    }
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static char *
store_url(const char *dir)
{
    if (pg_mode) {
        char schema[64];
        pg_schema(dir, schema);
        char *sql = xasprintf("CREATE SCHEMA IF NOT EXISTS %s", schema);
        PGresult *res = PQexec(pg_admin, sql);
        CHECK_MSG(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql,
                  PQerrorMessage(pg_admin));
        PQclear(res);
        free(sql);
        return xasprintf("%s%coptions=-csearch_path%%3D%s", pg_base,
                         strchr(pg_base, '?') ? '&' : '?', schema);
    }
    /* dir is absolute, so this is sqlite:///tmp/..., and the "sub"
     * directory does not exist yet. */
    return xasprintf("sqlite://%s/sub/dir/mc.db", dir);
}

static struct mc *
open_store(const char *dir)
{
    char *url = store_url(dir);
    struct mc *m = NULL;
    struct herr e = {0};
    int rc = mc_open(url, &m, &e);
    CHECK_MSG(rc == 0 && m != NULL, "mc_open %s: %d %s: %s", url, rc, e.field,
              e.msg);
    free(url);
    return m;
}

/* A record with every field set to a distinct value. */
static struct mc_record *
full_record(const char *id)
{
    struct mc_record *r = xcalloc(1, sizeof *r);
    r->id = xstrdup(id);
    r->org = xstrdup("acme");
    r->account = xstrdup("acct-1");
    r->type = xstrdup("receipt");
    r->status = MC_DEFERRED;
    r->path = xstrdup("spf");
    r->path_reason = xstrdup("include:sender.localhost");
    r->from = xstrdup("billing@acme.example");
    r->from_name = xstrdup("Acme Billing");
    r->sender = xstrdup("billing@acme.example");
    r->reply_to = xstrdup("help@acme.example");
    r->to_json = xstrdup("[{\"email\":\"Ann@Example.COM\",\"name\":\"Ann\"}]");
    r->cc_json = xstrdup("[{\"email\":\"cc@example.com\"}]");
    r->bcc_json = xstrdup("[{\"email\":\"audit@acme.example\"}]");
    r->subject = xstrdup("Your receipt \xc3\xa9");
    r->text = xstrdup("Thanks.\nLine two.");
    r->html = xstrdup("<p>Thanks.</p>");
    r->attachments_json =
        xstrdup("[{\"filename\":\"r.pdf\",\"content_type\":\"application/pdf\","
                "\"size\":1234}]");
    r->meta_json = xstrdup("{\"order\":42,\"tags\":[\"a\",\"b\"]}");
    r->recipients_json =
        xstrdup("[{\"email\":\"Ann@Example.COM\",\"kind\":\"to\","
                "\"status\":\"pending\"}]");
    r->created_at = T0;
    r->updated_at = T0 + 1;
    r->sent_at = T0 + 2;
    r->next_attempt_at = T0 + 3;
    r->attempts = 7;
    r->last_error = xstrdup("451 try later");
    r->smtp_reply = xstrdup("250 2.0.0 Ok: queued as ABC");
    return r;
}

/* A small record for list tests. */
static struct mc_record *
small_record(const char *id, const char *org, const char *account,
             enum mc_status st, int64_t created, const char *to)
{
    struct mc_record *r = xcalloc(1, sizeof *r);
    r->id = xstrdup(id);
    r->org = xstrdup(org);
    r->account = xstrdup(account);
    r->type = xstrdup("notice");
    r->status = st;
    r->from = xstrdup("n@x.example");
    r->to_json = xasprintf("[{\"email\":\"%s\"}]", to);
    r->created_at = created;
    r->updated_at = created;
    return r;
}

static int
insert_rec(struct mc *m, struct mc_record *r)
{
    struct herr e = {0};
    int rc = mc_insert(m, r, NULL, &e);
    CHECK_MSG(rc == 0, "insert %s: %d %s: %s", r->id, rc, e.field, e.msg);
    mc_record_free(r);
    return rc;
}

static int
same_str(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static int
exists(struct mc *m, const char *id)
{
    struct mc_record *r = NULL;
    int rc = mc_get(m, id, &r, NULL);
    mc_record_free(r);
    return rc == 0;
}

/* ---- tests ------------------------------------------------------------ */

static void
test_status_names(void)
{
    const char *names[] = {"queued", "sending", "sent", "deferred", "failed"};
    for (int i = 0; i < 5; i++) {
        CHECK_STR(mc_status_name((enum mc_status)i), names[i]);
        enum mc_status s = MC_FAILED;
        CHECK(mc_status_parse(names[i], &s) == 0 && (int)s == i);
    }
    enum mc_status s = MC_SENT;
    CHECK(mc_status_parse("bounced", &s) == HERR_INVALID && s == MC_SENT);
    CHECK(mc_status_parse("", &s) == HERR_INVALID);
    CHECK(mc_status_parse(NULL, &s) == HERR_INVALID);
    CHECK_STR(mc_status_name((enum mc_status)99), "unknown");
}

static void
test_roundtrip(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    struct mc_record *r = full_record("rt-1");
    struct herr e = {0};
    CHECK(mc_insert(m, r, NULL, &e) == 0);
    struct mc_record *g = NULL;
    CHECK(mc_get(m, "rt-1", &g, &e) == 0 && g != NULL);
    if (g) {
        CHECK_STR(g->id, r->id);
        CHECK_STR(g->org, r->org);
        CHECK_STR(g->account, r->account);
        CHECK_STR(g->type, r->type);
        CHECK(g->status == MC_DEFERRED);
        CHECK_STR(g->path, r->path);
        CHECK_STR(g->path_reason, r->path_reason);
        CHECK_STR(g->from, r->from);
        CHECK_STR(g->from_name, r->from_name);
        CHECK_STR(g->sender, r->sender);
        CHECK_STR(g->reply_to, r->reply_to);
        CHECK_STR(g->to_json, r->to_json);
        CHECK_STR(g->cc_json, r->cc_json);
        CHECK_STR(g->bcc_json, r->bcc_json);
        CHECK_STR(g->subject, r->subject);
        CHECK_STR(g->text, r->text);
        CHECK_STR(g->html, r->html);
        CHECK_STR(g->attachments_json, r->attachments_json);
        CHECK_STR(g->meta_json, r->meta_json);
        CHECK_STR(g->recipients_json, r->recipients_json);
        CHECK(g->created_at == T0);
        CHECK(g->updated_at == T0 + 1);
        CHECK(g->sent_at == T0 + 2);
        CHECK(g->next_attempt_at == T0 + 3);
        CHECK(g->attempts == 7);
        CHECK_STR(g->last_error, r->last_error);
        CHECK_STR(g->smtp_reply, r->smtp_reply);
    }
    mc_record_free(g);
    mc_record_free(r);

    /* Absent fields come back absent. */
    r = small_record("rt-2", "o", "a", MC_QUEUED, T0, "x@y.example");
    CHECK(mc_insert(m, r, NULL, &e) == 0);
    g = NULL;
    CHECK(mc_get(m, "rt-2", &g, &e) == 0 && g != NULL);
    if (g) {
        CHECK(g->path == NULL && g->path_reason == NULL && g->sender == NULL);
        CHECK(g->from_name == NULL && g->reply_to == NULL);
        CHECK(g->cc_json == NULL && g->bcc_json == NULL);
        CHECK(g->subject == NULL && g->text == NULL && g->html == NULL);
        CHECK(g->meta_json == NULL && g->attachments_json == NULL);
        CHECK(g->sent_at == 0 && g->next_attempt_at == 0);
        CHECK(g->attempts == 0 && g->status == MC_QUEUED);
        CHECK(g->last_error == NULL && g->smtp_reply == NULL);
    }
    mc_record_free(g);
    mc_record_free(r);

    /* Unknown id. */
    g = (struct mc_record *)1;
    CHECK(mc_get(m, "nope", &g, &e) == HERR_NOTFOUND && g == NULL);
    CHECK(mc_get(m, "", &g, &e) == HERR_INVALID);

    /* Insert argument checks. */
    r = full_record("rt-3");
    free(r->org);
    r->org = NULL;
    CHECK(mc_insert(m, r, NULL, &e) == HERR_INVALID);
    CHECK_STR(e.field, "org");
    r->org = xstrdup("acme");
    free(r->to_json);
    r->to_json = xstrdup("{\"email\":\"x@y\"}");
    CHECK(mc_insert(m, r, NULL, &e) == HERR_INVALID);
    CHECK_STR(e.field, "to_json");
    free(r->to_json);
    r->to_json = xstrdup("[{\"name\":\"no email\"}]");
    CHECK(mc_insert(m, r, NULL, &e) == HERR_INVALID);
    free(r->to_json);
    r->to_json = xstrdup("[]");
    r->created_at = 0;
    CHECK(mc_insert(m, r, NULL, &e) == HERR_INVALID);
    CHECK_STR(e.field, "created_at");
    r->created_at = T0;
    r->status = (enum mc_status)42;
    CHECK(mc_insert(m, r, NULL, &e) == HERR_INVALID);
    CHECK_STR(e.field, "status");
    CHECK(!exists(m, "rt-3")); /* none of the refused inserts wrote */
    mc_record_free(r);

    mc_close(m);
    rmtree(dir);
}

static void
test_duplicate(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    struct mc_record *r = full_record("dup-1");
    r->status = MC_QUEUED;
    struct herr e = {0};
    enum mc_status ex = MC_FAILED;
    CHECK(mc_insert(m, r, &ex, &e) == 0);
    CHECK(ex == MC_FAILED); /* untouched on success */

    struct mc_update u;
    mc_update_init(&u, "dup-1", MC_SENT);
    CHECK(mc_update(m, &u, &e) == 0);

    free(r->subject);
    r->subject = xstrdup("second copy");
    CHECK(mc_insert(m, r, &ex, &e) == HERR_EXISTS);
    CHECK(ex == MC_SENT);
    CHECK_STR(e.field, "id");
    CHECK(strstr(e.msg, "sent") != NULL);
    CHECK(mc_insert(m, r, NULL, NULL) == HERR_EXISTS);

    struct mc_record *g = NULL;
    CHECK(mc_get(m, "dup-1", &g, &e) == 0 && g);
    if (g) {
        CHECK_STR(g->subject, "Your receipt \xc3\xa9"); /* first one kept */
        CHECK(g->status == MC_SENT);
    }
    mc_record_free(g);

    /* The duplicate did not add recipient rows: one match for Ann. */
    struct mc_filter f = {0};
    f.to = "ann@example.com";
    struct mc_record **v = NULL;
    size_t n = 0;
    CHECK(mc_list(m, &f, &v, &n, NULL, &e) == 0 && n == 1);
    mc_records_free(v, n);

    /* Inside a batch, too, and the batch goes on. */
    CHECK(mc_batch_begin(m, &e) == 0);
    ex = MC_QUEUED;
    CHECK(mc_insert(m, r, &ex, &e) == HERR_EXISTS && ex == MC_SENT);
    struct mc_record *r2 = full_record("dup-2");
    CHECK(mc_insert(m, r2, NULL, &e) == 0);
    CHECK(mc_batch_commit(m, &e) == 0);
    CHECK(exists(m, "dup-2"));
    mc_record_free(r2);
    mc_record_free(r);
    mc_close(m);
    rmtree(dir);
}

static void
test_update(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    struct mc_record *r = full_record("up-1");
    r->status = MC_QUEUED;
    CHECK(mc_insert(m, r, NULL, &e) == 0);

    /* Status only: everything else as it was, updated_at = now. */
    clock_set_fixed(T0 + 1000);
    struct mc_update u;
    mc_update_init(&u, "up-1", MC_SENDING);
    CHECK(u.sent_at == -1 && u.next_attempt_at == -1 && u.attempts_add == 0);
    CHECK(mc_update(m, &u, &e) == 0);
    struct mc_record *g = NULL;
    CHECK(mc_get(m, "up-1", &g, &e) == 0 && g);
    if (g) {
        CHECK(g->status == MC_SENDING);
        CHECK(g->updated_at == T0 + 1000);
        CHECK(g->created_at == T0);
        CHECK_STR(g->path, "spf");
        CHECK_STR(g->sender, r->sender);
        CHECK_STR(g->reply_to, r->reply_to);
        CHECK(g->attempts == 7);
        CHECK(g->sent_at == T0 + 2 && g->next_attempt_at == T0 + 3);
        CHECK_STR(g->last_error, r->last_error);
        CHECK_STR(g->smtp_reply, r->smtp_reply);
        CHECK_STR(g->recipients_json, r->recipients_json);
    }
    mc_record_free(g);

    /* Every field set. */
    clock_set_fixed(T0 + 2000);
    mc_update_init(&u, "up-1", MC_SENT);
    u.path = "relay";
    u.path_reason = "no scheme, spf fail";
    u.sender = "notices@localhost";
    u.reply_to = "billing@acme.example";
    u.attempts_add = 2;
    u.sent_at = T0 + 1999;
    u.next_attempt_at = T0 + 5000;
    u.last_error = "none";
    u.smtp_reply = "250 ok";
    u.recipients_json = "[{\"email\":\"ann@example.com\",\"kind\":\"to\","
                        "\"status\":\"sent\",\"reply\":\"250 ok\"}]";
    CHECK(mc_update(m, &u, &e) == 0);
    g = NULL;
    CHECK(mc_get(m, "up-1", &g, &e) == 0 && g);
    if (g) {
        CHECK(g->status == MC_SENT);
        CHECK_STR(g->path, "relay");
        CHECK_STR(g->path_reason, "no scheme, spf fail");
        CHECK_STR(g->sender, "notices@localhost");
        CHECK_STR(g->reply_to, "billing@acme.example");
        CHECK(g->attempts == 9);
        CHECK(g->sent_at == T0 + 1999);
        CHECK(g->next_attempt_at == T0 + 5000);
        CHECK_STR(g->last_error, "none");
        CHECK_STR(g->smtp_reply, "250 ok");
        CHECK_STR(g->recipients_json, u.recipients_json);
        CHECK(g->updated_at == T0 + 2000);
    }
    mc_record_free(g);

    /* 0 clears times, "" clears strings, attempts accumulate. */
    clock_set_fixed(T0 + 3000);
    mc_update_init(&u, "up-1", MC_DEFERRED);
    u.next_attempt_at = 0;
    u.last_error = "";
    u.attempts_add = 1;
    CHECK(mc_update(m, &u, &e) == 0);
    g = NULL;
    CHECK(mc_get(m, "up-1", &g, &e) == 0 && g);
    if (g) {
        CHECK(g->status == MC_DEFERRED);
        CHECK(g->next_attempt_at == 0);
        CHECK(g->sent_at == T0 + 1999);
        CHECK(g->last_error == NULL);
        CHECK_STR(g->smtp_reply, "250 ok");
        CHECK(g->attempts == 10);
        CHECK(g->updated_at == T0 + 3000);
    }
    mc_record_free(g);

    /* The content as sent (a template rendered): replaced, in a batch
     * and outside one; the rest of the record as it was. */
    for (int batched = 0; batched <= 1; batched++) {
        if (batched)
            CHECK(mc_batch_begin(m, &e) == 0);
        mc_update_init(&u, "up-1", MC_SENDING);
        CHECK(u.set_content == 0);
        u.set_content = 1;
        u.subject = batched ? "Receipt R-2" : "Receipt R-1";
        u.text = "Dear Ana,\nthanks.\n";
        u.html = batched ? NULL : "<p>Dear Ana</p>";
        CHECK(mc_update(m, &u, &e) == 0);
        if (batched)
            CHECK(mc_batch_commit(m, &e) == 0);
        g = NULL;
        CHECK(mc_get(m, "up-1", &g, &e) == 0 && g);
        if (g) {
            CHECK(g->status == MC_SENDING);
            CHECK_STR(g->subject, batched ? "Receipt R-2" : "Receipt R-1");
            CHECK_STR(g->text, "Dear Ana,\nthanks.\n");
            CHECK(batched ? g->html == NULL
                          : strcmp(g->html, "<p>Dear Ana</p>") == 0);
            CHECK_STR(g->smtp_reply, "250 ok");
            CHECK_STR(g->to_json, r->to_json);
        }
        mc_record_free(g);
    }
    /* without set_content the content stays */
    mc_update_init(&u, "up-1", MC_DEFERRED);
    u.subject = "ignored";
    CHECK(mc_update(m, &u, &e) == 0);
    g = NULL;
    CHECK(mc_get(m, "up-1", &g, &e) == 0 && g);
    if (g)
        CHECK_STR(g->subject, "Receipt R-2");
    mc_record_free(g);
    /* an unknown id with content: not found, nothing written */
    mc_update_init(&u, "no-such", MC_SENT);
    u.set_content = 1;
    u.subject = "x";
    CHECK(mc_update(m, &u, &e) == HERR_NOTFOUND);

    /* Unknown id, bad status, missing id. */
    mc_update_init(&u, "no-such", MC_SENT);
    CHECK(mc_update(m, &u, &e) == HERR_NOTFOUND);
    CHECK_STR(e.field, "id");
    mc_update_init(&u, "up-1", (enum mc_status)17);
    CHECK(mc_update(m, &u, &e) == HERR_INVALID);
    mc_update_init(&u, NULL, MC_SENT);
    CHECK(mc_update(m, &u, &e) == HERR_INVALID);

    clock_set_fixed(-1);
    mc_record_free(r);
    mc_close(m);
    rmtree(dir);
}

/* Checks that the listed ids are exactly `want` in order. */
static void
check_ids(struct mc *m, const struct mc_filter *f, const char *const *want,
          size_t nwant)
{
    struct mc_record **v = NULL;
    size_t n = 0;
    struct herr e = {0};
    int rc = mc_list(m, f, &v, &n, NULL, &e);
    CHECK_MSG(rc == 0, "list: %s", e.msg);
    CHECK_MSG(n == nwant, "got %zu records, want %zu", n, nwant);
    for (size_t i = 0; i < n && i < nwant; i++)
        CHECK_STR(v[i]->id, want[i]);
    mc_records_free(v, n);
}

/* Pages the listing of `f` (limit `limit`) to its end into ids (new
 * strings, *n of them): the ids newest first, as the pages gave them. */
static void
list_all(struct mc *m, struct mc_filter f, int limit, char ***ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    size_t cap = 0;
    char *cursor = NULL;
    f.limit = limit;
    for (int pages = 0; pages < 1000; pages++) {
        struct mc_record **v = NULL;
        size_t k = 0;
        char *next = NULL;
        struct herr e = {0};
        f.cursor = cursor;
        int rc = mc_list(m, &f, &v, &k, &next, &e);
        CHECK_MSG(rc == 0, "list: %s", e.msg);
        for (size_t i = 0; i < k; i++) {
            if (*n == cap) {
                cap = cap ? 2 * cap : 64;
                *ids = xrealloc(*ids, cap * sizeof **ids);
            }
            (*ids)[(*n)++] = xstrdup(v[i]->id);
        }
        mc_records_free(v, k);
        free(cursor);
        cursor = next;
        if (rc || cursor == NULL)
            break;
    }
    free(cursor);
}

#define IDS(...)                                                               \
    (const char *const[])                                                      \
    {                                                                          \
        __VA_ARGS__                                                            \
    }
#define NIDS(...) (sizeof(IDS(__VA_ARGS__)) / sizeof(const char *))
#define EXPECT(f, ...) check_ids(m, (f), IDS(__VA_ARGS__), NIDS(__VA_ARGS__))

static void
test_list(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    insert_rec(m, small_record("a1", "acme", "u1", MC_SENT, T0 + 10,
                               "Bob@Example.com"));
    insert_rec(m, small_record("a2", "acme", "u2", MC_FAILED, T0 + 20,
                               "carol@example.com"));
    insert_rec(m, small_record("a3", "acme", "u1", MC_QUEUED, T0 + 30,
                               "dave@example.com"));
    insert_rec(m, small_record("b1", "beta", "u9", MC_SENT, T0 + 20,
                               "bob@example.com"));
    struct mc_record *r =
        small_record("b2", "beta", "u9", MC_DEFERRED, T0 + 40, "eve@x.org");
    free(r->cc_json);
    r->cc_json = xstrdup("[{\"email\":\"BOB@example.com\",\"name\":\"B\"}]");
    r->bcc_json = xstrdup("[{\"email\":\"hidden@example.com\"}]");
    insert_rec(m, r);

    struct mc_filter f = {0};
    /* Newest first; equal created_at ordered by id, descending. */
    EXPECT(&f, "b2", "a3", "b1", "a2", "a1");
    f.org = "acme";
    EXPECT(&f, "a3", "a2", "a1");
    f.account = "u1";
    EXPECT(&f, "a3", "a1");
    f.has_status = 1;
    f.status = MC_SENT;
    EXPECT(&f, "a1");
    memset(&f, 0, sizeof f);
    f.has_status = 1;
    f.status = MC_SENT;
    EXPECT(&f, "b1", "a1");
    f.status = MC_SENDING;
    check_ids(m, &f, NULL, 0);

    /* Recipient: any of to/cc/bcc, case-insensitive. */
    memset(&f, 0, sizeof f);
    f.to = "bob@EXAMPLE.com";
    EXPECT(&f, "b2", "b1", "a1");
    f.to = "hidden@example.com";
    EXPECT(&f, "b2");
    f.to = "nobody@example.com";
    check_ids(m, &f, NULL, 0);
    f.to = "bob@example.com";
    f.org = "beta";
    EXPECT(&f, "b2", "b1");

    /* Time range, both ends inclusive. */
    memset(&f, 0, sizeof f);
    f.since = T0 + 20;
    EXPECT(&f, "b2", "a3", "b1", "a2");
    f.until = T0 + 30;
    EXPECT(&f, "a3", "b1", "a2");
    f.since = 0;
    EXPECT(&f, "a3", "b1", "a2", "a1");
    f.since = T0 + 31;
    f.until = T0 + 39;
    check_ids(m, &f, NULL, 0);
    f.since = T0 + 40;
    f.until = T0 + 10;
    struct mc_record **v = NULL;
    size_t n = 0;
    struct herr e = {0};
    CHECK(mc_list(m, &f, &v, &n, NULL, &e) == HERR_INVALID);

    /* no_bodies: the same rows, text and html left out; and the JSON
     * shapes of a list row and an inbox row (mc_record_json). */
    r = small_record("c1", "gamma", "u7", MC_SENT, T0 + 5, "kid@example.com");
    r->subject = xstrdup("Body test");
    r->text = xstrdup("the text body");
    r->html = xstrdup("<p>the html body</p>");
    r->bcc_json = xstrdup("[{\"email\":\"audit@example.com\"}]");
    r->recipients_json =
        xstrdup("[{\"email\":\"kid@example.com\",\"kind\":\"to\","
                "\"status\":\"accepted\"},{\"email\":\"audit@example.com\","
                "\"kind\":\"bcc\",\"status\":\"accepted\"}]");
    insert_rec(m, r);
    memset(&f, 0, sizeof f);
    f.org = "gamma";
    for (int nb = 0; nb < 2; nb++) {
        struct mc_record **bv = NULL;
        size_t bn = 0;
        f.no_bodies = nb;
        CHECK(mc_list(m, &f, &bv, &bn, NULL, &e) == 0);
        CHECK(bn == 1);
        if (bn == 1) {
            CHECK_STR(bv[0]->subject, "Body test");
            if (nb) {
                CHECK(bv[0]->text == NULL && bv[0]->html == NULL);
            } else {
                CHECK_STR(bv[0]->text, "the text body");
                CHECK_STR(bv[0]->html, "<p>the html body</p>");
            }
            json_t *o = mc_record_json(bv[0], 0);
            CHECK(json_object_get(o, "text") && json_object_get(o, "bcc"));
            CHECK(json_array_size(json_object_get(o, "recipients")) == 2);
            json_decref(o);
            o = mc_record_json(bv[0], MC_JSON_NO_BODIES | MC_JSON_NO_BCC);
            CHECK(json_object_get(o, "text") == NULL &&
                  json_object_get(o, "html") == NULL &&
                  json_object_get(o, "bcc") == NULL);
            json_t *rc = json_object_get(o, "recipients");
            CHECK(json_array_size(rc) == 1);
            CHECK_STR(json_string_value(
                          json_object_get(json_array_get(rc, 0), "email")),
                      "kid@example.com");
            CHECK_STR(json_string_value(json_object_get(o, "subject")),
                      "Body test");
            json_decref(o);
        }
        mc_records_free(bv, bn);
    }

    /* Limit. */
    memset(&f, 0, sizeof f);
    f.limit = 2;
    EXPECT(&f, "b2", "a3");

    /* Default 50, cap 1000. */
    CHECK(mc_batch_begin(m, &e) == 0);
    for (int i = 0; i < 1010; i++) {
        char id[32];
        snprintf(id, sizeof id, "bulk-%04d", i);
        insert_rec(m, small_record(id, "bulk", "u", MC_QUEUED, T0 + 100 + i,
                                   "z@example.com"));
    }
    CHECK(mc_batch_commit(m, &e) == 0);
    f.org = "bulk";
    f.limit = 0;
    v = NULL;
    CHECK(mc_list(m, &f, &v, &n, NULL, &e) == 0);
    CHECK(n == MC_LIST_DEFAULT);
    if (n > 0)
        CHECK_STR(v[0]->id, "bulk-1009");
    mc_records_free(v, n);
    f.limit = MC_LIST_MAX + 1;
    CHECK(mc_list(m, &f, &v, &n, NULL, &e) == HERR_INVALID);
    CHECK_STR(e.field, "limit");
    f.limit = MC_LIST_MAX;
    CHECK(mc_list(m, &f, &v, &n, NULL, &e) == 0);
    CHECK(n == MC_LIST_MAX);
    if (n == MC_LIST_MAX)
        CHECK_STR(v[n - 1]->id, "bulk-0510");
    mc_records_free(v, n);

    mc_close(m);
    rmtree(dir);
}

static void
test_batch(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    struct mc *other = open_store(dir);
    if (m == NULL || other == NULL) {
        mc_close(m);
        mc_close(other);
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    CHECK(mc_batch_commit(m, &e) == HERR_INVALID);
    mc_batch_rollback(m); /* no-op */

    CHECK(mc_batch_begin(m, &e) == 0);
    CHECK(mc_batch_begin(m, &e) == HERR_INVALID);
    insert_rec(m, full_record("bt-1"));
    insert_rec(m, full_record("bt-2"));
    struct mc_update u;
    mc_update_init(&u, "bt-1", MC_SENDING);
    CHECK(mc_update(m, &u, &e) == 0);
    /* A failed write inside the batch leaves nothing and keeps the rest. */
    struct mc_record *bad = full_record("bt-bad");
    free(bad->cc_json);
    bad->cc_json = xstrdup("not json");
    CHECK(mc_insert(m, bad, NULL, &e) == HERR_INVALID);
    mc_record_free(bad);
    CHECK(exists(m, "bt-1"));      /* visible to its own connection */
    CHECK(!exists(other, "bt-1")); /* not yet to another */
    CHECK(mc_batch_commit(m, &e) == 0);
    CHECK(exists(other, "bt-1") && exists(other, "bt-2"));
    CHECK(!exists(other, "bt-bad"));
    struct mc_record *g = NULL;
    CHECK(mc_get(other, "bt-1", &g, &e) == 0 && g && g->status == MC_SENDING);
    mc_record_free(g);

    /* Rollback discards inserts and updates. */
    CHECK(mc_batch_begin(m, &e) == 0);
    insert_rec(m, full_record("bt-3"));
    mc_update_init(&u, "bt-1", MC_FAILED);
    CHECK(mc_update(m, &u, &e) == 0);
    mc_batch_rollback(m);
    CHECK(!exists(m, "bt-3"));
    g = NULL;
    CHECK(mc_get(m, "bt-1", &g, &e) == 0 && g && g->status == MC_SENDING);
    mc_record_free(g);
    /* And the recipient rows went with it. */
    struct mc_filter f = {0};
    f.to = "ann@example.com";
    struct mc_record **v = NULL;
    size_t n = 0;
    CHECK(mc_list(m, &f, &v, &n, NULL, &e) == 0 && n == 2);
    mc_records_free(v, n);

    /* Outside a batch each write is durable at once. */
    insert_rec(m, full_record("bt-4"));
    CHECK(exists(other, "bt-4"));

    /* Closing with a batch open rolls it back. */
    CHECK(mc_batch_begin(m, &e) == 0);
    insert_rec(m, full_record("bt-5"));
    mc_close(m);
    CHECK(!exists(other, "bt-5"));
    mc_close(other);
    rmtree(dir);
}

static int
raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

static int
raw_int(const char *path, const char *sql, const char **text_out)
{
    static char text[64];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int(st, 0);
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(text, sizeof text, "%s", t ? (const char *)t : "");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (text_out)
        *text_out = text;
    return v;
}

static void
test_urls(void)
{
    char *dir = tmpdir();
    struct herr e;
    struct mc *m;
    const char *bad[] = {
        "",
        "var/mc.db",
        "mysql://host/db",
        "sqlite://",
        "sqlite://?busy_timeout_ms=5",
        "sqlite:///tmp/",
        "sqlite:///tmp/x.db?bogus=1",
        "sqlite:///tmp/x.db?busy_timeout_ms=abc",
        "sqlite:///tmp/x.db?busy_timeout_ms=-1",
        "sqlite:///tmp/x.db?busy_timeout_ms=600001",
        "SQLITE:///tmp/x.db",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        m = (struct mc *)1;
        int rc = mc_open(bad[i], &m, &e);
        CHECK_MSG(rc == HERR_INVALID && m == NULL, "\"%s\" -> %d", bad[i], rc);
        CHECK_STR(e.field, "HERALD_MC");
        CHECK(e.msg[0] != '\0');
    }
    /* PostgreSQL: a server that is not there is a store failure */
    m = (struct mc *)1;
    CHECK(mc_open("postgresql:///nodb?host=/nonexistent/herald&"
                  "connect_timeout=2",
                  &m, &e) == HERR_STORE &&
          m == NULL && strstr(e.msg, "cannot connect") != NULL);
    m = (struct mc *)1;
    CHECK(mc_open("postgres:///nodb?host=/nonexistent/herald", &m, &e) ==
              HERR_STORE &&
          m == NULL);

    /* A parent that cannot be a directory. */
    char *file = xasprintf("%s/plain", dir);
    static const char junk[] = "hello, not a database, just some text"
                               " that is longer than a database header";
    int fd = open(file, O_CREAT | O_WRONLY, 0600);
    CHECK(fd >= 0 &&
          write(fd, junk, sizeof junk - 1) == (ssize_t)(sizeof junk - 1));
    close(fd);
    char *url = xasprintf("sqlite://%s/plain/mc.db", dir);
    CHECK(mc_open(url, &m, &e) == HERR_STORE && m == NULL);
    CHECK(strstr(e.msg, "cannot create directory") != NULL);
    free(url);
    /* A file that is not a database. */
    url = xasprintf("sqlite://%s", file);
    CHECK(mc_open(url, &m, &e) == HERR_STORE && m == NULL);
    free(url);
    free(file);

    /* Relative paths, with and without "./", parents created. */
    char cwd[4096];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir(dir) == 0);
    m = NULL;
    CHECK(mc_open("sqlite://./var/mc.db", &m, &e) == 0 && m);
    mc_close(m);
    m = NULL;
    CHECK(mc_open("sqlite://rel/deeper/mc.db?busy_timeout_ms=250", &m, &e) ==
              0 &&
          m);
    mc_close(m);
    struct stat sb;
    CHECK(stat("var/mc.db", &sb) == 0 && S_ISREG(sb.st_mode));
    CHECK(stat("rel/deeper/mc.db", &sb) == 0 && S_ISREG(sb.st_mode));
    const char *mode = NULL;
    raw_int("var/mc.db", "PRAGMA journal_mode", &mode);
    CHECK_STR(mode, "wal");
    CHECK(raw_int("var/mc.db", "PRAGMA user_version", NULL) == 3);
    CHECK(raw_int("var/mc.db",
                  "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
                  " AND name IN ('messages_org', 'messages_account',"
                  " 'messages_created', 'messages_status',"
                  " 'message_rcpt_seq')",
                  NULL) == 5);
    CHECK(raw_int("var/mc.db",
                  "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                  " AND name IN ('messages', 'message_content',"
                  " 'message_rcpt')",
                  NULL) == 3);
    CHECK(chdir(cwd) == 0);

    /* Reopening an existing store keeps its rows. */
    m = open_store(dir);
    if (m) {
        insert_rec(m, full_record("keep"));
        mc_close(m);
    }
    m = open_store(dir);
    if (m) {
        CHECK(exists(m, "keep"));
        mc_close(m);
    }
    /* A store from a newer version is refused. */
    char *path = xasprintf("%s/sub/dir/mc.db", dir);
    CHECK(raw_exec(path, "PRAGMA user_version = 9") == SQLITE_OK);
    url = store_url(dir);
    m = (struct mc *)1;
    CHECK(mc_open(url, &m, &e) == HERR_STORE && m == NULL);
    CHECK(strstr(e.msg, "newer") != NULL);
    free(url);
    free(path);
    rmtree(dir);
}

static void
test_busy(void)
{
    char *dir = tmpdir();
    char *url = xasprintf("sqlite://%s/mc.db?busy_timeout_ms=100", dir);
    char *path = xasprintf("%s/mc.db", dir);
    struct mc *m = NULL;
    struct herr e = {0};
    CHECK(mc_open(url, &m, &e) == 0 && m);
    if (m == NULL)
        goto out;
    insert_rec(m, full_record("busy-0"));

    /* Another connection holds the write lock. */
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);

    int64_t t = clock_now_ms();
    struct mc_record *r = full_record("busy-1");
    memset(&e, 0, sizeof e);
    CHECK(mc_insert(m, r, NULL, &e) == HERR_STORE);
    CHECK_MSG(strstr(e.msg, "database is locked") != NULL, "%s", e.msg);
    CHECK(clock_now_ms() - t >= 90);

    struct mc_update u;
    mc_update_init(&u, "busy-0", MC_SENT);
    memset(&e, 0, sizeof e);
    CHECK(mc_update(m, &u, &e) == HERR_STORE);
    CHECK(strstr(e.msg, "database is locked") != NULL);
    CHECK(mc_batch_begin(m, &e) == HERR_STORE);
    CHECK(mc_batch_commit(m, &e) == HERR_INVALID); /* begin failed */
    /* Readers are not blocked by a writer in WAL mode. */
    CHECK(exists(m, "busy-0"));

    CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);

    /* Everything works again. */
    CHECK(mc_insert(m, r, NULL, &e) == 0);
    CHECK(mc_update(m, &u, &e) == 0);
    CHECK(mc_batch_begin(m, &e) == 0);
    CHECK(mc_batch_commit(m, &e) == 0);
    mc_record_free(r);
    mc_close(m);
out:
    free(url);
    free(path);
    rmtree(dir);
}

/* Statuses move in and out of the partial status index (which leaves
 * "sent" out): every listing by status must follow. */
static void
test_status_moves(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    insert_rec(m, small_record("s1", "acme", "u1", MC_QUEUED, T0 + 1,
                               "a@example.com"));
    insert_rec(m, small_record("s2", "acme", "u2", MC_QUEUED, T0 + 2,
                               "b@example.com"));
    insert_rec(
        m, small_record("s3", "beta", "u3", MC_SENT, T0 + 3, "c@example.com"));
    struct mc_filter f = {0};
    f.has_status = 1;
    f.status = MC_QUEUED;
    EXPECT(&f, "s2", "s1");
    f.status = MC_SENT;
    EXPECT(&f, "s3");

    struct mc_update u;
    mc_update_init(&u, "s1", MC_SENDING);
    CHECK(mc_update(m, &u, &e) == 0);
    f.status = MC_QUEUED;
    EXPECT(&f, "s2");
    f.status = MC_SENDING;
    EXPECT(&f, "s1");
    mc_update_init(&u, "s1", MC_SENT);
    CHECK(mc_update(m, &u, &e) == 0);
    check_ids(m, &f, NULL, 0);
    f.status = MC_SENT;
    EXPECT(&f, "s3", "s1");
    f.org = "acme";
    EXPECT(&f, "s1");
    f.org = NULL;
    f.since = T0 + 2;
    EXPECT(&f, "s3");

    /* Out of "sent" again (a replay), and into the terminal statuses. */
    mc_update_init(&u, "s1", MC_DEFERRED);
    CHECK(mc_update(m, &u, &e) == 0);
    mc_update_init(&u, "s2", MC_FAILED);
    CHECK(mc_update(m, &u, &e) == 0);
    memset(&f, 0, sizeof f);
    f.has_status = 1;
    f.status = MC_SENT;
    EXPECT(&f, "s3");
    f.status = MC_DEFERRED;
    EXPECT(&f, "s1");
    f.status = MC_FAILED;
    EXPECT(&f, "s2");
    f.org = "beta";
    check_ids(m, &f, NULL, 0);
    f.org = "acme";
    f.account = "u2";
    f.to = "B@example.com";
    f.since = T0 + 2;
    f.until = T0 + 2;
    EXPECT(&f, "s2");
    f.status = MC_QUEUED;
    check_ids(m, &f, NULL, 0);
    mc_close(m);
    rmtree(dir);
}

/* A record spans three tables; a failure in the second or third leaves
 * none of it, in a batch (which goes on) and outside one. Failures are
 * injected with triggers added behind the store's back. */
static void
test_atomic_insert(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    char *path = xasprintf("%s/sub/dir/mc.db", dir);
    if (m == NULL) {
        free(path);
        rmtree(dir);
        return;
    }
    CHECK(raw_exec(path,
                   "CREATE TRIGGER boom_content BEFORE INSERT ON "
                   "message_content WHEN NEW.subject = 'boom' BEGIN"
                   " SELECT RAISE(ABORT, 'injected content failure'); END;"
                   "CREATE TRIGGER boom_rcpt BEFORE INSERT ON message_rcpt"
                   " WHEN NEW.email = 'boom@example.com' BEGIN"
                   " SELECT RAISE(ABORT, 'injected rcpt failure'); END;") ==
          SQLITE_OK);
    struct herr e = {0};
    struct mc_record *bad1 = full_record("at-bad1");
    free(bad1->subject);
    bad1->subject = xstrdup("boom");
    struct mc_record *bad2 = full_record("at-bad2");
    free(bad2->bcc_json);
    bad2->bcc_json = xstrdup("[{\"email\":\"Boom@Example.com\"}]");

    CHECK(mc_insert(m, bad1, NULL, &e) == HERR_STORE);
    CHECK_MSG(strstr(e.msg, "injected content failure") != NULL, "%s", e.msg);
    CHECK(mc_insert(m, bad2, NULL, &e) == HERR_STORE);
    CHECK(!exists(m, "at-bad1") && !exists(m, "at-bad2"));

    CHECK(mc_batch_begin(m, &e) == 0);
    insert_rec(m, full_record("at-1"));
    CHECK(mc_insert(m, bad1, NULL, &e) == HERR_STORE);
    CHECK(mc_insert(m, bad2, NULL, &e) == HERR_STORE);
    insert_rec(m, full_record("at-2"));
    CHECK(mc_batch_commit(m, &e) == 0);
    CHECK(exists(m, "at-1") && exists(m, "at-2"));
    CHECK(!exists(m, "at-bad1") && !exists(m, "at-bad2"));
    /* No stray rows in any table: two records, three addresses each. */
    CHECK(raw_int(path, "SELECT count(*) FROM messages", NULL) == 2);
    CHECK(raw_int(path, "SELECT count(*) FROM message_content", NULL) == 2);
    CHECK(raw_int(path, "SELECT count(*) FROM message_rcpt", NULL) == 6);
    struct mc_filter f = {0};
    f.to = "boom@example.com";
    check_ids(m, &f, NULL, 0);

    /* Without the triggers the same records go in. */
    CHECK(raw_exec(path, "DROP TRIGGER boom_content; DROP TRIGGER boom_rcpt") ==
          SQLITE_OK);
    CHECK(mc_insert(m, bad1, NULL, &e) == 0);
    CHECK(mc_insert(m, bad2, NULL, &e) == 0);
    EXPECT(&f, "at-bad2");
    struct mc_record *g = NULL;
    CHECK(mc_get(m, "at-bad1", &g, &e) == 0 && g);
    if (g)
        CHECK_STR(g->subject, "boom");
    mc_record_free(g);
    mc_record_free(bad1);
    mc_record_free(bad2);
    mc_close(m);
    free(path);
    rmtree(dir);
}

/* The schema of version 1, as that version created it. */
static const char v1_schema[] =
    "CREATE TABLE messages ("
    " id TEXT PRIMARY KEY NOT NULL, org TEXT NOT NULL,"
    " account TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL,"
    " path TEXT, path_reason TEXT, from_addr TEXT NOT NULL, from_name TEXT,"
    " sender TEXT, reply_to TEXT, to_json TEXT, cc_json TEXT, bcc_json TEXT,"
    " subject TEXT, text TEXT, html TEXT, attachments_json TEXT,"
    " meta_json TEXT, recipients_json TEXT, created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL, sent_at INTEGER, next_attempt_at INTEGER,"
    " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,"
    " smtp_reply TEXT);"
    "CREATE INDEX messages_org ON messages(org, created_at);"
    "CREATE INDEX messages_account ON messages(account, created_at);"
    "CREATE INDEX messages_status ON messages(status, created_at);"
    "CREATE TABLE message_rcpt ("
    " id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,"
    " email TEXT NOT NULL, kind TEXT NOT NULL,"
    " PRIMARY KEY (email, id, kind)) WITHOUT ROWID;"
    "CREATE INDEX message_rcpt_id ON message_rcpt(id);"
    "PRAGMA user_version = 1;";

/* Writes `r` into a version-1 file the way version 1 did. */
static int
v1_insert(sqlite3 *db, const struct mc_record *r)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        db,
        "INSERT INTO messages (id, org, account, type, status, path,"
        " path_reason, from_addr, from_name, sender, reply_to, to_json,"
        " cc_json, bcc_json, subject, text, html, attachments_json,"
        " meta_json, recipients_json, created_at, updated_at, sent_at,"
        " next_attempt_at, attempts, last_error, smtp_reply) VALUES (?1,"
        " ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,"
        " ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)",
        -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    const char *strs[] = {r->id,
                          r->org,
                          r->account,
                          r->type,
                          mc_status_name(r->status),
                          r->path,
                          r->path_reason,
                          r->from,
                          r->from_name,
                          r->sender,
                          r->reply_to,
                          r->to_json,
                          r->cc_json,
                          r->bcc_json,
                          r->subject,
                          r->text,
                          r->html,
                          r->attachments_json,
                          r->meta_json,
                          r->recipients_json};
    for (int i = 0; i < 20; i++)
        sqlite3_bind_text(st, i + 1, strs[i], -1, SQLITE_STATIC);
    int64_t times[] = {r->created_at, r->updated_at, r->sent_at,
                       r->next_attempt_at};
    for (int i = 0; i < 4; i++)
        if (times[i] > 0)
            sqlite3_bind_int64(st, 21 + i, times[i]);
    sqlite3_bind_int(st, 25, r->attempts);
    sqlite3_bind_text(st, 26, r->last_error, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 27, r->smtp_reply, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return rc;
    /* Version 1 indexed the lowercased to/cc/bcc addresses. */
    const char *lists[3] = {r->to_json, r->cc_json, r->bcc_json};
    const char *kinds[3] = {"to", "cc", "bcc"};
    for (int k = 0; k < 3; k++) {
        json_t *arr = lists[k] ? json_loads(lists[k], 0, NULL) : NULL;
        size_t i;
        json_t *it;
        json_array_foreach(arr, i, it)
        {
            char *em = xstrdup(json_string_value(json_object_get(it, "email")));
            for (char *p = em; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char)(*p - 'A' + 'a');
            char *sql = sqlite3_mprintf("INSERT OR IGNORE INTO message_rcpt"
                                        " (id, email, kind) VALUES (%Q, %Q,"
                                        " %Q)",
                                        r->id, em, kinds[k]);
            rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
            sqlite3_free(sql);
            free(em);
            if (rc != SQLITE_OK) {
                json_decref(arr);
                return rc;
            }
        }
        json_decref(arr);
    }
    return SQLITE_OK;
}

static void
check_same_record(const struct mc_record *g, const struct mc_record *r)
{
    CHECK_STR(g->id, r->id);
    CHECK(same_str(g->org, r->org) && same_str(g->account, r->account) &&
          same_str(g->type, r->type));
    CHECK(g->status == r->status);
    CHECK(same_str(g->path, r->path) &&
          same_str(g->path_reason, r->path_reason));
    CHECK(same_str(g->from, r->from) && same_str(g->from_name, r->from_name));
    CHECK(same_str(g->sender, r->sender) && same_str(g->reply_to, r->reply_to));
    CHECK(same_str(g->to_json, r->to_json) &&
          same_str(g->cc_json, r->cc_json) &&
          same_str(g->bcc_json, r->bcc_json));
    CHECK(same_str(g->subject, r->subject) && same_str(g->text, r->text) &&
          same_str(g->html, r->html));
    CHECK(same_str(g->attachments_json, r->attachments_json) &&
          same_str(g->meta_json, r->meta_json) &&
          same_str(g->recipients_json, r->recipients_json));
    CHECK(g->created_at == r->created_at && g->updated_at == r->updated_at &&
          g->sent_at == r->sent_at && g->next_attempt_at == r->next_attempt_at);
    CHECK(g->attempts == r->attempts);
    CHECK(same_str(g->last_error, r->last_error) &&
          same_str(g->smtp_reply, r->smtp_reply));
}

#define NV1 40
#define V1_GONE 7 /* deleted before the migration: a gap in the rowids */

static int
v1_to_ann(int i)
{
    return i % 2 == 1 || i % 3 == 0;
}

/* Ids of the version-1 records matching `pred` (NULL: all), newest
 * first, into want[]; returns how many. */
static size_t
v1_expect(const char *want[NV1], int (*pred)(int, const void *),
          const void *arg)
{
    size_t n = 0;
    static char ids[NV1][16];
    for (int i = NV1 - 1; i >= 0; i--) {
        if (i == V1_GONE || (pred && !pred(i, arg)))
            continue;
        snprintf(ids[i], sizeof ids[i], "v1-%02d", i);
        want[n++] = ids[i];
    }
    return n;
}

static int
pred_ann(int i, const void *arg)
{
    (void)arg;
    return v1_to_ann(i);
}

static int
pred_status(int i, const void *arg)
{
    return i % 5 == *(const int *)arg;
}

static struct mc_record *
v1_record(int i)
{
    char id[16];
    snprintf(id, sizeof id, "v1-%02d", i);
    struct mc_record *r;
    if (i % 2 == 1) {
        r = full_record(id); /* to Ann@Example.COM, cc, bcc, everything */
        free(r->subject);
        r->subject = xasprintf("subject %d", i);
    } else {
        char *to = xasprintf("%s%d@Example.org", i % 3 ? "Bob" : "x", i);
        r = small_record(id, i % 4 ? "acme" : "beta", "u1", MC_QUEUED, T0, to);
        free(to);
        if (i % 3 == 0) {
            free(r->cc_json);
            r->cc_json = xstrdup("[{\"email\":\"ANN@example.com\"}]");
        }
    }
    r->status = (enum mc_status)(i % 5);
    r->created_at = T0 + 10 * i;
    r->updated_at = T0 + 10 * i + 1;
    return r;
}

/* Makes a version-1 store at `path` holding v1_record(0..NV1-1) but
 * V1_GONE. */
static int
make_v1(const char *path)
{
    sqlite3 *db = NULL;
    int ok = sqlite3_open(path, &db) == SQLITE_OK &&
             sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL) ==
                 SQLITE_OK &&
             sqlite3_exec(db, v1_schema, NULL, NULL, NULL) == SQLITE_OK &&
             sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
    for (int i = 0; ok && i < NV1; i++) {
        struct mc_record *r = v1_record(i);
        ok = v1_insert(db, r) == SQLITE_OK;
        mc_record_free(r);
    }
    ok = ok && sqlite3_exec(db,
                            "DELETE FROM message_rcpt WHERE id = 'v1-07';"
                            "DELETE FROM messages WHERE id = 'v1-07'; COMMIT",
                            NULL, NULL, NULL) == SQLITE_OK;
    sqlite3_close(db);
    return ok;
}

static void
test_migrate_v1(void)
{
    char *dir = tmpdir();
    char *path = xasprintf("%s/mc.db", dir);
    char *url = xasprintf("sqlite://%s", path);
    CHECK(make_v1(path));
    CHECK(raw_int(path, "PRAGMA user_version", NULL) == 1);

    struct mc *m = NULL;
    struct herr e = {0};
    CHECK_MSG(mc_open(url, &m, &e) == 0 && m, "%s", e.msg);
    if (m == NULL)
        goto out;
    CHECK(raw_int(path, "PRAGMA user_version", NULL) == 3);

    /* Every record as it was. */
    int same = 0;
    for (int i = 0; i < NV1; i++) {
        struct mc_record *r = v1_record(i);
        struct mc_record *g = NULL;
        int rc = mc_get(m, r->id, &g, &e);
        if (i == V1_GONE) {
            CHECK(rc == HERR_NOTFOUND);
        } else {
            CHECK_MSG(rc == 0 && g, "%s: %s", r->id, e.msg);
            if (g) {
                int before = t_fail;
                check_same_record(g, r);
                same += t_fail == before;
            }
        }
        mc_record_free(g);
        mc_record_free(r);
    }
    CHECK(same == NV1 - 1);

    /* Listings: all, by recipient (to or cc, any case), by status, by
     * org and status. */
    const char *want[NV1];
    struct mc_filter f = {0};
    f.limit = MC_LIST_MAX;
    size_t n = v1_expect(want, NULL, NULL);
    check_ids(m, &f, want, n);
    f.to = "Ann@example.COM";
    n = v1_expect(want, pred_ann, NULL);
    CHECK(n > 10);
    check_ids(m, &f, want, n);
    f.to = "bob4@example.org";
    check_ids(m, &f, IDS("v1-04"), 1);
    f.to = NULL;
    f.has_status = 1;
    for (int st = 0; st < 5; st++) {
        f.status = (enum mc_status)st;
        n = v1_expect(want, pred_status, &st);
        check_ids(m, &f, want, n);
    }
    f.org = "beta";
    f.status = MC_QUEUED;
    check_ids(m, &f, IDS("v1-20", "v1-00"), 2);

    /* Writes go on: new records after the old ones, updates of old. */
    struct mc_record *r = full_record("after-1");
    free(r->subject);
    r->subject = xstrdup("new subject");
    r->created_at = T0 + 10 * NV1;
    CHECK(mc_insert(m, r, NULL, &e) == 0);
    mc_record_free(r);
    struct mc_update u;
    mc_update_init(&u, "v1-39", MC_FAILED);
    u.last_error = "550 gone";
    CHECK(mc_update(m, &u, &e) == 0);
    struct mc_record *g = NULL;
    CHECK(mc_get(m, "after-1", &g, &e) == 0 && g);
    if (g)
        CHECK_STR(g->subject, "new subject");
    mc_record_free(g);
    g = NULL;
    CHECK(mc_get(m, "v1-39", &g, &e) == 0 && g);
    if (g) {
        CHECK(g->status == MC_FAILED);
        CHECK_STR(g->last_error, "550 gone");
        CHECK_STR(g->subject, "subject 39");
    }
    mc_record_free(g);
    memset(&f, 0, sizeof f);
    f.to = "ann@example.com";
    f.limit = 2;
    check_ids(m, &f, IDS("after-1", "v1-39"), 2);
    mc_close(m);

    /* Nothing of version 1 is left; the file is sound. */
    CHECK(raw_int(path,
                  "SELECT count(*) FROM sqlite_master WHERE name LIKE '%v1%'",
                  NULL) == 0);
    const char *txt = NULL;
    raw_int(path, "PRAGMA integrity_check", &txt);
    CHECK_STR(txt, "ok");
    CHECK(raw_int(path, "SELECT count(*) FROM pragma_foreign_key_check",
                  NULL) == 0);
    CHECK(raw_int(path, "SELECT count(*) FROM messages", NULL) == NV1);
    CHECK(raw_int(path, "SELECT count(*) FROM message_content", NULL) == NV1);

    /* Opening again changes nothing. */
    m = NULL;
    CHECK(mc_open(url, &m, &e) == 0 && m);
    if (m)
        CHECK(exists(m, "v1-00") && exists(m, "after-1"));
    mc_close(m);
    CHECK(raw_int(path, "PRAGMA user_version", NULL) == 3);
out:
    free(url);
    free(path);
    rmtree(dir);
}

/* A migration that fails leaves the version-1 file as it was; files that
 * are not ours are refused, naming the file. */
static void
test_migrate_refused(void)
{
    char *dir = tmpdir();
    char *path = xasprintf("%s/mc.db", dir);
    char *url = xasprintf("sqlite://%s", path);
    CHECK(make_v1(path));
    /* Something in the way of the new schema. */
    CHECK(raw_exec(path, "CREATE TABLE message_content (x)") == SQLITE_OK);
    struct mc *m = (struct mc *)1;
    struct herr e = {0};
    CHECK(mc_open(url, &m, &e) == HERR_STORE && m == NULL);
    CHECK_MSG(strstr(e.msg, "migrating") && strstr(e.msg, path), "%s", e.msg);
    CHECK(raw_int(path, "PRAGMA user_version", NULL) == 1);
    CHECK(raw_int(path, "SELECT count(*) FROM messages", NULL) == NV1 - 1);
    CHECK(raw_int(path, "SELECT count(*) FROM message_rcpt", NULL) > NV1);
    CHECK(raw_int(path,
                  "SELECT count(*) FROM sqlite_master WHERE name IN"
                  " ('messages_org', 'messages_status', 'message_rcpt_id')",
                  NULL) == 3);
    /* Out of the way, it goes through. */
    CHECK(raw_exec(path, "DROP TABLE message_content") == SQLITE_OK);
    m = NULL;
    CHECK(mc_open(url, &m, &e) == 0 && m);
    if (m)
        CHECK(exists(m, "v1-39"));
    mc_close(m);
    free(url);
    free(path);

    /* Version 0 with a table of ours' name: not mixed with. */
    path = xasprintf("%s/other.db", dir);
    url = xasprintf("sqlite://%s", path);
    CHECK(raw_exec(path, "CREATE TABLE messages (id, body)") == SQLITE_OK);
    m = (struct mc *)1;
    CHECK(mc_open(url, &m, &e) == HERR_STORE && m == NULL);
    CHECK_MSG(strstr(e.msg, "already exists") && strstr(e.msg, path), "%s",
              e.msg);
    /* A negative version is not ours either. */
    CHECK(raw_exec(path, "PRAGMA user_version = -3") == SQLITE_OK);
    CHECK(mc_open(url, &m, &e) == HERR_STORE && m == NULL);
    CHECK_MSG(strstr(e.msg, "version -3") && strstr(e.msg, path), "%s", e.msg);
    free(url);
    free(path);
    rmtree(dir);
}

static struct job *
sample_job(void)
{
    static struct job_addr to[2] = {{"ann@example.com", "Ann Lee"},
                                    {"bob@example.com", NULL}};
    static struct job_addr cc[1] = {{"Carol@Example.com", "Carol"}};
    static struct job_addr bcc[1] = {{"audit@acme.example", NULL}};
    static unsigned char pdf[] = "%PDF-SECRET-CONTENT";
    static struct job_attachment att[2] = {
        {"receipt.pdf", "application/pdf", pdf, sizeof pdf - 1},
        {"blob.bin", NULL, pdf, 3},
    };
    static struct job j;
    memset(&j, 0, sizeof j);
    j.id = "job-42";
    j.type = "receipt";
    j.org = "acme";
    j.account = "acct-7";
    j.from = "billing@acme.example";
    j.from_name = "Acme \"Billing\"";
    j.to = to;
    j.nto = 2;
    j.cc = cc;
    j.ncc = 1;
    j.bcc = bcc;
    j.nbcc = 1;
    j.subject = "Receipt #42";
    j.text = "Thank you.";
    j.html = "<b>Thank you.</b>";
    j.attachments = att;
    j.nattachments = 2;
    j.meta_json = "{\"order\":42}";
    return &j;
}

/* One record's JSON from mc_record_write, checked: json_dumps'
 * compact form of its own parse (so the bytes are those of the jansson
 * tree it replaced), and shaped by flags. */
static void
check_written(const struct mc_record *r, unsigned flags)
{
    struct buf b;
    buf_init(&b, 0);
    CHECK(mc_record_write(&b, r, flags) == 0);
    json_error_t jerr;
    json_t *o = json_loadb(b.p, b.len, 0, &jerr);
    CHECK_MSG(o && json_is_object(o), "%.*s: %s", (int)b.len, b.p, jerr.text);
    if (o == NULL) {
        buf_free(&b);
        return;
    }
    char *canon = json_dumps(o, JSON_COMPACT);
    CHECK_MSG(canon && strlen(canon) == b.len && memcmp(canon, b.p, b.len) == 0,
              "written %.*s\n  jansson %s", (int)b.len, b.p, canon);
    free(canon);
    int bodies = !(flags & MC_JSON_NO_BODIES), bcc = !(flags & MC_JSON_NO_BCC);
    CHECK(json_object_size(o) == 29u - (bodies ? 0 : 2) - (bcc ? 0 : 1));
    CHECK((json_object_get(o, "text") != NULL) == bodies);
    CHECK((json_object_get(o, "html") != NULL) == bodies);
    CHECK((json_object_get(o, "bcc") != NULL) == bcc);
    CHECK_STR(json_string_value(json_object_get(o, "id")), r->id);
    CHECK_STR(json_string_value(json_object_get(o, "status")),
              mc_status_name(r->status));
    CHECK(json_integer_value(json_object_get(o, "attempts")) == r->attempts);
    size_t i;
    json_t *x;
    int nbcc = 0;
    json_array_foreach(json_object_get(o, "recipients"), i, x)
    {
        const char *kind = json_string_value(json_object_get(x, "kind"));
        nbcc += kind && strcmp(kind, "bcc") == 0;
    }
    if (!bcc)
        CHECK(nbcc == 0);
    if (flags == 0) {
        char *whole = mc_record_to_json(r);
        CHECK(strlen(whole) == b.len && memcmp(whole, b.p, b.len) == 0);
        free(whole);
    }
    json_decref(o);
    buf_free(&b);
}

/* mc_record_write over records plain and odd: every string escaped as
 * jansson would, bytes that are not UTF-8 as U+FFFD, stored JSON with
 * spaces, escapes and reals re-written compact, text that is not JSON
 * kept as a string, empty and missing values, a buffer that is full. */
static void
test_record_write(void)
{
    clock_set_fixed(1764169087123LL);
    struct mc_record *r = mc_record_from_job(sample_job());
    clock_set_fixed(-1);
    CHECK(r != NULL);
    if (r == NULL)
        return;
    for (unsigned f = 0; f < 4; f++)
        check_written(r, f);
    CHECK(strstr(r->recipients_json, "\"bcc\"") != NULL);

    free(r->subject);
    r->subject = xstrdup("quote \" back \\ tab \t nl \n ctl \x01 del \x7f "
                         "\xe2\x80\xa8 caf\xc3\xa9 <img src=x>");
    r->smtp_reply = xstrdup("250 ok \xff\xfe raw \xc3");
    r->last_error = xstrdup("\xed\xa0\x80 surrogate, \xc0\xaf overlong");
    free(r->meta_json);
    r->meta_json = xstrdup(" { \"k\" : [ 1 , 2.50 , 1e3, -0.0, "
                           "\"\\u00e9\\/\\ud83d\\ude00\" ] } ");
    free(r->attachments_json);
    r->attachments_json = xstrdup("not json");
    free(r->cc_json);
    r->cc_json = xstrdup("{\"a\":1,\"a\":2}");
    r->status = MC_FAILED;
    r->attempts = 2147483647;
    r->sent_at = -5;
    r->next_attempt_at = 1764169099000LL;
    for (unsigned f = 0; f < 4; f++)
        check_written(r, f);
    struct buf b;
    buf_init(&b, 0);
    CHECK(mc_record_write(&b, r, 0) == 0);
    json_t *o = json_loadb(b.p, b.len, 0, NULL);
    const char *reply = json_string_value(json_object_get(o, "smtp_reply"));
    CHECK(reply && strstr(reply, "\xef\xbf\xbd") != NULL);
    CHECK_STR(json_string_value(json_object_get(o, "attachments")), "not json");
    CHECK(json_is_object(json_object_get(o, "meta")));
    CHECK(json_is_null(json_object_get(o, "sent_at")));
    json_decref(o);
    size_t whole = b.len;
    buf_free(&b);

    /* nothing but nulls */
    struct mc_record empty;
    memset(&empty, 0, sizeof empty);
    empty.id = "e-1";
    for (unsigned f = 0; f < 4; f++)
        check_written(&empty, f);

    /* a buffer with a maximum: refused, never past it */
    buf_init(&b, whole / 2);
    CHECK(mc_record_write(&b, r, 0) != 0);
    CHECK(b.len <= whole / 2);
    buf_free(&b);
    mc_record_free(r);
}

static void
test_from_job(void)
{
    clock_set_fixed(T0 + 77);
    struct job *j = sample_job();
    struct mc_record *r = mc_record_from_job(j);
    CHECK(r != NULL);
    if (r == NULL)
        return;
    CHECK_STR(r->id, "job-42");
    CHECK_STR(r->org, "acme");
    CHECK_STR(r->account, "acct-7");
    CHECK_STR(r->type, "receipt");
    CHECK(r->status == MC_QUEUED);
    CHECK(r->path == NULL && r->path_reason == NULL && r->sender == NULL);
    CHECK_STR(r->from, "billing@acme.example");
    CHECK_STR(r->from_name, "Acme \"Billing\"");
    CHECK_STR(r->reply_to, "billing@acme.example"); /* defaults to from */
    CHECK_STR(r->to_json, "[{\"email\":\"ann@example.com\",\"name\":\"Ann "
                          "Lee\"},{\"email\":\"bob@example.com\"}]");
    CHECK_STR(r->cc_json,
              "[{\"email\":\"Carol@Example.com\",\"name\":\"Carol\"}]");
    CHECK_STR(r->bcc_json, "[{\"email\":\"audit@acme.example\"}]");
    CHECK_STR(r->subject, "Receipt #42");
    CHECK_STR(r->text, "Thank you.");
    CHECK_STR(r->html, "<b>Thank you.</b>");
    CHECK_STR(r->attachments_json,
              "[{\"filename\":\"receipt.pdf\",\"content_type\":"
              "\"application/pdf\",\"size\":19},{\"filename\":\"blob.bin\","
              "\"content_type\":\"application/octet-stream\",\"size\":3}]");
    CHECK(strstr(r->attachments_json, "SECRET") == NULL);
    CHECK_STR(r->meta_json, "{\"order\":42}");
    CHECK(r->meta_json != j->meta_json); /* a copy */
    CHECK_STR(r->recipients_json,
              "[{\"email\":\"ann@example.com\",\"kind\":\"to\",\"status\":"
              "\"pending\"},{\"email\":\"bob@example.com\",\"kind\":\"to\","
              "\"status\":\"pending\"},{\"email\":\"Carol@Example.com\","
              "\"kind\":\"cc\",\"status\":\"pending\"},{\"email\":"
              "\"audit@acme.example\",\"kind\":\"bcc\",\"status\":"
              "\"pending\"}]");
    CHECK(r->created_at == T0 + 77 && r->updated_at == T0 + 77);
    CHECK(r->sent_at == 0 && r->next_attempt_at == 0 && r->attempts == 0);
    CHECK(r->last_error == NULL && r->smtp_reply == NULL);
    mc_record_free(r);

    /* reply_to given; no meta, no cc/bcc, no attachments. */
    j->reply_to = "help@acme.example";
    j->meta_json = NULL;
    j->ncc = j->nbcc = j->nattachments = 0;
    j->cc = j->bcc = NULL;
    j->attachments = NULL;
    j->html = NULL;
    r = mc_record_from_job(j);
    CHECK(r != NULL);
    if (r) {
        CHECK_STR(r->reply_to, "help@acme.example");
        CHECK(r->meta_json == NULL && r->html == NULL);
        CHECK_STR(r->cc_json, "[]");
        CHECK_STR(r->bcc_json, "[]");
        CHECK_STR(r->attachments_json, "[]");
    }
    mc_record_free(r);

    /* The JSON texts are written, not dumped by jansson: the same bytes
     * as jansson's JSON_COMPACT for any name (escapes, U+2028, '/',
     * non-ASCII), and a byte that is not UTF-8 shown as U+FFFD. */
    static char *names[] = {"quote \" back \\ tab \t nl \n ctl \x01 del \x7f",
                            "a/b <c>",
                            "\xe2\x80\xa8 caf\xc3\xa9 \xf0\x9f\x98\x80", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char email[] = "x@example.com";
        struct job_addr a = {.email = email, .name = names[i]};
        j->to = &a;
        j->nto = 1;
        r = mc_record_from_job(j);
        json_t *want =
            json_pack("[{s:s,s:s}]", "email", a.email, "name", a.name);
        char *w = json_dumps(want, JSON_COMPACT);
        CHECK(r != NULL && w != NULL && strcmp(r->to_json, w) == 0);
        json_t *wr = json_pack("[{s:s,s:s,s:s}]", "email", a.email, "kind",
                               "to", "status", "pending");
        char *wrs = json_dumps(wr, JSON_COMPACT);
        CHECK(r != NULL && wrs != NULL && strcmp(r->recipients_json, wrs) == 0);
        free(w);
        free(wrs);
        json_decref(want);
        json_decref(wr);
        mc_record_free(r);
    }
    char bemail[] = "x@example.com", bname[] = "bad \xff end";
    struct job_addr bad = {.email = bemail, .name = bname};
    j->to = &bad;
    r = mc_record_from_job(j);
    CHECK(r != NULL);
    if (r)
        CHECK_STR(r->to_json, "[{\"email\":\"x@example.com\",\"name\":"
                              "\"bad \xef\xbf\xbd end\"}]");
    mc_record_free(r);

    j->id = NULL;
    CHECK(mc_record_from_job(j) == NULL);
    clock_set_fixed(-1);
}

static const char *
jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void
test_to_json(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    clock_set_fixed(1764169087123LL); /* 2025-11-26T14:58:07.123Z */
    struct mc_record *r = mc_record_from_job(sample_job());
    struct herr e = {0};
    CHECK(r && mc_insert(m, r, NULL, &e) == 0);
    clock_set_fixed(1764169090000LL);
    struct mc_update u;
    mc_update_init(&u, "job-42", MC_SENT);
    u.path = "scheme";
    u.sender = "billing@acme.example";
    u.attempts_add = 1;
    u.sent_at = 1764169089500LL;
    u.smtp_reply = "250 ok \xff\xfe raw"; /* not UTF-8 */
    CHECK(mc_update(m, &u, &e) == 0);
    mc_record_free(r);
    r = NULL;
    CHECK(mc_get(m, "job-42", &r, &e) == 0 && r);
    char *js = r ? mc_record_to_json(r) : NULL;
    json_error_t jerr;
    json_t *o = js ? json_loads(js, 0, &jerr) : NULL;
    CHECK_MSG(o && json_is_object(o), "%s", js ? jerr.text : "no json");
    if (o) {
        const char *keys[] = {"id",
                              "org",
                              "account",
                              "type",
                              "status",
                              "path",
                              "path_reason",
                              "from",
                              "from_name",
                              "sender",
                              "reply_to",
                              "to",
                              "cc",
                              "bcc",
                              "subject",
                              "text",
                              "html",
                              "attachments",
                              "meta",
                              "recipients",
                              "created_at",
                              "updated_at",
                              "sent_at",
                              "attempts",
                              "next_attempt_at",
                              "last_error",
                              "smtp_reply",
                              "resend_of",
                              "body_expired"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            CHECK_MSG(json_object_get(o, keys[i]) != NULL, "key %s", keys[i]);
        CHECK(json_object_size(o) == sizeof keys / sizeof keys[0]);
        /* and in this order (SPEC §6's), as mc show and the API print it */
        const char *key;
        json_t *kv;
        size_t at = 0;
        json_object_foreach(o, key, kv)
        {
            CHECK_MSG(at < sizeof keys / sizeof keys[0] &&
                          strcmp(key, keys[at]) == 0,
                      "key %zu is %s", at, key);
            at++;
        }
        CHECK_STR(jstr(o, "id"), "job-42");
        CHECK_STR(jstr(o, "org"), "acme");
        CHECK_STR(jstr(o, "account"), "acct-7");
        CHECK_STR(jstr(o, "type"), "receipt");
        CHECK_STR(jstr(o, "status"), "sent");
        CHECK_STR(jstr(o, "path"), "scheme");
        CHECK(json_is_null(json_object_get(o, "path_reason")));
        CHECK_STR(jstr(o, "from"), "billing@acme.example");
        CHECK_STR(jstr(o, "from_name"), "Acme \"Billing\"");
        CHECK_STR(jstr(o, "sender"), "billing@acme.example");
        CHECK_STR(jstr(o, "reply_to"), "billing@acme.example");
        json_t *to = json_object_get(o, "to");
        CHECK(json_is_array(to) && json_array_size(to) == 2);
        CHECK_STR(jstr(json_array_get(to, 0), "email"), "ann@example.com");
        CHECK_STR(jstr(json_array_get(to, 0), "name"), "Ann Lee");
        CHECK(json_object_get(json_array_get(to, 1), "name") == NULL ||
              json_is_null(json_object_get(json_array_get(to, 1), "name")));
        CHECK(json_array_size(json_object_get(o, "cc")) == 1);
        CHECK(json_array_size(json_object_get(o, "bcc")) == 1);
        CHECK_STR(jstr(o, "subject"), "Receipt #42");
        CHECK_STR(jstr(o, "text"), "Thank you.");
        CHECK_STR(jstr(o, "html"), "<b>Thank you.</b>");
        json_t *att = json_object_get(o, "attachments");
        CHECK(json_is_array(att) && json_array_size(att) == 2);
        CHECK(json_integer_value(
                  json_object_get(json_array_get(att, 0), "size")) == 19);
        CHECK_STR(jstr(json_array_get(att, 1), "content_type"),
                  "application/octet-stream");
        json_t *meta = json_object_get(o, "meta");
        CHECK(json_is_object(meta) &&
              json_integer_value(json_object_get(meta, "order")) == 42);
        json_t *rc = json_object_get(o, "recipients");
        CHECK(json_is_array(rc) && json_array_size(rc) == 4);
        CHECK_STR(jstr(json_array_get(rc, 3), "kind"), "bcc");
        CHECK_STR(jstr(json_array_get(rc, 0), "status"), "pending");
        CHECK_STR(jstr(o, "created_at"), "2025-11-26T14:58:07.123Z");
        CHECK_STR(jstr(o, "updated_at"), "2025-11-26T14:58:10.000Z");
        CHECK_STR(jstr(o, "sent_at"), "2025-11-26T14:58:09.500Z");
        CHECK(json_is_null(json_object_get(o, "next_attempt_at")));
        CHECK(json_is_integer(json_object_get(o, "attempts")) &&
              json_integer_value(json_object_get(o, "attempts")) == 1);
        CHECK(json_is_null(json_object_get(o, "last_error")));
        CHECK_STR(jstr(o, "smtp_reply"), "250 ok \xef\xbf\xbd\xef\xbf\xbd raw");
    }
    CHECK(js == NULL || strchr(js, '\n') == NULL); /* one line */
    json_decref(o);
    free(js);
    mc_record_free(r);

    /* Stored JSON that does not parse is shown as a string, not lost. */
    r = full_record("odd");
    free(r->meta_json);
    r->meta_json = xstrdup("{broken");
    js = mc_record_to_json(r);
    o = json_loads(js, 0, NULL);
    CHECK(o != NULL);
    CHECK_STR(jstr(o, "meta"), "{broken");
    json_decref(o);
    free(js);
    mc_record_free(r);

    clock_set_fixed(-1);
    mc_close(m);
    rmtree(dir);
}

#define NCHILD 3
#define PER_CHILD 500
#define BATCH 25

static int
child_run(const char *url, int c, int gate)
{
    char x;
    while (read(gate, &x, 1) > 0) /* wait until the parent opens the gate */
        ;
    close(gate);
    struct mc *m = NULL;
    struct herr e = {0};
    if (mc_open(url, &m, &e) != 0) {
        fprintf(stderr, "child %d: open: %s\n", c, e.msg);
        return 1;
    }
    int fails = 0;
    char org[16];
    snprintf(org, sizeof org, "org%d", c);
    for (int i = 0; i < PER_CHILD && !fails; i += BATCH) {
        if (mc_batch_begin(m, &e) != 0) {
            fprintf(stderr, "child %d: begin: %s\n", c, e.msg);
            fails++;
            break;
        }
        for (int k = i; k < i + BATCH && k < PER_CHILD; k++) {
            char id[32];
            snprintf(id, sizeof id, "mp-%d-%03d", c, k);
            /* on PostgreSQL in a day that has no partition yet: the
             * children race to create it inside their batches */
            struct mc_record *r = small_record(
                id, org, "acct", MC_QUEUED,
                pg_mode ? T0 + 400 * DAY + k : clock_now_ms(), "r@example.com");
            struct mc_update u1, u2;
            mc_update_init(&u1, id, MC_SENDING);
            mc_update_init(&u2, id, MC_SENT);
            u2.attempts_add = 1;
            u2.sent_at = clock_now_ms();
            u2.path = "relay";
            if (mc_insert(m, r, NULL, &e) != 0 || mc_update(m, &u1, &e) != 0 ||
                mc_update(m, &u2, &e) != 0) {
                fprintf(stderr, "child %d: %s: %s\n", c, id, e.msg);
                fails++;
            }
            mc_record_free(r);
        }
        if (fails) {
            mc_batch_rollback(m);
        } else if (mc_batch_commit(m, &e) != 0) {
            fprintf(stderr, "child %d: commit: %s\n", c, e.msg);
            fails++;
        }
    }
    mc_close(m);
    return fails ? 1 : 0;
}

static void
test_multiprocess(void)
{
    char *dir = tmpdir();
    char *url = store_url(dir); /* the file does not exist yet */
    int gate[2];
    CHECK(pipe(gate) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pids[NCHILD];
    for (int c = 0; c < NCHILD; c++) {
        pids[c] = fork();
        if (pids[c] == 0) {
            close(gate[1]);
            int rc = child_run(url, c, gate[0]);
            _exit(rc);
        }
        CHECK(pids[c] > 0);
    }
    close(gate[0]);
    close(gate[1]); /* all children start now */
    for (int c = 0; c < NCHILD; c++) {
        int st = 0;
        CHECK(pids[c] > 0 && waitpid(pids[c], &st, 0) == pids[c]);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d status %d",
                  c, st);
    }
    struct mc *m = open_store(dir);
    if (m) {
        int good = 0;
        for (int c = 0; c < NCHILD; c++)
            for (int k = 0; k < PER_CHILD; k++) {
                char id[32];
                snprintf(id, sizeof id, "mp-%d-%03d", c, k);
                struct mc_record *r = NULL;
                if (mc_get(m, id, &r, NULL) == 0 && r->status == MC_SENT &&
                    r->attempts == 1 && r->sent_at > 0 &&
                    same_str(r->path, "relay"))
                    good++;
                mc_record_free(r);
            }
        CHECK_MSG(good == NCHILD * PER_CHILD, "%d good rows", good);
        struct mc_filter f = {0};
        f.has_status = 1;
        f.status = MC_SENT;
        f.org = "org1";
        f.limit = MC_LIST_MAX;
        struct mc_record **v = NULL;
        size_t n = 0;
        CHECK(mc_list(m, &f, &v, &n, NULL, NULL) == 0 && n == PER_CHILD);
        mc_records_free(v, n);
        mc_close(m);
    }
    free(url);
    rmtree(dir);
}

/* Permission bits of a path, or -1. */
static int
mode_of(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return -1;
    return (int)(sb.st_mode & 07777);
}

/* The store holds private mail: a new store is 0600 (its -wal and -shm
 * too) in directories created 0700, whatever the umask allows; what
 * already exists keeps its mode. */
static void
test_modes(void)
{
    mode_t old = umask(022); /* the usual umask, which allows 0644 */
    char *dir = tmpdir();
    struct mc *m = open_store(dir); /* creates sub/dir/mc.db */
    char *sub = xasprintf("%s/sub", dir);
    char *subdir = xasprintf("%s/sub/dir", dir);
    char *db = xasprintf("%s/sub/dir/mc.db", dir);
    char *wal = xasprintf("%s-wal", db), *shm = xasprintf("%s-shm", db);
    if (m) {
        insert_rec(m, full_record("private"));
        CHECK_MSG(mode_of(sub) == 0700, "sub is %o", mode_of(sub));
        CHECK_MSG(mode_of(subdir) == 0700, "sub/dir is %o", mode_of(subdir));
        CHECK_MSG(mode_of(db) == 0600, "mc.db is %o", mode_of(db));
        /* the store is open in WAL mode and written: both files exist */
        CHECK_MSG(mode_of(wal) == 0600, "mc.db-wal is %o", mode_of(wal));
        CHECK_MSG(mode_of(shm) == 0600, "mc.db-shm is %o", mode_of(shm));
        mc_close(m);
    }
    m = open_store(dir); /* reopening changes nothing */
    if (m) {
        CHECK(exists(m, "private"));
        mc_close(m);
    }
    CHECK(mode_of(db) == 0600 && mode_of(sub) == 0700);

    /* an existing directory and an existing (empty) file keep their mode */
    char *open_dir = xasprintf("%s/shared", dir);
    CHECK(mkdir(open_dir, 0755) == 0);
    char *file = xasprintf("%s/mc.db", open_dir);
    int fd = open(file, O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0);
    close(fd);
    CHECK(chmod(file, 0640) == 0);
    char *url = xasprintf("sqlite://%s", file);
    struct herr e = {0};
    m = NULL;
    CHECK_MSG(mc_open(url, &m, &e) == 0 && m, "%s", e.msg);
    if (m) {
        insert_rec(m, full_record("kept"));
        mc_close(m);
    }
    CHECK_MSG(mode_of(file) == 0640, "an existing mc.db became %o",
              mode_of(file));
    CHECK_MSG(mode_of(open_dir) == 0755, "an existing directory became %o",
              mode_of(open_dir));
    free(url);
    free(file);
    free(open_dir);
    free(sub);
    free(subdir);
    free(db);
    free(wal);
    free(shm);
    rmtree(dir);
    umask(old);
}

/* The filters of SPEC §6.2 beyond org/account/status/to/time: type,
 * path, from, q (subject words), scope, and keyset paging by cursor —
 * every page exactly once, also across records created in the same
 * millisecond. */
static void
test_list_search_and_pages(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    static const char *const subjects[] = {
        "Receipt R-77 for Ana",   "Reminder: medical form due", "Receipt #5521",
        "Réunion café (Ünïcode)", "Registration confirmed ✓",   NULL};
    CHECK(mc_batch_begin(m, &e) == 0);
    for (int i = 0; i < 40; i++) {
        char id[32];
        snprintf(id, sizeof id, "s-%02d", i);
        struct mc_record *r =
            small_record(id, i % 2 ? "acme" : "beta", "u1", MC_QUEUED,
                         T0 + i / 4, /* four records per millisecond */
                         "x@example.com");
        free(r->type);
        r->type = xstrdup(i % 3 ? "receipt" : "reminder");
        r->path = xstrdup(i % 5 ? "relay" : "scheme");
        free(r->from);
        r->from = xstrdup(i % 7 ? "Office@Pine.example" : "x@other.example");
        r->subject = subjects[i % 6] ? xstrdup(subjects[i % 6]) : NULL;
        insert_rec(m, r);
    }
    CHECK(mc_batch_commit(m, &e) == 0);

    /* paging: 40 records, 7 a page, newest first, each once */
    struct mc_filter f;
    memset(&f, 0, sizeof f);
    f.limit = 7;
    char *cursor = NULL;
    int seen = 0, pages = 0, order_ok = 1;
    int64_t last_at = INT64_MAX;
    char last_id[64] = "~";
    do {
        struct mc_record **v = NULL;
        size_t n = 0;
        char *next = NULL;
        f.cursor = cursor;
        CHECK(mc_list(m, &f, &v, &n, &next, &e) == 0);
        for (size_t i = 0; i < n; i++) {
            int before =
                v[i]->created_at < last_at ||
                (v[i]->created_at == last_at && strcmp(v[i]->id, last_id) < 0);
            order_ok &= before;
            last_at = v[i]->created_at;
            snprintf(last_id, sizeof last_id, "%s", v[i]->id);
        }
        seen += (int)n;
        pages++;
        CHECK((next == NULL) == (seen == 40));
        mc_records_free(v, n);
        free(cursor);
        cursor = next;
    } while (cursor && pages < 20);
    CHECK(seen == 40 && pages == 6 && order_ok);

    /* a limit that divides exactly: the last full page has no next */
    f.cursor = NULL;
    f.limit = 40;
    struct mc_record **v = NULL;
    size_t n = 0;
    char *next = (char *)"x";
    CHECK(mc_list(m, &f, &v, &n, &next, &e) == 0 && n == 40 && next == NULL);
    mc_records_free(v, n);

    /* filters */
    memset(&f, 0, sizeof f);
    f.type = "reminder";
    f.org = "beta";
    EXPECT(&f, "s-36", "s-30", "s-24", "s-18", "s-12", "s-06", "s-00");
    memset(&f, 0, sizeof f);
    f.path = "scheme";
    EXPECT(&f, "s-35", "s-30", "s-25", "s-20", "s-15", "s-10", "s-05", "s-00");
    memset(&f, 0, sizeof f);
    f.from = "X@OTHER.example";
    EXPECT(&f, "s-35", "s-28", "s-21", "s-14", "s-07", "s-00");
    memset(&f, 0, sizeof f);
    f.q = "receipt";
    EXPECT(&f, "s-38", "s-36", "s-32", "s-30", "s-26", "s-24", "s-20", "s-18",
           "s-14", "s-12", "s-08", "s-06", "s-02", "s-00");
    f.q = "RECEIPT r-7"; /* every word a prefix of a word: "r", "7" */
    EXPECT(&f, "s-36", "s-30", "s-24", "s-18", "s-12", "s-06", "s-00");
    f.q = "rece 552";
    EXPECT(&f, "s-38", "s-32", "s-26", "s-20", "s-14", "s-08", "s-02");
    f.q = "café Ünï"; /* non-ASCII matches as it is (no case folding) */
    EXPECT(&f, "s-39", "s-33", "s-27", "s-21", "s-15", "s-09", "s-03");
    f.q = "eceipt"; /* a prefix, not a substring */
    check_ids(m, &f, NULL, 0);
    f.q = "café ünï";
    check_ids(m, &f, NULL, 0);
    f.q = "receipt";
    f.org = "beta";
    f.limit = 2;
    EXPECT(&f, "s-38", "s-36");
    f.org = "acme";
    check_ids(m, &f, NULL, 0);
    const char *scope[] = {"beta", "gamma"};
    memset(&f, 0, sizeof f);
    f.scope = scope;
    f.nscope = 2;
    f.limit = 3;
    EXPECT(&f, "s-38", "s-36", "s-34");
    f.org = "acme"; /* outside the scope: nothing */
    check_ids(m, &f, NULL, 0);

    /* bad filters name themselves */
    memset(&f, 0, sizeof f);
    f.q = " -- ";
    CHECK(mc_list(m, &f, &v, &n, NULL, &e) == HERR_INVALID);
    CHECK_STR(e.field, "q");
    f.q = "a b c d e f g h i";
    CHECK(mc_list(m, &f, &v, &n, NULL, &e) == HERR_INVALID);
    f.q = NULL;
    static const char *const bad[] = {"",     "!!!!",       "abc",
                                      "MTIz", "MTIzLmEgYg", "eC5pZA"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f.cursor = bad[i];
        CHECK_MSG(mc_list(m, &f, &v, &n, NULL, &e) == HERR_INVALID, "%s",
                  bad[i]);
        CHECK_STR(e.field, "cursor");
    }
    char *c = mc_cursor_new(1790000000123LL, "job-1:a.b_c-d");
    int64_t at = 0;
    char id[JOB_ID_MAX + 1];
    CHECK(mc_cursor_parse(c, &at, id, sizeof id, &e) == 0);
    CHECK(at == 1790000000123LL);
    CHECK_STR(id, "job-1:a.b_c-d");
    CHECK(strspn(c, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                    "0123456789-_") == strlen(c));
    free(c);

    /* the subject index follows a rendered subject (set_content) */
    struct mc_update u;
    mc_update_init(&u, "s-01", MC_SENT);
    u.set_content = 1;
    u.subject = "Quarterly statement";
    CHECK(mc_update(m, &u, &e) == 0);
    memset(&f, 0, sizeof f);
    f.q = "quarterly";
    EXPECT(&f, "s-01");
    f.q = "reminder medical";
    EXPECT(&f, "s-37", "s-31", "s-25", "s-19", "s-13", "s-07");

    mc_close(m);
    rmtree(dir);
}

/* CSV: RFC 4180 quoting, CRLF, every to/cc address, and no cell a
 * spreadsheet would run as a formula. */
static void
test_csv(void)
{
    struct mc_record *r = full_record("csv-1");
    free(r->subject);
    r->subject = xstrdup("=HYPERLINK(\"http://x\",\"click\")");
    free(r->last_error);
    r->last_error = xstrdup("line one\nline \"two\"");
    struct buf b;
    buf_init(&b, 0);
    mc_csv_header(&b);
    mc_csv_row(&b, r);
    const char *row = strstr(b.p, "\r\n") + 2;
    CHECK(strncmp(b.p,
                  "id,created_at,org,account,type,status,path,from,to,"
                  "subject,attempts,sent_at,last_error\r\n",
                  strlen("id,created_at,org,account,type,status,path,from,to,"
                         "subject,attempts,sent_at,last_error\r\n")) == 0);
    CHECK(strncmp(row, "\"csv-1\",", 8) == 0);
    CHECK(strstr(row, "\"'=HYPERLINK(\"\"http://x\"\",\"\"click\"\")\"") !=
          NULL);
    CHECK(strstr(row, "\"line one\nline \"\"two\"\"\"\r\n") != NULL);
    CHECK(strstr(row, "ann@example.com") || strstr(row, "Ann@Example.COM"));
    buf_free(&b);
    mc_record_free(r);
}

/* A version-2 store (before the subject index) is migrated in place:
 * its records are searchable by subject and sender at once. */
static void
test_migrate_v2(void)
{
    static const char v2[] =
        "CREATE TABLE messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL "
        "UNIQUE, org TEXT NOT NULL, account TEXT NOT NULL, type TEXT NOT "
        "NULL, created_at INTEGER NOT NULL, status TEXT NOT NULL, path TEXT, "
        "path_reason TEXT, sender TEXT, reply_to TEXT, attempts INTEGER NOT "
        "NULL DEFAULT 0, updated_at INTEGER NOT NULL, sent_at INTEGER, "
        "next_attempt_at INTEGER, last_error TEXT, smtp_reply TEXT, "
        "recipients_json TEXT);"
        "CREATE TABLE message_content (seq INTEGER PRIMARY KEY REFERENCES "
        "messages(seq) ON DELETE CASCADE, from_addr TEXT NOT NULL, from_name "
        "TEXT, to_json TEXT, cc_json TEXT, bcc_json TEXT, subject TEXT, text "
        "TEXT, html TEXT, attachments_json TEXT, meta_json TEXT);"
        "CREATE TABLE message_rcpt (email TEXT NOT NULL, seq INTEGER NOT NULL "
        "REFERENCES messages(seq) ON DELETE CASCADE, kind TEXT NOT NULL, "
        "PRIMARY KEY (email, seq, kind)) WITHOUT ROWID;"
        "CREATE INDEX messages_org ON messages(org, created_at);"
        "CREATE INDEX messages_account ON messages(account, created_at);"
        "CREATE INDEX messages_created ON messages(created_at);"
        "CREATE INDEX messages_status ON messages(status, created_at) WHERE "
        "status <> 'sent';"
        "CREATE INDEX message_rcpt_seq ON message_rcpt(seq);"
        "INSERT INTO messages VALUES (1, 'old-1', 'acme', 'a', 'receipt', "
        "1790000000000, 'sent', 'relay', NULL, NULL, NULL, 1, 1790000000001, "
        "NULL, NULL, NULL, NULL, NULL);"
        "INSERT INTO message_content VALUES (1, 'Billing@Acme.example', NULL, "
        "'[{\"email\":\"a@b.example\"}]', NULL, NULL, 'Old receipt "
        "R-1', 'text', NULL, NULL, NULL);"
        "INSERT INTO message_rcpt VALUES ('a@b.example', 1, 'to');"
        "PRAGMA user_version = 2;";
    char *dir = tmpdir();
    char *path = xasprintf("%s/mc.db", dir);
    char *url = xasprintf("sqlite://%s", path);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK &&
          sqlite3_exec(db, v2, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    struct mc *m = NULL;
    struct herr e = {0};
    CHECK_MSG(mc_open(url, &m, &e) == 0 && m, "%s", e.msg);
    if (m) {
        CHECK(raw_int(path, "PRAGMA user_version", NULL) == 3);
        struct mc_filter f;
        memset(&f, 0, sizeof f);
        f.q = "old r";
        f.from = "billing@acme.example";
        EXPECT(&f, "old-1");
        struct mc_record *g = NULL;
        CHECK(mc_get(m, "old-1", &g, &e) == 0 && g);
        if (g) {
            CHECK_STR(g->from, "Billing@Acme.example"); /* as it was */
            CHECK(g->resend_of == NULL && g->body_expired == 0);
        }
        mc_record_free(g);
        /* new records go on as usual */
        insert_rec(m, small_record("new-1", "acme", "a", MC_QUEUED,
                                   1790000000500, "a@b.example"));
        memset(&f, 0, sizeof f);
        f.to = "A@B.example";
        EXPECT(&f, "new-1", "old-1");
        mc_close(m);
    }
    free(url);
    free(path);
    rmtree(dir);
}

/* Retention: old records go (content, recipients and the subject index
 * with them), older bodies are cleared; a dry run changes nothing; twice
 * is harmless; more than a chunk goes in several. */
static void
test_purge(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    const int64_t day = 86400000;
    int64_t now = T0 + 100 * day;
    CHECK(mc_batch_begin(m, &e) == 0);
    int n = MC_PURGE_CHUNK + 20; /* old: 20 days ago */
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "old-%05d", i);
        struct mc_record *r = small_record(id, "acme", "u", MC_SENT,
                                           now - 20 * day + i, "a@example.com");
        r->subject = xstrdup("Old receipt");
        r->text = xstrdup("old text");
        insert_rec(m, r);
    }
    for (int i = 0; i < 10; i++) { /* middle: 5 days ago */
        char id[32];
        snprintf(id, sizeof id, "mid-%02d", i);
        struct mc_record *r = small_record(id, "acme", "u", MC_SENT,
                                           now - 5 * day + i, "a@example.com");
        r->subject = xstrdup("Middle receipt");
        r->text = xstrdup("mid text");
        r->html = xstrdup("<p>mid</p>");
        insert_rec(m, r);
    }
    insert_rec(m, small_record("new-1", "acme", "u", MC_SENT, now - day,
                               "a@example.com"));
    CHECK(mc_batch_commit(m, &e) == 0);

    int64_t rec_before, body_before;
    mc_purge_cutoffs(10, 3, now, &rec_before, &body_before);
    CHECK(rec_before == now - 10 * day && body_before == now - 3 * day);
    mc_purge_cutoffs(0, 0, now, &rec_before, &body_before);
    CHECK(rec_before == 0 && body_before == 0);
    mc_purge_cutoffs(10, 3, now, &rec_before, &body_before);

    struct mc_purge_result res;
    CHECK(mc_purge(m, rec_before, body_before, 1, 0, &res, &e) == 0);
    CHECK_MSG(res.records == n && res.bodies == 10, "dry run %lld %lld",
              res.records, res.bodies);
    struct mc_record *g = NULL;
    CHECK(mc_get(m, "old-00000", &g, &e) == 0); /* nothing changed */
    mc_record_free(g);

    /* in rounds: a limit stops after the chunk that reaches it (on
     * PostgreSQL a day's partition, dropped whole, is one chunk: all the
     * old records are in one day) */
    CHECK(mc_purge(m, rec_before, body_before, 0, 10, &res, &e) == 0);
    CHECK_MSG(res.records == (pg_mode ? n : MC_PURGE_CHUNK) &&
                  res.bodies == 0 && res.more,
              "round %lld %lld %d", res.records, res.bodies, res.more);
    if (pg_mode) { /* the old day's partitions are gone, not emptied */
        time_t t = (time_t)((now - 20 * day) / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        char *sql = xasprintf("SELECT count(*) FROM pg_tables WHERE"
                              " schemaname = current_schema() AND tablename"
                              " LIKE 'herald%%_p%04d%02d%02d'",
                              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
        CHECK(pg_int(dir, sql) == 0);
        free(sql);
        CHECK(pg_int(dir, "SELECT count(*) FROM herald_message_ids") == 11);
    }
    long long total = res.records;
    CHECK(mc_purge(m, rec_before, body_before, 0, 0, &res, &e) == 0);
    CHECK_MSG(total + res.records == n && res.bodies == 10 && !res.more,
              "purge %lld %lld", res.records, res.bodies);
    g = NULL;
    CHECK(mc_get(m, "old-00000", &g, &e) == HERR_NOTFOUND);
    CHECK(mc_get(m, "mid-00", &g, &e) == 0 && g);
    if (g) {
        CHECK(g->text == NULL && g->html == NULL && g->body_expired == 1);
        CHECK_STR(g->subject, "Middle receipt"); /* the rest stays */
    }
    mc_record_free(g);
    g = NULL;
    CHECK(mc_get(m, "new-1", &g, &e) == 0 && g && !g->body_expired);
    mc_record_free(g);
    struct mc_filter f;
    memset(&f, 0, sizeof f);
    f.q = "old receipt";
    check_ids(m, &f, NULL, 0);
    f.q = "middle";
    f.limit = 1;
    EXPECT(&f, "mid-09");
    memset(&f, 0, sizeof f);
    f.to = "a@example.com";
    f.limit = 500;
    struct mc_record **v = NULL;
    size_t cnt = 0;
    CHECK(mc_list(m, &f, &v, &cnt, NULL, &e) == 0 && cnt == 11);
    mc_records_free(v, cnt);
    /* again: nothing left to do */
    CHECK(mc_purge(m, rec_before, body_before, 0, 0, &res, &e) == 0);
    CHECK(res.records == 0 && res.bodies == 0 && !res.more);
    CHECK(mc_purge(m, 0, 0, 0, 0, &res, &e) == 0 && res.records == 0);
    if (pg_mode) /* how far each day's bodies are cleared */
        CHECK(pg_int(dir, "SELECT count(*) FROM herald_bodies_cleared") >= 1);
    mc_close(m);
    /* a record written into a past day afterwards (an import, by another
     * process): the next purge clears its body too */
    clock_set_fixed(now);
    m = open_store(dir);
    if (m) {
        struct mc_record *r =
            small_record("late-1", "acme", "u", MC_SENT, now - 5 * day + 500,
                         "a@example.com");
        r->text = xstrdup("late text");
        insert_rec(m, r);
        CHECK(mc_purge(m, rec_before, body_before, 1, 0, &res, &e) == 0);
        CHECK_MSG(res.bodies == 1, "dry run %lld", res.bodies);
        CHECK(mc_purge(m, rec_before, body_before, 0, 0, &res, &e) == 0);
        CHECK_MSG(res.records == 0 && res.bodies == 1 && !res.more,
                  "late purge %lld %lld", res.records, res.bodies);
        g = NULL;
        CHECK(mc_get(m, "late-1", &g, &e) == 0 && g && g->body_expired &&
              g->text == NULL);
        mc_record_free(g);
        mc_close(m);
    }
    clock_set_fixed(-1);
    rmtree(dir);
}

/* Checkpoints on a handle of their own (the worker's, off the writes'
 * path): the writer leaves them to it, and one copies the log into the
 * database file; PostgreSQL has none and says so. */
static void
test_checkpoint(void)
{
    char *dir = tmpdir();
    struct mc *w = open_store(dir), *c = open_store(dir);
    if (w == NULL || c == NULL) {
        mc_close(w);
        mc_close(c);
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    CHECK(mc_has_checkpoint(w) == !pg_mode);
    mc_checkpoint_elsewhere(w);
    char *db = xasprintf("%s/sub/dir/mc.db", dir);
    struct stat st;
    off_t before = !pg_mode && stat(db, &st) == 0 ? st.st_size : 0;
    CHECK(mc_batch_begin(w, &e) == 0);
    for (int i = 0; i < 300; i++) {
        char id[32];
        snprintf(id, sizeof id, "ck-%04d", i);
        insert_rec(w, small_record(id, "acme", "u", MC_QUEUED, T0 + i,
                                   "a@example.com"));
    }
    CHECK(mc_batch_commit(w, &e) == 0);
    /* the writer did not checkpoint (300 records are far below its
     * fallback); the other handle does, while the writer stays open */
    if (!pg_mode) {
        CHECK(stat(db, &st) == 0 && st.st_size == before);
        CHECK_MSG(mc_checkpoint(c, &e) == 0, "%s", e.msg);
        CHECK(stat(db, &st) == 0 && st.st_size > before);
    } else {
        CHECK(mc_checkpoint(c, &e) == 0);
    }
    CHECK(exists(c, "ck-0299") && exists(w, "ck-0000"));
    free(db);
    mc_close(w);
    mc_close(c);
    rmtree(dir);
}

/* ---- PostgreSQL only ------------------------------------------------ */

/* The schema is versioned, created once, kept on reopening; a newer one
 * is refused; tables that are not ours are not mixed with. */
static void
test_pg_schema(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    int version = -9, before = -9;
    CHECK(mc_schema_version(m, &version, &before) == 0);
    CHECK(version == 3 && before == 0);
    CHECK(pg_int(dir, "SELECT version FROM herald_schema") == 3);
    CHECK(pg_int(dir, "SELECT count(*) FROM pg_partitioned_table p JOIN"
                      " pg_class c ON c.oid = p.partrelid WHERE"
                      " c.relnamespace = current_schema()::regnamespace") == 3);
    /* today's and tomorrow's partitions exist before any insert */
    CHECK(pg_int(dir, "SELECT count(*) FROM pg_inherits i JOIN pg_class c"
                      " ON c.oid = i.inhparent WHERE c.relname ="
                      " 'herald_messages' AND c.relnamespace ="
                      " current_schema()::regnamespace") == 2);
    insert_rec(m, full_record("keep"));
    mc_close(m);

    m = open_store(dir);
    if (m) {
        CHECK(exists(m, "keep"));
        CHECK(mc_schema_version(m, &version, &before) == 0);
        CHECK(version == 3 && before == 3);
        mc_close(m);
    }
    /* an upgrade from version 1, whose recipients' rows had a partition
     * per day (herald_message_rcpt), one of them left detached by an
     * interrupted purge: made here from this store as version 1 had it */
    time_t t0 = (time_t)(T0 / 1000);
    struct tm tm0;
    gmtime_r(&t0, &tm0);
    char dn0[16];
    snprintf(dn0, sizeof dn0, "%04d%02d%02d", (tm0.tm_year + 1900) % 10000,
             (tm0.tm_mon + 1) % 100, tm0.tm_mday % 100);
    long long d0 = (long long)(T0 / DAY * DAY);
    char *v1 = xasprintf(
        "CREATE TABLE herald_message_rcpt (email text COLLATE \"C\" NOT NULL,"
        " created_at bigint NOT NULL, id text COLLATE \"C\" NOT NULL,"
        " PRIMARY KEY (email, created_at, id)) PARTITION BY RANGE"
        " (created_at);"
        " CREATE TABLE herald_message_rcpt_p%s PARTITION OF"
        " herald_message_rcpt FOR VALUES FROM (%lld) TO (%lld);"
        " CREATE TABLE herald_message_rcpt_p20000101"
        " (LIKE herald_message_rcpt);"
        " INSERT INTO herald_message_rcpt SELECT * FROM herald_recipients;"
        " DROP TABLE herald_recipients;"
        " DROP TABLE herald_bodies_cleared;"
        " UPDATE herald_schema SET version = 1",
        dn0, d0, d0 + DAY);
    CHECK(pg_int(dir, v1) == 0);
    free(v1);
    m = open_store(dir);
    if (m) {
        CHECK(mc_schema_version(m, &version, &before) == 0);
        CHECK(version == 3 && before == 1);
        CHECK(pg_int(dir, "SELECT count(*) FROM herald_recipients") == 3);
        CHECK(pg_int(dir, "SELECT count(*) FROM pg_class WHERE relname LIKE"
                          " 'herald\\_message\\_rcpt%'") == 0);
        struct mc_filter f = {0};
        f.to = "ann@example.com";
        EXPECT(&f, "keep");
        f.to = "AUDIT@acme.example";
        EXPECT(&f, "keep");
        mc_close(m);
    }
    /* an upgrade from version 2: its registry index on created_at goes,
     * with the entries an interrupted purge left below the oldest
     * record; the index by org and path becomes partial; the index of
     * bodies not yet cleared gives way to a mark per day */
    CHECK(pg_int(dir, "CREATE INDEX herald_message_ids_created ON"
                      " herald_message_ids (created_at);"
                      " DROP TABLE herald_bodies_cleared;"
                      " CREATE INDEX herald_message_content_bodies ON"
                      " herald_message_content (created_at) WHERE NOT"
                      " body_expired;"
                      " DROP INDEX herald_messages_org_path;"
                      " CREATE INDEX herald_messages_org_path ON"
                      " herald_messages (org, path, created_at, id);"
                      " INSERT INTO herald_message_ids VALUES"
                      " ('orphan', 86400000);"
                      " UPDATE herald_schema SET version = 2") == 0);
    m = open_store(dir);
    if (m) {
        CHECK(mc_schema_version(m, &version, &before) == 0);
        CHECK(version == 3 && before == 2);
        CHECK(pg_int(dir, "SELECT count(*) FROM herald_message_ids WHERE"
                          " id = 'orphan'") == 0);
        CHECK(exists(m, "keep"));
        CHECK(pg_int(dir, "SELECT count(*) FROM pg_class WHERE relname IN"
                          " ('herald_message_ids_created',"
                          " 'herald_message_content_bodies')") == 0);
        CHECK(pg_int(dir, "SELECT count(*) FROM herald_bodies_cleared") == 0);
        CHECK(pg_int(dir, "SELECT count(*) FROM pg_index i JOIN pg_class c"
                          " ON c.oid = i.indexrelid WHERE c.relname ="
                          " 'herald_messages_org_path' AND i.indpred IS NOT"
                          " NULL") == 1);
        struct mc_filter f = {0};
        f.org = "acme";
        f.path = "relay";
        struct mc_update u;
        mc_update_init(&u, "keep", MC_SENT);
        u.path = "relay";
        CHECK(mc_update(m, &u, NULL) == 0);
        EXPECT(&f, "keep");
        mc_close(m);
    }
    /* a reader without the right to create tables opens the store on a
     * day without partitions (they are made by writers), and reads; its
     * writes are refused */
    char *url = store_url(dir);
    struct herr e = {0};
    char *ro_url = xasprintf("%s&user=herald_ro_test", url);
    CHECK(pg_int(dir, "DO $$BEGIN CREATE ROLE herald_ro_test LOGIN;"
                      " EXCEPTION WHEN duplicate_object THEN NULL; END$$;"
                      " DO $$BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I"
                      " TO herald_ro_test; GRANT SELECT ON ALL TABLES IN"
                      " SCHEMA %I TO herald_ro_test', current_schema(),"
                      " current_schema()); END$$") == 0);
    clock_set_fixed(T0 + 900 * DAY);
    m = NULL;
    CHECK_MSG(mc_open(ro_url, &m, &e) == 0 && m, "%s", e.msg);
    if (m) {
        CHECK(exists(m, "keep"));
        struct mc_filter f = {0};
        EXPECT(&f, "keep");
        struct mc_record *r = full_record("ro-1");
        r->created_at = T0 + 900 * DAY;
        CHECK(mc_insert(m, r, NULL, &e) == HERR_STORE);
        CHECK_MSG(strstr(e.msg, "permission denied") != NULL, "%s", e.msg);
        mc_record_free(r);
        mc_close(m);
    }
    clock_set_fixed(-1);
    free(ro_url);
    CHECK(pg_int(dir, "DO $$BEGIN EXECUTE format('REVOKE ALL ON ALL TABLES"
                      " IN SCHEMA %I FROM herald_ro_test; REVOKE USAGE ON"
                      " SCHEMA %I FROM herald_ro_test', current_schema(),"
                      " current_schema()); END$$") == 0);

    CHECK(pg_int(dir, "UPDATE herald_schema SET version = 9") == 0);
    m = (struct mc *)1;
    CHECK(mc_open(url, &m, &e) == HERR_STORE && m == NULL);
    CHECK_MSG(strstr(e.msg, "newer") != NULL, "%s", e.msg);
    free(url);
    rmtree(dir);

    /* a table of ours' name, without our schema: refused, untouched */
    dir = tmpdir();
    url = store_url(dir);
    CHECK(pg_int(dir, "CREATE TABLE herald_messages (id text, body text)") ==
          0);
    m = (struct mc *)1;
    CHECK(mc_open(url, &m, &e) == HERR_STORE && m == NULL);
    CHECK_MSG(strstr(e.msg, "already exists") != NULL, "%s", e.msg);
    CHECK(pg_int(dir, "SELECT count(*) FROM pg_tables WHERE schemaname ="
                      " current_schema()") == 1);
    free(url);
    rmtree(dir);
}

/* A write the database refuses leaves nothing of its record: outside a
 * batch; inside one it ends the batch (rolled back, said by every later
 * call), and the next batch works. Failures are injected with a trigger
 * added behind the store's back. */
static void
test_pg_atomic(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    CHECK(pg_int(dir,
                 "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS"
                 " $$BEGIN IF NEW.subject = 'boom' THEN RAISE EXCEPTION"
                 " 'injected content failure'; END IF; RETURN NEW; END$$;"
                 "CREATE TRIGGER boom BEFORE INSERT ON herald_message_content"
                 " FOR EACH ROW EXECUTE FUNCTION boom()") == 0);
    struct herr e = {0};
    struct mc_record *bad = full_record("at-bad");
    free(bad->subject);
    bad->subject = xstrdup("boom");
    CHECK(mc_insert(m, bad, NULL, &e) == HERR_STORE);
    CHECK_MSG(strstr(e.msg, "injected content failure") != NULL, "%s", e.msg);
    CHECK(!exists(m, "at-bad"));
    CHECK(pg_int(dir, "SELECT count(*) FROM herald_message_ids") == 0);
    CHECK(pg_int(dir, "SELECT count(*) FROM herald_messages") == 0);
    CHECK(pg_int(dir, "SELECT count(*) FROM herald_recipients") == 0);

    CHECK(mc_batch_begin(m, &e) == 0);
    insert_rec(m, full_record("at-1"));
    CHECK(mc_insert(m, bad, NULL, &e) == HERR_STORE);
    struct mc_record *r = full_record("at-2");
    CHECK(mc_insert(m, r, NULL, &e) == HERR_STORE);
    CHECK_MSG(strstr(e.msg, "rolled back") != NULL, "%s", e.msg);
    struct mc_update u;
    mc_update_init(&u, "at-1", MC_SENT);
    CHECK(mc_update(m, &u, &e) == HERR_STORE);
    CHECK(mc_batch_commit(m, &e) == HERR_STORE);
    CHECK(mc_batch_commit(m, &e) == HERR_INVALID); /* closed */
    CHECK(!exists(m, "at-1") && !exists(m, "at-2"));
    CHECK(pg_int(dir, "SELECT count(*) FROM herald_message_ids") == 0);
    /* the next batch goes on as usual */
    CHECK(mc_batch_begin(m, &e) == 0);
    CHECK(mc_insert(m, r, NULL, &e) == 0);
    CHECK(mc_batch_commit(m, &e) == 0);
    CHECK(exists(m, "at-2"));
    /* a rolled-back batch after a failure: nothing left open */
    CHECK(mc_batch_begin(m, &e) == 0);
    CHECK(mc_insert(m, bad, NULL, &e) == HERR_STORE);
    mc_batch_rollback(m);
    CHECK(mc_batch_begin(m, &e) == 0);
    mc_batch_rollback(m);
    CHECK(pg_int(dir, "DROP TRIGGER boom ON herald_message_content") == 0);
    CHECK(mc_insert(m, bad, NULL, &e) == 0);
    CHECK(pg_int(dir, "SELECT count(*) FROM herald_message_ids") == 2);
    mc_record_free(r);
    mc_record_free(bad);
    mc_close(m);
    rmtree(dir);
}

/* A write the database refuses among deferred ones: the batch is lost,
 * every outcome says so, nothing of it stays; the next batch works. An
 * update after the refused insert says the batch was rolled back. */
static void
test_pg_deferred_fail(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    CHECK(pg_int(dir,
                 "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS"
                 " $$BEGIN IF NEW.subject = 'boom' THEN RAISE EXCEPTION"
                 " 'injected content failure'; END IF; RETURN NEW; END$$;"
                 "CREATE TRIGGER boom BEFORE INSERT ON herald_message_content"
                 " FOR EACH ROW EXECUTE FUNCTION boom()") == 0);
    struct herr e = {0};
    struct mc_result res[4];
    CHECK(mc_batch_begin(m, &e) == 0);
    struct mc_record *r = full_record("pf-1");
    mc_insert_deferred(m, r, &res[0]);
    mc_record_free(r);
    r = full_record("pf-bad");
    free(r->subject);
    r->subject = xstrdup("boom");
    mc_insert_deferred(m, r, &res[1]);
    mc_record_free(r);
    r = full_record("pf-2");
    mc_insert_deferred(m, r, &res[2]);
    mc_record_free(r);
    struct mc_update u;
    mc_update_init(&u, "pf-1", MC_SENT); /* waits for its insert */
    mc_update_deferred(m, &u, &res[3]);
    CHECK(mc_batch_sync(m, &e) == HERR_STORE);
    CHECK_MSG(strstr(e.msg, "injected content failure") != NULL, "%s", e.msg);
    /* the three inserts went as one statement (S_INSERT_MANY): each
     * says what refused it */
    CHECK(res[0].rc == HERR_STORE && res[1].rc == HERR_STORE &&
          res[2].rc == HERR_STORE);
    CHECK_MSG(strstr(res[2].err.msg, "injected content failure") != NULL, "%s",
              res[2].err.msg);
    CHECK(res[3].rc == HERR_STORE);
    CHECK_MSG(strstr(res[3].err.msg, "rolled back") != NULL, "%s",
              res[3].err.msg);
    CHECK(mc_batch_commit(m, &e) == HERR_STORE);
    CHECK(!exists(m, "pf-1") && !exists(m, "pf-2"));
    CHECK(pg_int(dir, "SELECT count(*) FROM herald_message_ids") == 0);
    CHECK(mc_batch_begin(m, &e) == 0);
    r = full_record("pf-2");
    mc_insert_deferred(m, r, &res[0]);
    mc_record_free(r);
    CHECK(mc_batch_commit(m, &e) == 0 && res[0].rc == 0);
    CHECK(exists(m, "pf-2"));
    mc_close(m);
    rmtree(dir);
}

/* The connection lost among deferred writes: the batch fails, nothing of
 * it stays, and the next batch reconnects. */
static void
test_pg_deferred_lost(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    struct mc_result res[3];
    CHECK(mc_batch_begin(m, &e) == 0);
    struct mc_record *r = full_record("pl-1");
    mc_insert_deferred(m, r, &res[0]);
    mc_record_free(r);
    PQclear(PQexec(pg_admin, "SELECT pg_terminate_backend(pid) FROM"
                             " pg_stat_activity WHERE application_name ="
                             " 'herald' AND datname = current_database()"
                             " AND pid <> pg_backend_pid()"));
    usleep(200000);
    r = full_record("pl-2");
    mc_insert_deferred(m, r, &res[1]);
    mc_record_free(r);
    CHECK(mc_batch_sync(m, &e) == HERR_STORE);
    CHECK(res[0].rc == HERR_STORE && res[1].rc == HERR_STORE);
    CHECK(mc_batch_commit(m, &e) == HERR_STORE);
    CHECK(mc_batch_begin(m, &e) == 0);
    r = full_record("pl-3");
    mc_insert_deferred(m, r, &res[2]);
    mc_record_free(r);
    CHECK_MSG(mc_batch_commit(m, &e) == 0 && res[2].rc == 0, "%s", e.msg);
    CHECK(exists(m, "pl-3") && !exists(m, "pl-1") && !exists(m, "pl-2"));
    mc_close(m);
    rmtree(dir);
}

/* Partitions: created on demand for any day; one dropped behind a
 * handle's back is created again by its next insert there; ids stay
 * unique across days; text that is not UTF-8 is kept readable. */
static void
test_pg_partitions(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    int64_t day_a = T0 - 300 * DAY, day_b = T0 - 299 * DAY;
    insert_rec(
        m, small_record("p-1", "acme", "u", MC_SENT, day_a, "a@example.com"));
    insert_rec(
        m, small_record("p-2", "acme", "u", MC_SENT, day_b, "a@example.com"));
    /* the same id on another day is the same record */
    struct mc_record *r =
        small_record("p-1", "acme", "u", MC_QUEUED, day_b + 5, "b@example.com");
    enum mc_status ex = MC_QUEUED;
    CHECK(mc_insert(m, r, &ex, &e) == HERR_EXISTS && ex == MC_SENT);
    mc_record_free(r);
    CHECK(pg_int(dir, "SELECT count(*) FROM herald_messages") == 2);

    /* another process's purge dropped day_a's partitions */
    time_t t = (time_t)(day_a / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char dn[16];
    snprintf(dn, sizeof dn, "%04d%02d%02d", (tm.tm_year + 1900) % 10000,
             (tm.tm_mon + 1) % 100, tm.tm_mday % 100);
    /* (its recipients' rows stay: herald_recipients is not by day, and
     * a listing by recipient skips the rows whose record is gone) */
    char *sql =
        xasprintf("DELETE FROM herald_message_ids WHERE id = 'p-1';"
                  " DROP TABLE herald_messages_p%s, herald_message_content_p%s",
                  dn, dn);
    CHECK(pg_int(dir, sql) == 0);
    free(sql);
    insert_rec(m, small_record("p-3", "acme", "u", MC_SENT, day_a + 1,
                               "a@example.com"));
    CHECK(exists(m, "p-3") && !exists(m, "p-1"));

    /* an orphaned registry entry (its record gone) frees the id */
    CHECK(pg_int(dir, "INSERT INTO herald_message_ids VALUES ('p-9', 1000)") ==
          0);
    struct mc_update u;
    mc_update_init(&u, "p-9", MC_SENT);
    CHECK(mc_update(m, &u, &e) == HERR_NOTFOUND);
    struct mc_record *g = NULL;
    CHECK(mc_get(m, "p-9", &g, &e) == HERR_NOTFOUND);
    insert_rec(m, small_record("p-9", "acme", "u", MC_QUEUED, day_b + 9,
                               "a@example.com"));
    CHECK(exists(m, "p-9"));

    /* an SMTP reply that is not UTF-8 */
    mc_update_init(&u, "p-9", MC_FAILED);
    u.smtp_reply = "550 \xff\xfe no";
    CHECK(mc_update(m, &u, &e) == 0);
    CHECK(mc_get(m, "p-9", &g, &e) == 0 && g);
    if (g)
        CHECK_STR(g->smtp_reply, "550 \xef\xbf\xbd\xef\xbf\xbd no");
    mc_record_free(g);

    /* a purge interrupted half way (the records' partition dropped, the
     * content's detached, the recipients' rows left): the next one
     * removes what is left of that day, bodies and recipients included */
    int64_t day_c = T0 - 500 * DAY;
    insert_rec(
        m, small_record("p-old", "acme", "u", MC_SENT, day_c, "a@example.com"));
    t = (time_t)(day_c / 1000);
    gmtime_r(&t, &tm);
    snprintf(dn, sizeof dn, "%04d%02d%02d", (tm.tm_year + 1900) % 10000,
             (tm.tm_mon + 1) % 100, tm.tm_mday % 100);
    sql = xasprintf("ALTER TABLE herald_messages DETACH PARTITION"
                    " herald_messages_p%s; DROP TABLE herald_messages_p%s;"
                    " ALTER TABLE herald_message_content DETACH PARTITION"
                    " herald_message_content_p%s",
                    dn, dn, dn);
    CHECK(pg_int(dir, sql) == 0);
    free(sql);
    struct mc_purge_result res;
    CHECK(mc_purge(m, day_c + DAY, 0, 0, 0, &res, &e) == 0);
    sql = xasprintf("SELECT count(*) FROM pg_tables WHERE schemaname ="
                    " current_schema() AND tablename LIKE 'herald%%_p%s'",
                    dn);
    CHECK(pg_int(dir, sql) == 0);
    free(sql);
    CHECK(pg_int(dir, "SELECT count(*) FROM herald_message_ids WHERE id ="
                      " 'p-old'") == 0);
    /* the recipients' rows go with their period (8 days), once all of
     * it is past the cutoff: not yet (p-old's record is gone; listings
     * skip them), then with a cutoff 8 days later */
    sql = xasprintf("SELECT count(*) FROM herald_recipients WHERE"
                    " created_at < %lld",
                    (long long)(day_c + DAY));
    CHECK(pg_int(dir, sql) == 1);
    CHECK(mc_purge(m, day_c + 9 * DAY, 0, 0, 0, &res, &e) == 0);
    CHECK(pg_int(dir, sql) == 0);
    free(sql);

    /* a new handle finds everything by id and by listing */
    mc_close(m);
    m = open_store(dir);
    if (m) {
        CHECK(exists(m, "p-2") && exists(m, "p-3") && exists(m, "p-9"));
        struct mc_filter f = {0};
        f.to = "A@example.com";
        EXPECT(&f, "p-9", "p-2", "p-3");
        f.until = day_b - 1;
        EXPECT(&f, "p-3");
        f.until = day_b; /* inclusive */
        EXPECT(&f, "p-2", "p-3");
        /* recipients' rows whose records are gone (a purge between its
         * two steps) are skipped, and the page is still full */
        char *ghosts =
            xasprintf("INSERT INTO herald_recipients VALUES"
                      " ('a@example.com', %lld, 'ghost-1'),"
                      " ('a@example.com', %lld, 'ghost-2')",
                      (long long)(day_b + 20), (long long)(day_b + 3));
        CHECK(pg_int(dir, ghosts) == 0);
        free(ghosts);
        f.until = 0;
        f.limit = 2;
        EXPECT(&f, "p-9", "p-2");
        f.limit = 1;
        EXPECT(&f, "p-9");
        /* a reader's get of any attached day runs that day's own
         * statement; when another process drops the day meanwhile, the
         * get finds nothing (and says so), it does not fail */
        struct mc *r2 = open_store(dir);
        if (r2) {
            struct mc_record *g2 = NULL;
            CHECK(mc_get(r2, "p-2", &g2, &e) == 0 && g2);
            mc_record_free(g2);
            time_t tb = (time_t)(day_b / 1000);
            gmtime_r(&tb, &tm);
            snprintf(dn, sizeof dn, "%04d%02d%02d", (tm.tm_year + 1900) % 10000,
                     (tm.tm_mon + 1) % 100, tm.tm_mday % 100);
            sql = xasprintf("DROP TABLE herald_messages_p%s,"
                            " herald_message_content_p%s",
                            dn, dn);
            CHECK(pg_int(dir, sql) == 0);
            free(sql);
            g2 = NULL;
            CHECK(mc_get(r2, "p-2", &g2, &e) == HERR_NOTFOUND && g2 == NULL);
            CHECK(mc_get(r2, "p-3", &g2, &e) == 0 && g2);
            mc_record_free(g2);
            mc_close(r2);
        }
        mc_close(m);
    }
    rmtree(dir);
}

/* Listing walks time windows: records spread over a year, with pages that
 * cross windows, come back newest first, each once, as on SQLite. */
static void
test_pg_windows(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    int64_t now = clock_now_ms();
    static const int ago[] = {0, 0, 1, 2, 3, 5, 9, 17, 40, 100, 200, 300, 700};
    size_t nago = sizeof ago / sizeof ago[0];
    CHECK(mc_batch_begin(m, &e) == 0);
    for (size_t i = 0; i < nago; i++) {
        char id[16];
        snprintf(id, sizeof id, "w-%02zu", i);
        insert_rec(m, small_record(id, i % 2 ? "acme" : "beta", "u", MC_SENT,
                                   now - ago[i] * DAY - (int64_t)i,
                                   "w@example.com"));
    }
    /* one in the future (a clock ahead) */
    insert_rec(m, small_record("w-fut", "acme", "u", MC_SENT, now + 3 * DAY,
                               "w@example.com"));
    CHECK(mc_batch_commit(m, &e) == 0);
    struct mc_filter f = {0};
    char **ids = NULL;
    size_t seen = 0;
    list_all(m, f, 3, &ids, &seen);
    /* w-fut first, then w-00, w-01 ... (older as the number grows) */
    int order = seen > 0 && strcmp(ids[0], "w-fut") == 0;
    for (size_t i = 1; i < seen; i++) {
        char want[32];
        snprintf(want, sizeof want, "w-%02zu", i - 1);
        order &= strcmp(ids[i], want) == 0;
    }
    for (size_t i = 0; i < seen; i++)
        free(ids[i]);
    free(ids);
    CHECK_MSG(seen == nago + 1 && order, "seen %zu order %d", seen, order);
    memset(&f, 0, sizeof f);
    f.org = "acme";
    f.since = now - 100 * DAY - 20;
    EXPECT(&f, "w-fut", "w-01", "w-03", "w-05", "w-07", "w-09");
    f.until = now - 3 * DAY;
    EXPECT(&f, "w-05", "w-07", "w-09");
    memset(&f, 0, sizeof f);
    f.to = "w@example.com";
    f.since = now - 200 * DAY - 20;
    f.until = now - 40 * DAY;
    EXPECT(&f, "w-08", "w-09", "w-10");
    mc_close(m);
    rmtree(dir);
}

/* Every store-independent test: once per store. */
/* Deferred writes (mc_insert_deferred, mc_update_deferred, mc_batch_sync):
 * the outcomes are those of the same writes done one after the other --
 * new, duplicate (with its status), missing, invalid -- the record and
 * update may be freed at once, a write of an id already in flight sees
 * the earlier one, more writes than a pipeline holds, and the commit
 * reads what was not synced. */
static void
test_deferred(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    struct mc *other = open_store(dir);
    if (m == NULL || other == NULL) {
        mc_close(m);
        mc_close(other);
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    insert_rec(m, full_record("df-old"));
    struct mc_update u;
    mc_update_init(&u, "df-old", MC_SENT);
    CHECK(mc_update(m, &u, &e) == 0);

    /* outside a batch: done at once */
    struct mc_result r0;
    struct mc_record *rec = full_record("df-now");
    mc_insert_deferred(m, rec, &r0);
    mc_record_free(rec);
    CHECK(r0.rc == 0 && exists(other, "df-now"));

    struct mc_result res[8];
    CHECK(mc_batch_begin(m, &e) == 0);
    rec = full_record("df-1");
    mc_insert_deferred(m, rec, &res[0]);
    mc_record_free(rec); /* copied */
    rec = full_record("df-old");
    mc_insert_deferred(m, rec, &res[1]); /* a duplicate */
    mc_record_free(rec);
    mc_update_init(&u, "df-none", MC_SENT);
    mc_update_deferred(m, &u, &res[2]); /* no such record */
    rec = full_record("df-bad");
    free(rec->to_json);
    rec->to_json = xstrdup("[{\"name\":\"no address\"}]");
    mc_insert_deferred(m, rec, &res[3]); /* invalid */
    mc_record_free(rec);
    char *id = xstrdup("df-1");
    mc_update_init(&u, id, MC_SENDING);
    u.attempts_add = 1;
    u.last_error = "a string freed before the sync";
    char *err = xstrdup(u.last_error);
    u.last_error = err;
    mc_update_deferred(m, &u, &res[4]); /* df-1, already in flight */
    free(err);
    free(id);
    mc_update_init(&u, "df-now", MC_FAILED);
    u.set_content = 1;
    u.subject = "Rendered subject";
    u.text = "rendered";
    mc_update_deferred(m, &u, &res[5]);
    CHECK(mc_batch_sync(m, &e) == 0);
    CHECK_MSG(res[0].rc == 0, "%d %s", res[0].rc, res[0].err.msg);
    CHECK(res[1].rc == HERR_EXISTS && res[1].existing == MC_SENT);
    CHECK(res[2].rc == HERR_NOTFOUND);
    CHECK(res[3].rc == HERR_INVALID);
    CHECK_MSG(res[4].rc == 0, "%d %s", res[4].rc, res[4].err.msg);
    CHECK_MSG(res[5].rc == 0, "%d %s", res[5].rc, res[5].err.msg);
    CHECK(!exists(other, "df-1")); /* not committed yet */
    /* many more than a pipeline holds, left to the commit */
    struct mc_result *many = xcalloc(600, sizeof *many);
    for (int i = 0; i < 600; i++) {
        char mid[32];
        snprintf(mid, sizeof mid, "df-m%d", i);
        rec = full_record(mid);
        mc_insert_deferred(m, rec, &many[i]);
        mc_record_free(rec);
    }
    CHECK(mc_batch_commit(m, &e) == 0);
    int bad = 0;
    for (int i = 0; i < 600; i++)
        bad += many[i].rc != 0;
    CHECK_MSG(bad == 0, "%d of 600 deferred inserts failed", bad);
    free(many);
    struct mc_record *g = NULL;
    CHECK(mc_get(other, "df-1", &g, &e) == 0 && g && g->status == MC_SENDING &&
          g->attempts == 8 && g->last_error &&
          strcmp(g->last_error, "a string freed before the sync") == 0);
    mc_record_free(g);
    g = NULL;
    CHECK(mc_get(other, "df-now", &g, &e) == 0 && g && g->status == MC_FAILED &&
          g->subject && strcmp(g->subject, "Rendered subject") == 0);
    mc_record_free(g);
    CHECK(exists(other, "df-m599"));
    struct mc_filter f = {0};
    f.q = "rendered";
    struct mc_record **v = NULL;
    size_t n = 0;
    CHECK(mc_list(other, &f, &v, &n, NULL, &e) == 0 && n == 1);
    mc_records_free(v, n);

    /* a record this handle never wrote (no cached partition) */
    mc_close(m);
    m = open_store(dir);
    CHECK(mc_batch_begin(m, &e) == 0);
    mc_update_init(&u, "df-m7", MC_SENT);
    mc_update_deferred(m, &u, &res[0]);
    mc_update_init(&u, "df-gone", MC_SENT);
    mc_update_deferred(m, &u, &res[1]);
    /* a rollback reads the outcomes too, and undoes the writes */
    mc_batch_rollback(m);
    CHECK(res[0].rc == 0 && res[1].rc == HERR_NOTFOUND);
    g = NULL;
    CHECK(mc_get(m, "df-m7", &g, &e) == 0 && g && g->status == MC_DEFERRED);
    mc_record_free(g);
    mc_close(m);
    mc_close(other);
    rmtree(dir);
}

/* The update variants of test_deferred_same: keep, clear and set each
 * field, quotes and backslashes in values (array literals on
 * PostgreSQL). */
static void
variant_update(struct mc_update *u, const char *id, int v, int64_t now)
{
    static const enum mc_status st[] = {MC_SENDING, MC_SENT, MC_DEFERRED,
                                        MC_FAILED, MC_QUEUED};
    mc_update_init(u, id, st[v % 5]);
    switch (v % 7) {
    case 0:
        break; /* the status alone */
    case 1:
        u->path = "relay";
        u->path_reason = "no SPF \"record\" \\ here";
        u->sender = "";
        u->reply_to = "org@acme.example";
        u->attempts_add = 1;
        break;
    case 2:
        u->sent_at = now - 1234;
        u->next_attempt_at = 0;
        u->smtp_reply = "250 2.0.0 Ok: queued as {ABC,123}";
        u->recipients_json = "[{\"email\":\"ann@example.com\","
                             "\"status\":\"accepted\"}]";
        break;
    case 3:
        u->next_attempt_at = now + 999000;
        u->last_error = "451 4.7.1 try \"later\", {please}";
        u->attempts_add = 2;
        break;
    case 4:
        u->last_error = "";
        u->smtp_reply = "";
        u->recipients_json = "";
        u->path = "";
        break;
    case 5:
        u->sent_at = 0;
        u->path_reason = "NULL";
        u->sender = "NULL";
        break;
    default:
        u->attempts_add = 1;
        u->last_error = "caf\xc3\xa9 \xe2\x80\x94 non-ASCII";
        break;
    }
}

/* The same record (an id of its own) as JSON, updated_at left out. */
static char *
json_as(struct mc *m, const char *id, const char *as)
{
    struct mc_record *r = NULL;
    if (mc_get(m, id, &r, NULL) != 0 || r == NULL)
        return xstrdup("(missing)");
    free(r->id);
    r->id = xstrdup(as);
    r->updated_at = 0;
    json_t *j = mc_record_json(r, 0);
    char *out = json_dumps(j, JSON_SORT_KEYS);
    json_decref(j);
    mc_record_free(r);
    return out;
}

/* Deferred updates in one batch (gathered into one statement per day on
 * PostgreSQL) leave each record exactly as the same updates done one at
 * a time: 70 records, two rounds of updates of every variant. */
static void
test_deferred_same(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    enum { N = 70 };
    char a[N][16], b[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(a[i], sizeof a[i], "ds-a%d", i);
        snprintf(b[i], sizeof b[i], "ds-b%d", i);
        insert_rec(m, full_record(a[i]));
        insert_rec(m, full_record(b[i]));
    }
    struct mc_result *res = xcalloc(2 * N, sizeof *res);
    int64_t now = clock_now_ms(); /* the times the updates set */
    for (int round = 0; round < 2; round++) {
        CHECK(mc_batch_begin(m, &e) == 0);
        for (int i = 0; i < N; i++) {
            struct mc_update u;
            variant_update(&u, b[i], i + round * 3, now);
            mc_update_deferred(m, &u, &res[round * N + i]);
        }
        CHECK(mc_batch_commit(m, &e) == 0);
        for (int i = 0; i < N; i++) {
            struct mc_update u;
            variant_update(&u, a[i], i + round * 3, now);
            CHECK(mc_update(m, &u, &e) == 0);
        }
    }
    int bad = 0;
    for (int i = 0; i < 2 * N; i++)
        bad += res[i].rc != 0;
    CHECK_MSG(bad == 0, "%d deferred updates failed", bad);
    for (int i = 0; i < N; i++) {
        char *x = json_as(m, a[i], "same");
        char *y = json_as(m, b[i], "same");
        CHECK_MSG(strcmp(x, y) == 0,
                  "record %d:\n  one at a time %s\n  deferred %s", i, x, y);
        free(x);
        free(y);
    }
    free(res);
    mc_close(m);
    rmtree(dir);
}

static void
test_q_words(void)
{
    char w[MC_Q_WORDS_MAX][MC_Q_WORD_MAX + 1];
    size_t n = 0;
    struct herr e = {0};
    CHECK(mc_q_words("Receipt, camp-2026 Été", w, &n, &e) == 0);
    CHECK(n == 4);
    if (n == 4) {
        CHECK_STR(w[0], "receipt");
        CHECK_STR(w[1], "camp");
        CHECK_STR(w[2], "2026");
        CHECK_STR(w[3], "\xc3\x89t\xc3\xa9"); /* non-ASCII kept as is */
    }
    /* repeats and words that begin another add nothing */
    CHECK(mc_q_words("receipt RECEIPT cam camp ca", w, &n, &e) == 0);
    CHECK(n == 2);
    if (n == 2) {
        CHECK_STR(w[0], "receipt");
        CHECK_STR(w[1], "camp");
    }
    CHECK(mc_q_words("camp cam", w, &n, &e) == 0);
    CHECK(n == 1 && strcmp(w[0], "camp") == 0);
    CHECK(mc_q_words(" ,;- ", w, &n, &e) == HERR_INVALID);
    CHECK_STR(e.field, "q");
}

/*
 * Subject search whatever a word's frequency: a day of 3,500 records
 * (more than PostgreSQL's walk of the newest, Q_WALK in mc_pg.c) with a
 * word in every other record (the walk fills a page), a word only in
 * the day's 60 oldest (beyond the walk: the index), one in two records
 * of the walk and two beyond (the index, once each), a rare word over
 * several days (then the index alone), and a small organisation whose
 * day the walk sees whole; pages of every size give the records newest
 * first, each once, as a plain scan says.
 */
static void
test_q_frequencies(void)
{
    char *dir = tmpdir();
    struct mc *m = open_store(dir);
    if (m == NULL) {
        rmtree(dir);
        return;
    }
    struct herr e = {0};
    int64_t now = clock_now_ms();
    int64_t today = now / DAY * DAY;
    struct {
        const char *prefix;
        int64_t base;
        int n;
    } days[] = {{"qa", today - DAY, 3500},
                {"qb", today - 2 * DAY, 50},
                {"qc", today - 5 * DAY, 10},
                {"qt", today + (now - today) / 2, 3}};
    /* the expectation: every record's words, newest first */
    enum { W_COMMON = 1, W_MIDDLE = 2, W_RARE = 4, O_TINY = 8, W_SOME = 16 };
    struct qrec {
        char id[16];
        int flags;
    } *all = xcalloc(3600, sizeof *all);
    size_t nall = 0;
    CHECK(mc_batch_begin(m, &e) == 0);
    static const int newest_first[] = {3, 0, 1, 2};
    for (int o = 0; o < 4; o++) {
        int d = newest_first[o];
        for (int i = days[d].n - 1; i >= 0; i--) {
            int fl = 0;
            if (i % 2 == 0 && d != 2)
                fl |= W_COMMON;
            if ((d == 0 && i < 60) || (d == 1 && i < 5))
                fl |= W_MIDDLE;
            if ((d == 0 && (i == 5 || i == 7)) ||
                (d == 1 && i >= 1 && i <= 3) || (d == 2 && i == 4))
                fl |= W_RARE;
            if (d == 0 && i >= days[d].n - 10)
                fl |= O_TINY;
            if (d == 0 && (i == 3400 || i == 3300 || i == 100 || i == 50))
                fl |= W_SOME; /* two in the walk, two beyond */
            struct qrec *q = &all[nall++];
            snprintf(q->id, sizeof q->id, "%s-%04d", days[d].prefix, i);
            q->flags = fl;
        }
    }
    /* inserted oldest first, listed newest first: `all` is newest first
     * (today's, then qa's from its newest, ...) */
    for (size_t x = nall; x-- > 0;) {
        struct qrec *q = &all[x];
        int d = q->id[1] == 'a'   ? 0
                : q->id[1] == 'b' ? 1
                : q->id[1] == 'c' ? 2
                                  : 3;
        int i = atoi(q->id + 3);
        struct mc_record *r = small_record(
            q->id, q->flags & O_TINY ? "tiny" : "big", "u", MC_SENT,
            days[d].base + 1000 + (int64_t)i * 10, "q@example.com");
        r->subject =
            xasprintf("Note%s%s%s%s %d", q->flags & W_COMMON ? " common" : "",
                      q->flags & W_MIDDLE ? " middle" : "",
                      q->flags & W_RARE ? " rare" : "",
                      q->flags & W_SOME ? " some" : "", i);
        insert_rec(m, r);
    }
    CHECK(mc_batch_commit(m, &e) == 0);
    static const struct {
        const char *q, *org;
        int want; /* every flag */
    } cases[] = {{"common", NULL, W_COMMON},
                 {"middle", NULL, W_MIDDLE},
                 {"mid", NULL, W_MIDDLE},
                 {"rare", NULL, W_RARE},
                 {"some", NULL, W_SOME},
                 {"rare common", NULL, W_RARE | W_COMMON},
                 {"common", "tiny", W_COMMON | O_TINY},
                 {"zzz", NULL, -1}};
    static const int limits[] = {50, 7, 500};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) {
            struct mc_filter f = {0};
            f.q = cases[c].q;
            f.org = cases[c].org;
            char **ids = NULL;
            size_t n = 0;
            list_all(m, f, limits[l], &ids, &n);
            size_t k = 0, bad = 0;
            for (size_t x = 0; x < nall; x++) {
                int fl = all[x].flags;
                if (cases[c].want < 0 || (fl & cases[c].want) != cases[c].want)
                    continue;
                if (k >= n || strcmp(ids[k], all[x].id) != 0)
                    bad++;
                k++;
            }
            CHECK_MSG(bad == 0 && k == n,
                      "q=%s org=%s limit %d: %zu listed, %zu wanted, %zu"
                      " differ (first %s)",
                      cases[c].q, cases[c].org ? cases[c].org : "-", limits[l],
                      n, k, bad, n ? ids[0] : "-");
            for (size_t x = 0; x < n; x++)
                free(ids[x]);
            free(ids);
        }
    }
    free(all);
    mc_close(m);
    rmtree(dir);
}

static void
run_store_tests(void)
{
    test_roundtrip();
    test_duplicate();
    test_update();
    test_list();
    test_list_search_and_pages();
    test_q_frequencies();
    test_purge();
    test_checkpoint();
    test_batch();
    test_deferred();
    test_deferred_same();
    test_status_moves();
    test_to_json();
    test_multiprocess();
}

int
main(void)
{
    test_status_names();
    test_q_words();
    test_csv();
    test_from_job();
    test_record_write();
    run_store_tests();
    /* SQLite only: files, modes, locks, its own migrations */
    test_urls();
    test_modes();
    test_busy();
    test_atomic_insert();
    test_migrate_v1();
    test_migrate_v2();
    test_migrate_refused();

    pg_base = getenv("HERALD_TEST_PG");
    if (pg_base && *pg_base) {
        fprintf(stderr, "test_mc: the store tests again, on PostgreSQL\n");
        pg_admin = PQconnectdb(pg_base);
        CHECK_MSG(PQstatus(pg_admin) == CONNECTION_OK, "%s: %s", pg_base,
                  PQerrorMessage(pg_admin));
        if (PQstatus(pg_admin) == CONNECTION_OK) {
            PQclear(PQexec(pg_admin, "SET client_min_messages = warning"));
            pg_mode = 1;
            run_store_tests();
            test_pg_schema();
            test_pg_atomic();
            test_pg_deferred_fail();
            test_pg_deferred_lost();
            test_pg_partitions();
            test_pg_windows();
            pg_mode = 0;
        }
        PQfinish(pg_admin);
    }
    return T_DONE("test_mc");
}
