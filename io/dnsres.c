/*
 * dnsres — see dnsres.h.
 */
#include "dnsres.h"
#include "dnsaddr.h"
#include "clock.h"
#include "util.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct dnsres {
    struct __res_state st;
    unsigned char *reply; /* DNSRES_REPLY_MAX bytes */
    size_t queries;
};

/* ---- names --------------------------------------------------------------- */

static int
lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* ASCII case-insensitive equality of two raw names. */
static int
name_eq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (lower((unsigned char)*a) != lower((unsigned char)*b))
            return 0;
    return *a == *b;
}

/*
 * A wire-format name (uncompressed, as ns_name_unpack / ns_name_pton give
 * it) to raw text: labels joined with '.', no trailing dot, the root "".
 * Returns 0, or -1 when a label holds a NUL byte or a '.', or the text
 * would exceed SPF_NAME_MAX.
 */
static int
wire_to_raw(const unsigned char *w, char out[SPF_NAME_MAX + 1])
{
    size_t o = 0;
    while (*w) {
        size_t n = *w++;
        if (n > SPF_LABEL_MAX)
            return -1;
        if (o && o + 1 > SPF_NAME_MAX)
            return -1;
        if (o)
            out[o++] = '.';
        if (o + n > SPF_NAME_MAX)
            return -1;
        for (size_t i = 0; i < n; i++) {
            if (w[i] == 0 || w[i] == '.')
                return -1;
            out[o++] = (char)w[i];
        }
        w += n;
    }
    out[o] = '\0';
    return 0;
}

/* A name inside `msg` at `p` (possibly compressed) to raw text. */
static int
unpack_raw(const unsigned char *msg, size_t len, const unsigned char *p,
           char out[SPF_NAME_MAX + 1])
{
    unsigned char wire[NS_MAXCDNAME];
    if (ns_name_unpack(msg, msg + len, p, wire, sizeof wire) < 0)
        return -1;
    return wire_to_raw(wire, out);
}

/* The owner name of a parsed record (presentation text) to raw text. */
static int
owner_raw(const ns_rr *rr, char out[SPF_NAME_MAX + 1])
{
    unsigned char wire[NS_MAXCDNAME];
    if (ns_name_pton(ns_rr_name(*rr), wire, sizeof wire) < 0)
        return -1;
    return wire_to_raw(wire, out);
}

static uint16_t
qtype_of(enum spf_rrtype t)
{
    switch (t) {
    case SPF_RR_A:
        return ns_t_a;
    case SPF_RR_AAAA:
        return ns_t_aaaa;
    case SPF_RR_MX:
        return ns_t_mx;
    case SPF_RR_PTR:
        return ns_t_ptr;
    case SPF_RR_TXT:
        return ns_t_txt;
    }
    return 0;
}

static void
put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

int
dnsres_build_query(const char *name, enum spf_rrtype type, uint16_t id,
                   int edns, unsigned char *buf, size_t buflen)
{
    size_t nlen = strlen(name);
    if (nlen && name[nlen - 1] == '.')
        nlen--;
    if (nlen == 0 || nlen > SPF_NAME_MAX)
        return HERR_INVALID;
    /* header 12 + name (nlen + 2) + qtype/qclass 4 + OPT 11 */
    size_t need = 12 + nlen + 2 + 4 + (edns ? 11 : 0);
    if (buflen < need)
        return HERR_TOOBIG;
    memset(buf, 0, 12);
    put16(buf, id);
    buf[2] = 0x01; /* RD */
    put16(buf + 4, 1);
    put16(buf + 10, edns ? 1 : 0);
    size_t o = 12, start = 0;
    for (size_t i = 0; i <= nlen; i++) {
        if (i < nlen && name[i] != '.')
            continue;
        size_t l = i - start;
        if (l == 0 || l > SPF_LABEL_MAX)
            return HERR_INVALID;
        buf[o++] = (unsigned char)l;
        memcpy(buf + o, name + start, l);
        o += l;
        start = i + 1;
    }
    buf[o++] = 0;
    put16(buf + o, qtype_of(type));
    put16(buf + o + 2, ns_c_in);
    o += 4;
    if (edns) {
        buf[o++] = 0; /* root owner */
        put16(buf + o, ns_t_opt);
        put16(buf + o + 2, DNSRES_EDNS_SIZE);
        memset(buf + o + 4, 0, 6); /* extended rcode, version, flags, rdlen */
        o += 10;
    }
    return (int)o;
}

/* ---- reading a reply ---------------------------------------------------- */

static uint32_t
get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/* Adds one record of the asked type; HERR_TEMP when its rdata is
 * malformed, 0 otherwise (caps and skipped names are not errors). */
static int
add_record(const unsigned char *msg, size_t len, const ns_rr *rr,
           enum spf_rrtype type, uint32_t ttl, struct spf_answer *out)
{
    const unsigned char *rd = ns_rr_rdata(*rr);
    size_t rdlen = ns_rr_rdlen(*rr);
    char name[SPF_NAME_MAX + 1];
    switch (type) {
    case SPF_RR_A:
        if (rdlen != 4)
            return HERR_TEMP;
        spf_answer_add_addr(out, rd, ttl);
        return 0;
    case SPF_RR_AAAA:
        if (rdlen != 16)
            return HERR_TEMP;
        spf_answer_add_addr(out, rd, ttl);
        return 0;
    case SPF_RR_MX: {
        if (rdlen < 3)
            return HERR_TEMP;
        unsigned char wire[NS_MAXCDNAME];
        int n = ns_name_unpack(msg, msg + len, rd + 2, wire, sizeof wire);
        if (n < 0 || (size_t)n + 2 > rdlen)
            return HERR_TEMP;
        if (wire_to_raw(wire, name) == 0)
            spf_answer_add_mx(out, (uint16_t)(rd[0] << 8 | rd[1]), name, ttl);
        return 0;
    }
    case SPF_RR_PTR: {
        unsigned char wire[NS_MAXCDNAME];
        int n = ns_name_unpack(msg, msg + len, rd, wire, sizeof wire);
        if (n < 0 || (size_t)n > rdlen)
            return HERR_TEMP;
        if (wire_to_raw(wire, name) == 0)
            spf_answer_add_name(out, name, ttl);
        return 0;
    }
    case SPF_RR_TXT: {
        /* One more slot than allowed, so that a record with too many
         * strings reaches spf_answer_add_txt (which drops it). */
        const char *strs[SPF_TXT_STRINGS_MAX + 1];
        size_t lens[SPF_TXT_STRINGS_MAX + 1];
        size_t n = 0, o = 0;
        while (o < rdlen) {
            size_t l = rd[o];
            if (o + 1 + l > rdlen)
                return HERR_TEMP;
            if (n <= SPF_TXT_STRINGS_MAX) {
                strs[n] = (const char *)rd + o + 1;
                lens[n] = l;
            }
            n++;
            o += 1 + l;
        }
        if (n > SPF_TXT_STRINGS_MAX + 1)
            n = SPF_TXT_STRINGS_MAX + 1;
        spf_answer_add_txt(out, strs, lens, n, ttl);
        return 0;
    }
    }
    return HERR_TEMP;
}

/* RFC 2308 negative TTL from the authority section's SOA; 0 if none. */
static uint32_t
negative_ttl(ns_msg *h)
{
    int n = ns_msg_count(*h, ns_s_ns);
    for (int i = 0; i < n; i++) {
        ns_rr rr;
        if (ns_parserr(h, ns_s_ns, i, &rr) < 0)
            return 0;
        if (ns_rr_type(rr) != ns_t_soa)
            continue;
        const unsigned char *rd = ns_rr_rdata(rr), *end = rd + ns_rr_rdlen(rr);
        const unsigned char *p = rd;
        for (int k = 0; k < 2; k++) { /* MNAME, RNAME */
            int l = dn_skipname(p, end);
            if (l < 0)
                return 0;
            p += l;
        }
        if (end - p < 20)
            return 0;
        uint32_t min = get32(p + 16), ttl = ns_rr_ttl(rr);
        return ttl < min ? ttl : min;
    }
    return 0;
}

int
dnsres_parse_reply(const unsigned char *msg, size_t len, const char *name,
                   enum spf_rrtype type, int *hops, uint32_t *ttl_cap,
                   struct spf_answer *out, char *next)
{
    ns_msg h;
    if (len > DNSRES_REPLY_MAX || ns_initparse(msg, (int)len, &h) < 0)
        return HERR_TEMP;
    int rcode = ns_msg_getflag(h, ns_f_rcode);
    if (rcode != ns_r_noerror && rcode != ns_r_nxdomain)
        return HERR_TEMP;
    int an = ns_msg_count(h, ns_s_an);
    int hops0 = *hops;

    /* Owner names of the answer section, as raw text ("" when it cannot
     * be written so: such a record never matches). */
    char cur[SPF_NAME_MAX + 1];
    size_t nlen = strlen(name);
    if (nlen && name[nlen - 1] == '.')
        nlen--;
    if (nlen > SPF_NAME_MAX)
        return HERR_TEMP;
    memcpy(cur, name, nlen);
    cur[nlen] = '\0';

    /* Follow the chain: at each step look for a CNAME owned by `cur`;
     * records may come in any order. At most DNSRES_CNAME_MAX hops in
     * all, which also stops a loop. */
    for (;;) {
        int moved = 0;
        for (int i = 0; i < an; i++) {
            ns_rr rr;
            char owner[SPF_NAME_MAX + 1];
            if (ns_parserr(&h, ns_s_an, i, &rr) < 0)
                return HERR_TEMP;
            if (ns_rr_class(rr) != ns_c_in || ns_rr_type(rr) != ns_t_cname)
                continue;
            if (owner_raw(&rr, owner) < 0 || !name_eq(owner, cur))
                continue;
            char target[SPF_NAME_MAX + 1];
            if (unpack_raw(msg, len, ns_rr_rdata(rr), target) < 0)
                return HERR_TEMP;
            if (++*hops > DNSRES_CNAME_MAX)
                return HERR_TEMP;
            if (ns_rr_ttl(rr) < *ttl_cap)
                *ttl_cap = ns_rr_ttl(rr);
            memcpy(cur, target, strlen(target) + 1);
            moved = 1;
            break;
        }
        if (!moved)
            break;
    }

    uint16_t want = qtype_of(type);
    size_t found = 0;
    for (int i = 0; i < an; i++) {
        ns_rr rr;
        char owner[SPF_NAME_MAX + 1];
        if (ns_parserr(&h, ns_s_an, i, &rr) < 0)
            return HERR_TEMP;
        if (ns_rr_class(rr) != ns_c_in || ns_rr_type(rr) != want)
            continue;
        if (owner_raw(&rr, owner) < 0 || !name_eq(owner, cur))
            continue;
        uint32_t ttl = ns_rr_ttl(rr);
        if (ttl > *ttl_cap)
            ttl = *ttl_cap;
        int rc = add_record(msg, len, &rr, type, ttl, out);
        if (rc < 0)
            return rc;
        found++;
    }
    if (found)
        return 0;
    uint32_t neg = negative_ttl(&h);
    if (neg > *ttl_cap)
        neg = *ttl_cap;
    if (rcode == ns_r_nxdomain) {
        out->ttl = neg;
        return HERR_NOTFOUND;
    }
    /* NOERROR without records. A chain that ends without an answer and
     * without a SOA (no proof of absence) is asked again at its end. */
    if (*hops > hops0 && ns_msg_count(h, ns_s_ns) == 0) {
        memcpy(next, cur, strlen(cur) + 1);
        return DNSRES_FOLLOW;
    }
    out->ttl = neg;
    return 0;
}

/* ---- servers ------------------------------------------------------------ */

/* ---- the resolver ------------------------------------------------------- */

int
dnsres_new(const char *server, int timeout_s, int attempts, struct dnsres **out,
           struct herr *e)
{
    *out = NULL;
    if (timeout_s == 0)
        timeout_s = DNSRES_DEFAULT_TIMEOUT_S;
    if (attempts == 0)
        attempts = DNSRES_DEFAULT_ATTEMPTS;
    if (timeout_s < 1 || timeout_s > 30)
        return herr_set(e, HERR_INVALID, "timeout", "must be 1..30 seconds");
    if (attempts < 1 || attempts > 5)
        return herr_set(e, HERR_INVALID, "attempts", "must be 1..5");
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    int have_server = server && *server;
    if (have_server) {
        int rc = dnsaddr_parse(server, &ss, &sl, e);
        if (rc < 0)
            return rc;
    }
    struct dnsres *r = xmalloc(sizeof *r);
    memset(r, 0, sizeof *r);
    if (res_ninit(&r->st) != 0) {
        res_nclose(&r->st);
        free(r);
        return herr_set(e, HERR_IO, "resolv.conf",
                        "res_ninit failed: cannot read the resolver "
                        "configuration");
    }
    if (have_server) {
        /* One server. IPv6 servers live in _u._ext.nsaddrs (malloc'ed,
         * freed by res_nclose), IPv4 ones in nsaddr_list; drop what
         * res_ninit loaded first. */
        for (int i = 0; i < MAXNS; i++) {
            free(r->st._u._ext.nsaddrs[i]);
            r->st._u._ext.nsaddrs[i] = NULL;
        }
        memset(r->st.nsaddr_list, 0, sizeof r->st.nsaddr_list);
        if (ss.ss_family == AF_INET) {
            memcpy(&r->st.nsaddr_list[0], &ss, sizeof(struct sockaddr_in));
        } else {
            struct sockaddr_in6 *a6 = xmalloc(sizeof *a6);
            memcpy(a6, &ss, sizeof *a6);
            r->st.nsaddr_list[0].sin_family = 0;
            r->st._u._ext.nsaddrs[0] = a6;
        }
        r->st.nscount = 1;
    }
    if (r->st.nscount < 1) {
        res_nclose(&r->st);
        free(r);
        return herr_set(e, HERR_IO, "resolv.conf", "no name server configured");
    }
    r->st.retrans = timeout_s;
    r->st.retry = attempts;
    r->st.options &= ~(unsigned long)(RES_ROTATE | RES_DNSRCH | RES_DEFNAMES);
    r->st.options |= RES_RECURSE;
    r->reply = xmalloc(DNSRES_REPLY_MAX);
    *out = r;
    return 0;
}

void
dnsres_free(struct dnsres *r)
{
    if (r == NULL)
        return;
    res_nclose(&r->st);
    free(r->reply);
    free(r);
}

size_t
dnsres_queries(const struct dnsres *r)
{
    return r->queries;
}

static uint16_t
random_id(void)
{
    uint16_t id = 0;
    if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id)
        id = (uint16_t)(clock_now_ms() ^ (uint64_t)(uintptr_t)&id);
    return id;
}

/* One question and its reply; the reply's length or HERR_TEMP. */
static int
ask(struct dnsres *r, const char *name, enum spf_rrtype type, int edns)
{
    unsigned char q[512];
    int qlen = dnsres_build_query(name, type, random_id(), edns, q, sizeof q);
    if (qlen < 0)
        return qlen;
    r->queries++;
    int n = res_nsend(&r->st, q, qlen, r->reply, DNSRES_REPLY_MAX);
    if (n < NS_HFIXEDSZ)
        return HERR_TEMP;
    if (n > DNSRES_REPLY_MAX)
        n = DNSRES_REPLY_MAX;
    return n;
}

int
dnsres_lookup(struct dnsres *r, const char *name, enum spf_rrtype type,
              struct spf_answer *out)
{
    char cur[SPF_NAME_MAX + 1], next[SPF_NAME_MAX + 1];
    size_t nlen = strlen(name);
    if (nlen && name[nlen - 1] == '.')
        nlen--;
    if (nlen == 0 || nlen > SPF_NAME_MAX)
        return HERR_NOTFOUND; /* a name that cannot exist */
    memcpy(cur, name, nlen);
    cur[nlen] = '\0';
    int hops = 0;
    uint32_t cap = UINT32_MAX;
    for (;;) {
        int n = ask(r, cur, type, 1);
        if (n > 0 && ns_get16(r->reply + 2) % 16 == ns_r_formerr)
            n = ask(r, cur, type, 0); /* a server without EDNS0 */
        if (n == HERR_INVALID)
            return HERR_NOTFOUND; /* a name that cannot exist */
        if (n < 0)
            return HERR_TEMP;
        int rc = dnsres_parse_reply(r->reply, (size_t)n, cur, type, &hops, &cap,
                                    out, next);
        if (rc != DNSRES_FOLLOW)
            return rc;
        memcpy(cur, next, strlen(next) + 1);
    }
}

static int
seam_lookup(void *ud, const char *name, enum spf_rrtype type,
            struct spf_answer *out)
{
    return dnsres_lookup(ud, name, type, out);
}

void
dnsres_resolver(struct dnsres *r, struct spf_resolver *out)
{
    out->lookup = seam_lookup;
    out->ud = r;
}
