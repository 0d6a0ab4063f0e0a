/*
 * jfast against jansson: the same verdict and the same tree for every
 * input — the job corpus and tens of thousands of mutations of it.
 */
#include "../../common/jfast.h"
#include "../../common/util.h"
#include "t.h"

#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
utf8_valid(const unsigned char *s, size_t n)
{
    return utf8_check(s, n) == n;
}

static int disagreements;

/* jfast_dumpb writes what json_dumps(JSON_COMPACT) writes. */
static void
same_dump(const json_t *v, const char *what)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    struct buf b;
    buf_init(&b, 0);
    int rc = jfast_dumpb(v, &b);
    int same = want && rc == 0 && strcmp(b.p, want) == 0;
    if (!same && disagreements++ < 5)
        fprintf(stderr, "%s: json_dumps %.120s, jfast_dumpb %.120s\n", what,
                want ? want : "(null)", b.p ? b.p : "(null)");
    CHECK(same);
    free(want);
    buf_free(&b);
}

/* Both parsers on the same bytes: same verdict, same value. */
static void
compare(const char *buf, size_t len, const char *what)
{
    if (!utf8_valid((const unsigned char *)buf, len))
        return; /* jfast's contract: callers check UTF-8 first */
    json_error_t e1, e2;
    json_t *a =
        json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e1);
    json_t *b = jfast_loadb(buf, len, &e2);
    int same = (a == NULL) == (b == NULL) && (a == NULL || json_equal(a, b));
    if (!same && disagreements++ < 5)
        fprintf(stderr, "%s: jansson %s (%s), jfast %s (%s): %.*s\n", what,
                a ? "accepts" : "refuses", a ? "" : e1.text,
                b ? "accepts" : "refuses", b ? "" : e2.text,
                (int)(len > 120 ? 120 : len), buf);
    CHECK(same);
    if (a && b)
        same_dump(b, what);
    json_decref(a);
    json_decref(b);
}

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

static uint64_t rng = 88172645463325252ull;

static uint64_t
next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Flip, insert or delete a few bytes, mostly JSON punctuation. */
static void
mutate(const char *src, size_t n, char *dst, size_t *m)
{
    static const char alphabet[] = "{}[]\",:\\u0123456789.eE+-tfnrl \n\tabcdAF";
    memcpy(dst, src, n);
    *m = n;
    int edits = 1 + (int)(next() % 3);
    for (int k = 0; k<edits && * m> 0; k++) {
        size_t at = (size_t)(next() % *m);
        char c = alphabet[next() % (sizeof alphabet - 1)];
        switch (next() % 3) {
        case 0:
            dst[at] = c;
            break;
        case 1:
            memmove(dst + at + 1, dst + at, *m - at);
            dst[at] = c;
            (*m)++;
            break;
        default:
            memmove(dst + at, dst + at + 1, *m - at - 1);
            (*m)--;
        }
    }
}

static void
corpus_dir(const char *dir, int mutations)
{
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "cannot open %s", dir);
    if (d == NULL)
        return;
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 5 || strcmp(de->d_name + nl - 4, ".job") != 0)
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        size_t len;
        char *b = slurp(path, &len);
        if (b == NULL)
            continue;
        files++;
        compare(b, len, de->d_name);
        char *m = malloc(len + 8);
        for (int i = 0; i < mutations; i++) {
            size_t ml;
            mutate(b, len, m, &ml);
            compare(m, ml, de->d_name);
        }
        free(m);
        free(b);
    }
    closedir(d);
    CHECK(files > 0);
}

static void
cases(void)
{
    const char *v[] = {
        "{}",
        "[]",
        "0",
        "-0",
        "1.5e3",
        "-1E-2",
        "true",
        "false",
        "null",
        "\"a\\u00e9\\ud83d\\ude00\\n\\t\\/\"",
        "  {\"a\" : [1, 2, {\"b\": null}] } ",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "1e400",
        "1e-400",
        "01",
        "1.",
        ".5",
        "+1",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\\x41\"",
        "\"a\tb\"",
        "{\"a\":1,\"a\":2}",
        "{\"a\":1,}",
        "[1,]",
        "[1 2]",
        "{\"a\" 1}",
        "{1:2}",
        "tru",
        "nul",
        "[",
        "{",
        "\"abc",
        "{} x",
        "",
        "   ",
        "{\"k\":\"v\"}{}",
        "[[[[[]]]]]",
        "\"\\uD83D\\uDE00\"",
        "1e5x",
        "{\"\":0}",
        "{\"a\\u0062\":1,\"ab\":2}",
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        compare(v[i], strlen(v[i]), v[i]);
    /* jfast refuses what jansson refuses beyond its own depth limit too */
    size_t n = 2 * (JFAST_DEPTH_MAX + 10);
    char *deep = malloc(n);
    memset(deep, '[', n / 2);
    memset(deep + n / 2, ']', n / 2);
    json_error_t e;
    CHECK(jfast_loadb(deep, n, &e) == NULL);
    CHECK(strstr(e.text, "depth") != NULL);
    free(deep);
    /* at most JFAST_VALUES_MAX values: exactly that many load, one more
     * does not ("[{},{},…]": the array is one of them) */
    for (int extra = 0; extra <= 1; extra++) {
        size_t k = JFAST_VALUES_MAX - 1 + (size_t)extra;
        char *many = malloc(3 * k + 2);
        size_t o = 0;
        many[o++] = '[';
        for (size_t i = 0; i < k; i++) {
            memcpy(many + o, "{},", 3);
            o += 3;
        }
        many[o - 1] = ']';
        json_t *got = jfast_loadb(many, o, &e);
        if (extra) {
            CHECK(got == NULL && strstr(e.text, "too many values") != NULL);
        } else {
            CHECK(got != NULL && json_array_size(got) == k);
            json_decref(got);
        }
        free(many);
    }
    /* error positions: line and column from 1 */
    CHECK(jfast_loadb("{\n  \"a\": x}", 11, &e) == NULL);
    CHECK(e.line == 2 && e.column == 8);
    CHECK(jfast_loadb("{\"type\":", 8, &e) == NULL && e.column == 8);
}

/* The dump of values no parse gives: strings with NUL and every control
 * character, reals at the edges, a limited buffer. */
static void
dump_cases(void)
{
    char ctl[40];
    for (int i = 0; i < 32; i++)
        ctl[i] = (char)i;
    memcpy(ctl + 32, "\"\\/\x7f\xc3\xa9z", 8);
    json_t *o = json_object();
    json_object_set_new(o, "ctl", json_stringn(ctl, 40));
    json_object_set_new(o, "k\"\n", json_string("v"));
    static const double reals[] = {0.0,
                                   -0.0,
                                   1.0,
                                   0.1,
                                   1e20,
                                   1e21,
                                   1e-5,
                                   1e-7,
                                   -2.5e-300,
                                   1.7976931348623157e308,
                                   123456789012.5,
                                   3.0e100,
                                   5e-324};
    json_t *a = json_array();
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
        json_array_append_new(a, json_real(reals[i]));
    json_array_append_new(a, json_integer(INT64_MIN));
    json_array_append_new(a, json_integer(INT64_MAX));
    json_array_append_new(a, json_object());
    json_array_append_new(a, json_array());
    json_object_set_new(o, "a", a);
    same_dump(o, "dump_cases");
    json_t *empty = json_string("");
    same_dump(empty, "empty string");
    json_decref(empty);
    struct buf b;
    buf_init(&b, 16);
    CHECK(jfast_dumpb(o, &b) != 0);
    buf_free(&b);
    json_decref(o);
}

int
main(void)
{
    dump_cases();
    const char *root = getenv("HERALD_CORPUS");
    char dir[1024];
    cases();
    snprintf(dir, sizeof dir, "%s/valid", root ? root : "tests/corpus");
    corpus_dir(dir, 3000);
    snprintf(dir, sizeof dir, "%s/hostile", root ? root : "tests/corpus");
    corpus_dir(dir, 50);
    return T_DONE("jfast");
}
