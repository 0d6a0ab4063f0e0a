/*
 * fuzz_jfast — jfast_loadb() against jansson's json_loadb() (with
 * JSON_REJECT_DUPLICATES | JSON_DECODE_ANY): the same verdict, equal
 * trees on accept, and jfast_dumpb's bytes those of json_dumps. Inputs that are
 * not UTF-8 are skipped (jfast's callers check that first). The one documented
 * difference: jfast refuses nesting deeper than JFAST_DEPTH_MAX, where
 * jansson's own limit is higher, and more than JFAST_VALUES_MAX values, where
 * jansson has no limit. A raw NUL byte is never JSON (not whitespace, not
 * allowed in a string), so jfast must refuse any input holding one; jansson is
 * not asked, as it skips a NUL after a number ("[12\0]" loads as [12],
 * akheron/jansson issue 331, JSONTestSuite n_multidigit_number_then_00).
 */
#include "../../common/jfast.h"
#include "../../common/util.h"
#include "fuzz_common.h"

#include <jansson.h>
#include <string.h>

/* Values in a tree, itself included. */
static size_t
count(json_t *v)
{
    size_t n = 1;
    size_t i;
    const char *key;
    json_t *x;
    if (json_is_array(v))
        json_array_foreach(v, i, x) n += count(x);
    else if (json_is_object(v))
        json_object_foreach(v, key, x) n += count(x);
    return n;
}

/* Nesting depth of a value: 0 for a scalar, 1 for [] or {}. */
static size_t
depth(json_t *v)
{
    size_t d = 0;
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            size_t k = depth(x);
            if (k > d)
                d = k;
        }
        return d + 1;
    }
    if (json_is_object(v)) {
        const char *key;
        json_t *x;
        json_object_foreach(v, key, x)
        {
            size_t k = depth(x);
            if (k > d)
                d = k;
        }
        return d + 1;
    }
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    if (utf8_check(data, size) != size)
        return 0;
    json_error_t e1, e2;
    if (memchr(data, '\0', size) != NULL) {
        json_t *v = jfast_loadb(buf, size, &e2);
        FUZZ_ASSERT(v == NULL, "jfast accepts a raw NUL byte");
        return 0;
    }
    json_t *a =
        json_loadb(buf, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e1);
    json_t *b = jfast_loadb(buf, size, &e2);
    if (a != NULL && b == NULL && strstr(e2.text, "depth") != NULL) {
        FUZZ_ASSERT(depth(a) > JFAST_DEPTH_MAX,
                    "jfast: %s, but the depth is %zu", e2.text, depth(a));
    } else if (a != NULL && b == NULL &&
               strstr(e2.text, "too many values") != NULL) {
        FUZZ_ASSERT(count(a) > JFAST_VALUES_MAX, "jfast: %s, but there are %zu",
                    e2.text, count(a));
    } else {
        FUZZ_ASSERT((a == NULL) == (b == NULL),
                    "jansson %s (%s), jfast %s (%s)", a ? "accepts" : "refuses",
                    a ? "" : e1.text, b ? "accepts" : "refuses",
                    b ? "" : e2.text);
        FUZZ_ASSERT(a == NULL || json_equal(a, b),
                    "both accept, different values");
        if (a != NULL) {
            /* and jfast_dumpb writes what json_dumps writes */
            char *want = json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY);
            struct buf d;
            buf_init(&d, 0);
            FUZZ_ASSERT(jfast_dumpb(b, &d) == 0 && want != NULL &&
                            strcmp(d.p, want) == 0,
                        "dumps differ: %.80s / %.80s", want ? want : "-",
                        d.p ? d.p : "-");
            free(want);
            buf_free(&d);
        }
    }
    if (b == NULL) {
        FUZZ_ASSERT(e2.text[0] != '\0', "refusal without a message");
        FUZZ_ASSERT(e2.line >= 1 && e2.column >= 1 && e2.position >= 0 &&
                        (size_t)e2.position <= size,
                    "bad error position: line %d column %d position %d",
                    e2.line, e2.column, e2.position);
    }
    json_decref(a);
    json_decref(b);
    return 0;
}
