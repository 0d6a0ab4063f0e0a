/* common/smtpsess.c: an SMTP session's set-up, replies in and commands
 * out, as the worker and `heraldctl scheme test` both run it: EHLO and
 * HELO, STARTTLS when offered or required, AUTH PLAIN and LOGIN, and the
 * cases where credentials must not go. */
#include "../../common/smtpsess.h"
#include "t.h"

#include <openssl/evp.h>
#include <string.h>

struct run {
    struct smtpsess s;
    struct buf cmd;
    struct smtpsess_out o;
};

static void
start(struct run *r, int secure)
{
    memset(r, 0, sizeof *r);
    buf_init(&r->cmd, 0);
    r->o.cmd = &r->cmd;
    r->s.helo = "mx.herald.test";
    r->s.starttls = 1;
    smtpsess_begin(&r->s, secure);
}

/* One reply of one or more lines ("250-A\n250 B"): every line to
 * smtpsess_line, then the reply; the commands it said, in r->cmd (reset
 * first). */
static void
reply(struct run *r, const char *text)
{
    buf_reset(&r->cmd);
    char line[512];
    const char *p = text;
    int code = 0;
    for (;;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        snprintf(line, sizeof line, "%.*s", (int)n, p);
        struct smtpreply_line rl;
        CHECK_MSG(smtpreply_parse(line, n, &rl) == 0, "%s", line);
        code = rl.code;
        smtpsess_line(&r->s, &rl);
        if (!nl)
            break;
        p = nl + 1;
    }
    smtpsess_reply(&r->s, code, line, &r->o);
}

/* What was said, as a string. */
static const char *
said(struct run *r)
{
    buf_append(&r->cmd, "", 1);
    r->cmd.len--;
    return r->cmd.p ? r->cmd.p : "";
}

static void
test_plain_session(void)
{
    struct run r;
    start(&r, 0);
    CHECK(r.s.wait == SMTPSESS_GREETING);
    reply(&r, "220 mx.example.test ESMTP");
    CHECK_STR(said(&r), "EHLO mx.herald.test\r\n");
    CHECK_STR(r.o.trace, "EHLO mx.herald.test");
    reply(&r, "250-mx.example.test\n250-PIPELINING\n250 SIZE 10240000");
    /* no STARTTLS offered, none required, no user: set up */
    CHECK(r.o.done && !r.o.failed && r.cmd.len == 0);
    CHECK(r.s.caps.pipelining && r.s.caps.size && !r.s.caps.starttls);
    CHECK(r.s.wait == SMTPSESS_DONE);
    buf_free(&r.cmd);

    /* an old server: EHLO refused, HELO, no extensions */
    start(&r, 0);
    reply(&r, "220 old");
    reply(&r, "502 5.5.2 what?");
    CHECK_STR(said(&r), "HELO mx.herald.test\r\n");
    reply(&r, "250 old");
    CHECK(r.o.done && !r.s.caps.pipelining);
    buf_free(&r.cmd);

    /* a greeting that refuses: permanent for 5xx, temporary for 4xx */
    start(&r, 0);
    reply(&r, "554 5.7.1 go away");
    CHECK(r.o.failed && r.o.permanent && r.o.code == 554);
    CHECK_STR(r.o.why, "554 5.7.1 go away");
    buf_free(&r.cmd);
    start(&r, 0);
    reply(&r, "421 4.3.2 busy");
    CHECK(r.o.failed && !r.o.permanent && r.o.code == 421);
    buf_free(&r.cmd);
}

static void
test_starttls(void)
{
    struct run r;
    start(&r, 0);
    r.s.user = "ann";
    r.s.password = "s3cret";
    reply(&r, "220 mx");
    reply(&r, "250-mx\n250-STARTTLS\n250 AUTH LOGIN");
    CHECK_STR(said(&r), "STARTTLS\r\n");
    reply(&r, "220 2.0.0 go ahead");
    CHECK(r.o.start_tls && r.cmd.len == 0 && r.s.wait == SMTPSESS_TLS);
    /* what was offered in clear text is forgotten: EHLO again */
    smtpsess_tls_up(&r.s, &r.o);
    CHECK(r.s.secure && !r.s.caps.auth_login && !r.s.caps.starttls);
    CHECK_STR(said(&r), "EHLO mx.herald.test\r\n");
    reply(&r, "250-mx\n250 AUTH PLAIN LOGIN");
    /* PLAIN first: "\0ann\0s3cret" in base64, never in the trace */
    CHECK_STR(said(&r), "AUTH PLAIN AGFubgBzM2NyZXQ=\r\n");
    CHECK_STR(r.o.trace, "AUTH PLAIN");
    reply(&r, "235 2.7.0 ok");
    CHECK(r.o.done && r.o.auth_ok);
    buf_free(&r.cmd);

    /* STARTTLS offered but refused: no fall back to clear text */
    start(&r, 0);
    reply(&r, "220 mx");
    reply(&r, "250-mx\n250 STARTTLS");
    reply(&r, "454 4.7.0 TLS not available");
    CHECK(r.o.failed && !r.o.start_tls && r.o.code == 454);
    buf_free(&r.cmd);

    /* required and not offered */
    start(&r, 0);
    r.s.require_tls = 1;
    reply(&r, "220 mx");
    reply(&r, "250-mx\n250 AUTH PLAIN");
    CHECK(r.o.failed && r.o.no_tls && r.o.code == 0 && r.cmd.len == 0);
    buf_free(&r.cmd);

    /* offered, but this sender says never (loopback): not said */
    start(&r, 0);
    r.s.starttls = 0;
    reply(&r, "220 mx");
    reply(&r, "250-mx\n250 STARTTLS");
    CHECK(r.o.done && r.cmd.len == 0);
    buf_free(&r.cmd);

    /* implicit TLS: secure from the start, no STARTTLS */
    start(&r, 1);
    r.s.user = "ann";
    r.s.password = "pw";
    reply(&r, "220 mx");
    reply(&r, "250-mx\n250-STARTTLS\n250 AUTH=LOGIN");
    CHECK_STR(said(&r), "AUTH LOGIN\r\n");
    buf_free(&r.cmd);
}

static void
test_auth(void)
{
    struct run r;
    /* LOGIN: user, then password, each in base64 */
    start(&r, 1);
    r.s.user = "ann@acme.test";
    r.s.password = "pw";
    reply(&r, "220 mx");
    reply(&r, "250-mx\n250 AUTH LOGIN");
    CHECK_STR(said(&r), "AUTH LOGIN\r\n");
    reply(&r, "334 VXNlcm5hbWU6");
    CHECK_STR(said(&r), "YW5uQGFjbWUudGVzdA==\r\n");
    CHECK_STR(r.o.trace, "");
    reply(&r, "334 UGFzc3dvcmQ6");
    CHECK_STR(said(&r), "cHc=\r\n");
    CHECK_STR(r.o.trace, "");
    reply(&r, "535 5.7.8 bad credentials");
    CHECK(r.o.failed && r.o.auth_failed && r.o.code == 535);
    buf_free(&r.cmd);

    /* refused at once: a temporary failure, not the password's */
    start(&r, 1);
    r.s.user = "ann";
    reply(&r, "220 mx");
    reply(&r, "250-mx\n250 AUTH PLAIN");
    CHECK(strncmp(said(&r), "AUTH PLAIN ", 11) == 0);
    reply(&r, "454 4.7.0 try later");
    CHECK(r.o.failed && !r.o.auth_failed && !r.o.permanent);
    buf_free(&r.cmd);

    /* only CRAM-MD5: Herald does not speak it, and says so (the worker
     * and scheme test alike) */
    start(&r, 1);
    r.s.user = "ann";
    reply(&r, "220 mx");
    reply(&r, "250-mx\n250 AUTH CRAM-MD5");
    CHECK(r.o.failed && r.o.no_auth && r.cmd.len == 0);
    CHECK(strstr(r.o.why, "no AUTH mechanism Herald speaks") != NULL);
    buf_free(&r.cmd);

    /* no AUTH at all */
    start(&r, 1);
    r.s.user = "ann";
    reply(&r, "220 mx");
    reply(&r, "250 mx");
    CHECK(r.o.failed && r.o.no_auth);
    CHECK(strstr(r.o.why, "did not offer AUTH") != NULL);
    buf_free(&r.cmd);

    /* clear text: credentials go only to a loopback server */
    start(&r, 0);
    r.s.user = "ann";
    reply(&r, "220 mx");
    reply(&r, "250-mx\n250 AUTH PLAIN");
    CHECK(r.o.failed && r.o.no_auth && r.cmd.len == 0);
    CHECK(strstr(r.o.why, "unencrypted") != NULL);
    buf_free(&r.cmd);
    start(&r, 0);
    r.s.user = "ann";
    r.s.plain_auth_ok = 1;
    reply(&r, "220 mx");
    reply(&r, "250-mx\n250 AUTH PLAIN");
    CHECK(strncmp(said(&r), "AUTH PLAIN ", 11) == 0);
    buf_free(&r.cmd);

    /* a reply nobody asked for, after the set-up */
    start(&r, 0);
    reply(&r, "220 mx");
    reply(&r, "250 mx");
    CHECK(r.o.done);
    reply(&r, "250 again?");
    CHECK(r.o.error != NULL && r.s.broken && !r.o.idle);
    buf_free(&r.cmd);
}

/* A set-up session (PIPELINING when `pipelining`) and a transaction of
 * n recipients r0@x.test, r1@x.test, ... */
struct tx {
    struct run r;
    struct smtpsess_txn t;
    struct mail_result res;
    struct mail_rcpt_result rr[MAILER_RCPT_MAX];
    char addr[MAILER_RCPT_MAX][32];
    const char *rcpt[MAILER_RCPT_MAX];
};

static void
tx_start(struct tx *x, int pipelining, size_t n)
{
    memset(x, 0, sizeof *x);
    start(&x->r, 1);
    reply(&x->r, "220 mx");
    reply(&x->r, pipelining ? "250-mx\n250 PIPELINING" : "250 mx");
    CHECK(x->r.o.done);
    for (size_t i = 0; i < n; i++) {
        snprintf(x->addr[i], sizeof x->addr[i], "r%zu@x.test", i);
        x->rcpt[i] = x->addr[i];
    }
    x->res.rcpt = x->rr;
    x->res.nrcpt = n;
    x->t.mail_from = "b@acme.test";
    x->t.rcpt = x->rcpt;
    x->t.nrcpt = n;
    x->t.size = 100;
    x->t.res = &x->res;
    smtpsess_txn_init(&x->t);
    buf_reset(&x->r.cmd);
    smtpsess_txn_start(&x->r.s, &x->t, &x->r.o);
}

static void
test_transaction(void)
{
    struct tx x;
    /* pipelined: MAIL, RCPTs and DATA in one write; the body on 354 */
    tx_start(&x, 1, 2);
    CHECK_STR(said(&x.r), "MAIL FROM:<b@acme.test>\r\nRCPT TO:<r0@x.test>\r\n"
                          "RCPT TO:<r1@x.test>\r\nDATA\r\n");
    CHECK_STR(smtpsess_awaited(&x.r.s), "MAIL");
    reply(&x.r, "250 ok");
    reply(&x.r, "250 ok");
    reply(&x.r, "550 5.1.1 no such user");
    CHECK(x.r.cmd.len == 0 && !x.r.o.send_body);
    reply(&x.r, "354 go");
    CHECK(x.r.o.send_body && x.r.cmd.len == 0);
    CHECK_STR(smtpsess_awaited(&x.r.s), "end of data");
    reply(&x.r, "250 2.0.0 queued as X");
    CHECK(x.r.o.txn_done && x.r.o.txn == &x.t && x.r.o.idle && !x.r.o.close);
    CHECK(x.res.cls == MAIL_OK && x.res.transactions == 1);
    CHECK(x.rr[0].code == 250 && x.rr[1].code == 550);
    CHECK_STR(x.res.reply, "250 2.0.0 queued as X");
    CHECK(x.r.s.txn == NULL && smtpsess_awaited(&x.r.s) == NULL);
    /* the next one on the same session says it is a reused connection */
    struct mail_result res2 = {0};
    struct mail_rcpt_result rr2[1] = {{0}};
    res2.rcpt = rr2;
    res2.nrcpt = 1;
    x.t.nrcpt = 1;
    x.t.res = &res2;
    smtpsess_txn_init(&x.t);
    buf_reset(&x.r.cmd);
    smtpsess_txn_start(&x.r.s, &x.t, &x.r.o);
    CHECK(res2.reused == 1);
    /* MAIL refused: the rest of the pipeline answered, then RSET */
    reply(&x.r, "451 4.3.0 try later");
    reply(&x.r, "503 5.5.1 no MAIL");
    reply(&x.r, "503 5.5.1 no valid recipients");
    CHECK(x.r.o.txn_done && !x.r.o.idle && !x.r.o.close);
    CHECK_STR(said(&x.r), "RSET\r\n");
    CHECK(res2.cls == MAIL_TEMP && res2.code == 451);
    reply(&x.r, "250 reset");
    CHECK(x.r.o.idle);
    /* QUIT ends it */
    buf_reset(&x.r.cmd);
    smtpsess_quit(&x.r.s, &x.r.o);
    CHECK_STR(said(&x.r), "QUIT\r\n");
    reply(&x.r, "221 bye");
    CHECK(x.r.o.close);
    /* a 421 while idle: the server closes; anything else is an error */
    reply(&x.r, "421 4.4.2 idle too long");
    CHECK(x.r.o.close && x.r.o.error == NULL);
    buf_free(&x.r.cmd);

    /* without PIPELINING: one command per reply; every RCPT refused for
     * good: no DATA, a permanent failure */
    tx_start(&x, 0, 2);
    CHECK_STR(said(&x.r), "MAIL FROM:<b@acme.test>\r\n");
    reply(&x.r, "250 ok");
    CHECK_STR(said(&x.r), "RCPT TO:<r0@x.test>\r\n");
    reply(&x.r, "550 no");
    CHECK_STR(said(&x.r), "RCPT TO:<r1@x.test>\r\n");
    reply(&x.r, "553 no");
    CHECK(x.r.o.txn_done && x.res.cls == MAIL_PERM);
    CHECK_STR(said(&x.r), "RSET\r\n");
    buf_free(&x.r.cmd);

    /* a 421 in the middle: the transaction fails for now, the
     * connection closes */
    tx_start(&x, 1, 1);
    reply(&x.r, "250 ok");
    reply(&x.r, "421 4.3.2 shutting down");
    CHECK(x.res.cls == MAIL_TEMP && x.res.code == 421 && x.r.s.broken);
    reply(&x.r, "421 4.3.2 shutting down");
    CHECK(x.r.o.txn_done && x.r.o.close);
    buf_free(&x.r.cmd);
}

/* A server that takes 10 recipients per message: 25 go in 3
 * transactions back to back, one result (RFC 5321 §4.5.3.1.10) */
static void
test_too_many_recipients(void)
{
    struct tx x;
    tx_start(&x, 1, 25);
    int rounds = 0;
    for (;;) {
        rounds++;
        size_t n = x.t.nround;
        reply(&x.r, "250 ok");
        for (size_t i = 0; i < n; i++)
            reply(&x.r, i < 10 ? "250 ok" : "452 4.5.3 Too many recipients");
        reply(&x.r, "354 go");
        CHECK(x.r.o.send_body);
        buf_reset(&x.r.cmd);
        reply(&x.r, "250 2.0.0 queued");
        if (x.r.o.txn_done)
            break;
        /* the next transaction at once, with the rest */
        CHECK(strncmp(said(&x.r), "MAIL FROM:", 10) == 0);
        if (rounds > 5)
            break;
    }
    CHECK(rounds == 3 && x.res.transactions == 3 && x.res.cls == MAIL_OK);
    for (size_t i = 0; i < 25; i++)
        CHECK_MSG(x.rr[i].code == 250, "r%zu: %d", i, x.rr[i].code);
    CHECK(x.r.o.idle);
    buf_free(&x.r.cmd);

    /* accepted for some, then the next transaction fails: the result
     * stays MAIL_OK (not sent again), the others carry the failure */
    tx_start(&x, 1, 12);
    reply(&x.r, "250 ok");
    for (size_t i = 0; i < 12; i++)
        reply(&x.r, i < 10 ? "250 ok" : "452 4.5.3 Too many recipients");
    reply(&x.r, "354 go");
    reply(&x.r, "250 queued");
    CHECK(!x.r.o.txn_done);
    reply(&x.r, "451 4.3.0 local error");
    reply(&x.r, "503 no");
    reply(&x.r, "503 no");
    reply(&x.r, "503 no");
    CHECK(x.r.o.txn_done && x.res.cls == MAIL_OK);
    CHECK(x.rr[0].code == 250 && x.rr[10].code == 451 && x.rr[11].code == 451);
    buf_free(&x.r.cmd);
}

/* A second transaction of its own (t2 over res2, one recipient). */
static void
tx_second(struct tx *x, struct smtpsess_txn *t2, struct mail_result *res2,
          struct mail_rcpt_result *rr2)
{
    memset(t2, 0, sizeof *t2);
    memset(res2, 0, sizeof *res2);
    memset(rr2, 0, sizeof *rr2);
    res2->rcpt = rr2;
    res2->nrcpt = 1;
    t2->mail_from = "c@acme.test";
    t2->rcpt = x->rcpt;
    t2->nrcpt = 1;
    t2->size = 50;
    t2->res = res2;
    smtpsess_txn_init(t2);
}

/* Chaining (RFC 2920 §3.1): the next transaction's commands follow a
 * message; its replies come after the message's, one round trip a
 * message. */
static void
test_chaining(void)
{
    struct tx x;
    struct smtpsess_txn t2;
    struct mail_result res2;
    struct mail_rcpt_result rr2;
    tx_start(&x, 1, 1);
    CHECK(!smtpsess_can_chain(&x.r.s)); /* MAIL, RCPT, DATA awaited */
    reply(&x.r, "250 ok");
    reply(&x.r, "250 ok");
    reply(&x.r, "354 go");
    CHECK(x.r.o.send_body && smtpsess_can_chain(&x.r.s));
    tx_second(&x, &t2, &res2, &rr2);
    buf_reset(&x.r.cmd);
    smtpsess_txn_chain(&x.r.s, &t2, &x.r.o);
    CHECK_STR(said(&x.r), "MAIL FROM:<c@acme.test>\r\nRCPT TO:<r0@x.test>\r\n"
                          "DATA\r\n");
    CHECK(!smtpsess_can_chain(&x.r.s)); /* one at a time */
    CHECK(res2.reused == 1 && res2.transactions == 1);
    /* the first message's end: the first is done, the second goes on */
    reply(&x.r, "250 2.0.0 queued as A");
    CHECK(x.r.o.txn_done && x.r.o.txn == &x.t && x.r.o.chained_on);
    CHECK(!x.r.o.idle && !x.r.o.close && x.r.cmd.len == 0);
    CHECK(x.res.cls == MAIL_OK && x.r.s.txn == &t2 && x.r.s.next == NULL);
    reply(&x.r, "250 ok");
    reply(&x.r, "250 ok");
    reply(&x.r, "354 go");
    CHECK(x.r.o.send_body);
    reply(&x.r, "250 2.0.0 queued as B");
    CHECK(x.r.o.txn_done && x.r.o.txn == &t2 && x.r.o.idle);
    CHECK(!x.r.o.chained_on && res2.cls == MAIL_OK);
    CHECK_STR(res2.reply, "250 2.0.0 queued as B");

    /* the first message refused: still no RSET, the second goes on */
    buf_reset(&x.r.cmd);
    x.t.res = &x.res;
    memset(&x.res, 0, sizeof x.res);
    x.res.rcpt = x.rr;
    x.res.nrcpt = 1;
    smtpsess_txn_init(&x.t);
    smtpsess_txn_start(&x.r.s, &x.t, &x.r.o);
    reply(&x.r, "250 ok");
    reply(&x.r, "250 ok");
    reply(&x.r, "354 go");
    tx_second(&x, &t2, &res2, &rr2);
    buf_reset(&x.r.cmd);
    smtpsess_txn_chain(&x.r.s, &t2, &x.r.o);
    reply(&x.r, "554 5.7.1 spam");
    CHECK(x.r.o.txn_done && x.r.o.chained_on && x.r.cmd.len == 0);
    CHECK(x.res.cls == MAIL_PERM && x.res.code == 554);
    reply(&x.r, "250 ok");
    reply(&x.r, "250 ok");
    reply(&x.r, "354 go");
    reply(&x.r, "250 queued");
    CHECK(x.r.o.txn_done && x.r.o.txn == &t2 && res2.cls == MAIL_OK);

    /* 421 at the message's end: the session breaks, the chained one is
     * dropped without a result (the caller gives it one) */
    buf_reset(&x.r.cmd);
    smtpsess_txn_init(&x.t);
    memset(&x.res, 0, sizeof x.res);
    x.res.rcpt = x.rr;
    x.res.nrcpt = 1;
    smtpsess_txn_start(&x.r.s, &x.t, &x.r.o);
    reply(&x.r, "250 ok");
    reply(&x.r, "250 ok");
    reply(&x.r, "354 go");
    tx_second(&x, &t2, &res2, &rr2);
    smtpsess_txn_chain(&x.r.s, &t2, &x.r.o);
    reply(&x.r, "421 4.3.2 shutting down");
    CHECK(x.r.o.txn_done && x.r.o.close && !x.r.o.chained_on);
    CHECK(x.res.cls == MAIL_TEMP && x.r.s.txn == NULL && x.r.s.next == NULL);
    CHECK(res2.code == 0 && res2.reply[0] == '\0');
    buf_free(&x.r.cmd);

    /* no chaining without PIPELINING, nor when recipients were refused
     * as too many (their next round comes first) */
    tx_start(&x, 0, 1);
    reply(&x.r, "250 ok");
    reply(&x.r, "250 ok");
    reply(&x.r, "354 go");
    CHECK(x.r.o.send_body && !smtpsess_can_chain(&x.r.s));
    buf_free(&x.r.cmd);
    tx_start(&x, 1, 2);
    reply(&x.r, "250 ok");
    reply(&x.r, "250 ok");
    reply(&x.r, "452 4.5.3 Too many recipients");
    reply(&x.r, "354 go");
    CHECK(x.r.o.send_body && !smtpsess_can_chain(&x.r.s));
    buf_free(&x.r.cmd);
}

static void
test_names(void)
{
    CHECK_STR(smtpsess_wait_name(SMTPSESS_GREETING), "greeting");
    CHECK_STR(smtpsess_wait_name(SMTPSESS_AUTH_USER), "AUTH");
    CHECK_STR(smtpsess_wait_name((enum smtpsess_wait)99), "session set-up");
}

int
main(void)
{
    test_plain_session();
    test_starttls();
    test_auth();
    test_transaction();
    test_too_many_recipients();
    test_chaining();
    test_names();
    return T_DONE("test_smtpsess");
}
