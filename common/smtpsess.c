/*
 * smtpsess — an SMTP client session as a pure machine (smtpsess.h).
 */
#include "smtpsess.h"
#include "smtpclass.h"

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

static const char *const cmd_names[] = {
    [SMTPSESS_C_SETUP] = "session set-up",
    [SMTPSESS_C_MAIL] = "MAIL",
    [SMTPSESS_C_RCPT] = "RCPT",
    [SMTPSESS_C_DATA] = "DATA",
    [SMTPSESS_C_BODY] = "end of data",
    [SMTPSESS_C_RSET] = "RSET",
    [SMTPSESS_C_QUIT] = "QUIT",
};

static void
push(struct smtpsess *s, enum smtpsess_cmd c)
{
    size_t cap = sizeof s->exp / sizeof s->exp[0];
    if (s->exp_n == cap)
        abort(); /* bounded by MAILER_RCPT_MAX + a few: a bug */
    s->exp[(s->exp_head + s->exp_n) % cap] = c;
    s->exp_n++;
}

static enum smtpsess_cmd
pop(struct smtpsess *s)
{
    size_t cap = sizeof s->exp / sizeof s->exp[0];
    enum smtpsess_cmd c = s->exp[s->exp_head];
    s->exp_head = (s->exp_head + 1) % cap;
    s->exp_n--;
    return c;
}

const char *
smtpsess_awaited(const struct smtpsess *s)
{
    if (s->exp_n == 0)
        return NULL;
    enum smtpsess_cmd c = s->exp[s->exp_head];
    return c == SMTPSESS_C_SETUP ? smtpsess_wait_name(s->wait) : cmd_names[c];
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

/* A set-up command without credentials: sent and traced as it is. */
static void
say(struct smtpsess *s, struct smtpsess_out *o, const char *line)
{
    buf_printf(o->cmd, "%s\r\n", line);
    snprintf(o->trace, sizeof o->trace, "%s", line);
    push(s, SMTPSESS_C_SETUP);
}

static void
hello(struct smtpsess *s, struct smtpsess_out *o, int ehlo)
{
    char line[300];
    snprintf(line, sizeof line, "%s %s", ehlo ? "EHLO" : "HELO",
             s->helo && *s->helo ? s->helo : "[127.0.0.1]");
    say(s, o, line);
    s->wait = ehlo ? SMTPSESS_EHLO : SMTPSESS_HELO;
}

/* `n` bytes of `data` in base64 after `prefix`, then CR LF: a set-up
 * command that carries credentials (never traced); the temporary copy
 * cleansed. */
static void
say_b64(struct smtpsess *s, struct smtpsess_out *o, const char *prefix,
        const unsigned char *data, size_t n)
{
    push(s, SMTPSESS_C_SETUP);
    o->secret = 1;
    char *b64 = xmalloc(4 * ((n + 2) / 3) + 1);
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
        say(s, o, "STARTTLS");
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
        unsigned char *raw = xmalloc(n);
        raw[0] = 0;
        memcpy(raw + 1, s->user, ul);
        raw[1 + ul] = 0;
        memcpy(raw + 2 + ul, pw, pl);
        say_b64(s, o, "AUTH PLAIN ", raw, n);
        OPENSSL_cleanse(raw, n);
        free(raw);
        snprintf(o->trace, sizeof o->trace, "AUTH PLAIN");
        s->wait = SMTPSESS_AUTH_PLAIN;
    } else if (s->caps.auth_login) {
        say(s, o, "AUTH LOGIN");
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
    s->exp_head = s->exp_n = 0;
    push(s, SMTPSESS_C_SETUP);
}

void
smtpsess_line(struct smtpsess *s, const struct smtpreply_line *rl)
{
    if (s->exp_n && s->exp[s->exp_head] == SMTPSESS_C_SETUP &&
        s->wait == SMTPSESS_EHLO && rl->code / 100 == 2)
        smtpreply_ehlo_keyword(rl->text, rl->textlen, &s->caps);
}

static void setup_reply(struct smtpsess *s, int code, const char *line,
                        struct smtpsess_out *o);
static void txn_reply(struct smtpsess *s, enum smtpsess_cmd c, int code,
                      const char *line, struct smtpsess_out *o);

void
smtpsess_reply(struct smtpsess *s, int code, const char *line,
               struct smtpsess_out *o)
{
    out_reset(o);
    if (s->exp_n == 0) {
        if (code == 421) {
            o->close = 1; /* the server closes an idle session */
            return;
        }
        s->broken = 1;
        o->error = "the server sent an unexpected reply";
        return;
    }
    enum smtpsess_cmd c = pop(s);
    switch (c) {
    case SMTPSESS_C_SETUP:
        setup_reply(s, code, line, o);
        return;
    case SMTPSESS_C_MAIL:
    case SMTPSESS_C_RCPT:
    case SMTPSESS_C_DATA:
    case SMTPSESS_C_BODY:
        txn_reply(s, c, code, line, o);
        return;
    case SMTPSESS_C_RSET:
        if (code / 100 == 2 && !s->broken)
            o->idle = 1;
        else
            o->close = 1;
        return;
    case SMTPSESS_C_QUIT:
        o->close = 1;
        return;
    }
}

static void
setup_reply(struct smtpsess *s, int code, const char *line,
            struct smtpsess_out *o)
{
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
            say_b64(s, o, "", (const unsigned char *)s->user, strlen(s->user));
            s->wait = SMTPSESS_AUTH_USER;
        } else {
            const char *pw = s->password ? s->password : "";
            say_b64(s, o, "", (const unsigned char *)pw, strlen(pw));
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

/* ---- transactions ---- */

static void
set_reply(struct mail_result *r, int code, const char *s, size_t n)
{
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    if (n >= MAILER_REPLY_MAX)
        n = MAILER_REPLY_MAX - 1;
    for (size_t i = 0; i < n; i++)
        r->reply[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? ' ' : s[i];
    r->reply[n] = '\0';
    r->code = code;
}

void
smtpsess_txn_init(struct smtpsess_txn *t)
{
    if (t->nrcpt > MAILER_RCPT_MAX)
        t->nrcpt = MAILER_RCPT_MAX;
    t->nround = t->nrcpt;
    for (size_t i = 0; i < t->nrcpt; i++)
        t->round[i] = i;
    t->decided = t->delivered = t->last_ok = 0;
    t->stage = SMTPC_CONNECT;
}

void
smtpsess_txn_fail(struct smtpsess_txn *t, enum mail_class cls, int code,
                  const char *why)
{
    if (t->decided)
        return;
    t->decided = 1;
    struct mail_result *res = t->res;
    if (t->delivered) {
        struct mail_result tmp;
        set_reply(&tmp, code ? code : 451, why ? why : "",
                  why ? strlen(why) : 0);
        for (size_t i = 0; i < t->nround; i++) {
            struct mail_rcpt_result *rr = &res->rcpt[t->round[i]];
            if (rr->code >= 400)
                continue;
            rr->code = tmp.code;
            snprintf(rr->reply, sizeof rr->reply, "%s", tmp.reply);
        }
        res->cls = MAIL_OK;
        return;
    }
    res->cls = cls;
    res->stage = t->stage;
    if (why)
        set_reply(res, code, why, strlen(why));
}

/* After an accepted transaction: keeps in t->round the recipients it
 * refused as too many, when it took some (else the server's refusal
 * stands). Returns how many are left for the next transaction. */
static size_t
next_round(struct smtpsess_txn *t, size_t accepted)
{
    size_t n = 0;
    if (accepted == 0)
        return 0;
    for (size_t i = 0; i < t->nround; i++) {
        const struct mail_rcpt_result *rr = &t->res->rcpt[t->round[i]];
        if (smtp_too_many_rcpt(rr->code, rr->reply))
            t->round[n++] = t->round[i];
    }
    if (n)
        t->nround = n;
    return n;
}

/* Every recipient refused: the result is temporary if any refusal was
 * (after an accepted earlier transaction each keeps its own refusal). */
static void
classify_no_rcpt(struct smtpsess_txn *t)
{
    struct mail_result *res = t->res;
    t->decided = 1;
    if (t->delivered) {
        res->cls = MAIL_OK;
        return;
    }
    enum mail_class cls = MAIL_PERM;
    const struct mail_rcpt_result *worst = NULL;
    for (size_t i = 0; i < res->nrcpt; i++) {
        if (res->rcpt[i].code >= 400 && res->rcpt[i].code < 500) {
            cls = MAIL_TEMP;
            worst = &res->rcpt[i];
        }
        if (worst == NULL)
            worst = &res->rcpt[i];
    }
    res->cls = cls;
    res->stage = SMTPC_RCPT;
    if (worst)
        set_reply(res, worst->code, worst->reply, strlen(worst->reply));
}

static void
rcpt_cmd(struct smtpsess *s, struct smtpsess_out *o,
         const struct smtpsess_txn *t, size_t i)
{
    buf_printf(o->cmd, "RCPT TO:<%s>\r\n", t->rcpt[t->round[i]]);
    push(s, SMTPSESS_C_RCPT);
}

/* MAIL FROM, and with PIPELINING the RCPTs and DATA, of t's round. */
static void
txn_cmds(struct smtpsess *s, struct smtpsess_txn *t, struct smtpsess_out *o)
{
    t->res->reused = s->used;
    s->used = 1;
    if (s->caps.size)
        buf_printf(o->cmd, "MAIL FROM:<%s> SIZE=%zu\r\n", t->mail_from,
                   t->size);
    else
        buf_printf(o->cmd, "MAIL FROM:<%s>\r\n", t->mail_from);
    push(s, SMTPSESS_C_MAIL);
    t->res->transactions++;
    t->last_ok = 0;
    if (s->caps.pipelining) {
        for (size_t i = 0; i < t->nround; i++)
            rcpt_cmd(s, o, t, i);
        buf_puts(o->cmd, "DATA\r\n");
        push(s, SMTPSESS_C_DATA);
    }
}

void
smtpsess_txn_start(struct smtpsess *s, struct smtpsess_txn *t,
                   struct smtpsess_out *o)
{
    out_reset(o);
    s->txn = t;
    s->rcpt_seen = s->rcpt_ok = 0;
    s->mail_failed = 0;
    txn_cmds(s, t, o);
}

int
smtpsess_can_chain(const struct smtpsess *s)
{
    const struct smtpsess_txn *t = s->txn;
    if (!s->caps.pipelining || t == NULL || s->next || s->broken ||
        t->decided || s->rcpt_ok == 0 || s->exp_n != 1 ||
        s->exp[s->exp_head] != SMTPSESS_C_BODY)
        return 0;
    for (size_t i = 0; i < t->nround; i++) {
        const struct mail_rcpt_result *rr = &t->res->rcpt[t->round[i]];
        if (smtp_too_many_rcpt(rr->code, rr->reply))
            return 0; /* a next round of this transaction comes first */
    }
    return 1;
}

void
smtpsess_txn_chain(struct smtpsess *s, struct smtpsess_txn *t,
                   struct smtpsess_out *o)
{
    s->next = t;
    t->res->chained = 1;
    txn_cmds(s, t, o);
}

/* The transaction has its result: handed back; the session goes idle,
 * says RSET first (after a failure), or is closed. */
static void
finish(struct smtpsess *s, struct smtpsess_out *o, int reusable)
{
    struct smtpsess_txn *t = s->txn;
    s->txn = NULL;
    o->txn_done = 1;
    o->txn = t;
    if (s->next && reusable) {
        /* its commands are out already: it goes on, and the message's
         * end ended this one for the server, whatever its reply (no
         * RSET) */
        s->txn = s->next;
        s->next = NULL;
        s->rcpt_seen = s->rcpt_ok = 0;
        s->mail_failed = 0;
        o->chained_on = 1;
        return;
    }
    s->next = NULL;
    if (!reusable) {
        o->close = 1;
        return;
    }
    if (t->last_ok) {
        o->idle = 1;
        return;
    }
    buf_puts(o->cmd, "RSET\r\n");
    push(s, SMTPSESS_C_RSET);
}

static void
txn_reply(struct smtpsess *s, enum smtpsess_cmd c, int code, const char *line,
          struct smtpsess_out *o)
{
    struct smtpsess_txn *t = s->txn;
    if (t == NULL) {
        s->broken = 1;
        o->error = "reply without a transaction";
        return;
    }
    struct mail_result *res = t->res;
    t->stage = c == SMTPSESS_C_MAIL   ? SMTPC_MAIL
               : c == SMTPSESS_C_RCPT ? SMTPC_RCPT
               : c == SMTPSESS_C_DATA ? SMTPC_DATA
                                      : SMTPC_END;
    if (code == 421) {
        /* the server is closing the channel */
        smtpsess_txn_fail(t, MAIL_TEMP, code, line);
        s->broken = 1;
    }
    enum mail_class cls = code >= 500 ? MAIL_PERM : MAIL_TEMP;
    switch (c) {
    case SMTPSESS_C_MAIL:
        if (code / 100 != 2) {
            smtpsess_txn_fail(t, cls, code, line);
            s->mail_failed = 1;
        }
        if (!s->caps.pipelining) {
            if (code / 100 != 2) {
                finish(s, o, !s->broken);
                return;
            }
            rcpt_cmd(s, o, t, 0);
        }
        break;
    case SMTPSESS_C_RCPT: {
        size_t i = s->rcpt_seen++;
        /* After a refused MAIL (pipelined), the RCPT replies say only
         * that there was no MAIL ("503 5.5.1"): they are not the
         * recipients' outcomes, and must not replace MAIL's reply (a
         * 451 would read as a permanent 503). */
        if (i < t->nround && !s->mail_failed) {
            struct mail_rcpt_result *rr = &res->rcpt[t->round[i]];
            struct mail_result tmp;
            set_reply(&tmp, code, line, strlen(line));
            rr->code = code;
            snprintf(rr->reply, sizeof rr->reply, "%s", tmp.reply);
            if (!t->decided) { /* the last, for errors */
                res->code = code;
                snprintf(res->reply, sizeof res->reply, "%s", tmp.reply);
            }
        }
        if (code / 100 == 2)
            s->rcpt_ok++;
        if (!s->caps.pipelining) {
            if (s->rcpt_seen < t->nround) {
                rcpt_cmd(s, o, t, s->rcpt_seen);
            } else if (s->rcpt_ok == 0) {
                classify_no_rcpt(t);
                finish(s, o, !s->broken);
                return;
            } else {
                buf_puts(o->cmd, "DATA\r\n");
                push(s, SMTPSESS_C_DATA);
            }
        }
        break;
    }
    case SMTPSESS_C_DATA:
        if (code == 354) {
            push(s, SMTPSESS_C_BODY);
            if (t->decided || s->rcpt_ok == 0) {
                /* pipelined DATA accepted although MAIL or every RCPT
                 * failed: an empty message's end, then RSET */
                buf_puts(o->cmd, ".\r\n");
                if (!t->decided)
                    classify_no_rcpt(t);
            } else {
                o->send_body = 1;
            }
            break;
        }
        if (!t->decided) {
            if (s->rcpt_ok == 0)
                classify_no_rcpt(t);
            else
                smtpsess_txn_fail(t, cls, code, line);
        }
        finish(s, o, !s->broken);
        return;
    case SMTPSESS_C_BODY:
        if (!t->decided && code / 100 == 2) {
            res->stage = SMTPC_END;
            set_reply(res, code, line, strlen(line));
            res->cls = MAIL_OK;
            t->last_ok = 1;
            if (!s->broken && next_round(t, s->rcpt_ok) > 0) {
                /* the rest at once, in the same session */
                t->delivered = 1;
                for (size_t i = 0; i < t->nround; i++) {
                    res->rcpt[t->round[i]].code = 0;
                    res->rcpt[t->round[i]].reply[0] = '\0';
                }
                smtpsess_txn_start(s, t, o); /* o had nothing yet */
                return;
            }
            t->decided = 1;
        } else if (!t->decided) {
            smtpsess_txn_fail(t, cls, code, line);
        }
        finish(s, o, !s->broken);
        return;
    default:
        break;
    }
    if (s->exp_n == 0) {
        /* nothing more will come (a failed MAIL without pipelining is
         * handled above) */
        finish(s, o, !s->broken);
    }
}

void
smtpsess_quit(struct smtpsess *s, struct smtpsess_out *o)
{
    out_reset(o);
    buf_puts(o->cmd, "QUIT\r\n");
    push(s, SMTPSESS_C_QUIT);
}
