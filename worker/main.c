/*
 * herald-worker — takes notification jobs from Redis, resolves the sender,
 * delivers over SMTP and mirrors every message into the Message Center.
 * One libuv loop per process; scale by running more processes.
 */
#include "err.h"
#include "log.h"
#include "settings.h"
#include "util.h"
#include "worker.h"

#include <ctype.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static void
usage(FILE *f)
{
    fputs("Usage: herald-worker [--print-config] [SETTING FLAGS]\n"
          "\n"
          "Takes jobs from <prefix>:queue:high|normal|low in Redis, delivers\n"
          "them over SMTP and records each in the Message Center. Stops\n"
          "gracefully on SIGTERM or SIGINT (a second signal cuts the grace\n"
          "short).\n\n",
          f);
    settings_usage(f);
}

struct app {
    uv_loop_t *loop;
    struct worker *w;
    uv_signal_t sigterm, sigint;
    uv_prepare_t logflush; /* writes the turn's log lines before waiting */
    int code;
    int done;
    int early_stop; /* a signal came before the worker existed */
};

static void
on_worker_done(void *ud, int code)
{
    struct app *a = ud;
    a->code = code;
    a->done = 1;
    uv_close((uv_handle_t *)&a->logflush, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
}

static void
on_logflush(uv_prepare_t *h)
{
    (void)h;
    log_flush();
}

static void
on_signal(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    log_msg(LOG_INFO, "signal received", "signal",
            signum == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
    if (a->w == NULL) {
        a->early_stop = 1;
        return;
    }
    worker_stop(a->w, on_worker_done, a);
}

int
main(int argc, char **argv)
{
    struct settings s;
    struct herr e = {{0}, {0}};
    /* Blocks of 1 MiB and more (a job of megabytes, its message, its
     * record) come from mmap and go back to the system when freed. By
     * default glibc raises this threshold after such frees, and a worker
     * that handled a few 10 MiB jobs would keep their memory for good.
     * Below it (a batch's Redis command of a few hundred KiB) the heap is
     * reused, without a page fault per use: a fixed threshold also fixes
     * the trim threshold, which must stay well above such a batch, or
     * every free() at the top of the heap hands pages back that the next
     * batch faults in again (five times the page faults per message). */
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
    /* At most four malloc arenas (glibc's default is eight per core, and
     * each libuv pool thread that parses jobs or writes a batch got its
     * own, each keeping freed memory up to the trim threshold): peak RSS
     * in `make bench` 24.5 -> 22.6 MB, throughput within the run-to-run
     * noise (with two arenas, ~5 % lower: the loop and the pool threads
     * waited on arena locks). */
    mallopt(M_ARENA_MAX, 4);
    int code = settings_main(&s, "herald-worker", argc, argv, usage);
    if (code >= 0)
        return code;
    log_init("herald-worker", s.log_level);
    signal(SIGPIPE, SIG_IGN);

    char idbuf[300];
    if (s.worker_id) {
        snprintf(idbuf, sizeof idbuf, "%s", s.worker_id);
    } else {
        /* hostname: stable across restarts of a container; the pid keeps
         * several processes on one host apart */
        char host[256] = "worker";
        gethostname(host, sizeof host - 1);
        for (char *p = host; *p; p++)
            if (!(isalnum((unsigned char)*p) || strchr("._-", *p)))
                *p = '-';
        snprintf(idbuf, sizeof idbuf, "%s-%ld", host, (long)getpid());
    }

    struct app a = {0};
    /* The thread pool runs Message Center batches, SPF checks and IMAP
     * copies; libuv's default of 4 threads lets slow DNS or IMAP servers
     * delay the batches every delivery waits for. */
    setenv("UV_THREADPOOL_SIZE", "16", 0);
    a.loop = uv_default_loop();
    /* Signals first: a SIGTERM while the store opens must not kill us. */
    uv_signal_init(a.loop, &a.sigterm);
    uv_signal_init(a.loop, &a.sigint);
    a.sigterm.data = a.sigint.data = &a;
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    uv_signal_start(&a.sigint, on_signal, SIGINT);
    if (worker_new(a.loop, &s, idbuf, &a.w, &e) != 0) {
        char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&e, why, sizeof why);
        log_msg(LOG_FATAL, "cannot start", "error", why, NULL);
        uv_close((uv_handle_t *)&a.sigterm, NULL);
        uv_close((uv_handle_t *)&a.sigint, NULL);
        uv_run(a.loop, UV_RUN_DEFAULT);
        uv_loop_close(a.loop);
        settings_free(&s);
        return e.field[0] && strncmp(e.field, "HERALD_", 7) == 0 ? 2 : 1;
    }
    /* The resolver holds the relay password in secret memory now; the
     * settings' heap copy and the environment's go. */
    settings_scrub_secrets(&s);
    uv_prepare_init(a.loop, &a.logflush);
    uv_prepare_start(&a.logflush, on_logflush);
    uv_unref((uv_handle_t *)&a.logflush);
    log_set_buffered(1);
    /* A signal that arrived before uv_run is delivered by the loop: */
    uv_run(a.loop, UV_RUN_NOWAIT);
    if (a.early_stop)
        worker_stop(a.w, on_worker_done, &a);
    log_msg(LOG_INFO, "worker started", "worker", idbuf, "version",
            HERALD_VERSION, NULL);
    uv_run(a.loop, UV_RUN_DEFAULT);
    log_set_buffered(0);
    int rc = uv_loop_close(a.loop);
    if (rc != 0)
        log_msg(LOG_ERROR, "loop closed with handles still open (a bug)",
                "error", uv_strerror(rc), NULL);
    log_msg(LOG_INFO, "worker stopped", NULL);
    settings_free(&s);
    return a.done ? a.code : 1;
}
