/*
 * fuzz_job — job_parse() on arbitrary bytes. Refusals must come with a
 * reason; an accepted job must survive job_to_json(): the canonical form
 * parses again and serializes to the same bytes.
 */
#include "../../common/job.h"
#include "fuzz_common.h"

#include <string.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct job *j = NULL;
    struct herr e = {{0}, {0}};
    int rc = job_parse((const char *)data, size, &j, &e);
    if (rc != 0) {
        FUZZ_ASSERT(j == NULL, "refused (%d) but *out set", rc);
        FUZZ_ASSERT(rc == HERR_INVALID || rc == HERR_TOOBIG,
                    "unexpected code %d", rc);
        FUZZ_ASSERT(e.msg[0] != '\0', "refusal without a message (%d)", rc);
        return 0;
    }
    FUZZ_ASSERT(j != NULL, "accepted but *out NULL");

    char *s1 = job_to_json(j);
    FUZZ_ASSERT(s1 != NULL, "job_to_json gave NULL");
    size_t n1 = strlen(s1);

    struct job *j2 = NULL;
    struct herr e2 = {{0}, {0}};
    rc = job_parse(s1, n1, &j2, &e2);
    FUZZ_ASSERT(rc == 0, "canonical form refused: %d %s: %s\n%s", rc, e2.field,
                e2.msg, s1);

    char *s2 = job_to_json(j2);
    FUZZ_ASSERT(strcmp(s1, s2) == 0, "canonical form not stable:\n%s\n%s", s1,
                s2);

    free(s2);
    job_free(j2);
    free(s1);
    job_free(j);
    return 0;
}
