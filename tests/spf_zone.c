/*
 * spf_zone — the in-memory DNS double (spf_zone.h).
 */
#include "spf_zone.h"
#include "util.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CNAME_HOPS_MAX 8 /* then SERVFAIL */
#define ZONE_NEG_TTL 300 /* default negative TTL */

static size_t
strip_dot(const char *s, size_t n)
{
    return (n > 0 && s[n - 1] == '.') ? n - 1 : n;
}

enum ztype { ZT_A, ZT_AAAA, ZT_MX, ZT_PTR, ZT_TXT, ZT_CNAME, ZT_TIMEOUT };

struct zent {
    char *name;
    enum ztype type;
    uint32_t ttl;
    unsigned char addr[16];
    uint16_t pref;
    char *value; /* PTR / CNAME / MX target */
    char **strs; /* TXT */
    size_t *lens;
    size_t nstrs;
};

struct spf_zone {
    struct zent *e;
    size_t n, cap;
    uint32_t neg_ttl;
    size_t queries;
};

struct spf_zone *
spf_zone_new(void)
{
    struct spf_zone *z = xcalloc(1, sizeof *z);
    z->neg_ttl = ZONE_NEG_TTL;
    return z;
}

void
spf_zone_free(struct spf_zone *z)
{
    if (z == NULL)
        return;
    for (size_t i = 0; i < z->n; i++) {
        struct zent *e = &z->e[i];
        free(e->name);
        free(e->value);
        for (size_t k = 0; k < e->nstrs; k++)
            free(e->strs[k]);
        free(e->strs);
        free(e->lens);
    }
    free(z->e);
    free(z);
}

void
spf_zone_set_negative_ttl(struct spf_zone *z, uint32_t ttl)
{
    z->neg_ttl = ttl;
}

static struct zent *
zone_new_entry(struct spf_zone *z, const char *name, enum ztype type,
               uint32_t ttl)
{
    if (z->n == z->cap) {
        z->cap = z->cap ? z->cap * 2 : 16;
        z->e = xrealloc(z->e, z->cap * sizeof *z->e);
    }
    struct zent *e = &z->e[z->n++];
    memset(e, 0, sizeof *e);
    e->name = xstrndup(name, strip_dot(name, strlen(name)));
    e->type = type;
    e->ttl = ttl;
    return e;
}

int
spf_zone_add(struct spf_zone *z, const char *name, const char *type,
             const char *value, uint32_t ttl)
{
    if (name == NULL || strip_dot(name, strlen(name)) > SPF_NAME_MAX ||
        type == NULL)
        return HERR_INVALID;
    if (strcmp(type, "TIMEOUT") == 0) {
        zone_new_entry(z, name, ZT_TIMEOUT, ttl);
        return 0;
    }
    if (value == NULL)
        return HERR_INVALID;
    if (strcmp(type, "A") == 0 || strcmp(type, "AAAA") == 0) {
        int six = type[1] == 'A';
        unsigned char b[16];
        if (inet_pton(six ? AF_INET6 : AF_INET, value, b) != 1)
            return HERR_INVALID;
        struct zent *e = zone_new_entry(z, name, six ? ZT_AAAA : ZT_A, ttl);
        memcpy(e->addr, b, six ? 16 : 4);
        return 0;
    }
    if (strcmp(type, "PTR") == 0 || strcmp(type, "CNAME") == 0) {
        if (strip_dot(value, strlen(value)) > SPF_NAME_MAX)
            return HERR_INVALID;
        struct zent *e =
            zone_new_entry(z, name, type[0] == 'P' ? ZT_PTR : ZT_CNAME, ttl);
        e->value = xstrndup(value, strip_dot(value, strlen(value)));
        return 0;
    }
    if (strcmp(type, "TXT") == 0) {
        size_t len = strlen(value);
        return spf_zone_add_txt(z, name, &value, &len, 1, ttl);
    }
    return HERR_INVALID;
}

int
spf_zone_add_mx(struct spf_zone *z, const char *name, uint16_t pref,
                const char *exchange, uint32_t ttl)
{
    if (strip_dot(name, strlen(name)) > SPF_NAME_MAX ||
        strip_dot(exchange, strlen(exchange)) > SPF_NAME_MAX)
        return HERR_INVALID;
    struct zent *e = zone_new_entry(z, name, ZT_MX, ttl);
    e->pref = pref;
    e->value = xstrndup(exchange, strip_dot(exchange, strlen(exchange)));
    return 0;
}

int
spf_zone_add_txt(struct spf_zone *z, const char *name,
                 const char *const *strings, const size_t *lens, size_t n,
                 uint32_t ttl)
{
    if (strip_dot(name, strlen(name)) > SPF_NAME_MAX)
        return HERR_INVALID;
    struct zent *e = zone_new_entry(z, name, ZT_TXT, ttl);
    e->strs = xcalloc(n ? n : 1, sizeof *e->strs);
    e->lens = xcalloc(n ? n : 1, sizeof *e->lens);
    for (size_t i = 0; i < n; i++) {
        e->strs[i] = xmalloc(lens[i] + 1);
        memcpy(e->strs[i], strings[i], lens[i]);
        e->strs[i][lens[i]] = '\0';
        e->lens[i] = lens[i];
    }
    e->nstrs = n;
    return 0;
}

static int
zone_type_matches(enum ztype zt, enum spf_rrtype t)
{
    switch (t) {
    case SPF_RR_A:
        return zt == ZT_A;
    case SPF_RR_AAAA:
        return zt == ZT_AAAA;
    case SPF_RR_MX:
        return zt == ZT_MX;
    case SPF_RR_PTR:
        return zt == ZT_PTR;
    case SPF_RR_TXT:
        return zt == ZT_TXT;
    }
    return 0;
}

static void
zone_put(const struct zent *e, struct spf_answer *out)
{
    switch (e->type) {
    case ZT_A:
    case ZT_AAAA:
        spf_answer_add_addr(out, e->addr, e->ttl);
        break;
    case ZT_MX:
        spf_answer_add_mx(out, e->pref, e->value, e->ttl);
        break;
    case ZT_PTR:
        spf_answer_add_name(out, e->value, e->ttl);
        break;
    case ZT_TXT:
        spf_answer_add_txt(out, (const char *const *)e->strs, e->lens, e->nstrs,
                           e->ttl);
        break;
    default:
        break;
    }
}

static int
zone_lookup(void *ud, const char *name, enum spf_rrtype type,
            struct spf_answer *out)
{
    struct spf_zone *z = ud;
    z->queries++;
    const char *cur = name;
    for (int hop = 0; hop <= CNAME_HOPS_MAX; hop++) {
        int exists = 0;
        const char *cname = NULL;
        for (size_t i = 0; i < z->n; i++) {
            if (!spf_name_eq(z->e[i].name, cur))
                continue;
            exists = 1;
            if (z->e[i].type == ZT_CNAME)
                cname = z->e[i].value;
        }
        if (!exists) {
            out->ttl = z->neg_ttl;
            return HERR_NOTFOUND;
        }
        if (cname) {
            cur = cname;
            continue;
        }
        int seen = 0;
        for (size_t i = 0; i < z->n; i++) {
            const struct zent *e = &z->e[i];
            if (!spf_name_eq(e->name, cur))
                continue;
            if (e->type == ZT_TIMEOUT) {
                if (!seen)
                    return HERR_TEMP;
                break;
            }
            if (zone_type_matches(e->type, type)) {
                zone_put(e, out);
                seen = 1;
            }
        }
        if (!seen)
            out->ttl = z->neg_ttl;
        return 0;
    }
    return HERR_TEMP;
}

void
spf_zone_resolver(struct spf_zone *z, struct spf_resolver *out)
{
    out->lookup = zone_lookup;
    out->ud = z;
}

size_t
spf_zone_queries(const struct spf_zone *z)
{
    return z->queries;
}
