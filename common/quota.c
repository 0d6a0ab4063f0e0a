#include "quota.h"
#include "job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MINUTE_MS 60000LL

static int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

void
quota_window(enum quota_kind kind, const struct tzwin *tz, int64_t now_ms,
             struct quota_window *out)
{
    if (kind == QUOTA_MINUTE) {
        out->start_ms = floor_div(now_ms, MINUTE_MS) * MINUTE_MS;
        out->end_ms = out->start_ms + MINUTE_MS;
        return;
    }
    int64_t s = floor_div(now_ms, 1000);
    out->start_ms = tzwin_day_start(tz, s) * 1000;
    out->end_ms = tzwin_next_day_start(tz, s) * 1000;
}

const char *
quota_kind_name(enum quota_kind kind)
{
    return kind == QUOTA_MINUTE ? "minute" : "day";
}

int64_t
quota_jitter_ms(enum quota_kind kind, uint32_t r)
{
    int64_t span = kind == QUOTA_MINUTE ? 6000 : 60000;
    return (int64_t)((double)span * ((double)r / 4294967296.0));
}

static int
fit(int r, size_t n)
{
    return r < 0 || (size_t)r >= n ? -1 : r;
}

int
quota_sender_scheme(char *out, size_t n, const char *field)
{
    return fit(snprintf(out, n, "scheme:%s", field), n);
}

int
quota_sender_org(char *out, size_t n, const char *org)
{
    return fit(snprintf(out, n, "org:%s", org), n);
}

int
quota_valid_sender(const char *s)
{
    if (s == NULL)
        return 0;
    if (strcmp(s, QUOTA_SENDER_RELAY) == 0)
        return 1;
    if (strncmp(s, "org:", 4) == 0)
        return job_valid_org(s + 4);
    if (strncmp(s, "scheme:", 7) != 0)
        return 0;
    const char *slash = strchr(s + 7, '/');
    if (slash == NULL || (size_t)(slash - (s + 7)) > 64)
        return 0;
    char org[65];
    memcpy(org, s + 7, (size_t)(slash - (s + 7)));
    org[slash - (s + 7)] = '\0';
    return job_valid_org(org) && job_valid_email(slash + 1);
}

int
quota_parse_pause(const char *s, int64_t *until_ms, const char **reason)
{
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    int64_t v = 0;
    const char *p = s;
    while (*p >= '0' && *p <= '9') {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*p++ - '0');
    }
    if (*p != '\0' && *p != ' ')
        return -1;
    *until_ms = v;
    if (reason)
        *reason = *p == ' ' ? p + 1 : p;
    return 0;
}
