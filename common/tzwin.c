/*
 * tzwin — a TZif reader (RFC 8536) and local calendar-day boundaries.
 *
 * A loaded zone is read-only: the transition times of the file's 64-bit
 * section (the 32-bit one for a version 1 file), its local time types,
 * and the footer rule (a POSIX TZ string) that holds after the last
 * transition. Nothing here touches TZ, tzset() or any global.
 *
 * Days. Local time L(u) = u + offset(u) only moves forward between
 * transitions; a transition may jump it ahead (a skipped midnight, a
 * skipped day: Pacific/Apia 2011-12-30) or back. When a jump back
 * crosses midnight (America/St_Johns 1987-2010 ended DST at 00:01, back
 * to 23:01 of the day before), a date is revisited after the next one
 * began. Quota windows must not overlap, so the day of an instant is the
 * latest local date reached up to it: the revisited hour belongs to the
 * day that had begun. Everywhere else that is simply the local date.
 * Day starts are then the first instant of each date, days never overlap
 * and always move forward.
 *
 * Before the first transition the first local time type holds (RFC 8536
 * §3.2); after the last one the footer rule, or the last type when the
 * footer is empty; a file with no transitions and a footer follows the
 * footer throughout (as tzcode does). A footer with DST but no rule
 * gets the US rule (",M3.2.0,M11.1.0", tzcode's default). Leap-second
 * files (right/...) are refused.
 *
 * Offsets are bounded (-89999 to 93599 s, RFC 8536 §3.2), so a day's
 * start lies within four days of any instant in it; the searches below
 * walk the segments between transitions inside that span. Times are
 * clamped to +-2^50 s (some 35 million years) so that no arithmetic
 * overflows.
 */
#include "tzwin.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UTOFF_MIN (-89999L) /* -24:59:59 */
#define UTOFF_MAX 93599L    /* +25:59:59 */
#define T_LIMIT ((int64_t)1 << 50)
#define DAY 86400
#define SPAN                                                                   \
    (4 * DAY) /* a day's start is within this of any of its instants           \
               */

struct ttype {
    long utoff;
    int isdst;
};

/* A footer rule date: Jn (1-365, no Feb 29), n (0-365), Mm.w.d. */
struct rdate {
    char kind; /* 'J', 'N', 'M' */
    int n, m, w, d;
    long secs; /* local time of day, -167h to +167h */
};

struct footer {
    long std_off; /* east positive, as utoff */
    long dst_off;
    int has_dst;
    struct rdate start, end; /* DST starts (in std time), ends (in DST) */
};

struct tzwin {
    char name[TZWIN_NAME_MAX + 1];
    size_t timecnt;
    int64_t *trans; /* ascending */
    unsigned char *idx;
    size_t typecnt;
    struct ttype *types;
    int has_footer; /* 0: the last type holds after the last transition */
    struct footer f;
};

/* ---- names ---- */

int
tzwin_valid_name(const char *name)
{
    if (name == NULL)
        return 0;
    size_t len = strlen(name);
    if (len == 0 || len > TZWIN_NAME_MAX || name[0] == '/' ||
        name[len - 1] == '/')
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (c == '/') {
            if (name[i + 1] == '/')
                return 0;
            continue;
        }
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '+' || c == '-'))
            return 0;
    }
    return 1;
}

/* ---- calendar (proleptic Gregorian; days since 1970-01-01) ---- */

static int64_t
fdiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t
days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = fdiv(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t
year_of_days(int64_t z)
{
    z += 719468;
    int64_t era = fdiv(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    return yoe + era * 400 + (m <= 2);
}

static int
is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
month_len(int64_t y, int m)
{
    static const int len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return len[m - 1] + (m == 2 && is_leap(y));
}

/* The local day (days since the epoch) a rule date falls on in year y. */
static int64_t
rule_day(const struct rdate *r, int64_t y)
{
    int64_t jan1 = days_from_civil(y, 1, 1);
    if (r->kind == 'J')
        return jan1 + r->n - 1 + (is_leap(y) && r->n >= 60);
    if (r->kind == 'N')
        return jan1 + r->n;
    int64_t first = days_from_civil(y, r->m, 1);
    int wd = (int)(((first + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
    int64_t d = first + (r->d - wd + 7) % 7 + 7 * (int64_t)(r->w - 1);
    while (d >= first + month_len(y, r->m))
        d -= 7;
    return d;
}

/* The UTC instants DST starts and ends in year y under footer f. */
static void
footer_year(const struct footer *f, int64_t y, int64_t *start, int64_t *end)
{
    *start = rule_day(&f->start, y) * DAY + f->start.secs - f->std_off;
    *end = rule_day(&f->end, y) * DAY + f->end.secs - f->dst_off;
}

static long
footer_offset(const struct footer *f, int64_t t)
{
    if (!f->has_dst)
        return f->std_off;
    int64_t y = year_of_days(fdiv(t, DAY));
    /* The latest change at or before t; when a start and an end fall on
     * the same instant (DST all year), the start wins. */
    int64_t best = INT64_MIN;
    long off = f->std_off;
    for (int64_t yy = y - 2; yy <= y + 1; yy++) {
        int64_t s, e;
        footer_year(f, yy, &s, &e);
        if (e <= t && e > best) {
            best = e;
            off = f->std_off;
        }
        if (s <= t && s >= best) {
            best = s;
            off = f->dst_off;
        }
    }
    return off;
}

/* The first footer change after t (INT64_MAX when there are none). */
static int64_t
footer_next(const struct footer *f, int64_t t)
{
    if (!f->has_dst)
        return INT64_MAX;
    int64_t y = year_of_days(fdiv(t, DAY));
    int64_t best = INT64_MAX;
    for (int64_t yy = y - 1; yy <= y + 2; yy++) {
        int64_t s, e;
        footer_year(f, yy, &s, &e);
        if (s > t && s < best)
            best = s;
        if (e > t && e < best)
            best = e;
    }
    return best;
}

/* ---- offsets ---- */

static int64_t
clamp_t(int64_t t)
{
    return t < -T_LIMIT ? -T_LIMIT : t > T_LIMIT ? T_LIMIT : t;
}

/* The number of transitions at or before t. */
static size_t
trans_upto(const struct tzwin *z, int64_t t)
{
    size_t lo = 0, hi = z->timecnt;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static long
offset_at(const struct tzwin *z, int64_t t)
{
    if (z == NULL)
        return 0;
    size_t k = trans_upto(z, t);
    if (k == z->timecnt && z->has_footer)
        return footer_offset(&z->f, t);
    if (k == 0)
        return z->types[0].utoff; /* before the first transition */
    return z->types[z->idx[k - 1]].utoff;
}

/* The first instant after t at which the offset may change. */
static int64_t
next_change(const struct tzwin *z, int64_t t)
{
    if (z == NULL)
        return INT64_MAX;
    size_t k = trans_upto(z, t);
    if (k < z->timecnt)
        return z->trans[k];
    return z->has_footer ? footer_next(&z->f, t) : INT64_MAX;
}

long
tzwin_offset(const struct tzwin *z, int64_t t_s)
{
    return offset_at(z, clamp_t(t_s));
}

const char *
tzwin_name(const struct tzwin *z)
{
    return z ? z->name : "UTC";
}

/* ---- days ---- */

/* The day of t (see the top): the latest local date reached in
 * [t - SPAN, t]; dates before that span are all earlier. */
static int64_t
day_of(const struct tzwin *z, int64_t t)
{
    int64_t m = INT64_MIN;
    for (int64_t u = t - SPAN; u <= t;) {
        long o = offset_at(z, u);
        int64_t b = next_change(z, u);
        int64_t last = b - 1 < t ? b - 1 : t;
        int64_t d = fdiv(last + o, DAY);
        if (d > m)
            m = d;
        u = b;
    }
    return m;
}

/* The first instant in [from, ...) whose local date is at least day. */
static int64_t
first_reaching(const struct tzwin *z, int64_t from, int64_t day)
{
    int64_t target = day * DAY;
    for (int64_t u = from;;) {
        long o = offset_at(z, u);
        int64_t b = next_change(z, u);
        int64_t c = target - o > u ? target - o : u;
        if (c < b)
            return c;
        u = b;
    }
}

int64_t
tzwin_day_start(const struct tzwin *z, int64_t t_s)
{
    int64_t t = clamp_t(t_s);
    return first_reaching(z, t - SPAN, day_of(z, t));
}

int64_t
tzwin_next_day_start(const struct tzwin *z, int64_t t_s)
{
    int64_t t = clamp_t(t_s);
    return first_reaching(z, t + 1, day_of(z, t) + 1);
}

/* ---- the POSIX TZ footer (RFC 8536 §3.3) ---- */

/* Up to `maxd` digits as a number; -1 when there are none. */
static long
digits(const char **s, int maxd)
{
    const char *p = *s;
    long v = 0;
    int n = 0;
    while (*p >= '0' && *p <= '9' && n < maxd) {
        v = v * 10 + (*p++ - '0');
        n++;
    }
    if (n == 0 || (*p >= '0' && *p <= '9'))
        return -1;
    *s = p;
    return v;
}

/* [+-]hh[:mm[:ss]] with hh at most max_h: seconds into *out. */
static int
hms(const char **s, long max_h, long *out)
{
    const char *p = *s;
    long sign = 1;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    long h = digits(&p, 3), m = 0, sec = 0;
    if (h < 0 || h > max_h)
        return -1;
    if (*p == ':') {
        p++;
        if ((m = digits(&p, 2)) < 0 || m > 59)
            return -1;
        if (*p == ':') {
            p++;
            if ((sec = digits(&p, 2)) < 0 || sec > 59)
                return -1;
        }
    }
    *out = sign * (h * 3600 + m * 60 + sec);
    *s = p;
    return 0;
}

/* A designation: 3+ letters, or <3+ of [A-Za-z0-9+-]>. */
static int
tz_name(const char **s)
{
    const char *p = *s;
    int n = 0;
    if (*p == '<') {
        p++;
        while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
               (*p >= '0' && *p <= '9') || *p == '+' || *p == '-') {
            p++;
            n++;
        }
        if (*p != '>' || n < 3)
            return -1;
        p++;
    } else {
        while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) {
            p++;
            n++;
        }
        if (n < 3)
            return -1;
    }
    *s = p;
    return 0;
}

static int
rule_date(const char **s, struct rdate *r)
{
    const char *p = *s;
    long v;
    if (*p == 'J') {
        p++;
        if ((v = digits(&p, 3)) < 1 || v > 365)
            return -1;
        r->kind = 'J';
        r->n = (int)v;
    } else if (*p == 'M') {
        p++;
        long m, w, d;
        if ((m = digits(&p, 2)) < 1 || m > 12 || *p++ != '.' ||
            (w = digits(&p, 1)) < 1 || w > 5 || *p++ != '.' ||
            (d = digits(&p, 1)) < 0 || d > 6)
            return -1;
        r->kind = 'M';
        r->m = (int)m;
        r->w = (int)w;
        r->d = (int)d;
    } else {
        if ((v = digits(&p, 3)) < 0 || v > 365)
            return -1;
        r->kind = 'N';
        r->n = (int)v;
    }
    r->secs = 2 * 3600;
    if (*p == '/') {
        p++;
        if (hms(&p, 167, &r->secs))
            return -1;
    }
    *s = p;
    return 0;
}

/* Parses the whole of s (NUL-terminated) into f; 0 or -1. */
static int
parse_footer(const char *s, struct footer *f)
{
    const char *p = s;
    long off;
    memset(f, 0, sizeof *f);
    if (tz_name(&p) || hms(&p, 24, &off))
        return -1;
    f->std_off = -off; /* POSIX offsets are west positive */
    if (*p == '\0')
        return 0;
    if (tz_name(&p))
        return -1;
    f->has_dst = 1;
    f->dst_off = f->std_off + 3600;
    if (*p != ',' && *p != '\0') {
        if (hms(&p, 24, &off))
            return -1;
        f->dst_off = -off;
    }
    if (*p == '\0') {
        /* No rule: the US one, as tzcode and glibc assume. */
        const char *def = "M3.2.0,M11.1.0";
        if (rule_date(&def, &f->start) || *def++ != ',' ||
            rule_date(&def, &f->end))
            return -1;
        return 0;
    }
    if (*p++ != ',' || rule_date(&p, &f->start) || *p++ != ',' ||
        rule_date(&p, &f->end) || *p != '\0')
        return -1;
    return 0;
}

/* ---- TZif ---- */

struct rd {
    const unsigned char *p;
    size_t len, off;
};

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static int64_t
be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct counts {
    uint32_t isut, isstd, leap, time, type, chr;
};

static int
read_header(struct rd *r, int *version, struct counts *c)
{
    if (r->len - r->off < 44)
        return -1;
    const unsigned char *h = r->p + r->off;
    if (memcmp(h, "TZif", 4) != 0)
        return -1;
    *version = h[4];
    c->isut = be32(h + 20);
    c->isstd = be32(h + 24);
    c->leap = be32(h + 28);
    c->time = be32(h + 32);
    c->type = be32(h + 36);
    c->chr = be32(h + 40);
    r->off += 44;
    return 0;
}

/* The size of a data block with `tsize`-byte times. */
static uint64_t
block_size(const struct counts *c, unsigned tsize)
{
    return (uint64_t)c->time * (tsize + 1) + (uint64_t)c->type * 6 + c->chr +
           (uint64_t)c->leap * (tsize + 4) + c->isstd + c->isut;
}

/* Why the file is bad (a short phrase), or NULL when it is fine. */
static const char *
parse_tzif(const unsigned char *data, size_t len, struct tzwin *z)
{
    struct rd r = {data, len, 0};
    struct counts c;
    int version;
    if (len < 4 || memcmp(data, "TZif", 4) != 0)
        return "not a TZif file (bad magic)";
    if (read_header(&r, &version, &c))
        return "truncated (header)";
    if (version != 0 && version != '2' && version != '3' && version != '4')
        return "unknown TZif version";
    unsigned tsize = 4;
    if (version != 0) {
        /* Skip the version 1 block; the 64-bit one follows. */
        uint64_t skip = block_size(&c, 4);
        if (skip > len - r.off)
            return "truncated (version 1 data)";
        r.off += (size_t)skip;
        int v2;
        if (read_header(&r, &v2, &c))
            return "truncated or bad second header";
        tsize = 8;
    }
    if (c.type == 0 || c.type > 256)
        return "bad count of local time types";
    if (c.chr == 0)
        return "no time zone designations";
    if ((c.isstd != 0 && c.isstd != c.type) ||
        (c.isut != 0 && c.isut != c.type))
        return "bad standard/UT indicator counts";
    if (c.leap != 0)
        return "has leap-second records (a right/ zone); use the plain zone";
    if (block_size(&c, tsize) > len - r.off)
        return "truncated (data block)";
    const unsigned char *p = data + r.off;
    z->timecnt = c.time;
    z->trans = xmalloc(sizeof *z->trans * (c.time ? c.time : 1));
    z->idx = xmalloc(c.time ? c.time : 1);
    z->typecnt = c.type;
    z->types = xmalloc(sizeof *z->types * c.type);
    for (size_t i = 0; i < c.time; i++) {
        z->trans[i] = tsize == 8 ? be64(p) : (int32_t)be32(p);
        p += tsize;
        if (i > 0 && z->trans[i] <= z->trans[i - 1])
            return "transition times out of order";
    }
    for (size_t i = 0; i < c.time; i++) {
        z->idx[i] = p[i];
        if (p[i] >= c.type)
            return "transition to a local time type that does not exist";
    }
    p += c.time;
    for (size_t i = 0; i < c.type; i++, p += 6) {
        long utoff = (long)(int32_t)be32(p);
        if (utoff < UTOFF_MIN || utoff > UTOFF_MAX)
            return "UTC offset out of range (-24:59:59 to +25:59:59)";
        if (p[4] > 1)
            return "bad DST flag";
        if (p[5] >= c.chr)
            return "designation index out of range";
        z->types[i].utoff = utoff;
        z->types[i].isdst = p[4];
    }
    p += c.chr; /* designations; the leap records are none */
    for (size_t i = 0; i < (size_t)c.isstd + c.isut; i++)
        if (p[i] > 1)
            return "bad standard/UT indicator";
    r.off = (size_t)(p - data) + c.isstd + c.isut;
    if (version == 0)
        return r.off == len ? NULL : "trailing bytes after the data";
    /* The footer: "\n" TZ string "\n", the end of the file. */
    if (r.off >= len || data[r.off] != '\n')
        return "missing footer";
    const unsigned char *s = data + r.off + 1;
    size_t rest = len - r.off - 1;
    const unsigned char *nl = memchr(s, '\n', rest);
    if (nl == NULL)
        return "truncated footer";
    if ((size_t)(nl - s) + 1 != rest)
        return "trailing bytes after the footer";
    size_t flen = (size_t)(nl - s);
    if (flen == 0)
        return NULL; /* no rule: the last type holds */
    if (memchr(s, '\0', flen))
        return "bad footer TZ string";
    char *str = xstrndup((const char *)s, flen);
    int bad = parse_footer(str, &z->f);
    free(str);
    if (bad)
        return "bad footer TZ string";
    z->has_footer = 1;
    return NULL;
}

static struct tzwin *
zone_new(const char *name)
{
    struct tzwin *z = xcalloc(1, sizeof *z);
    snprintf(z->name, sizeof z->name, "%s", name);
    return z;
}

static struct tzwin *
utc_zone(const char *name)
{
    struct tzwin *z = zone_new(name);
    z->typecnt = 1;
    z->types = xcalloc(1, sizeof *z->types);
    return z;
}

void
tzwin_free(struct tzwin *z)
{
    if (z == NULL)
        return;
    free(z->trans);
    free(z->idx);
    free(z->types);
    free(z);
}

struct tzwin *
tzwin_utc(const char *name)
{
    return utc_zone(name);
}

int
tzwin_from_tzif(const char *name, const char *where, const unsigned char *data,
                size_t len, struct tzwin **out, struct herr *e)
{
    *out = NULL;
    struct tzwin *z = zone_new(name);
    const char *why = parse_tzif(data, len, z);
    if (why) {
        tzwin_free(z);
        return herr_set(e, HERR_INVALID, "time_zone", "time zone '%s': %s: %s",
                        name, where, why);
    }
    *out = z;
    return 0;
}
