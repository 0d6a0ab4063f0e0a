/*
 * dnsres — a synchronous DNS client behind the SPF evaluator's seam
 * (common/spf.h, `struct spf_resolver`): A, AAAA, MX, PTR and TXT
 * questions sent to one recursive server (HERALD_DNS, "host[:port]") or
 * to the system's resolvers (/etc/resolv.conf), with libresolv
 * (res_ninit / res_nsend / ns_initparse / ns_parserr).
 *
 * What a lookup does:
 *   - builds the question itself from the raw name (every byte but NUL
 *     and '.', labels 1..63 bytes, so "foo:bar/x.example" is asked as
 *     is, never re-read as presentation format), RD set, with an EDNS0
 *     OPT record (UDP payload DNSRES_EDNS_SIZE); a FORMERR reply to that
 *     is retried once without EDNS0;
 *   - res_nsend: UDP, the server's answer checked against the question
 *     (id and name), TCP when the reply is truncated; each try waits
 *     `timeout_s` seconds (res_state.retrans), `attempts` tries
 *     (res_state.retry) per server, so one unanswered question costs
 *     about timeout_s * attempts * servers seconds (defaults: 2 s x 2 =
 *     4 s with one server); a port that answers with ICMP "unreachable"
 *     fails at once;
 *   - reads the answer section: follows the CNAME chain from the
 *     question's name (in any order the records come), keeps the records
 *     of the asked type at the end of it, each record's TTL lowered to
 *     the smallest TTL of the CNAMEs that led there; when the reply holds
 *     only the chain (no records and no negative proof), the last target
 *     is asked again, at most DNSRES_CNAME_MAX hops in all;
 *   - the result, as the seam wants it: 0 with records; 0 without records
 *     for NOERROR/NODATA; HERR_NOTFOUND for NXDOMAIN; HERR_TEMP for a
 *     timeout, no server reachable, SERVFAIL, REFUSED and any other
 *     rcode, a malformed reply (a record running past its message, an
 *     A record that is not 4 bytes ...), a CNAME loop or an over-long
 *     chain. Negative answers carry the RFC 2308 TTL: min(SOA TTL, SOA
 *     minimum) from the authority section, 0 when there is no SOA.
 *   - records go into the answer through spf_answer_add_*(), so the caps
 *     of spf.h apply (SPF_ANSWER_MAX records, SPF_TXT_MAX bytes,
 *     SPF_TXT_STRINGS_MAX strings); names that cannot be given as raw
 *     text (a label holding a NUL byte or a '.') are skipped.
 *
 * Threads: a struct dnsres owns one res_state (and its sockets); the
 * res_n* functions are thread-safe over distinct states, so use one
 * dnsres per thread (several may exist at once); one dnsres must not be
 * used by two threads at the same time. There is no cache: TTLs are
 * returned so that the caller caches verdicts (spf_result.ttl).
 */
#ifndef HERALD_DNSRES_H
#define HERALD_DNSRES_H

#include "err.h"
#include "dnsaddr.h"
#include "spf.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DNSRES_CNAME_MAX 8         /* CNAME hops per lookup */
#define DNSRES_EDNS_SIZE 1232      /* advertised UDP payload */
#define DNSRES_DEFAULT_TIMEOUT_S 2 /* first try; glibc doubles it */
#define DNSRES_DEFAULT_ATTEMPTS 2  /* tries per server */
#define DNSRES_REPLY_MAX 65536     /* reply buffer (TCP maximum) */

struct dnsres;

/*
 * A resolver asking `server` ("host[:port]", see above) or, when server
 * is NULL or "", the name servers of /etc/resolv.conf (res_ninit).
 * timeout_s (1..30) and attempts (1..5) as above; 0 picks the defaults.
 * Returns 0 and *out, or HERR_INVALID (bad server, field "HERALD_DNS";
 * bad timeout / attempts) or HERR_IO (res_ninit failed, no name
 * server configured).
 */
int dnsres_new(const char *server, int timeout_s, int attempts,
               struct dnsres **out, struct herr *e);
void dnsres_free(struct dnsres *r);

/* The seam's lookup() (spf.h) over `r`. */
int dnsres_lookup(struct dnsres *r, const char *name, enum spf_rrtype type,
                  struct spf_answer *out);

/* The seam over `r` (borrowed; r must outlive the resolver's use). */
void dnsres_resolver(struct dnsres *r, struct spf_resolver *out);

/* Questions sent by `r` so far (each res_nsend call counts). */
size_t dnsres_queries(const struct dnsres *r);

/*
 * Builds the question for `name` (raw, as in lookup()) and `type` into
 * buf (at least 512 bytes): id, RD, one question of class IN, and an
 * EDNS0 OPT record when `edns`. Returns its length, or HERR_INVALID for
 * a name that cannot be asked (empty label, label over 63 bytes, over
 * SPF_NAME_MAX bytes), HERR_TOOBIG when buf is too small.
 */
int dnsres_build_query(const char *name, enum spf_rrtype type, uint16_t id,
                       int edns, unsigned char *buf, size_t buflen);

/*
 * Reads one reply to the question (`name`, `type`) into `out`, as
 * described above. *hops (in/out) counts the CNAMEs followed so far in
 * this lookup, *ttl_cap (in/out, start with UINT32_MAX) the smallest of
 * their TTLs, which caps the TTL of every record added. Returns 0
 * (records, or none for NODATA), HERR_NOTFOUND (NXDOMAIN), HERR_TEMP
 * (an rcode other than NOERROR/NXDOMAIN, a malformed reply, a CNAME loop
 * or more than DNSRES_CNAME_MAX hops), or DNSRES_FOLLOW when the reply
 * ends in a CNAME chain with neither records nor a SOA: then `next`
 * (SPF_NAME_MAX + 1 bytes) holds the name to ask next.
 */
#define DNSRES_FOLLOW 1
int dnsres_parse_reply(const unsigned char *msg, size_t len, const char *name,
                       enum spf_rrtype type, int *hops, uint32_t *ttl_cap,
                       struct spf_answer *out, char *next);

#endif
