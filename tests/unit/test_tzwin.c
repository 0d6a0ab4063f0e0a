/*
 * test_tzwin — time-zone day windows (common/tzwin.h).
 *
 *   - zone names: what is refused before any file is touched;
 *   - UTC / Etc/UTC without zone files, and z == NULL;
 *   - real zones from /usr/share/zoneinfo against glibc (the test alone
 *     sets TZ and calls tzset / localtime_r): offsets around every
 *     transition from 1970 to 2060, every day start and end in that span
 *     (a chain of tzwin_next_day_start), and random instants; plus fixed
 *     values computed independently (Python's zoneinfo) for skipped
 *     midnights (America/Havana, America/Santiago, Asia/Beirut) and the
 *     skipped day of Pacific/Apia;
 *   - hand-made TZif files written to a temporary directory: footers
 *     (POSIX TZ strings with Jn / n / Mm.w.d rules, quoted names, minutes,
 *     negative and >24 h rule times) against glibc given the same string,
 *     DST all year, a version 1 file, an empty footer, a fall-back that
 *     crosses midnight (the revisited hour belongs to the new day), and
 *     corrupt files (every truncation, bad counts, bad indices, bad
 *     footers, a huge file, random byte flips) which must be refused
 *     cleanly.
 *
 * Without /usr/share/zoneinfo the real-zone part is skipped (a note is
 * printed); everything else still runs.
 */
#include "../../common/err.h"
#include "../../common/tzwin.h"
#include "t.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DAY 86400
#define T1970 INT64_C(0)
#define T2060 INT64_C(2871763200) /* 2061-01-01T00:00:00Z */
#define ZONEINFO "/usr/share/zoneinfo"

static char tmpdir[64];

/* ---- helpers ---- */

static int64_t
fdiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t
civil_days(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = fdiv(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int64_t
rnd_time(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd() % (uint64_t)(hi - lo));
}

static void
write_file(const char *name, const void *data, size_t len)
{
    char path[256], dir[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash > dir + strlen(tmpdir)) {
        *slash = '\0';
        mkdir(dir, 0700);
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    if (len && fwrite(data, 1, len, f) != len) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

/* ---- a TZif writer ---- */

struct tzb {
    unsigned char b[8192];
    size_t n;
};

static void
put(struct tzb *t, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (t->n + n > sizeof t->b)
        abort();
    memcpy(t->b + t->n, p, n);
    t->n += n;
}

static void
put32(struct tzb *t, uint32_t v)
{
    unsigned char c[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    put(t, c, 4);
}

static void
put64(struct tzb *t, int64_t v)
{
    put32(t, (uint32_t)((uint64_t)v >> 32));
    put32(t, (uint32_t)v);
}

static void
header(struct tzb *t, char version, uint32_t timecnt, uint32_t typecnt)
{
    put(t, "TZif", 4);
    put(t, &version, 1);
    static const unsigned char zero[15];
    put(t, zero, 15);
    put32(t, 0);       /* isutcnt */
    put32(t, 0);       /* isstdcnt */
    put32(t, 0);       /* leapcnt */
    put32(t, timecnt); /* timecnt */
    put32(t, typecnt); /* typecnt */
    put32(t, 4);       /* charcnt: "ZZZ\0" */
}

struct ttype {
    long utoff;
    int isdst;
};

/*
 * A TZif file: version '2' / '3' (then a minimal version 1 block, the
 * 64-bit data and the footer), or 0 (32-bit data only, footer ignored).
 */
static void
build(struct tzb *t, char version, const int64_t *trans,
      const unsigned char *idx, size_t n, const struct ttype *types,
      size_t ntypes, const char *footer)
{
    t->n = 0;
    if (version != 0) {
        header(t, version, 0, 1);
        put(t, "\0\0\0\0\0\0ZZZ", 10); /* one type + designations */
    }
    header(t, version, (uint32_t)n, (uint32_t)ntypes);
    for (size_t i = 0; i < n; i++)
        if (version != 0)
            put64(t, trans[i]);
        else
            put32(t, (uint32_t)(int32_t)trans[i]);
    put(t, idx, n);
    for (size_t i = 0; i < ntypes; i++) {
        put32(t, (uint32_t)(int32_t)types[i].utoff);
        unsigned char c[2] = {(unsigned char)types[i].isdst, 0};
        put(t, c, 2);
    }
    put(t, "ZZZ", 4);
    if (version != 0) {
        put(t, "\n", 1);
        put(t, footer, strlen(footer));
        put(t, "\n", 1);
    }
}

/* ---- the glibc oracle (test only) ---- */

static void
g_zone(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

static long
g_off(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    return tm.tm_gmtoff;
}

static int64_t
g_date(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    return civil_days(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

/*
 * Stretches where the local date goes back (a fall-back across
 * midnight): [from, to) counts as `day`, the date reached before.
 */
struct revisit {
    int64_t from, to, day;
};

struct oracle {
    int64_t *trans; /* offset changes found, 1970-2060 */
    size_t ntrans;
    struct revisit rv[128];
    size_t nrv;
};

/* The day of t as tzwin defines it: glibc's date, except in a revisit. */
static int64_t
o_day(const struct oracle *o, int64_t t)
{
    for (size_t i = 0; o && i < o->nrv; i++)
        if (t >= o->rv[i].from && t < o->rv[i].to)
            return o->rv[i].day;
    return g_date(t);
}

/* The first u in [lo, hi] with o_day(u) >= day (o_day is monotone). */
static int64_t
o_first(const struct oracle *o, int64_t lo, int64_t hi, int64_t day)
{
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (o_day(o, mid) >= day)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static int64_t
o_day_start(const struct oracle *o, int64_t t)
{
    return o_first(o, t - 4 * DAY, t, o_day(o, t));
}

static int64_t
o_next_day_start(const struct oracle *o, int64_t t)
{
    return o_first(o, t + 1, t + 4 * DAY, o_day(o, t) + 1);
}

/* Finds the offset changes in [lo, hi) (6-hour steps, then bisection)
 * and the revisits they cause. */
static void
o_scan(struct oracle *o, int64_t lo, int64_t hi)
{
    size_t cap = 1024;
    o->trans = malloc(cap * sizeof *o->trans);
    o->ntrans = 0;
    o->nrv = 0;
    int64_t u = lo;
    while (u < hi) {
        long cur = g_off(u);
        int64_t v = u + 21600;
        if (g_off(v) == cur) {
            u = v;
            continue;
        }
        int64_t a = u, b = v; /* g_off(a) == cur, g_off(b) != cur */
        while (b - a > 1) {
            int64_t m = a + (b - a) / 2;
            if (g_off(m) == cur)
                a = m;
            else
                b = m;
        }
        if (o->ntrans == cap)
            o->trans = realloc(o->trans, (cap *= 2) * sizeof *o->trans);
        o->trans[o->ntrans++] = b;
        int64_t before = g_date(b - 1);
        if (g_date(b) < before && o->nrv < 128) {
            /* glibc's date is monotone after b until it reaches before */
            int64_t x = b, y = b + 2 * DAY;
            while (x < y) {
                int64_t m = x + (y - x) / 2;
                if (g_date(m) >= before)
                    y = m;
                else
                    x = m + 1;
            }
            o->rv[o->nrv++] = (struct revisit){b, x, before};
        }
        u = b;
    }
}

/* ---- names ---- */

static void
test_names(void)
{
    CHECK(tzwin_valid_name("UTC"));
    CHECK(tzwin_valid_name("Europe/Paris"));
    CHECK(tzwin_valid_name("America/Argentina/Salta"));
    CHECK(tzwin_valid_name("Etc/GMT+5"));
    CHECK(tzwin_valid_name("Etc/GMT-14"));
    CHECK(tzwin_valid_name("America/Port_of_Spain"));
    CHECK(!tzwin_valid_name(NULL));
    CHECK(!tzwin_valid_name(""));
    CHECK(!tzwin_valid_name("../etc/passwd"));
    CHECK(!tzwin_valid_name("Europe/../../etc/passwd"));
    CHECK(!tzwin_valid_name(".."));
    CHECK(!tzwin_valid_name("."));
    CHECK(!tzwin_valid_name("/abs"));
    CHECK(!tzwin_valid_name("/etc/passwd"));
    CHECK(!tzwin_valid_name("a//b"));
    CHECK(!tzwin_valid_name("Europe/"));
    CHECK(!tzwin_valid_name("Europe Paris"));
    CHECK(!tzwin_valid_name("Europe/Paris\n"));
    CHECK(!tzwin_valid_name("Europe\\Paris"));
    CHECK(!tzwin_valid_name("zone.tab"));
    CHECK(!tzwin_valid_name("Europe/Par\xc3\xads"));
    char name[TZWIN_NAME_MAX + 2];
    memset(name, 'a', sizeof name);
    name[TZWIN_NAME_MAX] = '\0';
    CHECK(tzwin_valid_name(name)); /* 64 bytes */
    name[TZWIN_NAME_MAX] = 'a';
    name[TZWIN_NAME_MAX + 1] = '\0';
    CHECK(!tzwin_valid_name(name)); /* 65 */

    /* Refused before the file system: a file that would be found. */
    write_file("passwd", "TZif", 4);
    struct tzwin *z = NULL;
    struct herr e = {{0}, {0}};
    CHECK(tzwin_load(tmpdir, "../passwd", &z, &e) == HERR_INVALID && !z);
    CHECK_STR(e.field, "time_zone");
    CHECK(strstr(e.msg, "'../passwd'") != NULL);
    CHECK(tzwin_load(tmpdir, "", &z, &e) == HERR_INVALID && !z);
    CHECK(tzwin_load(tmpdir, NULL, &z, &e) == HERR_INVALID && !z);
    CHECK(tzwin_load(tmpdir, name, &z, &e) == HERR_INVALID && !z);

    /* Unknown zones. */
    e = (struct herr){{0}, {0}};
    CHECK(tzwin_load(tmpdir, "Nowhere/City", &z, &e) == HERR_NOTFOUND && !z);
    CHECK_STR(e.field, "time_zone");
    CHECK(strstr(e.msg, "Nowhere/City") != NULL);
    CHECK(tzwin_load("/nonexistent-herald-dir", "Europe/Paris", &z, &e) ==
          HERR_NOTFOUND);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/Area", tmpdir);
    mkdir(sub, 0700);
    CHECK(tzwin_load(tmpdir, "Area", &z, &e) == HERR_NOTFOUND && !z);
    CHECK(strstr(e.msg, "directory") != NULL);
    CHECK(tzwin_load(tmpdir, "passwd/x", &z, &e) == HERR_NOTFOUND);
}

/* ---- UTC ---- */

static void
check_utc(const struct tzwin *z)
{
    static const int64_t ts[] = {0,
                                 1,
                                 -1,
                                 86399,
                                 86400,
                                 -86400,
                                 -86401,
                                 951782400 /* 2000-02-29 */,
                                 1711846800,
                                 INT64_C(4102444800) /* 2100-01-01 */,
                                 INT64_C(-2208988800) /* 1900-01-01 */};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        int64_t t = ts[i], d = fdiv(t, DAY) * DAY;
        CHECK(tzwin_offset(z, t) == 0);
        CHECK_MSG(tzwin_day_start(z, t) == d, "t=%lld", (long long)t);
        CHECK_MSG(tzwin_next_day_start(z, t) == d + DAY, "t=%lld",
                  (long long)t);
    }
    for (int i = 0; i < 2000; i++) {
        int64_t t = rnd_time(-T2060, 2 * T2060), d = fdiv(t, DAY) * DAY;
        if (tzwin_day_start(z, t) != d || tzwin_next_day_start(z, t) != d + DAY)
            CHECK_MSG(0, "t=%lld", (long long)t);
    }
    /* Extreme inputs do not overflow; the result stays ordered. */
    int64_t ds = tzwin_day_start(z, INT64_MAX);
    CHECK(ds > 0 && ds < tzwin_next_day_start(z, INT64_MAX));
    ds = tzwin_day_start(z, INT64_MIN);
    CHECK(ds < 0 && ds < tzwin_next_day_start(z, INT64_MIN));
}

static void
test_utc(void)
{
    check_utc(NULL);
    CHECK_STR(tzwin_name(NULL), "UTC");
    const char *names[] = {"UTC", "Etc/UTC"};
    for (int i = 0; i < 2; i++) {
        struct tzwin *z = NULL;
        struct herr e = {{0}, {0}};
        CHECK(tzwin_load("/nonexistent-herald-dir", names[i], &z, &e) == 0);
        if (z == NULL)
            continue;
        CHECK_STR(tzwin_name(z), names[i]);
        check_utc(z);
        tzwin_free(z);
    }
    tzwin_free(NULL);
}

/* ---- a zone against glibc ---- */

/* Stops a zone's report after a few mismatches. */
struct tally {
    const char *zone;
    long bad;
};

static void
mismatch(struct tally *t, const char *what, int64_t at, int64_t got,
         int64_t want)
{
    if (t->bad++ < 5)
        fprintf(stderr, "FAIL %s: %s at %lld: got %lld, want %lld\n", t->zone,
                what, (long long)at, (long long)got, (long long)want);
}

static void
check_instant(struct tally *tl, const struct tzwin *z, const struct oracle *o,
              int64_t t)
{
    long off = tzwin_offset(z, t), goff = g_off(t);
    if (off != goff)
        mismatch(tl, "offset", t, off, goff);
    int64_t ds = tzwin_day_start(z, t), want = o_day_start(o, t);
    if (ds != want)
        mismatch(tl, "day_start", t, ds, want);
    int64_t nx = tzwin_next_day_start(z, t);
    want = o_next_day_start(o, t);
    if (nx != want)
        mismatch(tl, "next_day_start", t, nx, want);
}

/*
 * Compares zone `name` from `dir` with glibc under TZ=`tzenv` from lo to
 * hi: every instant next to an offset change, every day boundary (a
 * chain), and random instants. Returns how many days the chain walked.
 */
static long
check_zone(const char *dir, const char *name, const char *tzenv, int64_t lo,
           int64_t hi)
{
    struct tzwin *z = NULL;
    struct herr e = {{0}, {0}};
    int rc = tzwin_load(dir, name, &z, &e);
    CHECK_MSG(rc == 0, "%s: %s: %s", name, e.field, e.msg);
    if (rc)
        return 0;
    CHECK_STR(tzwin_name(z), name);
    g_zone(tzenv);
    struct oracle o;
    o_scan(&o, lo - 4 * DAY, hi + 4 * DAY);
    struct tally tl = {name, 0};

    /* Around every change. */
    static const int64_t near[] = {-DAY - 1, -7200, -3601, -3600, -1801, -1,
                                   0,        1,     1799,  3599,  7200,  DAY};
    for (size_t i = 0; i < o.ntrans; i++)
        for (size_t k = 0; k < sizeof near / sizeof near[0]; k++)
            check_instant(&tl, z, &o, o.trans[i] + near[k]);

    /* Random instants. */
    for (int i = 0; i < 3000; i++)
        check_instant(&tl, z, &o, rnd_time(lo, hi));

    /* Every day: [d, n) is one day, the first instant of it, n the first
     * of a later one. */
    long days = 0;
    int64_t d = tzwin_day_start(z, lo), want = o_day_start(&o, lo);
    if (d != want)
        mismatch(&tl, "day_start", lo, d, want);
    while (d < hi && tl.bad < 5) {
        int64_t n = tzwin_next_day_start(z, d);
        int64_t day = o_day(&o, d);
        if (!(n > d) || o_day(&o, n - 1) != day || o_day(&o, n) <= day ||
            o_day(&o, d - 1) >= day)
            mismatch(&tl, "day chain", d, n, o_next_day_start(&o, d));
        if (tzwin_day_start(z, n) != n)
            mismatch(&tl, "day_start(next)", n, tzwin_day_start(z, n), n);
        if (tzwin_day_start(z, n - 1) != d)
            mismatch(&tl, "day_start(next - 1)", n - 1,
                     tzwin_day_start(z, n - 1), d);
        if (tzwin_next_day_start(z, n - 1) != n)
            mismatch(&tl, "next_day_start(next - 1)", n - 1,
                     tzwin_next_day_start(z, n - 1), n);
        if (tzwin_offset(z, n) != g_off(n))
            mismatch(&tl, "offset", n, tzwin_offset(z, n), g_off(n));
        d = n;
        days++;
    }
    CHECK_MSG(tl.bad == 0, "%s: %ld mismatches with glibc", name, tl.bad);
    free(o.trans);
    tzwin_free(z);
    return days;
}

static int
zoneinfo_has(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", ZONEINFO, name);
    return access(path, R_OK) == 0;
}

static void
test_real_zones(void)
{
    static const char *const zones[] = {
        "UTC",
        "Etc/UTC",
        "Europe/Paris",
        "America/New_York",
        "America/Los_Angeles",
        "Australia/Lord_Howe", /* 30-minute DST */
        "Asia/Kathmandu",      /* +05:45 */
        "Pacific/Chatham",     /* +12:45 / +13:45 */
        "America/Santiago",    /* midnight skipped, footer /24 */
        "Africa/Casablanca",   /* Ramadan changes listed to 2087 */
        "Pacific/Apia",        /* 2011-12-30 skipped */
        "Etc/GMT+5",           /* no transitions */
        "America/Havana",      /* midnight skipped */
        "Asia/Beirut",         /* midnight skipped */
        "America/St_Johns",    /* fall-back across midnight, 1987-2010 */
        "Europe/Dublin",       /* negative DST in the footer */
        "America/Nuuk",        /* negative rule times in the footer */
        "Asia/Jerusalem",      /* rule time 26:00 */
    };
    struct stat st;
    if (stat(ZONEINFO, &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("test_tzwin: note: %s missing, real-zone tests skipped "
               "(apt-get install tzdata)\n",
               ZONEINFO);
        return;
    }
    for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++) {
        if (strcmp(zones[i], "UTC") != 0 && strcmp(zones[i], "Etc/UTC") != 0 &&
            !zoneinfo_has(zones[i])) {
            printf("test_tzwin: note: %s/%s missing, skipped\n", ZONEINFO,
                   zones[i]);
            continue;
        }
        long days = check_zone(NULL, zones[i], zones[i], T1970, T2060);
        CHECK_MSG(days >= 33000 && days <= 33300, "%s: %ld days", zones[i],
                  days);
    }

    /* Values computed independently (Python zoneinfo). */
    struct fixed {
        const char *zone;
        int64_t t, day_start, next_day_start;
    };
    static const struct fixed fx[] = {
        /* Apia: 2011-12-29 (-10) is followed by 2011-12-31 (+14). */
        {"Pacific/Apia", 1325152800 + 43200, 1325152800, 1325239200},
        {"Pacific/Apia", 1325239200, 1325239200, 1325239200 + DAY},
        {"Pacific/Apia", 1325239199, 1325152800, 1325239200},
        /* Havana 2024-03-10: 00:00 CST skipped, the day starts 01:00
         * CDT and lasts 23 hours. */
        {"America/Havana", 1710046800 + 3600, 1710046800, 1710129600},
        {"America/Havana", 1710046799, 1710046799 - 86399, 1710046800},
        /* Santiago 2022-09-11 starts at 01:00 -03. */
        {"America/Santiago", 1662868800, 1662868800, 1662868800 + 23 * 3600},
        {"America/Santiago", 1662868799, 1662782400, 1662868800},
        /* Beirut 2010-03-28 starts at 01:00 +03. */
        {"Asia/Beirut", 1269727200 + 600, 1269727200, 1269727200 + 23 * 3600},
        /* Lord Howe 2023-10-01 (+10:30) is 23.5 hours. */
        {"Australia/Lord_Howe", 1696080600 + 60, 1696080600, 1696165200},
        /* Paris 2024-03-31: 23 hours. */
        {"Europe/Paris", 1711839600 + 7200, 1711839600, 1711922400},
        /* St John's 1987-10-25 00:00 -02:30 to 1987-10-26 00:00 -03:30,
         * 25 hours; the revisited hour (23:01-23:59 of the 24th, -03:30)
         * belongs to the 25th. */
        {"America/St_Johns", 562127400 + 30, 562127400, 562217400},
        {"America/St_Johns", 562127400 + 60, 562127400, 562217400},
        {"America/St_Johns", 562127400 + 60 + 3000, 562127400, 562217400},
        {"America/St_Johns", 562127399, 562127399 - 86399, 562127400},
    };
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
        if (!zoneinfo_has(fx[i].zone))
            continue;
        struct tzwin *z = NULL;
        struct herr e = {{0}, {0}};
        if (tzwin_load(NULL, fx[i].zone, &z, &e) != 0) {
            CHECK_MSG(0, "%s: %s", fx[i].zone, e.msg);
            continue;
        }
        CHECK_MSG(tzwin_day_start(z, fx[i].t) == fx[i].day_start,
                  "%s day_start(%lld) = %lld", fx[i].zone, (long long)fx[i].t,
                  (long long)tzwin_day_start(z, fx[i].t));
        CHECK_MSG(tzwin_next_day_start(z, fx[i].t) == fx[i].next_day_start,
                  "%s next_day_start(%lld) = %lld", fx[i].zone,
                  (long long)fx[i].t,
                  (long long)tzwin_next_day_start(z, fx[i].t));
        tzwin_free(z);
    }

    /* A directory is not a zone; a text file is not a TZif file. */
    struct tzwin *z = NULL;
    struct herr e = {{0}, {0}};
    CHECK(tzwin_load(NULL, "Europe", &z, &e) == HERR_NOTFOUND && !z);
    if (zoneinfo_has("leapseconds")) {
        CHECK(tzwin_load(NULL, "leapseconds", &z, &e) == HERR_INVALID && !z);
        CHECK(strstr(e.msg, "leapseconds") != NULL);
    }
    if (zoneinfo_has("right/Europe/Paris")) {
        CHECK(tzwin_load(NULL, "right/Europe/Paris", &z, &e) == HERR_INVALID);
        CHECK(strstr(e.msg, "leap") != NULL);
    }
}

/* ---- hand-made files ---- */

/* A file whose footer holds from 1906 on, compared with glibc given the
 * footer itself as TZ. */
static void
test_footers(void)
{
    static const char *const footers[] = {
        "EST5EDT,M3.2.0,M11.1.0",
        "CET-1CEST,M3.5.0,M10.5.0/3",
        "IST-2IDT,M3.4.4/26,M10.5.0",
        "<-02>2<-01>,M3.5.0/-1,M10.5.0/0",
        "<-04>4<-03>,M9.1.6/24,M4.1.6/24",
        "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
        "<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45",
        "IST-1GMT0,M10.5.0,M3.5.0/1",
        "AAA3BBB,J60/2,300/3",
        "AAA-3BBB-4:30,J59/0,J335/23:59:59",
        "AAA5BBB", /* no rule: the US one, see below */
        "<+0545>-5:45",
        "<-0330>3:30:15",
        "<+14>-14",
        "<-12>12",
        "XYZ-9ABC-10,M4.1.0/1,M10.5.3/-3",
    };
    for (size_t i = 0; i < sizeof footers / sizeof footers[0]; i++) {
        struct tzb b;
        int64_t tr[1] = {-2000000000};
        unsigned char idx[1] = {0};
        /* the standard offset of the footer, as glibc sees it in winter
         * and summer: the type before the footer does not matter */
        struct ttype ty[1] = {{0, 0}};
        build(&b, '2', tr, idx, 1, ty, 1, footers[i]);
        char name[32];
        snprintf(name, sizeof name, "Foot/F%zu", i);
        write_file(name, b.b, b.n);
        /* DST without a rule means the US rule (tzcode); glibc would read
         * the posixrules file instead, so it is given the rule. */
        const char *tz = footers[i];
        if (strcmp(tz, "AAA5BBB") == 0)
            tz = "AAA5BBB,M3.2.0,M11.1.0";
        long days = check_zone(tmpdir, name, tz, T1970, T2060);
        CHECK_MSG(days > 33000, "%s: %ld days", footers[i], days);
        /* The same footer with no transitions at all holds everywhere. */
        build(&b, '3', NULL, NULL, 0, ty, 1, footers[i]);
        snprintf(name, sizeof name, "Foot/N%zu", i);
        write_file(name, b.b, b.n);
        check_zone(tmpdir, name, tz, 946684800, INT64_C(1577836800));
    }

    /* DST all year (RFC 8536 §3.3.1's example): always +1 hour. glibc
     * differs here (standard time for the first hours of each UTC year),
     * so the expectation is written out. */
    struct tzb b;
    struct ttype ty[1] = {{-5 * 3600, 0}};
    build(&b, '3', NULL, NULL, 0, ty, 1, "EST5EDT4,0/0,J365/25");
    write_file("Foot/AllYear", b.b, b.n);
    struct tzwin *z = NULL;
    struct herr e = {{0}, {0}};
    CHECK(tzwin_load(tmpdir, "Foot/AllYear", &z, &e) == 0);
    if (z) {
        long bad = 0;
        for (int i = 0; i < 5000; i++) {
            int64_t t = i < 200 ? civil_days(1990 + i, 1, 1) * DAY +
                                      (int64_t)(i % 13) * 3600 - 7 * 3600
                                : rnd_time(T1970, T2060);
            int64_t local = t - 4 * 3600;
            int64_t ds = fdiv(local, DAY) * DAY + 4 * 3600;
            if (tzwin_offset(z, t) != -4 * 3600 ||
                tzwin_day_start(z, t) != ds ||
                tzwin_next_day_start(z, t) != ds + DAY)
                bad++;
        }
        CHECK_MSG(bad == 0, "DST all year: %ld wrong", bad);
        tzwin_free(z);
    }
}

/* Version 1 data, an empty footer, and the day partition around a
 * fall-back across midnight. */
static void
test_handmade(void)
{
    /* 2001-10-21 (day D): at 00:30 (+01) clocks go back to 23:30 (+00) of
     * the 20th. A version 1 file, so 32-bit times. */
    int64_t D = civil_days(2001, 10, 21);
    int64_t T1 = D * DAY - 1800;
    int64_t tr[3] = {-1000000000, T1, T1 + 200 * DAY};
    unsigned char idx[3] = {0, 1, 0};
    struct ttype ty[2] = {{3600, 1}, {0, 0}};
    struct tzb b;
    const char *names[] = {"Hand/V1", "Hand/V2"};
    build(&b, 0, tr, idx, 3, ty, 2, "");
    write_file(names[0], b.b, b.n);
    build(&b, '2', tr, idx, 3, ty, 2, ""); /* empty footer */
    write_file(names[1], b.b, b.n);
    for (int f = 0; f < 2; f++) {
        struct tzwin *z = NULL;
        struct herr e = {{0}, {0}};
        CHECK_MSG(tzwin_load(tmpdir, names[f], &z, &e) == 0, "%s: %s", names[f],
                  e.msg);
        if (z == NULL)
            continue;
        CHECK(tzwin_offset(z, -2000000000) == 3600); /* before: type 0 */
        CHECK(tzwin_offset(z, T1 - 1) == 3600);
        CHECK(tzwin_offset(z, T1) == 0);
        CHECK(tzwin_offset(z, T1 + 200 * DAY) == 3600);
        CHECK(tzwin_offset(z, INT64_C(4102444800)) == 3600); /* last holds */
        int64_t dstart = D * DAY - 3600; /* 00:00 (+01) of the 21st */
        CHECK(tzwin_day_start(z, T1 - 1) == dstart);
        CHECK(tzwin_day_start(z, T1) == dstart); /* 23:30 of the 20th */
        CHECK(tzwin_day_start(z, T1 + 1799) == dstart);
        CHECK(tzwin_next_day_start(z, T1) == (D + 1) * DAY);
        CHECK(tzwin_next_day_start(z, dstart - 1) == dstart);
        CHECK(tzwin_day_start(z, dstart - 1) == (D - 1) * DAY - 3600);
        CHECK(tzwin_day_start(z, (D + 1) * DAY) == (D + 1) * DAY);
        /* Windows partition the time line. */
        long bad = 0;
        for (int64_t t = (D - 3) * DAY; t < (D + 3) * DAY; t += 97) {
            int64_t ds = tzwin_day_start(z, t), nx = tzwin_next_day_start(z, t);
            if (!(ds <= t && t < nx) || tzwin_day_start(z, nx) != nx ||
                tzwin_next_day_start(z, ds) != nx ||
                tzwin_day_start(z, nx - 1) != ds || nx - ds < 22 * 3600 ||
                nx - ds > 26 * 3600)
                bad++;
        }
        CHECK_MSG(bad == 0, "%s: %ld instants outside a partition", names[f],
                  bad);
        tzwin_free(z);
    }
}

/* Loads `data` as zone Bad/<n>; returns the code (the zone is freed). */
static int
load_bytes(const void *data, size_t len, struct herr *e)
{
    static int seq;
    char name[32];
    snprintf(name, sizeof name, "Bad/B%d", seq++);
    write_file(name, data, len);
    struct tzwin *z = NULL;
    *e = (struct herr){{0}, {0}};
    int rc = tzwin_load(tmpdir, name, &z, e);
    if (rc == 0) {
        /* whatever it says, windows stay ordered */
        for (int i = 0; i < 8; i++) {
            int64_t t = rnd_time(-T2060, 2 * T2060);
            int64_t ds = tzwin_day_start(z, t), nx = tzwin_next_day_start(z, t);
            if (!(ds <= t && t < nx))
                CHECK_MSG(0, "%s: t=%lld ds=%lld nx=%lld", name, (long long)t,
                          (long long)ds, (long long)nx);
        }
        tzwin_free(z);
    } else {
        CHECK(z == NULL);
        CHECK_STR(e->field, "time_zone");
    }
    return rc;
}

static void
set32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void
test_corrupt(void)
{
    struct herr e;
    int64_t tr[2] = {-1000000000, 1000000000};
    unsigned char idx[2] = {1, 0};
    struct ttype ty[2] = {{3600, 1}, {0, 0}};
    struct tzb good;
    build(&good, '2', tr, idx, 2, ty, 2, "CET-1CEST,M3.5.0,M10.5.0/3");
    CHECK(load_bytes(good.b, good.n, &e) == 0);
    /* offsets of the v2 header and its counts */
    size_t h2 = 44 + 6 + 4;
    unsigned char *bad = malloc(2 * 1024 * 1024);

    /* Every truncation. */
    long wrong = 0;
    for (size_t n = 0; n < good.n; n++)
        if (load_bytes(good.b, n, &e) != HERR_INVALID)
            wrong++;
    CHECK_MSG(wrong == 0, "%ld truncations not refused", wrong);
    CHECK(load_bytes(good.b, 30, &e) == HERR_INVALID);
    CHECK(strstr(e.msg, "truncated") != NULL);
    CHECK(strstr(e.msg, "Bad/") != NULL); /* names the zone */

    /* The data block: 2 times at d, 2 indices at d + 16, type 0 at
     * d + 18 (utoff, isdst, desigidx), type 1 at d + 24. */
    size_t d = h2 + 44;
    struct {
        size_t at, size; /* bytes changed: 1 or 4 (big-endian) */
        uint32_t value;
        const char *why;
    } edits[] = {
        {0, 4, 0x545a6966 ^ 1, "magic"},
        {h2, 4, 0x545a6966 ^ 0x100, "second magic"},
        {h2 + 36, 4, 0, "typecnt 0"},
        {h2 + 36, 4, 257, "typecnt 257"},
        {h2 + 36, 4, 0xffffffff, "typecnt huge"},
        {h2 + 32, 4, 0xffffffff, "timecnt huge"},
        {h2 + 32, 4, 0x7fffffff, "timecnt big"},
        {h2 + 40, 4, 0xffffffff, "charcnt huge"},
        {h2 + 40, 4, 0, "charcnt 0"},
        {h2 + 28, 4, 1, "leapcnt 1"},
        {h2 + 28, 4, 0xffffffff, "leapcnt huge"},
        {h2 + 24, 4, 1, "isstdcnt 1 of 2"},
        {h2 + 20, 4, 0xffffffff, "isutcnt huge"},
        {32, 4, 0xffffffff, "v1 timecnt huge"},
        {36, 4, 0, "v1 typecnt 0 (its block shrinks)"},
        {d + 8, 4, 0xffffffff, "times out of order"},
        {d + 16, 1, 2, "index 2 of 2 types"},
        {d + 17, 1, 255, "index 255 of 2 types"},
        {d + 18, 4, 0x80000000, "utoff INT32_MIN"},
        {d + 18, 4, 26 * 3600, "utoff 26 h"},
        {d + 24, 4, (uint32_t)-25 * 3600, "utoff -25 h"},
        {d + 22, 1, 2, "isdst 2"},
        {d + 23, 1, 4, "desigidx 4 of 4"},
        {good.n - 1, 1, 'x', "no final newline"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        memcpy(bad, good.b, good.n);
        if (edits[i].size == 4)
            set32(bad + edits[i].at, edits[i].value);
        else
            bad[edits[i].at] = (unsigned char)edits[i].value;
        CHECK_MSG(load_bytes(bad, good.n, &e) == HERR_INVALID, "%s",
                  edits[i].why);
    }
    /* version byte */
    memcpy(bad, good.b, good.n);
    bad[4] = '9';
    CHECK(load_bytes(bad, good.n, &e) == HERR_INVALID);
    CHECK(strstr(e.msg, "version") != NULL);
    /* trailing bytes after the footer */
    memcpy(bad, good.b, good.n);
    memcpy(bad + good.n, "x", 1);
    CHECK(load_bytes(bad, good.n + 1, &e) == HERR_INVALID);

    /* Bad footers. */
    static const char *const footers[] = {
        "EST",
        "EST5EDT,M13.1.0,M11.1.0",
        "EST5EDT,M3.6.0,M11.1.0",
        "EST5EDT,M3.2.7,M11.1.0",
        "EST5EDT,M3.2.0",
        "EST5EDT,M3.2.0,",
        "EST5EDT,J0,J365",
        "EST5EDT,J366,J1",
        "EST5EDT,366,1",
        "EST5EDT,M3.2.0/168,M11.1.0",
        "EST5EDT,M3.2.0/2:60,M11.1.0",
        "EST25",
        "EST-25",
        "ES5",
        "<AB>5",
        "<A B>5",
        "<+03-3",
        ":Europe/Paris",
        "EST5EDT,M3.2.0,M11.1.0x",
        "EST5 ",
        "EST5EDT,M3.2.0,M11.1.0,M12.1.0",
        "EST99999999999999999999",
    };
    for (size_t i = 0; i < sizeof footers / sizeof footers[0]; i++) {
        struct tzb b;
        build(&b, '2', tr, idx, 2, ty, 2, footers[i]);
        CHECK_MSG(load_bytes(b.b, b.n, &e) == HERR_INVALID, "footer \"%s\"",
                  footers[i]);
    }
    /* A footer holding a NUL or a stray newline. */
    struct tzb b;
    build(&b, '2', tr, idx, 2, ty, 2, "EST5");
    b.b[b.n - 2] = '\0';
    CHECK(load_bytes(b.b, b.n, &e) == HERR_INVALID);
    build(&b, '2', tr, idx, 2, ty, 2, "EST5\nEST5");
    CHECK(load_bytes(b.b, b.n, &e) == HERR_INVALID);

    /* Over 1 MB: refused before parsing. */
    memset(bad, 0, 1024 * 1024 + 1);
    memcpy(bad, good.b, good.n);
    CHECK(load_bytes(bad, 1024 * 1024 + 1, &e) == HERR_INVALID);
    CHECK(strstr(e.msg, "bytes") != NULL);
    /* Empty, and not TZif at all. */
    CHECK(load_bytes("", 0, &e) == HERR_INVALID);
    CHECK(load_bytes("# tzdata leapseconds\n", 21, &e) == HERR_INVALID);

    /* Random byte flips: refused or loaded, never a crash (the sanitizer
     * build runs this too). */
    long loaded = 0;
    for (int i = 0; i < 3000; i++) {
        memcpy(bad, good.b, good.n);
        int flips = 1 + (int)(rnd() % 4);
        for (int k = 0; k < flips; k++)
            bad[rnd() % good.n] ^= (unsigned char)(1u << (rnd() % 8));
        int rc = load_bytes(bad, good.n, &e);
        if (rc == 0)
            loaded++;
        else if (rc != HERR_INVALID)
            CHECK_MSG(0, "flip %d: code %d", i, rc);
    }
    CHECK(loaded > 0 && loaded < 3000);
    free(bad);
}

static void
cleanup(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_tzwin: could not remove %s\n", dir);
}

int
main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s/test_tzwin.XXXXXX", "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    test_names();
    test_utc();
    test_handmade();
    test_footers();
    test_corrupt();
    test_real_zones();
    cleanup(tmpdir);
    return T_DONE("test_tzwin");
}
