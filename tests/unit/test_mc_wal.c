/*
 * test_mc_wal — the SQLite store's write-ahead log stays bounded when two
 * processes write to it without a pause (two workers on one store), as
 * each worker's checkpoint handle (mc_checkpoint every 100 ms) keeps it.
 *
 * Two child processes insert records in batches for a few seconds, each
 * on its own handle, while this process checkpoints on a third handle
 * every 100 ms and samples the log's size. With passive checkpoints
 * alone the log was never started again (no writer ever found it fully
 * copied) and grew by the whole write volume; it must stay within a few
 * times the checkpoint threshold. (And the store's page cache comes
 * from the process's pool.)
 */
#include "../../common/clock.h"
#include "../../common/mc.h"
#include "../../common/util.h"
#include "t.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RUN_MS 4000
#define BATCH 100
/* 8000 pages (twice the checkpoint threshold) is where a writer starts
 * the log again; these writers write ~5 times as fast as a worker's (no
 * SMTP between batches), so the log runs on while a restart waits: five
 * times that is the bound (without the restart: 590 MB and more) */
#define WAL_MAX_BYTES (5LL * 8000 * 4096)

static char dir[] = "/tmp/test_mc_wal.XXXXXX";

static void
writer(const char *url, int who)
{
    struct mc *m;
    struct herr e = {{0}, {0}};
    if (mc_open(url, &m, &e) != 0)
        _exit(2);
    mc_checkpoint_elsewhere(m); /* as a worker's writer */
    char text[2001];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    int64_t end = clock_mono_ms() + RUN_MS;
    long n = 0;
    while (clock_mono_ms() < end) {
        if (mc_batch_begin(m, &e) != 0)
            _exit(3);
        for (int i = 0; i < BATCH; i++, n++) {
            char id[64], org[32], acct[32], to[64];
            snprintf(id, sizeof id, "w%d-%ld", who, n);
            snprintf(org, sizeof org, "org-%ld", n % 50);
            snprintf(acct, sizeof acct, "acct-%ld", n % 1000);
            snprintf(to, sizeof to, "[{\"email\":\"p%ld@example.com\"}]", n);
            struct mc_record r = {0};
            r.id = id;
            r.org = org;
            r.account = acct;
            r.type = "receipt";
            r.status = MC_QUEUED;
            r.from = "office@example.com";
            r.to_json = to;
            r.subject = "Receipt";
            r.text = text;
            r.created_at = r.updated_at = clock_now_ms();
            if (mc_insert(m, &r, NULL, &e) != 0)
                _exit(4);
        }
        if (mc_batch_commit(m, &e) != 0)
            _exit(5);
        /* a worker's writer waits a little between batches (its steps
         * come from the loop); two that never pause starve each other in
         * SQLite's locks whatever the checkpoints do */
        struct timespec ts = {0, 3000000L};
        nanosleep(&ts, NULL);
    }
    mc_close(m);
    /* how many batches it wrote (capped: an exit status) */
    _exit(n / BATCH > 250 ? 250 : (int)(n / BATCH));
}

static long long
file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

int
main(void)
{
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char url[300], wal[300];
    snprintf(url, sizeof url, "sqlite://%s/mc.db", dir);
    snprintf(wal, sizeof wal, "%s/mc.db-wal", dir);
    struct mc *ck;
    struct herr e = {{0}, {0}};
    CHECK(mc_open(url, &ck, &e) == 0); /* creates the schema */
    /* the store's page cache comes from its pool (mc_sqlite.c) */
    int cur = 0, hi = 0;
    sqlite3_status(SQLITE_STATUS_PAGECACHE_USED, &cur, &hi, 0);
    CHECK_MSG(hi > 0, "no page-cache line taken from the pool");
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            writer(url, i);
    }
    long long wal_max = 0;
    int failed = 0;
    int64_t end = clock_mono_ms() + RUN_MS + 500;
    while (clock_mono_ms() < end) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        if (mc_checkpoint(ck, &e) != 0)
            failed++;
        long long sz = file_size(wal);
        if (sz > wal_max)
            wal_max = sz;
    }
    long batches = 0;
    for (int i = 0; i < 2; i++) {
        int status;
        waitpid(pids[i], &status, 0);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) > 5,
                  "writer %d ended with status %d", i, status);
        if (WIFEXITED(status))
            batches += WEXITSTATUS(status);
    }
    CHECK(failed == 0);
    CHECK_MSG(wal_max <= WAL_MAX_BYTES,
              "the log reached %lld bytes (bound %lld) with two writers",
              wal_max, WAL_MAX_BYTES);
    mc_close(ck);
    printf("test_mc_wal: %ld batches of %d written by two processes, log at "
           "most %lld bytes\n",
           batches, BATCH, wal_max);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return T_DONE("test_mc_wal");
}
