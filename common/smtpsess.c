/*
 * smtpsess — the SMTP client session's set-up as a pure machine
 * (smtpsess.h).
 */
#include "smtpsess.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const wait_names[] = {
    [SMTPSESS_GREETING] = "greeting",
    [SMTPSESS_EHLO] = "EHLO",
    [SMTPSESS_HELO] = "HELO",
    [SMTPSESS_STARTTLS] = "STARTTLS",
    [SMTPSESS_TLS] = "TLS handshake",
    [SMTPSESS_AUTH_PLAIN] = "AUTH",
    [SMTPSESS_AUTH_LOGIN] = "AUTH",
    [SMTPSESS_AUTH_USER] = "AUTH",
    [SMTPSESS_AUTH_PASS] = "AUTH",
    [SMTPSESS_DONE] = "session set-up",
    [SMTPSESS_FAILED] = "session set-up",
};

const char *
smtpsess_wait_name(enum smtpsess_wait w)
{
    return (unsigned)w < sizeof wait_names / sizeof wait_names[0] &&
                   wait_names[w]
               ? wait_names[w]
               : "session set-up";
}

static void
out_reset(struct smtpsess_out *o)
{
    struct buf *cmd = o->cmd;
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
}

static void
fail(struct smtpsess *s, struct smtpsess_out *o, int code, const char *why,
     int permanent)
{
    s->wait = SMTPSESS_FAILED;
    o->failed = 1;
    o->code = code;
    o->why = why;
    o->permanent = permanent;
}

/* A command without credentials: sent and traced as it is. */
static void
say(struct smtpsess_out *o, const char *line)
{
    buf_printf(o->cmd, "%s\r\n", line);
    snprintf(o->trace, sizeof o->trace, "%s", line);
}

static void
hello(struct smtpsess *s, struct smtpsess_out *o, int ehlo)
{
    char line[300];
    snprintf(line, sizeof line, "%s %s", ehlo ? "EHLO" : "HELO",
             s->helo && *s->helo ? s->helo : "[127.0.0.1]");
    say(o, line);
    s->wait = ehlo ? SMTPSESS_EHLO : SMTPSESS_HELO;
}

/* `n` bytes of `data` in base64 after `prefix`, then CR LF; the
 * temporary copy cleansed. */
static void
say_b64(struct smtpsess_out *o, const char *prefix, const unsigned char *data,
        size_t n)
{
    char *b64 = malloc(4 * ((n + 2) / 3) + 1);
    if (b64 == NULL)
        abort();
    int k = EVP_EncodeBlock((unsigned char *)b64, data, (int)n);
    buf_printf(o->cmd, "%s%.*s\r\n", prefix, k, b64);
    OPENSSL_cleanse(b64, (size_t)k);
    free(b64);
}

static void
done(struct smtpsess *s, struct smtpsess_out *o)
{
    s->wait = SMTPSESS_DONE;
    o->done = 1;
}

/* EHLO (or HELO) answered: STARTTLS, or AUTH, or set up. */
static void
after_hello(struct smtpsess *s, struct smtpsess_out *o)
{
    if (!s->secure && s->caps.starttls && s->starttls) {
        say(o, "STARTTLS");
        s->wait = SMTPSESS_STARTTLS;
        return;
    }
    if (!s->secure && s->require_tls) {
        o->no_tls = 1;
        fail(s, o, 0,
             "the server does not offer STARTTLS, which this sender "
             "requires",
             0);
        return;
    }
    if (s->user == NULL) {
        done(s, o);
        return;
    }
    if (!s->secure && !s->plain_auth_ok) {
        o->no_auth = 1;
        fail(s, o, 0,
             "refusing to send credentials over an unencrypted connection "
             "(the server offers no STARTTLS)",
             0);
        return;
    }
    const char *pw = s->password ? s->password : "";
    if (s->caps.auth_plain) {
        size_t ul = strlen(s->user), pl = strlen(pw), n = ul + pl + 2;
        unsigned char *raw = malloc(n);
        if (raw == NULL)
            abort();
        raw[0] = 0;
        memcpy(raw + 1, s->user, ul);
        raw[1 + ul] = 0;
        memcpy(raw + 2 + ul, pw, pl);
        say_b64(o, "AUTH PLAIN ", raw, n);
        OPENSSL_cleanse(raw, n);
        free(raw);
        snprintf(o->trace, sizeof o->trace, "AUTH PLAIN");
        s->wait = SMTPSESS_AUTH_PLAIN;
    } else if (s->caps.auth_login) {
        say(o, "AUTH LOGIN");
        s->wait = SMTPSESS_AUTH_LOGIN;
    } else {
        o->no_auth = 1;
        fail(s, o, 0,
             s->caps.auth ? "the server offers no AUTH mechanism Herald "
                            "speaks (PLAIN, LOGIN)"
                          : "the server did not offer AUTH (no AUTH in its "
                            "EHLO reply), so the credentials were not tried",
             0);
    }
}

void
smtpsess_begin(struct smtpsess *s, int secure)
{
    memset(&s->caps, 0, sizeof s->caps);
    s->secure = secure;
    s->wait = SMTPSESS_GREETING;
}

void
smtpsess_line(struct smtpsess *s, const struct smtpreply_line *rl)
{
    if (s->wait == SMTPSESS_EHLO && rl->code / 100 == 2)
        smtpreply_ehlo_keyword(rl->text, rl->textlen, &s->caps);
}

void
smtpsess_reply(struct smtpsess *s, int code, const char *line,
               struct smtpsess_out *o)
{
    out_reset(o);
    switch (s->wait) {
    case SMTPSESS_GREETING:
        if (code != 220) {
            fail(s, o, code, line, code >= 500);
            return;
        }
        hello(s, o, 1);
        return;
    case SMTPSESS_EHLO:
        if (code / 100 != 2) {
            /* an old server: HELO, without extensions */
            memset(&s->caps, 0, sizeof s->caps);
            hello(s, o, 0);
            return;
        }
        after_hello(s, o);
        return;
    case SMTPSESS_HELO:
        if (code / 100 != 2) {
            fail(s, o, code, line, 0);
            return;
        }
        after_hello(s, o);
        return;
    case SMTPSESS_STARTTLS:
        if (code != 220) {
            /* offered but refused: never fall back to clear text */
            fail(s, o, code, line, 0);
            return;
        }
        s->wait = SMTPSESS_TLS;
        o->start_tls = 1;
        return;
    case SMTPSESS_AUTH_PLAIN:
    case SMTPSESS_AUTH_PASS:
        if (code == 235) {
            o->auth_ok = 1;
            done(s, o);
            return;
        }
        o->auth_failed = code == 535 || code == 534 || code == 530;
        fail(s, o, code, line, 0);
        return;
    case SMTPSESS_AUTH_LOGIN:
    case SMTPSESS_AUTH_USER:
        if (code != 334) {
            o->auth_failed = code == 535 || code == 534;
            fail(s, o, code, line, 0);
            return;
        }
        if (s->wait == SMTPSESS_AUTH_LOGIN) {
            say_b64(o, "", (const unsigned char *)s->user, strlen(s->user));
            s->wait = SMTPSESS_AUTH_USER;
        } else {
            const char *pw = s->password ? s->password : "";
            say_b64(o, "", (const unsigned char *)pw, strlen(pw));
            s->wait = SMTPSESS_AUTH_PASS;
        }
        return;
    case SMTPSESS_TLS:
    case SMTPSESS_DONE:
    case SMTPSESS_FAILED:
        fail(s, o, code, "the server sent a reply nothing asked for", 0);
        return;
    }
}

void
smtpsess_tls_up(struct smtpsess *s, struct smtpsess_out *o)
{
    out_reset(o);
    s->secure = 1;
    memset(&s->caps, 0, sizeof s->caps);
    hello(s, o, 1);
}
