#include "mailer.h"
#include "err.h"
#include "util.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

struct xfer {
    struct mailer *m;
    struct mail_req *req;
    CURL *easy;
    struct curl_slist *rcpt_list;
    size_t pos; /* bytes of req->data handed to curl */
    struct mail_result res;
    int last_cmd;    /* CMD_* of the last command line sent */
    size_t rcpt_idx; /* RCPT commands sent so far */
    int data_354;    /* the DATA command was answered 354 */
    struct xfer *next, *prev;
    char errbuf[CURL_ERROR_SIZE];
};

enum { CMD_OTHER = 0, CMD_RCPT, CMD_DATA };

struct sockctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct mailer *m;
    int events; /* what the poll handle watches now */
};

struct mailer {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct mailer_opts o;
    char *helo;
    char *ca_file;
    struct xfer *active; /* doubly linked */
    size_t nactive;
    CURL **pool; /* idle easy handles, reset before reuse */
    size_t npool;
    int closing;
    int open_handles;
    void (*close_cb)(void *);
    void *close_ud;
};

#define POOL_MAX 256

static void check_multi_info(struct mailer *m);

static void
on_handle_closed(uv_handle_t *h)
{
    struct mailer *m = h->data;
    if (h != (uv_handle_t *)&m->timer)
        free(h); /* a sockctx: poll is its first member */
    if (--m->open_handles == 0 && m->closing) {
        void (*cb)(void *) = m->close_cb;
        void *ud = m->close_ud;
        free(m->helo);
        free(m->ca_file);
        free(m->pool);
        free(m);
        if (cb)
            cb(ud);
    }
}

static void
on_poll(uv_poll_t *p, int status, int events)
{
    struct sockctx *c = (struct sockctx *)p;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(c->m->multi, c->fd, flags, &running);
    check_multi_info(c->m);
}

static int
on_socket(CURL *easy, curl_socket_t s, int action, void *userp, void *socketp)
{
    (void)easy;
    struct mailer *m = userp;
    struct sockctx *c = socketp;
    if (action == CURL_POLL_REMOVE) {
        if (c) {
            uv_poll_stop(&c->poll);
            curl_multi_assign(m->multi, s, NULL);
            uv_close((uv_handle_t *)&c->poll, on_handle_closed);
        }
        return 0;
    }
    if (c == NULL) {
        c = xcalloc(1, sizeof *c);
        c->fd = s;
        c->m = m;
        if (uv_poll_init_socket(m->loop, &c->poll, s) != 0) {
            free(c);
            return -1;
        }
        c->poll.data = m;
        m->open_handles++;
        curl_multi_assign(m->multi, s, c);
    }
    int ev = 0;
    if (action != CURL_POLL_OUT)
        ev |= UV_READABLE;
    if (action != CURL_POLL_IN)
        ev |= UV_WRITABLE;
    /* uv_poll_start costs two epoll_ctl calls even when nothing changes */
    if (ev != c->events) {
        c->events = ev;
        uv_poll_start(&c->poll, ev, on_poll);
    }
    return 0;
}

static void
on_timer(uv_timer_t *t)
{
    struct mailer *m = t->data;
    int running;
    curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(m);
}

static int
on_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct mailer *m = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&m->timer);
    else
        uv_timer_start(&m->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

int
mailer_new(uv_loop_t *loop, const struct mailer_opts *o, struct mailer **out)
{
    static int curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return HERR_IO;
        curl_ready = 1;
    }
    struct mailer *m = xcalloc(1, sizeof *m);
    m->loop = loop;
    m->o = *o;
    m->helo = xstrdup(o->helo ? o->helo : "localhost");
    m->ca_file = o->ca_file ? xstrdup(o->ca_file) : NULL;
    m->pool = xcalloc(POOL_MAX, sizeof *m->pool);
    m->multi = curl_multi_init();
    if (m->multi == NULL) {
        free(m->helo);
        free(m->ca_file);
        free(m->pool);
        free(m);
        return HERR_IO;
    }
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    m->open_handles = 1;
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      o->max_conns > 0 ? o->max_conns : 32L);
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS,
                      (o->max_conns > 0 ? o->max_conns : 32L) * 2);
    *out = m;
    return 0;
}

/* Parses "250 2.0.0 Ok" / "250-..." into its code; 0 if not a reply. */
static int
reply_code(const char *s, size_t n)
{
    if (n < 3 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' ||
        s[2] < '0' || s[2] > '9')
        return 0;
    return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

static void
copy_line(char *dst, const char *s, size_t n)
{
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    if (n >= MAILER_REPLY_MAX)
        n = MAILER_REPLY_MAX - 1;
    for (size_t i = 0; i < n; i++)
        dst[i] = (s[i] < 0x20 || s[i] == 0x7f) ? ' ' : s[i];
    dst[n] = '\0';
}

/*
 * libcurl runs SMTP in lock-step (no PIPELINING), so each server reply
 * answers the last command line it sent: that pairs RCPT replies with
 * recipients, and the reply after DATA's 354 is the final verdict.
 */
static int
on_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *ud)
{
    (void)easy;
    struct xfer *x = ud;
    if (type == CURLINFO_HEADER_OUT) {
        if (size >= 8 && strncasecmp(data, "RCPT TO:", 8) == 0)
            x->last_cmd = CMD_RCPT;
        else if (size >= 4 && strncasecmp(data, "DATA", 4) == 0)
            x->last_cmd = CMD_DATA;
        else
            x->last_cmd = CMD_OTHER;
        if (x->last_cmd == CMD_RCPT)
            x->rcpt_idx++;
        return 0;
    }
    if (type != CURLINFO_HEADER_IN)
        return 0;
    int code = reply_code(data, size);
    if (code == 0 || (size > 3 && data[3] == '-'))
        return 0; /* not a final reply line */
    x->res.code = code;
    copy_line(x->res.reply, data, size);
    if (x->last_cmd == CMD_RCPT && x->rcpt_idx >= 1 &&
        x->rcpt_idx <= x->res.nrcpt) {
        struct mail_rcpt_result *r = &x->res.rcpt[x->rcpt_idx - 1];
        r->code = code;
        copy_line(r->reply, data, size);
        x->last_cmd = CMD_OTHER;
    } else if (x->last_cmd == CMD_DATA && code == 354) {
        x->data_354 = 1;
        x->last_cmd = CMD_OTHER;
    }
    return 0;
}

static size_t
on_read(char *buf, size_t size, size_t nitems, void *ud)
{
    struct xfer *x = ud;
    size_t want = size * nitems, left = x->req->len - x->pos;
    if (want > left)
        want = left;
    memcpy(buf, x->req->data + x->pos, want);
    x->pos += want;
    return want;
}

int
mailer_send(struct mailer *m, struct mail_req *req)
{
    if (m->closing)
        return HERR_IO;
    if (req->nrcpt == 0 || req->nrcpt > MAILER_RCPT_MAX)
        return HERR_INVALID;
    struct xfer *x = xcalloc(1, sizeof *x);
    x->m = m;
    x->req = req;
    x->res.nrcpt = req->nrcpt;
    for (size_t i = 0; i < req->nrcpt; i++) {
        char *a = xasprintf("<%s>", req->rcpt[i]);
        struct curl_slist *l = curl_slist_append(x->rcpt_list, a);
        free(a);
        if (l == NULL)
            abort();
        x->rcpt_list = l;
    }
    CURL *e = m->npool ? m->pool[--m->npool] : curl_easy_init();
    if (e == NULL)
        abort();
    x->easy = e;
    char *url = xasprintf("%s/%s", req->url, m->helo);
    char *from = xasprintf("<%s>", req->mail_from);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, from);
    free(url);
    free(from);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, x->rcpt_list);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT_ALLLOWFAILS, 1L);
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, x);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->len);
    curl_easy_setopt(e, CURLOPT_USE_SSL, strncmp(req->url, "smtps:", 6) == 0
                                             ? (long)CURLUSESSL_ALL
                                             : (long)CURLUSESSL_TRY);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (m->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, m->ca_file);
    if (req->user) {
        curl_easy_setopt(e, CURLOPT_USERNAME, req->user);
        curl_easy_setopt(e, CURLOPT_PASSWORD,
                         req->password ? req->password : "");
    }
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, m->o.connect_timeout_s);
    curl_easy_setopt(e, CURLOPT_SERVER_RESPONSE_TIMEOUT, m->o.step_timeout_s);
    /* A stalled body upload is caught by the low-speed limit. */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, m->o.step_timeout_s);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* The default 64 KiB upload buffer (and the 2x scratch buffer SMTP
     * dot-stuffing allocates beside it) costs page faults on every
     * transaction; notification mail is small. */
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 16384L);
    curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_debug);
    curl_easy_setopt(e, CURLOPT_DEBUGDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    if (curl_multi_add_handle(m->multi, e) != CURLM_OK) {
        curl_slist_free_all(x->rcpt_list);
        curl_easy_cleanup(e);
        free(x);
        return HERR_IO;
    }
    x->next = m->active;
    if (m->active)
        m->active->prev = x;
    m->active = x;
    m->nactive++;
    req->priv_ = x;
    return 0;
}

size_t
mailer_active(const struct mailer *m)
{
    return m->nactive;
}

static void
classify(struct xfer *x, CURLcode rc)
{
    struct mail_result *r = &x->res;
    r->curl_code = (int)rc;
    long reused = 0;
    curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &reused);
    r->reused = reused == 0;
    if (rc == CURLE_OK) {
        r->cls = MAIL_OK;
        return;
    }
    /* A server that answered with a code decides; else it is transport. */
    if (r->code >= 500) {
        r->cls = MAIL_PERM;
        /* Every recipient refused: temporary if any refusal was. */
        for (size_t i = 0; i < r->nrcpt; i++)
            if (r->rcpt[i].code >= 400 && r->rcpt[i].code < 500)
                r->cls = MAIL_TEMP;
    } else {
        r->cls = MAIL_TEMP;
    }
    /* An error before any reply, or curl's own failure after a 2xx/3xx
     * (a dropped connection, a timeout): say what curl saw. */
    if (r->code < 400 || rc == CURLE_OPERATION_TIMEDOUT) {
        const char *why = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
        snprintf(r->reply, sizeof r->reply, "%s", why);
        r->cls = MAIL_TEMP;
        r->code = 0;
    }
}

static void
finish(struct mailer *m, struct xfer *x, CURLcode rc, int aborted)
{
    curl_multi_remove_handle(m->multi, x->easy);
    if (aborted) {
        x->res.cls = MAIL_TEMP;
        x->res.code = 0;
        snprintf(x->res.reply, sizeof x->res.reply, "aborted at shutdown");
    } else {
        classify(x, rc);
    }
    if (x->prev)
        x->prev->next = x->next;
    else
        m->active = x->next;
    if (x->next)
        x->next->prev = x->prev;
    m->nactive--;
    curl_slist_free_all(x->rcpt_list);
    if (m->npool < POOL_MAX && !aborted) {
        curl_easy_reset(x->easy);
        m->pool[m->npool++] = x->easy;
    } else {
        curl_easy_cleanup(x->easy);
    }
    struct mail_req *req = x->req;
    struct mail_result res = x->res;
    free(x);
    req->priv_ = NULL;
    req->done(req, &res);
}

static void
check_multi_info(struct mailer *m)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct xfer *x;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        finish(m, x, msg->data.result, 0);
    }
}

void
mailer_abort_all(struct mailer *m)
{
    while (m->active)
        finish(m, m->active, CURLE_ABORTED_BY_CALLBACK, 1);
}

void
mailer_close(struct mailer *m, void (*cb)(void *ud), void *ud)
{
    mailer_abort_all(m);
    m->closing = 1;
    m->close_cb = cb;
    m->close_ud = ud;
    for (size_t i = 0; i < m->npool; i++)
        curl_easy_cleanup(m->pool[i]);
    m->npool = 0;
    /* Closing the multi closes cached connections: their sockets report
     * CURL_POLL_REMOVE first, which closes the poll handles. */
    curl_multi_cleanup(m->multi);
    m->multi = NULL;
    uv_timer_stop(&m->timer);
    uv_close((uv_handle_t *)&m->timer, on_handle_closed);
}
