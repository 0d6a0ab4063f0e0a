#include "../../common/settings.h"
#include "../../common/clock.h"
#include "t.h"

#include <stdlib.h>

static void
test_defaults(void)
{
    struct settings s;
    settings_defaults(&s);
    CHECK_STR(s.redis, "redis://127.0.0.1:6379/0");
    CHECK_STR(s.prefix, "herald");
    CHECK_STR(s.relay, "smtp://127.0.0.1:25");
    CHECK_STR(s.default_from, "notices@localhost");
    CHECK_STR(s.sender_domain, "sender.localhost");
    CHECK_STR(s.mc, "sqlite://./var/mc.db");
    CHECK_STR(s.platform_name, "Herald");
    CHECK(s.concurrency == 32);
    CHECK(s.heartbeat_s == 15);
    CHECK(s.retry_base_s == 30 && s.retry_cap_s == 3600);
    CHECK(s.retry_max_attempts == 10 && s.retry_max_age_s == 86400);
    CHECK(s.relay_user == NULL && s.relay_password == NULL);
    settings_free(&s);
}

static void
test_env_and_flags(void)
{
    struct settings s;
    struct herr e;
    settings_defaults(&s);
    setenv("HERALD_CONCURRENCY", "8", 1);
    setenv("HERALD_PREFIX", "envp", 1);
    CHECK(settings_load_env(&s, &e) == 0);
    CHECK(s.concurrency == 8);
    CHECK_STR(s.prefix, "envp");
    char *argv[] = {"prog", "--prefix", "flagp", "mc", "--concurrency=4",
                    "show", NULL};
    int argc = 6;
    CHECK(settings_load_args(&s, &argc, argv, &e) == 0);
    CHECK_STR(s.prefix, "flagp"); /* flags win */
    CHECK(s.concurrency == 4);
    CHECK(argc == 3);
    CHECK_STR(argv[1], "mc");
    CHECK_STR(argv[2], "show");
    unsetenv("HERALD_CONCURRENCY");
    unsetenv("HERALD_PREFIX");
    settings_free(&s);
}

static void
test_bad_values(void)
{
    struct settings s;
    struct herr e;
    settings_defaults(&s);
    CHECK(settings_set(&s, "HERALD_CONCURRENCY", "0", &e) == HERR_INVALID);
    CHECK_STR(e.field, "HERALD_CONCURRENCY");
    CHECK(settings_set(&s, "HERALD_CONCURRENCY", "abc", &e) == HERR_INVALID);
    CHECK(settings_set(&s, "--concurrency", "5000", &e) == HERR_INVALID);
    CHECK_STR(e.field, "--concurrency");
    CHECK(settings_set(&s, "HERALD_REDIS", "http://x", &e) == HERR_INVALID);
    CHECK(settings_set(&s, "HERALD_REDIS", "redis://h:99999", &e) ==
          HERR_INVALID);
    CHECK(settings_set(&s, "HERALD_RELAY", "ftp://x", &e) == HERR_INVALID);
    CHECK(settings_set(&s, "HERALD_MC", "mysql://x", &e) == HERR_INVALID);
    CHECK(settings_set(&s, "HERALD_MC", "postgresql://db/h", &e) == 0);
    CHECK(settings_set(&s, "HERALD_MC", "postgres://u:pw@db/h", &e) == 0);
    CHECK(settings_set(&s, "--mc", "postgres://u:pw@db/h", &e) == HERR_INVALID);
    CHECK(settings_set(&s, "HERALD_MC", "postgresql://db/h?password=x", &e) ==
          HERR_INVALID);
    CHECK(settings_set(&s, "HERALD_DEFAULT_FROM", "nobody", &e) ==
          HERR_INVALID);
    CHECK(settings_set(&s, "HERALD_LOG_LEVEL", "loud", &e) == HERR_INVALID);
    CHECK(settings_set(&s, "HERALD_NOPE", "1", &e) == HERR_INVALID);
    CHECK(settings_set(&s, "HERALD_PREFIX", "", &e) == HERR_INVALID);
    char *argv[] = {"prog", "--relay-password", "pw", NULL};
    int argc = 3;
    CHECK(settings_load_args(&s, &argc, argv, &e) == HERR_INVALID);
    CHECK_STR(e.field, "--relay-password");
    char *argv2[] = {"prog", "--redis", NULL};
    argc = 2;
    CHECK(settings_load_args(&s, &argc, argv2, &e) == HERR_INVALID);
    /* a Redis password on the command line (visible in ps) is refused;
     * the same URL from the environment is fine */
    char *argv3[] = {"prog", "--redis", "redis://:pw@h:1/0", NULL};
    argc = 3;
    CHECK(settings_load_args(&s, &argc, argv3, &e) == HERR_INVALID);
    CHECK_STR(e.field, "--redis");
    CHECK(strstr(e.msg, "HERALD_REDIS") != NULL);
    char *argv4[] = {"prog", "--redis=redis://:pw@h:1/0", NULL};
    argc = 2;
    CHECK(settings_load_args(&s, &argc, argv4, &e) == HERR_INVALID);
    CHECK(settings_set(&s, "HERALD_REDIS", "redis://:pw@h:1/0", &e) == 0);
    char *argv5[] = {"prog", "--redis", "redis://h:2/0", NULL};
    argc = 3;
    CHECK(settings_load_args(&s, &argc, argv5, &e) == 0);
    CHECK_STR(s.redis, "redis://h:2/0");
    CHECK(settings_set(&s, "--ledger-days", "0", &e) == HERR_INVALID);
    CHECK(settings_set(&s, "--max-inflight-bytes", "1000", &e) == HERR_INVALID);
    /* unchanged after failures */
    CHECK(s.concurrency == 32);
    CHECK(s.ledger_days == 30);
    CHECK(s.max_inflight_bytes == 16L * 1024 * 1024);
    settings_free(&s);
}

/* HERALD_HELO_NAME: host names and address literals, nothing else; set,
 * it is the EHLO name (settings_helo_name) */
static void
test_helo_name(void)
{
    struct settings s;
    struct herr e;
    settings_defaults(&s);
    CHECK(s.helo_name == NULL);
    const char *good[] = {"mail.example.com",   "a",
                          "m-1.x9.example",     "[192.0.2.1]",
                          "[IPv6:2001:db8::1]", "MAIL.Example.ORG"};
    const char *bad[] = {
        "mail example.com",  "-mail.example.com",   "mail-.example.com",
        "mail..example.com", "mail.example.com.",   "under_score.example",
        "[300.1.2.3]",       "[2001:db8::1]",       "[IPv6:zz::1]",
        "[192.0.2.1",        "caf\xc3\xa9.example", "a\r\nMAIL FROM:<x@y>"};
    char name[300];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        CHECK_MSG(settings_set(&s, "HERALD_HELO_NAME", good[i], &e) == 0, "%s",
                  good[i]);
        CHECK(settings_helo_name(&s, name, sizeof name) == 1);
        CHECK_STR(name, good[i]);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_MSG(settings_set(&s, "HERALD_HELO_NAME", bad[i], &e) ==
                      HERR_INVALID,
                  "%s", bad[i]);
        CHECK_STR(e.field, "HERALD_HELO_NAME");
    }
    char label64[80];
    memset(label64, 'a', 64);
    label64[64] = '\0';
    CHECK(settings_set(&s, "--helo-name", label64, &e) == HERR_INVALID);
    label64[63] = '\0';
    CHECK(settings_set(&s, "--helo-name", label64, &e) == 0);
    settings_free(&s);
    /* unset: the host's name when fully qualified, else none (the caller
     * then uses the connection's address literal) */
    settings_defaults(&s);
    int found = settings_helo_name(&s, name, sizeof name);
    CHECK(found ? strchr(name, '.') != NULL : name[0] == '\0');
    settings_free(&s);
}

static void
test_scrub_secrets(void)
{
    struct settings s;
    struct herr e;
    settings_defaults(&s);
    setenv("HERALD_RELAY_PASSWORD", "pw-to-forget", 1);
    char *env = getenv("HERALD_RELAY_PASSWORD");
    CHECK(settings_load_env(&s, &e) == 0);
    CHECK_STR(s.relay_password, "pw-to-forget");
    settings_scrub_secrets(&s);
    CHECK(s.relay_password == NULL);
    CHECK(getenv("HERALD_RELAY_PASSWORD") == NULL);
    CHECK(env[0] == '\0'); /* the environment's bytes were wiped */
    CHECK_STR(s.redis, "redis://127.0.0.1:6379/0"); /* the rest stays */
    settings_free(&s);
}

static void
test_redis_url(void)
{
    struct redis_target t;
    CHECK(settings_parse_redis("redis://127.0.0.1:6380/2", &t, NULL) == 0);
    CHECK_STR(t.host, "127.0.0.1");
    CHECK(t.port == 6380 && t.db == 2 && t.password[0] == 0);
    CHECK(settings_parse_redis("redis://:s3cret@h", &t, NULL) == 0);
    CHECK_STR(t.password, "s3cret");
    CHECK_STR(t.host, "h");
    CHECK(t.port == 6379);
    CHECK(settings_parse_redis("unix:///tmp/r.sock", &t, NULL) == 0);
    CHECK_STR(t.unix_path, "/tmp/r.sock");
    CHECK(settings_parse_redis("unix://rel", &t, NULL) == HERR_INVALID);
    CHECK(settings_parse_redis("redis://h:1/x", &t, NULL) == HERR_INVALID);
}

static void
test_print_hides_secrets(void)
{
    struct settings s;
    settings_defaults(&s);
    settings_set(&s, "HERALD_RELAY_PASSWORD", "hunter2", NULL);
    settings_set(&s, "HERALD_REDIS", "redis://:topsecret@h:1/0", NULL);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    settings_print(&s, f);
    fclose(f);
    CHECK(strstr(out, "hunter2") == NULL);
    CHECK(strstr(out, "topsecret") == NULL);
    CHECK(strstr(out, "HERALD_RELAY_PASSWORD=(hidden)") != NULL);
    CHECK(strstr(out, "HERALD_CONCURRENCY=32") != NULL);
    free(out);
    settings_free(&s);
}

static void
test_clock(void)
{
    int64_t ms;
    char buf[CLOCK_RFC3339_LEN];
    CHECK(clock_parse_rfc3339("2026-11-26T14:58:07Z", &ms) == 0);
    CHECK(ms == 1795705087000LL);
    clock_rfc3339(ms + 123, buf);
    CHECK_STR(buf, "2026-11-26T14:58:07.123Z");
    CHECK(clock_parse_rfc3339("2026-11-26T09:58:07.5-05:00", &ms) == 0);
    CHECK(ms == 1795705087500LL);
    CHECK(clock_parse_rfc3339("2026-02-30T00:00:00Z", &ms) == HERR_INVALID);
    CHECK(clock_parse_rfc3339("2026-11-26T14:58:07", &ms) == HERR_INVALID);
    CHECK(clock_parse_rfc3339("tomorrow", &ms) == HERR_INVALID);
    char d[40];
    clock_rfc5322(1795705087000LL, d);
    CHECK_STR(d, "Thu, 26 Nov 2026 14:58:07 +0000");
}

int
main(void)
{
    test_defaults();
    test_env_and_flags();
    test_bad_values();
    test_helo_name();
    test_redis_url();
    test_scrub_secrets();
    test_print_hides_secrets();
    test_clock();
    return T_DONE("settings");
}
