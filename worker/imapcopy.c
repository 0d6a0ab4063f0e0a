#include "imapcopy.h"
#include "curllib.h"
#include "err.h"
#include "log.h"
#include "seal.h"
#include "util.h"

#include <malloc.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

/* Copies run at most this many at once, so they never take the thread
 * pool from the Message Center writes and SPF checks; the rest wait here
 * (up to IMAPCOPY_QUEUE_MAX, then the copy is skipped and logged). */
#define IMAPCOPY_RUNNING_MAX 2
#define IMAPCOPY_QUEUE_MAX 10000

struct job_copy {
    struct job_copy *next; /* in the wait queue */
    uv_work_t work;
    struct imapcopy *c;
    char *job_id, *org, *url, *user, *folder;
    char *password; /* a reference to a secret (seal.h) */
    char *msg;
    size_t len, pos;
    int ok;
    char err[CURL_ERROR_SIZE + 64];
};

struct imapcopy {
    const struct settings *s;
    uv_loop_t *loop;
    int running;
    struct job_copy *wait_head, *wait_tail;
    size_t nwait;
    int closing;
    int curl_state; /* 0: not loaded yet, 1: ready, -1: cannot be loaded */
    char curl_why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
    void (*close_cb)(void *);
    void *close_ud;
};

/*
 * libcurl's memory, wiped before it is freed. curl keeps copies of the
 * password of its own (CURLOPT_PASSWORD is copied, the LOGIN or
 * AUTHENTICATE command is built in its buffers) and frees them without
 * wiping, which would leave the clear password in freed heap memory and so
 * in a core dump. Only the Sent-folder copies use libcurl in the worker,
 * so only they pay for it.
 */
static void
cm_free(void *p)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, malloc_usable_size(p));
    free(p);
}

static void *
cm_malloc(size_t n)
{
    return malloc(n);
}

/* Never realloc(): it would free the old block unwiped. */
static void *
cm_realloc(void *p, size_t n)
{
    if (p == NULL)
        return malloc(n);
    void *q = malloc(n ? n : 1);
    if (q == NULL)
        return NULL;
    size_t old = malloc_usable_size(p);
    memcpy(q, p, old < n ? old : n);
    cm_free(p);
    return q;
}

static char *
cm_strdup(const char *str)
{
    size_t n = strlen(str) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, str, n);
    return p;
}

static void *
cm_calloc(size_t n, size_t size)
{
    return calloc(n, size);
}

struct imapcopy *
imapcopy_new(uv_loop_t *loop, const struct settings *s)
{
    struct imapcopy *c = xcalloc(1, sizeof *c);
    c->loop = loop;
    c->s = s;
    return c;
}

/*
 * libcurl is loaded (curllib.h) and initialised at the first copy, on the
 * loop thread, before any copy runs on the thread pool: the worker's
 * first and only initialisation of libcurl, so the memory functions take
 * effect (Debian 12's libcurl 7.88 initialises thread-safely: the
 * Message Center's pool threads never call it). 0 when ready; else the
 * reason is in `why` (the same for every copy).
 */
static int
curl_ready(struct imapcopy *c, char *why, size_t n)
{
    if (c->curl_state == 0) {
        struct herr e;
        c->curl_state = -1;
        if (curllib_load(&e) != 0)
            herr_format(&e, c->curl_why, sizeof c->curl_why);
        else if (curllib.curl_global_init_mem(CURL_GLOBAL_DEFAULT, cm_malloc,
                                              cm_free, cm_realloc, cm_strdup,
                                              cm_calloc) != CURLE_OK)
            snprintf(c->curl_why, sizeof c->curl_why,
                     "libcurl could not be initialised");
        else
            c->curl_state = 1;
    }
    if (c->curl_state == 1)
        return 0;
    snprintf(why, n, "%s", c->curl_why);
    return -1;
}

static size_t
on_read(char *buf, size_t size, size_t nitems, void *ud)
{
    struct job_copy *j = ud;
    size_t want = size * nitems, left = j->len - j->pos;
    if (want > left)
        want = left;
    memcpy(buf, j->msg + j->pos, want);
    j->pos += want;
    return want;
}

static void
copy_work(uv_work_t *req)
{
    struct job_copy *j = req->data;
    const struct settings *s = j->c->s;
    CURL *e = curllib.curl_easy_init();
    if (e == NULL) {
        snprintf(j->err, sizeof j->err, "libcurl could not start");
        return;
    }
    char *folder = curllib.curl_easy_escape(e, j->folder, 0);
    char *url = xasprintf("%s/%s", j->url, folder ? folder : "");
    curllib.curl_free(folder);
    char errbuf[CURL_ERROR_SIZE] = "";
    curllib.curl_easy_setopt(e, CURLOPT_URL, url);
    curllib.curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curllib.curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curllib.curl_easy_setopt(e, CURLOPT_READDATA, j);
    curllib.curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)j->len);
    curllib.curl_easy_setopt(e, CURLOPT_USERNAME, j->user);
    curllib.curl_easy_setopt(e, CURLOPT_PASSWORD, j->password);
    curllib.curl_easy_setopt(e, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    curllib.curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curllib.curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (s->ca_file) {
        curllib.curl_easy_setopt(e, CURLOPT_CAINFO, s->ca_file);
        curllib.curl_easy_setopt(e, CURLOPT_CAPATH, "/etc/ssl/certs");
    }
    curllib.curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, s->connect_timeout_s);
    curllib.curl_easy_setopt(e, CURLOPT_SERVER_RESPONSE_TIMEOUT,
                             s->smtp_timeout_s);
    curllib.curl_easy_setopt(e, CURLOPT_TIMEOUT,
                             s->connect_timeout_s + 4 * s->smtp_timeout_s);
    curllib.curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curllib.curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curllib.curl_easy_perform(e);
    if (rc == CURLE_OK) {
        j->ok = 1;
    } else {
        snprintf(j->err, sizeof j->err, "%s",
                 errbuf[0] ? errbuf : curllib.curl_easy_strerror(rc));
    }
    curllib.curl_easy_cleanup(e);
    free(url);
}

static void
copy_free(struct job_copy *j)
{
    seal_free_secret(j->password, 0); /* this copy's reference */
    free(j->job_id);
    free(j->org);
    free(j->url);
    free(j->user);
    free(j->folder);
    free(j->msg);
    free(j);
}

static void copy_done(uv_work_t *req, int status);

/* Starts waiting copies while fewer than IMAPCOPY_RUNNING_MAX run. */
static void
pump(struct imapcopy *c)
{
    while (c->running < IMAPCOPY_RUNNING_MAX && c->wait_head) {
        struct job_copy *j = c->wait_head;
        c->wait_head = j->next;
        if (c->wait_head == NULL)
            c->wait_tail = NULL;
        c->nwait--;
        c->running++;
        if (uv_queue_work(c->loop, &j->work, copy_work, copy_done) != 0) {
            c->running--;
            copy_free(j);
        }
    }
}

static void
maybe_closed(struct imapcopy *c)
{
    if (!c->closing || c->running > 0)
        return;
    while (c->wait_head) { /* not started: dropped at shutdown */
        struct job_copy *j = c->wait_head;
        c->wait_head = j->next;
        log_job(LOG_WARN, j->job_id, j->org, 0,
                "shutdown: the Sent-folder copy was not made", NULL);
        copy_free(j);
    }
    void (*cb)(void *) = c->close_cb;
    void *ud = c->close_ud;
    free(c);
    if (cb)
        cb(ud);
}

static void
copy_done(uv_work_t *req, int status)
{
    struct job_copy *j = req->data;
    struct imapcopy *c = j->c;
    c->running--;
    if (status == 0 && j->ok)
        log_job(LOG_INFO, j->job_id, j->org, 0, "copied to the Sent folder",
                "folder", j->folder, NULL);
    else
        log_job(LOG_WARN, j->job_id, j->org, 0,
                "could not copy the message to the Sent folder (it was "
                "delivered)",
                "folder", j->folder, "error", status < 0 ? "cancelled" : j->err,
                NULL);
    copy_free(j);
    if (c->closing)
        maybe_closed(c);
    else
        pump(c);
}

void
imapcopy_append(struct imapcopy *c, const char *job_id, const char *org,
                const char *url, const char *user, const char *password,
                const char *folder, const char *msg, size_t len)
{
    if (c->closing)
        return;
    if (c->nwait >= IMAPCOPY_QUEUE_MAX) {
        log_job(LOG_WARN, job_id, org, 0,
                "too many Sent-folder copies waiting; this one is skipped "
                "(the message was delivered)",
                NULL);
        return;
    }
    char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
    if (curl_ready(c, why, sizeof why) != 0) {
        log_job(LOG_WARN, job_id, org, 0,
                "could not copy the message to the Sent folder (it was "
                "delivered)",
                "folder", folder, "error", why, NULL);
        return;
    }
    struct job_copy *j = xcalloc(1, sizeof *j);
    j->c = c;
    j->job_id = xstrdup(job_id);
    j->org = xstrdup(org);
    j->url = xstrdup(url);
    j->user = xstrdup(user);
    /* a reference, not a copy: the route that lent it may be cleared, and
     * the scheme table reloaded, before the thread logs in */
    j->password = seal_secret_ref(password);
    j->folder = xstrdup(folder);
    j->msg = xmalloc(len ? len : 1);
    memcpy(j->msg, msg, len);
    j->len = len;
    j->work.data = j;
    if (c->wait_tail)
        c->wait_tail->next = j;
    else
        c->wait_head = j;
    c->wait_tail = j;
    c->nwait++;
    pump(c);
}

void
imapcopy_close(struct imapcopy *c, void (*cb)(void *ud), void *ud)
{
    c->closing = 1;
    c->close_cb = cb;
    c->close_ud = ud;
    /* copies already queued finish first (bounded by the timeouts) */
    maybe_closed(c);
}
