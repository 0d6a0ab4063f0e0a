/*
 * smtpsess — an SMTP client session as a pure machine: the server's
 * replies in, the commands to send and what the transport must do out.
 * No socket, no TLS engine, no timer: io/mailer.c is its transport on
 * libuv, for the worker and for `heraldctl scheme test` alike, so both
 * make the same decisions.
 *
 *   set-up        greeting; EHLO, falling back to HELO; STARTTLS when
 *                 offered or required (RFC 3207); AUTH PLAIN or LOGIN
 *                 (RFC 4954), never in clear text to a server not on
 *                 loopback
 *   transactions  MAIL, RCPT, DATA (in one write with PIPELINING, RFC
 *                 2920), the message, its outcome per recipient; the
 *                 recipients a server refuses as too many for one message
 *                 (452 4.5.3) go at once in the next transaction of the
 *                 session (RFC 5321 §4.5.3.1.10); RSET after a failed one;
 *                 the next transaction chained after a message (below);
 *                 QUIT to end (RFC 5321 §4.1.1.10)
 *
 * Use: fill the configuration, smtpsess_begin(); feed every line of every
 * reply to smtpsess_line() and each complete reply to smtpsess_reply(),
 * then do what the smtpsess_out says: send out.cmd, start TLS (then
 * smtpsess_tls_up()), send the message, hand a transaction's result on,
 * pool or close the connection. Tested in tests/unit/test_smtpsess.c;
 * fuzzed with the reply parser (tests/fuzz/fuzz_smtpreply.c).
 */
#ifndef HERALD_SMTPSESS_H
#define HERALD_SMTPSESS_H

#include "smtpreply.h"
#include "util.h"

#include <stddef.h>

/* A transaction's result (io/mailer.h hands it to done()). */
#define MAILER_REPLY_MAX 512
#define MAILER_RCPT_MAX 100

enum mail_class {
    MAIL_OK = 0, /* accepted (possibly not by every recipient) */
    MAIL_TEMP,   /* transient: retry later */
    MAIL_PERM,   /* permanent: the message is refused */
};

struct mail_rcpt_result {
    int code;                     /* SMTP code of the RCPT reply, 0 if none */
    char reply[MAILER_REPLY_MAX]; /* that reply line */
};

struct mail_result {
    enum mail_class cls;
    int code;  /* last SMTP code seen (0: none) */
    int stage; /* enum smtpc_stage: the command `reply` answers
                  (SMTPC_CONNECT for the session set-up and transport) */
    char reply[MAILER_REPLY_MAX];  /* final server reply, or what failed */
    struct mail_rcpt_result *rcpt; /* nrcpt results, in envelope order */
    size_t nrcpt;
    int reused;       /* 1 when an existing connection carried it */
    int chained;      /* its commands followed another's message */
    int transactions; /* MAIL commands it took: more than one when the
                         server took only so many recipients per message */
    int auth_failed;  /* the server refused the credentials (cls TEMP) */
    int auth_ok;      /* this transaction logged in (235) */
    int no_auth;      /* a user was given and the session offered no way to
                         log in (no AUTH, no mechanism Herald speaks, or
                         plain text to a host not on loopback) */
    int no_tls;       /* TLS was required and the server offers no
                         STARTTLS */
    int withdrawn;    /* req->may_start said no: nothing was sent */
};

/* What a reply answers: the session's queue of commands said. */
enum smtpsess_cmd {
    SMTPSESS_C_SETUP, /* a set-up step: `wait` says which */
    SMTPSESS_C_MAIL,
    SMTPSESS_C_RCPT,
    SMTPSESS_C_DATA,
    SMTPSESS_C_BODY, /* the message's final "." */
    SMTPSESS_C_RSET,
    SMTPSESS_C_QUIT,
};

/* One transaction. The caller fills the input and `res` (res->rcpt with
 * nrcpt zeroed entries), calls smtpsess_txn_init(), and gives it to
 * smtpsess_txn_start(); it is the session's until out.txn_done. */
struct smtpsess_txn {
    const char *mail_from; /* borrowed */
    const char *const *rcpt;
    size_t nrcpt; /* 1..MAILER_RCPT_MAX */
    size_t size;  /* the message's bytes, for SIZE= */
    struct mail_result *res;
    /* state */
    size_t round[MAILER_RCPT_MAX]; /* this transaction's recipients
                                      (indexes): all of them, then those
                                      refused as too many */
    size_t nround;
    int decided;   /* the result is final */
    int delivered; /* an earlier transaction of it was accepted */
    int last_ok;   /* the last transaction ended accepted: no RSET */
    int stage;     /* enum smtpc_stage of the reply being handled */
};

/* The reply the set-up waits for (or where it ended). */
enum smtpsess_wait {
    SMTPSESS_GREETING,
    SMTPSESS_EHLO,
    SMTPSESS_HELO,
    SMTPSESS_STARTTLS,
    SMTPSESS_TLS, /* the transport's handshake, after STARTTLS's 220 */
    SMTPSESS_AUTH_PLAIN,
    SMTPSESS_AUTH_LOGIN,
    SMTPSESS_AUTH_USER,
    SMTPSESS_AUTH_PASS,
    SMTPSESS_DONE,   /* set up: logged in when a user was given */
    SMTPSESS_FAILED, /* set-up failed: the connection is to be closed */
};

struct smtpsess {
    /* configuration, set before smtpsess_begin; strings borrowed */
    const char *helo;  /* the EHLO/HELO name */
    int starttls;      /* say STARTTLS when the server offers it */
    int require_tls;   /* fail when TLS is not up before AUTH and MAIL */
    int plain_auth_ok; /* credentials may go unencrypted (a loopback
                          server) */
    const char *user;  /* NULL: no AUTH */
    const char *password;
    /* state, read-only */
    enum smtpsess_wait wait;
    int secure;                                 /* TLS is up */
    struct smtpreply_caps caps;                 /* from the last EHLO reply */
    enum smtpsess_cmd exp[MAILER_RCPT_MAX + 8]; /* replies awaited, FIFO */
    size_t exp_head, exp_n;
    struct smtpsess_txn *txn;  /* the transaction in progress, or NULL */
    struct smtpsess_txn *next; /* chained after txn's message, or NULL */
    size_t rcpt_seen, rcpt_ok; /* its RCPT replies, and the accepted */
    int mail_failed;           /* its MAIL was refused */
    int used;                  /* carried a transaction before */
    int broken; /* the server said 421 or broke the protocol: no reuse */
};

/* What one step says. smtpsess zeroes it but for `cmd`. */
struct smtpsess_out {
    struct buf *cmd;   /* set by the caller: commands to send are appended,
                          CR LF ended (they may carry credentials: cleanse
                          the bytes once sent) */
    int secret;        /* cmd carries credentials: trace `trace` instead */
    char trace[320];   /* a set-up command as a trace may show it, without
                          CR LF ("EHLO name", "STARTTLS", "AUTH PLAIN"); ""
                          for what carries credentials but its name */
    const char *error; /* the server broke the protocol: fail the
                          transaction (if any) with this, close */
    int start_tls;     /* STARTTLS accepted: hand the connection to TLS,
                          then smtpsess_tls_up() */
    int done;          /* set up: a transaction may start */
    int failed;        /* set-up failed: close the connection */
    int code;          /* the reply that failed it (0: Herald's own words) */
    int permanent;     /* the failure is permanent (a 5xx greeting) */
    const char *why;   /* the failing reply line (the caller's, valid as
                          long as it is) or Herald's words */
    int auth_ok;       /* logged in (235) */
    int auth_failed;   /* the server refused the credentials (530, 534, 535) */
    int no_auth;       /* a user was given and there is no way to log in
                          here: no AUTH, no mechanism Herald speaks, or clear
                          text to a server that is not on loopback */
    int no_tls;        /* TLS was required and the server offers no
                          STARTTLS */
    int send_body;     /* after cmd: the message, dot-stuffed, ending with
                          CR LF "." CR LF */
    int txn_done;      /* the transaction has its result (s->txn is NULL
                          again, or the chained one; it was the one in
                          `txn`) */
    struct smtpsess_txn *txn;
    int chained_on; /* with txn_done: the chained transaction is now
                       the one in progress (s->txn) */
    int idle;       /* no transaction: the connection may be pooled */
    int close;      /* close the connection (once cmd is sent) */
};

/* Starts a session: the greeting is awaited. `secure`: TLS is up already
 * (implicit TLS, smtps://). */
void smtpsess_begin(struct smtpsess *s, int secure);

/* Each line of a reply, in order, the last one too: an EHLO reply's lines
 * name the server's extensions. */
void smtpsess_line(struct smtpsess *s, const struct smtpreply_line *rl);

/* A complete reply: its code and its last line (as received, for
 * out->why). Called while neither done nor failed. */
void smtpsess_reply(struct smtpsess *s, int code, const char *line,
                    struct smtpsess_out *out);

/* The TLS handshake after STARTTLS is done: EHLO again, what was said in
 * clear text forgotten (RFC 3207 §4.2). */
void smtpsess_tls_up(struct smtpsess *s, struct smtpsess_out *out);

/* The step awaited, as a log names it: "greeting", "EHLO", "STARTTLS",
 * "AUTH", ... */
const char *smtpsess_wait_name(enum smtpsess_wait w);

/* What the session waits for, as a log names it ("EHLO", "RCPT", "end of
 * data", ...), or NULL when it waits for nothing. */
const char *smtpsess_awaited(const struct smtpsess *s);

/* Readies a transaction: every recipient in its first round. */
void smtpsess_txn_init(struct smtpsess_txn *t);

/* Starts transaction t on a set-up, idle session: MAIL FROM (with SIZE=
 * when offered), and with PIPELINING the RCPTs and DATA in the same
 * write. */
void smtpsess_txn_start(struct smtpsess *s, struct smtpsess_txn *t,
                        struct smtpsess_out *out);

/*
 * Chaining (RFC 2920 §3.1: a message may begin a group of pipelined
 * commands): once the transaction in progress has sent its message, the
 * next one's MAIL, RCPT and DATA may follow in the same write, so a
 * connection that carries message after message waits one round trip a
 * message instead of two. smtpsess_can_chain says whether it may now:
 * PIPELINING offered, only the message's end awaited, nothing chained
 * yet, and the transaction will be over at that reply (no recipients
 * refused as too many, which would go in a next round of their own).
 * smtpsess_txn_chain appends t's commands to out->cmd (nothing else of
 * out is touched). The current transaction's end then comes with
 * out.chained_on, and t is in progress; when the session breaks first
 * (421, out.close) t is dropped from it, without a result: the caller
 * gives it one.
 */
int smtpsess_can_chain(const struct smtpsess *s);
void smtpsess_txn_chain(struct smtpsess *s, struct smtpsess_txn *t,
                        struct smtpsess_out *out);

/* The transaction failed (cls, code, why: a transport failure has code
 * 0). Once an earlier transaction of it was accepted the result stays
 * MAIL_OK -- failing it would send the message again to those who have
 * it -- and each recipient of this round without a refusal of its own
 * gets this failure (code 0 counted as 451). Nothing when already
 * decided. */
void smtpsess_txn_fail(struct smtpsess_txn *t, enum mail_class cls, int code,
                       const char *why);

/* Ends an idle session: QUIT (its reply closes it). */
void smtpsess_quit(struct smtpsess *s, struct smtpsess_out *out);

#endif
