/*
 * spf — RFC 7208 check_host() over a resolver seam. Pure: no sockets, no
 * loop, no globals; every DNS answer comes through `struct spf_resolver`,
 * which the caller supplies: the in-memory `struct spf_zone` of
 * tests/spf_zone.h in tests and fuzzing, the network resolver of
 * io/dnsres.h (HERALD_DNS) in the worker (worker/spfcache.c) and in
 * `heraldctl spf check`.
 *
 * Everything here is synchronous: spf_check_host() calls the resolver's
 * lookup() and waits for each answer, so with a real resolver it belongs
 * on a thread pool, never on the event loop. The functions keep no state
 * between calls and may run on several threads at once as long as the
 * resolver allows concurrent lookups.
 *
 * What is implemented (RFC 7208 section numbers):
 *   §4    check_host(): record selection (TXT only; exactly one "v=spf1"
 *         record, more is permerror, none is "none"), the whole record
 *         syntax-checked before anything is evaluated (§4.6), mechanisms
 *         in order, first match wins, default neutral.
 *   §5    all, include, a, mx, ptr, ip4, ip6, exists; dual CIDR lengths
 *         (a/24//64); IPv4-mapped IPv6 clients are IPv4 (§5/9.2).
 *   §6    redirect= (after all mechanisms, only when none matched; "none"
 *         at the target is permerror), exp= (fetched only on "fail",
 *         only for the record that decided; problems with it are
 *         ignored, an empty "exp=" is permerror), unknown modifiers
 *         syntax-checked and ignored, redirect/exp twice is permerror.
 *   §7    macros s l o d i p h c r t v, upper case = URL-escaped, digit
 *         and 'r' transformers, delimiters . - + , / _ =, %% %_ %-;
 *         c r t only in explanation text; expanded names over 253 bytes
 *         lose labels on the left (§7.3).
 *   §4.6.4 limits: at most SPF_LOOKUP_MAX terms that query DNS (include,
 *         a, mx, ptr, exists, redirect) per check, counted across
 *         includes and redirects as they are evaluated, the next one is
 *         permerror; at most SPF_VOID_MAX void look-ups (NXDOMAIN or no
 *         records) for a, mx, ptr and exists, the next is permerror; an
 *         MX answer with more than SPF_MX_MAX names is permerror; only
 *         the first SPF_PTR_MAX PTR names are validated. exp= does not
 *         count. Recursion is bounded by the look-up limit.
 *   §2.6  results none, neutral, pass, fail, softfail, temperror,
 *         permerror.
 *
 * Choices where the RFC leaves room (all agree with the openspf suite):
 *   - A target name that cannot be a DNS name after macro expansion (an
 *     empty label, a label over 63 bytes) makes a, mx, ptr and exists
 *     not match, without a query; include/redirect to such a name is
 *     permerror (it has no record).
 *   - %{i} of an IPv6 client is 32 upper-case nibbles ("2.0.0.1.0.D.B.8
 *     ..."); DNS names are case-insensitive, so this only shows in
 *     explanation text. %{c} is the RFC 5952 form ("2001:db8::1").
 *   - %{p} is computed once per check: the first SPF_PTR_MAX PTR names,
 *     kept when an A/AAAA look-up of the name gives the client address;
 *     the current domain itself, else a subdomain of it, else the first
 *     validated name, else "unknown". Its look-ups do not count against
 *     SPF_LOOKUP_MAX (the term that uses it does).
 *   - DNS errors while validating PTR names skip that name (§5.5); any
 *     other DNS error (timeout, SERVFAIL) is temperror (§5).
 *   - A domain given to check_host() that is not a multi-label name
 *     (a single label, a "[1.2.3.4]" literal, an empty or 64-byte
 *     label) gives "none" (§4.3).
 *
 * Caps: a TXT record keeps at most SPF_TXT_MAX bytes (a v=spf1 record
 * that was longer is permerror, an explanation that was longer is
 * ignored), an answer keeps at most SPF_ANSWER_MAX records, a macro
 * expansion stops at SPF_EXPAND_MAX bytes (permerror), an explanation at
 * SPF_EXP_MAX (ignored). Every string read from DNS is bounded.
 */
#ifndef HERALD_SPF_H
#define HERALD_SPF_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

#define SPF_LOOKUP_MAX 10       /* DNS-querying terms per check (§4.6.4) */
#define SPF_VOID_MAX 2          /* void look-ups per check (§4.6.4) */
#define SPF_MX_MAX 10           /* MX names per "mx" (more: permerror) */
#define SPF_PTR_MAX 10          /* PTR names validated (the rest ignored) */
#define SPF_NAME_MAX 253        /* a domain name, without the final dot */
#define SPF_LABEL_MAX 63        /* one label */
#define SPF_TXT_MAX 4096        /* bytes of one TXT record, strings joined */
#define SPF_TXT_STRINGS_MAX 128 /* character-strings in one TXT record */
#define SPF_ANSWER_MAX 128      /* records kept from one answer */
#define SPF_EXPAND_MAX 8192     /* a macro expansion, before §7.3 truncation */
#define SPF_EXP_MAX 1024        /* an explanation after expansion */
#define SPF_REASON_MAX 512      /* spf_result.reason */
#define SPF_CHAIN_MAX (SPF_LOOKUP_MAX + 1) /* records one check can read */

/* ---- addresses ---------------------------------------------------------- */

struct spf_ip {
    int family;          /* 4 or 6 */
    unsigned char b[16]; /* network order; IPv4 in b[0..3] */
};

/*
 * Parses a textual IPv4 or IPv6 address. An IPv4-mapped IPv6 address
 * (::ffff:1.2.3.4) is stored as IPv4, as §5 requires. Returns 0 or
 * HERR_INVALID.
 */
int spf_ip_parse(const char *s, struct spf_ip *out);

/* ---- the resolver seam ------------------------------------------------- */

enum spf_rrtype { SPF_RR_A, SPF_RR_AAAA, SPF_RR_MX, SPF_RR_PTR, SPF_RR_TXT };

/* One record of an answer. Only the members of its type are set. */
struct spf_rr {
    uint32_t ttl;           /* seconds */
    unsigned char addr[16]; /* A: addr[0..3]; AAAA: all 16 */
    uint16_t pref;          /* MX preference */
    char *name;             /* MX exchange ("" for a null MX) or PTR target; no
                               trailing dot */
    char *txt;              /* TXT: the character-strings joined without
                               separator; NUL-terminated but may hold NUL bytes,
                               so use txt_len */
    size_t txt_len;
    int truncated; /* TXT: longer than SPF_TXT_MAX, only the start kept */
};

/*
 * An answer: the records of one type at one name (after CNAMEs), owned by
 * the evaluator, which initialises it before each lookup and frees it
 * after. Resolvers only add to it, with spf_answer_add_*().
 */
struct spf_answer {
    enum spf_rrtype type;
    uint32_t ttl; /* for NXDOMAIN / no records: how long that absence may
                     be cached (the SOA minimum); 0 when unknown */
    struct spf_rr *rr;
    size_t n, cap;
    int truncated; /* more than SPF_ANSWER_MAX records: the rest dropped */
};

/*
 * Adding records. Each returns 0, or HERR_TOOBIG when the answer already
 * holds SPF_ANSWER_MAX records (the record is dropped and `truncated`
 * set), or HERR_INVALID for a name over SPF_NAME_MAX bytes or a TXT
 * record with more than SPF_TXT_STRINGS_MAX strings (dropped). A record of
 * the wrong type for the answer is HERR_INVALID. Names lose one trailing
 * dot. A TXT record longer than SPF_TXT_MAX is kept cut, with
 * rr.truncated = 1.
 */
int spf_answer_add_addr(struct spf_answer *a, const unsigned char *addr,
                        uint32_t ttl); /* 4 bytes for A, 16 for AAAA */
int spf_answer_add_name(struct spf_answer *a, const char *name,
                        uint32_t ttl); /* PTR */
int spf_answer_add_mx(struct spf_answer *a, uint16_t pref, const char *name,
                      uint32_t ttl);
int spf_answer_add_txt(struct spf_answer *a, const char *const *strings,
                       const size_t *lens, size_t nstrings, uint32_t ttl);

void spf_answer_init(struct spf_answer *a, enum spf_rrtype type);
void spf_answer_free(struct spf_answer *a);

/*
 * The seam. lookup() asks for the records of `type` at `name` (no
 * trailing dot; any byte but NUL may appear, e.g. "foo:bar/x.example";
 * every label is 1..63 bytes, the whole at most SPF_NAME_MAX), following
 * CNAMEs as a recursive resolver does. It adds what it found to `out`
 * (already initialised for `type`) and returns:
 *   0             an answer; out->n == 0 means the name exists without
 *                 records of that type (NODATA)
 *   HERR_NOTFOUND the name does not exist (NXDOMAIN)
 *   HERR_TEMP     anything else: timeout, SERVFAIL, a CNAME loop, a
 *                 malformed reply (any other negative code is read the
 *                 same way)
 * For negative answers it may set out->ttl. It must not keep `out`.
 */
struct spf_resolver {
    int (*lookup)(void *ud, const char *name, enum spf_rrtype type,
                  struct spf_answer *out);
    void *ud;
};

/* ---- check_host() ------------------------------------------------------ */

enum spf_res {
    SPF_NONE,
    SPF_NEUTRAL,
    SPF_PASS,
    SPF_FAIL,
    SPF_SOFTFAIL,
    SPF_TEMPERROR,
    SPF_PERMERROR,
};

/* "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror" */
const char *spf_res_str(enum spf_res r);

struct spf_request {
    struct spf_ip ip;     /* the client (the relay's egress address);
                             a zeroed one is 0.0.0.0 */
    const char *sender;   /* MAIL FROM. NULL or "" means
                             "postmaster@<helo>"; no '@' means
                             "postmaster@<sender>"; "@d" means
                             "postmaster@d". The domain checked is the
                             part after the last '@'. */
    const char *helo;     /* EHLO name, %{h}; NULL means "unknown" */
    const char *receiver; /* %{r} in explanations; NULL means "unknown" */
    int64_t now_s;        /* %{t}; 0 means clock_now_ms() / 1000 */
    int64_t deadline_ms;  /* clock_now_ms() value after which no more
                             queries are made (temperror); 0: none. The
                             resolver's own timeouts still apply. */
};

enum spf_via { SPF_VIA_CHECK, SPF_VIA_INCLUDE, SPF_VIA_REDIRECT };

/* One record the evaluation fetched, in the order they were fetched. */
struct spf_step {
    char *domain;        /* the name whose record was looked up */
    char *record;        /* its v=spf1 record for display (bytes outside
                            printable ASCII written as \xHH), or NULL
                            when there was none or the look-up failed */
    enum spf_via via;    /* how evaluation got there */
    int depth;           /* 0 for the checked domain, +1 per hop */
    enum spf_res result; /* what check_host() gave for this domain */
};

/*
 * The outcome. All strings are owned by the result: spf_result_free().
 * Every string is printable ASCII, whatever DNS returned (other bytes in
 * records and names are shown as \xHH, in reasons as '?'; an explanation
 * that would hold them is dropped), so it can be logged and put in JSON.
 */
struct spf_result {
    enum spf_res result;
    char *domain;      /* the domain checked */
    char *record;      /* its record (as in chain[0]), or NULL */
    char *mechanism;   /* the term that decided, as written ("~all",
                          "include:_spf.example.com"), taken from the
                          checked domain's record or a redirect target's;
                          NULL when none matched */
    char *reason;      /* one sentence: why this result (never NULL) */
    char *explanation; /* on "fail": the expanded exp= text, or NULL when
                          the record has none or it could not be used */
    struct spf_step *chain;
    size_t nchain;
    int lookups;  /* DNS-querying terms evaluated (SPF_LOOKUP_MAX cap) */
    int voids;    /* void look-ups */
    uint32_t ttl; /* the smallest TTL of every answer consulted
                     (negative answers included when they carried one):
                     cache the result at most this long. UINT32_MAX when
                     no answer carried a TTL (e.g. a malformed domain, or
                     only temporary errors). */
};

/*
 * RFC 7208 check_host() for the domain of req->sender (or req->helo).
 * Fills *out (free with spf_result_free) and returns out->result. Never
 * fails as a function: DNS trouble is SPF_TEMPERROR, a broken policy
 * SPF_PERMERROR, each with out->reason. Synchronous.
 */
enum spf_res spf_check_host(const struct spf_request *req,
                            const struct spf_resolver *r,
                            struct spf_result *out);

/*
 * Does the SPF policy of `domain` reach "include:<target>"? For when no
 * sender IPs are configured (SPEC §2: HERALD_SENDER_IPS unset).
 *
 * Evaluates the policy as check_host() would for a client that matches
 * nothing except include:<target> (which passes, since it is the
 * platform's own record): ip4/ip6/a/mx/ptr/exists never match (a, mx,
 * ptr, exists still count against SPF_LOOKUP_MAX but make no query),
 * other includes and redirects are followed within the same limits, all
 * matches. So "v=spf1 -all include:T" does not reach T, "?include:T"
 * gives neutral, and a broken include before T is permerror. Macros
 * expand for sender postmaster@<domain>, EHLO <domain>, client 0.0.0.0
 * and %{p} "unknown". The look-ups of <target>'s own record are not
 * counted. `target` compares without case and trailing dot.
 *
 * Fills *out like spf_check_host (result SPF_PASS when reached; NONE,
 * PERMERROR, TEMPERROR as there; otherwise what the policy ends in for
 * such a client, e.g. SPF_SOFTFAIL for "~all"). Returns 1 when
 * out->result is SPF_PASS, else 0.
 */
int spf_reaches_domain(const char *domain, const char *target,
                       const struct spf_resolver *r, int64_t deadline_ms,
                       struct spf_result *out);

void spf_result_free(struct spf_result *out);

/*
 * The platform's verdict for sending as `domain` (SPEC §4 path 2). With
 * `nips` sender IPs (HERALD_SENDER_IPS): check_host for each, the
 * platform is authorised only if every one passes, and *out is the
 * deciding result (the first temperror, else the first that did not
 * pass, else the first). Without: spf_reaches_domain(domain, target).
 * Returns 1 when authorised; a temperror is never authorised.
 */
int spf_platform_verdict(const char *domain, const char *target,
                         const struct spf_ip *ips, size_t nips,
                         const struct spf_resolver *r, int64_t deadline_ms,
                         struct spf_result *out);

/*
 * Advice for the organisation, in one paragraph, from a result of
 * spf_check_host or spf_reaches_domain for res->domain, where `target` is
 * the platform's sender domain (HERALD_SENDER_DOMAIN). Examples:
 *   pass:  "example.org authorises the platform (include:T): nothing to
 *           do."
 *   none:  "example.org publishes no SPF record. Publish this TXT record
 *           at example.org: v=spf1 include:T ~all"
 *   fail & co. without the include: "Add include:T before the all
 *           mechanism: v=spf1 mx include:T ~all"
 *   the include after all / with a qualifier: "Move ..." / "Change ..."
 *   permerror: what is broken, and that it must be fixed first
 *   temperror: that the look-up failed and is retried later
 * and a warning when the record is near the 10-look-up limit. Returns a
 * new string (caller frees), never NULL.
 */
char *spf_advice(const struct spf_result *res, const char *target);

/* Domain names equal, ignoring ASCII case and one trailing dot on
 * either. */
int spf_name_eq(const char *a, const char *b);

#endif
