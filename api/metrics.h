/*
 * metrics — herald-api's own Prometheus metrics (SPEC §10):
 * herald_api_requests_total{route,code} and
 * herald_api_request_duration_seconds{route} (a histogram). Routes and
 * codes are fixed sets: no label grows with use. Thread-safe (atomic
 * counters); api_metrics_text() renders text format 0.0.4.
 */
#ifndef HERALD_API_METRICS_H
#define HERALD_API_METRICS_H

#include "util.h"

enum api_route {
    API_R_MESSAGES = 0,
    API_R_MESSAGE,
    API_R_RESEND,
    API_R_INBOX,
    API_R_SUPPRESSIONS,
    API_R_HEALTHZ,
    API_R_METRICS,
    API_R_OTHER,
    API_R_COUNT
};

const char *api_route_name(enum api_route r);

/* Counts one request of `route` answered `code` in `seconds`. */
void api_metrics_count(enum api_route route, int code, double seconds);

/* Appends the metrics in Prometheus text format to out. */
void api_metrics_text(struct buf *out);

#endif
