/*
 * test_libherald — libherald without a Redis server: URL redaction,
 * validation before any connection, the Redis-unreachable paths of
 * enqueue and enqueue_many, and the Message Center calls against a temp
 * SQLite file.
 *
 * Helper modes for tests/integration/test_producer.py:
 *   test_libherald populate-mc URL     reads NDJSON lines
 *       {"job": {...}, "created_at": "RFC 3339", "status": "sent",
 *        "path": "spf", "attempts": N, "last_error": "...",
 *        "smtp_reply": "..."}
 *     and inserts each record into the store at URL (printing its id).
 *   test_libherald dead-entry REASON FIELD ERROR [ID]
 *     reads a raw job on stdin and prints the dead-letter entry the
 *     worker would push (dead_entry_new).
 */
#include "clock.h"
#include "dead.h"
#include "herald.h"
#include "mc.h"
#include "util.h"

#include "t.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char good_job[] =
    "{\"type\":\"receipt\",\"org\":\"acme\",\"account\":\"a1\","
    "\"from\":\"billing@acme.test\",\"to\":[\"u@example.test\"],"
    "\"subject\":\"Hi\",\"text\":\"hello\"}";

/* ---- helper modes ---- */

static int
populate_mc(const char *url)
{
    struct mc *m;
    struct herr e = {{0}, {0}};
    if (mc_open(url, &m, &e) != 0) {
        fprintf(stderr, "mc_open: %s: %s\n", e.field, e.msg);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int code = 0;
    while (code == 0 && (len = getline(&line, &cap, stdin)) > 0) {
        json_t *o = json_loadb(line, (size_t)len, 0, NULL);
        json_t *jo = json_object_get(o, "job");
        char *raw = jo ? json_dumps(jo, JSON_COMPACT) : NULL;
        struct job *j = NULL;
        if (raw == NULL || job_parse(raw, strlen(raw), &j, &e) != 0) {
            fprintf(stderr, "bad line: %s: %s\n", e.field, e.msg);
            code = 1;
        } else {
            if (j->id == NULL)
                job_assign_id(j);
            const char *created =
                json_string_value(json_object_get(o, "created_at"));
            int64_t at = 0;
            if (created && clock_parse_rfc3339(created, &at) == 0)
                clock_set_fixed(at);
            struct mc_record *r = mc_record_from_job(j);
            if (mc_insert(m, r, NULL, &e) != 0) {
                fprintf(stderr, "mc_insert: %s: %s\n", e.field, e.msg);
                code = 1;
            }
            const char *status =
                json_string_value(json_object_get(o, "status"));
            struct mc_update u;
            enum mc_status st = MC_QUEUED;
            if (code == 0 && status && mc_status_parse(status, &st) == 0) {
                mc_update_init(&u, j->id, st);
                u.path = json_string_value(json_object_get(o, "path"));
                u.attempts_add =
                    (int)json_integer_value(json_object_get(o, "attempts"));
                u.last_error =
                    json_string_value(json_object_get(o, "last_error"));
                u.smtp_reply =
                    json_string_value(json_object_get(o, "smtp_reply"));
                if (st == MC_SENT)
                    u.sent_at = at ? at : clock_now_ms();
                if (mc_update(m, &u, &e) != 0) {
                    fprintf(stderr, "mc_update: %s: %s\n", e.field, e.msg);
                    code = 1;
                }
            }
            clock_set_fixed(-1);
            printf("%s\n", j->id);
            mc_record_free(r);
            job_free(j);
        }
        free(raw);
        json_decref(o);
    }
    free(line);
    mc_close(m);
    return code;
}

static int
dead_entry(int argc, char **argv)
{
    if (argc < 5)
        return 2;
    struct buf b;
    buf_init(&b, 0);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, stdin)) > 0)
        buf_append(&b, tmp, n);
    char *s = dead_entry_new(b.p ? b.p : "", b.len, argv[2], argv[3], argv[4],
                             argc > 5 ? argv[5] : NULL, clock_now_ms());
    puts(s);
    free(s);
    buf_free(&b);
    return 0;
}

/* ---- tests ---- */

static void
test_redact(void)
{
    char out[128];
    herald_redact_url("redis://:s3cret@host:6379/2", out, sizeof out);
    CHECK_STR(out, "redis://:***@host:6379/2");
    herald_redact_url("redis://user:s3cret@host:1", out, sizeof out);
    CHECK_STR(out, "redis://user:***@host:1");
    herald_redact_url("redis://s3cret@host", out, sizeof out);
    CHECK_STR(out, "redis://***@host");
    herald_redact_url("redis://127.0.0.1:6379/0", out, sizeof out);
    CHECK_STR(out, "redis://127.0.0.1:6379/0");
    herald_redact_url("unix:///run/redis.sock", out, sizeof out);
    CHECK_STR(out, "unix:///run/redis.sock");
}

static void
settings_with_redis(struct settings *s, const char *url)
{
    settings_defaults(s);
    free(s->redis);
    s->redis = xstrdup(url);
    s->connect_timeout_s = 2;
}

static void
test_open_errors(void)
{
    struct settings s;
    struct herald *h = (struct herald *)1;
    struct herr e = {{0}, {0}};

    settings_with_redis(&s, "http://nope");
    CHECK(herald_open_ex(&s, HERALD_OPEN_LAZY, &h, &e) == HERR_INVALID);
    CHECK(h == NULL);
    CHECK_STR(e.field, "HERALD_REDIS");
    settings_free(&s);

    /* Port 1 on loopback refuses at once; the message names the URL but
     * never the password. */
    settings_with_redis(&s, "redis://:topsecret@127.0.0.1:1/0");
    memset(&e, 0, sizeof e);
    CHECK(herald_open(&s, &h, &e) == HERR_REDIS);
    CHECK(h == NULL);
    CHECK_STR(e.field, "HERALD_REDIS");
    CHECK(strstr(e.msg, "127.0.0.1:1") != NULL);
    CHECK(strstr(e.msg, "topsecret") == NULL);
    CHECK(strstr(e.msg, ":***@") != NULL);

    /* Lazy: opens, and reports the redacted URL. */
    CHECK(herald_open_ex(&s, HERALD_OPEN_LAZY, &h, &e) == 0);
    CHECK(h != NULL);
    if (h) {
        CHECK_STR(herald_redis_url(h), "redis://:***@127.0.0.1:1/0");
        herald_close(h);
    }
    settings_free(&s);
    herald_close(NULL);
}

static void
test_enqueue_validates_first(void)
{
    struct settings s;
    struct herald *h;
    struct herr e = {{0}, {0}};
    char id[JOB_ID_MAX + 1] = "untouched";
    settings_with_redis(&s, "redis://127.0.0.1:1/0");
    CHECK(herald_open_ex(&s, HERALD_OPEN_LAZY, &h, &e) == 0);

    /* A bad job is rejected without touching Redis (which is down). */
    const char *bad = "{\"type\":\"receipt\",\"org\":\"acme\",\"account\":"
                      "\"a1\",\"from\":\"billing@acme.test\",\"to\":"
                      "[\"u@example.test\",\"x\",\"nope\"],\"subject\":\"s\","
                      "\"text\":\"t\"}";
    CHECK(herald_enqueue(h, bad, strlen(bad), id, &e) == HERR_INVALID);
    CHECK_STR(e.field, "to[1]");
    CHECK_STR(id, "untouched");

    memset(&e, 0, sizeof e);
    CHECK(herald_enqueue(h, "{", 1, id, &e) == HERR_INVALID);

    /* A good job gets as far as Redis, which is unreachable. */
    memset(&e, 0, sizeof e);
    CHECK(herald_enqueue(h, good_job, strlen(good_job), id, &e) == HERR_REDIS);
    CHECK(strstr(e.msg, "127.0.0.1:1") != NULL);
    CHECK_STR(id, "untouched");

    /* Bulk: invalid items are named, valid ones unconfirmed. */
    struct herald_item items[3] = {
        {good_job, strlen(good_job)},
        {bad, strlen(bad)},
        {"[]", 2},
    };
    struct herald_result res[3];
    memset(&e, 0, sizeof e);
    CHECK(herald_enqueue_many(h, items, 3, res, &e) == HERR_REDIS);
    CHECK(res[0].rc == HERR_REDIS);
    CHECK_STR(res[0].id, "");
    CHECK(res[1].rc == HERR_INVALID);
    CHECK_STR(res[1].err.field, "to[1]");
    CHECK(res[2].rc == HERR_INVALID);
    CHECK(strstr(e.msg, "127.0.0.1:1") != NULL);

    /* All invalid: Redis is never contacted, and the call succeeds with
     * each item carrying its own error. */
    struct herald_item only_bad[1] = {{bad, strlen(bad)}};
    memset(&e, 0, sizeof e);
    CHECK(herald_enqueue_many(h, only_bad, 1, res, &e) == 0);
    CHECK(res[0].rc == HERR_INVALID);

    /* Too big. */
    size_t big = JOB_MAX_BYTES + 1;
    char *huge = xmalloc(big);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    memset(&e, 0, sizeof e);
    CHECK(herald_enqueue(h, huge, big, id, &e) == HERR_TOOBIG);
    free(huge);

    herald_close(h);
    settings_free(&s);
}

static void
test_mc(void)
{
    char dir[] = "/tmp/test_libherald.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *url = xasprintf("sqlite://%s/mc.db", dir);
    char *path = xasprintf("%s/mc.db", dir);

    struct mc *m;
    struct herr e = {{0}, {0}};
    CHECK(mc_open(url, &m, &e) == 0);
    const char *jobs[2] = {
        "{\"id\":\"m-1\",\"type\":\"receipt\",\"org\":\"acme\",\"account\":"
        "\"a1\",\"from\":\"b@acme.test\",\"to\":[\"u@example.test\"],"
        "\"subject\":\"first\",\"text\":\"x\"}",
        "{\"id\":\"m-2\",\"type\":\"notice\",\"org\":\"globex\",\"account\":"
        "\"a2\",\"from\":\"b@globex.test\",\"to\":[\"v@example.test\"],"
        "\"subject\":\"second\",\"text\":\"y\"}",
    };
    for (int i = 0; i < 2; i++) {
        struct job *j = NULL;
        CHECK(job_parse(jobs[i], strlen(jobs[i]), &j, &e) == 0);
        if (j == NULL)
            continue;
        clock_set_fixed(1700000000000LL + i * 1000);
        struct mc_record *r = mc_record_from_job(j);
        CHECK(mc_insert(m, r, NULL, &e) == 0);
        mc_record_free(r);
        job_free(j);
    }
    clock_set_fixed(-1);
    mc_close(m);

    /* The Redis URL is unreachable: Message Center calls never need it. */
    struct settings s;
    settings_with_redis(&s, "redis://127.0.0.1:1/0");
    free(s.mc);
    s.mc = xstrdup(url);
    struct herald *h;
    CHECK(herald_open_ex(&s, HERALD_OPEN_LAZY, &h, &e) == 0);

    struct mc_record *r = NULL;
    CHECK(herald_mc_get(h, "m-2", &r, &e) == 0);
    if (r) {
        CHECK_STR(r->org, "globex");
        CHECK_STR(r->subject, "second");
        CHECK(r->status == MC_QUEUED);
        mc_record_free(r);
    }
    CHECK(herald_mc_get(h, "m-3", &r, &e) == HERR_NOTFOUND);
    CHECK(r == NULL);
    memset(&e, 0, sizeof e);
    CHECK(herald_mc_get(h, "bad id", &r, &e) == HERR_INVALID);
    CHECK_STR(e.field, "id");

    struct mc_filter f;
    memset(&f, 0, sizeof f);
    struct mc_record **v = NULL;
    size_t n = 0;
    CHECK(herald_mc_list(h, &f, &v, &n, NULL, &e) == 0);
    CHECK(n == 2);
    if (n == 2) {
        CHECK_STR(v[0]->id, "m-2"); /* newest first */
        CHECK_STR(v[1]->id, "m-1");
    }
    mc_records_free(v, n);
    f.org = "acme";
    CHECK(herald_mc_list(h, &f, &v, &n, NULL, &e) == 0);
    CHECK(n == 1);
    if (n == 1)
        CHECK_STR(v[0]->id, "m-1");
    mc_records_free(v, n);
    herald_close(h);
    settings_free(&s);

    unlink(path);
    char *wal = xasprintf("%s-wal", path), *shm = xasprintf("%s-shm", path);
    unlink(wal);
    unlink(shm);
    rmdir(dir);
    free(wal);
    free(shm);
    free(path);
    free(url);
}

int
main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "populate-mc") == 0)
        return populate_mc(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "dead-entry") == 0)
        return dead_entry(argc, argv);
    test_redact();
    test_open_errors();
    test_enqueue_validates_first();
    test_mc();
    return T_DONE("test_libherald");
}
