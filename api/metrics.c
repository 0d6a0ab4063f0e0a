#include "metrics.h"

#include <stdatomic.h>
#include <stdio.h>

static const char *const route_names[API_R_COUNT] = {
    "messages",     "message", "resend",  "inbox",
    "suppressions", "healthz", "metrics", "other"};

/* The codes herald-api answers; anything else is counted as "other". */
static const int codes[] = {200, 202, 400, 401, 403, 404, 405,
                            409, 413, 414, 500, 501, 503};
#define NCODES (sizeof codes / sizeof codes[0])

static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                0.1,   0.25,   0.5,   1,    2.5,   5};
#define NBOUNDS (sizeof bounds / sizeof bounds[0])

static _Atomic unsigned long long requests[API_R_COUNT][NCODES + 1];
static _Atomic unsigned long long buckets[API_R_COUNT][NBOUNDS + 1];
static _Atomic unsigned long long micros[API_R_COUNT]; /* sum, in µs */

const char *
api_route_name(enum api_route r)
{
    return r < API_R_COUNT ? route_names[r] : "other";
}

void
api_metrics_count(enum api_route route, int code, double seconds)
{
    if (route >= API_R_COUNT)
        route = API_R_OTHER;
    size_t c = NCODES;
    for (size_t i = 0; i < NCODES; i++)
        if (codes[i] == code)
            c = i;
    atomic_fetch_add(&requests[route][c], 1);
    size_t b = NBOUNDS;
    for (size_t i = 0; i < NBOUNDS; i++)
        if (seconds <= bounds[i]) {
            b = i;
            break;
        }
    atomic_fetch_add(&buckets[route][b], 1);
    atomic_fetch_add(&micros[route], (unsigned long long)(seconds * 1e6 + 0.5));
}

void
api_metrics_text(struct buf *out)
{
    buf_puts(out, "# HELP herald_api_requests_total Requests answered, by "
                  "route and status code.\n"
                  "# TYPE herald_api_requests_total counter\n");
    for (int r = 0; r < API_R_COUNT; r++)
        for (size_t c = 0; c <= NCODES; c++) {
            unsigned long long n = atomic_load(&requests[r][c]);
            if (n == 0)
                continue;
            char code[16];
            if (c < NCODES)
                snprintf(code, sizeof code, "%d", codes[c]);
            else
                snprintf(code, sizeof code, "other");
            buf_printf(out,
                       "herald_api_requests_total{route=\"%s\",code=\"%s\"} "
                       "%llu\n",
                       route_names[r], code, n);
        }
    buf_puts(out, "# HELP herald_api_request_duration_seconds Time to "
                  "answer a request, by route.\n"
                  "# TYPE herald_api_request_duration_seconds histogram\n");
    for (int r = 0; r < API_R_COUNT; r++) {
        unsigned long long cum = 0;
        for (size_t b = 0; b <= NBOUNDS; b++) {
            cum += atomic_load(&buckets[r][b]);
            if (b < NBOUNDS)
                buf_printf(out,
                           "herald_api_request_duration_seconds_bucket{route="
                           "\"%s\",le=\"%g\"} %llu\n",
                           route_names[r], bounds[b], cum);
            else
                buf_printf(out,
                           "herald_api_request_duration_seconds_bucket{route="
                           "\"%s\",le=\"+Inf\"} %llu\n",
                           route_names[r], cum);
        }
        buf_printf(out,
                   "herald_api_request_duration_seconds_sum{route=\"%s\"} "
                   "%.6f\n",
                   route_names[r], (double)atomic_load(&micros[r]) / 1e6);
        buf_printf(out,
                   "herald_api_request_duration_seconds_count{route=\"%s\"} "
                   "%llu\n",
                   route_names[r], cum);
    }
}
