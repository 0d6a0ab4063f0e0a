#include "clock.h"
#include "err.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <string.h>
#include <time.h>

static int64_t fixed_ms = -1;

int64_t
clock_now_ms(void)
{
    if (fixed_ms >= 0)
        return fixed_ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
clock_set_fixed(int64_t ms)
{
    fixed_ms = ms;
}

int64_t
clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
split(int64_t ms, struct tm *tm, int *millis)
{
    int64_t sec = ms / 1000;
    int m = (int)(ms % 1000);
    if (m < 0) {
        m += 1000;
        sec -= 1;
    }
    time_t t = (time_t)sec;
    gmtime_r(&t, tm);
    *millis = m;
}

void
clock_rfc3339(int64_t ms, char out[CLOCK_RFC3339_LEN])
{
    struct tm tm;
    int millis;
    split(ms, &tm, &millis);
    char tmp[96] = {
        0}; /* wide enough for any int fields: keeps -Wformat quiet */
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, millis);
    memcpy(out, tmp, CLOCK_RFC3339_LEN - 1);
    out[CLOCK_RFC3339_LEN - 1] = 0;
}

void
clock_rfc5322(int64_t ms, char out[40])
{
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed",
                                 "Thu", "Fri", "Sat"};
    static const char *mons[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    int millis;
    split(ms, &tm, &millis);
    char tmp[96] = {0};
    snprintf(tmp, sizeof tmp, "%s, %02d %s %04d %02d:%02d:%02d +0000",
             days[tm.tm_wday], tm.tm_mday, mons[tm.tm_mon], tm.tm_year + 1900,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
    memcpy(out, tmp, 39);
    out[39] = 0;
}

static int
digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)**p))
            return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return 0;
}

static int
days_in_month(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return d[m - 1];
}

int
clock_parse_rfc3339(const char *s, int64_t *ms)
{
    const char *p = s;
    int Y, M, D, h, mi, sec, frac = 0;
    if (digits(&p, 4, &Y) || *p++ != '-' || digits(&p, 2, &M) || *p++ != '-' ||
        digits(&p, 2, &D))
        return HERR_INVALID;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return HERR_INVALID;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
        digits(&p, 2, &sec))
        return HERR_INVALID;
    if (M < 1 || M > 12 || D < 1 || D > days_in_month(Y, M) || h > 23 ||
        mi > 59 || sec > 60)
        return HERR_INVALID;
    if (*p == '.') {
        p++;
        int n = 0;
        if (!isdigit((unsigned char)*p))
            return HERR_INVALID;
        while (isdigit((unsigned char)*p)) {
            if (n < 3) {
                frac = frac * 10 + (*p - '0');
                n++;
            }
            p++;
        }
        while (n++ < 3)
            frac *= 10;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) ||
            oh > 23 || om > 59)
            return HERR_INVALID;
        off = sign * (oh * 60 + om);
    } else {
        return HERR_INVALID;
    }
    if (*p != '\0')
        return HERR_INVALID;
    if (sec == 60)
        sec = 59; /* leap second: clamp */
    struct tm tm = {0};
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    int64_t t = (int64_t)timegm(&tm);
    *ms = (t - (int64_t)off * 60) * 1000 + frac;
    return 0;
}
