/*
 * herald-api — the Message Center over HTTP (SPEC §9). libmicrohttpd
 * serves it (its own thread pool, API_THREADS threads); each thread keeps
 * one libherald handle (Redis for tokens and resends, the store of
 * HERALD_MC), opened on its first request and closed when the thread
 * ends. routes.c answers; this file is the server and the program.
 */
#include "clock.h"
#include "err.h"
#include "herald.h"
#include "log.h"
#include "metrics.h"
#include "routes.h"
#include "settings.h"
#include "util.h"

#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define API_THREADS 4
#define API_CONN_MEMORY (64 * 1024) /* per connection: headers, URL */
#define API_TIMEOUT_S 30

static const struct settings *g_settings;
static pthread_key_t g_handle_key;
static volatile sig_atomic_t g_stop;

static void
handle_free(void *p)
{
    herald_close(p);
}

/* The calling thread's handle (lazy: Redis on first use). */
static struct herald *
thread_handle(void)
{
    struct herald *h = pthread_getspecific(g_handle_key);
    if (h == NULL) {
        struct herr e = {{0}, {0}};
        if (herald_open_ex(g_settings, HERALD_OPEN_LAZY, &h, &e) != 0)
            return NULL;
        pthread_setspecific(g_handle_key, h);
    }
    return h;
}

/* One request in progress: its body as it arrives. */
struct pending {
    struct buf body;
    int too_big;
    struct timespec t0;
};

struct param_list {
    struct api_param v[API_PARAMS_MAX + 1];
    size_t n;
};

static enum MHD_Result
collect_param(void *cls, enum MHD_ValueKind kind, const char *key,
              const char *value)
{
    (void)kind;
    struct param_list *l = cls;
    if (l->n > API_PARAMS_MAX)
        return MHD_NO; /* more than allowed: api_params_list says so */
    l->v[l->n].key = key;
    l->v[l->n].value = value;
    l->n++;
    return MHD_YES;
}

static double
since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) +
           (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static enum MHD_Result
send_resp(struct MHD_Connection *c, struct api_resp *rs)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        rs->body.len, rs->body.p ? rs->body.p : (char *)"",
        MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type",
                            rs->content_type ? rs->content_type
                                             : "application/json");
    int cache_set = 0;
    for (const char *const *x = rs->headers; x && x[0]; x += 2) {
        MHD_add_response_header(r, x[0], x[1]);
        cache_set |= strcasecmp(x[0], "Cache-Control") == 0;
    }
    if (!cache_set)
        MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (rs->allow)
        MHD_add_response_header(r, "Allow", rs->allow);
    if (rs->status == 401)
        MHD_add_response_header(r, "WWW-Authenticate",
                                "Bearer realm=\"herald\"");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)rs->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url,
           const char *method, const char *version, const char *upload,
           size_t *upload_size, void **req_cls)
{
    (void)cls;
    (void)version;
    struct pending *p = *req_cls;
    if (p == NULL) {
        p = xcalloc(1, sizeof *p);
        buf_init(&p->body, API_BODY_MAX);
        clock_gettime(CLOCK_MONOTONIC, &p->t0);
        *req_cls = p;
        return MHD_YES;
    }
    if (*upload_size) {
        if (buf_append(&p->body, upload, *upload_size) != 0)
            p->too_big = 1;
        *upload_size = 0;
        return MHD_YES;
    }
    struct api_resp rs = {0};
    buf_init(&rs.body, 0);
    enum api_route route = API_R_OTHER;
    struct param_list params = {.n = 0};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_param, &params);
    if (p->too_big) {
        rs.status = 413;
        rs.content_type = "application/json";
        buf_puts(&rs.body, "{\"error\":\"the body is over 65536 bytes\"}\n");
    } else {
        struct herald *h = thread_handle();
        struct api_req rq = {
            .method = method,
            .path = url,
            .authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                         "Authorization"),
            .params = params.v,
            .nparams = params.n,
            .body = p->body.p,
            .bodylen = p->body.len,
        };
        if (h == NULL) {
            rs.status = 500;
            rs.content_type = "application/json";
            buf_puts(&rs.body, "{\"error\":\"cannot open a handle\"}\n");
        } else {
            api_handle(h, &rq, &rs, &route);
        }
    }
    enum MHD_Result ret = send_resp(c, &rs);
    api_metrics_count(route, rs.status, since(&p->t0));
    if (rs.status >= 500 || log_enabled(LOG_DEBUG)) {
        char st[16];
        snprintf(st, sizeof st, "%d", rs.status);
        log_msg(rs.status >= 500 ? LOG_WARN : LOG_DEBUG, "request", "method",
                method, "route", api_route_name(route), "status", st, NULL);
    }
    buf_free(&rs.body);
    return ret;
}

static void
on_done(void *cls, struct MHD_Connection *c, void **req_cls,
        enum MHD_RequestTerminationCode code)
{
    (void)cls;
    (void)c;
    (void)code;
    struct pending *p = *req_cls;
    if (p) {
        buf_free(&p->body);
        free(p);
        *req_cls = NULL;
    }
}

/* Requests too malformed for a handler (a URL over the connection's
 * memory, bad HTTP) are refused by libmicrohttpd itself with a 4xx. */
static void
on_mhd_error(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_msg(LOG_DEBUG, "http", "detail", msg, NULL);
}

static void
on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void
usage(FILE *f)
{
    fputs("Usage: herald-api [settings] [--print-config] [--help] "
          "[--version]\n\n"
          "Serves the Message Center of HERALD_MC over HTTP on "
          "HERALD_API_LISTEN:\nthe JSON API of SPEC §9, with bearer tokens "
          "(heraldctl token create).\nStops on SIGTERM or SIGINT.\n\n",
          f);
    settings_usage(f);
}

int
main(int argc, char **argv)
{
    struct settings s;
    struct herr e = {{0}, {0}};
    int code = settings_main(&s, "herald-api", argc, argv, usage);
    if (code >= 0)
        return code;
    log_init("herald-api", s.log_level);
    g_settings = &s;
    pthread_key_create(&g_handle_key, handle_free);

    /* the store answers (and its schema exists) before we listen */
    struct herald *probe = NULL;
    if (herald_open_ex(&s, HERALD_OPEN_LAZY, &probe, &e) == 0) {
        struct mc_record *r = NULL;
        int rc = herald_mc_get(probe, "herald-start-probe", &r, &e);
        mc_record_free(r);
        if (rc != 0 && rc != HERR_NOTFOUND) {
            char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
            herr_format(&e, why, sizeof why);
            log_msg(LOG_FATAL, "cannot open the message center", "error", why,
                    NULL);
            herald_close(probe);
            settings_free(&s);
            return 1;
        }
        herald_close(probe);
    }

    struct sockaddr_storage ss;
    socklen_t sl;
    settings_parse_listen(s.api_listen, &ss, &sl); /* checked by settings */
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)API_THREADS,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)API_CONN_MEMORY,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)API_TIMEOUT_S,
        MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL, MHD_OPTION_EXTERNAL_LOGGER,
        on_mhd_error, NULL, MHD_OPTION_END);
    if (d == NULL) {
        log_msg(LOG_FATAL, "cannot listen", "address", s.api_listen, NULL);
        settings_free(&s);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    log_msg(LOG_INFO, "herald-api listening", "address", s.api_listen,
            "version", HERALD_VERSION, NULL);
    while (!g_stop)
        pause();
    log_msg(LOG_INFO, "herald-api stopping", NULL);
    MHD_stop_daemon(d); /* the pool's threads end: their handles close */
    pthread_key_delete(g_handle_key);
    settings_free(&s);
    return 0;
}
