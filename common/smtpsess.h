/*
 * smtpsess — the set-up of an SMTP client session as a pure machine: the
 * server's replies in, the commands to send and what the transport must
 * do out (RFC 5321 greeting and EHLO, falling back to HELO; RFC 3207
 * STARTTLS; RFC 4954 AUTH PLAIN and LOGIN). No socket, no TLS engine, no
 * timer: io/mailer.c is its transport on libuv, for the worker and for
 * `heraldctl scheme test` alike, so both make the same decisions — which
 * AUTH mechanisms, when TLS is required, when credentials may not go.
 * The transactions that follow (MAIL, RCPT, DATA) are io/mailer.c's.
 *
 * Use: fill the configuration, smtpsess_begin(); feed every line of every
 * reply to smtpsess_line() and each complete reply to smtpsess_reply(),
 * then do what the smtpsess_out says: send out.cmd, start TLS and call
 * smtpsess_tls_up() once it is up, or stop (done / failed). Tested in
 * tests/unit/test_smtpsess.c; fuzzed with the reply parser
 * (tests/fuzz/fuzz_smtpreply.c).
 */
#ifndef HERALD_SMTPSESS_H
#define HERALD_SMTPSESS_H

#include "smtpreply.h"
#include "util.h"

#include <stddef.h>

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
    int secure;                 /* TLS is up */
    struct smtpreply_caps caps; /* from the last EHLO reply */
};

/* What one step says. smtpsess zeroes it but for `cmd`. */
struct smtpsess_out {
    struct buf *cmd; /* set by the caller: commands to send are appended,
                        CR LF ended (they may carry credentials: cleanse
                        the bytes once sent) */
    char trace[320]; /* the command as a trace may show it, without CR LF
                        ("EHLO name", "STARTTLS", "AUTH PLAIN"); "" when
                        none, and always "" for what carries credentials */
    int start_tls;   /* STARTTLS accepted: hand the connection to TLS,
                        then smtpsess_tls_up() */
    int done;        /* set up: a transaction may start */
    int failed;      /* set-up failed: close the connection */
    int code;        /* the reply that failed it (0: Herald's own words) */
    int permanent;   /* the failure is permanent (a 5xx greeting) */
    const char *why; /* the failing reply line (the caller's, valid as
                        long as it is) or Herald's words */
    int auth_ok;     /* logged in (235) */
    int auth_failed; /* the server refused the credentials (530, 534, 535) */
    int no_auth;     /* a user was given and there is no way to log in
                        here: no AUTH, no mechanism Herald speaks, or clear
                        text to a server that is not on loopback */
    int no_tls;      /* TLS was required and the server offers no
                        STARTTLS */
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

#endif
