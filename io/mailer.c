#include "mailer.h"
#include "scheme.h"
#include "settings.h"
#include "smtpreply.h"
#include "smtpsess.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LINE_MAX_BYTES 4096 /* an SMTP reply line longer than this is bad */
#define IDLE_CLOSE_MS 30000 /* an idle pooled connection is closed after */
#define QUIT_WAIT_MS 1000   /* QUIT's reply is awaited this long at most */
#define READ_CHUNK 65536

enum cstate {
    C_RESOLVING,
    C_CONNECTING,
    C_HANDSHAKE, /* TLS */
    C_SETUP,     /* greeting, EHLO, STARTTLS, AUTH */
    C_IDLE,
    C_QUIT, /* QUIT said, its reply awaited */
    C_BUSY, /* a transaction */
    C_RESET,
    C_CLOSING,
};

struct pool;

struct sconn {
    struct mailer *m;
    struct pool *pool;         /* NULL once closing */
    struct sconn *next, *prev; /* in pool->conns */
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    uv_getaddrinfo_t gai;
    int handles; /* open libuv handles (tcp, timer) */
    enum cstate st;
    SSL *ssl;
    BIO *rbio, *wbio;
    int tls;              /* TLS is up */
    struct smtpsess sess; /* the protocol (common/smtpsess.h): what the
                             server offers, the replies awaited */
    char helo[300];       /* the EHLO name of this connection */
    struct buf in;        /* partial reply line */
    struct buf out;       /* the commands of one step, reused */
    struct xfer *x;       /* the transaction on this connection */
    struct xfer *xnext;   /* chained after x's message (smtpsess.h): it
                             takes x's place, and its busy count, when x
                             ends */
};

struct xfer {
    struct mailer *m;
    struct mail_req *req;
    struct pool *pool;
    struct xfer *next, *prev; /* in mailer->active */
    struct xfer *wnext;       /* in its flow's wait queue */
    struct flow *flow;        /* while waiting */
    struct sconn *c;
    int busy; /* given a connection: counts in mailer->nbusy */
    struct mail_result res;
    struct smtpsess_txn txn; /* its protocol state, over res */
};

#define FLOW_BUCKETS 64

/* One flow's requests waiting at one server. */
struct flow {
    char *name;
    struct flow *hnext; /* in its pool's bucket */
    struct flow *rnext; /* in its pool's ring */
    struct xfer *head, *tail;
};

struct pool {
    struct pool *next;
    char *url, *user, *host, *tag;
    int port, implicit_tls, loopback;
    enum mail_tls tls;
    long max_conns; /* its connection limit (the mailer's when 0 given) */
    int narrow;     /* max_conns < o.max_busy: its waiters in nnarrow */
    struct sconn *conns;
    int nconns;
    /* The waiting requests, a queue per flow (mail_req.flow), the flows
     * with waiting requests served round-robin, one request a turn. */
    size_t nwait;
    struct flow *flows[FLOW_BUCKETS]; /* by name */
    struct flow *fring_head, *fring_tail;
    struct pool *rnext; /* in the mailer's ring of pools with waiters */
    int in_ring;
};

struct mailer {
    uv_loop_t *loop;
    struct mailer_opts o;
    char *helo;
    SSL_CTX *tls;
    struct pool *pools;
    struct xfer *active;
    size_t nactive;
    size_t nbusy; /* transactions given a connection (o.max_busy) */
    /* Requests waiting at a server whose connection limit is below
     * o.max_busy (mailer_waiting). */
    size_t nnarrow;
    /* Pools with waiting requests, served round-robin, one request a
     * turn; a pool at its connection limit leaves the ring until one of
     * its connections is free again (pool_wake). */
    struct pool *ring_head, *ring_tail;
    /* Requests their may_start withdrew: done() from t_withdrawn. */
    struct xfer *withdrawn;
    uv_timer_t t_withdrawn;
    int closing, aborting;
    int open_handles;
    void (*close_cb)(void *);
    void *close_ud;
    char rbuf[READ_CHUNK];
};

static void conn_close(struct sconn *c);
static void conn_fail(struct sconn *c, const char *why);
static void chain_drop(struct sconn *c, const char *why);
static void on_withdrawn(uv_timer_t *t);
static struct xfer *wait_pop(struct mailer *m, struct pool *p);
static void pool_wake(struct mailer *m, struct pool *p);
static void mailer_dispatch(struct mailer *m);
static void conn_send(struct sconn *c, const char *data, size_t len);
static void arm_timer(struct sconn *c, long ms);
static void on_timeout(uv_timer_t *t);

/* ---- finishing a transaction ---- */

static void
xfer_unlink(struct mailer *m, struct xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        m->active = x->next;
    if (x->next)
        x->next->prev = x->prev;
    m->nactive--;
}

/* Hands the outcome to the caller. The connection (if any) must already
 * be detached or about to be reused/closed by the caller. */
static void
xfer_done(struct xfer *x)
{
    struct mailer *m = x->m;
    xfer_unlink(m, x);
    if (x->busy)
        m->nbusy--;
    struct mail_req *req = x->req;
    req->priv_ = NULL;
    req->done(req, &x->res); /* the result lives until done() returns */
    free(x->res.rcpt);
    free(x);
    mailer_dispatch(m); /* its place is free */
}

/* ---- connections: I/O ---- */

struct wreq {
    uv_write_t w;
    char data[];
};

static void
on_written(uv_write_t *w, int status)
{
    struct sconn *c = w->data;
    free(w);
    if (status < 0 && c->st != C_CLOSING)
        conn_fail(c, uv_strerror(status));
}

static struct wreq *
wreq_new(size_t len)
{
    return xmalloc(sizeof(struct wreq) + len);
}

/*
 * How much of data[0..len) could be written at once (uv_try_write:
 * nothing is queued before it, so the order holds); 0 on any error, which
 * the queued write that follows then reports through on_written, as
 * before. A write libuv queues costs an epoll_ctl when it completes, even
 * at once (libuv 1.44 re-arms the socket's watcher on every drain): two a
 * message, ~13 % of the worker's system calls, before this.
 */
static size_t
try_send(struct sconn *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    return rc > 0 ? (size_t)rc : 0;
}

/* Queues r->data[off..off+len) and frees r once written. */
static void
queue_send(struct sconn *c, struct wreq *r, size_t off, size_t len)
{
    r->w.data = c;
    uv_buf_t b = uv_buf_init(r->data + off, (unsigned)len);
    int rc = uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
        free(r);
        conn_fail(c, uv_strerror(rc));
    }
}

/* Writes r->data[0..len) and frees r once written (or at once). */
static void
raw_send_wreq(struct sconn *c, struct wreq *r, size_t len)
{
    size_t done = len && c->st != C_CLOSING ? try_send(c, r->data, len) : len;
    if (done == len)
        free(r);
    else
        queue_send(c, r, done, len - done);
}

static void
raw_send(struct sconn *c, const char *data, size_t len)
{
    size_t done = len && c->st != C_CLOSING ? try_send(c, data, len) : len;
    if (done == len)
        return;
    struct wreq *r = wreq_new(len - done);
    memcpy(r->data, data + done, len - done);
    queue_send(c, r, 0, len - done);
}

/* Sends what OpenSSL wrote into its memory BIO. */
static void
tls_flush(struct sconn *c)
{
    char tmp[16384];
    int n;
    while ((n = BIO_read(c->wbio, tmp, sizeof tmp)) > 0)
        raw_send(c, tmp, (size_t)n);
}

static void
conn_send(struct sconn *c, const char *data, size_t len)
{
    if (!c->tls) {
        raw_send(c, data, len);
        return;
    }
    while (len > 0) {
        int n = SSL_write(c->ssl, data, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n <= 0) {
            conn_fail(c, "TLS write failed");
            return;
        }
        data += n;
        len -= (size_t)n;
    }
    tls_flush(c);
}

/* The request's trace (mail_req.trace), if it has one. */
static void
trace(struct sconn *c, enum mail_trace kind, const char *s, size_t n)
{
    if (c->x && c->x->req->trace)
        c->x->req->trace(c->x->req, kind, s, n);
}

/* Each line of commands about to be sent for x, to its trace, without
 * CR LF. Never given credentials: AUTH says only its mechanism. */
static void
trace_lines(struct xfer *x, const char *s, size_t n)
{
    if (x == NULL || x->req->trace == NULL)
        return;
    while (n > 0) {
        const char *nl = memchr(s, '\n', n);
        size_t k = nl ? (size_t)(nl - s) + 1 : n, len = k;
        while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
            len--;
        x->req->trace(x->req, MAIL_TRACE_OUT, s, len);
        s += k;
        n -= k;
    }
}

static void
trace_cmds(struct sconn *c, const char *s, size_t n)
{
    trace_lines(c->x, s, n);
}

/* ---- connection life ---- */

static void conn_free_when_closed(uv_handle_t *h);

/* The last handle is closed: free everything and tell the owner. */
static void
mailer_free(struct mailer *m)
{
    void (*cb)(void *) = m->close_cb;
    void *ud = m->close_ud;
    SSL_CTX_free(m->tls);
    while (m->pools) {
        struct pool *p = m->pools;
        m->pools = p->next;
        free(p->url);
        free(p->user);
        free(p->host);
        free(p->tag);
        free(p);
    }
    free(m->helo);
    free(m);
    if (cb)
        cb(ud);
}

static void
conn_detach(struct sconn *c)
{
    struct pool *p = c->pool;
    if (p == NULL)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    p->nconns--;
    c->pool = NULL;
}

static struct mailer *
the_mailer_of(struct sconn *c)
{
    return c->m;
}

static void
conn_close(struct sconn *c)
{
    if (c->st == C_CLOSING)
        return;
    struct mailer *m = c->m;
    struct pool *p = c->pool;
    c->st = C_CLOSING;
    conn_detach(c);
    uv_timer_stop(&c->timer);
    if (c->handles == 2) {
        uv_close((uv_handle_t *)&c->tcp, conn_free_when_closed);
        uv_close((uv_handle_t *)&c->timer, conn_free_when_closed);
    }
    if (p && m)
        pool_wake(m, p); /* a connection is free: start a waiting request */
}

static void
conn_free_when_closed(uv_handle_t *h)
{
    struct sconn *c = h->data;
    if (--c->handles > 0)
        return;
    struct mailer *m = c->m;
    if (c->ssl)
        SSL_free(c->ssl); /* frees both BIOs */
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
    if (m && --m->open_handles == 0 && m->closing)
        mailer_free(m);
}

/* Transport or protocol failure: the transaction (if any) gets a
 * temporary failure, the connection is dropped. */
static void
conn_fail(struct sconn *c, const char *why)
{
    if (c->st == C_CLOSING)
        return;
    struct xfer *x = c->x;
    c->x = NULL;
    c->sess.broken = 1;
    if (x) {
        char msg[MAILER_REPLY_MAX];
        const char *step = smtpsess_awaited(&c->sess);
        if (step == NULL)
            step = "connection";
        snprintf(msg, sizeof msg, "%s (during %s with %s:%d)", why, step,
                 x->pool->host, x->pool->port);
        smtpsess_txn_fail(&x->txn, MAIL_TEMP, 0, msg);
        x->c = NULL;
    }
    conn_close(c);
    if (x)
        xfer_done(x);
    chain_drop(c, why); /* the one chained after x's message, if any */
}

static void
arm_timer(struct sconn *c, long ms)
{
    uv_timer_start(&c->timer, on_timeout, (uint64_t)ms, 0);
}

/* Ends a session: an idle, sound one with QUIT (RFC 5321 §4.1.1.10),
 * closed on its reply or after QUIT_WAIT_MS; any other at once. */
static void
conn_quit(struct sconn *c)
{
    if (c->st != C_IDLE || c->sess.broken || smtpsess_awaited(&c->sess)) {
        conn_close(c);
        return;
    }
    c->st = C_QUIT;
    arm_timer(c, QUIT_WAIT_MS);
    struct buf *cmd = &c->out; /* reused: no allocation per reply */
    buf_reset(cmd);
    struct smtpsess_out o = {.cmd = cmd};
    smtpsess_quit(&c->sess, &o);
    trace_cmds(c, cmd->p, cmd->len);
    conn_send(c, cmd->p, cmd->len);
}

static void
on_timeout(uv_timer_t *t)
{
    struct sconn *c = t->data;
    if (c->st == C_IDLE) {
        conn_quit(c); /* idle too long: say goodbye */
        return;
    }
    if (c->st == C_QUIT) {
        conn_close(c); /* no answer to QUIT: closed all the same */
        return;
    }
    conn_fail(c, "timed out waiting for the server");
}

/* ---- transactions ---- */

/* The message, dot-stuffed, ending with CRLF "." CRLF: sized first, then
 * written once into the buffer that goes to the socket (a message of
 * megabytes is copied once, not grown by doubling and copied again). */
static void
send_body(struct sconn *c, const char *then, size_t thenlen)
{
    const struct mail_req *req = c->x->req;
    const char *p, *end = req->data + req->len;
    size_t dots = 0;
    /* line by line (memchr), a '.' that starts one is doubled */
    for (p = req->data; p < end;) {
        dots += *p == '.';
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
    }
    int crlf = req->len < 2 || memcmp(end - 2, "\r\n", 2) != 0;
    size_t len = req->len + dots + (crlf ? 2 : 0) + 3 + thenlen;
    struct wreq *r = wreq_new(len);
    char *o = r->data;
    for (p = req->data; p < end;) {
        if (*p == '.')
            *o++ = '.';
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *next = nl ? nl + 1 : end;
        memcpy(o, p, (size_t)(next - p));
        o += next - p;
        p = next;
    }
    if (crlf) {
        memcpy(o, "\r\n", 2);
        o += 2;
    }
    memcpy(o, ".\r\n", 3);
    if (thenlen) /* the chained transaction's commands, same write */
        memcpy(o + 3, then, thenlen);
    trace_cmds(c, ".", 1); /* the message's end; its lines are not traced */
    if (!c->tls) {
        raw_send_wreq(c, r, len);
        return;
    }
    conn_send(c, r->data, len);
    free(r);
}

static void
conn_idle(struct sconn *c)
{
    struct mailer *m = the_mailer_of(c);
    c->st = C_IDLE;
    arm_timer(c, IDLE_CLOSE_MS);
    if (m->closing)
        conn_quit(c);
    else
        pool_wake(m, c->pool);
}

/* ---- session set-up ---- */

/* The name for EHLO/HELO into out: the mailer's, or without one the
 * connection's own address as a literal (RFC 5321 §4.1.4). */
static void
helo_of(struct sconn *c, char *out, size_t n)
{
    struct mailer *m = the_mailer_of(c);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (m->helo)
        snprintf(out, n, "%s", m->helo);
    else if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) != 0 ||
             settings_addr_literal((struct sockaddr *)&ss, out, n) != 0)
        snprintf(out, n, "[127.0.0.1]"); /* a socket without a name */
}

static int
tls_begin(struct sconn *c)
{
    struct mailer *m = the_mailer_of(c);
    struct pool *p = c->pool;
    c->ssl = SSL_new(m->tls);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rbio || !c->wbio)
        return -1;
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    unsigned char tmp[16];
    if (inet_pton(AF_INET, p->host, tmp) == 1 ||
        inet_pton(AF_INET6, p->host, tmp) == 1) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
        if (X509_VERIFY_PARAM_set1_ip_asc(vp, p->host) != 1)
            return -1;
    } else {
        SSL_set_tlsext_host_name(c->ssl, p->host);
        if (SSL_set1_host(c->ssl, p->host) != 1)
            return -1;
    }
    c->st = C_HANDSHAKE;
    arm_timer(c, m->o.connect_timeout_s * 1000);
    int rc = SSL_do_handshake(c->ssl);
    (void)rc;
    tls_flush(c);
    return 0;
}

static void apply(struct sconn *c, struct buf *cmd, struct smtpsess_out *o);

/* Starts the connection's transaction (c->x). */
static void
start_transaction(struct sconn *c)
{
    struct buf *cmd = &c->out; /* reused: no allocation per reply */
    buf_reset(cmd);
    struct smtpsess_out o = {.cmd = cmd};
    c->st = C_BUSY;
    smtpsess_txn_start(&c->sess, &c->x->txn, &o);
    apply(c, cmd, &o);
}

/* The transaction has its result: handed back; the connection goes idle,
 * says RSET first, or is closed, as the session said. */
static void
finish_transaction(struct sconn *c, const struct smtpsess_out *o, int rset_sent)
{
    struct xfer *x = c->x;
    c->x = NULL;
    x->c = NULL;
    if (o->chained_on) {
        /* the chained one takes the connection and x's place */
        c->x = c->xnext;
        c->xnext = NULL;
        c->x->busy = 1;
        c->m->nbusy++;
    } else if (o->close) {
        conn_close(c);
    } else if (o->idle) {
        conn_idle(c);
    } else if (rset_sent) {
        c->st = C_RESET;
    }
    xfer_done(x);
    if (o->close)
        chain_drop(c, "the server closed the connection");
}

/* The chained transaction (if any) dies with its connection before it
 * began for the server: a temporary failure, retried like any. */
static void
chain_drop(struct sconn *c, const char *why)
{
    struct xfer *x = c->xnext;
    if (x == NULL)
        return;
    c->xnext = NULL;
    x->c = NULL;
    char msg[MAILER_REPLY_MAX];
    snprintf(msg, sizeof msg,
             "%s (before its transaction, chained after another, with "
             "%s:%d)",
             why, x->pool->host, x->pool->port);
    smtpsess_txn_fail(&x->txn, MAIL_TEMP, 0, msg);
    xfer_done(x);
}

/*
 * The next request waiting for this connection's server, chained after
 * the message about to be sent (smtpsess.h, "Chaining"): taken when the
 * session may chain and no other server waits for a place (the servers
 * take turns for places; a chained request takes this connection's when
 * the current transaction ends). NULL when none goes.
 */
static struct xfer *
chain_take(struct sconn *c)
{
    struct mailer *m = c->m;
    struct pool *p = c->pool;
    if (p == NULL || p->nwait == 0 || m->closing || m->aborting || c->xnext ||
        !smtpsess_can_chain(&c->sess))
        return NULL;
    if (m->ring_head && (m->ring_head != p || p->rnext))
        return NULL; /* another server's turn first */
    struct xfer *x = wait_pop(m, p);
    if (x->req->may_start && x->req->may_start(x->req) != 0) {
        x->wnext = m->withdrawn; /* done() from the loop, not from here */
        m->withdrawn = x;
        uv_timer_start(&m->t_withdrawn, on_withdrawn, 0, 0);
        return NULL;
    }
    c->xnext = x;
    x->c = c;
    return x;
}

/* The session is set up (and logged in, with a user): the transaction,
 * or for a login_only request its end (MAIL_OK; the connection goes
 * idle, and says QUIT when the mailer closes). */
static void
session_ready(struct sconn *c)
{
    struct xfer *x = c->x;
    if (x == NULL || !x->req->login_only) {
        start_transaction(c);
        return;
    }
    c->sess.used = 1;
    x->res.cls = MAIL_OK;
    x->txn.decided = 1;
    c->x = NULL;
    x->c = NULL;
    conn_idle(c);
    xfer_done(x);
}

static void
setup_fail(struct sconn *c, int code, const char *line, enum mail_class cls)
{
    struct xfer *x = c->x;
    c->x = NULL;
    if (x) {
        x->c = NULL;
        smtpsess_txn_fail(&x->txn, cls, code, line);
    }
    conn_close(c);
    if (x)
        xfer_done(x);
}

/* Does what the session says (common/smtpsess.h): send its commands,
 * start TLS, send the message, hand a result on, pool or close. */
static void
apply(struct sconn *c, struct buf *cmd, struct smtpsess_out *o)
{
    struct xfer *x = c->x;
    if (o->error) {
        conn_fail(c, o->error);
        return;
    }
    int sent = cmd->len > 0;
    if (sent) {
        if (!o->secret)
            trace_cmds(c, cmd->p, cmd->len);
        else if (o->trace[0])
            trace_cmds(c, o->trace, strlen(o->trace));
        conn_send(c, cmd->p, cmd->len);
        if (o->secret) /* AUTH: credentials */
            OPENSSL_cleanse(cmd->p, cmd->len);
        if (c->st == C_CLOSING)
            return;
    }
    if (x) {
        x->res.auth_ok |= o->auth_ok;
        x->res.auth_failed |= o->auth_failed;
        x->res.no_auth |= o->no_auth;
        x->res.no_tls |= o->no_tls;
    }
    if (o->failed) {
        setup_fail(c, o->code, o->why, o->permanent ? MAIL_PERM : MAIL_TEMP);
        return;
    }
    if (o->start_tls) {
        if (tls_begin(c) != 0)
            setup_fail(c, 0, "could not set up TLS", MAIL_TEMP);
        return;
    }
    if (o->send_body && x) {
        struct xfer *nx = chain_take(c);
        if (nx) { /* cmd was sent: reused for the chained commands */
            buf_reset(cmd);
            struct smtpsess_out co = {.cmd = cmd};
            smtpsess_txn_chain(&c->sess, &nx->txn, &co);
            trace_lines(nx, cmd->p, cmd->len);
        }
        send_body(c, nx ? cmd->p : NULL, nx ? cmd->len : 0);
        if (c->st == C_CLOSING)
            return;
    }
    if (o->done) {
        session_ready(c);
        return;
    }
    if (o->txn_done && x) {
        finish_transaction(c, o, sent);
        return;
    }
    if (o->close) {
        conn_close(c);
        return;
    }
    if (o->idle)
        conn_idle(c);
}

/* The set-up begins (`secure`: TLS is up already): the greeting is
 * awaited, with the credentials of the request that opened the
 * connection (a pool's connections share them). */
static void
setup_begin(struct sconn *c, int secure)
{
    struct pool *p = c->pool;
    const struct mail_req *req = c->x ? c->x->req : NULL;
    helo_of(c, c->helo, sizeof c->helo);
    c->sess.helo = c->helo;
    c->sess.starttls = p->tls != MAIL_TLS_NONE;
    c->sess.require_tls = p->tls == MAIL_TLS_REQUIRED;
    c->sess.plain_auth_ok = p->loopback;
    c->sess.user = req ? req->user : NULL;
    c->sess.password = req ? req->password : NULL;
    smtpsess_begin(&c->sess, secure);
    c->st = C_SETUP;
}

/* The TLS handshake after STARTTLS is done: EHLO again. */
static void
on_setup_tls(struct sconn *c)
{
    struct buf *cmd = &c->out; /* reused: no allocation per reply */
    buf_reset(cmd);
    struct smtpsess_out o = {.cmd = cmd};
    smtpsess_tls_up(&c->sess, &o);
    apply(c, cmd, &o);
}

/* One reply line (with CRLF stripped or not). */
static void
on_line(struct sconn *c, const char *line, size_t n)
{
    struct smtpreply_line rl;
    size_t tl = n;
    while (tl > 0 && (line[tl - 1] == '\n' || line[tl - 1] == '\r'))
        tl--;
    trace(c, MAIL_TRACE_IN, line, tl);
    if (smtpreply_parse(line, n, &rl) != 0) {
        conn_fail(c, "the server sent something that is not an SMTP reply");
        return;
    }
    if (smtpsess_awaited(&c->sess) == NULL && rl.code != 421) {
        conn_fail(c, "the server sent an unexpected reply");
        return;
    }
    smtpsess_line(&c->sess, &rl);
    if (rl.more)
        return;
    struct mailer *m = the_mailer_of(c);
    if (c->x) { /* borrowed from the request: refreshed each step */
        c->sess.user = c->x->req->user;
        c->sess.password = c->x->req->password;
    }
    struct buf *cmd = &c->out; /* reused: no allocation per reply */
    buf_reset(cmd);
    struct smtpsess_out o = {.cmd = cmd};
    smtpsess_reply(&c->sess, rl.code, line, &o);
    if (smtpsess_awaited(&c->sess) || c->st == C_BUSY || c->st == C_SETUP)
        arm_timer(c, m->o.step_timeout_s * 1000);
    apply(c, cmd, &o);
}

/* Plain bytes from the server: split into lines. */
static void
on_plain(struct sconn *c, const char *data, size_t len)
{
    while (len > 0 && c->st != C_CLOSING) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) + 1 : len;
        if (buf_append(&c->in, data, take) != 0) {
            conn_fail(c, "reply line too long");
            return;
        }
        data += take;
        len -= take;
        if (nl) {
            /* on_line may close c: copy the line out first */
            char line[LINE_MAX_BYTES + 1];
            size_t n = c->in.len;
            memcpy(line, c->in.p, n);
            line[n] = '\0';
            buf_reset(&c->in);
            on_line(c, line, n);
            if (c->st == C_HANDSHAKE) {
                /* The 220 to STARTTLS: whatever followed it in clear
                 * text is not the TLS session's; RFC 3207 §4.2 says to
                 * discard it (a man in the middle could inject replies). */
                buf_reset(&c->in);
                return;
            }
        }
    }
}

static void
tls_progress(struct sconn *c)
{
    if (c->st == C_HANDSHAKE) {
        int rc = SSL_do_handshake(c->ssl);
        tls_flush(c);
        if (rc == 1) {
            c->tls = 1;
            c->st = C_SETUP;
            char v[128];
            int vn = snprintf(v, sizeof v, "%s / %s", SSL_get_version(c->ssl),
                              SSL_get_cipher_name(c->ssl));
            trace(c, MAIL_TRACE_TLS, v,
                  vn > 0 && (size_t)vn < sizeof v ? (size_t)vn : strlen(v));
            struct mailer *m = the_mailer_of(c);
            arm_timer(c, m->o.step_timeout_s * 1000);
            if (c->pool->implicit_tls)
                setup_begin(c, 1);
            else
                on_setup_tls(c);
        } else {
            int err = SSL_get_error(c->ssl, rc);
            if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
                char why[MAILER_REPLY_MAX];
                long v = SSL_get_verify_result(c->ssl);
                if (v != X509_V_OK)
                    snprintf(why, sizeof why,
                             "TLS certificate verify failed: %s",
                             X509_verify_cert_error_string(v));
                else
                    snprintf(
                        why, sizeof why, "TLS handshake failed: %s",
                        ERR_reason_error_string(ERR_peek_last_error())
                            ? ERR_reason_error_string(ERR_peek_last_error())
                            : "unknown error");
                ERR_clear_error();
                conn_fail(c, why);
                return;
            }
            return;
        }
    }
    char tmp[16384];
    for (;;) {
        if (c->st == C_CLOSING)
            return;
        int n = SSL_read(c->ssl, tmp, sizeof tmp);
        if (n > 0) {
            on_plain(c, tmp, (size_t)n);
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ)
            break;
        if (err == SSL_ERROR_ZERO_RETURN) {
            conn_fail(c, "the server closed the TLS session");
            return;
        }
        ERR_clear_error();
        conn_fail(c, "TLS read failed");
        return;
    }
    tls_flush(c);
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    struct sconn *c = h->data;
    struct mailer *m = the_mailer_of(c);
    *b = uv_buf_init(m->rbuf, sizeof m->rbuf);
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct sconn *c = s->data;
    if (nread == 0 || c->st == C_CLOSING)
        return;
    if (nread < 0) {
        if (c->st == C_IDLE || c->st == C_QUIT)
            conn_close(c); /* the server closed an idle session */
        else
            conn_fail(c, nread == UV_EOF ? "the server closed the connection"
                                         : uv_strerror((int)nread));
        return;
    }
    if (c->ssl) {
        BIO_write(c->rbio, b->base, (int)nread);
        tls_progress(c);
    } else {
        on_plain(c, b->base, (size_t)nread);
    }
}

static void
on_connected(uv_connect_t *req, int status)
{
    struct sconn *c = req->data;
    if (c->st == C_CLOSING)
        return;
    if (status < 0) {
        conn_fail(c, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    trace(c, MAIL_TRACE_CONNECTED, c->pool->host, strlen(c->pool->host));
    if (c->pool->implicit_tls) {
        if (tls_begin(c) != 0)
            conn_fail(c, "could not set up TLS");
        return;
    }
    setup_begin(c, 0);
    arm_timer(c, the_mailer_of(c)->o.connect_timeout_s * 1000);
}

static void
on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *ai)
{
    struct sconn *c = g->data;
    if (c->st == C_CLOSING) {
        uv_freeaddrinfo(ai);
        return;
    }
    if (status < 0 || ai == NULL) {
        uv_freeaddrinfo(ai);
        conn_fail(c, status < 0 ? uv_strerror(status) : "no address");
        return;
    }
    c->st = C_CONNECTING;
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, ai->ai_addr, on_connected);
    uv_freeaddrinfo(ai);
    if (rc < 0)
        conn_fail(c, uv_strerror(rc));
}

/* ---- pools ---- */

static int
parse_url(const char *url, char **host, int *port, int *implicit_tls)
{
    const char *p;
    if (strncmp(url, "smtps://", 8) == 0) {
        p = url + 8;
        *implicit_tls = 1;
        *port = 465;
    } else if (strncmp(url, "smtp://", 7) == 0) {
        p = url + 7;
        *implicit_tls = 0;
        *port = 25;
    } else {
        return -1;
    }
    const char *end = p + strcspn(p, "/");
    const char *colon = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (rb == NULL)
            return -1;
        *host = xstrndup(p + 1, (size_t)(rb - p - 1));
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        *host = xstrndup(p, (size_t)((colon ? colon : end) - p));
    }
    if (colon) {
        long v = strtol(colon + 1, NULL, 10);
        if (v < 1 || v > 65535) {
            free(*host);
            return -1;
        }
        *port = (int)v;
    }
    if (**host == '\0') {
        free(*host);
        return -1;
    }
    return 0;
}

static struct pool *
pool_get(struct mailer *m, const char *url, const char *user, enum mail_tls tls,
         long max_conns, const char *tag)
{
    for (struct pool *p = m->pools; p; p = p->next)
        if (strcmp(p->url, url) == 0 && p->tls == tls &&
            ((p->tag == NULL && tag == NULL) ||
             (p->tag && tag && strcmp(p->tag, tag) == 0)) &&
            ((p->user == NULL && user == NULL) ||
             (p->user && user && strcmp(p->user, user) == 0)))
            return p;
    struct pool *p = xcalloc(1, sizeof *p);
    if (parse_url(url, &p->host, &p->port, &p->implicit_tls) != 0) {
        free(p);
        return NULL;
    }
    p->url = xstrdup(url);
    p->user = user ? xstrdup(user) : NULL;
    p->tls = tls;
    p->max_conns = max_conns > 0 ? max_conns : m->o.max_conns;
    p->narrow = m->o.max_busy > 0 && p->max_conns < m->o.max_busy;
    p->tag = tag ? xstrdup(tag) : NULL;
    /* the same rule as `scheme add --tls none`: one definition */
    p->loopback = scheme_host_is_loopback(p->host);
    p->next = m->pools;
    m->pools = p;
    return p;
}

static void
conn_open(struct mailer *m, struct pool *p, struct xfer *x)
{
    struct sconn *c = xcalloc(1, sizeof *c);
    c->m = m;
    c->pool = p;
    buf_init(&c->in, LINE_MAX_BYTES);
    buf_init(&c->out, 0);
    uv_tcp_init(m->loop, &c->tcp);
    uv_timer_init(m->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    m->open_handles++;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    p->nconns++;
    c->x = x;
    x->c = c;
    c->st = C_RESOLVING;
    c->gai.data = c;
    arm_timer(c, m->o.connect_timeout_s * 1000);
    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    int rc =
        uv_getaddrinfo(m->loop, &c->gai, on_resolved, p->host, port, &hints);
    if (rc < 0)
        conn_fail(c, uv_strerror(rc));
}

/* The requests may_start withdrew get their done(). */
static void
finish_withdrawn(struct mailer *m)
{
    while (m->withdrawn) {
        struct xfer *x = m->withdrawn;
        m->withdrawn = x->wnext;
        x->wnext = NULL;
        x->res.withdrawn = 1;
        smtpsess_txn_fail(&x->txn, MAIL_TEMP, 0,
                          "not started: withdrawn by its sender");
        xfer_done(x);
    }
}

static void
on_withdrawn(uv_timer_t *t)
{
    finish_withdrawn(t->data);
}

/* ---- a server's waiting requests, round-robin over flows ---- */

static struct flow **
flow_slot(struct pool *p, const char *name)
{
    struct flow **fp = &p->flows[util_hash(name) % FLOW_BUCKETS];
    while (*fp && strcmp((*fp)->name, name) != 0)
        fp = &(*fp)->hnext;
    return fp;
}

static void
wait_push(struct mailer *m, struct pool *p, struct xfer *x, const char *name)
{
    if (name == NULL)
        name = "";
    struct flow **fp = flow_slot(p, name), *f = *fp;
    if (f == NULL) {
        f = xcalloc(1, sizeof *f);
        f->name = xstrdup(name);
        *fp = f;
        if (p->fring_tail)
            p->fring_tail->rnext = f;
        else
            p->fring_head = f;
        p->fring_tail = f;
    }
    x->wnext = NULL;
    if (f->tail)
        f->tail->wnext = x;
    else
        f->head = x;
    f->tail = x;
    x->flow = f;
    p->nwait++;
    m->nnarrow += p->narrow;
}

/* Flow f (empty now) leaves p: out of its bucket and the ring. */
static void
flow_drop(struct pool *p, struct flow *f)
{
    struct flow **fp = flow_slot(p, f->name);
    *fp = f->hnext;
    struct flow *prev = NULL;
    for (struct flow *r = p->fring_head; r && r != f; r = r->rnext)
        prev = r;
    if (prev)
        prev->rnext = f->rnext;
    else
        p->fring_head = f->rnext;
    if (p->fring_tail == f)
        p->fring_tail = prev;
    free(f->name);
    free(f);
}

/* The next request: the first of the flow whose turn it is (that flow
 * goes to the back of the ring). p->nwait > 0. */
static struct xfer *
wait_pop(struct mailer *m, struct pool *p)
{
    struct flow *f = p->fring_head;
    struct xfer *x = f->head;
    f->head = x->wnext;
    x->wnext = NULL;
    x->flow = NULL;
    p->nwait--;
    m->nnarrow -= p->narrow;
    if (f->head == NULL) {
        f->tail = NULL;
        flow_drop(p, f); /* at the ring's head: no walk */
    } else if (f->rnext) {
        p->fring_head = f->rnext;
        f->rnext = NULL;
        p->fring_tail->rnext = f;
        p->fring_tail = f;
    }
    return x;
}

/* x leaves the queue it waits in (an abort). */
static void
wait_remove(struct mailer *m, struct pool *p, struct xfer *x)
{
    struct flow *f = x->flow;
    struct xfer *prev = NULL;
    for (struct xfer *w = f->head; w && w != x; w = w->wnext)
        prev = w;
    if (prev)
        prev->wnext = x->wnext;
    else
        f->head = x->wnext;
    if (f->tail == x)
        f->tail = prev;
    x->wnext = NULL;
    x->flow = NULL;
    p->nwait--;
    m->nnarrow -= p->narrow;
    if (f->head == NULL)
        flow_drop(p, f);
}

/*
 * Scheduling, as Postfix's qmgr does it: each server (pool) has its own
 * queue of waiting requests and its own connection limit; the mailer
 * serves the pools round-robin, one request each turn, while fewer than
 * o.max_busy transactions have a connection. A request holds one of those
 * places only from the moment it gets a connection: one slow server's
 * backlog waits in its own queue and delays nobody else's.
 */
static void
ring_add(struct mailer *m, struct pool *p)
{
    if (p->in_ring || p->nwait == 0)
        return;
    p->in_ring = 1;
    p->rnext = NULL;
    if (m->ring_tail)
        m->ring_tail->rnext = p;
    else
        m->ring_head = p;
    m->ring_tail = p;
}

static struct pool *
ring_pop(struct mailer *m)
{
    struct pool *p = m->ring_head;
    if (p == NULL)
        return NULL;
    m->ring_head = p->rnext;
    if (m->ring_head == NULL)
        m->ring_tail = NULL;
    p->rnext = NULL;
    p->in_ring = 0;
    return p;
}

/* Starts p's first waiting request on an idle connection, or a new one
 * within its limit; 0 when it is at its limit. */
static int
pool_start_one(struct mailer *m, struct pool *p)
{
    struct sconn *idle = NULL;
    for (struct sconn *c = p->conns; c; c = c->next)
        if (c->st == C_IDLE && c->x == NULL) {
            idle = c;
            break;
        }
    if (idle == NULL && p->nconns >= p->max_conns)
        return 0;
    struct xfer *x = wait_pop(m, p);
    if (x->req->may_start && x->req->may_start(x->req) != 0) {
        x->wnext = m->withdrawn; /* done() from the loop, not from here */
        m->withdrawn = x;
        uv_timer_start(&m->t_withdrawn, on_withdrawn, 0, 0);
        if (p->nwait)
            ring_add(m, p);
        return 1;
    }
    x->busy = 1;
    m->nbusy++;
    if (p->nwait)
        ring_add(m, p); /* back of the line: the next pool's turn first */
    if (idle) {
        idle->x = x;
        x->c = idle;
        start_transaction(idle);
    } else {
        conn_open(m, p, x);
    }
    return 1;
}

static void
mailer_dispatch(struct mailer *m)
{
    while (!m->closing && !m->aborting &&
           (m->o.max_busy <= 0 || m->nbusy < (size_t)m->o.max_busy)) {
        struct pool *p = ring_pop(m);
        if (p == NULL)
            return;
        if (p->nwait)                   /* (an abort may have emptied it) */
            (void)pool_start_one(m, p); /* at its limit: out of the ring */
    }
}

/* One of p's connections is free (idle or closed): p's waiters may go. */
static void
pool_wake(struct mailer *m, struct pool *p)
{
    ring_add(m, p);
    mailer_dispatch(m);
}

/* ---- public ---- */

int
mailer_new(uv_loop_t *loop, const struct mailer_opts *o, struct mailer **out)
{
    struct mailer *m = xcalloc(1, sizeof *m);
    m->loop = loop;
    m->o = *o;
    if (m->o.max_conns <= 0)
        m->o.max_conns = 32;
    m->helo = o->helo && *o->helo ? xstrdup(o->helo) : NULL;
    m->tls = SSL_CTX_new(TLS_client_method());
    if (m->tls == NULL)
        goto fail;
    SSL_CTX_set_min_proto_version(m->tls, TLS1_2_VERSION);
    SSL_CTX_set_verify(m->tls, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_default_verify_paths(m->tls) != 1)
        goto fail;
    if (o->ca_file &&
        SSL_CTX_load_verify_locations(m->tls, o->ca_file, NULL) != 1) {
        log_msg(LOG_ERROR, "cannot load HERALD_CA_FILE", "file", o->ca_file,
                NULL);
        goto fail;
    }
    uv_timer_init(loop, &m->t_withdrawn);
    m->t_withdrawn.data = m;
    *out = m;
    return 0;
fail:
    if (m->tls)
        SSL_CTX_free(m->tls);
    free(m->helo);
    free(m);
    return HERR_IO;
}

int
mailer_send(struct mailer *m, struct mail_req *req)
{
    if (m->closing)
        return HERR_IO;
    if ((req->nrcpt == 0 && !req->login_only) || req->nrcpt > MAILER_RCPT_MAX)
        return HERR_INVALID;
    struct pool *p =
        pool_get(m, req->url, req->user, req->tls, req->max_conns, req->tag);
    if (p == NULL)
        return HERR_INVALID;
    struct xfer *x = xcalloc(1, sizeof *x);
    x->m = m;
    x->req = req;
    x->pool = p;
    x->res.nrcpt = req->nrcpt;
    x->res.rcpt = xcalloc(req->nrcpt ? req->nrcpt : 1, sizeof *x->res.rcpt);
    x->txn.mail_from = req->mail_from;
    x->txn.rcpt = req->rcpt;
    x->txn.nrcpt = req->nrcpt;
    x->txn.size = req->len;
    x->txn.res = &x->res;
    smtpsess_txn_init(&x->txn);
    x->next = m->active;
    if (m->active)
        m->active->prev = x;
    m->active = x;
    m->nactive++;
    req->priv_ = x;
    wait_push(m, p, x, req->flow);
    pool_wake(m, p);
    return 0;
}

char *
mailer_scheme_url(const struct scheme *s, enum mail_tls *tls)
{
    int v6 = strchr(s->smtp_host, ':') != NULL;
    *tls = s->tls == SCHEME_TLS_NONE ? MAIL_TLS_NONE : MAIL_TLS_REQUIRED;
    return xasprintf("%s://%s%s%s:%d",
                     s->tls == SCHEME_TLS_SSL ? "smtps" : "smtp", v6 ? "[" : "",
                     s->smtp_host, v6 ? "]" : "", s->smtp_port);
}

size_t
mailer_active(const struct mailer *m)
{
    return m->nactive;
}

size_t
mailer_waiting(const struct mailer *m)
{
    return m->nnarrow;
}

void
mailer_abort_all(struct mailer *m)
{
    m->aborting = 1; /* nothing waiting starts while the rest is aborted */
    finish_withdrawn(m);
    while (m->active) {
        struct xfer *x = m->active;
        struct pool *p = x->pool;
        if (x->flow)
            wait_remove(m, p, x); /* out of the wait queue */
        if (x->c) {
            struct sconn *c = x->c;
            if (c->x == x)
                c->x = NULL;
            if (c->xnext == x)
                c->xnext = NULL;
            x->c = NULL;
            c->sess.broken = 1;
            conn_close(c);
        }
        x->txn.decided = 0;
        smtpsess_txn_fail(&x->txn, MAIL_TEMP, 0, "aborted at shutdown");
        xfer_done(x);
    }
    m->aborting = 0;
}

static void
on_timer_closed(uv_handle_t *h)
{
    struct mailer *m = h->data;
    if (--m->open_handles == 0 && m->closing)
        mailer_free(m);
}

void
mailer_close(struct mailer *m, void (*cb)(void *ud), void *ud)
{
    mailer_abort_all(m);
    m->closing = 1;
    m->close_cb = cb;
    m->close_ud = ud;
    m->open_handles++; /* held until the pools are walked */
    m->open_handles++; /* the withdrawal timer */
    uv_close((uv_handle_t *)&m->t_withdrawn, on_timer_closed);
    for (struct pool *p = m->pools; p; p = p->next)
        for (struct sconn *c = p->conns, *next; c; c = next) {
            next = c->next;
            conn_quit(c); /* idle ones say QUIT; the rest close */
        }
    /* release our own hold: frees now if nothing else is open */
    if (--m->open_handles == 0)
        mailer_free(m);
}
