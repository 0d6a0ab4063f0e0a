/*
 * test_quota — quota windows (UTC and a named zone), jitter bounds, key
 * names and pause values. The Lua scripts run against a real Redis in
 * tests/integration/test_quota.py.
 */
#include "quota.h"
#include "t.h"

#include <stdint.h>
#include <string.h>

/* 2026-11-26T12:34:56.789Z */
#define NOW 1795696496789LL
#define DAY0 1795651200000LL /* 2026-11-26T00:00:00Z */

static void
windows_utc(void)
{
    struct quota_window w;
    quota_window(QUOTA_DAY, NULL, NOW, &w);
    CHECK(w.start_ms == DAY0);
    CHECK(w.end_ms == DAY0 + 86400000LL);
    quota_window(QUOTA_MINUTE, NULL, NOW, &w);
    CHECK(w.start_ms == DAY0 + (12 * 60 + 34) * 60000LL);
    CHECK(w.end_ms == w.start_ms + 60000);
    /* the last millisecond of a day, and the first of the next */
    quota_window(QUOTA_DAY, NULL, DAY0 - 1, &w);
    CHECK(w.start_ms == DAY0 - 86400000LL && w.end_ms == DAY0);
    quota_window(QUOTA_DAY, NULL, DAY0, &w);
    CHECK(w.start_ms == DAY0);
    /* before the epoch, minutes still floor */
    quota_window(QUOTA_MINUTE, NULL, -1, &w);
    CHECK(w.start_ms == -60000 && w.end_ms == 0);
}

static void
windows_zone(void)
{
    struct tzwin *z = NULL;
    struct herr e;
    if (tzwin_load(NULL, "America/Los_Angeles", &z, &e) != 0) {
        printf("test_quota: no zone files (%s); zone windows skipped\n", e.msg);
        return;
    }
    struct quota_window w;
    /* 12:34Z on Nov 26 is 04:34 PST: the day began at 08:00Z */
    quota_window(QUOTA_DAY, z, NOW, &w);
    CHECK(w.start_ms == DAY0 + 8 * 3600000LL);
    CHECK(w.end_ms == DAY0 + 32 * 3600000LL);
    /* 07:59Z is still Nov 25 there */
    quota_window(QUOTA_DAY, z, DAY0 + 8 * 3600000LL - 1, &w);
    CHECK(w.end_ms == DAY0 + 8 * 3600000LL);
    /* a minute window ignores the zone */
    quota_window(QUOTA_MINUTE, z, NOW, &w);
    CHECK(w.start_ms % 60000 == 0 && w.end_ms - w.start_ms == 60000);
    /* 2026-11-01 (DST ends): a 25-hour day, 07:00Z to 08:00Z next day */
    int64_t nov1 = 1793491200000LL; /* 2026-11-01T00:00:00Z */
    quota_window(QUOTA_DAY, z, nov1 + 12 * 3600000LL, &w);
    CHECK(w.start_ms == nov1 + 7 * 3600000LL);
    CHECK(w.end_ms - w.start_ms == 25 * 3600000LL);
    tzwin_free(z);
}

static void
jitter(void)
{
    CHECK(quota_jitter_ms(QUOTA_DAY, 0) == 0);
    CHECK(quota_jitter_ms(QUOTA_DAY, UINT32_MAX) < 60000);
    CHECK(quota_jitter_ms(QUOTA_DAY, UINT32_MAX) > 59000);
    CHECK(quota_jitter_ms(QUOTA_MINUTE, UINT32_MAX) < 6000);
    CHECK(quota_jitter_ms(QUOTA_MINUTE, 1u << 31) == 3000);
}

static void
keys(void)
{
    char s[64], k[128];
    CHECK(quota_sender_scheme(s, sizeof s, "acme/billing@acme.test") > 0);
    CHECK_STR(s, "scheme:acme/billing@acme.test");
    CHECK(keys_quota_counter(k, sizeof k, "herald", s, 0, DAY0) > 0);
    CHECK_STR(k, "herald:quota:scheme:acme/billing@acme.test:day:"
                 "1795651200000");
    CHECK(quota_sender_org(s, sizeof s, "pine") > 0);
    CHECK(keys_quota_counter(k, sizeof k, "p", s, 1, 60000) > 0);
    CHECK_STR(k, "p:quota:org:pine:min:60000");
    CHECK(keys_quota_wait(k, sizeof k, "p", "relay") > 0);
    CHECK_STR(k, "p:quota:wait:relay");
    CHECK(keys_pauses(k, sizeof k, "p") > 0);
    CHECK_STR(k, "p:pauses");
    /* too small: -1, never a cut name */
    CHECK(quota_sender_org(s, 8, "a-long-org") == -1);
    /* through a pointer: the compiler would see the cut coming */
    int (*volatile wait_key)(char *, size_t, const char *, const char *) =
        keys_quota_wait;
    CHECK(wait_key(k, 10, "herald", "relay") == -1);
}

static void
pauses(void)
{
    int64_t u = 0;
    const char *why = NULL;
    CHECK(quota_parse_pause("1795696496789 rate limited (451 4.7.1)", &u,
                            &why) == 0);
    CHECK(u == 1795696496789LL);
    CHECK_STR(why, "rate limited (451 4.7.1)");
    CHECK(quota_parse_pause("42", &u, &why) == 0 && u == 42 && *why == '\0');
    CHECK(quota_parse_pause("", &u, &why) == -1);
    CHECK(quota_parse_pause(NULL, &u, &why) == -1);
    CHECK(quota_parse_pause("-5 x", &u, &why) == -1);
    CHECK(quota_parse_pause("12x", &u, &why) == -1);
    CHECK(quota_parse_pause("99999999999999999999999 x", &u, &why) == -1);
}

static void
senders(void)
{
    CHECK(quota_valid_sender("relay"));
    CHECK(quota_valid_sender("org:pine-lake"));
    CHECK(quota_valid_sender("scheme:acme/billing@acme.test"));
    CHECK(!quota_valid_sender(NULL));
    CHECK(!quota_valid_sender(""));
    CHECK(!quota_valid_sender("Relay"));
    CHECK(!quota_valid_sender("org:"));
    CHECK(!quota_valid_sender("org:a b"));
    CHECK(!quota_valid_sender("scheme:acme"));
    CHECK(!quota_valid_sender("scheme:/b@acme.test"));
    CHECK(!quota_valid_sender("scheme:acme/not-an-address"));
    CHECK(!quota_valid_sender(
        "scheme:"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/"
        "b@acme.test")); /* a 65-byte org */
}

int
main(void)
{
    windows_utc();
    windows_zone();
    jitter();
    keys();
    pauses();
    senders();
    return T_DONE("test_quota");
}
