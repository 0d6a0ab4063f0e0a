#include "resolver.h"
#include "clock.h"
#include "seal.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct resolver {
    const struct settings *s;
    const struct schemes *sc;
    char *relay_pw; /* HERALD_RELAY_PASSWORD as a secret (seal.h), or NULL */
};

struct resolver *
resolver_new(const struct settings *s, const struct schemes *sc)
{
    struct resolver *r = xcalloc(1, sizeof *r);
    r->s = s;
    r->sc = sc;
    if (s->relay_user) {
        const char *pw = s->relay_password ? s->relay_password : "";
        r->relay_pw = seal_secret_dup(pw, strlen(pw));
    }
    return r;
}

void
resolver_free(struct resolver *r)
{
    if (r == NULL)
        return;
    seal_free_secret(r->relay_pw, 0);
    free(r);
}

static void
relay(struct resolver *r, const struct job *j, struct route *out, char *reason)
{
    const struct settings *s = r->s;
    out->path = ROUTE_RELAY;
    out->path_name = "relay";
    out->reason = reason;
    out->url = xstrdup(s->relay);
    out->tls = MAIL_TLS_OPPORTUNISTIC;
    if (s->relay_user) {
        out->user = xstrdup(s->relay_user);
        out->password = seal_secret_ref(r->relay_pw);
    }
    out->envelope_from = xstrdup(s->default_from);
    out->from_name = xasprintf(
        "%s via %s", j->from_name ? j->from_name : j->from, s->platform_name);
    out->from_addr = xstrdup(s->default_from);
    out->reply_to = xstrdup(j->reply_to ? j->reply_to : j->from);
}

static void
scheme_path(struct resolver *r, const struct job *j,
            const struct scheme_entry *e, struct route *out)
{
    const struct scheme *s = e->s;
    out->path = ROUTE_SCHEME;
    out->path_name = "scheme";
    out->reason = xasprintf("the organisation's Email Sending Scheme for %s "
                            "(%s:%d)",
                            s->email, s->smtp_host, s->smtp_port);
    out->url = mailer_scheme_url(s, &out->tls);
    out->max_conns = r->s->scheme_connections;
    out->user = xstrdup(s->username);
    out->password = seal_secret_ref(e->password); /* borrowed, counted */
    out->scheme_field = xstrdup(e->field);
    out->scheme_fp = xstrdup(e->fp);
    out->daily_limit = s->daily_limit;
    out->minute_limit = s->minute_limit;
    out->time_zone = s->time_zone ? xstrdup(s->time_zone) : NULL;
    if (s->imap_host && s->sent_folder) {
        int iv6 = strchr(s->imap_host, ':') != NULL;
        out->imap_url = xasprintf(
            "%s://%s%s%s:%d", s->tls == SCHEME_TLS_SSL ? "imaps" : "imap",
            iv6 ? "[" : "", s->imap_host, iv6 ? "]" : "", s->imap_port);
        out->sent_folder = xstrdup(s->sent_folder);
    }
    out->envelope_from = xstrdup(j->from);
    out->from_name = j->from_name ? xstrdup(j->from_name) : NULL;
    out->from_addr = xstrdup(j->from);
    out->reply_to = xstrdup(j->reply_to ? j->reply_to : j->from);
}

/* Path 2: the relay, with the organisation's own From. */
static void
spf_path(struct resolver *r, const struct job *j, const char *why,
         struct route *out)
{
    relay(r, j, out, xstrdup(why));
    out->path = ROUTE_SPF;
    out->path_name = "spf";
    free(out->envelope_from);
    free(out->from_name);
    free(out->from_addr);
    out->envelope_from = xstrdup(j->from);
    out->from_name = j->from_name ? xstrdup(j->from_name) : NULL;
    out->from_addr = xstrdup(j->from);
}

int
resolver_route(struct resolver *r, const struct job *j, int spf,
               const char *spf_why, struct route *out)
{
    memset(out, 0, sizeof *out);
    const struct scheme_entry *e =
        r->sc ? schemes_find(r->sc, j->org, j->from) : NULL;
    if (e == NULL) {
        if (spf < 0) {
            out->need_spf = 1;
            return 0;
        }
        if (spf == 1) {
            spf_path(r, j, spf_why, out);
            return 0;
        }
        relay(r, j, out,
              xasprintf("no sending scheme for this address, and %s; the "
                        "platform relay sends on its behalf",
                        spf_why ? spf_why : "no SPF verdict"));
        return 0;
    }
    if (e->s->state == SCHEME_STATE_AUTH_FAILED) {
        char when[CLOCK_RFC3339_LEN];
        clock_rfc3339(e->s->state_at, when);
        if (e->s->on_auth_failure == SCHEME_AUTH_HOLD) {
            relay(r, j, out,
                  xasprintf("held: the sending scheme's credentials were "
                            "refused at %s (%s); it waits until the scheme is "
                            "updated or a scheme test passes",
                            when, e->s->state_reason));
            out->hold = 1;
            out->hold_auth = 1;
            out->path = ROUTE_SCHEME;
            out->path_name = "scheme";
            return 0;
        }
        relay(r, j, out,
              xasprintf("fallback: the sending scheme's credentials were "
                        "refused at %s (%s); the platform relay sends on its "
                        "behalf",
                        when, e->s->state_reason));
        return 0;
    }
    if (e->password == NULL) {
        relay(r, j, out, xasprintf("held: %s", e->why_not));
        out->hold = 1;
        out->path = ROUTE_SCHEME;
        out->path_name = "scheme";
        return 0;
    }
    scheme_path(r, j, e, out);
    return 0;
}

void
resolver_route_clear(struct route *rt)
{
    free(rt->reason);
    free(rt->url);
    free(rt->user);
    seal_free_secret(rt->password, 0); /* drops the route's reference */
    free(rt->scheme_field);
    free(rt->scheme_fp);
    free(rt->imap_url);
    free(rt->sent_folder);
    free(rt->envelope_from);
    free(rt->from_name);
    free(rt->from_addr);
    free(rt->reply_to);
    free(rt->time_zone);
    memset(rt, 0, sizeof *rt);
}
