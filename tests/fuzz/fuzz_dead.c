/*
 * fuzz_dead — dead-letter entries of any bytes: the entry built in pieces
 * cut where the input says (the worker's streaming path for a job over
 * the size limit) equals the entry built whole, parses as JSON, and gives
 * the raw bytes back exactly ("job" for text, "job_base64" otherwise).
 * The first input byte chooses the piece size (1..256).
 */
#include "../../common/dead.h"
#include "../../common/util.h"
#include "fuzz_common.h"

#include <string.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t piece = (size_t)data[0] + 1;
    const char *raw = (const char *)data + 1;
    size_t n = size - 1;
    char *whole = dead_entry_new(raw, n, "invalid", "", "too big", "f-1", 0);

    struct dead_scan sc;
    memset(&sc, 0, sizeof sc);
    for (size_t o = 0; o < n; o += piece)
        dead_scan_feed(&sc, raw + o, n - o < piece ? n - o : piece);
    int text = dead_scan_text(&sc);
    FUZZ_ASSERT(text == dead_is_text(raw, n), "scan says %d", text);
    char *head = dead_entry_head("invalid", "", "too big", "f-1", 0, !text);
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, head);
    free(head);
    struct dead_b64 st;
    memset(&st, 0, sizeof st);
    size_t tl = 0;
    for (size_t o = 0; o < n; o += piece) {
        size_t k = n - o < piece ? n - o : piece;
        if (text) {
            tl += dead_entry_text_len(raw + o, k);
            dead_entry_text(&b, raw + o, k);
        } else {
            dead_entry_b64(&b, &st, raw + o, k);
        }
    }
    if (!text)
        dead_entry_b64_end(&b, &st);
    buf_puts(&b, DEAD_ENTRY_TAIL);
    FUZZ_ASSERT(strcmp(b.p, whole) == 0, "pieces differ from the whole");
    struct dead_entry d;
    FUZZ_ASSERT(dead_entry_parse(whole, strlen(whole), &d) == 0, "unparsable");
    FUZZ_ASSERT(d.joblen == n && memcmp(d.job, raw, n) == 0, "job changed");
    dead_entry_free(&d);
    buf_free(&b);
    free(whole);
    return 0;
}
