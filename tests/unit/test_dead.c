/*
 * dead entries: built whole, built in pieces (the streaming path of a job
 * too big to hold), parsed back — the raw job always comes back byte for
 * byte, as "job" when it is text and "job_base64" otherwise.
 */
#include "../../common/dead.h"
#include "../../common/util.h"
#include "t.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;

static uint32_t
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* The entry built from pieces cut at random places. */
static char *
pieces(const char *raw, size_t n, const char *id, int64_t at)
{
    struct dead_scan sc;
    memset(&sc, 0, sizeof sc);
    for (size_t o = 0; o < n;) {
        size_t k = 1 + rnd() % 7;
        if (k > n - o)
            k = n - o;
        dead_scan_feed(&sc, raw + o, k);
        o += k;
    }
    int text = dead_scan_text(&sc);
    CHECK(text == dead_is_text(raw, n));
    char *head = dead_entry_head("invalid", "", "too big", id, at, !text);
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, head);
    free(head);
    struct dead_b64 st;
    memset(&st, 0, sizeof st);
    for (size_t o = 0; o < n;) {
        size_t k = 1 + rnd() % 9;
        if (k > n - o)
            k = n - o;
        if (text)
            dead_entry_text(&b, raw + o, k);
        else
            dead_entry_b64(&b, &st, raw + o, k);
        o += k;
    }
    if (!text)
        dead_entry_b64_end(&b, &st);
    buf_puts(&b, DEAD_ENTRY_TAIL);
    return buf_take(&b, NULL);
}

static void
roundtrip(const char *raw, size_t n, int want_text)
{
    int64_t at = 1790000000123LL;
    char *whole = dead_entry_new(raw, n, "invalid", "", "too big", "j-1", at);
    char *cut = pieces(raw, n, "j-1", at);
    CHECK_STR(cut, whole);
    /* jansson reads it, and the job comes back exactly */
    json_error_t err;
    json_t *o = json_loads(whole, JSON_REJECT_DUPLICATES, &err);
    CHECK_MSG(o != NULL, "%s: %s", whole, err.text);
    CHECK(json_object_get(o, want_text ? "job" : "job_base64") != NULL);
    CHECK(json_object_get(o, want_text ? "job_base64" : "job") == NULL);
    json_decref(o);
    struct dead_entry d;
    CHECK(dead_entry_parse(whole, strlen(whole), &d) == 0);
    CHECK(d.joblen == n && memcmp(d.job, raw, n) == 0);
    CHECK_STR(d.id, "j-1");
    CHECK_STR(d.reason, "invalid");
    CHECK_STR(d.error, "too big");
    CHECK_STR(d.at, "2026-09-21T14:13:20.123Z");
    dead_entry_free(&d);
    free(whole);
    free(cut);
}

int
main(void)
{
    roundtrip("", 0, 1);
    roundtrip("{\"a\":1}", 7, 1);
    const char esc[] = "q\"\\ \b\f\n\r\t \x01\x1f\x7f é € 😀 \xe2\x80\xae";
    roundtrip(esc, sizeof esc - 1, 1);
    roundtrip("a\0b", 3, 0);         /* NUL: base64 */
    roundtrip("\xff\xfe caf", 7, 0); /* not UTF-8 */
    roundtrip("caf\xc3", 4, 0);      /* cut sequence at the end */
    roundtrip("\xc3", 1, 0);
    roundtrip("\xed\xa0\x80", 3, 0); /* a surrogate */
    roundtrip("ab", 2, 1);
    roundtrip("abc", 3, 1);
    /* random bytes, mostly UTF-8 with some breakage, cut at random */
    static const char *atoms[] = {"a",        "\"", "\\", "\n",   "\x01",
                                  "é",        "€",  "😀",  "\xc3", "\x80",
                                  "\xf0\x9f", "{",  " "};
    for (int round = 0; round < 3000; round++) {
        char buf[256];
        size_t n = 0;
        int broken = round % 3 == 0;
        size_t want = rnd() % 60;
        while (n < want) {
            int k = (int)(rnd() % (broken ? 13 : 8));
            size_t l = strlen(atoms[k]);
            if (n + l >= sizeof buf)
                break;
            memcpy(buf + n, atoms[k], l);
            n += l;
        }
        roundtrip(buf, n, dead_is_text(buf, n));
    }
    /* the scan agrees with utf8_check over every single-byte value after
     * every prefix length */
    for (int c = 0; c < 256; c++) {
        char one[3] = {'x', (char)c, 'y'};
        struct dead_scan sc;
        memset(&sc, 0, sizeof sc);
        dead_scan_feed(&sc, one, 2);
        dead_scan_feed(&sc, one + 2, 1);
        CHECK(dead_scan_text(&sc) == dead_is_text(one, 3));
    }
    return T_DONE("dead");
}
