/*
 * heraldctl scheme test — the help page's "Test Connection / Send Test
 * Message" (SPEC §7): talks to an Email Sending Scheme's own servers with
 * its stored credentials and prints each step with the server's reply.
 *
 *   SMTP  connect, EHLO, TLS (implicit for "ssl", required STARTTLS for
 *         "starttls", none for "none"), AUTH, and with --send-to a real
 *         test message (MAIL, RCPT, DATA), in one session;
 *   IMAP  when the scheme has one: connect, TLS (same mode: imaps or
 *         STARTTLS), LOGIN with the same credentials.
 *
 * It stops at the first step that fails (a second login with a rejected
 * password helps nobody and may lock the account). Exit 0 only when every
 * step passed, and then an auth_failed mark is cleared (compare-and-set,
 * herald_scheme_clear_failure); 1 when a step failed, naming the step and
 * the server's reply; 2 for bad usage, an unknown scheme, a bad --send-to
 * address or a missing, bad or wrong key file.
 *
 * SMTP goes through the worker's own client (io/mailer.c) on a loop of
 * its own, with the URL, TLS rule, EHLO name, timeouts and AUTH
 * mechanisms a delivery to the scheme would have, so the test passes
 * exactly when deliveries can (a server that offers only CRAM-MD5 fails
 * both alike); the steps are read from the client's trace
 * (mail_req.trace), which never carries credentials. IMAP is a blocking
 * libcurl transfer, its steps read from libcurl's protocol trace
 * (CURLOPT_DEBUGFUNCTION): commands sent mark the step in progress, the
 * server's lines are its reply; client lines are never kept, only their
 * command word, so no LOGIN argument can reach the output. The clear
 * password is opened from its sealed token only for the session, handed
 * to the mailer and to libcurl (CURLOPT_PASSWORD, never a URL, never
 * argv) by reference, and wiped afterwards. Certificates are always
 * verified (HERALD_CA_FILE adds a CA bundle to the system's).
 */
#include "clock.h"
#include "ctl.h"
#include "log.h"
#include "mailer.h"
#include "mime.h"
#include "util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <uv.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define REPLY_MAX 512 /* bytes of a step's reply kept for printing */
#define CAPS_MAX 256  /* bytes of the EHLO keywords kept */
#define SYSTEM_CAPATH "/etc/ssl/certs"
#define STEP_WIDTH 13 /* the step column */
#define TLS_NONE_TEXT "none: plain text (tls none, a loopback host)"

enum step {
    ST_CONNECT,
    ST_EHLO,
    ST_TLS,
    ST_AUTH,
    ST_SEND,
    ST_IMAP_CONNECT,
    ST_IMAP_TLS,
    ST_IMAP_LOGIN,
    ST_COUNT
};

static const char *const step_names[ST_COUNT] = {
    "connect", "ehlo",         "tls",      "auth",
    "send",    "imap connect", "imap tls", "imap login"};

/* Not a step: a command whose reply is not shown (CAPABILITY, NOOP, QUIT). */
#define PH_NONE (-1)
/* The EHLO after STARTTLS: only its keywords are kept. */
#define PH_EHLO2 (-2)

struct step_rec {
    int reached;
    int failed;
    char reply[REPLY_MAX];
};

struct test {
    struct step_rec st[ST_COUNT];
    int order[ST_COUNT]; /* steps in the order they were reached */
    int norder;
    int failed_step; /* -1: none */
};

/* The state of one transfer, fed by the protocol trace. */
struct probe {
    struct test *t;
    int imap;
    enum scheme_tls tls;
    int s_connect, s_tls, s_auth; /* this protocol's steps */
    int phase;                    /* the step awaiting the server, PH_* */
    int fresh;                    /* the next server line starts a reply */
    int connected;
    int ehlo_count;
    int auth_open;     /* AUTH / LOGIN sent, final reply not yet seen */
    int auth_ok;       /* 235 / tagged OK to the login */
    int in_data;       /* 354 seen: the next reply ends the message */
    const char *label; /* the SMTP command of the send step's reply */
    char caps[CAPS_MAX];
    char greeting_kind[8]; /* IMAP: "OK", "PREAUTH", "BYE" */
    /* the test message, for the read callback */
    const char *body;
    size_t body_len, body_pos;
};

/* ---- replies ---- */

/* Kept as the server sent it (cut to fit); escaped when printed. */
static void
text_set(char *dst, size_t cap, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap && s[i] != '\0'; i++)
        dst[k++] = s[i];
    dst[k] = '\0';
}

static void
text_add(char *dst, size_t cap, const char *sep, const char *s, size_t n)
{
    size_t len = strlen(dst);
    if (len && sep) {
        size_t sl = strlen(sep);
        if (len + sl + 1 >= cap)
            return;
        memcpy(dst + len, sep, sl + 1);
        len += sl;
    }
    text_set(dst + len, cap - len, s, n);
}

static void
reach(struct test *t, int step)
{
    if (step < 0 || t->st[step].reached)
        return;
    t->st[step].reached = 1;
    t->order[t->norder++] = step;
}

static void
reply_set(struct test *t, int step, const char *s, size_t n)
{
    if (step < 0)
        return;
    reach(t, step);
    text_set(t->st[step].reply, REPLY_MAX, s, n);
}

static void
reply_add(struct test *t, int step, const char *sep, const char *s, size_t n)
{
    if (step < 0)
        return;
    reach(t, step);
    text_add(t->st[step].reply, REPLY_MAX, sep, s, n);
}

/* Marks `step` failed (the first failure wins) with `why` added to what the
 * server said, when that is not there already. */
static void
fail_step(struct test *t, int step, const char *why)
{
    reach(t, step);
    if (t->failed_step < 0)
        t->failed_step = step;
    t->st[step].failed = 1;
    if (why && *why && strstr(t->st[step].reply, why) == NULL)
        text_add(t->st[step].reply, REPLY_MAX, " — ", why, strlen(why));
}

/* ---- the protocol trace ---- */

static int
starts(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && strncasecmp(s, prefix, k) == 0;
}

/* The word at `s` (up to a space), as the command it names. */
static int
word_is(const char *s, size_t n, const char *w)
{
    size_t k = strlen(w);
    return n >= k && strncasecmp(s, w, k) == 0 && (n == k || s[k] == ' ');
}

/* The connection is up. */
static void
probe_connected(struct probe *p)
{
    struct test *t = p->t;
    p->connected = 1;
    reach(t, p->s_connect);
    reply_set(t, p->s_connect, "connected", 9);
    if (p->tls == SCHEME_TLS_NONE)
        reply_set(t, p->s_tls, TLS_NONE_TEXT, strlen(TLS_NONE_TEXT));
    p->phase = p->tls == SCHEME_TLS_SSL ? p->s_tls : p->s_connect;
    reach(t, p->phase);
    p->fresh = 1;
}

/* TLS is up: `v` names its version and cipher. */
static void
probe_tls(struct probe *p, const char *v, size_t n)
{
    reply_add(p->t, p->s_tls, "; ", v, n);
    if (p->tls == SCHEME_TLS_SSL) {
        p->phase = p->s_connect; /* the greeting comes next */
        p->fresh = 1;
    }
}

/* libcurl's informational lines (IMAP) */
static void
on_text(struct probe *p, const char *s, size_t n)
{
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    if (starts(s, n, "Connected to ")) {
        probe_connected(p);
    } else if (starts(s, n, "SSL connection using ")) {
        const char *v = s + strlen("SSL connection using ");
        probe_tls(p, v, n - (size_t)(v - s));
    } else if (starts(s, n, " SSL certificate verify ok") ||
               starts(s, n, "SSL certificate verify ok")) {
        reply_add(p->t, p->s_tls, ", ", "certificate verified", 20);
    }
}

/* One line the client sent: only its command word is looked at. */
static void
on_command(struct probe *p, const char *s, size_t n)
{
    struct test *t = p->t;
    if (p->auth_open)
        return; /* credentials (AUTH LOGIN / AUTHENTICATE continuations) */
    p->fresh = 1;
    if (p->imap) {
        const char *sp = memchr(s, ' ', n);
        if (sp == NULL)
            return;
        const char *w = sp + 1;
        size_t wn = n - (size_t)(w - s);
        if (word_is(w, wn, "STARTTLS")) {
            p->phase = p->s_tls;
        } else if (word_is(w, wn, "LOGIN") || word_is(w, wn, "AUTHENTICATE")) {
            p->phase = p->s_auth;
            p->auth_open = 1;
        } else {
            p->phase = PH_NONE;
            return;
        }
        reach(t, p->phase);
        return;
    }
    if (word_is(s, n, "EHLO") || word_is(s, n, "HELO")) {
        p->caps[0] = '\0';
        p->phase = ++p->ehlo_count == 1 ? ST_EHLO : PH_EHLO2;
        reach(t, ST_EHLO);
    } else if (word_is(s, n, "STARTTLS")) {
        p->phase = ST_TLS;
        reach(t, ST_TLS);
    } else if (word_is(s, n, "AUTH")) {
        p->phase = ST_AUTH;
        p->auth_open = 1;
        reach(t, ST_AUTH);
    } else if (word_is(s, n, "MAIL")) {
        p->phase = ST_SEND;
        p->label = "MAIL FROM";
        reach(t, ST_SEND);
    } else if (word_is(s, n, "RCPT")) {
        p->phase = ST_SEND;
        p->label = "RCPT TO";
    } else if (word_is(s, n, "DATA")) {
        p->phase = ST_SEND;
        p->label = "DATA";
    } else if (p->phase == ST_SEND && p->in_data) {
        /* the end of the message (".") */
    } else {
        p->phase = PH_NONE;
    }
}

static void
on_imap_reply(struct probe *p, const char *s, size_t n)
{
    struct test *t = p->t;
    if (n && s[0] == '+')
        return;
    if (n >= 2 && s[0] == '*' && s[1] == ' ') {
        if (p->phase == p->s_connect && p->fresh) {
            reply_set(t, p->s_connect, s, n);
            const char *w = s + 2;
            size_t wn = n - 2, k = 0;
            while (k < wn && k + 1 < sizeof p->greeting_kind && w[k] != ' ')
                k++;
            memcpy(p->greeting_kind, w, k);
            p->greeting_kind[k] = '\0';
            p->fresh = 0;
        }
        return;
    }
    /* tagged: the reply to our command, without the tag */
    const char *sp = memchr(s, ' ', n);
    const char *r = sp ? sp + 1 : s;
    size_t rn = n - (size_t)(r - s);
    if (p->phase == p->s_auth) {
        p->auth_open = 0;
        p->auth_ok = word_is(r, rn, "OK");
    }
    if (p->phase >= 0)
        reply_set(t, p->phase, r, rn);
    p->fresh = 1;
}

static void
on_smtp_reply(struct probe *p, const char *s, size_t n)
{
    struct test *t = p->t;
    int code = n >= 3 && isdigit((unsigned char)s[0]) &&
                       isdigit((unsigned char)s[1]) &&
                       isdigit((unsigned char)s[2])
                   ? (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0')
                   : 0;
    int more = n > 3 && s[3] == '-';
    if (p->phase == ST_EHLO || p->phase == PH_EHLO2) {
        if (p->fresh) {
            if (p->phase == ST_EHLO)
                reply_set(t, ST_EHLO, s, n);
        } else if (n > 4) {
            text_add(p->caps, CAPS_MAX, ", ", s + 4, n - 4);
        }
        p->fresh = !more;
        if (!more && p->phase == ST_EHLO && p->caps[0]) {
            reply_add(t, ST_EHLO, " (", p->caps, strlen(p->caps));
            reply_add(t, ST_EHLO, NULL, ")", 1);
        }
        return;
    }
    if (p->phase == ST_AUTH && !more && code != 334) {
        p->auth_open = 0;
        p->auth_ok = code == 235;
    }
    if (p->phase >= 0) {
        if (p->fresh && p->phase == ST_SEND) {
            const char *label = p->in_data ? "end of data" : p->label;
            reply_set(t, ST_SEND, label, strlen(label));
            reply_add(t, ST_SEND, ": ", s, n);
        } else if (p->fresh) {
            reply_set(t, p->phase, s, n);
        } else {
            reply_add(t, p->phase, " ", s, n);
        }
    }
    if (p->phase == ST_SEND && code == 354)
        p->in_data = 1;
    p->fresh = !more;
}

/* Calls fn for each line of a trace chunk, without its CR LF. */
static void
each_line(struct probe *p, const char *s, size_t n,
          void (*fn)(struct probe *, const char *, size_t))
{
    while (n) {
        const char *nl = memchr(s, '\n', n);
        size_t k = nl ? (size_t)(nl - s) : n;
        size_t len = k;
        if (len && s[len - 1] == '\r')
            len--;
        if (len)
            fn(p, s, len);
        if (nl == NULL)
            break;
        s += k + 1;
        n -= k + 1;
    }
}

static int
on_debug(CURL *c, curl_infotype type, char *data, size_t size, void *arg)
{
    (void)c;
    struct probe *p = arg;
    switch (type) {
    case CURLINFO_TEXT:
        on_text(p, data, size);
        break;
    case CURLINFO_HEADER_IN:
        each_line(p, data, size, p->imap ? on_imap_reply : on_smtp_reply);
        break;
    case CURLINFO_HEADER_OUT:
        each_line(p, data, size, on_command);
        break;
    default:
        break;
    }
    return 0;
}

static size_t
on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    (void)data;
    (void)arg;
    return size * nmemb; /* untagged IMAP data, SMTP command output */
}

/* ---- running a transfer ---- */

struct target {
    const char *host;
    int port;
    const char *user;
    const char *password;
    enum scheme_tls tls;
    const struct settings *s;
};

static char *
url_of(const char *proto, const char *host, int port, const char *path)
{
    int v6 = strchr(host, ':') != NULL;
    return xasprintf("%s://%s%s%s:%d/%s", proto, v6 ? "[" : "", host,
                     v6 ? "]" : "", port, path);
}

static void
set_common(CURL *c, const struct target *g, struct probe *p, char *errbuf)
{
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(c, CURLOPT_DEBUGFUNCTION, on_debug);
    curl_easy_setopt(c, CURLOPT_DEBUGDATA, p);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_USERNAME, g->user);
    curl_easy_setopt(c, CURLOPT_PASSWORD, g->password);
    curl_easy_setopt(c, CURLOPT_USE_SSL,
                     g->tls == SCHEME_TLS_STARTTLS ? (long)CURLUSESSL_ALL
                                                   : (long)CURLUSESSL_NONE);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (g->s->ca_file && *g->s->ca_file) {
        curl_easy_setopt(c, CURLOPT_CAINFO, g->s->ca_file);
        curl_easy_setopt(c, CURLOPT_CAPATH, SYSTEM_CAPATH);
    }
    long cto = g->s->connect_timeout_s > 0 ? g->s->connect_timeout_s : 10;
    long rto = g->s->smtp_timeout_s > 0 ? g->s->smtp_timeout_s : 30;
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, cto);
    curl_easy_setopt(c, CURLOPT_SERVER_RESPONSE_TIMEOUT, rto);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, cto + 10 * rto);
}

/* The step a libcurl failure belongs to, given how far the trace got. */
static int
failed_step_of(const struct probe *p, CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
        return p->s_connect;
    case CURLE_OPERATION_TIMEDOUT:
        if (!p->connected)
            return p->s_connect;
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return p->s_tls;
    case CURLE_LOGIN_DENIED:
        return p->s_auth;
    default:
        break;
    }
    if (p->phase >= 0)
        return p->phase;
    if (p->phase == PH_EHLO2)
        return ST_EHLO;
    /* after a NOOP / CAPABILITY: the last step reached */
    return p->t->norder ? p->t->order[p->t->norder - 1] : p->s_connect;
}

/* Why libcurl failed, in words, for the failed step's line. */
static void
explain(const struct probe *p, CURLcode rc, const char *errbuf, char *out,
        size_t n)
{
    if (rc == CURLE_OPERATION_TIMEDOUT && p->connected)
        snprintf(out, n, "no reply in time (%s)",
                 *errbuf ? errbuf : curl_easy_strerror(rc));
    else if (rc == CURLE_USE_SSL_FAILED)
        snprintf(out, n,
                 "the server does not offer STARTTLS (tls starttls "
                 "requires it)");
    else
        snprintf(out, n, "%s", *errbuf ? errbuf : curl_easy_strerror(rc));
}

/* Runs one prepared transfer (IMAP) and records the outcome in p->t. */
static void
perform(CURL *c, struct probe *p, char *errbuf)
{
    CURLcode rc = curl_easy_perform(c);
    struct test *t = p->t;
    if (rc == CURLE_OK) {
        if (!p->auth_ok &&
            !(p->imap && strcmp(p->greeting_kind, "PREAUTH") == 0)) {
            const char *why =
                p->imap ? "the server did not take a login"
                        : "the server did not offer AUTH (no AUTH in its EHLO "
                          "reply), so the credentials were not tried";
            fail_step(t, p->s_auth, why);
        }
        return;
    }
    char why[CURL_ERROR_SIZE + 96];
    explain(p, rc, errbuf, why, sizeof why);
    int step = failed_step_of(p, rc);
    if (rc == CURLE_LOGIN_DENIED && t->st[step].reply[0] && !p->auth_open)
        why[0] = '\0'; /* the server's reply says it all */
    fail_step(t, step, why);
}

static void
probe_init(struct probe *p, struct test *t, int imap, enum scheme_tls tls)
{
    memset(p, 0, sizeof *p);
    p->t = t;
    p->imap = imap;
    p->tls = tls;
    p->s_connect = imap ? ST_IMAP_CONNECT : ST_CONNECT;
    p->s_tls = imap ? ST_IMAP_TLS : ST_TLS;
    p->s_auth = imap ? ST_IMAP_LOGIN : ST_AUTH;
    p->phase = p->s_connect;
    p->fresh = 1;
}

static char *
test_message(const struct scheme *sc, const char *to)
{
    unsigned char rnd[16];
    char hex[33];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (unsigned char)(clock_now_ms() >> (i % 8));
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    char id[48];
    snprintf(id, sizeof id, "test-%s", hex);
    const char *at = strrchr(sc->email, '@');
    char *msgid = mime_message_id(id, at ? at + 1 : "invalid");
    char date[40];
    clock_rfc5322(clock_now_ms(), date);
    char *m = xasprintf(
        "From: <%s>\r\n"
        "To: <%s>\r\n"
        "Subject: Herald test message for %s / %s\r\n"
        "Date: %s\r\n"
        "Message-ID: %s\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "Auto-Submitted: auto-generated\r\n"
        "\r\n"
        "This is a test message from Herald for the Email Sending Scheme of\r\n"
        "%s / %s, sent through %s:%d.\r\n"
        "\r\n"
        "If you received it, the scheme can send mail. No reply is needed.\r\n",
        sc->email, to, sc->org, sc->email, date, msgid, sc->org, sc->email,
        sc->smtp_host, sc->smtp_port);
    free(msgid);
    return m;
}

/* ---- SMTP: the worker's own client (io/mailer.c) ---- */

struct smtp_run {
    struct probe *p;
    int done;
    enum mail_class cls;
    int no_auth, no_tls;
    char reply[MAILER_REPLY_MAX];
};

static void
on_trace(struct mail_req *req, enum mail_trace kind, const char *s, size_t n)
{
    struct smtp_run *run = req->ud;
    struct probe *p = run->p;
    switch (kind) {
    case MAIL_TRACE_CONNECTED:
        probe_connected(p);
        break;
    case MAIL_TRACE_TLS: /* the mailer always verifies */
        probe_tls(p, s, n);
        reply_add(p->t, p->s_tls, ", ", "certificate verified", 20);
        break;
    case MAIL_TRACE_OUT:
        on_command(p, s, n);
        break;
    case MAIL_TRACE_IN:
        on_smtp_reply(p, s, n);
        break;
    }
}

static void
on_smtp_done(struct mail_req *req, const struct mail_result *r)
{
    struct smtp_run *run = req->ud;
    run->done = 1;
    run->cls = r->cls;
    run->no_auth = r->no_auth;
    run->no_tls = r->no_tls;
    snprintf(run->reply, sizeof run->reply, "%s", r->reply);
}

static void
on_mailer_closed(void *ud)
{
    *(int *)ud = 1;
}

/* The session a delivery to the scheme would have -- the worker's SMTP
 * client, URL, TLS rule, EHLO name, timeouts and AUTH mechanisms -- on a
 * loop of its own; with send_to a real transaction, else it ends once
 * logged in. */
static void
run_smtp(struct test *t, const struct scheme *sc, const char *password,
         const char *send_to, const struct settings *s)
{
    struct probe p;
    probe_init(&p, t, 0, sc->tls);
    char helo[256];
    int named = settings_helo_name(s, helo, sizeof helo);
    uv_loop_t loop;
    struct mailer *m = NULL;
    struct mailer_opts o = {
        .connect_timeout_s =
            s->connect_timeout_s > 0 ? s->connect_timeout_s : 10,
        .step_timeout_s = s->smtp_timeout_s > 0 ? s->smtp_timeout_s : 30,
        .ca_file = s->ca_file && *s->ca_file ? s->ca_file : NULL,
        .helo = named ? helo : NULL, /* else the address literal, as the
                                        worker's */
        .max_conns = 1,
        .max_busy = 1,
    };
    if (uv_loop_init(&loop) != 0) {
        fail_step(t, ST_CONNECT, "could not set up an event loop");
        return;
    }
    if (mailer_new(&loop, &o, &m) != 0) {
        fail_step(t, ST_CONNECT, "could not set up the SMTP client (TLS)");
        uv_loop_close(&loop);
        return;
    }
    struct smtp_run run = {.p = &p};
    struct mail_req req;
    memset(&req, 0, sizeof req);
    enum mail_tls tls;
    char *url = mailer_scheme_url(sc, &tls);
    char *msg = send_to ? test_message(sc, send_to) : NULL;
    const char *rcpt[1] = {send_to};
    req.url = url;
    req.tls = tls;
    req.user = sc->username;
    req.password = password;
    req.mail_from = sc->email;
    req.rcpt = rcpt;
    req.nrcpt = send_to ? 1 : 0;
    req.data = msg;
    req.len = msg ? strlen(msg) : 0;
    req.login_only = send_to == NULL;
    req.trace = on_trace;
    req.done = on_smtp_done;
    req.ud = &run;
    if (mailer_send(m, &req) != 0) {
        fail_step(t, ST_CONNECT, "the scheme's SMTP address is not usable");
        run.done = 1;
        run.cls = MAIL_OK;
    }
    while (!run.done)
        uv_run(&loop, UV_RUN_ONCE);
    int closed = 0;
    mailer_close(m, on_mailer_closed, &closed);
    while (!closed)
        uv_run(&loop, UV_RUN_ONCE);
    uv_run(&loop, UV_RUN_NOWAIT); /* the handles' close callbacks */
    (void)uv_loop_close(&loop);
    free(msg);
    free(url);
    if (run.cls == MAIL_OK)
        return;
    int step;
    if (!p.connected)
        step = ST_CONNECT;
    else if (run.no_tls)
        step = ST_TLS;
    else if (run.no_auth)
        step = ST_AUTH;
    else if (p.phase >= 0)
        step = p.phase;
    else if (p.phase == PH_EHLO2)
        step = ST_EHLO;
    else
        step = t->norder ? t->order[t->norder - 1] : ST_CONNECT;
    fail_step(t, step, run.reply);
}

static void
run_imap(struct test *t, const struct scheme *sc, const char *password,
         const struct settings *s)
{
    struct target g = {sc->imap_host, sc->imap_port, sc->username,
                       password,      sc->tls,       s};
    struct probe p;
    probe_init(&p, t, 1, sc->tls);
    char errbuf[CURL_ERROR_SIZE] = {0};
    char *url = url_of(sc->tls == SCHEME_TLS_SSL ? "imaps" : "imap",
                       sc->imap_host, sc->imap_port, "");
    CURL *c = curl_easy_init();
    if (c == NULL) {
        fail_step(t, ST_IMAP_CONNECT, "libcurl could not be initialised");
        free(url);
        return;
    }
    set_common(c, &g, &p, errbuf);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "imap,imaps");
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "NOOP");
    perform(c, &p, errbuf);
    curl_easy_cleanup(c);
    free(url);
}

/* ---- output ---- */

static void
print_steps(const struct test *t, const int *shown, FILE *f)
{
    for (int i = 0; i < t->norder; i++) {
        int k = t->order[i];
        if (shown[k])
            continue;
        const struct step_rec *r = &t->st[k];
        char *reply = ctl_cell(r->reply, 0); /* what the server said */
        fprintf(f, "%-*s %-6s %s\n", STEP_WIDTH, step_names[k],
                r->failed ? "FAILED" : "ok", reply);
        free(reply);
    }
}

/* ---- the command ---- */

int
ctl_scheme_test(struct ctl *c, int argc, char **argv)
{
    const char *org = NULL, *email = NULL, *send_to = NULL;
    const struct ctl_opt opts[] = {{"--org", 1, &org, NULL},
                                   {"--email", 1, &email, NULL},
                                   {"--send-to", 1, &send_to, NULL},
                                   {NULL, 0, NULL, NULL}};
    char **pos = xcalloc((size_t)argc + 1, sizeof *pos);
    int npos, code = ctl_parse("scheme test", argc, argv, opts, pos, &npos);
    if (code == CTL_OK && npos > 0)
        code = ctl_usage_error("scheme test: unexpected argument '%s'", pos[0]);
    free(pos);
    if (code)
        return code;
    if (org == NULL)
        return ctl_usage_error("--org: required");
    if (email == NULL)
        return ctl_usage_error("--email: required");
    if (send_to && !job_valid_email(send_to))
        return ctl_usage_error("--send-to: '%.80s' is not an address", send_to);
    struct herald *h = ctl_herald(c, &code);
    if (h == NULL)
        return code;

    struct herr e = {{0}, {0}};
    struct scheme *sc = NULL;
    int rc = herald_scheme_get(h, org, email, &sc, &e);
    if (rc) {
        if (strcmp(e.field, "email") == 0 || strcmp(e.field, "org") == 0) {
            snprintf(e.field, sizeof e.field, "%s",
                     e.field[0] == 'o' ? "--org" : "--email");
        }
        return ctl_fail("scheme test", rc == HERR_NOTFOUND ? HERR_INVALID : rc,
                        &e);
    }
    struct seal_key *key = NULL;
    rc = herald_key_load(c->s.secret_key_file, "HERALD_SECRET_KEY_FILE", &key,
                         &e);
    if (rc) {
        scheme_free(sc);
        return ctl_fail("key", rc, &e);
    }
    unsigned w = seal_key_warnings(key);
    for (unsigned bit = 1; bit && bit <= w; bit <<= 1)
        if (w & bit)
            log_msg(LOG_WARN, seal_warning_str(bit), "field",
                    "HERALD_SECRET_KEY_FILE", NULL);
    char aad[SCHEME_AAD_MAX], field[SCHEME_FIELD_MAX];
    scheme_aad(aad, sizeof aad, sc->org, sc->email);
    scheme_field(field, sizeof field, sc->org, sc->email);
    char *password = NULL;
    size_t plen = 0;
    const struct seal_key *keys[1] = {key};
    rc = seal_open(keys, 1, sc->password, aad, &password, &plen, &e);
    seal_key_free(key);
    if (rc == 0 && (plen == 0 || memchr(password, '\0', plen))) {
        seal_free_secret(password, plen);
        password = NULL;
        rc = herr_set(&e, HERR_INVALID, "",
                      "the stored password is empty or "
                      "holds a NUL byte");
    }
    if (rc) {
        struct herr f = {{0}, {0}};
        herr_set(&f, HERR_INVALID, "HERALD_SECRET_KEY_FILE",
                 "the password of scheme %s does not open with this key: %s",
                 field, e.msg);
        scheme_free(sc);
        return ctl_fail("scheme test", HERR_INVALID, &f);
    }

    char *fieldc = ctl_cell(field, 0), *smtp = ctl_cell(sc->smtp_host, 0);
    char *imap = ctl_cell(sc->imap_host, 0), *user = ctl_cell(sc->username, 0);
    printf("scheme test %s\n", fieldc);
    printf("  smtp %s:%d, tls %s", smtp, sc->smtp_port,
           scheme_tls_name(sc->tls));
    if (sc->imap_host)
        printf("; imap %s:%d", imap, sc->imap_port);
    printf("; user %s", user);
    if (send_to)
        printf("; test message to %s", send_to);
    printf("\n");
    free(fieldc);
    free(smtp);
    free(imap);
    free(user);
    if (sc->state == SCHEME_STATE_AUTH_FAILED) {
        char at[32];
        ctl_time(sc->state_at, at);
        char *why = ctl_cell(sc->state_reason, 200);
        printf("  state auth_failed since %s: %s\n", at, why);
        free(why);
    }
    fflush(stdout);

    struct test t;
    memset(&t, 0, sizeof t);
    t.failed_step = -1;
    int shown[ST_COUNT] = {0};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    run_smtp(&t, sc, password, send_to, &c->s);
    print_steps(&t, shown, stdout);
    for (int i = 0; i < t.norder; i++)
        shown[t.order[i]] = 1;
    fflush(stdout);
    if (t.failed_step < 0 && sc->imap_host) {
        run_imap(&t, sc, password, &c->s);
        print_steps(&t, shown, stdout);
    }
    seal_free_secret(password, plen);
    curl_global_cleanup();

    if (t.failed_step >= 0) {
        const char *name = step_names[t.failed_step];
        printf("FAILED at step '%s'\n", name);
        char *reply = util_escaped(t.st[t.failed_step].reply);
        char *msg = xasprintf("scheme test %s failed at step '%s': %s", field,
                              name, reply);
        free(reply);
        log_msg(LOG_ERROR, msg, "scheme", field, "step", name, NULL);
        free(msg);
        scheme_free(sc);
        return CTL_FAIL;
    }
    int cleared = 0;
    rc = herald_scheme_clear_failure(h, sc, &cleared, &e);
    scheme_free(sc);
    printf("every step passed\n");
    if (rc) {
        fflush(stdout);
        return ctl_fail("scheme test: clearing the auth_failed mark", rc, &e);
    }
    if (cleared)
        printf("auth_failed mark cleared: the scheme is ok again\n");
    return CTL_OK;
}
