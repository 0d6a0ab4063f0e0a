/*
 * fuzz_smtpreply — any bytes as a server's reply lines (split at LF, as
 * the client splits them): a line is a reply exactly when it starts with
 * a code of 200..599 and a space, a '-' or its end; the text it gives
 * lies inside the line and holds no CR or LF at its end; EHLO keywords
 * of any bytes only ever set flags.
 */
#include "../../common/smtpreply.h"
#include "fuzz_common.h"

#include <string.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    struct smtpreply_caps caps;
    memset(&caps, 0, sizeof caps);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        struct smtpreply_line l;
        int rc = smtpreply_parse(p, n, &l);
        size_t m = n;
        while (m > 0 && (p[m - 1] == '\n' || p[m - 1] == '\r'))
            m--;
        int want = m >= 3 && p[0] >= '2' && p[0] <= '5' && p[1] >= '0' &&
                   p[1] <= '9' && p[2] >= '0' && p[2] <= '9' &&
                   (m == 3 || p[3] == ' ' || p[3] == '-');
        FUZZ_ASSERT((rc == 0) == want, "rc %d for a line of %zu bytes", rc, n);
        if (rc == 0) {
            FUZZ_ASSERT(l.code >= 200 && l.code <= 599, "code %d", l.code);
            FUZZ_ASSERT(l.text >= p && l.text + l.textlen <= p + m,
                        "text outside the line");
            FUZZ_ASSERT(l.textlen == 0 || (l.text[l.textlen - 1] != '\n' &&
                                           l.text[l.textlen - 1] != '\r'),
                        "line end in the text");
            FUZZ_ASSERT(l.more == (m > 3 && p[3] == '-'), "more %d", l.more);
            smtpreply_ehlo_keyword(l.text, l.textlen, &caps);
        }
        p += n;
    }
    FUZZ_ASSERT((caps.pipelining | caps.starttls | caps.size | caps.auth |
                 caps.auth_plain | caps.auth_login | caps.auth_cram_md5) <= 1,
                "a flag other than 0 or 1");
    FUZZ_ASSERT(caps.auth ||
                    !(caps.auth_plain | caps.auth_login | caps.auth_cram_md5),
                "a mechanism without AUTH");
    return 0;
}
