/*
 * test_spf — the SPF evaluator (common/spf.c).
 *
 * 1. The openspf RFC 7208 suite, every scenario and test, each against an
 *    in-memory zone serving exactly its zonedata. The suite comes as JSON
 *    from tests/unit/spf_suite.py: `bin/test_spf SUITE.json`, or
 *    $HERALD_SPF_SUITE, or (no argument) the converter is run here.
 * 2. Our own cases: macros, CIDR, the limits, TTLs, the chain,
 *    spf_reaches_domain, the advice text, the answer caps.
 */
#include "../../common/clock.h"
#include "../../common/spf.h"
#include "../spf_zone.h"
#include "../../common/util.h"
#include "t.h"

#include <jansson.h>
#include <libgen.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------- */

/*
 * A zone from rows of three strings (name, type, value), ending with
 * NULL. MX values are "PREF NAME"; TTL 3600 unless the type is followed
 * by "/TTL" ("A/60").
 */
static struct spf_zone *
zone_of(const char *const *rows)
{
    struct spf_zone *z = spf_zone_new();
    for (size_t i = 0; rows[i]; i += 3) {
        char type[16];
        uint32_t ttl = 3600;
        const char *slash = strchr(rows[i + 1], '/');
        size_t tl = slash ? (size_t)(slash - rows[i + 1]) : strlen(rows[i + 1]);
        snprintf(type, sizeof type, "%.*s", (int)tl, rows[i + 1]);
        if (slash)
            ttl = (uint32_t)strtoul(slash + 1, NULL, 10);
        int rc;
        if (strcmp(type, "MX") == 0) {
            char *end;
            unsigned long pref = strtoul(rows[i + 2], &end, 10);
            rc = spf_zone_add_mx(z, rows[i], (uint16_t)pref, end + 1, ttl);
        } else {
            rc = spf_zone_add(z, rows[i], type, rows[i + 2], ttl);
        }
        if (rc != 0) /* a broken fixture; counted only when it happens */
            CHECK_MSG(rc == 0, "zone row %s %s", rows[i], rows[i + 1]);
    }
    return z;
}

struct run {
    struct spf_zone *z;
    struct spf_result res;
};

/* check_host(ip, sender, helo) over rows; the caller frees with run_done. */
static enum spf_res
run_check(struct run *r, const char *const *rows, const char *ip,
          const char *sender, const char *helo)
{
    struct spf_resolver rs;
    struct spf_request req = {0};
    r->z = zone_of(rows);
    spf_zone_resolver(r->z, &rs);
    if (spf_ip_parse(ip, &req.ip) != 0)
        CHECK_MSG(0, "bad fixture address %s", ip);
    req.sender = sender;
    req.helo = helo;
    req.receiver = "mx.receiver.example";
    req.now_s = 1700000000;
    return spf_check_host(&req, &rs, &r->res);
}

static void
run_done(struct run *r)
{
    spf_result_free(&r->res);
    spf_zone_free(r->z);
}

/* The explanation `exp_text` expands to for the given client. */
static char *
exp_of(const char *exp_text, const char *ip, const char *sender)
{
    const char *rows[] = {"email.example.com",
                          "TXT",
                          "v=spf1 -all exp=why.example.com",
                          "why.example.com",
                          "TXT",
                          exp_text,
                          NULL};
    struct run r;
    enum spf_res res = run_check(&r, rows, ip, sender, "mx.example.org");
    CHECK(res == SPF_FAIL);
    char *e = r.res.explanation ? xstrdup(r.res.explanation) : NULL;
    run_done(&r);
    return e;
}

#define CHECK_EXP(text, ip, want)                                              \
    do {                                                                       \
        char *e_ = exp_of((text), (ip), "strong-bad@email.example.com");       \
        CHECK_STR(e_, (want));                                                 \
        free(e_);                                                              \
    } while (0)

/* Result of a one-record policy at example.com for ip. */
static enum spf_res
policy(const char *record, const char *ip)
{
    const char *rows[] = {"example.com",
                          "TXT",
                          record,
                          "mail.example.com",
                          "A",
                          "192.0.2.10",
                          "mail.example.com",
                          "AAAA",
                          "2001:db8::10",
                          "example.com",
                          "MX",
                          "10 mail.example.com",
                          NULL};
    struct run r;
    enum spf_res res = run_check(&r, rows, ip, "u@example.com", "h.example");
    run_done(&r);
    return res;
}

/* ---- the suite -------------------------------------------------------- */

static json_t *
load_suite(const char *argv0, const char *arg)
{
    json_error_t err;
    const char *path = arg ? arg : getenv("HERALD_SPF_SUITE");
    if (path && *path) {
        json_t *j = json_load_file(path, JSON_ALLOW_NUL, &err);
        if (!j)
            fprintf(stderr, "spf suite: %s: %s\n", path, err.text);
        return j;
    }
    /* Run the converter next to this binary's tree, else from the cwd. */
    char *copy = xstrdup(argv0);
    char *script = xasprintf("%s/../tests/unit/spf_suite.py", dirname(copy));
    free(copy);
    if (access(script, R_OK) != 0) {
        free(script);
        script = xstrdup("tests/unit/spf_suite.py");
    }
    char *cmd = xasprintf("/usr/bin/python3 '%s'", script);
    free(script);
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p)
        return NULL;
    json_t *j = json_loadf(p, JSON_ALLOW_NUL, &err);
    int st = pclose(p);
    if (!j || st != 0) {
        fprintf(stderr, "spf suite: the converter failed (%s)\n",
                j ? "exit status" : err.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

static struct spf_zone *
zone_from_json(json_t *zone)
{
    struct spf_zone *z = spf_zone_new();
    size_t i;
    json_t *e;
    json_array_foreach(zone, i, e)
    {
        const char *name = json_string_value(json_array_get(e, 0));
        const char *type = json_string_value(json_array_get(e, 1));
        int rc;
        if (strcmp(type, "TXT") == 0) {
            json_t *ss = json_array_get(e, 2);
            size_t n = json_array_size(ss);
            const char **strs = xcalloc(n + 1, sizeof *strs);
            size_t *lens = xcalloc(n + 1, sizeof *lens);
            for (size_t k = 0; k < n; k++) {
                strs[k] = json_string_value(json_array_get(ss, k));
                lens[k] = json_string_length(json_array_get(ss, k));
            }
            rc = spf_zone_add_txt(z, name, strs, lens, n, 3600);
            free(strs);
            free(lens);
        } else if (strcmp(type, "MX") == 0) {
            rc = spf_zone_add_mx(
                z, name, (uint16_t)json_integer_value(json_array_get(e, 2)),
                json_string_value(json_array_get(e, 3)), 3600);
        } else {
            rc = spf_zone_add(z, name, type,
                              json_string_value(json_array_get(e, 2)), 3600);
        }
        CHECK_MSG(rc == 0, "zone entry %s %s", name, type);
    }
    return z;
}

/* Runs one suite test; 1 when it passes. */
static int
suite_test(json_t *t, const struct spf_resolver *rs, const char *scen)
{
    const char *name = json_string_value(json_object_get(t, "name"));
    struct spf_request req = {0};
    if (spf_ip_parse(json_string_value(json_object_get(t, "host")), &req.ip) !=
        0) {
        fprintf(stderr, "spf suite: %s: bad host\n", name);
        return 0;
    }
    req.sender = json_string_value(json_object_get(t, "mailfrom"));
    req.helo = json_string_value(json_object_get(t, "helo"));
    struct spf_result res;
    enum spf_res got = spf_check_host(&req, rs, &res);
    int ok = 0;
    size_t i;
    json_t *want;
    json_array_foreach(json_object_get(t, "result"), i, want)
    {
        if (strcmp(json_string_value(want), spf_res_str(got)) == 0)
            ok = 1;
    }
    const char *exp = json_string_value(json_object_get(t, "explanation"));
    int exp_ok = 1;
    if (exp) {
        if (strcmp(exp, "DEFAULT") == 0)
            exp_ok = res.explanation == NULL;
        else
            exp_ok = res.explanation && strcmp(res.explanation, exp) == 0;
    }
    if (!ok || !exp_ok) {
        char *want_s = json_dumps(json_object_get(t, "result"), JSON_COMPACT);
        fprintf(stderr,
                "FAIL spf suite [%s] %s: got %s (want %s); reason: %s; "
                "explanation: %s (want %s)\n",
                scen, name, spf_res_str(got), want_s, res.reason,
                res.explanation ? res.explanation : "(none)", exp ? exp : "-");
        free(want_s);
    }
    spf_result_free(&res);
    return ok && exp_ok;
}

static void
test_suite(const char *argv0, const char *arg)
{
    json_t *suite = load_suite(argv0, arg);
    CHECK_MSG(suite != NULL, "the RFC 7208 suite could not be loaded");
    if (!suite)
        return;
    size_t total = 0, passed = 0, i;
    json_t *sc;
    json_array_foreach(json_object_get(suite, "scenarios"), i, sc)
    {
        const char *desc =
            json_string_value(json_object_get(sc, "description"));
        struct spf_zone *z = zone_from_json(json_object_get(sc, "zone"));
        struct spf_resolver rs;
        spf_zone_resolver(z, &rs);
        size_t n = 0, p = 0, k;
        json_t *t;
        json_array_foreach(json_object_get(sc, "tests"), k, t)
        {
            n++;
            int ok = suite_test(t, &rs, desc);
            p += (size_t)ok;
            CHECK(ok);
        }
        printf("spf suite: %-45s %3zu of %3zu\n", desc, p, n);
        total += n;
        passed += p;
        spf_zone_free(z);
    }
    json_int_t declared = json_integer_value(json_object_get(suite, "total"));
    CHECK(total > 0 && (json_int_t)total == declared);
    printf("spf suite: %zu of %zu tests\n", passed, total);
    json_decref(suite);
}

/* ---- addresses -------------------------------------------------------- */

static void
test_ip_parse(void)
{
    struct spf_ip ip;
    CHECK(spf_ip_parse("192.0.2.3", &ip) == 0 && ip.family == 4 &&
          ip.b[0] == 192 && ip.b[3] == 3);
    CHECK(spf_ip_parse("::ffff:192.0.2.3", &ip) == 0 && ip.family == 4 &&
          ip.b[0] == 192 && ip.b[3] == 3);
    CHECK(spf_ip_parse("2001:db8::1", &ip) == 0 && ip.family == 6 &&
          ip.b[0] == 0x20 && ip.b[15] == 1);
    CHECK(spf_ip_parse("192.0.2", &ip) == HERR_INVALID);
    CHECK(spf_ip_parse("example.com", &ip) == HERR_INVALID);
    CHECK(spf_ip_parse(NULL, &ip) == HERR_INVALID);
}

/* ---- macros --------------------------------------------------------------
 * RFC 7208 §7.4 examples: sender strong-bad@email.example.com, client
 * 192.0.2.3 (or 2001:db8::cb01), EHLO mx.example.org. */

static void
test_macros(void)
{
    const char *v4 = "192.0.2.3", *v6 = "2001:db8::cb01";
    CHECK_EXP("%{s}", v4, "strong-bad@email.example.com");
    CHECK_EXP("%{o}", v4, "email.example.com");
    CHECK_EXP("%{d}", v4, "email.example.com");
    CHECK_EXP("%{d4}", v4, "email.example.com");
    CHECK_EXP("%{d3}", v4, "email.example.com");
    CHECK_EXP("%{d2}", v4, "example.com");
    CHECK_EXP("%{d1}", v4, "com");
    CHECK_EXP("%{dr}", v4, "com.example.email");
    CHECK_EXP("%{d2r}", v4, "example.email");
    CHECK_EXP("%{l}", v4, "strong-bad");
    CHECK_EXP("%{l-}", v4, "strong.bad");
    CHECK_EXP("%{lr}", v4, "strong-bad");
    CHECK_EXP("%{lr-}", v4, "bad.strong");
    CHECK_EXP("%{l1r-}", v4, "strong");
    CHECK_EXP("%{ir}.%{v}._spf.%{d2}", v4,
              "3.2.0.192.in-addr._spf.example.com");
    CHECK_EXP("%{lr-}.lp._spf.%{d2}", v4, "bad.strong.lp._spf.example.com");
    CHECK_EXP("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", v4,
              "bad.strong.lp.3.2.0.192.in-addr._spf.example.com");
    CHECK_EXP("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", v4,
              "3.2.0.192.in-addr.strong.lp._spf.example.com");
    CHECK_EXP("%{d2}.trusted-domains.example.net", v4,
              "example.com.trusted-domains.example.net");
    CHECK_EXP("%{ir}.%{v}._spf.%{d2}", v6,
              "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2."
              "ip6._spf.example.com");
    CHECK_EXP("%{c} %{i}", v4, "192.0.2.3 192.0.2.3");
    CHECK_EXP("%{c}", v6, "2001:db8::cb01");
    CHECK_EXP("%{v}", v6, "ip6");
    CHECK_EXP("%{h} %{r} %{t}", v4,
              "mx.example.org mx.receiver.example "
              "1700000000");
    CHECK_EXP("100%% %_ a%-b", v4, "100%   a%20b");
    /* every delimiter, and several at once */
    CHECK_EXP("%{l=}", v4, "strong-bad");
    CHECK_EXP("%{s-.}", v4, "strong.bad@email.example.com");
    CHECK_EXP("%{s2}", v4, "example.com");
    CHECK_EXP("%{s1r-.}", v4, "strong");
    /* upper case: URL-escaped after the transformation */
    CHECK_EXP("%{S}", v4, "strong-bad%40email.example.com");
    CHECK_EXP("%{C}", v6, "2001%3Adb8%3A%3Acb01");
    /* a large digit means all parts */
    CHECK_EXP("%{d200}", v4, "email.example.com");
    /* no local part, no sender */
    {
        char *e = exp_of("%{l}|%{s}", v4, "@email.example.com");
        CHECK_STR(e, "postmaster|postmaster@email.example.com");
        free(e);
    }
    /* syntax errors in the explanation: the explanation is dropped */
    static const char *const bad_exp[] = {"%{x}", "%{d0}",  "%(d)",     "50%",
                                          "%{d",  "%{d2q}", "tab\there"};
    for (size_t i = 0; i < sizeof bad_exp / sizeof bad_exp[0]; i++) {
        char *e = exp_of(bad_exp[i], v4, "strong-bad@email.example.com");
        CHECK_MSG(e == NULL, "explanation %s gave %s", bad_exp[i], e);
        free(e);
    }
    /* ...and in a record: permerror */
    static const char *const bad_rec[] = {
        "v=spf1 exists:%{x}.example.com",
        "v=spf1 exists:%{d0}.example.com",
        "v=spf1 exists:%{c}.example.com",
        "v=spf1 exists:%{r}.example.com",
        "v=spf1 exists:%{t}.example.com",
        "v=spf1 a:50%.example.com",
        "v=spf1 exists:%{d.example.com",
        "v=spf1 foo=%{q}",
        "v=spf1 include:%{d}.",
        "v=spf1 a:example",
        "v=spf1 a:example.123",
        "v=spf1 a:example.-com",
        "v=spf1 redirect=",
        "v=spf1 exp=",
    };
    for (size_t i = 0; i < sizeof bad_rec / sizeof bad_rec[0]; i++)
        CHECK_MSG(policy(bad_rec[i], "192.0.2.10") == SPF_PERMERROR, "%s",
                  bad_rec[i]);
    /* an unknown modifier may use c, r, t and is ignored */
    CHECK(policy("v=spf1 note=%{c}%{r}%{t} -all", "192.0.2.10") == SPF_FAIL);
    /* expansion in a domain: the name queried is the expanded one */
    {
        const char *rows[] = {"email.example.com",
                              "TXT",
                              "v=spf1 exists:%{ir}.%{v}._spf.%{d2} -all",
                              "3.2.0.192.in-addr._spf.example.com",
                              "A",
                              "127.0.0.2",
                              NULL};
        struct run r;
        CHECK(run_check(&r, rows, v4, "strong-bad@email.example.com",
                        "mx.example.org") == SPF_PASS);
        CHECK_STR(r.res.mechanism, "exists:%{ir}.%{v}._spf.%{d2}");
        run_done(&r);
        CHECK(run_check(&r, rows, "192.0.2.4", "strong-bad@email.example.com",
                        "mx.example.org") == SPF_FAIL);
        run_done(&r);
    }
    /* §7.3: over 253 bytes, labels go from the left */
    {
        const char *rows[] = {
            "email.example.com",
            "TXT",
            "v=spf1 exists:%{s}.%{s}.%{s}.%{s}.%{s}.%{s}.%{s}.%{s}.%{s}.x.com "
            "-all",
            NULL,
            NULL,
            NULL,
            NULL};
        /* 9 x 28 bytes + 9 dots + "x.com": drop whole labels until <= 253 */
        char want[512] = "";
        const char *s = "strong-bad@email.example.com";
        char full[512] = "";
        for (int i = 0; i < 9; i++) {
            strcat(full, s);
            strcat(full, ".");
        }
        strcat(full, "x.com");
        const char *p = full;
        while (strlen(p) > 253)
            p = strchr(p, '.') + 1;
        snprintf(want, sizeof want, "%s", p);
        rows[3] = want;
        rows[4] = "A";
        rows[5] = "127.0.0.2";
        struct run r;
        CHECK(strlen(want) <= 253 && strlen(want) > 200);
        CHECK(run_check(&r, rows, v4, s, "mx.example.org") == SPF_PASS);
        run_done(&r);
    }
}

/* ---- CIDR ------------------------------------------------------------- */

static void
test_cidr(void)
{
    CHECK(policy("v=spf1 ip4:192.0.2.0/24 -all", "192.0.2.200") == SPF_PASS);
    CHECK(policy("v=spf1 ip4:192.0.2.0/24 -all", "192.0.3.1") == SPF_FAIL);
    CHECK(policy("v=spf1 ip4:192.0.2.128/25 -all", "192.0.2.127") == SPF_FAIL);
    CHECK(policy("v=spf1 ip4:192.0.2.128/25 -all", "192.0.2.128") == SPF_PASS);
    CHECK(policy("v=spf1 ip4:10.0.0.0/0 -all", "203.0.113.9") == SPF_PASS);
    CHECK(policy("v=spf1 ip4:192.0.2.3 -all", "192.0.2.3") == SPF_PASS);
    CHECK(policy("v=spf1 ip4:192.0.2.3 -all", "192.0.2.4") == SPF_FAIL);
    CHECK(policy("v=spf1 ip4:192.0.2.3/33 -all", "192.0.2.3") == SPF_PERMERROR);
    CHECK(policy("v=spf1 ip4:192.0.2.3/08 -all", "192.0.2.3") == SPF_PERMERROR);
    CHECK(policy("v=spf1 ip4:192.0.2.03 -all", "192.0.2.3") == SPF_PERMERROR);
    CHECK(policy("v=spf1 ip4:192.0.2.3/ -all", "192.0.2.3") == SPF_PERMERROR);
    CHECK(policy("v=spf1 ip6:2001:db8::/32 -all", "2001:db8:ffff::1") ==
          SPF_PASS);
    CHECK(policy("v=spf1 ip6:2001:db8::/32 -all", "2001:db9::1") == SPF_FAIL);
    CHECK(policy("v=spf1 ip6:2001:db8::/33 -all", "2001:db8:8000::1") ==
          SPF_FAIL);
    CHECK(policy("v=spf1 ip6:2001:db8::/129 -all", "2001:db8::1") ==
          SPF_PERMERROR);
    /* an IPv4-mapped client is IPv4: ip6 never matches it */
    CHECK(policy("v=spf1 ip6:::ffff:192.0.2.3 ?all", "::ffff:192.0.2.3") ==
          SPF_NEUTRAL);
    CHECK(policy("v=spf1 ip4:192.0.2.3 ?all", "::ffff:192.0.2.3") == SPF_PASS);
    /* dual CIDR on a and mx: mail.example.com = 192.0.2.10, 2001:db8::10 */
    CHECK(policy("v=spf1 a:mail.example.com/24 -all", "192.0.2.99") ==
          SPF_PASS);
    CHECK(policy("v=spf1 a:mail.example.com -all", "192.0.2.99") == SPF_FAIL);
    CHECK(policy("v=spf1 a:mail.example.com/24//120 -all", "2001:db8::ff") ==
          SPF_PASS);
    CHECK(policy("v=spf1 a:mail.example.com/24//124 -all", "2001:db8::ff") ==
          SPF_FAIL);
    CHECK(policy("v=spf1 a:mail.example.com//120 -all", "192.0.2.99") ==
          SPF_FAIL);
    CHECK(policy("v=spf1 mx/30 -all", "192.0.2.11") == SPF_PASS);
    CHECK(policy("v=spf1 mx/30 -all", "192.0.2.12") == SPF_FAIL);
    CHECK(policy("v=spf1 mx//64 -all", "2001:db8::1:2") == SPF_PASS);
    CHECK(policy("v=spf1 a/24/64 -all", "192.0.2.10") == SPF_PERMERROR);
    CHECK(policy("v=spf1 ptr/24 -all", "192.0.2.10") == SPF_PERMERROR);
    CHECK(policy("v=spf1 include:example.com/24 -all", "192.0.2.10") ==
          SPF_PERMERROR);
    CHECK(policy("v=spf1 -all/8", "192.0.2.10") == SPF_PERMERROR);
}

/* ---- limits ----------------------------------------------------------- */

/* A policy of n "a:hN.example.com" terms (each void) then ip4 and -all. */
static void
test_lookup_limit(void)
{
    for (int n = 9; n <= 11; n++) {
        struct buf rec;
        char *names[12];
        const char *rows[3 * 14 + 1];
        buf_init(&rec, 0);
        buf_puts(&rec, "v=spf1");
        size_t k = 0;
        for (int i = 0; i < n; i++) {
            buf_printf(&rec, " a:h%d.example.com", i);
            names[i] = xasprintf("h%d.example.com", i);
            rows[k++] = names[i];
            rows[k++] = "A";
            rows[k++] = "198.51.100.1";
        }
        buf_puts(&rec, " ip4:192.0.2.1 -all");
        rows[k++] = "example.com";
        rows[k++] = "TXT";
        rows[k++] = rec.p;
        rows[k] = NULL;
        struct run r;
        enum spf_res res =
            run_check(&r, rows, "192.0.2.1", "u@example.com", "h.example");
        CHECK_MSG(res == (n <= SPF_LOOKUP_MAX ? SPF_PASS : SPF_PERMERROR),
                  "%d terms gave %s", n, spf_res_str(res));
        /* the TXT look-up plus at most ten terms: nothing beyond */
        CHECK(spf_zone_queries(r.z) ==
              1 + (size_t)(n <= SPF_LOOKUP_MAX ? n : SPF_LOOKUP_MAX));
        CHECK(r.res.lookups == (n <= SPF_LOOKUP_MAX ? n : SPF_LOOKUP_MAX));
        if (n > SPF_LOOKUP_MAX)
            CHECK(strstr(r.res.reason, "more than 10") != NULL);
        run_done(&r);
        for (int i = 0; i < n; i++)
            free(names[i]);
        buf_free(&rec);
    }

    /* include loops end at the limit, with a bounded number of queries */
    {
        const char *rows[] = {"example.com",
                              "TXT",
                              "v=spf1 include:b.example.com -all",
                              "b.example.com",
                              "TXT",
                              "v=spf1 include:example.com -all",
                              NULL};
        struct run r;
        CHECK(run_check(&r, rows, "192.0.2.1", "u@example.com", "h") ==
              SPF_PERMERROR);
        CHECK(spf_zone_queries(r.z) == 11);
        CHECK(r.res.nchain == 11);
        CHECK(r.res.nchain <= SPF_CHAIN_MAX);
        run_done(&r);
    }
    /* a record of 2000 DNS terms: still ten look-ups */
    {
        struct buf b;
        buf_init(&b, 0);
        buf_puts(&b, "v=spf1");
        for (int i = 0; i < 2000; i++)
            buf_puts(&b, " a");
        const char *rows[] = {"example.com", "TXT", b.p, NULL};
        struct run r;
        CHECK(b.len < SPF_TXT_MAX);
        CHECK(run_check(&r, rows, "192.0.2.1", "u@example.com", "h") ==
              SPF_PERMERROR);
        CHECK(spf_zone_queries(r.z) <= 11);
        run_done(&r);
        buf_free(&b);
    }
    /* exp= does not count */
    {
        const char *rows[] = {
            "example.com",
            "TXT",
            "v=spf1 a a a a a a a a a a -all exp=e.example.com",
            "example.com",
            "A",
            "198.51.100.1",
            "e.example.com",
            "TXT",
            "no %{i}",
            NULL};
        struct run r;
        CHECK(run_check(&r, rows, "192.0.2.1", "u@example.com", "h") ==
              SPF_FAIL);
        CHECK_STR(r.res.explanation, "no 192.0.2.1");
        CHECK(r.res.lookups == 10);
        run_done(&r);
    }
}

static void
test_void_mx_ptr_limits(void)
{
    /* voids: two allowed, the third is permerror; NXDOMAIN or NODATA */
    CHECK(policy("v=spf1 a:n1.example.com a:n2.example.com ?all",
                 "192.0.2.1") == SPF_NEUTRAL);
    CHECK(policy("v=spf1 a:n1.example.com a:n2.example.com "
                 "exists:n3.example.com ?all",
                 "192.0.2.1") == SPF_PERMERROR);
    CHECK(policy("v=spf1 a:n1.example.com mx:mail.example.com "
                 "a:n3.example.com ?all",
                 "192.0.2.1") == SPF_PERMERROR);
    /* MX: ten names fine, eleven permerror */
    for (int n = 10; n <= 11; n++) {
        const char *rows[3 * 13 + 1];
        char *mx[12];
        size_t k = 0;
        rows[k++] = "example.com";
        rows[k++] = "TXT";
        rows[k++] = "v=spf1 mx -all";
        for (int i = 0; i < n; i++) {
            mx[i] = xasprintf("%d m%d.example.com", i, i);
            rows[k++] = "example.com";
            rows[k++] = "MX";
            rows[k++] = mx[i];
        }
        rows[k++] = "m9.example.com";
        rows[k++] = "A";
        rows[k++] = "192.0.2.9";
        rows[k] = NULL;
        struct run r;
        enum spf_res res =
            run_check(&r, rows, "192.0.2.9", "u@example.com", "h");
        CHECK(res == (n <= SPF_MX_MAX ? SPF_PASS : SPF_PERMERROR));
        run_done(&r);
        for (int i = 0; i < n; i++)
            free(mx[i]);
    }
    /* PTR: only the first ten names are validated */
    {
        const char *rows[3 * 14 + 1];
        char *ptr[12];
        size_t k = 0;
        rows[k++] = "example.com";
        rows[k++] = "TXT";
        rows[k++] = "v=spf1 ptr -all";
        for (int i = 0; i < 11; i++) {
            ptr[i] = xasprintf("h%d.%s", i, i == 10 ? "example.com" : "other");
            rows[k++] = "1.2.0.192.in-addr.arpa";
            rows[k++] = "PTR";
            rows[k++] = ptr[i];
        }
        rows[k++] = "h10.example.com";
        rows[k++] = "A";
        rows[k++] = "192.0.2.1";
        rows[k] = NULL;
        struct run r;
        CHECK(run_check(&r, rows, "192.0.2.1", "u@example.com", "h") ==
              SPF_FAIL);
        /* TXT, PTR, ten forward look-ups */
        CHECK(spf_zone_queries(r.z) == 12);
        run_done(&r);
        for (int i = 0; i < 11; i++)
            free(ptr[i]);
    }
    /* a validated PTR name within the target matches */
    {
        const char *rows[] = {"example.com",
                              "TXT",
                              "v=spf1 ptr -all",
                              "1.2.0.192.in-addr.arpa",
                              "PTR",
                              "Mail.Example.COM.",
                              "mail.example.com",
                              "A",
                              "192.0.2.1",
                              NULL};
        struct run r;
        CHECK(run_check(&r, rows, "192.0.2.1", "u@example.com", "h") ==
              SPF_PASS);
        run_done(&r);
    }
}

static void
test_caps_and_errors(void)
{
    /* answers: at most SPF_ANSWER_MAX records, names and TXT capped */
    struct spf_answer a;
    spf_answer_init(&a, SPF_RR_A);
    unsigned char ip[4] = {192, 0, 2, 1};
    int rc = 0;
    for (int i = 0; i < SPF_ANSWER_MAX && rc == 0; i++)
        rc = spf_answer_add_addr(&a, ip, 60);
    CHECK(rc == 0 && a.n == SPF_ANSWER_MAX && !a.truncated);
    CHECK(spf_answer_add_addr(&a, ip, 60) == HERR_TOOBIG && a.truncated);
    CHECK(a.n == SPF_ANSWER_MAX);
    CHECK(spf_answer_add_name(&a, "x.example", 60) == HERR_INVALID);
    spf_answer_free(&a);

    spf_answer_init(&a, SPF_RR_PTR);
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK(spf_answer_add_name(&a, longname, 60) == HERR_INVALID);
    CHECK(spf_answer_add_name(&a, "mail.example.com.", 60) == 0);
    CHECK_STR(a.rr[0].name, "mail.example.com");
    spf_answer_free(&a);

    spf_answer_init(&a, SPF_RR_TXT);
    char *big = xmalloc(SPF_TXT_MAX + 10);
    memset(big, 'x', SPF_TXT_MAX + 10);
    const char *strs[2] = {"v=spf1 ", big};
    size_t lens[2] = {7, SPF_TXT_MAX + 10};
    CHECK(spf_answer_add_txt(&a, strs, lens, 2, 60) == 0);
    CHECK(a.rr[0].truncated && a.rr[0].txt_len == SPF_TXT_MAX);
    CHECK(spf_answer_add_txt(&a, strs, lens, SPF_TXT_STRINGS_MAX + 1, 60) ==
          HERR_INVALID);
    spf_answer_free(&a);

    /* a v=spf1 record over the cap is permerror */
    {
        struct spf_zone *z = spf_zone_new();
        struct spf_resolver rs;
        spf_zone_resolver(z, &rs);
        CHECK(spf_zone_add_txt(z, "example.com", strs, lens, 2, 60) == 0);
        struct spf_request req = {0};
        spf_ip_parse("192.0.2.1", &req.ip);
        req.sender = "u@example.com";
        struct spf_result res;
        CHECK(spf_check_host(&req, &rs, &res) == SPF_PERMERROR);
        CHECK(strstr(res.reason, "longer than") != NULL);
        spf_result_free(&res);
        spf_zone_free(z);
    }
    free(big);

    /* a temporary error anywhere is temperror; the time limit too */
    {
        const char *rows[] = {"example.com",
                              "TXT",
                              "v=spf1 mx -all",
                              "example.com",
                              "MX",
                              "10 slow.example.com",
                              "slow.example.com",
                              "TIMEOUT",
                              "",
                              NULL};
        struct run r;
        CHECK(run_check(&r, rows, "192.0.2.1", "u@example.com", "h") ==
              SPF_TEMPERROR);
        CHECK(strstr(r.res.reason, "slow.example.com") != NULL);
        run_done(&r);

        const char *ok[] = {"example.com", "TXT", "v=spf1 +all", NULL};
        struct spf_zone *z = zone_of(ok);
        struct spf_resolver rs;
        spf_zone_resolver(z, &rs);
        struct spf_request req = {0};
        spf_ip_parse("192.0.2.1", &req.ip);
        req.sender = "u@example.com";
        clock_set_fixed(1000000);
        req.deadline_ms = 999999;
        struct spf_result res;
        CHECK(spf_check_host(&req, &rs, &res) == SPF_TEMPERROR);
        CHECK(strstr(res.reason, "time limit") != NULL);
        CHECK(spf_zone_queries(z) == 0);
        spf_result_free(&res);
        req.deadline_ms = 1000001;
        CHECK(spf_check_host(&req, &rs, &res) == SPF_PASS);
        spf_result_free(&res);
        clock_set_fixed(-1);
        spf_zone_free(z);
    }
    /* bytes from DNS (a PTR name via %{p}) never reach the outputs raw */
    {
        const char *rows[] = {"example.com",
                              "TXT",
                              "v=spf1 exists:%{p}.nx exists:%{p}.nx "
                              "exists:%{p}.nx -all exp=e.example.com",
                              "e.example.com",
                              "TXT",
                              "from %{p}",
                              "1.2.0.192.in-addr.arpa",
                              "PTR",
                              "h\x01\xc3.example.com",
                              "h\x01\xc3.example.com",
                              "A",
                              "192.0.2.1",
                              NULL};
        struct run r;
        CHECK(run_check(&r, rows, "192.0.2.1", "u@example.com", "h") ==
              SPF_PERMERROR);
        CHECK_STR(r.res.reason, "more than 2 void DNS look-ups (names without "
                                "records; the last was h??.example.com.nx)");
        run_done(&r);
        rows[2] = "v=spf1 -all exp=e.example.com";
        CHECK(run_check(&r, rows, "192.0.2.1", "u@example.com", "h") ==
              SPF_FAIL);
        CHECK(r.res.explanation == NULL);
        run_done(&r);
        rows[8] = "mail.example.com";
        rows[9] = "mail.example.com";
        CHECK(run_check(&r, rows, "192.0.2.1", "u@example.com", "h") ==
              SPF_FAIL);
        CHECK_STR(r.res.explanation, "from mail.example.com");
        run_done(&r);
    }
    /* unknown bytes are shown escaped; the record is permerror */
    {
        const char *rows[] = {"example.com", "TXT", "v=spf1 a\x01 -all", NULL};
        struct run r;
        CHECK(run_check(&r, rows, "192.0.2.1", "u@example.com", "h") ==
              SPF_PERMERROR);
        CHECK_STR(r.res.record, "v=spf1 a\\x01 -all");
        run_done(&r);
    }
}

/* ---- TTL, chain, explanation ------------------------------------------ */

static void
test_ttl_chain(void)
{
    const char *rows[] = {"example.com",
                          "TXT/900",
                          "v=spf1 include:_spf.example.com "
                          "redirect=tail.example.com",
                          "_spf.example.com",
                          "TXT/600",
                          "v=spf1 a:mail.example.com -all",
                          "mail.example.com",
                          "A/120",
                          "198.51.100.7",
                          "tail.example.com",
                          "TXT/3600",
                          "v=spf1 ip4:192.0.2.0/24 -all exp=e.example.com",
                          "e.example.com",
                          "TXT/30",
                          "%{d} says no to %{i}",
                          NULL};
    struct run r;
    CHECK(run_check(&r, rows, "203.0.113.5", "u@Example.COM.", "h") ==
          SPF_FAIL);
    CHECK_STR(r.res.domain, "Example.COM");
    CHECK_STR(r.res.mechanism, "-all");
    CHECK_STR(r.res.explanation, "tail.example.com says no to 203.0.113.5");
    CHECK(r.res.ttl == 30);
    CHECK(r.res.lookups == 3);
    CHECK(r.res.nchain == 3);
    if (r.res.nchain == 3) {
        CHECK_STR(r.res.chain[0].domain, "Example.COM");
        CHECK(r.res.chain[0].via == SPF_VIA_CHECK && r.res.chain[0].depth == 0);
        CHECK(r.res.chain[0].result == SPF_FAIL);
        CHECK_STR(r.res.chain[1].domain, "_spf.example.com");
        CHECK(r.res.chain[1].via == SPF_VIA_INCLUDE &&
              r.res.chain[1].depth == 1);
        CHECK(r.res.chain[1].result == SPF_FAIL);
        CHECK_STR(r.res.chain[1].record, "v=spf1 a:mail.example.com -all");
        CHECK_STR(r.res.chain[2].domain, "tail.example.com");
        CHECK(r.res.chain[2].via == SPF_VIA_REDIRECT);
    }
    CHECK_STR(r.res.record,
              "v=spf1 include:_spf.example.com redirect=tail.example.com");
    CHECK(strstr(r.res.reason, "-all in tail.example.com") != NULL);
    run_done(&r);

    /* pass via the include: TTL is the smallest answer used */
    CHECK(run_check(&r, rows, "198.51.100.7", "u@example.com", "h") ==
          SPF_PASS);
    CHECK_STR(r.res.mechanism, "include:_spf.example.com");
    CHECK(r.res.ttl == 120);
    CHECK(r.res.explanation == NULL);
    run_done(&r);

    /* what decided inside an include is not the result's */
    const char *inc[] = {"example.com",
                         "TXT",
                         "v=spf1 include:inner.example.com ?all",
                         "inner.example.com",
                         "TXT",
                         "v=spf1 -all exp=e.example.com",
                         "e.example.com",
                         "TXT",
                         "inner says no",
                         NULL};
    CHECK(run_check(&r, inc, "192.0.2.1", "u@example.com", "h") == SPF_NEUTRAL);
    CHECK_STR(r.res.mechanism, "?all");
    CHECK(r.res.explanation == NULL);
    CHECK(r.res.nchain == 2 && r.res.chain[1].result == SPF_FAIL);
    run_done(&r);
    const char *inc2[] = {"example.com",
                          "TXT",
                          "v=spf1 include:inner.example.com",
                          "inner.example.com",
                          "TXT",
                          "v=spf1 -all exp=e.example.com",
                          "e.example.com",
                          "TXT",
                          "inner says no",
                          NULL};
    CHECK(run_check(&r, inc2, "192.0.2.1", "u@example.com", "h") ==
          SPF_NEUTRAL);
    CHECK(r.res.mechanism == NULL && r.res.explanation == NULL);
    CHECK_STR(r.res.reason,
              "no mechanism matched in example.com, so the result is neutral");
    run_done(&r);

    /* softfail carries no explanation */
    const char *soft[] = {"example.com",
                          "TXT",
                          "v=spf1 ~all exp=e.example.com",
                          "e.example.com",
                          "TXT",
                          "why",
                          NULL};
    CHECK(run_check(&r, soft, "192.0.2.1", "u@example.com", "h") ==
          SPF_SOFTFAIL);
    CHECK(r.res.explanation == NULL);
    run_done(&r);

    /* no record: none, with a negative TTL */
    const char *empty[] = {"other.example", "A", "192.0.2.1", NULL};
    CHECK(run_check(&r, empty, "192.0.2.1", "u@example.com", "h") == SPF_NONE);
    CHECK(r.res.ttl == 300);
    CHECK(r.res.record == NULL);
    run_done(&r);
    CHECK(run_check(&r, empty, "192.0.2.1", "u@localhost", "h") == SPF_NONE);
    CHECK(r.res.ttl == UINT32_MAX);
    CHECK(spf_zone_queries(r.z) == 0);
    run_done(&r);
}

/* ---- spf_reaches_domain ----------------------------------------------- */

static int
reaches(const char *const *rows, const char *domain, enum spf_res *res,
        struct spf_result *keep)
{
    struct spf_zone *z = zone_of(rows);
    struct spf_resolver rs;
    spf_zone_resolver(z, &rs);
    struct spf_result out;
    int got = spf_reaches_domain(domain, "sender.herald.example", &rs, 0, &out);
    *res = out.result;
    CHECK(got == (out.result == SPF_PASS));
    if (keep)
        *keep = out;
    else
        spf_result_free(&out);
    spf_zone_free(z);
    return got;
}

static void
test_reaches(void)
{
    enum spf_res res;
    const char *direct[] = {"org.example", "TXT",
                            "v=spf1 mx ip4:192.0.2.0/24 include:sender.herald."
                            "example ~all",
                            NULL};
    struct spf_result out;
    CHECK(reaches(direct, "org.example", &res, &out) == 1 && res == SPF_PASS);
    CHECK_STR(out.mechanism, "include:sender.herald.example");
    CHECK(strstr(out.reason, "reaches include:sender.herald.example") != NULL);
    CHECK(out.lookups == 2);
    spf_result_free(&out);

    const char *nested[] = {"org.example",
                            "TXT",
                            "v=spf1 include:_spf.org.example -all",
                            "_spf.org.example",
                            "TXT",
                            "v=spf1 a include:Sender.Herald.Example. -all",
                            NULL};
    CHECK(reaches(nested, "org.example", &res, &out) == 1);
    CHECK_STR(out.mechanism, "include:_spf.org.example");
    CHECK(out.nchain == 2);
    spf_result_free(&out);

    const char *redirect[] = {"org.example",
                              "TXT",
                              "v=spf1 redirect=_spf.org.example",
                              "_spf.org.example",
                              "TXT",
                              "v=spf1 include:sender.herald.example -all",
                              NULL};
    CHECK(reaches(redirect, "org.example", &res, NULL) == 1);

    const char *after_all[] = {"org.example", "TXT",
                               "v=spf1 -all include:sender.herald.example",
                               NULL};
    CHECK(reaches(after_all, "org.example", &res, NULL) == 0 &&
          res == SPF_FAIL);

    const char *qualified[] = {"org.example", "TXT",
                               "v=spf1 ?include:sender.herald.example -all",
                               NULL};
    CHECK(reaches(qualified, "org.example", &res, NULL) == 0 &&
          res == SPF_NEUTRAL);

    const char *lookalike[] = {"org.example",
                               "TXT",
                               "v=spf1 include:sender.herald.example.evil "
                               "include:xsender.herald.example "
                               "include:spf.sender.herald.example ~all",
                               "sender.herald.example.evil",
                               "TXT",
                               "v=spf1 -all",
                               "xsender.herald.example",
                               "TXT",
                               "v=spf1 -all",
                               "spf.sender.herald.example",
                               "TXT",
                               "v=spf1 -all",
                               NULL};
    CHECK(reaches(lookalike, "org.example", &res, NULL) == 0 &&
          res == SPF_SOFTFAIL);

    const char *none[] = {"org.example", "TXT", "google-site-verification=x",
                          NULL};
    CHECK(reaches(none, "org.example", &res, NULL) == 0 && res == SPF_NONE);

    const char *broken_first[] = {"org.example", "TXT",
                                  "v=spf1 include:gone.example "
                                  "include:sender.herald.example -all",
                                  NULL};
    CHECK(reaches(broken_first, "org.example", &res, NULL) == 0 &&
          res == SPF_PERMERROR);

    const char *broken_later[] = {"org.example", "TXT",
                                  "v=spf1 include:sender.herald.example "
                                  "include:gone.example -all",
                                  NULL};
    CHECK(reaches(broken_later, "org.example", &res, NULL) == 1);

    const char *syntax[] = {"org.example", "TXT",
                            "v=spf1 include:sender.herald.example -all foo",
                            NULL};
    CHECK(reaches(syntax, "org.example", &res, NULL) == 0 &&
          res == SPF_PERMERROR);

    const char *timeout[] = {"org.example",
                             "TXT",
                             "v=spf1 include:slow.example "
                             "include:sender.herald.example -all",
                             "slow.example",
                             "TIMEOUT",
                             "",
                             NULL};
    CHECK(reaches(timeout, "org.example", &res, NULL) == 0 &&
          res == SPF_TEMPERROR);

    /* ten terms before it: the include is the eleventh look-up */
    const char *too_many[] = {"org.example", "TXT",
                              "v=spf1 a mx a mx a mx a mx a mx "
                              "include:sender.herald.example -all",
                              NULL};
    CHECK(reaches(too_many, "org.example", &res, NULL) == 0 &&
          res == SPF_PERMERROR);
    const char *nine[] = {"org.example", "TXT",
                          "v=spf1 a mx a mx a mx a mx a "
                          "include:sender.herald.example -all",
                          NULL};
    CHECK(reaches(nine, "org.example", &res, NULL) == 1);

    /* a loop through redirect ends in permerror */
    const char *loop[] = {"org.example", "TXT", "v=spf1 redirect=org.example",
                          NULL};
    CHECK(reaches(loop, "org.example", &res, NULL) == 0 &&
          res == SPF_PERMERROR);

    /* macros expand for postmaster@<domain> */
    const char *macro[] = {"org.example",
                           "TXT",
                           "v=spf1 include:%{d}.spf.example -all",
                           "org.example.spf.example",
                           "TXT",
                           "v=spf1 include:sender.herald.example -all",
                           NULL};
    CHECK(reaches(macro, "org.example", &res, NULL) == 1);
}

/* ---- advice ----------------------------------------------------------- */

static char *
advice_for(const char *record, const char *ip)
{
    const char *rows[] = {"org.example",
                          "TXT",
                          record ? record : "not an SPF record",
                          "sender.herald.example",
                          "TXT",
                          "v=spf1 ip4:198.51.100.0/24 -all",
                          "mail.org.example",
                          "A",
                          "192.0.2.1",
                          "org.example",
                          "MX",
                          "10 mail.org.example",
                          "org.example",
                          "A",
                          "192.0.2.2",
                          NULL};
    struct run r;
    run_check(&r, rows, ip, "u@org.example", "h");
    char *s = spf_advice(&r.res, "sender.herald.example.");
    run_done(&r);
    return s;
}

#define CHECK_HAS(s, needle)                                                   \
    CHECK_MSG(strstr((s), (needle)) != NULL, "\"%s\" lacks \"%s\"", (s),       \
              (needle))

static void
test_advice(void)
{
    const char *relay = "198.51.100.20";
    char *s = advice_for("v=spf1 mx ~all", relay);
    CHECK_HAS(s, "The result is softfail");
    CHECK_HAS(s, "Add include:sender.herald.example before the all mechanism: "
                 "v=spf1 mx include:sender.herald.example ~all");
    free(s);

    s = advice_for("v=spf1 ~all", relay);
    CHECK_HAS(s, ": v=spf1 include:sender.herald.example ~all");
    free(s);

    s = advice_for("v=spf1 -all include:sender.herald.example", relay);
    CHECK_HAS(s, "Move it before the all mechanism: v=spf1 "
                 "include:sender.herald.example -all");
    free(s);

    s = advice_for("v=spf1 ?include:sender.herald.example -all", relay);
    CHECK_HAS(s, "Change ?include:sender.herald.example to "
                 "include:sender.herald.example: v=spf1 "
                 "include:sender.herald.example -all");
    free(s);

    s = advice_for("v=spf1 mx redirect=_spf.org.example", relay);
    CHECK_HAS(s, "is broken (permerror): redirect=_spf.org.example");
    free(s);

    s = advice_for("v=spf1 mx exp=why.org.example", relay);
    CHECK_HAS(s, "Add include:sender.herald.example to the record: v=spf1 mx "
                 "include:sender.herald.example exp=why.org.example");
    free(s);

    s = advice_for("v=spf1 include:sender.herald.example -all", relay);
    CHECK_HAS(s, "authorises the platform (include:sender.herald.example)");
    CHECK_HAS(s, "nothing to do");
    free(s);

    /* included, but the platform's own record does not list the host */
    s = advice_for("v=spf1 include:sender.herald.example -all", "203.0.113.1");
    CHECK_HAS(s, "already includes sender.herald.example, yet the result is "
                 "fail");
    free(s);

    s = advice_for(NULL, relay);
    CHECK_HAS(s, "publishes no SPF record");
    CHECK_HAS(s, "v=spf1 include:sender.herald.example ~all");
    free(s);

    s = advice_for("v=spf1 a:bad..name -all foo", relay);
    CHECK_HAS(s, "is broken");
    CHECK_HAS(s, "\"foo\": unknown mechanism");
    CHECK_HAS(s, "add include:sender.herald.example before the all");
    free(s);

    s = advice_for("v=spf1 a a a a a a a a a a ~all", relay);
    CHECK_HAS(s, "already uses 10 of the 10 DNS look-ups");
    free(s);

    /* temperror */
    const char *rows[] = {"org.example", "TIMEOUT", "", NULL};
    struct run r;
    CHECK(run_check(&r, rows, relay, "u@org.example", "h") == SPF_TEMPERROR);
    s = spf_advice(&r.res, "sender.herald.example");
    CHECK_HAS(s, "could not finish");
    CHECK_HAS(s, "TXT org.example");
    free(s);
    run_done(&r);

    /* from the reach check too */
    const char *reach[] = {"org.example", "TXT", "v=spf1 mx -all", NULL};
    struct spf_zone *z = zone_of(reach);
    struct spf_resolver rs;
    spf_zone_resolver(z, &rs);
    struct spf_result out;
    CHECK(spf_reaches_domain("org.example", "sender.herald.example", &rs, 0,
                             &out) == 0);
    s = spf_advice(&out, "sender.herald.example");
    CHECK_HAS(s, "v=spf1 mx include:sender.herald.example -all");
    free(s);
    spf_result_free(&out);
    spf_zone_free(z);
}

/* ---- invariants over random records -------------------------------------
 * Records assembled from SPF fragments (most invalid, some looping through
 * a.example and b.example): whatever they say, a check ends, stays within
 * the limits, and its strings are printable ASCII. */

static uint32_t rnd_state = 12345;

static uint32_t
rnd(uint32_t n)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 8) % n;
}

static int
printable(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return 0;
    return 1;
}

static void
random_record(struct buf *b)
{
    static const char *const frag[] = {
        " ",         " ",          " a",        " mx",      " ptr",
        " all",      " -all",      " ~all",     " ?all",    " +",
        " include:", " exists:",   " ip4:",     " ip6:",    " redirect=",
        " exp=",     "a.example",  "b.example", "%{d}",     "%{i}",
        "%{ir}.",    "%{l1r-}",    "%{p}",      "%{S}",     "%%",
        "%_",        "%-",         "/24",       "//64",     "/0",
        "192.0.2.1", "2001:db8::", ":",         ".",        "x.",
        "%{h}",      "%{d2}",      ".example",  " foo=bar", "\x01"};
    buf_reset(b);
    static const char *const term[] = {" a",
                                       " mx",
                                       " ptr",
                                       " -all",
                                       " ~all",
                                       " ?all",
                                       " include:a.example",
                                       " include:b.example",
                                       " redirect=b.example",
                                       " redirect=a.example",
                                       " exists:%{ir}.a.example",
                                       " a:%{d}",
                                       " mx:b.example/24//64",
                                       " ip4:192.0.2.0/24",
                                       " -ip6:2001:db8::/32",
                                       " exp=%{d}",
                                       " ptr:a.example",
                                       " a/0",
                                       " include:%{d}",
                                       " exists:%{p}.a.example"};
    buf_puts(b, "v=spf1");
    int n = (int)rnd(14);
    for (int i = 0; i < n; i++) {
        if (rnd(4) > 0)
            buf_puts(b, term[rnd(sizeof term / sizeof term[0])]);
        else
            buf_puts(b, frag[rnd(sizeof frag / sizeof frag[0])]);
    }
}

static void
test_random(void)
{
    struct buf ra, rb;
    buf_init(&ra, 0);
    buf_init(&rb, 0);
    int bad = 0, seen[SPF_PERMERROR + 1] = {0};
    for (int iter = 0; iter < 3000 && bad < 5; iter++) {
        random_record(&ra);
        random_record(&rb);
        const char *rows[] = {
            "a.example", "TXT",       ra.p,          "b.example",
            "TXT",       rb.p,        "a.example",   "A",
            "192.0.2.1", "a.example", "MX",          "10 b.example",
            "b.example", "AAAA",      "2001:db8::1", "1.2.0.192.in-addr.arpa",
            "PTR",       "a.example", NULL};
        struct run r;
        const char *ip = iter % 2 ? "192.0.2.1" : "2001:db8::1";
        enum spf_res res = run_check(&r, rows, ip, "u@a.example", "b.example");
        int ok = res <= SPF_PERMERROR && r.res.result == res &&
                 r.res.reason != NULL && r.res.lookups <= SPF_LOOKUP_MAX &&
                 r.res.nchain <= SPF_CHAIN_MAX &&
                 spf_zone_queries(r.z) <= 1 + SPF_LOOKUP_MAX * 11 + 11 + 1 &&
                 printable(r.res.reason) && printable(r.res.record) &&
                 printable(r.res.explanation) && printable(r.res.mechanism);
        char *adv = spf_advice(&r.res, "b.example");
        ok = ok && printable(adv);
        free(adv);
        struct spf_result reach;
        struct spf_resolver rs;
        spf_zone_resolver(r.z, &rs);
        spf_reaches_domain("a.example", "b.example", &rs, 0, &reach);
        ok = ok && reach.lookups <= SPF_LOOKUP_MAX && printable(reach.reason);
        spf_result_free(&reach);
        if (!ok) {
            bad++;
            fprintf(stderr, "random: %s | %s -> %s (%s)\n", ra.p, rb.p,
                    spf_res_str(res), r.res.reason);
        }
        CHECK(ok);
        if (res <= SPF_PERMERROR)
            seen[res]++;
        run_done(&r);
    }
    printf("spf random records:");
    for (int i = 0; i <= SPF_PERMERROR; i++)
        printf(" %s %d", spf_res_str((enum spf_res)i), seen[i]);
    printf("\n");
    /* the records reach every result but none and temperror */
    CHECK(seen[SPF_PASS] > 0 && seen[SPF_FAIL] > 0 && seen[SPF_NEUTRAL] > 0 &&
          seen[SPF_SOFTFAIL] > 0 && seen[SPF_PERMERROR] > 0);
    buf_free(&ra);
    buf_free(&rb);
}

/* ---- the in-memory zone ----------------------------------------------- */

static void
test_zone(void)
{
    const char *rows[] = {
        "a.example", "A",          "192.0.2.1",  "a.example",  "TXT",
        "one",       "c.example",  "CNAME",      "A.example.", "l1.example",
        "CNAME",     "l2.example", "l2.example", "CNAME",      "l1.example",
        "t.example", "A",          "192.0.2.2",  "t.example",  "TIMEOUT",
        "",          NULL};
    struct spf_zone *z = zone_of(rows);
    struct spf_resolver rs;
    spf_zone_resolver(z, &rs);
    struct spf_answer a;
    spf_answer_init(&a, SPF_RR_A);
    CHECK(rs.lookup(rs.ud, "C.EXAMPLE", SPF_RR_A, &a) == 0 && a.n == 1 &&
          a.rr[0].addr[3] == 1);
    spf_answer_free(&a);
    CHECK(rs.lookup(rs.ud, "a.example", SPF_RR_MX, &a) == 0 && a.n == 0 &&
          a.ttl == 300);
    spf_answer_free(&a);
    CHECK(rs.lookup(rs.ud, "x.example", SPF_RR_A, &a) == HERR_NOTFOUND);
    spf_answer_free(&a);
    CHECK(rs.lookup(rs.ud, "l1.example", SPF_RR_A, &a) == HERR_TEMP);
    spf_answer_free(&a);
    CHECK(rs.lookup(rs.ud, "t.example", SPF_RR_A, &a) == 0 && a.n == 1);
    spf_answer_free(&a);
    spf_answer_init(&a, SPF_RR_TXT);
    CHECK(rs.lookup(rs.ud, "t.example", SPF_RR_TXT, &a) == HERR_TEMP);
    spf_answer_free(&a);
    CHECK(spf_zone_queries(z) == 6);
    CHECK(spf_zone_add(z, "x.example", "A", "not-an-ip", 1) == HERR_INVALID);
    CHECK(spf_zone_add(z, "x.example", "SRV", "x", 1) == HERR_INVALID);
    spf_zone_free(z);
}

int
main(int argc, char **argv)
{
    test_suite(argv[0], argc > 1 ? argv[1] : NULL);
    test_ip_parse();
    test_macros();
    test_cidr();
    test_lookup_limit();
    test_void_mx_ptr_limits();
    test_caps_and_errors();
    test_ttl_chain();
    test_reaches();
    test_advice();
    test_random();
    test_zone();
    return T_DONE("spf");
}
