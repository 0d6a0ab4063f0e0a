/*
 * fuzz_spf — the input is the TXT record of example.com in an in-memory
 * zone that also holds what records tend to point at (addresses, MX,
 * PTR, includes that loop back, a timeout, an explanation with macros).
 * spf_check_host() runs for an IPv4 and an IPv6 client, then
 * spf_reaches_domain() and spf_advice(). Each check must stay within the
 * look-up limits (counted terms and actual zone queries), and every
 * string of the result must be printable ASCII, as spf.h promises.
 */
#include "../../common/spf.h"
#include "../spf_zone.h"
#include "fuzz_common.h"

#include <string.h>

#define DOMAIN "example.com"
#define TARGET "spf.herald.test"
#define NOW_S INT64_C(1795705087)
#define CHUNK 255 /* a DNS character-string */

/*
 * The most zone queries one check may make: the record itself, each
 * counted term with its follow-up address look-ups (an MX or PTR answer
 * validated name by name), the explanation, and %{p} (PTR + validation)
 * once per check.
 */
#define PER_TERM (1 + (SPF_MX_MAX > SPF_PTR_MAX ? SPF_MX_MAX : SPF_PTR_MAX))
#define QUERY_MAX (1 + SPF_LOOKUP_MAX * PER_TERM + 1 + (1 + SPF_PTR_MAX))

static const char *const rows[][3] = {
    {DOMAIN, "A", "192.0.2.10"},
    {DOMAIN, "AAAA", "2001:db8::10"},
    {"mail." DOMAIN, "A", "192.0.2.10"},
    {"mail." DOMAIN, "AAAA", "2001:db8::10"},
    {"mx2." DOMAIN, "A", "198.51.100.7"},
    {"10.2.0.192.in-addr.arpa", "PTR", "mail." DOMAIN},
    {"10.2.0.192.in-addr.arpa", "PTR", DOMAIN},
    {"0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
     "PTR", "mail." DOMAIN},
    {"_spf." DOMAIN, "TXT", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all"},
    {"loop." DOMAIN, "TXT", "v=spf1 include:" DOMAIN " -all"},
    {"deep." DOMAIN, "TXT",
     "v=spf1 include:loop." DOMAIN " redirect=deep." DOMAIN},
    {"two." DOMAIN, "TXT", "v=spf1 -all"},
    {"two." DOMAIN, "TXT", "v=spf1 +all"},
    {"bad." DOMAIN, "TXT", "v=spf1 ip4:300.1.1.1 -all"},
    {"alias." DOMAIN, "CNAME", DOMAIN},
    {"cyc1." DOMAIN, "CNAME", "cyc2." DOMAIN},
    {"cyc2." DOMAIN, "CNAME", "cyc1." DOMAIN},
    {"slow." DOMAIN, "TIMEOUT", NULL},
    {"exp." DOMAIN, "TXT",
     "%{i} is not one of %{d}'s servers (%{p} %{h} %{c} %{r} %{t} %{L})"},
    {"user." DOMAIN, "A", "127.0.0.2"},
    {"10.2.0.192.bl." DOMAIN, "A", "127.0.0.2"},
    {TARGET, "TXT", "v=spf1 ip4:203.0.113.0/24 -all"},
    {"_incl." TARGET, "TXT", "v=spf1 include:" TARGET " ~all"},
};

static struct spf_zone *
zone_make(const uint8_t *data, size_t size)
{
    struct spf_zone *z = spf_zone_new();
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int rc = spf_zone_add(z, rows[i][0], rows[i][1], rows[i][2], 3600);
        FUZZ_ASSERT(rc == 0, "zone row %zu refused", i);
    }
    for (int k = 0; k < 12; k++) { /* more MX names than allowed */
        char name[64];
        snprintf(name, sizeof name, "m%d." DOMAIN, k);
        spf_zone_add_mx(z, "many." DOMAIN, (uint16_t)k, name, 3600);
        spf_zone_add(z, name, "A", "198.51.100.8", 3600);
    }
    spf_zone_add_mx(z, DOMAIN, 10, "mail." DOMAIN, 3600);
    spf_zone_add_mx(z, DOMAIN, 20, "mx2." DOMAIN, 3600);

    /* the fuzz input, as DNS would carry it: strings of up to 255 bytes */
    size_t n = (size + CHUNK - 1) / CHUNK;
    const char **strs = calloc(n + 1, sizeof *strs);
    size_t *lens = calloc(n + 1, sizeof *lens);
    FUZZ_ASSERT(strs != NULL && lens != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        strs[i] = (const char *)data + i * CHUNK;
        lens[i] = size - i * CHUNK < CHUNK ? size - i * CHUNK : CHUNK;
    }
    int rc = spf_zone_add_txt(z, DOMAIN, strs, lens, n, 3600);
    FUZZ_ASSERT(rc == 0, "spf_zone_add_txt: %d", rc);
    free(strs);
    free(lens);
    return z;
}

static void
printable(const char *s, const char *what)
{
    if (s == NULL)
        return;
    for (const char *p = s; *p; p++)
        FUZZ_ASSERT(*p >= ' ' && *p < 127, "%s: byte 0x%02x at %zu", what,
                    (unsigned)(unsigned char)*p, (size_t)(p - s));
}

static void
check_result(enum spf_res got, const struct spf_result *res, size_t queries)
{
    FUZZ_ASSERT(got >= SPF_NONE && got <= SPF_PERMERROR, "result %d", got);
    FUZZ_ASSERT(res->result == got, "returned %d, stored %d", got, res->result);
    FUZZ_ASSERT(res->reason != NULL, "no reason");
    FUZZ_ASSERT(res->lookups >= 0 && res->lookups <= SPF_LOOKUP_MAX,
                "lookups %d", res->lookups);
    FUZZ_ASSERT(res->voids >= 0 && res->voids <= SPF_VOID_MAX + 1, "voids %d",
                res->voids);
    FUZZ_ASSERT(res->nchain <= SPF_CHAIN_MAX, "chain of %zu", res->nchain);
    FUZZ_ASSERT(queries <= QUERY_MAX, "%zu zone queries (max %d), %s", queries,
                QUERY_MAX, res->reason);
    FUZZ_ASSERT(res->explanation == NULL || got == SPF_FAIL,
                "an explanation on %s", spf_res_str(got));
    printable(res->domain, "domain");
    printable(res->record, "record");
    printable(res->mechanism, "mechanism");
    printable(res->reason, "reason");
    printable(res->explanation, "explanation");
    for (size_t i = 0; i < res->nchain; i++) {
        printable(res->chain[i].domain, "chain domain");
        printable(res->chain[i].record, "chain record");
        FUZZ_ASSERT(res->chain[i].depth >= 0 &&
                        res->chain[i].depth <= SPF_LOOKUP_MAX + 1,
                    "chain depth %d", res->chain[i].depth);
    }
    char *advice = spf_advice(res, TARGET);
    FUZZ_ASSERT(advice != NULL && advice[0] != '\0', "no advice");
    free(advice);
}

static void
check_ip(const struct spf_resolver *rs, struct spf_zone *z, const char *ip)
{
    struct spf_request req = {0};
    FUZZ_ASSERT(spf_ip_parse(ip, &req.ip) == 0, "client %s", ip);
    req.sender = "user@" DOMAIN;
    req.helo = "mail." DOMAIN;
    req.receiver = "mx.receiver.test";
    req.now_s = NOW_S;
    size_t before = spf_zone_queries(z);
    struct spf_result res;
    enum spf_res got = spf_check_host(&req, rs, &res);
    check_result(got, &res, spf_zone_queries(z) - before);
    spf_result_free(&res);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct spf_zone *z = zone_make(data, size);
    struct spf_resolver rs;
    spf_zone_resolver(z, &rs);

    check_ip(&rs, z, "192.0.2.10");
    check_ip(&rs, z, "2001:db8::10");

    size_t before = spf_zone_queries(z);
    struct spf_result res;
    int ok = spf_reaches_domain(DOMAIN, TARGET, &rs, 0, &res);
    /* +1: the target's own record, which is not counted */
    check_result(res.result, &res, spf_zone_queries(z) - before - (ok != 0));
    FUZZ_ASSERT(ok == (res.result == SPF_PASS), "reached %d but %s", ok,
                spf_res_str(res.result));
    spf_result_free(&res);

    spf_zone_free(z);
    return 0;
}
