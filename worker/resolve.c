#include "resolve.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct resolver {
    const struct settings *s;
};

struct resolver *
resolver_new(const struct settings *s)
{
    struct resolver *r = xcalloc(1, sizeof *r);
    r->s = s;
    return r;
}

void
resolver_free(struct resolver *r)
{
    free(r);
}

int
resolver_route(struct resolver *r, const struct job *j, struct route *out)
{
    const struct settings *s = r->s;
    memset(out, 0, sizeof *out);
    out->path = ROUTE_RELAY;
    out->path_name = "relay";
    out->reason = xstrdup("no sending scheme or SPF authorisation is "
                          "configured for this sender; the platform relay "
                          "sends on its behalf");
    out->url = s->relay;
    out->user = s->relay_user;
    out->password = s->relay_user ? s->relay_password : NULL;
    out->envelope_from = xstrdup(s->default_from);
    out->from_name = xasprintf(
        "%s via %s", j->from_name ? j->from_name : j->from, s->platform_name);
    out->from_addr = xstrdup(s->default_from);
    out->reply_to = xstrdup(j->reply_to ? j->reply_to : j->from);
    return 0;
}

void
route_clear(struct route *rt)
{
    free(rt->reason);
    free(rt->envelope_from);
    free(rt->from_name);
    free(rt->from_addr);
    free(rt->reply_to);
    memset(rt, 0, sizeof *rt);
}
