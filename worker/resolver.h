/*
 * resolve — the sender resolver (SPEC §4): for one job, which path it
 * takes, why, and the envelope and header identities that follow.
 *
 *   scheme  the organisation registered an Email Sending Scheme for the
 *           job's (org, from): its SMTP server and credentials, From and
 *           envelope sender the organisation's address. A scheme whose
 *           credentials were refused (auth_failed) is skipped: path 3
 *           ("fallback") or the job waits ("hold"); so is one whose
 *           password this worker cannot open (it waits).
 *   spf     no scheme, and the SPF policy of the from domain authorises
 *           the platform (worker/spfcache.h): the platform relay, From
 *           and envelope sender the organisation's address.
 *   relay   everything else: the platform relay, envelope sender
 *           HERALD_DEFAULT_FROM, From "<from_name> via <platform>"
 *           <HERALD_DEFAULT_FROM> (the job's from address stands in for a
 *           missing from_name), Reply-To the job's reply_to or from.
 */
#ifndef HERALD_RESOLVER_H
#define HERALD_RESOLVER_H

#include "job.h"
#include "mailer.h"
#include "schemes.h"
#include "settings.h"

enum route_path { ROUTE_SCHEME, ROUTE_SPF, ROUTE_RELAY };

struct route {
    enum route_path path;
    const char *path_name; /* "scheme" | "spf" | "relay" (static) */
    char *reason;          /* why this path (for the Message Center) */
    int hold;              /* do not send now: wait (reason says why) */
    int hold_auth;         /* held because the scheme's login was refused */
    int need_spf;          /* ask spfcache, then route again with the verdict */
    char *url;             /* SMTP server URL */
    enum mail_tls tls;
    long max_conns;     /* 0: the mailer's default */
    char *user;         /* NULL: no AUTH */
    char *password;     /* with user: a reference to a secret (seal.h),
                           never a copy: the scheme entry's opened
                           password or the relay's; resolver_route_clear drops
                           it, so it outlives a reload of the scheme
                           table while the job holds its route */
    char *scheme_field; /* the scheme used, for a refused login */
    char *scheme_fp;    /* its credentials fingerprint */
    char *imap_url;     /* imap(s)://host:port for the Sent copy, or NULL */
    char *sent_folder;  /* the scheme's Sent folder, or NULL */
    char *envelope_from;
    char *from_name; /* From: display name, NULL for none */
    char *from_addr; /* From: address */
    char *reply_to;  /* Reply-To: address */
    /* the scheme's quotas (path scheme; 0: none) and its time zone for
     * the daily window (NULL: UTC) */
    long long daily_limit, minute_limit;
    char *time_zone;
};

struct resolver;

/* `s` and `sc` are borrowed and must outlive the resolver; `sc` may be
 * NULL (no schemes). */
struct resolver *resolver_new(const struct settings *s,
                              const struct schemes *sc);
void resolver_free(struct resolver *r);

/*
 * Fills `out` (owned strings, and one reference to the password's secret;
 * release with resolver_route_clear). Returns 0.
 * `spf` is the SPF verdict for the from domain when known (1 authorised,
 * 0 not, with `spf_why`), -1 when not asked yet: then a job without a
 * scheme comes back with need_spf set and nothing else.
 */
int resolver_route(struct resolver *r, const struct job *j, int spf,
                   const char *spf_why, struct route *out);
void resolver_route_clear(struct route *rt);

#endif
