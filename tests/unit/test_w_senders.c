/* worker/senders.c through libworker.a: which quota counters a routed job
 * takes (SPEC §5) -- a scheme's day (in its time zone) and minute, an
 * organisation's relay day, nothing for a sender without limits -- and
 * the counters' key names and windows. The organisations' limits are
 * loaded as HGETALL would give them (senders_load_orgs). Times derive
 * from the clock at run time. */
#include "../../common/clock.h"
#include "../../common/keys.h"
#include "../../common/util.h"
#include "../../worker/senders.h"
#include "t.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DAY_MS 86400000LL
#define MINUTE_MS 60000LL

static void
test_scheme_plans(struct senders *s, int64_t now)
{
    struct route rt;
    memset(&rt, 0, sizeof rt);
    rt.path = ROUTE_SCHEME;
    rt.scheme_field = "acme/billing@acme.test";
    struct sender_plan p;

    /* no limits: the scheme can be paused, nothing is counted */
    senders_plan(s, &rt, "acme", now, &p);
    CHECK(p.n == 0);
    CHECK_STR(p.pause_sender, "scheme:acme/billing@acme.test");
    CHECK_STR(p.count_sender, "");

    /* a day and a minute limit: two counters, the day's first */
    rt.daily_limit = 500;
    rt.minute_limit = 20;
    senders_plan(s, &rt, "acme", now, &p);
    CHECK(p.n == 2 && p.kind[0] == QUOTA_DAY && p.kind[1] == QUOTA_MINUTE);
    CHECK(p.limit[0] == 500 && p.limit[1] == 20);
    CHECK_STR(p.count_sender, "scheme:acme/billing@acme.test");
    int64_t day0 = now - now % DAY_MS, min0 = now - now % MINUTE_MS;
    CHECK(p.win[0].start_ms == day0 && p.win[0].end_ms == day0 + DAY_MS);
    CHECK(p.win[1].start_ms == min0 && p.win[1].end_ms == min0 + MINUTE_MS);
    char want[KEYS_MAX];
    keys_quota_counter(want, sizeof want, "t", p.count_sender, 0, day0);
    CHECK_STR(p.key[0], want);
    keys_quota_counter(want, sizeof want, "t", p.count_sender, 1, min0);
    CHECK_STR(p.key[1], want);

    /* a day in the scheme's time zone (a fixed offset: UTC+14 all year;
     * tzdata is part of Debian's base system) */
    if (access("/usr/share/zoneinfo/Pacific/Kiritimati", R_OK) != 0) {
        fprintf(stderr, "test_w_senders: no tzdata; time zone case skipped\n");
        return;
    }
    rt.minute_limit = 0;
    rt.time_zone = "Pacific/Kiritimati";
    senders_plan(s, &rt, "acme", now, &p);
    CHECK(p.n == 1 && p.kind[0] == QUOTA_DAY);
    int64_t off = 14 * 3600000LL,
            local0 = now + off - (now + off) % DAY_MS - off;
    CHECK_MSG(p.win[0].start_ms == local0 && p.win[0].end_ms == local0 + DAY_MS,
              "window %lld..%lld, want %lld", (long long)p.win[0].start_ms,
              (long long)p.win[0].end_ms, (long long)local0);
    /* the day's end in that zone is also when a job over it is due */
    CHECK(senders_next_day(s, &rt, now) == local0 + DAY_MS);
}

static void
test_relay_plans(struct senders *s, int64_t now)
{
    const char *fields[3] = {"pine", "oak", "bad"};
    char at[CLOCK_RFC3339_LEN]; /* from the clock, as a writer's */
    clock_rfc3339(now, at);
    char *pine = xasprintf("{\"org\":\"pine\",\"relay_daily_limit\":1000,"
                           "\"updated_at\":\"%s\"}",
                           at);
    char *oak = xasprintf("{\"org\":\"oak\",\"name\":\"Oak\","
                          "\"updated_at\":\"%s\"}",
                          at);
    const char *values[3] = {pine, oak, "{not json"};
    size_t lens[3];
    for (int i = 0; i < 3; i++)
        lens[i] = strlen(values[i]);
    senders_load_orgs(s, fields, values, lens, 3);
    CHECK(senders_loaded(s));

    struct route rt;
    memset(&rt, 0, sizeof rt);
    struct sender_plan p;
    /* the relay and the SPF path count the organisation's relay day */
    for (int path = ROUTE_SPF; path <= ROUTE_RELAY; path++) {
        rt.path = (enum route_path)path;
        senders_plan(s, &rt, "pine", now, &p);
        CHECK(p.n == 1 && p.kind[0] == QUOTA_DAY && p.limit[0] == 1000);
        CHECK_STR(p.count_sender, "org:pine");
        CHECK_STR(p.pause_sender, "relay");
    }
    /* an organisation without a limit, or unknown: nothing counted, the
     * relay can still be paused */
    senders_plan(s, &rt, "oak", now, &p);
    CHECK(p.n == 0 && strcmp(p.pause_sender, "relay") == 0);
    senders_plan(s, &rt, "nobody", now, &p);
    CHECK(p.n == 0);
    /* limits reloaded: the new table replaces the old */
    senders_load_orgs(s, fields + 1, values + 1, lens + 1, 1);
    senders_plan(s, &rt, "pine", now, &p);
    CHECK(p.n == 0);
    free(pine);
    free(oak);
}

int
main(void)
{
    struct senders *s = senders_new_detached("t");
    CHECK(!senders_loaded(s));
    int64_t now = clock_now_ms();
    test_scheme_plans(s, now);
    test_relay_plans(s, now);
    CHECK(senders_paused(s, "relay", now, NULL) == 0);
    senders_free(s);
    return T_DONE("test_w_senders");
}
