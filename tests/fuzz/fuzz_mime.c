/*
 * fuzz_mime — mime_build() on every job job_parse() accepts. The message
 * must have CRLF line ends only, no line over 998 octets, no NUL, a
 * 7-bit top-level header block in which every line is a field or a
 * continuation and none is a Bcc field (bodies may hold "Bcc:" lines:
 * 7bit text is copied as it is), and the same bytes on a rebuild.
 */
#include "../../common/job.h"
#include "../../common/mime.h"
#include "../../common/util.h"
#include "fuzz_common.h"

#include <string.h>
#include <strings.h>

#define DATE_MS INT64_C(1795705087000) /* 2026-11-26T14:58:07Z */

static void
check_message(const char *m, size_t n)
{
    FUZZ_ASSERT(n >= 2 && m[n - 2] == '\r' && m[n - 1] == '\n',
                "message does not end with CRLF");
    int in_header = 1;
    size_t st = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)m[i];
        FUZZ_ASSERT(c != '\0', "NUL at byte %zu", i);
        if (c == '\r')
            FUZZ_ASSERT(i + 1 < n && m[i + 1] == '\n', "bare CR at byte %zu",
                        i);
        if (c != '\n')
            continue;
        FUZZ_ASSERT(i > 0 && m[i - 1] == '\r', "bare LF at byte %zu", i);
        size_t len = i - 1 - st; /* without the CRLF */
        const char *line = m + st;
        FUZZ_ASSERT(len <= 998, "line of %zu octets at byte %zu", len, st);
        if (in_header) {
            FUZZ_ASSERT(len < 4 || strncasecmp(line, "Bcc:", 4) != 0,
                        "Bcc line at byte %zu", st);
            if (len == 0) {
                in_header = 0;
            } else if (line[0] == ' ' || line[0] == '\t') {
                FUZZ_ASSERT(st > 0, "message starts with a continuation");
            } else {
                const char *colon = memchr(line, ':', len);
                FUZZ_ASSERT(colon != NULL && colon > line,
                            "header line without a field name: %.*s",
                            (int)(len > 80 ? 80 : len), line);
                for (const char *p = line; p < colon; p++)
                    FUZZ_ASSERT(*p > ' ' && *p < 127,
                                "bad byte in a field name: %.*s",
                                (int)(colon - line), line);
            }
            for (size_t k = 0; k < len; k++)
                FUZZ_ASSERT((unsigned char)line[k] < 128,
                            "8-bit byte in the header block at %zu", st + k);
        }
        st = i + 1;
    }
    FUZZ_ASSERT(!in_header, "no end of the header block");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct job *j = NULL;
    if (job_parse((const char *)data, size, &j, NULL) != 0)
        return 0;
    if (j->id == NULL)
        j->id = xstrdup("fuzz-job.1"); /* mime_build needs one */

    struct mime_opts o = {
        .from = {.name = j->from_name, .email = j->from},
        .reply_to = j->reply_to,
        .msgid_domain = "mail.acme.test",
        .date_ms = DATE_MS,
    };
    char *out = NULL;
    size_t n = 0;
    struct herr e = {{0}, {0}};
    int rc = mime_build(j, &o, &out, &n, &e);
    /* the validator and the builder agree on what can be encoded */
    FUZZ_ASSERT(rc == 0 || rc == HERR_TOOBIG,
                "valid job refused by mime_build: %d %s: %s", rc, e.field,
                e.msg);
    if (rc == 0) {
        FUZZ_ASSERT(out != NULL && strlen(out) == n,
                    "length %zu does not match the bytes", n);
        check_message(out, n);

        char *again = NULL;
        size_t n2 = 0;
        rc = mime_build(j, &o, &again, &n2, NULL);
        FUZZ_ASSERT(rc == 0 && n2 == n && memcmp(out, again, n) == 0,
                    "a rebuild gave other bytes");
        free(again);
    } else {
        FUZZ_ASSERT(out == NULL && n == 0, "refused but output set");
    }
    free(out);
    job_free(j);
    return 0;
}
