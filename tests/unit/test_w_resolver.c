/* worker/resolver.c through libworker.a: which path a job takes (SPEC §4)
 * -- the organisation's own scheme, the relay as the organisation when
 * SPF allows, the relay from the platform's address with Reply-To --
 * and what a scheme whose login was refused, or whose password this
 * worker cannot open, does to it. The scheme table is loaded as
 * HGETALL would give it (schemes_load), passwords sealed with a key file
 * the test writes. */
#include "../../common/clock.h"
#include "../../common/seal.h"
#include "../../common/util.h"
#include "../../worker/resolver.h"
#include "t.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const unsigned char RAW[SEAL_KEY_LEN] =
    "0123456789abcdef0123456789abcde";

static struct job *
job_of(const char *json)
{
    struct job *j = NULL;
    struct herr e = {{0}, {0}};
    if (job_parse(json, strlen(json), &j, &e) != 0) {
        fprintf(stderr, "bad test job: %s\n", e.msg);
        abort();
    }
    return j;
}

/* A stored scheme of acme for `email`, its password sealed with `k`. */
static char *
scheme_json(const struct seal_key *k, const char *email, const char *tls,
            const char *state, const char *on_auth)
{
    char field[SCHEME_FIELD_MAX], aad[SCHEME_AAD_MAX];
    scheme_field(field, sizeof field, "acme", email);
    scheme_aad(aad, sizeof aad, "acme", email);
    char *token = seal_seal(k, "pw-42", 5, aad);
    char at[CLOCK_RFC3339_LEN]; /* times from the clock, as a writer's */
    clock_rfc3339(clock_now_ms(), at);
    char *j = xasprintf(
        "{\"org\":\"acme\",\"email\":\"%s\",\"smtp_host\":\"smtp.acme.test\","
        "\"smtp_port\":%d,\"username\":\"billing\",\"password\":\"%s\","
        "\"tls\":\"%s\",\"on_auth_failure\":\"%s\",\"state\":\"%s\","
        "\"state_reason\":\"%s\",\"state_at\":\"%s\","
        "\"created_at\":\"%s\",\"updated_at\":\"%s\"}",
        email, strcmp(tls, "ssl") == 0 ? 465 : 587, token, tls, on_auth, state,
        strcmp(state, "ok") ? "535 5.7.8 Authentication failed" : "", at, at,
        at);
    free(token);
    return j;
}

static void
load(struct schemes *sc, char *const *fields, char *const *json, size_t n)
{
    size_t lens[8];
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(json[i]);
    schemes_load(sc, (const char *const *)fields, (const char *const *)json,
                 lens, n);
}

static void
test_paths(const char *keyfile)
{
    struct settings s;
    settings_defaults(&s);
    free(s.secret_key_file);
    s.secret_key_file = xstrdup(keyfile);
    struct schemes *sc = NULL;
    struct herr e = {{0}, {0}};
    CHECK(schemes_new(&s, &sc, &e) == 0);
    struct seal_key *k = seal_key_new(RAW);
    char *fields[4] = {"acme/billing@acme.test", "acme/held@acme.test",
                       "acme/fallback@acme.test", "acme/ssl@acme.test"};
    char *json[4] = {
        scheme_json(k, "billing@acme.test", "starttls", "ok", "fallback"),
        scheme_json(k, "held@acme.test", "starttls", "auth_failed", "hold"),
        scheme_json(k, "fallback@acme.test", "starttls", "auth_failed",
                    "fallback"),
        scheme_json(k, "ssl@acme.test", "ssl", "ok", "fallback")};
    load(sc, fields, json, 4);
    struct resolver *r = resolver_new(&s, sc);
    struct route rt;

    /* 1. the organisation's own scheme: its server, its login, its From */
    struct job *j =
        job_of("{\"id\":\"j1\",\"org\":\"acme\",\"account\":\"a\","
               "\"type\":\"receipt\",\"from\":\"Billing@Acme.test\","
               "\"to\":[{\"email\":\"p@x.test\"}],"
               "\"subject\":\"s\",\"text\":\"t\"}");
    CHECK(resolver_route(r, j, -1, NULL, &rt) == 0);
    CHECK(rt.path == ROUTE_SCHEME && !rt.hold && !rt.need_spf);
    CHECK_STR(rt.url, "smtp://smtp.acme.test:587");
    CHECK(rt.tls == MAIL_TLS_REQUIRED);
    CHECK_STR(rt.user, "billing");
    CHECK(rt.password && strcmp(rt.password, "pw-42") == 0);
    CHECK_STR(rt.envelope_from, "Billing@Acme.test");
    CHECK_STR(rt.scheme_field, "acme/billing@acme.test");
    resolver_route_clear(&rt);
    job_free(j);

    /* implicit TLS: smtps:// */
    j = job_of("{\"id\":\"j2\",\"org\":\"acme\",\"account\":\"a\","
               "\"type\":\"receipt\",\"from\":\"ssl@acme.test\","
               "\"to\":[{\"email\":\"p@x.test\"}],\"subject\":\"s\","
               "\"text\":\"t\"}");
    CHECK(resolver_route(r, j, -1, NULL, &rt) == 0);
    CHECK_STR(rt.url, "smtps://smtp.acme.test:465");
    resolver_route_clear(&rt);
    job_free(j);

    /* 2. a refused login, "hold": the job waits, on the scheme path */
    j = job_of("{\"id\":\"j3\",\"org\":\"acme\",\"account\":\"a\","
               "\"type\":\"receipt\",\"from\":\"held@acme.test\","
               "\"to\":[{\"email\":\"p@x.test\"}],\"subject\":\"s\","
               "\"text\":\"t\"}");
    CHECK(resolver_route(r, j, -1, NULL, &rt) == 0);
    CHECK(rt.path == ROUTE_SCHEME && rt.hold && rt.hold_auth);
    CHECK(strstr(rt.reason, "held") && strstr(rt.reason, "535"));
    resolver_route_clear(&rt);
    job_free(j);

    /* "fallback": the relay, from the platform, Reply-To the org */
    j = job_of("{\"id\":\"j4\",\"org\":\"acme\",\"account\":\"a\","
               "\"type\":\"receipt\",\"from\":\"fallback@acme.test\","
               "\"from_name\":\"Acme Camp\",\"to\":[{\"email\":\"p@x.test\"}],"
               "\"subject\":\"s\",\"text\":\"t\"}");
    CHECK(resolver_route(r, j, -1, NULL, &rt) == 0);
    CHECK(rt.path == ROUTE_RELAY && !rt.hold);
    CHECK(strstr(rt.reason, "fallback") != NULL);
    CHECK_STR(rt.url, s.relay);
    CHECK_STR(rt.envelope_from, s.default_from);
    CHECK_STR(rt.reply_to, "fallback@acme.test");
    char *via = xasprintf("Acme Camp via %s", s.platform_name);
    CHECK_STR(rt.from_name, via);
    free(via);
    resolver_route_clear(&rt);
    job_free(j);

    /* 3. no scheme: SPF first (need_spf), then the relay as the org when
     * it authorises the platform, else from the platform's address */
    j = job_of("{\"id\":\"j5\",\"org\":\"pine\",\"account\":\"a\","
               "\"type\":\"receipt\",\"from\":\"office@pine.test\","
               "\"to\":[{\"email\":\"p@x.test\"}],\"subject\":\"s\","
               "\"text\":\"t\"}");
    CHECK(resolver_route(r, j, -1, NULL, &rt) == 0);
    CHECK(rt.need_spf && rt.url == NULL);
    resolver_route_clear(&rt);
    CHECK(resolver_route(r, j, 1, "SPF pass", &rt) == 0);
    CHECK(rt.path == ROUTE_SPF);
    CHECK_STR(rt.envelope_from, "office@pine.test");
    CHECK_STR(rt.from_addr, "office@pine.test");
    CHECK_STR(rt.url, s.relay);
    resolver_route_clear(&rt);
    CHECK(resolver_route(r, j, 0, "SPF fail", &rt) == 0);
    CHECK(rt.path == ROUTE_RELAY);
    CHECK_STR(rt.envelope_from, s.default_from);
    CHECK_STR(rt.reply_to, "office@pine.test");
    CHECK(strstr(rt.reason, "SPF fail") != NULL);
    resolver_route_clear(&rt);
    job_free(j);

    resolver_free(r);
    schemes_free(sc);

    /* 4. a worker without the key (HERALD_SECRET_KEY_FILE unset): the
     * scheme's jobs wait, never go out another way */
    free(s.secret_key_file);
    s.secret_key_file = NULL;
    CHECK(schemes_new(&s, &sc, &e) == 0);
    load(sc, fields, json, 1);
    r = resolver_new(&s, sc);
    j = job_of("{\"id\":\"j6\",\"org\":\"acme\",\"account\":\"a\","
               "\"type\":\"receipt\",\"from\":\"billing@acme.test\","
               "\"to\":[{\"email\":\"p@x.test\"}],\"subject\":\"s\","
               "\"text\":\"t\"}");
    CHECK(resolver_route(r, j, 1, "SPF pass", &rt) == 0);
    CHECK(rt.path == ROUTE_SCHEME && rt.hold && !rt.hold_auth);
    CHECK(strstr(rt.reason, "HERALD_SECRET_KEY_FILE") != NULL);
    resolver_route_clear(&rt);
    job_free(j);
    resolver_free(r);
    schemes_free(sc);

    for (int i = 0; i < 4; i++)
        free(json[i]);
    seal_key_free(k);
    settings_free(&s);
}

int
main(void)
{
    char keyfile[] = "/tmp/herald-test-key-XXXXXX";
    int fd = mkstemp(keyfile);
    CHECK(fd >= 0 && write(fd, RAW, SEAL_KEY_LEN) == SEAL_KEY_LEN);
    close(fd);
    test_paths(keyfile);
    unlink(keyfile);
    return T_DONE("test_w_resolver");
}
