/*
 * test_dnsres — the parts of io/dnsres.c that need no network: the
 * HERALD_DNS parser, the question builder and the reply reader over
 * hand-built DNS messages (CNAME chains in any order, TTL caps, TXT
 * strings, MX with compression, NXDOMAIN / NODATA with SOA, rcodes,
 * malformed records, loops). The network path is covered by
 * tests/integration/test_spf_check.py against dnsmasq.
 */
#include "dnsres.h"
#include "t.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

/* ---- a tiny DNS message builder ---------------------------------------- */

struct msg {
    unsigned char b[4096];
    size_t n;
};

static void
m16(struct msg *m, unsigned v)
{
    m->b[m->n++] = (unsigned char)(v >> 8);
    m->b[m->n++] = (unsigned char)v;
}

static void
m32(struct msg *m, uint32_t v)
{
    m16(m, v >> 16);
    m16(m, v & 0xffff);
}

static void
mname(struct msg *m, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        m->b[m->n++] = (unsigned char)l;
        memcpy(m->b + m->n, name, l);
        m->n += l;
        name += l + (dot ? 1 : 0);
    }
    m->b[m->n++] = 0;
}

static void
mheader(struct msg *m, int rcode, int an, int ns, const char *qname, int qtype)
{
    m->n = 0;
    m16(m, 0x1234);
    m16(m, 0x8180 | (unsigned)rcode);
    m16(m, 1);
    m16(m, (unsigned)an);
    m16(m, (unsigned)ns);
    m16(m, 0);
    mname(m, qname);
    m16(m, (unsigned)qtype);
    m16(m, 1);
}

/* A record's fixed part; returns where RDLENGTH is, to patch. */
static size_t
mrr(struct msg *m, const char *owner, int type, uint32_t ttl)
{
    mname(m, owner);
    m16(m, (unsigned)type);
    m16(m, 1);
    m32(m, ttl);
    size_t at = m->n;
    m16(m, 0);
    return at;
}

static void
mrdlen(struct msg *m, size_t at)
{
    size_t l = m->n - at - 2;
    m->b[at] = (unsigned char)(l >> 8);
    m->b[at + 1] = (unsigned char)l;
}

static void
rr_a(struct msg *m, const char *owner, uint32_t ttl, const char *ip)
{
    size_t at = mrr(m, owner, 1, ttl);
    inet_pton(AF_INET, ip, m->b + m->n);
    m->n += 4;
    mrdlen(m, at);
}

static void
rr_name(struct msg *m, const char *owner, int type, uint32_t ttl,
        const char *target)
{
    size_t at = mrr(m, owner, type, ttl);
    mname(m, target);
    mrdlen(m, at);
}

static void
rr_soa(struct msg *m, const char *owner, uint32_t ttl, uint32_t minimum)
{
    size_t at = mrr(m, owner, 6, ttl);
    mname(m, "ns.example");
    mname(m, "hostmaster.example");
    m32(m, 1);
    m32(m, 3600);
    m32(m, 600);
    m32(m, 86400);
    m32(m, minimum);
    mrdlen(m, at);
}

static int
parse(struct msg *m, const char *name, enum spf_rrtype type,
      struct spf_answer *a, char *next, int *hops, uint32_t *cap)
{
    *hops = 0;
    *cap = UINT32_MAX;
    spf_answer_init(a, type);
    return dnsres_parse_reply(m->b, m->n, name, type, hops, cap, a, next);
}

/* ---- tests ------------------------------------------------------------- */

static void
test_server(void)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    struct herr e = {{0}, {0}};
    CHECK(dnsaddr_parse("192.0.2.53", &ss, &sl, &e) == 0);
    CHECK(ss.ss_family == AF_INET && sl == sizeof(struct sockaddr_in));
    CHECK(ntohs(((struct sockaddr_in *)&ss)->sin_port) == 53);
    CHECK(dnsaddr_parse("127.0.0.1:5353", &ss, &sl, &e) == 0);
    CHECK(ntohs(((struct sockaddr_in *)&ss)->sin_port) == 5353);
    CHECK(dnsaddr_parse("::1", &ss, &sl, &e) == 0);
    CHECK(ss.ss_family == AF_INET6 &&
          ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) == 53);
    CHECK(dnsaddr_parse("[2001:db8::53]:1053", &ss, &sl, &e) == 0);
    CHECK(ss.ss_family == AF_INET6 &&
          ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) == 1053);
    CHECK(dnsaddr_parse("[::1]", &ss, &sl, &e) == 0);
    const char *bad[] = {"",
                         "dns.example",
                         "1.2.3.4:0",
                         "1.2.3.4:65536",
                         "1.2.3.4:",
                         "1.2.3.4:x",
                         "[::1",
                         "[::1]x",
                         "[1.2.3.4]:53",
                         "1.2.3",
                         "1.2.3.4:053",
                         "::1:53:zz"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        int rc = dnsaddr_parse(bad[i], &ss, &sl, &e);
        CHECK_MSG(rc == HERR_INVALID, "%s", bad[i]);
        CHECK(strcmp(e.field, "HERALD_DNS") == 0 && e.msg[0] != '\0');
    }
}

static void
test_query(void)
{
    unsigned char q[512];
    int n = dnsres_build_query("foo:bar/x.Example", SPF_RR_TXT, 0xbeef, 0, q,
                               sizeof q);
    /* 12 + (1+9 + 1+7 + 1) + 4 */
    CHECK(n == 12 + 19 + 4);
    CHECK(q[0] == 0xbe && q[1] == 0xef && q[2] == 0x01 && q[5] == 1);
    CHECK(q[12] == 9 && memcmp(q + 13, "foo:bar/x", 9) == 0);
    CHECK(q[22] == 7 && memcmp(q + 23, "Example", 7) == 0 && q[30] == 0);
    CHECK(q[31] == 0 && q[32] == 16 && q[33] == 0 && q[34] == 1);
    n = dnsres_build_query("a.example.", SPF_RR_AAAA, 1, 1, q, sizeof q);
    CHECK(n == 12 + 11 + 4 + 11);
    CHECK(q[11] == 1); /* ARCOUNT: the OPT record */
    CHECK(q[12 + 11 + 1] == 28);
    CHECK(q[12 + 11 + 4] == 0 && q[12 + 11 + 6] == 41);
    CHECK((q[12 + 11 + 7] << 8 | q[12 + 11 + 8]) == DNSRES_EDNS_SIZE);
    CHECK(dnsres_build_query("a..example", SPF_RR_A, 1, 0, q, sizeof q) ==
          HERR_INVALID);
    CHECK(dnsres_build_query("", SPF_RR_A, 1, 0, q, sizeof q) == HERR_INVALID);
    char big[80];
    memset(big, 'x', 64);
    strcpy(big + 64, ".example");
    CHECK(dnsres_build_query(big, SPF_RR_A, 1, 0, q, sizeof q) == HERR_INVALID);
    CHECK(dnsres_build_query("a.example", SPF_RR_A, 1, 0, q, 20) ==
          HERR_TOOBIG);
}

static void
test_reply(void)
{
    struct msg m;
    struct spf_answer a;
    char next[SPF_NAME_MAX + 1];
    int hops;
    uint32_t cap;

    /* A CNAME chain given out of order: the target's record first. */
    mheader(&m, 0, 3, 0, "www.example", 1);
    rr_a(&m, "real.example", 3600, "192.0.2.7");
    rr_name(&m, "mid.example", 5, 120, "real.example");
    rr_name(&m, "WWW.example", 5, 900, "mid.example");
    CHECK(parse(&m, "www.example", SPF_RR_A, &a, next, &hops, &cap) == 0);
    CHECK(a.n == 1 && hops == 2 && cap == 120);
    CHECK(a.n == 1 && a.rr[0].ttl == 120 &&
          memcmp(a.rr[0].addr, "\xc0\x00\x02\x07", 4) == 0);
    spf_answer_free(&a);

    /* Records of another owner are not taken. */
    mheader(&m, 0, 2, 0, "x.example", 1);
    rr_a(&m, "y.example", 60, "192.0.2.1");
    rr_a(&m, "x.example", 60, "192.0.2.2");
    CHECK(parse(&m, "x.example", SPF_RR_A, &a, next, &hops, &cap) == 0);
    CHECK(a.n == 1 && a.rr[0].addr[3] == 2 && a.rr[0].ttl == 60);
    spf_answer_free(&a);

    /* TXT: two character-strings joined; a second record. */
    mheader(&m, 0, 2, 0, "t.example", 16);
    size_t at = mrr(&m, "t.example", 16, 300);
    const char *s1 = "v=spf1 include:", *s2 = "x.example -all";
    m.b[m.n++] = (unsigned char)strlen(s1);
    memcpy(m.b + m.n, s1, strlen(s1));
    m.n += strlen(s1);
    m.b[m.n++] = (unsigned char)strlen(s2);
    memcpy(m.b + m.n, s2, strlen(s2));
    m.n += strlen(s2);
    mrdlen(&m, at);
    at = mrr(&m, "t.example", 16, 200);
    m.b[m.n++] = 0; /* one empty string */
    mrdlen(&m, at);
    CHECK(parse(&m, "t.example", SPF_RR_TXT, &a, next, &hops, &cap) == 0);
    CHECK(a.n == 2);
    CHECK(a.n == 2 &&
          strcmp(a.rr[0].txt, "v=spf1 include:x.example -all") == 0);
    CHECK(a.n == 2 && a.rr[1].txt_len == 0 && a.rr[1].ttl == 200);
    spf_answer_free(&a);

    /* A TXT string running past its record: malformed. */
    mheader(&m, 0, 1, 0, "t.example", 16);
    at = mrr(&m, "t.example", 16, 300);
    m.b[m.n++] = 10;
    memcpy(m.b + m.n, "abc", 3);
    m.n += 3;
    mrdlen(&m, at);
    CHECK(parse(&m, "t.example", SPF_RR_TXT, &a, next, &hops, &cap) ==
          HERR_TEMP);
    spf_answer_free(&a);

    /* MX with the exchange compressed against the question name. */
    mheader(&m, 0, 1, 0, "mx.example", 15);
    at = mrr(&m, "mx.example", 15, 500);
    m16(&m, 10);
    m.b[m.n++] = 4;
    memcpy(m.b + m.n, "mail", 4);
    m.n += 4;
    m16(&m, 0xc000 | 12); /* pointer to "mx.example" in the question */
    mrdlen(&m, at);
    CHECK(parse(&m, "mx.example", SPF_RR_MX, &a, next, &hops, &cap) == 0);
    CHECK(a.n == 1 && a.rr[0].pref == 10 &&
          strcmp(a.rr[0].name, "mail.mx.example") == 0);
    spf_answer_free(&a);

    /* PTR. */
    mheader(&m, 0, 1, 0, "7.2.0.192.in-addr.arpa", 12);
    rr_name(&m, "7.2.0.192.in-addr.arpa", 12, 50, "host.example");
    CHECK(parse(&m, "7.2.0.192.in-addr.arpa", SPF_RR_PTR, &a, next, &hops,
                &cap) == 0);
    CHECK(a.n == 1 && strcmp(a.rr[0].name, "host.example") == 0);
    spf_answer_free(&a);

    /* An A record of 5 bytes: malformed. */
    mheader(&m, 0, 1, 0, "x.example", 1);
    at = mrr(&m, "x.example", 1, 60);
    m32(&m, 1);
    m.b[m.n++] = 0;
    mrdlen(&m, at);
    CHECK(parse(&m, "x.example", SPF_RR_A, &a, next, &hops, &cap) == HERR_TEMP);
    spf_answer_free(&a);

    /* NXDOMAIN with a SOA: the negative TTL is min(TTL, minimum). */
    mheader(&m, 3, 0, 1, "gone.example", 16);
    rr_soa(&m, "example", 900, 300);
    CHECK(parse(&m, "gone.example", SPF_RR_TXT, &a, next, &hops, &cap) ==
          HERR_NOTFOUND);
    CHECK(a.ttl == 300);
    spf_answer_free(&a);
    mheader(&m, 3, 0, 1, "gone.example", 16);
    rr_soa(&m, "example", 60, 300);
    CHECK(parse(&m, "gone.example", SPF_RR_TXT, &a, next, &hops, &cap) ==
          HERR_NOTFOUND);
    CHECK(a.ttl == 60);
    spf_answer_free(&a);

    /* NODATA: NOERROR, no records, a SOA. */
    mheader(&m, 0, 0, 1, "host.example", 16);
    rr_soa(&m, "example", 900, 120);
    CHECK(parse(&m, "host.example", SPF_RR_TXT, &a, next, &hops, &cap) == 0);
    CHECK(a.n == 0 && a.ttl == 120);
    spf_answer_free(&a);

    /* SERVFAIL, REFUSED, FORMERR: temporary. */
    int rcodes[] = {2, 5, 1, 4};
    for (size_t i = 0; i < 4; i++) {
        mheader(&m, rcodes[i], 0, 0, "x.example", 16);
        CHECK(parse(&m, "x.example", SPF_RR_TXT, &a, next, &hops, &cap) ==
              HERR_TEMP);
        spf_answer_free(&a);
    }

    /* A chain that ends without records or SOA: ask the target. */
    mheader(&m, 0, 1, 0, "alias.example", 16);
    rr_name(&m, "alias.example", 5, 30, "target.example");
    CHECK(parse(&m, "alias.example", SPF_RR_TXT, &a, next, &hops, &cap) ==
          DNSRES_FOLLOW);
    CHECK(strcmp(next, "target.example") == 0 && hops == 1 && cap == 30);
    spf_answer_free(&a);
    /* ... but with a SOA it is NODATA at the target. */
    mheader(&m, 0, 1, 1, "alias.example", 16);
    rr_name(&m, "alias.example", 5, 30, "target.example");
    rr_soa(&m, "example", 900, 900);
    CHECK(parse(&m, "alias.example", SPF_RR_TXT, &a, next, &hops, &cap) == 0);
    CHECK(a.n == 0 && a.ttl == 30);
    spf_answer_free(&a);

    /* A CNAME loop. */
    mheader(&m, 0, 2, 0, "a.example", 1);
    rr_name(&m, "a.example", 5, 30, "b.example");
    rr_name(&m, "b.example", 5, 30, "a.example");
    CHECK(parse(&m, "a.example", SPF_RR_A, &a, next, &hops, &cap) == HERR_TEMP);
    spf_answer_free(&a);

    /* Truncated messages: every cut of a good reply is rejected or read
     * without running past it (the sanitizer build checks the latter). */
    mheader(&m, 0, 2, 0, "www.example", 1);
    rr_name(&m, "www.example", 5, 900, "real.example");
    rr_a(&m, "real.example", 3600, "192.0.2.7");
    size_t full = m.n;
    int bad = 0;
    for (size_t cut = 0; cut < full; cut++) {
        spf_answer_init(&a, SPF_RR_A);
        hops = 0;
        cap = UINT32_MAX;
        int rc = dnsres_parse_reply(m.b, cut, "www.example", SPF_RR_A, &hops,
                                    &cap, &a, next);
        if (rc != HERR_TEMP)
            bad++;
        spf_answer_free(&a);
    }
    CHECK(bad == 0);
}

int
main(void)
{
    test_server();
    test_query();
    test_reply();
    return T_DONE("dnsres");
}
