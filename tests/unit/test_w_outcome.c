/* worker/outcome.c's pure parts, through libworker.a: the retry backoff
 * with its random draw chosen by the test. */
#include "../../worker/task.h"
#include "t.h"

#include <stdint.h>

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

int
main(void)
{
    test_backoff_bounds();
    test_backoff_monotonic();
    return T_DONE("test_w_outcome");
}
