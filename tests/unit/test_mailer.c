/*
 * io/mailer.c's SMTP sessions, command by command, against a scripted
 * server: a thread with a plain socket on loopback that answers each line
 * as the test says and records every line it receives. What the worker's
 * transport sends is checked exactly: pipelining in one write, a server
 * that takes two recipients per message (452 4.5.3) getting the rest in
 * the next transaction of the same session, AUTH LOGIN's exchange, a
 * login-only session and its trace, QUIT when the mailer closes.
 */
#include "../../common/util.h"
#include "../../io/mailer.h"
#include "t.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define LINES_MAX 64

/* ---- the scripted server ---- */

struct server {
    int lfd, port;
    const char *ehlo; /* the EHLO reply, whole (CRLF lines) */
    int rcpt_per_msg; /* 0: any; else 452 4.5.3 past that many */
    pthread_t th;
    char *got[LINES_MAX]; /* lines received (the message's body not) */
    int ngot;
    int writes_with_mail; /* how many lines came in the read with MAIL */
    int stuffed;          /* a body line came dot-stuffed ("..") */
};

static void
say(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void *
serve(void *arg)
{
    struct server *sv = arg;
    int fd = accept(sv->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    say(fd, "220 test.example ESMTP\r\n");
    char buf[65536];
    size_t have = 0;
    int in_data = 0, rcpts = 0, auth_step = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, sizeof buf - have - 1);
        if (r <= 0)
            break;
        have += (size_t)r;
        buf[have] = '\0';
        int lines_this_read = 0, saw_mail = 0;
        char *p = buf, *nl;
        while ((nl = strstr(p, "\r\n")) != NULL) {
            *nl = '\0';
            char *line = p;
            p = nl + 2;
            if (in_data) {
                if (strncmp(line, "..", 2) == 0)
                    sv->stuffed = 1;
                if (strcmp(line, ".") == 0) {
                    in_data = 0;
                    say(fd, "250 2.0.0 Ok: queued\r\n");
                }
                continue;
            }
            lines_this_read++;
            if (sv->ngot < LINES_MAX)
                sv->got[sv->ngot++] = xstrdup(line);
            if (auth_step == 1) {
                auth_step = 2;
                say(fd, "334 UGFzc3dvcmQ6\r\n");
            } else if (auth_step == 2) {
                auth_step = 0;
                say(fd, "235 2.7.0 Authentication successful\r\n");
            } else if (strncmp(line, "EHLO", 4) == 0) {
                say(fd, sv->ehlo);
            } else if (strncmp(line, "AUTH PLAIN ", 11) == 0) {
                say(fd, "235 2.7.0 Authentication successful\r\n");
            } else if (strcmp(line, "AUTH LOGIN") == 0) {
                auth_step = 1;
                say(fd, "334 VXNlcm5hbWU6\r\n");
            } else if (strncmp(line, "MAIL", 4) == 0) {
                rcpts = 0;
                saw_mail = 1;
                say(fd, "250 2.1.0 Ok\r\n");
            } else if (strncmp(line, "RCPT", 4) == 0) {
                if (sv->rcpt_per_msg && rcpts >= sv->rcpt_per_msg) {
                    say(fd, "452 4.5.3 Error: too many recipients\r\n");
                } else {
                    rcpts++;
                    say(fd, "250 2.1.5 Ok\r\n");
                }
            } else if (strcmp(line, "DATA") == 0) {
                in_data = 1;
                say(fd, "354 End data with <CR><LF>.<CR><LF>\r\n");
            } else if (strcmp(line, "QUIT") == 0) {
                say(fd, "221 2.0.0 Bye\r\n");
                close(fd);
                return NULL;
            } else if (strcmp(line, "RSET") == 0) {
                say(fd, "250 2.0.0 Ok\r\n");
            } else {
                say(fd, "502 5.5.2 Error: command not recognized\r\n");
            }
        }
        if (saw_mail && sv->writes_with_mail == 0)
            sv->writes_with_mail = lines_this_read;
        have = strlen(p);
        memmove(buf, p, have);
    }
    close(fd);
    return NULL;
}

static void
server_start(struct server *sv, const char *ehlo, int rcpt_per_msg)
{
    memset(sv, 0, sizeof *sv);
    sv->ehlo = ehlo;
    sv->rcpt_per_msg = rcpt_per_msg;
    sv->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (sv->lfd < 0 || bind(sv->lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(sv->lfd, 1) != 0 ||
        getsockname(sv->lfd, (struct sockaddr *)&a, &al) != 0)
        abort();
    sv->port = ntohs(a.sin_port);
    pthread_create(&sv->th, NULL, serve, sv);
}

static void
server_join(struct server *sv)
{
    pthread_join(sv->th, NULL);
    close(sv->lfd);
}

static void
server_free(struct server *sv)
{
    for (int i = 0; i < sv->ngot; i++)
        free(sv->got[i]);
}

/* The lines received, "|"-joined, for one comparison. */
static char *
joined(char *const *v, int n)
{
    struct buf b;
    buf_init(&b, 0);
    for (int i = 0; i < n; i++) {
        if (i)
            buf_puts(&b, "|");
        buf_puts(&b, v[i]);
    }
    return buf_take(&b, NULL);
}

/* ---- one request through a mailer ---- */

struct run {
    int done, closed;
    struct mail_result res;
    struct mail_rcpt_result rcpt[8];
    char *trace[LINES_MAX];
    int ntrace;
};

static void
on_done(struct mail_req *req, const struct mail_result *r)
{
    struct run *run = req->ud;
    run->done = 1;
    run->res = *r;
    for (size_t i = 0; i < r->nrcpt && i < 8; i++)
        run->rcpt[i] = r->rcpt[i];
}

static void
on_trace(struct mail_req *req, enum mail_trace kind, const char *s, size_t n)
{
    struct run *run = req->ud;
    static const char *const tag[] = {"connected", "tls", ">", "<"};
    char *line = xasprintf("%s %.*s", tag[kind], (int)n, s);
    if (kind == MAIL_TRACE_CONNECTED) {
        free(line);
        line = xstrdup("connected");
    }
    if (run->ntrace < LINES_MAX)
        run->trace[run->ntrace++] = line;
    else
        free(line);
}

static void
on_closed(void *ud)
{
    ((struct run *)ud)->closed = 1;
}

static void
send_one(struct mail_req *req, struct run *run)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct mailer_opts o = {.connect_timeout_s = 5,
                            .step_timeout_s = 5,
                            .helo = "client.example",
                            .max_conns = 1,
                            .max_busy = 1};
    struct mailer *m = NULL;
    CHECK(mailer_new(&loop, &o, &m) == 0);
    req->done = on_done;
    req->ud = run;
    CHECK(mailer_send(m, req) == 0);
    while (!run->done)
        uv_run(&loop, UV_RUN_ONCE);
    mailer_close(m, on_closed, run); /* QUIT on the idle connection */
    while (!run->closed)
        uv_run(&loop, UV_RUN_ONCE);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&loop) == 0);
}

static const char PIPELINING_EHLO[] = "250-test.example\r\n"
                                      "250-PIPELINING\r\n"
                                      "250-SIZE 10240000\r\n"
                                      "250 8BITMIME\r\n";

/* Three recipients to a server that takes two per message: one request,
 * two transactions back to back in one session, every recipient once;
 * with PIPELINING, MAIL, the RCPTs and DATA go in one write. */
static void
test_pipelined_and_452_rounds(void)
{
    struct server sv;
    server_start(&sv, PIPELINING_EHLO, 2);
    char url[64];
    snprintf(url, sizeof url, "smtp://127.0.0.1:%d", sv.port);
    const char *rcpt[3] = {"a@x.example", "b@x.example", "c@x.example"};
    struct mail_req req;
    memset(&req, 0, sizeof req);
    req.url = url;
    req.tls = MAIL_TLS_NONE;
    req.mail_from = "org@camp.example";
    req.rcpt = rcpt;
    req.nrcpt = 3;
    req.data = "Subject: hi\r\n\r\n.starts with a dot\r\nbye\r\n";
    req.len = strlen(req.data);
    struct run run;
    memset(&run, 0, sizeof run);
    send_one(&req, &run);
    server_join(&sv);
    char *got = joined(sv.got, sv.ngot);
    /* SIZE: the message as given (the stuffed dot not counted) */
    CHECK_STR(got, "EHLO client.example|MAIL FROM:<org@camp.example> "
                   "SIZE=40|RCPT TO:<a@x.example>|RCPT TO:<b@x.example>|"
                   "RCPT TO:<c@x.example>|DATA|MAIL FROM:<org@camp.example> "
                   "SIZE=40|RCPT TO:<c@x.example>|DATA|QUIT");
    free(got);
    CHECK_MSG(sv.writes_with_mail == 5, "MAIL came with %d lines",
              sv.writes_with_mail);
    CHECK(sv.stuffed); /* ".starts with a dot" went as "..starts" */
    CHECK(run.res.cls == MAIL_OK && run.res.transactions == 2);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(run.rcpt[i].code == 250, "rcpt %d: %d %s", i,
                  run.rcpt[i].code, run.rcpt[i].reply);
    server_free(&sv);
}

/* Without PIPELINING each command waits for its reply; AUTH LOGIN (a
 * loopback server may have it in plain text) sends the user and the
 * password, and the trace never shows them. */
static void
test_lockstep_auth_login_and_trace(void)
{
    struct server sv;
    server_start(&sv, "250-test.example\r\n250 AUTH LOGIN\r\n", 0);
    char url[64];
    snprintf(url, sizeof url, "smtp://127.0.0.1:%d", sv.port);
    const char *rcpt[1] = {"a@x.example"};
    struct mail_req req;
    memset(&req, 0, sizeof req);
    req.url = url;
    req.tls = MAIL_TLS_NONE;
    req.user = "camp-user";
    req.password = "s3cret-pw";
    req.mail_from = "org@camp.example";
    req.rcpt = rcpt;
    req.nrcpt = 1;
    req.data = "Subject: hi\r\n\r\nbody\r\n";
    req.len = strlen(req.data);
    req.trace = on_trace;
    struct run run;
    memset(&run, 0, sizeof run);
    send_one(&req, &run);
    server_join(&sv);
    char *got = joined(sv.got, sv.ngot);
    /* base64 of the user and the password */
    CHECK_STR(got, "EHLO client.example|AUTH LOGIN|Y2FtcC11c2Vy|czNjcmV0LXB3|"
                   "MAIL FROM:<org@camp.example>|RCPT TO:<a@x.example>|DATA|"
                   "QUIT");
    free(got);
    CHECK(sv.writes_with_mail == 1);
    CHECK(run.res.cls == MAIL_OK && run.res.auth_ok && run.res.transactions);
    char *tr = joined(run.trace, run.ntrace);
    CHECK(strstr(tr, "Y2FtcC11c2Vy") == NULL &&
          strstr(tr, "czNjcmV0") == NULL && strstr(tr, "s3cret") == NULL);
    CHECK_STR(tr, "connected|< 220 test.example ESMTP|> EHLO client.example|"
                  "< 250-test.example|< 250 AUTH LOGIN|> AUTH LOGIN|"
                  "< 334 VXNlcm5hbWU6|< 334 UGFzc3dvcmQ6|"
                  "< 235 2.7.0 Authentication successful|"
                  "> MAIL FROM:<org@camp.example>|< 250 2.1.0 Ok|"
                  "> RCPT TO:<a@x.example>|< 250 2.1.5 Ok|> DATA|"
                  "< 354 End data with <CR><LF>.<CR><LF>|> .|"
                  "< 250 2.0.0 Ok: queued"); /* the request's trace ends
                                                with it; QUIT is the idle
                                                connection's */
    free(tr);
    for (int i = 0; i < run.ntrace; i++)
        free(run.trace[i]);
    server_free(&sv);
}

/* A login-only request (heraldctl scheme test without --send-to): the
 * session is set up and logged in, no MAIL; a server without AUTH fails
 * it with no_auth, having been sent nothing but EHLO and QUIT. */
static void
test_login_only(void)
{
    struct server sv;
    server_start(&sv, "250-test.example\r\n250 AUTH LOGIN PLAIN\r\n", 0);
    char url[64];
    snprintf(url, sizeof url, "smtp://127.0.0.1:%d", sv.port);
    struct mail_req req;
    memset(&req, 0, sizeof req);
    req.url = url;
    req.tls = MAIL_TLS_NONE;
    req.user = "u";
    req.password = "p";
    req.login_only = 1;
    struct run run;
    memset(&run, 0, sizeof run);
    send_one(&req, &run);
    server_join(&sv);
    CHECK(run.res.cls == MAIL_OK && run.res.auth_ok && !run.res.no_auth);
    CHECK(sv.ngot == 3 && strncmp(sv.got[1], "AUTH PLAIN ", 11) == 0 &&
          strcmp(sv.got[2], "QUIT") == 0);
    server_free(&sv);

    server_start(&sv, "250-test.example\r\n250 8BITMIME\r\n", 0);
    snprintf(url, sizeof url, "smtp://127.0.0.1:%d", sv.port);
    memset(&run, 0, sizeof run);
    send_one(&req, &run);
    server_join(&sv);
    CHECK(run.res.cls == MAIL_TEMP && run.res.no_auth && !run.res.auth_ok);
    CHECK(strstr(run.res.reply, "did not offer AUTH") != NULL);
    char *got = joined(sv.got, sv.ngot);
    CHECK_MSG(strcmp(got, "EHLO client.example") == 0 ||
                  strcmp(got, "EHLO client.example|QUIT") == 0,
              "got %s", got);
    free(got);
    server_free(&sv);
}

int
main(void)
{
    alarm(60); /* a session that never ends fails the test, not the run */
    test_pipelined_and_452_rounds();
    test_lockstep_auth_login_and_trace();
    test_login_only();
    return T_DONE("test_mailer");
}
