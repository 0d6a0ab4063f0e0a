/*
 * test_scheme — Email Sending Scheme records (common/scheme.h): the
 * validators, create / apply (update changes only what is given, a new
 * password clears auth_failed), the JSON round trip, the public JSON that
 * never holds the password, stored values that must be refused, and the
 * optional time_zone (set, cleared, its place in the JSON, bad names).
 *
 * Helper mode for the integration tests (tests/integration/
 * test_schemes.py), which must check that a stored token opens without
 * ever printing the password:
 *
 *   test_scheme open-check KEYFILE ORG EMAIL TOKEN   (expected password on
 *       stdin, one line) -> prints "match" and exits 0 when TOKEN opens
 *       with KEYFILE under the context scheme_aad(ORG, EMAIL) and equals
 *       the expected password; otherwise prints "no match" or the reason
 *       it did not open, and exits 1.
 */
#include "../../common/clock.h"
#include "../../common/err.h"
#include "../../common/scheme.h"
#include "../../common/seal.h"
#include "../../common/tzwin.h"
#include "../../common/util.h"
#include "t.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct seal_key *key;

static char *
seal_for(const char *org, const char *email, const char *pw)
{
    char aad[SCHEME_AAD_MAX];
    scheme_aad(aad, sizeof aad, org, email);
    return seal_seal(key, pw, strlen(pw), aad);
}

/* A valid add patch; the token is owned by the caller. */
static void
base_patch(struct scheme_patch *p, const char *token)
{
    scheme_patch_init(p);
    p->smtp_host = "smtp.acme.test";
    p->smtp_port = 587;
    p->username = "billing";
    p->password = token;
}

static void
test_validators(void)
{
    CHECK(scheme_valid_host("smtp.acme.test"));
    CHECK(scheme_valid_host("localhost"));
    CHECK(scheme_valid_host("mail-1.example.com."));
    CHECK(scheme_valid_host("192.0.2.1"));
    CHECK(scheme_valid_host("::1"));
    CHECK(scheme_valid_host("2001:db8::25"));
    CHECK(!scheme_valid_host(""));
    CHECK(!scheme_valid_host("-bad.example"));
    CHECK(!scheme_valid_host("bad-.example"));
    CHECK(!scheme_valid_host("a..b"));
    CHECK(!scheme_valid_host("smtp acme"));
    CHECK(!scheme_valid_host("smtp_acme.test"));
    CHECK(!scheme_valid_host("300.1.2.3"));
    CHECK(!scheme_valid_host("[::1]"));
    CHECK(!scheme_valid_host("host:25"));
    char label[80];
    memset(label, 'a', 64);
    label[64] = '\0';
    CHECK(!scheme_valid_host(label)); /* a 64-byte label */
    label[63] = '\0';
    CHECK(scheme_valid_host(label));

    CHECK(scheme_host_is_loopback("127.0.0.1"));
    CHECK(scheme_host_is_loopback("127.255.3.4"));
    CHECK(scheme_host_is_loopback("::1"));
    CHECK(scheme_host_is_loopback("::ffff:127.0.0.1"));
    CHECK(scheme_host_is_loopback("LocalHost"));
    CHECK(!scheme_host_is_loopback("128.0.0.1"));
    CHECK(!scheme_host_is_loopback("10.0.0.1"));
    CHECK(!scheme_host_is_loopback("::2"));
    CHECK(!scheme_host_is_loopback("localhost.acme.test"));
    CHECK(!scheme_host_is_loopback("smtp.acme.test"));

    int port = 0;
    struct herr e = {{0}, {0}};
    CHECK(scheme_parse_port("587", "--smtp-port", &port, &e) == 0 &&
          port == 587);
    CHECK(scheme_parse_port("1", "x", &port, &e) == 0 && port == 1);
    CHECK(scheme_parse_port("65535", "x", &port, &e) == 0 && port == 65535);
    CHECK(scheme_parse_port("0", "--smtp-port", &port, &e) == HERR_INVALID);
    CHECK_STR(e.field, "--smtp-port");
    CHECK(strstr(e.msg, "'0'") != NULL);
    CHECK(scheme_parse_port("65536", "x", &port, &e) == HERR_INVALID);
    CHECK(scheme_parse_port("-1", "x", &port, &e) == HERR_INVALID);
    CHECK(scheme_parse_port("25x", "x", &port, &e) == HERR_INVALID);
    CHECK(scheme_parse_port("", "x", &port, &e) == HERR_INVALID);
    CHECK(scheme_parse_port(" 25", "x", &port, &e) == HERR_INVALID);
    CHECK(scheme_parse_port("99999999999999999999", "x", &port, &e) ==
          HERR_INVALID);
    long long lim = 0;
    CHECK(scheme_parse_limit("500", "x", &lim, &e) == 0 && lim == 500);
    CHECK(scheme_parse_limit("0", "--daily-limit", &lim, &e) == HERR_INVALID);
    CHECK_STR(e.field, "--daily-limit");
    CHECK(scheme_parse_limit("1.5", "x", &lim, &e) == HERR_INVALID);
    CHECK(scheme_parse_limit("1000000001", "x", &lim, &e) == HERR_INVALID);

    enum scheme_tls t;
    enum scheme_on_auth a;
    CHECK(scheme_tls_parse("ssl", &t) == 0 && t == SCHEME_TLS_SSL);
    CHECK(scheme_tls_parse("starttls", &t) == 0 && t == SCHEME_TLS_STARTTLS);
    CHECK(scheme_tls_parse("none", &t) == 0 && t == SCHEME_TLS_NONE);
    CHECK(scheme_tls_parse("SSL", &t) == HERR_INVALID);
    CHECK(scheme_tls_parse("tls", &t) == HERR_INVALID);
    CHECK(scheme_on_auth_parse("hold", &a) == 0 && a == SCHEME_AUTH_HOLD);
    CHECK(scheme_on_auth_parse("fallback", &a) == 0 &&
          a == SCHEME_AUTH_FALLBACK);
    CHECK(scheme_on_auth_parse("retry", &a) == HERR_INVALID);

    char f[SCHEME_FIELD_MAX], aad[SCHEME_AAD_MAX];
    CHECK(scheme_field(f, sizeof f, "Acme", "Billing@ACME.test") > 0);
    CHECK_STR(f, "Acme/billing@acme.test");
    CHECK(scheme_aad(aad, sizeof aad, "Acme", "Billing@ACME.test") > 0);
    CHECK_STR(aad, "Acme/billing@acme.test/smtp");
    CHECK(scheme_field(f, 8, "Acme", "Billing@ACME.test") == -1);
}

static void
test_create(void)
{
    char *tok = seal_for("acme", "billing@acme.test", "hunter2");
    struct scheme_patch p;
    struct scheme *s = NULL;
    struct herr e = {{0}, {0}};

    base_patch(&p, tok);
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1000, &s, &e) == 0);
    CHECK(s && s->tls == SCHEME_TLS_STARTTLS);
    CHECK(s && s->on_auth_failure == SCHEME_AUTH_FALLBACK);
    CHECK(s && s->state == SCHEME_STATE_OK && s->state_at == 1000 &&
          s->created_at == 1000 && s->updated_at == 1000);
    CHECK(s && s->imap_host == NULL && s->daily_limit == 0);
    scheme_free(s);

    base_patch(&p, tok);
    p.smtp_port = 465;
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) == 0);
    CHECK(s && s->tls == SCHEME_TLS_SSL);
    scheme_free(s);

    /* required members, each named */
    const char *req[] = {"smtp_host", "smtp_port", "username", "password"};
    for (int i = 0; i < 4; i++) {
        base_patch(&p, tok);
        if (i == 0)
            p.smtp_host = NULL;
        if (i == 1)
            p.smtp_port = 0;
        if (i == 2)
            p.username = NULL;
        if (i == 3)
            p.password = NULL;
        memset(&e, 0, sizeof e);
        CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
              HERR_INVALID);
        CHECK(s == NULL);
        CHECK_STR(e.field, req[i]);
    }

    base_patch(&p, tok);
    CHECK(scheme_create("acme!", "billing@acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "org");
    CHECK(scheme_create("acme", "billing.acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "email");
    p.smtp_host = "not a host";
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "smtp_host");

    /* tls none: loopback only, IMAP included */
    base_patch(&p, tok);
    p.tls = SCHEME_TLS_NONE;
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "tls");
    CHECK(strstr(e.msg, "smtp.acme.test") != NULL);
    p.smtp_host = "127.0.0.1";
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) == 0);
    scheme_free(s);
    p.imap_host = "imap.acme.test";
    p.imap_port = 143;
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "tls");

    /* IMAP host and port together; a Sent folder needs IMAP */
    base_patch(&p, tok);
    p.imap_host = "imap.acme.test";
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "imap_port");
    base_patch(&p, tok);
    p.imap_port = 993;
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "imap_host");
    base_patch(&p, tok);
    p.sent_folder = "Sent";
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "sent_folder");

    /* a clear password is not a sealed one */
    base_patch(&p, "hunter2");
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "password");
    CHECK(strstr(e.msg, "hunter2") == NULL);

    base_patch(&p, tok);
    p.username = "bill\ning";
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "username");
    free(tok);
}

static void
test_apply(void)
{
    char *tok = seal_for("acme", "billing@acme.test", "hunter2");
    char *tok2 = seal_for("acme", "billing@acme.test", "correct horse");
    struct scheme_patch p;
    struct scheme *s;
    struct herr e = {{0}, {0}};
    base_patch(&p, tok);
    p.daily_limit = 500;
    p.on_auth_failure = SCHEME_AUTH_HOLD;
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1000, &s, &e) == 0);
    if (s == NULL) {
        free(tok);
        free(tok2);
        return;
    }
    scheme_mark_failed(s, "535 5.7.8 bad\r\ncredentials", 2000);
    CHECK(s->state == SCHEME_STATE_AUTH_FAILED && s->state_at == 2000);
    CHECK_STR(s->state_reason, "535 5.7.8 bad  credentials");

    /* only the given setting changes; the mark stays */
    scheme_patch_init(&p);
    p.minute_limit = 10;
    CHECK(scheme_apply(s, &p, 3000, &e) == 0);
    CHECK(s->minute_limit == 10 && s->daily_limit == 500);
    CHECK(s->on_auth_failure == SCHEME_AUTH_HOLD);
    CHECK_STR(s->smtp_host, "smtp.acme.test");
    CHECK_STR(s->password, tok);
    CHECK(s->state == SCHEME_STATE_AUTH_FAILED);
    CHECK(s->updated_at == 3000 && s->created_at == 1000);

    /* nothing given */
    scheme_patch_init(&p);
    CHECK(scheme_apply(s, &p, 4000, &e) == HERR_INVALID);
    CHECK(s->updated_at == 3000);

    /* an invalid result leaves the scheme as it was */
    scheme_patch_init(&p);
    p.smtp_port = 2525;
    p.tls = SCHEME_TLS_NONE;
    CHECK(scheme_apply(s, &p, 4000, &e) == HERR_INVALID);
    CHECK_STR(e.field, "tls");
    CHECK(s->smtp_port == 587 && s->tls == SCHEME_TLS_STARTTLS);
    CHECK(s->updated_at == 3000);

    /* IMAP: both needed the first time, then one at a time */
    scheme_patch_init(&p);
    p.imap_host = "imap.acme.test";
    CHECK(scheme_apply(s, &p, 4000, &e) == HERR_INVALID);
    CHECK_STR(e.field, "imap_port");
    p.imap_port = 993;
    p.sent_folder = "Sent";
    CHECK(scheme_apply(s, &p, 4000, &e) == 0);
    scheme_patch_init(&p);
    p.imap_port = 1993;
    CHECK(scheme_apply(s, &p, 4100, &e) == 0);
    CHECK(s->imap_port == 1993);
    CHECK_STR(s->imap_host, "imap.acme.test");
    scheme_patch_init(&p);
    p.clear_daily_limit = 1;
    p.clear_imap = 1;
    CHECK(scheme_apply(s, &p, 4200, &e) == 0);
    CHECK(s->daily_limit == 0 && s->imap_host == NULL && s->imap_port == 0 &&
          s->sent_folder == NULL);
    CHECK(s->state == SCHEME_STATE_AUTH_FAILED);

    /* a new password clears auth_failed */
    scheme_patch_init(&p);
    p.password = tok2;
    CHECK(scheme_apply(s, &p, 5000, &e) == 0);
    CHECK(s->state == SCHEME_STATE_OK && s->state_at == 5000);
    CHECK_STR(s->state_reason, "");
    CHECK_STR(s->password, tok2);

    /* and so does a new username */
    scheme_mark_failed(s, "535 no", 6000);
    scheme_patch_init(&p);
    p.username = "billing2";
    CHECK(scheme_apply(s, &p, 7000, &e) == 0);
    CHECK(s->state == SCHEME_STATE_OK && s->state_at == 7000);

    /* a long reason is cut at a character boundary */
    char big[SCHEME_REASON_MAX + 10];
    memset(big, 'x', sizeof big);
    memcpy(big + SCHEME_REASON_MAX - 1, "\xc3\xa9", 2); /* é across the cut */
    big[sizeof big - 1] = '\0';
    scheme_mark_failed(s, big, 8000);
    CHECK(strlen(s->state_reason) == SCHEME_REASON_MAX - 1);
    struct herr ce = {{0}, {0}};
    CHECK(scheme_check(s, &ce) == 0);
    scheme_free(s);
    free(tok);
    free(tok2);
}

static void
test_json(void)
{
    const char *pw = "s3cret-Pa55word";
    char *tok = seal_for("acme", "Billing@Acme.test", pw);
    struct scheme_patch p;
    struct scheme *s, *back = NULL;
    struct herr e = {{0}, {0}};
    base_patch(&p, tok);
    p.imap_host = "imap.acme.test";
    p.imap_port = 993;
    p.sent_folder = "Sent Items";
    p.daily_limit = 2000;
    p.minute_limit = 30;
    p.time_zone = "America/Argentina/Salta";
    p.tls = SCHEME_TLS_SSL;
    p.on_auth_failure = SCHEME_AUTH_HOLD;
    CHECK(scheme_create("acme", "Billing@Acme.test", &p, 1764169087123, &s,
                        &e) == 0);
    if (s == NULL) {
        free(tok);
        return;
    }
    scheme_mark_failed(s, "535 5.7.8 Error: authentication failed",
                       1764169099000);
    char *j = scheme_to_json(s, 0);
    CHECK(strstr(j, "\"password\":\"v1:") != NULL);
    CHECK(strstr(j, pw) == NULL);
    CHECK(strstr(j, "\"created_at\":\"2025-11-26T14:58:07.123Z\"") != NULL);
    CHECK(scheme_from_json(j, strlen(j), &back, &e) == 0);
    if (back) {
        CHECK_STR(back->org, "acme");
        CHECK_STR(back->email, "Billing@Acme.test");
        CHECK_STR(back->imap_host, "imap.acme.test");
        CHECK(back->imap_port == 993 && back->smtp_port == 587);
        CHECK_STR(back->sent_folder, "Sent Items");
        CHECK(back->daily_limit == 2000 && back->minute_limit == 30);
        CHECK_STR(back->time_zone, "America/Argentina/Salta");
        CHECK(back->tls == SCHEME_TLS_SSL);
        CHECK(back->on_auth_failure == SCHEME_AUTH_HOLD);
        CHECK(back->state == SCHEME_STATE_AUTH_FAILED);
        CHECK(back->state_at == 1764169099000);
        CHECK(back->created_at == 1764169087123);
        CHECK_STR(back->password, tok);
        char *j2 = scheme_to_json(back, 0);
        CHECK_STR(j2, j);
        free(j2);
        /* the token stored opens with the context of the field */
        char aad[SCHEME_AAD_MAX];
        scheme_aad(aad, sizeof aad, back->org, back->email);
        const struct seal_key *ks[1] = {key};
        char *pt = NULL;
        size_t len = 0;
        CHECK(seal_open(ks, 1, back->password, aad, &pt, &len, NULL) == 0);
        CHECK(pt && len == strlen(pw) && memcmp(pt, pw, len) == 0);
        seal_free_secret(pt, len);
        /* ...and not as another scheme's */
        scheme_aad(aad, sizeof aad, "acme", "other@acme.test");
        CHECK(seal_open(ks, 1, back->password, aad, &pt, &len, NULL) ==
              HERR_INVALID);
        scheme_free(back);
    }

    /* the public form: every setting and the state, never the password */
    char *pub = scheme_to_json(s, SCHEME_JSON_PUBLIC);
    CHECK(strstr(pub, "password") == NULL);
    CHECK(strstr(pub, tok) == NULL);
    CHECK(strstr(pub, pw) == NULL);
    CHECK(strstr(pub, "v1:") == NULL);
    const char *want[] = {"\"org\"",
                          "\"email\"",
                          "\"smtp_host\"",
                          "\"smtp_port\"",
                          "\"imap_host\"",
                          "\"imap_port\"",
                          "\"username\"",
                          "\"tls\"",
                          "\"daily_limit\"",
                          "\"minute_limit\"",
                          "\"time_zone\":\"America/Argentina/Salta\"",
                          "\"on_auth_failure\"",
                          "\"sent_folder\"",
                          "\"state\":\"auth_failed\"",
                          "\"state_reason\"",
                          "\"state_at\"",
                          "\"created_at\"",
                          "\"updated_at\""};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK_MSG(strstr(pub, want[i]) != NULL, "%s missing", want[i]);
    /* the public form is not a storable value */
    CHECK(scheme_from_json(pub, strlen(pub), &back, &e) == HERR_INVALID);
    CHECK_STR(e.field, "password");
    free(pub);

    /* unknown members are ignored */
    char *extra = xasprintf("{\"future\":[1,2],%s", j + 1);
    CHECK(scheme_from_json(extra, strlen(extra), &back, &e) == 0);
    scheme_free(back);
    free(extra);
    free(j);
    scheme_free(s);
    free(tok);
}

/* A stored value with one member replaced must be refused, naming it. */
static void
refuse(const char *json, const char *member, const char *value,
       const char *field)
{
    const char *at = strstr(json, member);
    if (at == NULL) {
        CHECK_MSG(0, "%s not in the value", member);
        return;
    }
    const char *vstart = at + strlen(member) + 1;
    const char *vend = vstart;
    if (*vend == '"') {
        vend++;
        while (*vend && *vend != '"')
            vend++;
        vend++;
    } else {
        while (*vend && *vend != ',' && *vend != '}')
            vend++;
    }
    char *bad = xasprintf("%.*s%s%s", (int)(vstart - json), json, value, vend);
    struct scheme *s = NULL;
    struct herr e = {{0}, {0}};
    int rc = scheme_from_json(bad, strlen(bad), &s, &e);
    CHECK_MSG(rc == HERR_INVALID && s == NULL, "%s=%s accepted", member, value);
    CHECK_MSG(strcmp(e.field, field) == 0, "%s=%s: field %s, want %s", member,
              value, e.field, field);
    scheme_free(s);
    free(bad);
}

static void
test_refused(void)
{
    char *tok = seal_for("acme", "billing@acme.test", "hunter2");
    struct scheme_patch p;
    struct scheme *s;
    struct herr e = {{0}, {0}};
    base_patch(&p, tok);
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1000, &s, &e) == 0);
    char *j = scheme_to_json(s, 0);
    scheme_free(s);
    refuse(j, "\"smtp_port\"", "0", "smtp_port");
    refuse(j, "\"smtp_port\"", "70000", "smtp_port");
    refuse(j, "\"smtp_port\"", "\"587\"", "smtp_port");
    refuse(j, "\"smtp_host\"", "\"bad host\"", "smtp_host");
    refuse(j, "\"tls\"", "\"tls\"", "tls");
    refuse(j, "\"tls\"", "\"none\"", "tls");
    refuse(j, "\"on_auth_failure\"", "\"retry\"", "on_auth_failure");
    refuse(j, "\"state\"", "\"broken\"", "state");
    refuse(j, "\"password\"", "\"hunter2\"", "password");
    refuse(j, "\"password\"", "null", "password");
    refuse(j, "\"email\"", "\"nobody\"", "email");
    refuse(j, "\"created_at\"", "\"yesterday\"", "created_at");
    refuse(j, "\"username\"", "\"\"", "username");

    struct scheme *out = NULL;
    CHECK(scheme_from_json("[]", 2, &out, &e) == HERR_INVALID && !out);
    CHECK(scheme_from_json("{", 1, &out, &e) == HERR_INVALID && !out);
    CHECK(scheme_from_json("{}", 2, &out, &e) == HERR_INVALID && !out);
    CHECK_STR(e.field, "org");
    char *big = xcalloc(SCHEME_JSON_MAX + 2, 1);
    memset(big, ' ', SCHEME_JSON_MAX + 1);
    CHECK(scheme_from_json(big, SCHEME_JSON_MAX + 1, &out, &e) == HERR_TOOBIG);
    free(big);
    free(j);
    free(tok);
}

static void
test_time_zone(void)
{
    char *tok = seal_for("acme", "billing@acme.test", "hunter2");
    struct scheme_patch p;
    struct scheme *s = NULL, *back = NULL;
    struct herr e = {{0}, {0}};

    /* absent by default: UTC days, no member */
    base_patch(&p, tok);
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1000, &s, &e) == 0);
    if (s == NULL) {
        free(tok);
        return;
    }
    CHECK(s->time_zone == NULL);
    char *j = scheme_to_json(s, 0);
    CHECK(strstr(j, "time_zone") == NULL);
    free(j);
    scheme_free(s);

    /* set at creation; after minute_limit, before on_auth_failure */
    base_patch(&p, tok);
    p.minute_limit = 20;
    p.time_zone = "Europe/Paris";
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1000, &s, &e) == 0);
    if (s == NULL) {
        free(tok);
        return;
    }
    CHECK_STR(s->time_zone, "Europe/Paris");
    j = scheme_to_json(s, 0);
    const char *ml = strstr(j, "\"minute_limit\":20,");
    const char *tz = strstr(j, "\"time_zone\":\"Europe/Paris\",");
    const char *oa = strstr(j, "\"on_auth_failure\"");
    CHECK(ml && tz && oa && ml < tz && tz < oa);
    CHECK(ml && tz && tz == ml + strlen("\"minute_limit\":20,"));
    CHECK(scheme_from_json(j, strlen(j), &back, &e) == 0);
    if (back) {
        CHECK_STR(back->time_zone, "Europe/Paris");
        char *j2 = scheme_to_json(back, 0);
        CHECK_STR(j2, j);
        free(j2);
        scheme_free(back);
    }
    /* stored values with a bad zone are refused, naming the member */
    refuse(j, "\"time_zone\"", "\"../etc/passwd\"", "time_zone");
    refuse(j, "\"time_zone\"", "\"/etc/localtime\"", "time_zone");
    refuse(j, "\"time_zone\"", "\"Europe//Paris\"", "time_zone");
    refuse(j, "\"time_zone\"", "\"\"", "time_zone");
    refuse(j, "\"time_zone\"", "5", "time_zone");
    refuse(j, "\"time_zone\"", "null", "time_zone");
    char *long_tz = xasprintf("\"%065d\"", 7);
    refuse(j, "\"time_zone\"", long_tz, "time_zone");
    free(long_tz);
    free(j);

    /* a deep copy */
    struct scheme *d = scheme_dup(s);
    CHECK(d->time_zone != s->time_zone);
    CHECK_STR(d->time_zone, "Europe/Paris");
    scheme_free(d);

    /* update: change, refuse a bad one (unchanged), clear */
    scheme_patch_init(&p);
    p.time_zone = "America/New_York";
    CHECK(scheme_apply(s, &p, 2000, &e) == 0);
    CHECK_STR(s->time_zone, "America/New_York");
    CHECK(s->updated_at == 2000 && s->minute_limit == 20);
    p.time_zone = "../../etc/shadow";
    memset(&e, 0, sizeof e);
    CHECK(scheme_apply(s, &p, 3000, &e) == HERR_INVALID);
    CHECK_STR(e.field, "time_zone");
    CHECK(strstr(e.msg, "../../etc/shadow") != NULL);
    CHECK_STR(s->time_zone, "America/New_York");
    CHECK(s->updated_at == 2000);
    scheme_patch_init(&p);
    p.time_zone = "Europe/Paris";
    p.clear_time_zone = 1;
    CHECK(scheme_apply(s, &p, 3000, &e) == HERR_INVALID);
    CHECK_STR(e.field, "time_zone");
    scheme_patch_init(&p);
    p.clear_time_zone = 1;
    CHECK(scheme_apply(s, &p, 4000, &e) == 0);
    CHECK(s->time_zone == NULL && s->updated_at == 4000);
    j = scheme_to_json(s, 0);
    CHECK(strstr(j, "time_zone") == NULL);
    free(j);
    /* clearing an unset zone is accepted, as for the other settings */
    CHECK(scheme_apply(s, &p, 5000, &e) == 0);
    CHECK(s->time_zone == NULL);
    scheme_free(s);

    /* create: bad names refused with the field; nothing to clear */
    const char *bad[] = {"../etc/passwd", "/abs",    "a//b",          "",
                         "Europe/Paris ", "Europe/", "Europe\\Paris", "x.y"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        base_patch(&p, tok);
        p.time_zone = bad[i];
        memset(&e, 0, sizeof e);
        s = NULL;
        CHECK_MSG(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
                          HERR_INVALID &&
                      s == NULL,
                  "'%s' accepted", bad[i]);
        CHECK_STR(e.field, "time_zone");
    }
    char name[TZWIN_NAME_MAX + 2];
    memset(name, 'a', sizeof name);
    name[TZWIN_NAME_MAX] = '\0';
    base_patch(&p, tok);
    p.time_zone = name; /* 64 bytes: the longest */
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) == 0);
    scheme_free(s);
    name[TZWIN_NAME_MAX] = 'a';
    name[TZWIN_NAME_MAX + 1] = '\0';
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "time_zone");
    base_patch(&p, tok);
    p.clear_time_zone = 1;
    CHECK(scheme_create("acme", "billing@acme.test", &p, 1, &s, &e) ==
          HERR_INVALID);
    free(tok);
}

/* The helper mode: see the comment at the top. */
static int
open_check(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: test_scheme open-check KEYFILE ORG EMAIL "
                        "TOKEN < expected-password\n");
        return 2;
    }
    struct seal_key *k = NULL;
    struct herr e = {{0}, {0}};
    if (seal_key_load(argv[2], &k, &e)) {
        printf("key: %s\n", e.msg);
        return 1;
    }
    char want[SCHEME_PASSWORD_MAX + 2];
    if (fgets(want, sizeof want, stdin) == NULL)
        want[0] = '\0';
    want[strcspn(want, "\n")] = '\0';
    char aad[SCHEME_AAD_MAX];
    scheme_aad(aad, sizeof aad, argv[3], argv[4]);
    const struct seal_key *ks[1] = {k};
    char *pt = NULL;
    size_t len = 0;
    int rc = seal_open(ks, 1, argv[5], aad, &pt, &len, &e);
    int ok = rc == 0 && len == strlen(want) && memcmp(pt, want, len) == 0;
    if (rc)
        printf("does not open: %s\n", e.msg);
    else
        puts(ok ? "match" : "no match");
    seal_free_secret(pt, len);
    seal_key_free(k);
    memset(want, 0, sizeof want);
    return ok ? 0 : 1;
}

int
main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "open-check") == 0)
        return open_check(argc, argv);
    unsigned char raw[SEAL_KEY_LEN];
    for (int i = 0; i < SEAL_KEY_LEN; i++)
        raw[i] = (unsigned char)(i * 7 + 3);
    key = seal_key_new(raw);
    test_validators();
    test_create();
    test_apply();
    test_json();
    test_refused();
    test_time_zone();
    seal_key_free(key);
    return T_DONE("scheme");
}
