#include "scheme.h"
#include "clock.h"
#include "job.h"
#include "seal.h"
#include "tzwin.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void
scheme_patch_init(struct scheme_patch *p)
{
    memset(p, 0, sizeof *p);
    p->tls = -1;
    p->on_auth_failure = -1;
}

void
scheme_free(struct scheme *s)
{
    if (s == NULL)
        return;
    free(s->org);
    free(s->email);
    free(s->smtp_host);
    free(s->imap_host);
    free(s->username);
    free(s->password);
    free(s->sent_folder);
    free(s->time_zone);
    free(s->state_reason);
    free(s);
}

static char *
dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

struct scheme *
scheme_dup(const struct scheme *s)
{
    struct scheme *d = xmalloc(sizeof *d);
    *d = *s;
    d->org = dup_or_null(s->org);
    d->email = dup_or_null(s->email);
    d->smtp_host = dup_or_null(s->smtp_host);
    d->imap_host = dup_or_null(s->imap_host);
    d->username = dup_or_null(s->username);
    d->password = dup_or_null(s->password);
    d->sent_folder = dup_or_null(s->sent_folder);
    d->time_zone = dup_or_null(s->time_zone);
    d->state_reason = xstrdup(s->state_reason ? s->state_reason : "");
    return d;
}

/* ---- validators ---- */

int
scheme_valid_host(const char *s)
{
    unsigned char addr[16];
    if (s == NULL || *s == '\0')
        return 0;
    if (inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1)
        return 1;
    size_t len = strlen(s);
    if (s[len - 1] == '.')
        len--;
    if (len == 0 || len > SCHEME_HOST_MAX)
        return 0;
    size_t label = 0;
    int all_numeric = 1;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? s[i] : '.';
        if (c == '.') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!(isalnum((unsigned char)c) || c == '-'))
            return 0;
        if (c == '-' && label == 0)
            return 0;
        if (!isdigit((unsigned char)c))
            all_numeric = 0;
        label++;
    }
    /* "300.1.2.3" or "1.2.3" are broken addresses, not host names. */
    return !all_numeric;
}

int
scheme_host_is_loopback(const char *s)
{
    unsigned char a[16];
    if (s == NULL)
        return 0;
    if (strcasecmp(s, "localhost") == 0 || strcasecmp(s, "localhost.") == 0)
        return 1;
    if (inet_pton(AF_INET, s, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, s, a) == 1) {
        static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0,    0,
                                                   0, 0, 0, 0, 0xff, 0xff};
        int one = 1;
        for (int i = 0; i < 15; i++)
            one &= a[i] == 0;
        if (one && a[15] == 1)
            return 1;
        return memcmp(a, v4mapped, 12) == 0 && a[12] == 127;
    }
    return 0;
}

static int
parse_uint(const char *s, long long max, long long *out)
{
    if (s == NULL || *s == '\0' || strlen(s) > 12)
        return -1;
    long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > max)
        return -1;
    *out = v;
    return 0;
}

int
scheme_parse_port(const char *s, const char *field, int *out, struct herr *e)
{
    long long v;
    if (parse_uint(s, 65535, &v))
        return herr_set(e, HERR_INVALID, field,
                        "'%.40s' is not a port (1-65535)", s ? s : "");
    *out = (int)v;
    return 0;
}

int
scheme_parse_limit(const char *s, const char *field, long long *out,
                   struct herr *e)
{
    if (parse_uint(s, SCHEME_LIMIT_MAX, out))
        return herr_set(e, HERR_INVALID, field,
                        "'%.40s' is not a positive integer (1-%lld)",
                        s ? s : "", SCHEME_LIMIT_MAX);
    return 0;
}

static const char *const tls_names[] = {"ssl", "starttls", "none"};
static const char *const auth_names[] = {"fallback", "hold"};
static const char *const state_names[] = {"ok", "auth_failed"};

int
scheme_tls_parse(const char *s, enum scheme_tls *out)
{
    for (int i = 0; s && i < 3; i++)
        if (strcmp(s, tls_names[i]) == 0) {
            *out = (enum scheme_tls)i;
            return 0;
        }
    return HERR_INVALID;
}

int
scheme_on_auth_parse(const char *s, enum scheme_on_auth *out)
{
    for (int i = 0; s && i < 2; i++)
        if (strcmp(s, auth_names[i]) == 0) {
            *out = (enum scheme_on_auth)i;
            return 0;
        }
    return HERR_INVALID;
}

static int
state_parse(const char *s, enum scheme_state *out)
{
    for (int i = 0; s && i < 2; i++)
        if (strcmp(s, state_names[i]) == 0) {
            *out = (enum scheme_state)i;
            return 0;
        }
    return HERR_INVALID;
}

const char *
scheme_tls_name(enum scheme_tls t)
{
    return (unsigned)t < 3 ? tls_names[t] : "starttls";
}

const char *
scheme_on_auth_name(enum scheme_on_auth a)
{
    return (unsigned)a < 2 ? auth_names[a] : "fallback";
}

const char *
scheme_state_name(enum scheme_state s)
{
    return (unsigned)s < 2 ? state_names[s] : "ok";
}

static int
lower_join(char *out, size_t n, const char *org, const char *email,
           const char *suffix)
{
    int r = snprintf(out, n, "%s/%s%s", org, email, suffix);
    if (r < 0 || (size_t)r >= n)
        return -1;
    for (char *p = out + strlen(org) + 1; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    /* The suffix is lowercase already. */
    return r;
}

int
scheme_field(char *out, size_t n, const char *org, const char *email)
{
    return lower_join(out, n, org, email, "");
}

int
scheme_aad(char *out, size_t n, const char *org, const char *email)
{
    return lower_join(out, n, org, email, SCHEME_AAD_SUFFIX);
}

/* 1 when `s` is valid UTF-8 of 1..max bytes without control characters. */
static int
valid_text(const char *s, size_t max)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > max)
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    json_t *j = json_string(s); /* NULL when not UTF-8 */
    int ok = j != NULL;
    json_decref(j);
    return ok;
}

static int
check_host(const char *h, const char *field, struct herr *e)
{
    if (h == NULL || *h == '\0')
        return herr_set(e, HERR_INVALID, field, "missing");
    if (strlen(h) > SCHEME_HOST_MAX)
        return herr_set(e, HERR_TOOBIG, field, "longer than %d bytes",
                        SCHEME_HOST_MAX);
    if (!scheme_valid_host(h))
        return herr_set(e, HERR_INVALID, field,
                        "'%.80s' is not a host name or IP address", h);
    return 0;
}

int
scheme_check(const struct scheme *s, struct herr *e)
{
    int rc;
    if (s->org == NULL || !job_valid_org(s->org))
        return herr_set(e, HERR_INVALID, "org",
                        "'%.80s' is not an organisation ([A-Za-z0-9._-]{1,64})",
                        s->org ? s->org : "");
    if (s->email == NULL || !job_valid_email(s->email))
        return herr_set(e, HERR_INVALID, "email", "'%.80s' is not an address",
                        s->email ? s->email : "");
    if ((rc = check_host(s->smtp_host, "smtp_host", e)))
        return rc;
    if (s->smtp_port < 1 || s->smtp_port > 65535)
        return herr_set(e, HERR_INVALID, "smtp_port",
                        "%d is not a port (1-65535)", s->smtp_port);
    if (s->imap_host) {
        if ((rc = check_host(s->imap_host, "imap_host", e)))
            return rc;
        if (s->imap_port < 1 || s->imap_port > 65535)
            return herr_set(e, HERR_INVALID, "imap_port",
                            s->imap_port == 0 ? "missing (required with "
                                                "imap_host)"
                                              : "not a port (1-65535)");
    } else if (s->imap_port != 0) {
        return herr_set(e, HERR_INVALID, "imap_host",
                        "missing (required with imap_port)");
    }
    if (s->username == NULL || *s->username == '\0')
        return herr_set(e, HERR_INVALID, "username", "missing");
    if (strlen(s->username) > SCHEME_USER_MAX)
        return herr_set(e, HERR_TOOBIG, "username", "longer than %d bytes",
                        SCHEME_USER_MAX);
    if (!valid_text(s->username, SCHEME_USER_MAX))
        return herr_set(e, HERR_INVALID, "username",
                        "not UTF-8 text without control characters");
    char kid[SEAL_KEYID_LEN + 1];
    if (s->password == NULL || *s->password == '\0')
        return herr_set(e, HERR_INVALID, "password", "missing");
    if (strlen(s->password) > SEAL_TOKEN_MAX ||
        seal_token_key_id(s->password, kid) != 0)
        return herr_set(e, HERR_INVALID, "password",
                        "not a sealed value (v1:<key id>:...)");
    if ((unsigned)s->tls > SCHEME_TLS_NONE)
        return herr_set(e, HERR_INVALID, "tls", "not ssl, starttls or none");
    if (s->tls == SCHEME_TLS_NONE) {
        if (!scheme_host_is_loopback(s->smtp_host))
            return herr_set(e, HERR_INVALID, "tls",
                            "'none' is refused: smtp_host %.80s is not a "
                            "loopback address (use ssl or starttls)",
                            s->smtp_host);
        if (s->imap_host && !scheme_host_is_loopback(s->imap_host))
            return herr_set(e, HERR_INVALID, "tls",
                            "'none' is refused: imap_host %.80s is not a "
                            "loopback address (use ssl or starttls)",
                            s->imap_host);
    }
    if (s->daily_limit < 0 || s->daily_limit > SCHEME_LIMIT_MAX)
        return herr_set(e, HERR_INVALID, "daily_limit",
                        "not a positive integer (1-%lld)", SCHEME_LIMIT_MAX);
    if (s->minute_limit < 0 || s->minute_limit > SCHEME_LIMIT_MAX)
        return herr_set(e, HERR_INVALID, "minute_limit",
                        "not a positive integer (1-%lld)", SCHEME_LIMIT_MAX);
    if (s->time_zone && !tzwin_valid_name(s->time_zone))
        return herr_set(e, HERR_INVALID, "time_zone",
                        "'%.80s' is not a time zone name (1-%d bytes of "
                        "[A-Za-z0-9_+-] parts separated by '/', e.g. "
                        "Europe/Paris)",
                        s->time_zone, TZWIN_NAME_MAX);
    if ((unsigned)s->on_auth_failure > SCHEME_AUTH_HOLD)
        return herr_set(e, HERR_INVALID, "on_auth_failure",
                        "not fallback or hold");
    if (s->sent_folder) {
        if (!s->imap_host)
            return herr_set(e, HERR_INVALID, "sent_folder",
                            "needs an IMAP server (imap_host)");
        if (!valid_text(s->sent_folder, SCHEME_FOLDER_MAX))
            return herr_set(e, HERR_INVALID, "sent_folder",
                            "not 1-%d bytes of UTF-8 text without control "
                            "characters",
                            SCHEME_FOLDER_MAX);
    }
    if ((unsigned)s->state > SCHEME_STATE_AUTH_FAILED)
        return herr_set(e, HERR_INVALID, "state", "not ok or auth_failed");
    if (s->state_reason == NULL || strlen(s->state_reason) > SCHEME_REASON_MAX)
        return herr_set(e, HERR_INVALID, "state_reason",
                        "missing or longer than %d bytes", SCHEME_REASON_MAX);
    return 0;
}

/* Sets the optional strings and numbers of `p` onto `s`; shared by create
 * and apply. Returns how many settings were given. */
static int
patch_onto(struct scheme *s, const struct scheme_patch *p)
{
    int n = 0;
#define SET_STR(m)                                                             \
    if (p->m) {                                                                \
        free(s->m);                                                            \
        s->m = xstrdup(p->m);                                                  \
        n++;                                                                   \
    }
    SET_STR(smtp_host)
    SET_STR(imap_host)
    SET_STR(username)
    SET_STR(password)
    SET_STR(sent_folder)
    SET_STR(time_zone)
#undef SET_STR
    if (p->smtp_port) {
        s->smtp_port = p->smtp_port;
        n++;
    }
    if (p->imap_port) {
        s->imap_port = p->imap_port;
        n++;
    }
    if (p->tls >= 0) {
        s->tls = (enum scheme_tls)p->tls;
        n++;
    }
    if (p->on_auth_failure >= 0) {
        s->on_auth_failure = (enum scheme_on_auth)p->on_auth_failure;
        n++;
    }
    if (p->daily_limit) {
        s->daily_limit = p->daily_limit;
        n++;
    }
    if (p->minute_limit) {
        s->minute_limit = p->minute_limit;
        n++;
    }
    return n;
}

static int
patch_self_check(const struct scheme_patch *p, struct herr *e)
{
    if (p->clear_imap && (p->imap_host || p->imap_port || p->sent_folder))
        return herr_set(e, HERR_INVALID, "imap_host",
                        "removing IMAP and setting it at once");
    if (p->clear_sent_folder && p->sent_folder)
        return herr_set(e, HERR_INVALID, "sent_folder",
                        "removing and setting it at once");
    if (p->clear_daily_limit && p->daily_limit)
        return herr_set(e, HERR_INVALID, "daily_limit",
                        "removing and setting it at once");
    if (p->clear_minute_limit && p->minute_limit)
        return herr_set(e, HERR_INVALID, "minute_limit",
                        "removing and setting it at once");
    if (p->clear_time_zone && p->time_zone)
        return herr_set(e, HERR_INVALID, "time_zone",
                        "removing and setting it at once");
    if (p->tls > SCHEME_TLS_NONE)
        return herr_set(e, HERR_INVALID, "tls", "not ssl, starttls or none");
    if (p->on_auth_failure > SCHEME_AUTH_HOLD)
        return herr_set(e, HERR_INVALID, "on_auth_failure",
                        "not fallback or hold");
    return 0;
}

int
scheme_create(const char *org, const char *email, const struct scheme_patch *p,
              int64_t now_ms, struct scheme **out, struct herr *e)
{
    *out = NULL;
    int rc = patch_self_check(p, e);
    if (rc)
        return rc;
    if (p->clear_imap || p->clear_sent_folder || p->clear_daily_limit ||
        p->clear_minute_limit || p->clear_time_zone)
        return herr_set(e, HERR_INVALID, NULL,
                        "a new scheme has nothing to remove");
    /* The required ones first, in the order of SPEC §7. */
    if (p->smtp_host == NULL)
        return herr_set(e, HERR_INVALID, "smtp_host", "required");
    if (p->smtp_port == 0)
        return herr_set(e, HERR_INVALID, "smtp_port", "required");
    if (p->imap_host && p->imap_port == 0)
        return herr_set(e, HERR_INVALID, "imap_port",
                        "required with imap_host");
    if (p->imap_port && p->imap_host == NULL)
        return herr_set(e, HERR_INVALID, "imap_host",
                        "required with imap_port");
    if (p->username == NULL)
        return herr_set(e, HERR_INVALID, "username", "required");
    if (p->password == NULL)
        return herr_set(e, HERR_INVALID, "password", "required");
    struct scheme *s = xcalloc(1, sizeof *s);
    s->org = xstrdup(org ? org : "");
    s->email = xstrdup(email ? email : "");
    s->tls = p->smtp_port == 465 ? SCHEME_TLS_SSL : SCHEME_TLS_STARTTLS;
    s->on_auth_failure = SCHEME_AUTH_FALLBACK;
    patch_onto(s, p);
    s->state = SCHEME_STATE_OK;
    s->state_reason = xstrdup("");
    s->state_at = s->created_at = s->updated_at = now_ms;
    if ((rc = scheme_check(s, e)) != 0) {
        scheme_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int
scheme_apply(struct scheme *s, const struct scheme_patch *p, int64_t now_ms,
             struct herr *e)
{
    int rc = patch_self_check(p, e);
    if (rc)
        return rc;
    if (s->imap_host == NULL && !p->clear_imap) {
        if (p->imap_host && p->imap_port == 0)
            return herr_set(e, HERR_INVALID, "imap_port",
                            "required with imap_host (the scheme has no "
                            "IMAP server yet)");
        if (p->imap_port && p->imap_host == NULL)
            return herr_set(e, HERR_INVALID, "imap_host",
                            "required with imap_port (the scheme has no "
                            "IMAP server yet)");
    }
    struct scheme *n = scheme_dup(s);
    int given = patch_onto(n, p);
    if (p->clear_imap) {
        free(n->imap_host);
        free(n->sent_folder);
        n->imap_host = n->sent_folder = NULL;
        n->imap_port = 0;
        given++;
    }
    if (p->clear_sent_folder) {
        free(n->sent_folder);
        n->sent_folder = NULL;
        given++;
    }
    if (p->clear_daily_limit) {
        n->daily_limit = 0;
        given++;
    }
    if (p->clear_minute_limit) {
        n->minute_limit = 0;
        given++;
    }
    if (p->clear_time_zone) {
        free(n->time_zone);
        n->time_zone = NULL;
        given++;
    }
    if (given == 0) {
        scheme_free(n);
        return herr_set(e, HERR_INVALID, NULL, "nothing to change");
    }
    n->updated_at = now_ms;
    if (p->username || p->password) {
        n->state = SCHEME_STATE_OK;
        free(n->state_reason);
        n->state_reason = xstrdup("");
        n->state_at = now_ms;
    }
    if ((rc = scheme_check(n, e)) != 0) {
        scheme_free(n);
        return rc;
    }
    /* Swap the contents so the caller's pointer stays valid. */
    struct scheme tmp = *s;
    *s = *n;
    *n = tmp;
    scheme_free(n);
    return 0;
}

void
scheme_mark_failed(struct scheme *s, const char *reason, int64_t now_ms)
{
    struct buf b;
    buf_init(&b, 0);
    const unsigned char *p = (const unsigned char *)(reason ? reason : "");
    size_t len = strlen((const char *)p);
    if (len > SCHEME_REASON_MAX) {
        len = SCHEME_REASON_MAX;
        while (len > 0 && (p[len] & 0xc0) == 0x80)
            len--;
    }
    for (size_t i = 0; i < len; i++) {
        char c = (char)(p[i] < 0x20 || p[i] == 0x7f ? ' ' : p[i]);
        buf_append(&b, &c, 1);
    }
    char *r = buf_take(&b, NULL);
    free(s->state_reason);
    s->state_reason = r ? r : xstrdup("");
    s->state = SCHEME_STATE_AUTH_FAILED;
    s->state_at = now_ms;
}

/* ---- JSON ---- */

static void
set_time(json_t *o, const char *k, int64_t ms)
{
    char t[CLOCK_RFC3339_LEN];
    clock_rfc3339(ms, t);
    json_object_set_new(o, k, json_string(t));
}

/* json_string for text that may not be UTF-8 (validated records always
 * are; this keeps a broken one from crashing an encoder). */
static json_t *
str_or_empty(const char *s)
{
    json_t *j = json_string(s ? s : "");
    return j ? j : json_string("");
}

char *
scheme_to_json(const struct scheme *s, unsigned flags)
{
    json_t *o = json_object();
    json_object_set_new(o, "org", str_or_empty(s->org));
    json_object_set_new(o, "email", str_or_empty(s->email));
    json_object_set_new(o, "smtp_host", str_or_empty(s->smtp_host));
    json_object_set_new(o, "smtp_port", json_integer(s->smtp_port));
    if (s->imap_host) {
        json_object_set_new(o, "imap_host", str_or_empty(s->imap_host));
        json_object_set_new(o, "imap_port", json_integer(s->imap_port));
    }
    json_object_set_new(o, "username", str_or_empty(s->username));
    if (!(flags & SCHEME_JSON_PUBLIC))
        json_object_set_new(o, "password", str_or_empty(s->password));
    json_object_set_new(o, "tls", json_string(scheme_tls_name(s->tls)));
    if (s->daily_limit)
        json_object_set_new(o, "daily_limit", json_integer(s->daily_limit));
    if (s->minute_limit)
        json_object_set_new(o, "minute_limit", json_integer(s->minute_limit));
    if (s->time_zone)
        json_object_set_new(o, "time_zone", str_or_empty(s->time_zone));
    json_object_set_new(o, "on_auth_failure",
                        json_string(scheme_on_auth_name(s->on_auth_failure)));
    if (s->sent_folder)
        json_object_set_new(o, "sent_folder", str_or_empty(s->sent_folder));
    json_object_set_new(o, "state", json_string(scheme_state_name(s->state)));
    json_object_set_new(o, "state_reason", str_or_empty(s->state_reason));
    set_time(o, "state_at", s->state_at);
    set_time(o, "created_at", s->created_at);
    set_time(o, "updated_at", s->updated_at);
    char *r = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (r == NULL)
        abort(); /* only allocation fails here */
    return r;
}

static int
get_str(json_t *o, const char *k, int required, char **out, struct herr *e)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL) {
        if (required)
            return herr_set(e, HERR_INVALID, k, "missing");
        return 0;
    }
    if (!json_is_string(v))
        return herr_set(e, HERR_INVALID, k, "not a string");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return herr_set(e, HERR_INVALID, k, "contains a NUL byte");
    *out = xstrdup(json_string_value(v));
    return 0;
}

static int
get_int(json_t *o, const char *k, int required, long long *out, struct herr *e)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL) {
        if (required)
            return herr_set(e, HERR_INVALID, k, "missing");
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return herr_set(e, HERR_INVALID, k, "not a positive integer");
    *out = json_integer_value(v);
    return 0;
}

static int
get_time(json_t *o, const char *k, int64_t *out, struct herr *e)
{
    char *s = NULL;
    int rc = get_str(o, k, 1, &s, e);
    if (rc == 0 && clock_parse_rfc3339(s, out) != 0)
        rc = herr_set(e, HERR_INVALID, k, "not an RFC 3339 time");
    free(s);
    return rc;
}

static int
get_enum(json_t *o, const char *k, int required,
         int (*parse)(const char *, int *), int *out, struct herr *e)
{
    char *s = NULL;
    int rc = get_str(o, k, required, &s, e);
    if (rc == 0 && s && parse(s, out) != 0)
        rc = herr_set(e, HERR_INVALID, k, "'%.40s' is not a known value", s);
    free(s);
    return rc;
}

static int
parse_tls_int(const char *s, int *out)
{
    enum scheme_tls t;
    if (scheme_tls_parse(s, &t))
        return HERR_INVALID;
    *out = (int)t;
    return 0;
}

static int
parse_auth_int(const char *s, int *out)
{
    enum scheme_on_auth a;
    if (scheme_on_auth_parse(s, &a))
        return HERR_INVALID;
    *out = (int)a;
    return 0;
}

static int
parse_state_int(const char *s, int *out)
{
    enum scheme_state st;
    if (state_parse(s, &st))
        return HERR_INVALID;
    *out = (int)st;
    return 0;
}

int
scheme_from_json(const char *json, size_t len, struct scheme **out,
                 struct herr *e)
{
    *out = NULL;
    if (len > SCHEME_JSON_MAX)
        return herr_set(e, HERR_TOOBIG, NULL, "%zu bytes, over %d", len,
                        SCHEME_JSON_MAX);
    json_error_t jerr;
    json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (o == NULL)
        return herr_set(e, HERR_INVALID, NULL, "not JSON: %s (column %d)",
                        jerr.text, jerr.column);
    if (!json_is_object(o)) {
        json_decref(o);
        return herr_set(e, HERR_INVALID, NULL, "not a JSON object");
    }
    struct scheme *s = xcalloc(1, sizeof *s);
    long long sp = 0, ip = 0;
    int tls = -1, auth = SCHEME_AUTH_FALLBACK, state = -1;
    int rc;
    if ((rc = get_str(o, "org", 1, &s->org, e)) ||
        (rc = get_str(o, "email", 1, &s->email, e)) ||
        (rc = get_str(o, "smtp_host", 1, &s->smtp_host, e)) ||
        (rc = get_int(o, "smtp_port", 1, &sp, e)) ||
        (rc = get_str(o, "imap_host", 0, &s->imap_host, e)) ||
        (rc = get_int(o, "imap_port", 0, &ip, e)) ||
        (rc = get_str(o, "username", 1, &s->username, e)) ||
        (rc = get_str(o, "password", 1, &s->password, e)) ||
        (rc = get_enum(o, "tls", 1, parse_tls_int, &tls, e)) ||
        (rc = get_int(o, "daily_limit", 0, &s->daily_limit, e)) ||
        (rc = get_int(o, "minute_limit", 0, &s->minute_limit, e)) ||
        (rc = get_str(o, "time_zone", 0, &s->time_zone, e)) ||
        (rc = get_enum(o, "on_auth_failure", 0, parse_auth_int, &auth, e)) ||
        (rc = get_str(o, "sent_folder", 0, &s->sent_folder, e)) ||
        (rc = get_enum(o, "state", 1, parse_state_int, &state, e)) ||
        (rc = get_str(o, "state_reason", 1, &s->state_reason, e)) ||
        (rc = get_time(o, "state_at", &s->state_at, e)) ||
        (rc = get_time(o, "created_at", &s->created_at, e)) ||
        (rc = get_time(o, "updated_at", &s->updated_at, e)))
        goto fail;
    json_decref(o);
    o = NULL;
    if (sp > 65535 || ip > 65535) {
        rc = herr_set(e, HERR_INVALID, sp > 65535 ? "smtp_port" : "imap_port",
                      "not a port (1-65535)");
        goto fail;
    }
    s->smtp_port = (int)sp;
    s->imap_port = (int)ip;
    s->tls = (enum scheme_tls)tls;
    s->on_auth_failure = (enum scheme_on_auth)auth;
    s->state = (enum scheme_state)state;
    if ((rc = scheme_check(s, e)) != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    json_decref(o);
    scheme_free(s);
    return rc;
}
