/*
 * heraldctl spf check DOMAIN [--json] [--ip ADDR]... — does the SPF policy
 * of DOMAIN authorise the platform? (SPEC §4 path 2, §7.)
 *
 * With sender addresses (--ip, else HERALD_SENDER_IPS) RFC 7208
 * check_host() runs once per address, and the platform is authorised only
 * when every one gets "pass". Without any, the policy must reach
 * include:<HERALD_SENDER_DOMAIN> (spf_reaches_domain). DNS questions go to
 * HERALD_DNS or the system's resolvers (io/dnsres.h).
 *
 * Exit: 0 the check completed, whatever the verdict; 1 temperror (DNS
 * failed: never authorised) or the resolver could not be set up; 2 bad
 * usage (DOMAIN not a domain name, a bad address, HERALD_DNS not
 * host[:port]).
 */
#include "clock.h"
#include "ctl.h"
#include "dnsres.h"
#include "spf.h"
#include "util.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SPF_CHECK_TIME_MS 20000 /* RFC 7208 §4.6.4: at least 20 s */
#define SPF_IPS_MAX 32

static int
ldh(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

/*
 * A domain name as an operator types it: ASCII letters, digits, '-' and
 * '_' (for "_spf.example.org"), labels of 1..63, at least two labels, at
 * most 253 bytes without the one trailing dot allowed, and a last label
 * that is not all digits (an address is not a domain). Writes the name
 * without the trailing dot into out. NULL when fine, else why not.
 */
static const char *
domain_check(const char *s, char out[SPF_NAME_MAX + 1])
{
    size_t n = strlen(s);
    if (n && s[n - 1] == '.')
        n--;
    if (n == 0)
        return "empty";
    if (n > SPF_NAME_MAX)
        return "longer than 253 bytes";
    size_t labels = 0, start = 0;
    int digits_only = 1;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '.') {
            unsigned char ch = (unsigned char)s[i];
            if (ch >= 0x80)
                return "not ASCII (give an internationalised name in its "
                       "xn-- form)";
            if (!ldh(ch))
                return "only letters, digits, '-', '_' and dots may appear";
            if (ch < '0' || ch > '9')
                digits_only = 0;
            continue;
        }
        size_t l = i - start;
        if (l == 0)
            return "empty label";
        if (l > SPF_LABEL_MAX)
            return "a label is longer than 63 bytes";
        labels++;
        if (i < n)
            digits_only = 1;
        start = i + 1;
    }
    if (labels < 2)
        return "a single label (a domain like example.org is needed)";
    if (digits_only)
        return "an address, not a domain name";
    memcpy(out, s, n);
    out[n] = '\0';
    return NULL;
}

/* Splits a comma/space separated address list into ips[]. */
static int
parse_ip_list(const char *list, const char *what, struct spf_ip *ips,
              char texts[][64], size_t *n)
{
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        const char *q = p;
        while (*q && *q != ',' && *q != ' ' && *q != '\t')
            q++;
        size_t l = (size_t)(q - p);
        if (*n >= SPF_IPS_MAX)
            return ctl_usage_error("%s: more than %d addresses", what,
                                   SPF_IPS_MAX);
        if (l >= 64)
            return ctl_usage_error("%s: '%.64s...' is not an IP address", what,
                                   p);
        memcpy(texts[*n], p, l);
        texts[*n][l] = '\0';
        if (spf_ip_parse(texts[*n], &ips[*n]) < 0)
            return ctl_usage_error("%s: '%s' is not an IPv4 or IPv6 address",
                                   what, texts[*n]);
        (*n)++;
        p = q;
    }
    return CTL_OK;
}

static const char *
via_str(enum spf_via v)
{
    switch (v) {
    case SPF_VIA_CHECK:
        return "check";
    case SPF_VIA_INCLUDE:
        return "include";
    case SPF_VIA_REDIRECT:
        return "redirect";
    }
    return "check";
}

static json_t *
jstr_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static void
print_json(const char *domain, const char *target, const struct spf_result *r,
           int authorised, const char *advice, size_t nips, char texts[][64],
           const struct spf_result *per_ip)
{
    json_t *o = json_object();
    json_object_set_new(o, "domain", json_string(domain));
    json_object_set_new(o, "record", jstr_or_null(r->record));
    json_object_set_new(o, "result", json_string(spf_res_str(r->result)));
    json_object_set_new(o, "authorised", json_boolean(authorised));
    json_t *chain = json_array();
    for (size_t i = 0; i < r->nchain; i++) {
        const struct spf_step *st = &r->chain[i];
        json_t *s = json_object();
        json_object_set_new(s, "domain", json_string(st->domain));
        json_object_set_new(s, "record", jstr_or_null(st->record));
        json_object_set_new(s, "via", json_string(via_str(st->via)));
        json_object_set_new(s, "depth", json_integer(st->depth));
        json_object_set_new(s, "result", json_string(spf_res_str(st->result)));
        json_array_append_new(chain, s);
    }
    json_object_set_new(o, "chain", chain);
    json_object_set_new(o, "advice", json_string(advice));
    json_object_set_new(o, "mode", json_string(nips ? "ips" : "include"));
    json_object_set_new(o, "sender_domain", json_string(target));
    json_object_set_new(o, "mechanism", jstr_or_null(r->mechanism));
    json_object_set_new(o, "reason", json_string(r->reason));
    json_object_set_new(o, "explanation", jstr_or_null(r->explanation));
    json_object_set_new(o, "lookups", json_integer(r->lookups));
    json_object_set_new(
        o, "ttl",
        r->ttl == UINT32_MAX ? json_null() : json_integer((json_int_t)r->ttl));
    if (nips) {
        json_t *a = json_array();
        for (size_t i = 0; i < nips; i++) {
            json_t *x = json_object();
            json_object_set_new(x, "ip", json_string(texts[i]));
            json_object_set_new(x, "result",
                                json_string(spf_res_str(per_ip[i].result)));
            json_object_set_new(x, "mechanism",
                                jstr_or_null(per_ip[i].mechanism));
            json_object_set_new(x, "reason", json_string(per_ip[i].reason));
            json_array_append_new(a, x);
        }
        json_object_set_new(o, "ips", a);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    puts(s);
    free(s);
    json_decref(o);
}

/* Records, names, reasons and explanations come from DNS: every one is
 * printed escaped (util_escaped). */
static void
print_text(const char *domain, const char *target, const struct spf_result *r,
           int authorised, const char *advice, size_t nips, char texts[][64],
           const struct spf_result *per_ip)
{
    char *v;
    printf("Domain:      %s\n", domain);
    v = util_escaped(r->record ? r->record : "(none)");
    printf("Record:      %s\n", v);
    free(v);
    if (nips) {
        printf("Checked:     check_host() for each sender address "
               "(HERALD_SENDER_IPS / --ip)\n");
    } else {
        printf("Checked:     does the policy reach include:%s "
               "(HERALD_SENDER_DOMAIN)?\n",
               target);
    }
    if (r->nchain) {
        printf("Chain:\n");
        for (size_t i = 0; i < r->nchain; i++) {
            const struct spf_step *st = &r->chain[i];
            char *d = util_escaped(st->domain);
            v = util_escaped(st->record ? st->record : "(no record)");
            printf("  %*s%s%s%s: %s  => %s\n", st->depth * 2, "",
                   st->via == SPF_VIA_CHECK ? "" : via_str(st->via),
                   st->via == SPF_VIA_CHECK ? "" : " ", d, v,
                   spf_res_str(st->result));
            free(d);
            free(v);
        }
    }
    for (size_t i = 0; i < nips; i++) {
        v = util_escaped(per_ip[i].mechanism);
        printf("Address:     %s: %s%s%s%s\n", texts[i],
               spf_res_str(per_ip[i].result), per_ip[i].mechanism ? " (" : "",
               v, per_ip[i].mechanism ? ")" : "");
        free(v);
    }
    printf("Result:      %s\n", spf_res_str(r->result));
    printf("Authorised:  %s\n", authorised ? "yes" : "no");
    v = util_escaped(r->reason);
    printf("Why:         %s\n", v);
    free(v);
    if (r->explanation) {
        v = util_escaped(r->explanation);
        printf("Explanation: %s\n", v);
        free(v);
    }
    if (!authorised) {
        v = util_escaped(advice);
        printf("Advice:      %s\n", v);
        free(v);
    }
}

/* Takes every "--ip X" / "--ip=X" out of argv (before "--"), keeping the
 * other words in order in rest[]. */
static int
take_ips(int argc, char **argv, const char **ipv, size_t *nipv, char **rest,
         int *nrest)
{
    *nipv = 0;
    *nrest = 0;
    int only_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0)
            only_pos = 1;
        if (!only_pos &&
            (strcmp(a, "--ip") == 0 || strncmp(a, "--ip=", 5) == 0)) {
            const char *v;
            if (a[4] == '=') {
                v = a + 5;
            } else {
                if (i + 1 >= argc)
                    return ctl_usage_error("spf check: --ip needs a value");
                v = argv[++i];
            }
            if (*nipv >= SPF_IPS_MAX)
                return ctl_usage_error("spf check: --ip: more than %d "
                                       "addresses",
                                       SPF_IPS_MAX);
            ipv[(*nipv)++] = v;
            continue;
        }
        rest[(*nrest)++] = argv[i];
    }
    return CTL_OK;
}

int
ctl_spf_check(struct ctl *c, int argc, char **argv)
{
    const char *ipv[SPF_IPS_MAX];
    size_t nipv = 0;
    char **rest = xmalloc(sizeof(char *) * (size_t)(argc + 1));
    char **pos = xmalloc(sizeof(char *) * (size_t)(argc + 1));
    int nrest = 0, npos = 0, json = 0, code;
    struct dnsres *dr = NULL;
    struct spf_result *per_ip = NULL;
    size_t nips = 0;
    struct spf_result reach;
    memset(&reach, 0, sizeof reach);
    char *advice = NULL;

    code = take_ips(argc, argv, ipv, &nipv, rest, &nrest);
    if (code != CTL_OK)
        goto out;
    const struct ctl_opt opts[] = {{"--json", 0, NULL, &json}, {0}};
    code = ctl_parse("spf check", nrest, rest, opts, pos, &npos);
    if (code != CTL_OK)
        goto out;
    if (npos != 1) {
        if (npos)
            code = ctl_usage_error("spf check: one DOMAIN only ('%s' is extra)",
                                   pos[1]);
        else
            code = ctl_usage_error("spf check: missing DOMAIN");
        goto out;
    }
    char domain[SPF_NAME_MAX + 1];
    const char *why = domain_check(pos[0], domain);
    if (why) {
        code = ctl_usage_error("spf check: DOMAIN '%s' is not a domain name: "
                               "%s",
                               pos[0], why);
        goto out;
    }

    struct spf_ip ips[SPF_IPS_MAX];
    char texts[SPF_IPS_MAX][64];
    for (size_t i = 0; i < nipv; i++) {
        code = parse_ip_list(ipv[i], "spf check: --ip", ips, texts, &nips);
        if (code != CTL_OK)
            goto out;
    }
    if (nipv == 0 && c->s.sender_ips && *c->s.sender_ips) {
        code = parse_ip_list(c->s.sender_ips, "HERALD_SENDER_IPS", ips, texts,
                             &nips);
        if (code != CTL_OK)
            goto out;
    }
    if (nipv && nips == 0) {
        code = ctl_usage_error("spf check: --ip: no address given");
        goto out;
    }

    struct herr e = {{0}, {0}};
    int rc = dnsres_new(c->s.dns, 0, 0, &dr, &e);
    if (rc < 0) {
        if (rc == HERR_INVALID)
            code = ctl_usage_error("%s: '%s': %s", e.field,
                                   c->s.dns ? c->s.dns : "", e.msg);
        else
            code = ctl_fail("spf check: DNS resolver", rc, &e);
        goto out;
    }
    struct spf_resolver res;
    dnsres_resolver(dr, &res);
    const char *target = c->s.sender_domain ? c->s.sender_domain : "";
    int64_t deadline = clock_now_ms() + SPF_CHECK_TIME_MS;

    const struct spf_result *shown;
    int authorised;
    if (nips) {
        char sender[SPF_NAME_MAX + 16];
        snprintf(sender, sizeof sender, "postmaster@%s", domain);
        per_ip = xmalloc(sizeof *per_ip * nips);
        memset(per_ip, 0, sizeof *per_ip * nips);
        size_t decide = nips; /* the first temperror, else the first
                                 non-pass, else the first */
        for (size_t i = 0; i < nips; i++) {
            struct spf_request req;
            memset(&req, 0, sizeof req);
            req.ip = ips[i];
            req.sender = sender;
            req.helo = target;
            req.deadline_ms = deadline;
            spf_check_host(&req, &res, &per_ip[i]);
        }
        for (size_t i = 0; i < nips && decide == nips; i++)
            if (per_ip[i].result == SPF_TEMPERROR)
                decide = i;
        for (size_t i = 0; i < nips && decide == nips; i++)
            if (per_ip[i].result != SPF_PASS)
                decide = i;
        if (decide == nips)
            decide = 0;
        shown = &per_ip[decide];
        authorised = shown->result == SPF_PASS;
    } else {
        authorised = spf_reaches_domain(domain, target, &res, deadline, &reach);
        shown = &reach;
    }
    advice = spf_advice(shown, target);
    if (json)
        print_json(domain, target, shown, authorised, advice, nips, texts,
                   per_ip);
    else
        print_text(domain, target, shown, authorised, advice, nips, texts,
                   per_ip);
    code = shown->result == SPF_TEMPERROR ? CTL_FAIL : CTL_OK;

out:
    free(advice);
    if (per_ip) {
        for (size_t i = 0; i < nips; i++)
            spf_result_free(&per_ip[i]);
        free(per_ip);
    }
    spf_result_free(&reach);
    dnsres_free(dr);
    free(rest);
    free(pos);
    return code;
}
