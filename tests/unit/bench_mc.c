/*
 * bench_mc — the Message Center's write path as the worker drives it.
 *
 * Built by `make` into bin/bench_mc; `make bench-mc` runs it with its
 * defaults. A benchmark: it prints figures and asserts nothing.
 *
 * Per message: mc_record_from_job + mc_insert (queued, ~2 KB text), an
 * mc_update to "sending" (attempts +1, path, sender, reply_to,
 * path_reason) and one to "sent" (sent_at, smtp_reply, recipients_json),
 * or "deferred"/"failed" for every 10th/25th message. Writes go in
 * batches (mc_batch_begin/commit) of -b steps per kind, pipelined like the
 * worker: batch k inserts messages of window k, marks window k-1 sending
 * and window k-2 sent. With -s the three writes of a message go into the
 * same batch instead.
 *
 * The clock is pinned and advanced per message, so two runs give the
 * same records; -o FILE writes every record (mc_get) and the results of a
 * set of mc_list filters as JSON lines, to compare two builds with cmp.
 *
 * -W skips the reads (for profiling the writes alone); -R skips the
 * writes and reads the store already in -d DIR (one an older build
 * wrote, say); -k keeps the database (in -d DIR, or a new directory
 * under /tmp).
 *
 * Usage: bench_mc [-n N] [-b BATCH] [-t TEXT_BYTES] [-s] [-o FILE]
 *                 [-d DIR] [-k] [-W|-R]
 */
#include "../../common/clock.h"
#include "../../common/job.h"
#include "../../common/mc.h"
#include "../../common/util.h"

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define T0 1790000000000LL
#define NORG 5
#define NACCT 40
#define NADDR 300

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Bytes this process passed to read/write calls so far (Linux), or -1. */
static void
io_bytes(long long *rd, long long *wr)
{
    *rd = *wr = -1;
    FILE *f = fopen("/proc/self/io", "r");
    if (f == NULL)
        return;
    char line[128];
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "rchar: %lld", rd);
        sscanf(line, "wchar: %lld", wr);
    }
    fclose(f);
}

static void
die(const char *what, int rc, const struct herr *e)
{
    fprintf(stderr, "bench_mc: %s: %d %s: %s\n", what, rc, e->field, e->msg);
    exit(1);
}

struct msg {
    char id[40], org[16], account[16], from[40], subject[64];
    char rcpt_json[512];
    struct job_addr to[2], cc[1];
    char addr[3][40];
    size_t nto, ncc;
};

static char *text_body;
static char *html_body;

/* Ids like job_assign_id's ("h-" and 32 random hex digits), but the same
 * in every run: the worker's ids land all over the id index. */
static uint64_t
mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static void
id_of(char out[40], int i)
{
    snprintf(out, 40, "h-%016llx%016llx",
             (unsigned long long)mix((uint64_t)i * 2),
             (unsigned long long)mix((uint64_t)i * 2 + 1));
}

static void
msg_make(struct msg *m, int i)
{
    id_of(m->id, i);
    snprintf(m->org, sizeof m->org, "org%d", i % NORG);
    snprintf(m->account, sizeof m->account, "acct%02d", i % NACCT);
    snprintf(m->from, sizeof m->from, "billing@org%d.example", i % NORG);
    snprintf(m->subject, sizeof m->subject, "Your receipt #%d", i);
    snprintf(m->addr[0], sizeof m->addr[0], "User%d@Example.com",
             (i * 7) % NADDR);
    snprintf(m->addr[1], sizeof m->addr[1], "user%d@example.net",
             (i * 13) % NADDR);
    snprintf(m->addr[2], sizeof m->addr[2], "cc%d@example.org", i % 17);
    m->to[0].email = m->addr[0];
    m->to[0].name = "A Person";
    m->to[1].email = m->addr[1];
    m->to[1].name = NULL;
    m->cc[0].email = m->addr[2];
    m->cc[0].name = NULL;
    m->nto = i % 3 == 0 ? 2 : 1;
    m->ncc = i % 5 == 0 ? 1 : 0;
    snprintf(m->rcpt_json, sizeof m->rcpt_json,
             "[{\"email\":\"%s\",\"kind\":\"to\",\"status\":\"sent\","
             "\"reply\":\"250 2.0.0 Ok: queued as %X\"}]",
             m->addr[0], (unsigned)i);
}

static struct mc_record *
record_of(const struct msg *m, int i)
{
    static char meta[64];
    struct job j;
    memset(&j, 0, sizeof j);
    j.id = (char *)m->id;
    j.type = "receipt";
    j.org = (char *)m->org;
    j.account = (char *)m->account;
    j.from = (char *)m->from;
    j.from_name = "Billing";
    j.to = (struct job_addr *)m->to;
    j.nto = m->nto;
    j.cc = (struct job_addr *)m->cc;
    j.ncc = m->ncc;
    j.subject = (char *)m->subject;
    j.text = text_body;
    j.html = i % 4 == 0 ? html_body : NULL;
    snprintf(meta, sizeof meta, "{\"enqueued_at\":%d}", i);
    j.meta_json = meta;
    return mc_record_from_job(&j);
}

enum step { S_INSERT, S_SENDING, S_DONE };

static double t_build, t_store;

static void
do_step(struct mc *mc, int i, enum step s)
{
    struct msg m;
    struct herr e = {{0}, {0}};
    msg_make(&m, i);
    clock_set_fixed(T0 + (int64_t)i * 10 + (int64_t)s);
    int rc;
    double t = now_s();
    if (s == S_INSERT) {
        struct mc_record *r = record_of(&m, i);
        double t2 = now_s();
        t_build += t2 - t;
        t = t2;
        rc = mc_insert(mc, r, NULL, &e);
        mc_record_free(r);
    } else {
        struct mc_update u;
        if (s == S_SENDING) {
            mc_update_init(&u, m.id, MC_SENDING);
            u.attempts_add = 1;
            u.next_attempt_at = 0;
            u.path = i % 3 == 0 ? "scheme" : "relay";
            u.path_reason = "no scheme for this sender; relay";
            u.sender = "bounces@platform.example";
            u.reply_to = m.from;
        } else if (i % 25 == 0) {
            mc_update_init(&u, m.id, MC_FAILED);
            u.next_attempt_at = 0;
            u.last_error = "550 5.1.1 no such user";
            u.smtp_reply = "550 5.1.1 no such user";
            u.recipients_json = m.rcpt_json;
        } else if (i % 10 == 0) {
            mc_update_init(&u, m.id, MC_DEFERRED);
            u.next_attempt_at = T0 + (int64_t)i * 10 + 60000;
            u.last_error = "451 4.7.1 try later";
            u.smtp_reply = "451 4.7.1 try later";
            u.recipients_json = m.rcpt_json;
        } else {
            mc_update_init(&u, m.id, MC_SENT);
            u.sent_at = T0 + (int64_t)i * 10 + 2;
            u.next_attempt_at = 0;
            u.smtp_reply = "250 2.0.0 Ok: queued as ABCDEF";
            u.recipients_json = m.rcpt_json;
            u.last_error = "";
        }
        rc = mc_update(mc, &u, &e);
    }
    t_store += now_s() - t;
    if (rc != 0)
        die("write", rc, &e);
}

static void
batch(struct mc *mc, int lo, int hi, int pipelined, int n)
{
    struct herr e = {{0}, {0}};
    double t = now_s();
    int rc = mc_batch_begin(mc, &e);
    if (rc)
        die("begin", rc, &e);
    t_store += now_s() - t;
    if (pipelined) {
        int w = hi - lo;
        for (int i = lo; i < hi; i++)
            if (i < n)
                do_step(mc, i, S_INSERT);
        for (int i = lo - w; i < hi - w; i++)
            if (i >= 0 && i < n)
                do_step(mc, i, S_SENDING);
        for (int i = lo - 2 * w; i < hi - 2 * w; i++)
            if (i >= 0 && i < n)
                do_step(mc, i, S_DONE);
    } else {
        for (int i = lo; i < hi && i < n; i++) {
            do_step(mc, i, S_INSERT);
            do_step(mc, i, S_SENDING);
            do_step(mc, i, S_DONE);
        }
    }
    t = now_s();
    rc = mc_batch_commit(mc, &e);
    if (rc)
        die("commit", rc, &e);
    t_store += now_s() - t;
}

static void
dump_list(struct mc *mc, FILE *out, const char *name, const struct mc_filter *f,
          double *t_list)
{
    struct mc_record **v = NULL;
    size_t n = 0;
    struct herr e = {{0}, {0}};
    double t = now_s();
    int rc = mc_list(mc, f, &v, &n, NULL, &e);
    if (t_list)
        *t_list = now_s() - t;
    if (rc)
        die("list", rc, &e);
    if (out) {
        fprintf(out, "list %s: %zu\n", name, n);
        for (size_t i = 0; i < n; i++) {
            char *js = mc_record_to_json(v[i]);
            fprintf(out, "%s\n", js);
            free(js);
        }
    }
    mc_records_free(v, n);
}

static int
rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

int
main(int argc, char **argv)
{
    int n = 20000, bsz = 100, text_len = 2048, pipelined = 1, keep = 0;
    int writes_only = 0, reads_only = 0;
    const char *outpath = NULL, *dir = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "n:b:t:so:d:kWR")) != -1) {
        switch (opt) {
        case 'n':
            n = atoi(optarg);
            break;
        case 'b':
            bsz = atoi(optarg);
            break;
        case 't':
            text_len = atoi(optarg);
            break;
        case 's':
            pipelined = 0;
            break;
        case 'o':
            outpath = optarg;
            break;
        case 'd':
            dir = optarg;
            break;
        case 'k':
            keep = 1;
            break;
        case 'W':
            writes_only = 1;
            break;
        case 'R':
            reads_only = 1;
            break;
        default:
            fprintf(stderr, "usage: bench_mc [-n N] [-b BATCH] [-t BYTES] "
                            "[-s] [-o FILE] [-d DIR] [-k] [-W|-R]\n");
            return 2;
        }
    }
    if (n <= 0 || bsz <= 0 || text_len < 0) {
        fprintf(stderr, "bench_mc: bad numbers\n");
        return 2;
    }
    char tmpl[] = "/tmp/bench_mc.XXXXXX";
    char *d = dir ? (char *)dir : mkdtemp(tmpl);
    if (d == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char *url = xasprintf("sqlite://%s/mc.db", d);

    text_body = xmalloc((size_t)text_len + 1);
    for (int i = 0; i < text_len; i++)
        text_body[i] = i % 64 == 63 ? '\n' : (char)('a' + (i * 7) % 26);
    text_body[text_len] = '\0';
    html_body = xasprintf("<html><body><p>%.*s</p></body></html>", text_len / 2,
                          text_body);

    struct mc *mc = NULL;
    struct herr e = {{0}, {0}};
    int rc = mc_open(url, &mc, &e);
    if (rc)
        die("open", rc, &e);

    long long rd0, wr0, rd1, wr1;
    io_bytes(&rd0, &wr0);
    double w0 = now_s(), c0 = cpu_s();
    int lo_end = pipelined ? n + 2 * bsz : n;
    for (int lo = 0; !reads_only && lo < lo_end; lo += bsz)
        batch(mc, lo, lo + bsz, pipelined, n);
    double wall = now_s() - w0, cpu = cpu_s() - c0;
    io_bytes(&rd1, &wr1);

    struct stat sb;
    char *dbpath = xasprintf("%s/mc.db", d);
    long long dbsize = stat(dbpath, &sb) == 0 ? (long long)sb.st_size : -1;
    printf("bench_mc: %d messages, batches of %d (%s), text %d B\n", n, bsz,
           pipelined ? "pipelined" : "same batch", text_len);
    if (reads_only)
        printf("  (no writes: reading %s)\n", dbpath);
    else
        printf("  wall %.3f s = %.1f us/msg (%.0f msg/s); cpu %.1f us/msg\n",
               wall, wall * 1e6 / n, n / wall, cpu * 1e6 / n);
    if (!reads_only)
        printf("  in mc_* calls %.1f us/msg; building records %.1f us/msg\n",
               t_store * 1e6 / n, t_build * 1e6 / n);
    printf("  db file %.1f MB; written %.1f KB/msg, read %.1f KB/msg\n",
           (double)dbsize / 1e6, (double)(wr1 - wr0) / 1024 / n,
           (double)(rd1 - rd0) / 1024 / n);

    /* Reads. */
    if (writes_only)
        n = 0;
    FILE *out = NULL;
    if (outpath && (out = fopen(outpath, "w")) == NULL) {
        perror(outpath);
        return 1;
    }
    double g0 = now_s();
    for (int i = 0; i < n; i++) {
        char id[40];
        id_of(id, i);
        struct mc_record *r = NULL;
        rc = mc_get(mc, id, &r, &e);
        if (rc)
            die("get", rc, &e);
        if (out) {
            char *js = mc_record_to_json(r);
            fprintf(out, "%s\n", js);
            free(js);
        }
        mc_record_free(r);
    }
    double tg = now_s() - g0;
    if (n > 0)
        printf("  mc_get %.1f us/record%s\n", tg * 1e6 / n,
               out ? " (with JSON dump)" : "");

    struct {
        const char *name;
        struct mc_filter f;
    } lists[] = {
        {"all", {.limit = 200}},
        {"org2", {.org = "org2", .limit = 100}},
        {"acct07", {.account = "acct07", .limit = 100}},
        {"org1+acct11", {.org = "org1", .account = "acct11"}},
        {"failed", {.has_status = 1, .status = MC_FAILED}},
        {"failed-1000", {.has_status = 1, .status = MC_FAILED, .limit = 1000}},
        {"deferred org0",
         {.org = "org0", .has_status = 1, .status = MC_DEFERRED}},
        {"sending", {.has_status = 1, .status = MC_SENDING}},
        {"to user7", {.to = "USER7@example.com", .limit = 1000}},
        {"to user7 org2", {.to = "user7@example.com", .org = "org2"}},
        {"range",
         {.since = T0 + 50000, .until = T0 + 60000, .limit = MC_LIST_MAX}},
        {"range org3 sent",
         {.org = "org3",
          .has_status = 1,
          .status = MC_SENT,
          .since = T0 + 1000,
          .until = T0 + 90000}},
    };
    for (size_t i = 0; !writes_only && i < sizeof lists / sizeof lists[0];
         i++) {
        double tl = 0;
        dump_list(mc, out, lists[i].name, &lists[i].f, &tl);
        /* timed again without the dump, warm */
        double best = tl;
        for (int k = 0; k < 5; k++) {
            dump_list(mc, NULL, lists[i].name, &lists[i].f, &tl);
            if (tl < best)
                best = tl;
        }
        printf("  mc_list %-16s %8.3f ms\n", lists[i].name, best * 1e3);
    }
    if (out)
        fclose(out);
    mc_close(mc);
    if (!keep && !dir && !reads_only)
        nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    else
        printf("  kept %s\n", dbpath);
    free(dbpath);
    free(url);
    free(text_body);
    free(html_body);
    return 0;
}
