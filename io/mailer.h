/*
 * mailer — SMTP client transactions on the libuv loop, never blocking it.
 *
 * One mailer per worker. mailer_send() starts one transaction (envelope +
 * message bytes) and calls req->done exactly once, from the loop, when it
 * has an outcome; mailer_send never calls it synchronously.
 *
 * Connections are pooled per server (URL + user) — at most
 * `max_conns` each — and reused across transactions. Requests wait in
 * their server's own queue; the servers are served round-robin, one
 * request a turn, while fewer than `max_busy` transactions have a
 * connection (Postfix's qmgr: one slow server's backlog delays nobody
 * else's, and a waiting request holds no place). Within a server's queue
 * the flows (mail_req.flow: the organisation) take turns too, so one
 * organisation's burst to the relay does not hold up another's receipt. A
 * transaction that failed part-way is closed with RSET before reuse, or the
 * connection is dropped. STARTTLS is used whenever the server offers it
 * (smtp://), implicit TLS for smtps://; certificates are always verified
 * (system bundle plus `ca_file`), host names checked. PIPELINING (RFC 2920) is
 * used when offered: MAIL, RCPT and DATA go in one write, the dot-stuffed
 * body and its end in another. AUTH PLAIN or LOGIN when a user is given,
 * never over an unencrypted connection to a non-loopback host. Every wait
 * for the server is bounded: `connect_timeout_s` for connecting, the TLS
 * handshake and the greeting, `step_timeout_s` for each reply.
 *
 * A server that takes only so many recipients per message (452 4.5.3 at
 * RCPT, RFC 5321 §4.5.3.1.10) gets the rest in further transactions of
 * the same session at once, as long as each takes some; the request still
 * has one result and one done(). Once a transaction was accepted, a later
 * one that fails does not fail the request (that would send the message
 * again to those who have it): the result is MAIL_OK, and each recipient
 * not accepted carries the refusal or failure that stopped it.
 *
 * What to say and what each reply means -- the set-up (greeting, EHLO or
 * HELO, STARTTLS, AUTH) and the transactions (MAIL, RCPT, DATA, the 452
 * rounds, RSET, QUIT) -- is decided by the pure common/smtpsess.c; this
 * module is its transport: sockets, TLS, timers, pools, queues.
 *
 * (libcurl was the first implementation. Its SMTP "done" phase waits for
 * the reply to the end of the message in a blocking poll — one stalled
 * server froze the whole worker, and every message cost the loop a round
 * trip — so this module speaks SMTP itself.)
 */
#ifndef HERALD_MAILER_H
#define HERALD_MAILER_H

#include "smtpclass.h"
#include "smtpsess.h"

#include <stddef.h>
#include <uv.h>

/* TLS for smtp:// URLs (smtps:// is always TLS from the first byte). */
enum mail_tls {
    MAIL_TLS_OPPORTUNISTIC = 0, /* STARTTLS when offered (the relay) */
    MAIL_TLS_REQUIRED,          /* STARTTLS or the transaction fails */
    MAIL_TLS_NONE,              /* never (loopback servers only) */
};

struct mail_req;
typedef void mail_done_fn(struct mail_req *req, const struct mail_result *r);

/* What a request's trace (mail_req.trace) is told, as the session goes. */
enum mail_trace {
    MAIL_TRACE_CONNECTED, /* the TCP connection is up (text: the host) */
    MAIL_TRACE_TLS,       /* the TLS handshake is done and the certificate
                             verified (text: "TLSv1.3 / <cipher>") */
    MAIL_TRACE_OUT,       /* a command line sent, without CR LF: "EHLO x",
                             "STARTTLS", "AUTH PLAIN" (never what carries
                             credentials), "MAIL FROM:<a>", "RCPT TO:<b>",
                             "DATA", "." (the message's end; its lines are
                             not traced), "RSET", "QUIT" */
    MAIL_TRACE_IN,        /* a line from the server, without CR LF */
};

struct mail_req {
    /* set by the caller; borrowed until done() */
    const char *url;      /* smtp://host:port or smtps://host:port */
    enum mail_tls tls;    /* for smtp:// */
    long max_conns;       /* connections to this server; 0: the default */
    const char *tag;      /* connections are shared only between equal tags
                             (NULL: none); e.g. a credentials fingerprint */
    const char *flow;     /* fairness key: a server's waiting requests are
                             served round-robin by flow (the organisation);
                             NULL: "" */
    const char *user;     /* NULL: no AUTH */
    const char *password; /* never logged */
    const char *mail_from;
    const char *const *rcpt; /* addresses, without angle brackets */
    size_t nrcpt;
    const char *data; /* the message, CRLF lines */
    size_t len;
    mail_done_fn *done;
    void *ud;
    /* Optional: asked just before the request gets a connection (it may
     * have waited for one a long time). Nonzero: it does not start; it
     * leaves the mailer, and done() runs later, from the loop, with
     * MAIL_TEMP and `withdrawn` set. */
    int (*may_start)(struct mail_req *req);
    /* Optional: the session as it goes, for a caller that shows it
     * (heraldctl scheme test); called from the loop, never with
     * credentials. */
    void (*trace)(struct mail_req *req, enum mail_trace kind, const char *text,
                  size_t len);
    /* No transaction (nrcpt 0, no data): done with MAIL_OK once the
     * session is set up -- TLS as `tls` says, logged in when `user` is
     * given -- exactly as a delivery's would be. */
    int login_only;
    /* private to the mailer */
    void *priv_;
};

struct mailer_opts {
    long connect_timeout_s;
    long step_timeout_s; /* any SMTP reply slower than this fails */
    const char *ca_file; /* extra CA bundle, or NULL */
    const char *helo;    /* name for EHLO */
    long max_conns;      /* per host */
    long max_busy;       /* transactions with a connection at once, across
                            all servers (0: no limit) */
};

struct mailer;

/* Creates a mailer on `loop`. Returns 0 or HERR_IO. */
int mailer_new(uv_loop_t *loop, const struct mailer_opts *o,
               struct mailer **out);

/* Starts a transaction. Returns 0 (done() will run later) or a negative
 * code (done() will not run). */
int mailer_send(struct mailer *m, struct mail_req *req);

/* The URL and TLS mode of an Email Sending Scheme's SMTP server, as every
 * transaction to it (and heraldctl scheme test) uses them: smtps:// for
 * tls "ssl", else smtp:// with STARTTLS required unless tls is "none".
 * A new string. */
struct scheme;
char *mailer_scheme_url(const struct scheme *s, enum mail_tls *tls);

/* Transactions in flight. */
size_t mailer_active(const struct mailer *m);

/* Of those, the ones waiting in the queue of a server whose connection
 * limit is below max_busy (an organisation's own server): they may wait
 * there long while other servers could use the slots. (A request that
 * waits for the relay, whose limit is the slots, waits for a slot.) */
size_t mailer_waiting(const struct mailer *m);

/* Aborts every transaction in flight: each done() runs with MAIL_TEMP and
 * "aborted at shutdown". */
void mailer_abort_all(struct mailer *m);

/* Closes the mailer's handles; `cb` runs once every handle is closed and
 * the mailer is freed. No transaction may be in flight. */
void mailer_close(struct mailer *m, void (*cb)(void *ud), void *ud);

#endif
