/*
 * test_walbuf — the SQLite VFS that writes a commit's log frames at once
 * (io/sqlite_walbuf.h), against real SQLite files:
 *
 *   - every commit is seen whole by another connection (the default VFS)
 *     right after it returns, row counts and contents, through a hundred
 *     commits and the log's restarts; the file passes integrity_check;
 *   - a commit makes a few write calls where the default VFS makes two
 *     per page (the process's write-call count, /proc/self/io);
 *   - a writer killed (SIGKILL) in the middle of its commits leaves a
 *     file that passes integrity_check and holds every commit it
 *     reported, each whole.
 */
#include "../../io/sqlite_walbuf.h"
#include "t.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROWS 40
#define BLOB 2000

static char dir[] = "/tmp/test_walbuf.XXXXXX";

static sqlite3 *
open_db(const char *path, const char *vfs)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        vfs) != SQLITE_OK)
        return NULL;
    sqlite3_busy_timeout(db, 5000);
    sqlite3_exec(db,
                 "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                 "CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY,"
                 " k INTEGER, b BLOB); CREATE INDEX IF NOT EXISTS t_k ON t(k)",
                 NULL, NULL, NULL);
    return db;
}

/* One transaction of ROWS rows, commit number n: blobs filled with n,
 * keys scattered over the index. */
static int
commit_rows(sqlite3 *db, int n)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT INTO t (k, b) VALUES (?1, ?2)", -1, &st,
                           NULL) != SQLITE_OK)
        return -1;
    unsigned char blob[BLOB];
    memset(blob, n & 0xff, sizeof blob);
    int rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    for (int r = 0; rc == SQLITE_OK && r < ROWS; r++) {
        sqlite3_bind_int(st, 1, (n * 7919 + r * 104729) % 100003);
        sqlite3_bind_blob(st, 2, blob, sizeof blob, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : -1;
}

static long long
query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int
integrity_ok(sqlite3 *db)
{
    sqlite3_stmt *st;
    int ok = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) !=
        SQLITE_OK)
        return 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    sqlite3_finalize(st);
    return ok;
}

/* Write calls this process made so far (syscw of /proc/self/io). */
static long long
write_calls(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    long long v = -1;
    char line[128];
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "syscw:", 6) == 0)
            v = atoll(line + 6);
    if (f)
        fclose(f);
    return v;
}

static void
test_visible(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/visible.db", dir);
    CHECK(sqlite_walbuf_vfs() != NULL);
    CHECK_STR(sqlite_walbuf_vfs(), SQLITE_WALBUF_VFS);
    sqlite3 *w = open_db(path, sqlite_walbuf_vfs());
    sqlite3 *r = open_db(path, NULL);
    CHECK(w != NULL && r != NULL);
    if (w == NULL || r == NULL)
        return;
    /* a small checkpoint threshold: the log is copied back and restarts
     * from its beginning many times over the run */
    sqlite3_wal_autocheckpoint(w, 200);
    int bad = 0;
    for (int n = 1; n <= 100; n++) {
        if (commit_rows(w, n) != 0) {
            bad++;
            continue;
        }
        char sql[128];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM t WHERE b = (SELECT b FROM t WHERE"
                 " i = %d)",
                 n * ROWS);
        if (query_int(r, "SELECT count(*) FROM t") != (long long)n * ROWS ||
            query_int(r, sql) != ROWS)
            bad++;
    }
    CHECK_MSG(bad == 0, "%d commits not seen whole by the other connection",
              bad);
    CHECK(integrity_ok(r));
    sqlite3_close(r);
    sqlite3_close(w);
}

static double
calls_per_commit(const char *path, const char *vfs)
{
    sqlite3 *db = open_db(path, vfs);
    if (db == NULL)
        return -1;
    sqlite3_wal_autocheckpoint(db, 0); /* only the log's writes counted */
    commit_rows(db, 0);
    long long c0 = write_calls();
    for (int n = 1; n <= 20; n++)
        commit_rows(db, n);
    long long c1 = write_calls();
    sqlite3_close(db);
    return (double)(c1 - c0) / 20;
}

static void
test_fewer_writes(void)
{
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/plain.db", dir);
    snprintf(b, sizeof b, "%s/buffered.db", dir);
    double plain = calls_per_commit(a, NULL);
    double buffered = calls_per_commit(b, sqlite_walbuf_vfs());
    /* ~24 pages a commit: two calls each with the default VFS */
    CHECK_MSG(plain > 30, "default VFS: %.1f write calls a commit", plain);
    CHECK_MSG(buffered > 0 && buffered <= 6,
              "walbuf: %.1f write calls a commit (default: %.1f)", buffered,
              plain);
}

static void
test_killed(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/killed.db", dir);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        sqlite3 *db = open_db(path, sqlite_walbuf_vfs());
        if (db == NULL)
            _exit(2);
        sqlite3_wal_autocheckpoint(db, 300);
        for (int n = 1;; n++) {
            if (commit_rows(db, n) != 0)
                _exit(3);
            if (write(fds[1], &n, sizeof n) != sizeof n)
                _exit(4);
        }
    }
    close(fds[1]);
    int n = 0, got;
    while (n < 150 && read(fds[0], &got, sizeof got) == sizeof got)
        n = got;
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    while (read(fds[0], &got, sizeof got) == sizeof got)
        n = got; /* reported before it died */
    close(fds[0]);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    sqlite3 *db = open_db(path, NULL);
    CHECK(db != NULL);
    if (db == NULL)
        return;
    long long rows = query_int(db, "SELECT count(*) FROM t");
    CHECK_MSG(rows >= (long long)n * ROWS && rows % ROWS == 0,
              "%lld rows after %d reported commits of %d", rows, n, ROWS);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
}

int
main(void)
{
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_visible();
    test_fewer_writes();
    test_killed();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return T_DONE("test_walbuf");
}
