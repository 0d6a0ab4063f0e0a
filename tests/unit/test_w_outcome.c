/* worker/outcome.c, through libworker.a: the retry backoff with its
 * random draw chosen by the test; the envelope; the recipients' outcomes
 * as the record shows them. */
#include "../../worker/task.h"
#include "job.h"
#include "t.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SEC 1000

static void
test_backoff_bounds(void)
{
    /* base 30 s, cap 1 h: the bound doubles per attempt, then stays */
    const long base = 30, cap = 3600;
    int64_t bound = base * SEC;
    for (int attempt = 1; attempt <= 12; attempt++) {
        int64_t hi = outcome_backoff_ms(base, cap, attempt, UINT32_MAX);
        int64_t mid = outcome_backoff_ms(base, cap, attempt, 1u << 31);
        CHECK_MSG(hi < bound && hi >= bound - 1, "attempt %d: %lld vs %lld",
                  attempt, (long long)hi, (long long)bound);
        CHECK_MSG(mid == bound / 2, "attempt %d: mid %lld", attempt,
                  (long long)mid);
        CHECK(outcome_backoff_ms(base, cap, attempt, 0) == 1 * SEC);
        bound = bound * 2 > cap * SEC ? cap * SEC : bound * 2;
    }
    /* attempt 1 and 0 (a take that was no attempt) both use the base */
    CHECK(outcome_backoff_ms(base, cap, 0, UINT32_MAX) ==
          outcome_backoff_ms(base, cap, 1, UINT32_MAX));
    /* far past the cap: no overflow, the cap */
    int64_t far = outcome_backoff_ms(base, cap, 1000000, UINT32_MAX);
    CHECK(far < cap * SEC && far >= cap * SEC - 1);
    /* a cap below the base: the cap */
    CHECK(outcome_backoff_ms(600, 60, 1, UINT32_MAX) < 60 * SEC);
}

/* full jitter: the delay grows with the draw and never below a second */
static void
test_backoff_monotonic(void)
{
    int64_t last = 0;
    for (uint64_t r = 0; r <= UINT32_MAX; r += 0x00FFFFFFu) {
        int64_t d = outcome_backoff_ms(30, 3600, 5, (uint32_t)r);
        CHECK(d >= 1 * SEC && d >= last && d < 480 * SEC);
        last = d;
    }
}

static struct job *
job_of(const char *json)
{
    struct job *j = NULL;
    struct herr e = {{0}, {0}};
    CHECK_MSG(job_parse(json, strlen(json), &j, &e) == 0, "%s: %s", e.field,
              e.msg);
    return j;
}

/* The status and reply of recipient `email` in the record's JSON. */
static void
rcpt_is(const char *js, const char *email, const char *status,
        const char *reply)
{
    json_t *a = json_loads(js, 0, NULL);
    CHECK_MSG(json_is_array(a), "%s", js);
    size_t i;
    json_t *o;
    int found = 0;
    json_array_foreach(a, i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, "email")), email))
            continue;
        found = 1;
        CHECK_MSG(strcmp(json_string_value(json_object_get(o, "status")),
                         status) == 0,
                  "%s: %s", email, js);
        const char *r = json_string_value(json_object_get(o, "reply"));
        if (reply)
            CHECK_MSG(r && strcmp(r, reply) == 0, "%s: %s", email, js);
        else
            CHECK_MSG(r == NULL, "%s: %s", email, js);
    }
    CHECK_MSG(found, "%s not in %s", email, js);
    json_decref(a);
}

/* to, cc, bcc in order, each address once (case-insensitively), without
 * those an earlier attempt delivered to */
static void
test_envelope(void)
{
    struct job *j = job_of(
        "{\"id\":\"e1\",\"type\":\"notice\",\"org\":\"acme\","
        "\"account\":\"a\",\"from\":\"f@acme.test\",\"subject\":\"s\","
        "\"text\":\"t\",\"to\":[{\"email\":\"ann@x.test\"},"
        "{\"email\":\"bob@x.test\"}],\"cc\":[{\"email\":\"BOB@x.test\"},"
        "{\"email\":\"cy@x.test\"}],\"bcc\":[{\"email\":\"dee@x.test\"}]}");
    if (j == NULL)
        return;
    struct task t;
    memset(&t, 0, sizeof t);
    t.job = j;
    outcome_build_envelope(&t);
    CHECK(t.nrcpt == 4);
    if (t.nrcpt == 4) {
        CHECK_STR(t.rcpt[0], "ann@x.test");
        CHECK_STR(t.rcpt[1], "bob@x.test");
        CHECK_STR(t.rcpt[2], "cy@x.test");
        CHECK_STR(t.rcpt[3], "dee@x.test");
    }
    free(t.rcpt);

    /* ann and cy accepted it in an earlier attempt */
    char *acc[2] = {"ANN@x.test", "cy@x.test"};
    t.prev_acc = acc;
    t.nprev_acc = 2;
    outcome_build_envelope(&t);
    CHECK(t.nrcpt == 2);
    if (t.nrcpt == 2) {
        CHECK_STR(t.rcpt[0], "bob@x.test");
        CHECK_STR(t.rcpt[1], "dee@x.test");
    }

    /* the record before any attempt: ann and cy accepted, the rest
     * pending */
    char *js = outcome_rcpt_json(&t, NULL);
    rcpt_is(js, "ann@x.test", "accepted", "accepted in an earlier attempt");
    rcpt_is(js, "bob@x.test", "pending", NULL);
    rcpt_is(js, "dee@x.test", "pending", NULL);
    free(js);

    /* a transaction: bob refused for now (4xx), dee for good (5xx), the
     * message accepted: deferred, refused */
    struct mail_rcpt_result rr[2] = {{.code = 452, .reply = "452 4.5.3 later"},
                                     {.code = 550, .reply = "550 no such"}};
    struct mail_result r;
    memset(&r, 0, sizeof r);
    r.cls = MAIL_OK;
    r.rcpt = rr;
    r.nrcpt = 2;
    t.rcpt_json = outcome_rcpt_json(&t, &r);
    rcpt_is(t.rcpt_json, "bob@x.test", "deferred", "452 4.5.3 later");
    rcpt_is(t.rcpt_json, "dee@x.test", "refused", "550 no such");
    rcpt_is(t.rcpt_json, "cy@x.test", "accepted",
            "accepted in an earlier attempt");

    /* then the job fails for good: what was open fails with the job's
     * last reply; accepted and refused stay */
    t.reply = "421 4.3.0 gone";
    outcome_rcpt_final(&t, "gave up");
    rcpt_is(t.rcpt_json, "bob@x.test", "failed", "452 4.5.3 later");
    rcpt_is(t.rcpt_json, "dee@x.test", "refused", "550 no such");
    rcpt_is(t.rcpt_json, "ann@x.test", "accepted",
            "accepted in an earlier attempt");
    free(t.rcpt_json);
    free(t.rcpt);
    job_free(j);
}

int
main(void)
{
    test_backoff_bounds();
    test_backoff_monotonic();
    test_envelope();
    return T_DONE("test_w_outcome");
}
