#include "settings.h"
#include "dnsaddr.h"
#include "spf.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef HERALD_VERSION
#define HERALD_VERSION "dev"
#endif

enum stype { S_STR, S_LONG };

/* Validators check a value before it is stored; they fill `e`. */
typedef int (*svalid)(const char *env, const char *v, struct herr *e);

struct sdef {
    const char *env;
    const char *flag; /* NULL: environment only (secrets) */
    enum stype type;
    size_t off;
    const char *def; /* NULL: unset */
    long min, max;
    int secret;
    int required_nonempty;
    svalid valid;
    const char *help;
};

static int valid_redis(const char *env, const char *v, struct herr *e);
static int valid_smtp_url(const char *env, const char *v, struct herr *e);
static int valid_mc(const char *env, const char *v, struct herr *e);
static int valid_prefix(const char *env, const char *v, struct herr *e);
static int valid_addr(const char *env, const char *v, struct herr *e);
static int valid_level(const char *env, const char *v, struct herr *e);
static int valid_dns(const char *env, const char *v, struct herr *e);
static int valid_ips(const char *env, const char *v, struct herr *e);
static int valid_listen(const char *env, const char *v, struct herr *e);
static int valid_helo(const char *env, const char *v, struct herr *e);

#define OFF(f) offsetof(struct settings, f)

static const struct sdef table[] = {
    {"HERALD_REDIS", "--redis", S_STR, OFF(redis), "redis://127.0.0.1:6379/0",
     0, 0, 0, 1, valid_redis,
     "Redis URL: redis://[:pw@]host:port[/db] or unix:///path"},
    {"HERALD_PREFIX", "--prefix", S_STR, OFF(prefix), "herald", 0, 0, 0, 1,
     valid_prefix, "prefix of every Redis key"},
    {"HERALD_RELAY", "--relay", S_STR, OFF(relay), "smtp://127.0.0.1:25", 0, 0,
     0, 1, valid_smtp_url,
     "platform relay: smtp://host:port or smtps://host:port"},
    {"HERALD_RELAY_USER", "--relay-user", S_STR, OFF(relay_user), NULL, 0, 0, 0,
     0, NULL, "relay user name (optional)"},
    {"HERALD_RELAY_PASSWORD", NULL, S_STR, OFF(relay_password), NULL, 0, 0, 1,
     0, NULL, "relay password (environment only)"},
    {"HERALD_DEFAULT_FROM", "--default-from", S_STR, OFF(default_from),
     "notices@localhost", 0, 0, 0, 1, valid_addr,
     "the platform's own sending address"},
    {"HERALD_SENDER_DOMAIN", "--sender-domain", S_STR, OFF(sender_domain),
     "sender.localhost", 0, 0, 0, 1, NULL,
     "domain organisations include in their SPF record"},
    {"HERALD_MC", "--mc", S_STR, OFF(mc), "sqlite://./var/mc.db", 0, 0, 0, 1,
     valid_mc, "Message Center store URL"},
    {"HERALD_SECRET_KEY_FILE", "--secret-key-file", S_STR, OFF(secret_key_file),
     NULL, 0, 0, 0, 0, NULL, "32-byte key sealing stored passwords"},
    {"HERALD_CONCURRENCY", "--concurrency", S_LONG, OFF(concurrency), "32", 1,
     1024, 0, 0, NULL, "SMTP transactions in flight per worker"},
    {"HERALD_CA_FILE", "--ca-file", S_STR, OFF(ca_file), NULL, 0, 0, 0, 0, NULL,
     "extra CA bundle for TLS verification"},
    {"HERALD_PLATFORM_NAME", "--platform-name", S_STR, OFF(platform_name),
     "Herald", 0, 0, 0, 1, NULL, "platform name in \"<name> via <platform>\""},
    {"HERALD_DNS", "--dns", S_STR, OFF(dns), NULL, 0, 0, 0, 0, valid_dns,
     "DNS server for SPF look-ups, host[:port]"},
    {"HERALD_SENDER_IPS", "--sender-ips", S_STR, OFF(sender_ips), NULL, 0, 0, 0,
     0, valid_ips, "relay egress addresses for SPF evaluation"},
    {"HERALD_HEARTBEAT_S", "--heartbeat-s", S_LONG, OFF(heartbeat_s), "15", 1,
     3600, 0, 0, NULL, "a worker silent this long is dead"},
    {"HERALD_RETRY_BASE_S", "--retry-base-s", S_LONG, OFF(retry_base_s), "30",
     1, 86400, 0, 0, NULL, "retry backoff base"},
    {"HERALD_RETRY_CAP_S", "--retry-cap-s", S_LONG, OFF(retry_cap_s), "3600", 1,
     604800, 0, 0, NULL, "retry backoff cap"},
    {"HERALD_RETRY_MAX_ATTEMPTS", "--retry-max-attempts", S_LONG,
     OFF(retry_max_attempts), "10", 1, 1000, 0, 0, NULL,
     "attempts before a job fails"},
    {"HERALD_RETRY_MAX_AGE_S", "--retry-max-age-s", S_LONG,
     OFF(retry_max_age_s), "86400", 60, 2592000, 0, 0, NULL,
     "age after which a job fails"},
    {"HERALD_CONNECT_TIMEOUT_S", "--connect-timeout-s", S_LONG,
     OFF(connect_timeout_s), "10", 1, 300, 0, 0, NULL,
     "connect timeout (SMTP servers; Redis for the CLIs)"},
    {"HERALD_SMTP_TIMEOUT_S", "--smtp-timeout-s", S_LONG, OFF(smtp_timeout_s),
     "60", 1, 3600, 0, 0, NULL,
     "a stalled SMTP step (no progress this long) fails the attempt"},
    {"HERALD_SHUTDOWN_GRACE_S", "--shutdown-grace-s", S_LONG,
     OFF(shutdown_grace_s), "30", 0, 3600, 0, 0, NULL,
     "on SIGTERM, how long in-flight messages may take"},
    {"HERALD_WORKER_ID", "--worker-id", S_STR, OFF(worker_id), NULL, 0, 0, 0, 0,
     valid_prefix, "this worker's name (default: hostname)"},
    {"HERALD_LOG_LEVEL", "--log-level", S_STR, OFF(log_level), "info", 0, 0, 0,
     1, valid_level, "debug, info, warn or error"},
    {"HERALD_SCHEME_CONNECTIONS", "--scheme-connections", S_LONG,
     OFF(scheme_connections), "2", 1, 64, 0, 0, NULL,
     "connections per organisation SMTP server (sending schemes)"},
    {"HERALD_LEDGER_DAYS", "--ledger-days", S_LONG, OFF(ledger_days), "30", 1,
     3650, 0, 0, NULL,
     "how long a delivered job id is remembered (never sent twice within "
     "it)"},
    {"HERALD_API_LISTEN", "--api-listen", S_STR, OFF(api_listen),
     "127.0.0.1:8080", 0, 0, 0, 1, valid_listen,
     "herald-api's address, host:port (IPv6 in brackets)"},
    {"HERALD_MC_RETENTION_DAYS", "--mc-retention-days", S_LONG,
     OFF(mc_retention_days), "0", 0, 36500, 0, 0, NULL,
     "Message Center records older than this are removed (0: kept forever)"},
    {"HERALD_MC_BODY_DAYS", "--mc-body-days", S_LONG, OFF(mc_body_days), "0", 0,
     36500, 0, 0, NULL,
     "after this, a record's text and html are removed (0: as long as the "
     "record)"},
    {"HERALD_HELO_NAME", "--helo-name", S_STR, OFF(helo_name), NULL, 0, 0, 0, 0,
     valid_helo,
     "the name given in EHLO (default: the host's fully qualified name, "
     "else the connection's address literal)"},
    {"HERALD_MAX_INFLIGHT_BYTES", "--max-inflight-bytes", S_LONG,
     OFF(max_inflight_bytes), "16777216", 1048576, 68719476736L, 0, 0, NULL,
     "bytes of jobs a worker holds at once (taking waits above it; one job "
     "is always allowed)"},
    {"HERALD_FAIR_WINDOW", "--fair-window", S_LONG, OFF(fair_window), "20000",
     0, 1000000, 0, 0, NULL,
     "jobs per lane staged by organisation and taken round-robin (0: first "
     "in, first out)"},
};

#define NTABLE (sizeof table / sizeof table[0])

static char **
str_at(struct settings *s, const struct sdef *d)
{
    return (char **)((char *)s + d->off);
}

static long *
long_at(struct settings *s, const struct sdef *d)
{
    return (long *)((char *)s + d->off);
}

void
settings_defaults(struct settings *s)
{
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < NTABLE; i++) {
        const struct sdef *d = &table[i];
        if (d->type == S_STR)
            *str_at(s, d) = d->def ? xstrdup(d->def) : NULL;
        else
            *long_at(s, d) = strtol(d->def, NULL, 10);
    }
}

void
settings_free(struct settings *s)
{
    for (size_t i = 0; i < NTABLE; i++) {
        if (table[i].type == S_STR) {
            char **p = str_at(s, &table[i]);
            if (*p && table[i].secret)
                memset(*p, 0, strlen(*p));
            free(*p);
            *p = NULL;
        }
    }
}

static int
apply(struct settings *s, const struct sdef *d, const char *name, const char *v,
      struct herr *e)
{
    if (d->type == S_LONG) {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (errno || end == v || *end != '\0')
            return herr_set(e, HERR_INVALID, name, "\"%s\" is not a number", v);
        if (n < d->min || n > d->max)
            return herr_set(e, HERR_INVALID, name,
                            "%ld is out of range %ld..%ld", n, d->min, d->max);
        *long_at(s, d) = n;
        return 0;
    }
    if (d->required_nonempty && *v == '\0')
        return herr_set(e, HERR_INVALID, name, "must not be empty");
    if (d->valid && *v) {
        int rc = d->valid(name, v, e);
        if (rc)
            return rc;
    }
    char **p = str_at(s, d);
    free(*p);
    *p = *v ? xstrdup(v) : NULL;
    return 0;
}

int
settings_load_env(struct settings *s, struct herr *e)
{
    for (size_t i = 0; i < NTABLE; i++) {
        const char *v = getenv(table[i].env);
        if (v == NULL)
            continue;
        int rc = apply(s, &table[i], table[i].env, v, e);
        if (rc)
            return rc;
    }
    return 0;
}

static const struct sdef *
find(const char *key, size_t keylen)
{
    for (size_t i = 0; i < NTABLE; i++) {
        const struct sdef *d = &table[i];
        if (strlen(d->env) == keylen && strncmp(d->env, key, keylen) == 0)
            return d;
        if (d->flag && strlen(d->flag) == keylen &&
            strncmp(d->flag, key, keylen) == 0)
            return d;
    }
    return NULL;
}

int
settings_set(struct settings *s, const char *key, const char *value,
             struct herr *e)
{
    const struct sdef *d = find(key, strlen(key));
    if (d == NULL)
        return herr_set(e, HERR_INVALID, key, "unknown setting");
    return apply(s, d, key, value, e);
}

int
settings_load_args(struct settings *s, int *argc, char **argv, struct herr *e)
{
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            while (i < *argc)
                argv[out++] = argv[i++];
            break;
        }
        if (strncmp(a, "--", 2) != 0) {
            argv[out++] = argv[i];
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t klen = eq ? (size_t)(eq - a) : strlen(a);
        const struct sdef *d = find(a, klen);
        if (d == NULL || d->flag == NULL) {
            if (strncmp(a, "--relay-password", 16) == 0)
                return herr_set(e, HERR_INVALID, "--relay-password",
                                "secrets are not taken on the command "
                                "line; set HERALD_RELAY_PASSWORD");
            argv[out++] = argv[i];
            continue;
        }
        const char *v;
        if (eq) {
            v = eq + 1;
        } else {
            if (i + 1 >= *argc)
                return herr_set(e, HERR_INVALID, d->flag, "needs a value");
            v = argv[++i];
        }
        int rc = apply(s, d, d->flag, v, e);
        if (rc)
            return rc;
    }
    argv[out] = NULL;
    *argc = out;
    return 0;
}

/* Hides a password inside a URL ("redis://:secret@h" -> ":***@"). */
static void
print_url(FILE *f, const char *v)
{
    const char *at = strchr(v, '@');
    const char *scheme = strstr(v, "://");
    if (at && scheme && at > scheme) {
        const char *colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
        if (colon) {
            fprintf(f, "%.*s:***%s", (int)(colon - v), v, at);
            return;
        }
    }
    fputs(v, f);
}

void
settings_scrub_secrets(struct settings *s)
{
    for (size_t i = 0; i < NTABLE; i++) {
        if (!table[i].secret)
            continue;
        char **p = str_at(s, &table[i]);
        if (*p) {
            OPENSSL_cleanse(*p, strlen(*p));
            free(*p);
            *p = NULL;
        }
        char *v = getenv(table[i].env);
        if (v) {
            OPENSSL_cleanse(v, strlen(v));
            unsetenv(table[i].env);
        }
    }
}

void
settings_print(const struct settings *s, FILE *f)
{
    for (size_t i = 0; i < NTABLE; i++) {
        const struct sdef *d = &table[i];
        fprintf(f, "%s=", d->env);
        if (d->type == S_LONG) {
            fprintf(f, "%ld\n", *long_at((struct settings *)s, d));
            continue;
        }
        const char *v = *str_at((struct settings *)s, d);
        if (v == NULL)
            fputs("(unset)", f);
        else if (d->secret)
            fputs("(hidden)", f);
        else
            print_url(f, v);
        fputc('\n', f);
    }
}

void
settings_usage(FILE *f)
{
    fputs("Settings (flag, environment variable, default):\n", f);
    for (size_t i = 0; i < NTABLE; i++) {
        const struct sdef *d = &table[i];
        fprintf(f, "  %-22s %-26s %s\n      %s\n",
                d->flag ? d->flag : "(env only)", d->env, d->def ? d->def : "-",
                d->help);
    }
}

int
settings_main(struct settings *s, const char *prog, int argc, char **argv,
              void (*usage)(FILE *))
{
    struct herr e = {{0}, {0}};
    int print_config = 0;
    settings_defaults(s);
    if (settings_load_env(s, &e) != 0 ||
        settings_load_args(s, &argc, argv, &e) != 0) {
        char why[HERR_FIELD_MAX + HERR_MSG_MAX + 4];
        herr_format(&e, why, sizeof why);
        fprintf(stderr, "%s: %s\n", prog, why);
        settings_free(s);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            settings_free(s);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("%s %s\n", prog, HERALD_VERSION);
            settings_free(s);
            return 0;
        }
        if (strcmp(argv[i], "--print-config") == 0) {
            print_config = 1;
            continue;
        }
        fprintf(stderr, "%s: unknown argument '%s' (see --help)\n", prog,
                argv[i]);
        settings_free(s);
        return 2;
    }
    if (print_config) {
        settings_print(s, stdout);
        settings_free(s);
        return 0;
    }
    return -1;
}

/* ---- validators ---- */

int
settings_parse_redis(const char *url, struct redis_target *t, struct herr *e)
{
    const char *name = "HERALD_REDIS";
    memset(t, 0, sizeof *t);
    t->port = 6379;
    if (strncmp(url, "unix://", 7) == 0) {
        const char *p = url + 7;
        if (*p != '/' || strlen(p) >= sizeof t->unix_path)
            return herr_set(e, HERR_INVALID, name,
                            "unix:// needs an absolute socket path");
        strcpy(t->unix_path, p);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return herr_set(e, HERR_INVALID, name,
                        "\"%s\": expected redis://host:port[/db] or "
                        "unix:///path",
                        url);
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        size_t n = (size_t)(at - pw);
        if (n >= sizeof t->password)
            return herr_set(e, HERR_INVALID, name, "password too long");
        memcpy(t->password, pw, n);
        t->password[n] = '\0';
        p = at + 1;
    }
    const char *end = p + strcspn(p, ":/");
    size_t hl = (size_t)(end - p);
    if (hl == 0 || hl >= sizeof t->host)
        return herr_set(e, HERR_INVALID, name, "missing host");
    memcpy(t->host, p, hl);
    t->host[hl] = '\0';
    p = end;
    if (*p == ':') {
        char *q;
        long port = strtol(p + 1, &q, 10);
        if (q == p + 1 || port < 1 || port > 65535)
            return herr_set(e, HERR_INVALID, name, "bad port in \"%s\"", url);
        t->port = (int)port;
        p = q;
    }
    if (*p == '/') {
        p++;
        if (*p) {
            char *q;
            long db = strtol(p, &q, 10);
            if (*q != '\0' || db < 0 || db > 1000)
                return herr_set(e, HERR_INVALID, name, "bad database \"%s\"",
                                p);
            t->db = (int)db;
        }
    } else if (*p != '\0') {
        return herr_set(e, HERR_INVALID, name, "unexpected \"%s\"", p);
    }
    return 0;
}

static int
valid_dns(const char *env, const char *v, struct herr *e)
{
    if (*v == '\0')
        return 0; /* the system resolver */
    struct sockaddr_storage ss;
    socklen_t len;
    struct herr pe;
    if (dnsaddr_parse(v, &ss, &len, &pe) != 0)
        return herr_set(e, HERR_INVALID, env, "'%.64s': %s", v, pe.msg);
    return 0;
}

/* Addresses separated by commas or blanks. */
static int
valid_ips(const char *env, const char *v, struct herr *e)
{
    char *list = xstrdup(v), *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(list, ", \t", &save); tok && rc == 0;
         tok = strtok_r(NULL, ", \t", &save)) {
        struct spf_ip ip;
        if (spf_ip_parse(tok, &ip) != 0)
            rc = herr_set(e, HERR_INVALID, env, "'%s' is not an IP address",
                          tok);
    }
    free(list);
    return rc;
}

/* `env` is the name the value came by: a flag ("--redis") may not carry a
 * password, which every user of the machine would see in ps. */
int
settings_parse_listen(const char *v, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    char host[256];
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v || (size_t)(colon - v) >= sizeof host)
        return HERR_INVALID;
    size_t hl = (size_t)(colon - v);
    memcpy(host, v, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || port < 1 || port > 65535)
        return HERR_INVALID;
    memset(ss, 0, sizeof *ss);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
            return HERR_INVALID;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        *len = sizeof *a;
        return 0;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
        return HERR_INVALID;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    *len = sizeof *a;
    return 0;
}

/* An EHLO name: a domain (labels of letters, digits and inner hyphens,
 * at most 253 bytes) or an address literal ("[192.0.2.1]",
 * "[IPv6:2001:db8::1]"), RFC 5321 §4.1.2. */
static int
valid_helo(const char *env, const char *v, struct herr *e)
{
    size_t n = strlen(v);
    if (n >= 2 && v[0] == '[' && v[n - 1] == ']') {
        char a[64];
        unsigned char bin[16];
        if (n - 2 < sizeof a) {
            memcpy(a, v + 1, n - 2);
            a[n - 2] = '\0';
            if (inet_pton(AF_INET, a, bin) == 1 ||
                (strncmp(a, "IPv6:", 5) == 0 &&
                 inet_pton(AF_INET6, a + 5, bin) == 1))
                return 0;
        }
        return herr_set(e, HERR_INVALID, env,
                        "'%.80s': not an address literal ([192.0.2.1] or "
                        "[IPv6:2001:db8::1])",
                        v);
    }
    size_t label = 0;
    int ok = n > 0 && n <= 253;
    for (size_t i = 0; ok && i <= n; i++) {
        char c = v[i];
        if (c == '.' || c == '\0') {
            ok = label > 0 && label <= 63 && v[i - 1] != '-';
            label = 0;
        } else if (isalnum((unsigned char)c) || (c == '-' && label > 0)) {
            label++;
        } else {
            ok = 0;
        }
    }
    return ok ? 0
              : herr_set(e, HERR_INVALID, env,
                         "'%.80s': not a host name (letters, digits and "
                         "hyphens in dot-separated labels) or an address "
                         "literal",
                         v);
}

/* A name that says nothing of the host: "localhost", "localhost.…". */
static int
helo_usable(const char *name)
{
    return strchr(name, '.') != NULL &&
           strncasecmp(name, "localhost", 9) != 0 &&
           valid_helo("", name, NULL) == 0;
}

int
settings_helo_name(const struct settings *s, char *out, size_t n)
{
    if (n == 0)
        return 0;
    out[0] = '\0';
    if (s->helo_name && *s->helo_name) {
        snprintf(out, n, "%s", s->helo_name);
        return 1;
    }
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
        return 0;
    if (helo_usable(host)) {
        snprintf(out, n, "%s", host);
        return 1;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_flags = AI_CANONNAME;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) == 0 && res) {
        if (res->ai_canonname && helo_usable(res->ai_canonname))
            snprintf(out, n, "%s", res->ai_canonname);
        freeaddrinfo(res);
    }
    return out[0] != '\0';
}

int
settings_addr_literal(const struct sockaddr *sa, char *out, size_t n)
{
    char a[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET &&
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, a,
                  sizeof a)) {
        snprintf(out, n, "[%s]", a);
        return 0;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6) &&
        inet_ntop(AF_INET, &a6->s6_addr[12], a, sizeof a)) {
        snprintf(out, n, "[%s]", a);
        return 0;
    }
    if (inet_ntop(AF_INET6, a6, a, sizeof a) == NULL)
        return -1;
    snprintf(out, n, "[IPv6:%s]", a);
    return 0;
}

static int
valid_listen(const char *env, const char *v, struct herr *e)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (settings_parse_listen(v, &ss, &len) != 0)
        return herr_set(e, HERR_INVALID, env,
                        "'%.80s': expected host:port with a numeric host "
                        "(127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080)",
                        v);
    return 0;
}

static int
valid_redis(const char *env, const char *v, struct herr *e)
{
    struct redis_target t;
    int rc = settings_parse_redis(v, &t, e);
    if (rc && e)
        snprintf(e->field, sizeof e->field, "%s", env);
    if (rc == 0 && t.password[0] && strncmp(env, "--", 2) == 0)
        rc = herr_set(e, HERR_INVALID, env,
                      "a password on the command line is visible to every "
                      "user (ps); put the URL in HERALD_REDIS instead");
    OPENSSL_cleanse(t.password, sizeof t.password);
    return rc;
}

static int
valid_smtp_url(const char *env, const char *v, struct herr *e)
{
    const char *p;
    if (strncmp(v, "smtp://", 7) == 0)
        p = v + 7;
    else if (strncmp(v, "smtps://", 8) == 0)
        p = v + 8;
    else
        return herr_set(
            e, HERR_INVALID, env,
            "\"%s\": expected smtp://host:port or smtps://host:port", v);
    const char *colon = strrchr(p, ':');
    if (p[0] == '\0' || p[0] == ':' || p[0] == '/')
        return herr_set(e, HERR_INVALID, env, "missing host in \"%s\"", v);
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || (*end && *end != '/') || port < 1 ||
            port > 65535)
            return herr_set(e, HERR_INVALID, env, "bad port in \"%s\"", v);
    }
    return 0;
}

static int
valid_mc(const char *env, const char *v, struct herr *e)
{
    if (strncmp(v, "sqlite://", 9) == 0) {
        if (v[9] == '\0')
            return herr_set(
                e, HERR_INVALID, env,
                "sqlite:// needs a path, e.g. sqlite://./var/mc.db");
        return 0;
    }
    if (strncmp(v, "postgresql://", 13) == 0 ||
        strncmp(v, "postgres://", 11) == 0) {
        /* a libpq URI: libpq checks the rest when the store is opened.
         * A password may come in the URL's user part (hidden by
         * --print-config) from the environment only, as for Redis; never
         * as a "password=" parameter, which --print-config would show
         * (PGPASSWORD or ~/.pgpass keep it out of the URL). */
        const char *rest = strstr(v, "://") + 3;
        const char *q = strchr(rest, '?');
        size_t hlen = q ? (size_t)(q - rest) : strlen(rest);
        const char *at = memchr(rest, '@', hlen);
        int has_pw = at && memchr(rest, ':', (size_t)(at - rest)) != NULL;
        for (const char *p = q; p && *p; p = strchr(p + 1, '&'))
            if (strncmp(p + 1, "password=", 9) == 0)
                return herr_set(e, HERR_INVALID, env,
                                "a password= parameter would be shown by "
                                "--print-config; put it in the user part "
                                "(postgresql://user:pw@host/db), PGPASSWORD "
                                "or ~/.pgpass");
        if (has_pw && strncmp(env, "--", 2) == 0)
            return herr_set(e, HERR_INVALID, env,
                            "a password on the command line is visible to "
                            "every user (ps); put the URL in HERALD_MC "
                            "instead");
        return 0;
    }
    return herr_set(e, HERR_INVALID, env,
                    "\"%s\": expected sqlite://PATH or postgresql://...", v);
}

static int
valid_prefix(const char *env, const char *v, struct herr *e)
{
    for (const char *p = v; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("._:-", *p)))
            return herr_set(e, HERR_INVALID, env,
                            "\"%s\": only letters, digits and . _ : -", v);
    if (strlen(v) > 64)
        return herr_set(e, HERR_INVALID, env, "longer than 64 characters");
    return 0;
}

static int
valid_addr(const char *env, const char *v, struct herr *e)
{
    const char *at = strrchr(v, '@');
    if (at == NULL || at == v || at[1] == '\0' || strpbrk(v, " \r\n<>\t"))
        return herr_set(e, HERR_INVALID, env, "\"%s\" is not an address", v);
    return 0;
}

static int
valid_level(const char *env, const char *v, struct herr *e)
{
    if (strcmp(v, "debug") && strcmp(v, "info") && strcmp(v, "warn") &&
        strcmp(v, "error"))
        return herr_set(e, HERR_INVALID, env,
                        "\"%s\": expected debug, info, warn or error", v);
    return 0;
}
