/*
 * test_org — organisation records (common/org.h): the JSON round trip
 * (members in order, optional ones absent), org_check naming the member
 * at fault, stored values that must be refused (each member, wrong types,
 * duplicates, not an object), unknown members ignored, and the caps
 * (ORG_NAME_MAX, SCHEME_LIMIT_MAX, ORG_JSON_MAX).
 */
#include "../../common/clock.h"
#include "../../common/err.h"
#include "../../common/org.h"
#include "../../common/scheme.h"
#include "../../common/util.h"
#include "t.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1790000000123LL /* a time with milliseconds */

static struct org *
from(const char *json, int *rc, struct herr *e)
{
    struct org *o = NULL;
    memset(e, 0, sizeof *e);
    *rc = org_from_json(json, strlen(json), &o, e);
    CHECK((*rc == 0) == (o != NULL));
    return o;
}

/* The stored value must be refused with `field` named. */
static void
refused(const char *json, int want_rc, const char *field)
{
    int rc;
    struct herr e;
    struct org *o = from(json, &rc, &e);
    CHECK_MSG(rc == want_rc, "%s: rc %d, want %d", json, rc, want_rc);
    CHECK_MSG(strcmp(e.field, field) == 0, "%s: field '%s', want '%s'", json,
              e.field, field);
    CHECK_MSG(e.msg[0] != '\0', "%s: a sentence", json);
    org_free(o);
}

static void
test_round_trip(void)
{
    struct org o = {.org = "acme",
                    .name = "Acme Camps \xc3\xa9t\xc3\xa9",
                    .relay_daily_limit = 500,
                    .updated_at = T0};
    struct herr e = {{0}, {0}};
    CHECK(org_check(&o, &e) == 0);
    char *json = org_to_json(&o);
    char t[CLOCK_RFC3339_LEN], want[512];
    clock_rfc3339(T0, t);
    snprintf(want, sizeof want,
             "{\"org\":\"acme\",\"name\":\"Acme Camps \xc3\xa9t\xc3\xa9\","
             "\"relay_daily_limit\":500,\"updated_at\":\"%s\"}",
             t);
    CHECK_STR(json, want);
    int rc;
    struct org *back = from(json, &rc, &e);
    CHECK(rc == 0);
    if (back) {
        CHECK_STR(back->org, "acme");
        CHECK_STR(back->name, o.name);
        CHECK(back->relay_daily_limit == 500);
        CHECK(back->updated_at == T0);
        char *again = org_to_json(back);
        CHECK_STR(again, json);
        free(again);
    }
    org_free(back);
    free(json);

    /* Optional members absent when unset. */
    struct org bare = {.org = "a.b-c_9", .updated_at = T0};
    json = org_to_json(&bare);
    snprintf(want, sizeof want, "{\"org\":\"a.b-c_9\",\"updated_at\":\"%s\"}",
             t);
    CHECK_STR(json, want);
    back = from(json, &rc, &e);
    CHECK(rc == 0 && back && back->name == NULL &&
          back->relay_daily_limit == 0);
    org_free(back);
    free(json);

    /* Unknown members are ignored, wherever they are. */
    back = from("{\"future\":[1,{\"x\":null}],\"org\":\"acme\","
                "\"relay_daily_limit\":7,\"colour\":\"blue\","
                "\"updated_at\":\"2026-01-02T03:04:05Z\",\"z\":true}",
                &rc, &e);
    CHECK(rc == 0 && back && back->relay_daily_limit == 7 &&
          back->name == NULL && back->updated_at == 1767323045000LL);
    org_free(back);

    /* A time with an offset is read as the instant it names. */
    back =
        from("{\"org\":\"acme\",\"updated_at\":\"2026-01-02T05:04:05+02:00\"}",
             &rc, &e);
    CHECK(rc == 0 && back && back->updated_at == 1767323045000LL);
    org_free(back);
}

static void
test_check(void)
{
    struct herr e;
    struct org o = {.org = "acme", .updated_at = T0};
#define CHECK_FIELD(want_rc, want_field)                                       \
    do {                                                                       \
        memset(&e, 0, sizeof e);                                               \
        CHECK(org_check(&o, &e) == (want_rc));                                 \
        CHECK_STR(e.field, (want_field));                                      \
    } while (0)
    o.org = NULL;
    CHECK_FIELD(HERR_INVALID, "org");
    o.org = "bad org";
    CHECK_FIELD(HERR_INVALID, "org");
    CHECK(strstr(e.msg, "'bad org'") != NULL);
    o.org = "acme/x";
    CHECK_FIELD(HERR_INVALID, "org");
    o.org = "acme";
    o.name = "";
    CHECK_FIELD(HERR_INVALID, "name");
    o.name = "tab\there";
    CHECK_FIELD(HERR_INVALID, "name");
    CHECK(strstr(e.msg, "byte 3") != NULL);
    o.name = "del\x7f";
    CHECK_FIELD(HERR_INVALID, "name");
    o.name = "c1 \xc2\x85 next line";
    CHECK_FIELD(HERR_INVALID, "name");
    o.name = "bad \xff utf8";
    CHECK_FIELD(HERR_INVALID, "name");
    o.name = "overlong \xc0\xaf";
    CHECK_FIELD(HERR_INVALID, "name");
    o.name = "fine \xc2\xa0 nbsp";
    memset(&e, 0, sizeof e);
    CHECK(org_check(&o, &e) == 0);
    o.name = NULL;
    o.relay_daily_limit = -1;
    CHECK_FIELD(HERR_INVALID, "relay_daily_limit");
    o.relay_daily_limit = SCHEME_LIMIT_MAX + 1;
    CHECK_FIELD(HERR_INVALID, "relay_daily_limit");
    o.relay_daily_limit = SCHEME_LIMIT_MAX;
    CHECK(org_check(&o, NULL) == 0);
    o.relay_daily_limit = 1;
    CHECK(org_check(&o, NULL) == 0);
    o.updated_at = -5;
    CHECK_FIELD(HERR_INVALID, "updated_at");
#undef CHECK_FIELD
}

static void
test_caps(void)
{
    char name[ORG_NAME_MAX + 2];
    memset(name, 'n', sizeof name);
    name[ORG_NAME_MAX] = '\0';
    struct org o = {.org = "acme", .name = name, .updated_at = T0};
    struct herr e = {{0}, {0}};
    CHECK(org_check(&o, &e) == 0);
    char *json = org_to_json(&o);
    int rc;
    struct org *back = from(json, &rc, &e);
    CHECK(rc == 0 && back && strlen(back->name) == ORG_NAME_MAX);
    org_free(back);
    free(json);

    name[ORG_NAME_MAX] = 'n';
    name[ORG_NAME_MAX + 1] = '\0';
    memset(&e, 0, sizeof e);
    CHECK(org_check(&o, &e) == HERR_TOOBIG);
    CHECK_STR(e.field, "name");
    json = org_to_json(&o); /* writing is not checking */
    refused(json, HERR_TOOBIG, "name");
    free(json);

    /* A multi-byte name counts bytes: 100 x "é" is 200 bytes, 101 is too
     * many. */
    char wide[2 * 101 + 1];
    for (int i = 0; i < 101; i++)
        memcpy(wide + 2 * i, "\xc3\xa9", 2);
    wide[2 * 100] = '\0';
    o.name = wide;
    CHECK(org_check(&o, NULL) == 0);
    wide[2 * 100] = '\xc3';
    wide[2 * 101] = '\0';
    CHECK(org_check(&o, NULL) == HERR_TOOBIG);

    /* The whole stored value: ORG_JSON_MAX bytes parse, one more does not
     * (padding with an unknown member). */
    const char *head = "{\"org\":\"acme\",\"updated_at\":"
                       "\"2026-01-02T03:04:05Z\",\"pad\":\"";
    size_t hl = strlen(head);
    char *big = xmalloc(ORG_JSON_MAX + 2);
    memcpy(big, head, hl);
    memset(big + hl, 'p', ORG_JSON_MAX - hl - 2);
    memcpy(big + ORG_JSON_MAX - 2, "\"}", 3);
    CHECK(strlen(big) == ORG_JSON_MAX);
    back = NULL;
    CHECK(org_from_json(big, ORG_JSON_MAX, &back, &e) == 0 && back);
    org_free(back);
    memset(big + hl, 'p', ORG_JSON_MAX - hl - 1);
    memcpy(big + ORG_JSON_MAX - 1, "\"}", 3);
    back = NULL;
    memset(&e, 0, sizeof e);
    CHECK(org_from_json(big, ORG_JSON_MAX + 1, &back, &e) == HERR_TOOBIG);
    CHECK(back == NULL && e.msg[0] != '\0');
    free(big);
}

static void
test_refused(void)
{
    const char *t = "\"updated_at\":\"2026-01-02T03:04:05Z\"";
    char buf[512];
#define R(rc, field, fmt)                                                      \
    do {                                                                       \
        snprintf(buf, sizeof buf, fmt, t);                                     \
        refused(buf, rc, field);                                               \
    } while (0)
    /* org */
    R(HERR_INVALID, "org", "{%s}");
    R(HERR_INVALID, "org", "{\"org\":7,%s}");
    R(HERR_INVALID, "org", "{\"org\":null,%s}");
    R(HERR_INVALID, "org", "{\"org\":\"\",%s}");
    R(HERR_INVALID, "org", "{\"org\":\"a b\",%s}");
    R(HERR_INVALID, "org", "{\"org\":\"a\\u0000b\",%s}");
    /* name */
    R(HERR_INVALID, "name", "{\"org\":\"acme\",\"name\":\"\",%s}");
    R(HERR_INVALID, "name", "{\"org\":\"acme\",\"name\":null,%s}");
    R(HERR_INVALID, "name", "{\"org\":\"acme\",\"name\":5,%s}");
    R(HERR_INVALID, "name", "{\"org\":\"acme\",\"name\":\"a\\nb\",%s}");
    R(HERR_INVALID, "name", "{\"org\":\"acme\",\"name\":\"a\\u0085b\",%s}");
    R(HERR_INVALID, "name", "{\"org\":\"acme\",\"name\":\"a\\u0000\",%s}");
    /* relay_daily_limit */
    R(HERR_INVALID, "relay_daily_limit",
      "{\"org\":\"acme\",\"relay_daily_limit\":0,%s}");
    R(HERR_INVALID, "relay_daily_limit",
      "{\"org\":\"acme\",\"relay_daily_limit\":-3,%s}");
    R(HERR_INVALID, "relay_daily_limit",
      "{\"org\":\"acme\",\"relay_daily_limit\":1000000001,%s}");
    R(HERR_INVALID, "relay_daily_limit",
      "{\"org\":\"acme\",\"relay_daily_limit\":2.5,%s}");
    R(HERR_INVALID, "relay_daily_limit",
      "{\"org\":\"acme\",\"relay_daily_limit\":\"5\",%s}");
    R(HERR_INVALID, "relay_daily_limit",
      "{\"org\":\"acme\",\"relay_daily_limit\":null,%s}");
#undef R
    /* updated_at */
    refused("{\"org\":\"acme\"}", HERR_INVALID, "updated_at");
    refused("{\"org\":\"acme\",\"updated_at\":17}", HERR_INVALID, "updated_at");
    refused("{\"org\":\"acme\",\"updated_at\":\"yesterday\"}", HERR_INVALID,
            "updated_at");
    /* the value as a whole */
    refused("", HERR_INVALID, "");
    refused("[]", HERR_INVALID, "");
    refused("\"acme\"", HERR_INVALID, "");
    refused("{\"org\":\"acme\",", HERR_INVALID, "");
    refused("{\"org\":\"acme\",\"org\":\"beta\","
            "\"updated_at\":\"2026-01-02T03:04:05Z\"}",
            HERR_INVALID, "");
}

int
main(void)
{
    test_round_trip();
    test_check();
    test_caps();
    test_refused();
    return T_DONE("org");
}
