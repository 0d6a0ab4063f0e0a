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
    CHECK(r.o.failed && r.s.wait == SMTPSESS_FAILED);
    buf_free(&r.cmd);
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
    test_names();
    return T_DONE("test_smtpsess");
}
