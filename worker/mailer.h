/*
 * mailer — SMTP transactions through libcurl's multi interface, driven by
 * the libuv loop (socket and timer callbacks, as in curl's multi-uv.c).
 *
 * One mailer per worker. mailer_send() starts one transaction (envelope +
 * message bytes) and calls req->done exactly once, from the loop, when it
 * has an outcome; mailer_send never calls it synchronously. Connections
 * are kept in libcurl's cache and reused across transactions to the same
 * server; STARTTLS is used when the server offers it (smtp://), implicit
 * TLS for smtps://; certificates are always verified.
 */
#ifndef HERALD_MAILER_H
#define HERALD_MAILER_H

#include <stddef.h>
#include <uv.h>

#define MAILER_REPLY_MAX 512
#define MAILER_RCPT_MAX 100

enum mail_class {
    MAIL_OK = 0,   /* accepted (possibly not by every recipient) */
    MAIL_TEMP,     /* transient: retry later */
    MAIL_PERM,     /* permanent: the message is refused */
};

struct mail_rcpt_result {
    int code;                     /* SMTP code of the RCPT reply, 0 if none */
    char reply[MAILER_REPLY_MAX]; /* that reply line */
};

struct mail_result {
    enum mail_class cls;
    int code;                     /* last SMTP code seen (0: none) */
    char reply[MAILER_REPLY_MAX]; /* final server reply, or curl's error */
    int curl_code;
    struct mail_rcpt_result rcpt[MAILER_RCPT_MAX]; /* in envelope order */
    size_t nrcpt;
    int reused; /* 1 when an existing connection carried it */
};

struct mail_req;
typedef void mail_done_fn(struct mail_req *req, const struct mail_result *r);

struct mail_req {
    /* set by the caller; borrowed until done() */
    const char *url;      /* smtp://host:port or smtps://host:port */
    const char *user;     /* NULL: no AUTH */
    const char *password; /* never logged */
    const char *mail_from;
    const char *const *rcpt; /* addresses, without angle brackets */
    size_t nrcpt;
    const char *data; /* the message, CRLF lines */
    size_t len;
    mail_done_fn *done;
    void *ud;
    /* private to the mailer */
    void *priv_;
};

struct mailer_opts {
    long connect_timeout_s;
    long step_timeout_s; /* any SMTP reply slower than this fails */
    const char *ca_file; /* extra CA bundle, or NULL */
    const char *helo;    /* name for EHLO */
    long max_conns;      /* per host */
};

struct mailer;

/* Creates a mailer on `loop`. Returns 0 or HERR_IO. */
int mailer_new(uv_loop_t *loop, const struct mailer_opts *o,
               struct mailer **out);

/* Starts a transaction. Returns 0 (done() will run later) or a negative
 * code (done() will not run). */
int mailer_send(struct mailer *m, struct mail_req *req);

/* Transactions in flight. */
size_t mailer_active(const struct mailer *m);

/* Aborts every transaction in flight: each done() runs with MAIL_TEMP and
 * "aborted at shutdown". */
void mailer_abort_all(struct mailer *m);

/* Closes the mailer's handles; `cb` runs once every handle is closed and
 * the mailer is freed. No transaction may be in flight. */
void mailer_close(struct mailer *m, void (*cb)(void *ud), void *ud);

#endif
