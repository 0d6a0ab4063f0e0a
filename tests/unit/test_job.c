#include "../../common/job.h"
#include "../../common/util.h"
#include "t.h"

#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

/* ---- helpers ----------------------------------------------------------- */

static const char *
corpus_dir(void)
{
    const char *d = getenv("HERALD_CORPUS");
    return d && *d ? d : "tests/corpus";
}

static char *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct buf b;
    buf_init(&b, 0);
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_append(&b, tmp, n);
    fclose(f);
    return buf_take(&b, len);
}

/* The smallest valid job; tests change one member at a time. */
static json_t *
base(void)
{
    json_error_t jerr;
    return json_loads(
        "{\"type\":\"receipt\",\"org\":\"acme\","
        "\"account\":\"acct-1\",\"from\":\"billing@acme.example\","
        "\"to\":[\"alice@example.com\"],"
        "\"subject\":\"Your receipt\",\"text\":\"Thanks.\"}",
        0, &jerr);
}

static json_t *
with(json_t *j, const char *key, json_t *v)
{
    if (v == NULL)
        json_object_del(j, key);
    else
        json_object_set_new(j, key, v);
    return j;
}

static char *
dump(json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Parses `j` (taken) and returns the job, or NULL with *rc and e set. */
static struct job *
parse_json(json_t *j, int *rc, struct herr *e)
{
    char *s = dump(j);
    json_decref(j);
    struct job *out = (struct job *)1;
    *rc = job_parse(s, strlen(s), &out, e);
    free(s);
    return out;
}

static void
check_bad_raw(int line, const char *raw, size_t len, int code,
              const char *field, const char *sub)
{
    struct herr e;
    memset(&e, 0, sizeof e);
    struct job *j = (struct job *)1;
    int rc = job_parse(raw, len, &j, &e);
    CHECK_MSG(rc == code, "line %d: rc %d, want %d (%s: %s)", line, rc, code,
              e.field, e.msg);
    CHECK_MSG(j == NULL, "line %d: job not NULL on failure", line);
    if (j != NULL && j != (struct job *)1)
        job_free(j);
    CHECK_MSG(strcmp(e.field, field) == 0, "line %d: field \"%s\", want \"%s\"",
              line, e.field, field);
    CHECK_MSG(strstr(e.msg, sub) != NULL, "line %d: msg \"%s\" lacks \"%s\"",
              line, e.msg, sub);
}

static void
check_bad(int line, json_t *j, const char *field, const char *sub)
{
    char *s = dump(j);
    json_decref(j);
    check_bad_raw(line, s, strlen(s), HERR_INVALID, field, sub);
    free(s);
}

static struct job *
check_good(int line, json_t *j)
{
    struct herr e = {{0}, {0}};
    int rc;
    struct job *out = parse_json(j, &rc, &e);
    CHECK_MSG(rc == 0 && out != NULL, "line %d: rejected: %s: %s", line,
              e.field, e.msg);
    return rc == 0 ? out : NULL;
}

#define BAD(j, field, sub) check_bad(__LINE__, (j), (field), (sub))
#define BADRAW(s, field, sub)                                                  \
    check_bad_raw(__LINE__, (s), sizeof(s) - 1, HERR_INVALID, (field), (sub))
#define GOOD(j) check_good(__LINE__, (j))
#define STR(s) json_string(s)

static json_t *
str_rep(char c, size_t n)
{
    char *s = xmalloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    json_t *v = json_string(s);
    free(s);
    return v;
}

static json_t *
addr_list(const char *prefix, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        char *s = xasprintf("%s%zu@example.com", prefix, i);
        json_array_append_new(a, json_string(s));
        free(s);
    }
    return a;
}

static int
streq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static int
addrs_eq(const struct job_addr *a, size_t na, const struct job_addr *b,
         size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (!streq(a[i].email, b[i].email) || !streq(a[i].name, b[i].name))
            return 0;
    return 1;
}

static int
job_eq(const struct job *a, const struct job *b)
{
    if (!streq(a->id, b->id) || !streq(a->type, b->type) ||
        !streq(a->org, b->org) || !streq(a->account, b->account) ||
        !streq(a->from, b->from) || !streq(a->from_name, b->from_name) ||
        !streq(a->reply_to, b->reply_to) ||
        !addrs_eq(a->to, a->nto, b->to, b->nto) ||
        !addrs_eq(a->cc, a->ncc, b->cc, b->ncc) ||
        !addrs_eq(a->bcc, a->nbcc, b->bcc, b->nbcc) ||
        !streq(a->subject, b->subject) || !streq(a->text, b->text) ||
        !streq(a->html, b->html) ||
        !streq(a->template_name, b->template_name) ||
        !streq(a->data_json, b->data_json) || a->send_at_ms != b->send_at_ms ||
        a->priority != b->priority || !streq(a->meta_json, b->meta_json) ||
        a->nattachments != b->nattachments || a->nheaders != b->nheaders)
        return 0;
    for (size_t i = 0; i < a->nattachments; i++) {
        const struct job_attachment *x = &a->attachments[i],
                                    *y = &b->attachments[i];
        if (!streq(x->filename, y->filename) ||
            !streq(x->content_type, y->content_type) || x->len != y->len ||
            (x->len && memcmp(x->data, y->data, x->len) != 0))
            return 0;
    }
    for (size_t i = 0; i < a->nheaders; i++)
        if (!streq(a->headers[i].name, b->headers[i].name) ||
            !streq(a->headers[i].value, b->headers[i].value))
            return 0;
    return 1;
}

/* job -> JSON -> job must give an equal job and the same JSON again. */
static void
check_round_trip(const char *what, const struct job *j)
{
    char *s1 = job_to_json(j);
    struct job *k = NULL;
    struct herr e = {{0}, {0}};
    int rc = job_parse(s1, strlen(s1), &k, &e);
    CHECK_MSG(rc == 0, "%s: canonical form rejected: %s: %s", what, e.field,
              e.msg);
    if (rc == 0) {
        CHECK_MSG(job_eq(j, k), "%s: re-parsed job differs", what);
        char *s2 = job_to_json(k);
        CHECK_MSG(strcmp(s1, s2) == 0, "%s: canonical form not stable", what);
        free(s2);
        job_free(k);
    }
    free(s1);
}

/* ---- tests ------------------------------------------------------------- */

static void
test_minimal(void)
{
    struct job *j = GOOD(base());
    if (j == NULL)
        return;
    CHECK(j->id == NULL);
    CHECK_STR(j->type, "receipt");
    CHECK_STR(j->org, "acme");
    CHECK_STR(j->account, "acct-1");
    CHECK_STR(j->from, "billing@acme.example");
    CHECK(j->from_name == NULL && j->reply_to == NULL);
    CHECK(j->nto == 1 && j->ncc == 0 && j->nbcc == 0);
    CHECK(j->cc == NULL && j->bcc == NULL);
    CHECK_STR(j->to[0].email, "alice@example.com");
    CHECK(j->to[0].name == NULL);
    CHECK_STR(j->subject, "Your receipt");
    CHECK_STR(j->text, "Thanks.");
    CHECK(j->html == NULL && j->template_name == NULL && j->data_json == NULL);
    CHECK(j->nattachments == 0 && j->attachments == NULL);
    CHECK(j->send_at_ms == 0);
    CHECK(j->priority == JOB_PRIO_NORMAL);
    CHECK(j->nheaders == 0 && j->headers == NULL && j->meta_json == NULL);
    check_round_trip("minimal", j);
    job_free(j);
    job_free(NULL);

    /* not NUL-terminated input: parse a prefix of a longer buffer */
    const char *s = "{\"type\":\"t\",\"org\":\"o\",\"account\":\"a\","
                    "\"from\":\"f@x.example\",\"to\":[\"t@x.example\"],"
                    "\"subject\":\"s\",\"text\":\"b\"}GARBAGE";
    struct job *k = NULL;
    CHECK(job_parse(s, strlen(s) - 7, &k, NULL) == 0);
    CHECK(k != NULL);
    job_free(k);
    CHECK(job_parse(s, strlen(s), &k, NULL) == HERR_INVALID);
    CHECK(k == NULL);
}

static void
test_size_cap(void)
{
    /* one byte over: refused before anything looks at the bytes */
    size_t n = JOB_MAX_BYTES + 1;
    char *big = xmalloc(n);
    memset(big, '{', n);
    struct herr e;
    struct job *j = (struct job *)1;
    CHECK(job_parse(big, n, &j, &e) == HERR_TOOBIG);
    CHECK(j == NULL);
    CHECK_STR(e.field, "");
    CHECK(strstr(e.msg, "10485761 bytes, at most 10485760") != NULL);
    free(big);

    /* exactly at the cap, already canonical (id and priority present) */
    json_t *b = base();
    with(b, "id", STR("cap-1"));
    with(b, "priority", STR("normal"));
    with(b, "text", STR(""));
    char *s = dump(b);
    size_t pad = JOB_MAX_BYTES - strlen(s);
    free(s);
    with(b, "text", str_rep('x', pad));
    s = dump(b);
    CHECK(strlen(s) == JOB_MAX_BYTES);
    j = NULL;
    int rc = job_parse(s, strlen(s), &j, &e);
    CHECK_MSG(rc == 0, "%s: %s", e.field, e.msg);
    if (j) {
        CHECK(strlen(j->text) == pad);
        char *c = job_to_json(j);
        CHECK(strlen(c) == strlen(s)); /* same members, other order */
        free(c);
        job_free(j);
    }
    free(s);

    /* at the cap without an id: the canonical form would not fit */
    json_object_del(b, "id");
    with(b, "text", str_rep('x', pad + 13)); /* "id":"cap-1", */
    s = dump(b);
    CHECK(strlen(s) == JOB_MAX_BYTES);
    check_bad_raw(__LINE__, s, strlen(s), HERR_TOOBIG, "",
                  "bytes in canonical form, at most 10485760");
    free(s);
    json_decref(b);

    /* reals grow when re-encoded: 90,000 of "0.1" (within the parser's
     * JFAST_VALUES_MAX) beside 9 MiB of text are over 10 MiB again */
    b = base();
    json_t *arr = json_array();
    for (int i = 0; i < 90000; i++)
        json_array_append_new(arr, json_real(0.1));
    with(b, "meta", json_pack("{s:o}", "r", arr));
    with(b, "text", str_rep('x', 9 * 1024 * 1024));
    s = json_dumps(b, JSON_COMPACT | JSON_REAL_PRECISION(1));
    CHECK(strlen(s) < JOB_MAX_BYTES);
    check_bad_raw(__LINE__, s, strlen(s), HERR_TOOBIG, "", "in canonical form");
    free(s);
    json_decref(b);
}

/* util_escape (common/util.h): what heraldctl and herald-enqueue print for
 * people. Tested here beside the job rules it shares utf8_decode and
 * utf8_is_bidi with. */
static char *
esc(const char *s, size_t len, unsigned flags, size_t max, size_t *used,
    size_t *chars)
{
    struct buf b;
    buf_init(&b, 0);
    size_t u = util_escape(&b, s, len, flags, max, chars);
    if (used)
        *used = u;
    return buf_take(&b, NULL);
}

#define ESC(in, flags, want)                                                   \
    do {                                                                       \
        size_t u_, c_;                                                         \
        char *g_ = esc((in), sizeof(in) - 1, (flags), SIZE_MAX, &u_, &c_);     \
        CHECK_STR(g_, (want));                                                 \
        CHECK_MSG(u_ == sizeof(in) - 1, "consumed %zu of %zu", u_,             \
                  sizeof(in) - 1);                                             \
        free(g_);                                                              \
    } while (0)

static void
test_escape(void)
{
    /* printable text, non-ASCII included, and backslashes stay */
    ESC("Hello, r\xc3\xa9sum\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x93\x84 C:\\t", 0,
        "Hello, r\xc3\xa9sum\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x93\x84 C:\\t");
    /* C0 and DEL */
    ESC("\x1b]0;pwned\x07|\x1b[2J|\x7f|\x01", 0,
        "\\x1b]0;pwned\\x07|\\x1b[2J|\\x7f|\\x01");
    ESC("a\0b", 0, "a\\x00b");
    ESC("a\tb\nc\rd\r\ne", 0, "a\\tb\\nc\\rd\\r\\ne");
    /* bodies keep LF and CR LF as line breaks; a CR alone is shown */
    ESC("a\tb\nc\rd\r\ne\r", UTIL_ESC_LINES, "a\\tb\nc\\rd\ne\\r");
    /* C1 controls (UTF-8 encoded), the bidi controls, U+2028/9 */
    ESC("\xc2\x80\xc2\x9b\xc2\x9f\xc2\xa0", 0, "\\u0080\\u009b\\u009f\xc2\xa0");
    ESC("\xd8\x9c\xe2\x80\x8e\xe2\x80\x8f\xe2\x80\xaa\xe2\x80\xae\xe2\x81\xa6"
        "\xe2\x81\xa9\xe2\x80\xa8\xe2\x80\xa9",
        0, "\\u061c\\u200e\\u200f\\u202a\\u202e\\u2066\\u2069\\u2028\\u2029");
    /* neighbours of the bidi controls stay */
    ESC("\xe2\x80\x8d\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa\xd8\x9b", 0,
        "\xe2\x80\x8d\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa\xd8\x9b");
    /* bytes that are not UTF-8, one escape each: a raw C1 byte, a stray
     * continuation, an overlong, a surrogate, past U+10FFFF, cut short */
    ESC("\x9b[2J", 0, "\\x9b[2J");
    ESC("\xff\xfe", 0, "\\xff\\xfe");
    ESC("\xc0\xaf", 0, "\\xc0\\xaf");
    ESC("\xed\xa0\x80", 0, "\\xed\\xa0\\x80");
    ESC("\xf4\x90\x80\x80", 0, "\\xf4\\x90\\x80\\x80");
    ESC("ab\xe2\x80", 0, "ab\\xe2\\x80");
    /* the output is always valid UTF-8 */
    char *g = esc("\xe2\x80\xae\xff\xc2", 5, 0, SIZE_MAX, NULL, NULL);
    CHECK(utf8_check((const unsigned char *)g, strlen(g)) == strlen(g));
    free(g);

    /* a limit in characters never cuts an escape */
    size_t used, chars;
    g = esc("abc\x1b[2J", 8, 0, 5, &used, &chars);
    CHECK_STR(g, "abc");
    CHECK(used == 3 && chars == 3);
    free(g);
    g = esc("abc\x1b[2J", 8, 0, 7, &used, &chars);
    CHECK_STR(g, "abc\\x1b");
    CHECK(used == 4 && chars == 7);
    free(g);
    g = esc("r\xc3\xa9sum\xc3\xa9", 8, 0, 3, &used, &chars);
    CHECK_STR(g, "r\xc3\xa9s");
    CHECK(used == 4 && chars == 3);
    free(g);
    g = esc("abc", 3, 0, 0, &used, &chars);
    CHECK_STR(g, "");
    CHECK(used == 0 && chars == 0);
    free(g);
    g = util_escaped("x\x1by");
    CHECK_STR(g, "x\\x1by");
    free(g);
    g = util_escaped(NULL);
    CHECK_STR(g, "");
    free(g);

    /* utf8_decode: the code point, or 0 for what utf8_check refuses */
    uint32_t cp = 0;
    CHECK(utf8_decode((const unsigned char *)"\xe2\x80\xae", 3, &cp) == 3 &&
          cp == 0x202E);
    CHECK(utf8_decode((const unsigned char *)"\xf0\x9f\x93\x84", 4, &cp) == 4 &&
          cp == 0x1F4C4);
    CHECK(utf8_decode((const unsigned char *)"\xe2\x80\xae", 2, &cp) == 0);
    CHECK(utf8_decode((const unsigned char *)"\x80", 1, &cp) == 0);
    CHECK(utf8_decode((const unsigned char *)"", 0, &cp) == 0);
    CHECK(utf8_is_bidi(0x202E) && utf8_is_bidi(0x061C) &&
          !utf8_is_bidi(0x202F) && !utf8_is_bidi(0x2065) &&
          !utf8_is_bidi(0x200D));
}
#undef ESC

static void
test_utf8(void)
{
    BADRAW("{\"subject\":\"\xff\"}", "", "not valid UTF-8 at byte 12");
    BADRAW("\xef\xbb\xbf{}", "", "not JSON"); /* a BOM is UTF-8, not JSON */
    BADRAW("{\"a\":\"\xc0\xaf\"}", "", "not valid UTF-8 at byte 6");
    BADRAW("{\"a\":\"\xc1\xbf\"}", "", "not valid UTF-8 at byte 6");
    BADRAW("{\"a\":\"\xe0\x9f\xbf\"}", "", "not valid UTF-8 at byte 6");
    BADRAW("{\"a\":\"\xed\xa0\x80\"}", "", "not valid UTF-8 at byte 6");
    BADRAW("{\"a\":\"\xed\xbf\xbf\"}", "", "not valid UTF-8 at byte 6");
    BADRAW("{\"a\":\"\xf0\x8f\xbf\xbf\"}", "", "not valid UTF-8 at byte 6");
    BADRAW("{\"a\":\"\xf4\x90\x80\x80\"}", "", "not valid UTF-8 at byte 6");
    BADRAW("{\"a\":\"\xf5\x80\x80\x80\"}", "", "not valid UTF-8 at byte 6");
    BADRAW("{\"a\":\"\xe2\x82\"}", "", "not valid UTF-8 at byte 6");
    BADRAW("{\"a\":\"\x80\"}", "", "not valid UTF-8 at byte 6");
    BADRAW("{\"a\":\"ok\xe2\x82\xac\"}\xe2\x82", "",
           "not valid UTF-8 at byte 13");
    /* long ASCII run before the fault: the eight-byte fast path */
    BADRAW("{\"abcdefghijklmnopqrstuvwxyz0123456789\":\"\xfe\"}", "",
           "not valid UTF-8 at byte 41");
    /* the widest valid sequences pass the UTF-8 check and reach the fields */
    json_t *b = base();
    with(b, "subject",
         STR("\xf4\x8f\xbf\xbf \xef\xbf\xbf \xc2\xa0 "
             "\xf0\x90\x80\x80 \xe0\xa0\x80"));
    struct job *j = GOOD(b);
    job_free(j);
}

static void
test_json_errors(void)
{
    BADRAW("", "", "not JSON: empty input");
    BADRAW("{", "", "not JSON");
    BADRAW("{\"type\":", "", "(line 1, column 8)");
    BADRAW("{}\n{}", "", "end of file expected");
    BADRAW("{\"a\":1,\"a\":1}", "", "duplicate object key");
    BADRAW("{\"subject\":\"a\\u0000b\"}", "", "\\u0000 is not allowed");
    BADRAW("{\"subject\":\"\\udc00\"}", "", "invalid Unicode");
    BADRAW("{\"subject\":\"a\tb\"}", "", "control character");
    BADRAW("[]", "", "job must be a JSON object, not an array");
    BADRAW("\"x\"", "", "job must be a JSON object, not a string");
    BADRAW("1.5", "", "job must be a JSON object, not a number");
    BADRAW("null", "", "job must be a JSON object, not null");
    BADRAW("false", "", "job must be a JSON object, not a boolean");

    /* jansson quotes the input near the fault: the message stays UTF-8 */
    char raw[400];
    size_t n = (size_t)snprintf(raw, sizeof raw, "{\"subject\":");
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(raw + n, sizeof raw - n, "\xc3\xa9");
    n += (size_t)snprintf(raw + n, sizeof raw - n, "x}");
    struct herr e;
    struct job *j;
    CHECK(job_parse(raw, n, &j, &e) == HERR_INVALID);
    CHECK(strncmp(e.msg, "not JSON: ", 10) == 0);
    json_t *m = json_string(e.msg); /* NULL if not UTF-8 */
    CHECK(m != NULL);
    json_decref(m);

    /* e may be NULL */
    CHECK(job_parse("[]", 2, &j, NULL) == HERR_INVALID && j == NULL);
    CHECK(job_parse(NULL, 0, &j, NULL) == HERR_INVALID && j == NULL);
}

static void
test_unknown_and_types(void)
{
    BAD(with(base(), "subjet", STR("x")), "subjet", "unknown field");
    BAD(with(base(), "", STR("x")), "", "unknown field (empty name)");
    BAD(with(base(), "a\r\nb", STR("x")), "a\\r\\nb", "unknown field");
    BAD(with(base(), "x\x01", STR("x")), "x\\x01", "unknown field");
    /* a long key is cut at a character boundary */
    char key[200] = "";
    for (int i = 0; i < 40; i++)
        strcat(key, "\xc3\xa9"); /* 80 bytes */
    struct herr e;
    json_t *b = with(base(), key, STR("x"));
    int rc;
    CHECK(parse_json(b, &rc, &e) == NULL && rc == HERR_INVALID);
    CHECK(strlen(e.field) == 62);
    CHECK(strncmp(e.field, key, 62) == 0);

    BAD(with(base(), "id", json_integer(1)), "id", "must be a string");
    BAD(with(base(), "id", json_null()), "id", "must be a string");
    BAD(with(base(), "type", json_true()), "type", "must be a string");
    BAD(with(base(), "org", json_array()), "org", "must be a string");
    BAD(with(base(), "account", json_object()), "account", "must be a string");
    BAD(with(base(), "from", json_real(1.5)), "from", "must be a string");
    BAD(with(base(), "from_name", json_false()), "from_name",
        "must be a string");
    BAD(with(base(), "reply_to", json_null()), "reply_to", "must be a string");
    BAD(with(base(), "to", STR("a@example.com")), "to", "must be an array");
    BAD(with(base(), "cc", json_object()), "cc", "must be an array");
    BAD(with(base(), "bcc", json_null()), "bcc", "must be an array");
    BAD(with(base(), "subject", json_integer(7)), "subject",
        "must be a string");
    BAD(with(base(), "text", json_array()), "text", "must be a string");
    BAD(with(base(), "html", json_integer(0)), "html", "must be a string");
    BAD(with(base(), "template", json_object()), "template",
        "must be a string");
    BAD(with(with(base(), "template", STR("t")), "data", json_array()), "data",
        "must be an object");
    BAD(with(base(), "attachments", json_object()), "attachments",
        "must be an array");
    BAD(with(base(), "send_at", json_integer(1700000000)), "send_at",
        "must be a string");
    BAD(with(base(), "priority", json_integer(0)), "priority",
        "must be a string");
    BAD(with(base(), "headers", json_array()), "headers", "must be an object");
    BAD(with(base(), "meta", json_array()), "meta", "must be an object");
    BAD(with(base(), "meta", json_null()), "meta", "must be an object");
}

static void
test_required(void)
{
    const char *req[] = {"type", "org", "account", "from", "to", "subject"};
    for (size_t i = 0; i < sizeof req / sizeof *req; i++)
        BAD(with(base(), req[i], NULL), req[i], "is required");
    BAD(with(base(), "text", NULL), "text", "text or html is required");
    json_t *b = with(base(), "text", NULL);
    struct job *j = GOOD(with(b, "html", STR("<p>hi</p>")));
    if (j) {
        CHECK(j->text == NULL);
        CHECK_STR(j->html, "<p>hi</p>");
        job_free(j);
    }
    /* a template stands in for subject and body */
    b = with(with(base(), "subject", NULL), "text", NULL);
    j = GOOD(with(b, "template", STR("welcome.v1")));
    if (j) {
        CHECK(j->subject == NULL && j->text == NULL && j->html == NULL);
        CHECK_STR(j->template_name, "welcome.v1");
        check_round_trip("template only", j);
        job_free(j);
    }
    BAD(json_object(), "type", "is required");
}

static void
test_tokens(void)
{
    struct job *j;
    j = GOOD(with(base(), "id", str_rep('a', 128)));
    job_free(j);
    BAD(with(base(), "id", str_rep('a', 129)), "id",
        "is 129 bytes, at most 128");
    BAD(with(base(), "id", STR("")), "id", "is empty");
    BAD(with(base(), "id", STR("a b")), "id",
        "contains a character outside [A-Za-z0-9._:-]");
    BAD(with(base(), "id", STR("a\xc3\xa9")), "id", "outside");
    j = GOOD(with(base(), "id", STR("Order:42.v1_x-Y")));
    if (j) {
        CHECK_STR(j->id, "Order:42.v1_x-Y");
        job_free(j);
    }
    j = GOOD(with(base(), "type", str_rep('t', 32)));
    job_free(j);
    j = GOOD(with(base(), "type", STR("password_reset-2")));
    job_free(j);
    BAD(with(base(), "type", str_rep('t', 33)), "type", "at most 32");
    BAD(with(base(), "type", STR("Receipt")), "type", "outside [a-z0-9_-]");
    BAD(with(base(), "type", STR("a.b")), "type", "outside");
    j = GOOD(with(base(), "org", str_rep('o', 64)));
    job_free(j);
    BAD(with(base(), "org", str_rep('o', 65)), "org", "at most 64");
    BAD(with(base(), "org", STR("a:b")), "org", "outside [A-Za-z0-9._-]");
    j = GOOD(with(base(), "account", str_rep('A', 64)));
    job_free(j);
    BAD(with(base(), "account", str_rep('A', 65)), "account", "at most 64");
    BAD(with(base(), "account", STR("")), "account", "is empty");
    j = GOOD(with(base(), "template", str_rep('T', 64)));
    job_free(j);
    BAD(with(base(), "template", str_rep('T', 65)), "template", "at most 64");
    BAD(with(base(), "template", STR("a/b")), "template", "outside");

    CHECK(job_valid_id("h-0123456789abcdef0123456789abcdef"));
    CHECK(job_valid_id("a:b.c_d-e"));
    CHECK(!job_valid_id(""));
    CHECK(!job_valid_id("a b"));
    CHECK(!job_valid_id(NULL));
    char long_id[130];
    memset(long_id, 'x', 129);
    long_id[129] = 0;
    CHECK(!job_valid_id(long_id));
    long_id[128] = 0;
    CHECK(job_valid_id(long_id));
    CHECK(job_valid_org("Acme.Corp_1-2"));
    CHECK(!job_valid_org("acme:corp"));
    CHECK(!job_valid_org(""));
    CHECK(!job_valid_org(NULL));
}

static void
test_email(void)
{
    const char *good[] = {
        "a@b",
        "root@localhost",
        "alice@example.com",
        "first.last+tag@sub.example.co.uk",
        "o'brien@example.ie",
        "!#$%&'*+-/=?^_`{|}~@example.com",
        "\"quoted\"@example.com",
        "\"a\\\"b\"@example.com",
        "\"a@b\"@example.com",
        "\"a..b\"@example.com",
        "x@[192.0.2.1]",
        "x@[255.255.255.255]",
        "x@[0.0.0.0]",
        "x@123.example",
        "x@a-b.c-d.example",
        "x@xn--bcher-kva.example",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CHECK_MSG(job_valid_email(good[i]), "%s", good[i]);
    const char *bad[] = {
        "",
        "plain",
        "@example.com",
        "a@",
        "a@@example.com",
        "a@b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a..b@example.com",
        "a b@example.com",
        "\"a b\"@example.com",
        "\"\"@example.com",
        "\"abc@example.com",
        "\"abc\"x@example.com",
        "<a@example.com>",
        "A <a@example.com>",
        "a@example.com\r\n",
        "a\t@example.com",
        "j\xc3\xb6ns@example.com",
        "a@exa\xc3\xa9mple.com",
        "a@-example.com",
        "a@example-.com",
        "a@example.com-",
        "a@.example.com",
        "a@example..com",
        "a@example.com.",
        "a@ex_ample.com",
        "a@[192.0.2.1",
        "a@[192.0.2]",
        "a@[192.0.2.256]",
        "a@[192.0.2.1.5]",
        "a@[1234.0.2.1]",
        "a@[IPv6:::1]",
        "a@[]",
        "a(comment)@example.com",
        "a,b@example.com",
        "a;b@example.com",
        "a\\b@example.com",
        "a[b]@example.com",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_MSG(!job_valid_email(bad[i]), "%s", bad[i]);
    CHECK(!job_valid_email(NULL));

    /* lengths: local part 64 ok / 65 not; whole 254 ok / 255 not */
    char a[300];
    memset(a, 'l', 64);
    strcpy(a + 64, "@example.com");
    CHECK(job_valid_email(a));
    memset(a, 'l', 65);
    strcpy(a + 65, "@example.com");
    CHECK(!job_valid_email(a));
    /* 64 + 1 + 63 + 1 + 63 + 1 + 61 = 254 */
    size_t n = 0;
    memset(a + n, 'l', 64), n += 64;
    a[n++] = '@';
    memset(a + n, 'd', 63), n += 63;
    a[n++] = '.';
    memset(a + n, 'd', 63), n += 63;
    a[n++] = '.';
    memset(a + n, 'd', 61), n += 61;
    a[n] = 0;
    CHECK(strlen(a) == 254 && job_valid_email(a));
    a[n] = 'd';
    a[n + 1] = 0;
    CHECK(strlen(a) == 255 && !job_valid_email(a));
    /* a domain label of 64 */
    memset(a, 0, sizeof a);
    strcpy(a, "x@");
    memset(a + 2, 'd', 63);
    strcpy(a + 65, ".example");
    CHECK(job_valid_email(a));
    memset(a + 2, 'd', 64);
    strcpy(a + 66, ".example");
    CHECK(!job_valid_email(a));

    /* in a job, the message says why */
    BAD(with(base(), "from", STR("billing")), "from",
        "not an address (missing @)");
    BAD(with(base(), "from", STR("billing@acme.example\n")), "from",
        "contains a line break");
    BAD(with(base(), "reply_to", STR("x y@acme.example")), "reply_to",
        "not an address (contains a space)");
    BAD(with(base(), "from", STR("")), "from", "not an address (empty)");
    struct job *j = GOOD(with(base(), "reply_to", STR("help@acme.example")));
    if (j) {
        CHECK_STR(j->reply_to, "help@acme.example");
        job_free(j);
    }
}

static void
test_recipients(void)
{
    json_t *to = json_array();
    json_array_append_new(to, STR("a@example.com"));
    json_array_append_new(to, json_pack("{s:s,s:s}", "email", "b@example.com",
                                        "name",
                                        "B\xc3\xa9"
                                        "a \"Bee\""));
    json_array_append_new(to, json_pack("{s:s}", "email", "c@example.com"));
    json_array_append_new(
        to, json_pack("{s:s,s:s}", "name", "", "email", "d@example.com"));
    json_t *b = with(base(), "to", to);
    with(b, "cc",
         json_pack("[{s:s,s:s}]", "email", "cc@example.com", "name", "Cc"));
    with(b, "bcc", json_pack("[s]", "bcc@example.com"));
    struct job *j = GOOD(b);
    if (j) {
        CHECK(j->nto == 4 && j->ncc == 1 && j->nbcc == 1);
        CHECK_STR(j->to[0].email, "a@example.com");
        CHECK(j->to[0].name == NULL);
        CHECK_STR(j->to[1].name, "B\xc3\xa9"
                                 "a \"Bee\"");
        CHECK(j->to[2].name == NULL);
        CHECK(j->to[3].name == NULL); /* "" is no name */
        CHECK_STR(j->cc[0].name, "Cc");
        CHECK_STR(j->bcc[0].email, "bcc@example.com");
        check_round_trip("recipients", j);
        job_free(j);
    }
    /* empty cc/bcc are fine and leave nothing */
    b = with(with(base(), "cc", json_array()), "bcc", json_array());
    j = GOOD(b);
    if (j) {
        CHECK(j->ncc == 0 && j->cc == NULL && j->nbcc == 0);
        job_free(j);
    }

    /* counts: exactly 50 to and exactly 100 in all are fine */
    j = GOOD(with(base(), "to", addr_list("t", 50)));
    if (j) {
        CHECK(j->nto == 50);
        CHECK_STR(j->to[49].email, "t49@example.com");
        job_free(j);
    }
    BAD(with(base(), "to", addr_list("t", 51)), "to",
        "has 51 recipients, at most 50");
    BAD(with(base(), "to", json_array()), "to", "at least one");
    b = with(base(), "to", addr_list("t", 50));
    with(b, "cc", addr_list("c", 30));
    j = GOOD(with(b, "bcc", addr_list("b", 20)));
    if (j) {
        CHECK(j->nto + j->ncc + j->nbcc == 100);
        check_round_trip("100 recipients", j);
        job_free(j);
    }
    b = with(base(), "to", addr_list("t", 50));
    with(b, "cc", addr_list("c", 30));
    BAD(with(b, "bcc", addr_list("b", 21)), "to+cc+bcc",
        "101 recipients, at most 100");
    b = with(base(), "bcc", addr_list("b", 100));
    BAD(b, "to+cc+bcc", "101 recipients, at most 100");

    /* herr_format joins field and message */
    struct herr e;
    int rc;
    b = with(base(), "to",
             json_pack("[s,s,s]", "a@example.com", "b@example.com", "nope"));
    CHECK(parse_json(b, &rc, &e) == NULL);
    char line[HERR_FIELD_MAX + HERR_MSG_MAX + 2];
    herr_format(&e, line, sizeof line);
    CHECK_STR(line, "to[2]: not an address (missing @)");

    BAD(with(base(), "to", json_pack("[s,i]", "a@example.com", 5)), "to[1]",
        "must be an address string or an object, not a number");
    BAD(with(base(), "cc", json_pack("[[]]")), "cc[0]",
        "must be an address string or an object, not an array");
    BAD(with(base(), "to", json_pack("[{s:s}]", "name", "x")), "to[0].email",
        "is required");
    BAD(with(base(), "to",
             json_pack("[{s:s,s:s}]", "email", "a@example.com", "mail", "x")),
        "to[0].mail", "unknown field");
    BAD(with(base(), "to",
             json_pack("[{s:s,s:n}]", "email", "a@example.com", "name")),
        "to[0].name", "must be a string");
    BAD(with(base(), "bcc", json_pack("[{s:s}]", "email", "x")), "bcc[0].email",
        "not an address");
    BAD(with(base(), "cc",
             json_pack("[{s:s,s:s}]", "email", "a@example.com", "name",
                       "A\r\nBcc: x@evil")),
        "cc[0].name", "contains a line break");
    BAD(with(base(), "to",
             json_pack("[{s:s,s:o}]", "email", "a@example.com", "name",
                       str_rep('n', 257))),
        "to[0].name", "is 257 bytes, at most 256");
    j = GOOD(with(base(), "to",
                  json_pack("[{s:s,s:o}]", "email", "a@example.com", "name",
                            str_rep('n', 256))));
    job_free(j);
}

static void
test_text_rules(void)
{
    struct job *j;
    /* subject: 998 bytes ok, 999 not, counted in bytes */
    j = GOOD(with(base(), "subject", str_rep('s', 998)));
    if (j) {
        CHECK(strlen(j->subject) == 998);
        job_free(j);
    }
    BAD(with(base(), "subject", str_rep('s', 999)), "subject",
        "is 999 bytes, at most 998");
    char u[1100] = "";
    for (int i = 0; i < 499; i++)
        strcat(u, "\xc3\xa9");
    j = GOOD(with(base(), "subject", STR(u))); /* 998 bytes */
    job_free(j);
    strcat(u, "s");
    BAD(with(base(), "subject", STR(u)), "subject", "is 999 bytes");
    j = GOOD(with(base(), "subject", STR("")));
    if (j) {
        CHECK_STR(j->subject, "");
        job_free(j);
    }

    /* control characters: CR/LF named as line breaks, the rest by code */
    BAD(with(base(), "subject", STR("a\rb")), "subject",
        "contains a line break");
    BAD(with(base(), "subject", STR("a\nb")), "subject",
        "contains a line break");
    BAD(with(base(), "subject", STR("a\tb\nc")), "subject",
        "contains a line break");
    BAD(with(base(), "subject", STR("a\tb")), "subject",
        "contains a control character (U+0009)");
    BAD(with(base(), "subject", STR("a\x01")), "subject", "(U+0001)");
    BAD(with(base(), "subject", STR("a\x1f")), "subject", "(U+001F)");
    BAD(with(base(), "subject", STR("a\x7f")), "subject", "(U+007F)");
    BAD(with(base(), "subject", STR("a\xc2\x80")), "subject", "(U+0080)");
    BAD(with(base(), "subject", STR("a\xc2\x85")), "subject", "(U+0085)");
    BAD(with(base(), "subject", STR("a\xc2\x9f")), "subject", "(U+009F)");
    BAD(with(base(), "subject", STR("a\xe2\x80\xa8")), "subject", "(U+2028)");
    BAD(with(base(), "subject", STR("a\xe2\x80\xa9")), "subject", "(U+2029)");
    /* neighbours of the controls are fine */
    j = GOOD(with(base(), "subject",
                  STR("~ \xc2\xa0 \xc2\xbf \xe2\x80\xa7 \xe2\x80\xaa "
                      "\xe2\x81\x9f")));
    job_free(j);

    BAD(with(base(), "from_name", STR("Acme\r\nBcc: x")), "from_name",
        "contains a line break");
    BAD(with(base(), "from_name", str_rep('n', 257)), "from_name",
        "is 257 bytes, at most 256");
    j = GOOD(with(base(), "from_name", STR("")));
    if (j) {
        CHECK(j->from_name == NULL);
        job_free(j);
    }
    j = GOOD(with(base(), "from_name", STR("Acme \xe2\x80\x94 \"Billing\"")));
    if (j) {
        CHECK_STR(j->from_name, "Acme \xe2\x80\x94 \"Billing\"");
        job_free(j);
    }

    /* bodies take any text */
    json_t *b = with(base(), "text", STR("a\r\nb\tc\x01\x7f\xc2\x85"));
    j = GOOD(with(b, "html", STR("<p>\n</p>")));
    if (j) {
        CHECK_STR(j->text, "a\r\nb\tc\x01\x7f\xc2\x85");
        check_round_trip("bodies", j);
        job_free(j);
    }

    /* template data */
    BAD(with(base(), "data", json_object()), "data",
        "only allowed with template");
    b = with(base(), "template", STR("t.v1"));
    j = GOOD(with(b, "data",
                  json_pack("{s:i,s:[s,b],s:{}}", "n", 1, "l", "x", 1, "o")));
    if (j) {
        CHECK_STR(j->data_json, "{\"n\":1,\"l\":[\"x\",true],\"o\":{}}");
        check_round_trip("data", j);
        job_free(j);
    }
}

static void
test_attachments(void)
{
    json_t *att = json_array();
    json_array_append_new(att, json_pack("{s:s,s:s,s:s}", "filename",
                                         "Invoice 11.PDF", "content_type",
                                         "Application/PDF", "content_base64",
                                         "JVBE\r\nRi0x\n LjQK"));
    json_array_append_new(
        att, json_pack("{s:s,s:s}", "filename", "a", "content_base64", "QQ=="));
    json_array_append_new(att, json_pack("{s:s,s:s}", "filename", "ab",
                                         "content_base64", "QUI="));
    json_array_append_new(
        att, json_pack("{s:s,s:s}", "filename", "empty", "content_base64", ""));
    json_array_append_new(
        att, json_pack("{s:s,s:s,s:s}", "filename", "x.vnd", "content_type",
                       "application/vnd.ms-excel+x.y!#$&^_`|~",
                       "content_base64", "AP8A/w==\n"));
    struct job *j = GOOD(with(base(), "attachments", att));
    if (j) {
        CHECK(j->nattachments == 5);
        CHECK_STR(j->attachments[0].filename, "Invoice 11.PDF");
        CHECK_STR(j->attachments[0].content_type, "application/pdf");
        CHECK(j->attachments[0].len == 9 &&
              memcmp(j->attachments[0].data, "%PDF-1.4\n", 9) == 0);
        CHECK_STR(j->attachments[1].content_type, "application/octet-stream");
        CHECK(j->attachments[1].len == 1 && j->attachments[1].data[0] == 'A');
        CHECK(j->attachments[2].len == 2 &&
              memcmp(j->attachments[2].data, "AB", 2) == 0);
        CHECK(j->attachments[3].len == 0);
        CHECK(j->attachments[4].len == 4 && j->attachments[4].data[1] == 0xFF &&
              j->attachments[4].data[2] == 0);
        check_round_trip("attachments", j);
        char *s = job_to_json(j);
        CHECK(strstr(s, "\"content_base64\":\"JVBERi0xLjQK\"") != NULL);
        free(s);
        job_free(j);
    }

    /* every byte value survives */
    unsigned char bytes[1000];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (unsigned char)(i * 7 + 3);
    for (size_t len = 997; len <= 1000; len++) {
        struct job src;
        memset(&src, 0, sizeof src);
        struct job_addr to = {"a@example.com", NULL};
        struct job_attachment a = {"f", "application/octet-stream", bytes, len};
        src.type = "t";
        src.org = "o";
        src.account = "a";
        src.from = "f@example.com";
        src.to = &to;
        src.nto = 1;
        src.subject = "s";
        src.text = "b";
        src.attachments = &a;
        src.nattachments = 1;
        src.priority = JOB_PRIO_LOW;
        check_round_trip("bytes", &src);
    }

    const char *fld = "attachments[0].content_base64";
#define ATT(b64)                                                               \
    with(base(), "attachments",                                                \
         json_pack("[{s:s,s:s}]", "filename", "f", "content_base64", (b64)))
    BAD(ATT("QQ="), fld, "bad padding");
    BAD(ATT("QQ"), fld, "length is not a multiple of 4");
    BAD(ATT("QUJDR"), fld, "length is not a multiple of 4");
    BAD(ATT("QR=="), fld, "non-zero padding bits");
    BAD(ATT("QUJ="), fld, "non-zero padding bits");
    BAD(ATT("QQ==QQ=="), fld, "data after padding");
    BAD(ATT("QQ===="), fld, "data after padding");
    BAD(ATT("QUI=="), fld, "data after padding");
    BAD(ATT("Q==="), fld, "'=' at offset 1");
    BAD(ATT("===="), fld, "'=' at offset 0");
    BAD(ATT("QQ=A"), fld, "data after padding");
    BAD(ATT("ab$d"), fld, "unexpected character at offset 2");
    BAD(ATT("ab-_"), fld, "unexpected character");
    BAD(ATT("QU\tJD"), fld, "unexpected character at offset 2");
    j = GOOD(ATT(" Q U J D \r\n"));
    if (j) {
        CHECK(j->attachments[0].len == 3);
        job_free(j);
    }
    j = GOOD(ATT("QQ= =\r\n "));
    job_free(j);
#undef ATT

#define ATTF(name)                                                             \
    with(base(), "attachments",                                                \
         json_pack("[{s:o,s:s}]", "filename", (name), "content_base64", ""))
    BAD(ATTF(STR("")), "attachments[0].filename", "is empty");
    BAD(ATTF(STR(".")), "attachments[0].filename", "must not be");
    BAD(ATTF(STR("..")), "attachments[0].filename", "must not be");
    BAD(ATTF(STR("a/b")), "attachments[0].filename", "must not contain");
    BAD(ATTF(STR("a\\b")), "attachments[0].filename", "must not contain");
    BAD(ATTF(STR("a\nb")), "attachments[0].filename", "line break");
    BAD(ATTF(STR("a\x01")), "attachments[0].filename", "control character");
    BAD(ATTF(str_rep('f', 256)), "attachments[0].filename", "at most 255");
    BAD(ATTF(json_integer(1)), "attachments[0].filename", "must be a string");
    j = GOOD(ATTF(str_rep('f', 255)));
    job_free(j);
    j = GOOD(ATTF(STR("...")));
    job_free(j);

    /* Bidirectional controls reorder what a reader sees: "invoice_" RLO
     * "fdp.exe" shows as "invoice_exe.pdf". Every one of them is refused,
     * wherever it sits in the name, and the message says what it is. */
    static const struct {
        const char *name;
        const char *cp;
    } bidi[] = {
        {"invoice_\xe2\x80\xae"
         "fdp.exe",
         "U+202E"}, /* RLO */
        {"\xe2\x80\xaa"
         "a.pdf",
         "U+202A"},                      /* LRE */
        {"a\xe2\x80\xab.pdf", "U+202B"}, /* RLE */
        {"a.pdf\xe2\x80\xac", "U+202C"}, /* PDF */
        {"a\xe2\x80\xad.pdf", "U+202D"}, /* LRO */
        {"a\xe2\x81\xa6.pdf", "U+2066"}, /* LRI */
        {"a\xe2\x81\xa7.pdf", "U+2067"}, /* RLI */
        {"a\xe2\x81\xa8.pdf", "U+2068"}, /* FSI */
        {"a\xe2\x81\xa9.pdf", "U+2069"}, /* PDI */
        {"a\xe2\x80\x8e.pdf", "U+200E"}, /* LRM */
        {"a\xe2\x80\x8f.pdf", "U+200F"}, /* RLM */
        {"a\xd8\x9c.pdf", "U+061C"},     /* ALM */
        {"r\xc3\xa9sum\xc3\xa9\xe2\x81\xa6.exe", "U+2066"},
    };
    for (size_t i = 0; i < sizeof bidi / sizeof bidi[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "bidirectional control character (%s)",
                 bidi[i].cp);
        BAD(ATTF(STR(bidi[i].name)), "attachments[0].filename", want);
    }
    /* the field names the attachment at fault */
    BAD(with(base(), "attachments",
             json_pack("[{s:s,s:s},{s:s,s:s}]", "filename", "ok.pdf",
                       "content_base64", "", "filename", "x\xe2\x80\xaegpj.exe",
                       "content_base64", "")),
        "attachments[1].filename", "bidirectional");
    /* other non-ASCII names are fine, right-to-left scripts included, and
     * so are the code points next to the refused ones */
    static const char *const fine[] = {
        "r\xc3\xa9sum\xc3\xa9.pdf",                     /* résumé.pdf */
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e.txt",     /* 日本語.txt */
        "\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d.pdf",         /* שלום.pdf */
        "\xd8\xaa\xd9\x82\xd8\xb1\xd9\x8a\xd8\xb1.pdf", /* تقرير.pdf */
        "a\xd8\x9b\xd8\x9d.pdf",                        /* U+061B U+061D */
        "a\xe2\x80\x8d\xe2\x80\x8c.pdf",                /* ZWJ, ZWNJ */
        "a\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa.pdf",    /* U+202F 2065 206A */
        "\xf0\x9f\x93\x84 report.pdf",                  /* emoji */
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        j = GOOD(ATTF(STR(fine[i])));
        if (j) {
            CHECK_STR(j->attachments[0].filename, fine[i]);
            job_free(j);
        }
    }
#undef ATTF

#define ATTT(ct)                                                               \
    with(base(), "attachments",                                                \
         json_pack("[{s:s,s:s,s:s}]", "filename", "f", "content_type", (ct),   \
                   "content_base64", ""))
    const char *ctf = "attachments[0].content_type";
    BAD(ATTT("text"), ctf, "must be type/subtype");
    BAD(ATTT("text/"), ctf, "must be type/subtype");
    BAD(ATTT("/plain"), ctf, "must be type/subtype");
    BAD(ATTT("text/plain/x"), ctf, "must be type/subtype");
    BAD(ATTT("text/plain; charset=utf-8"), ctf, "must be type/subtype");
    BAD(ATTT("text /plain"), ctf, "must be type/subtype");
    BAD(ATTT("text/pl@in"), ctf, "must be type/subtype");
    BAD(ATTT("t\xc3\xa9xt/plain"), ctf, "must be type/subtype");
    BAD(ATTT("text/plain\r\n"), ctf, "line break");
    BAD(ATTT(""), ctf, "must be type/subtype");
#undef ATTT

    BAD(with(base(), "attachments", json_pack("[s]", "x")), "attachments[0]",
        "must be an object");
    BAD(with(base(), "attachments",
             json_pack("[{s:s,s:s,s:i}]", "filename", "f", "content_base64", "",
                       "size", 0)),
        "attachments[0].size", "unknown field");
    BAD(with(base(), "attachments", json_pack("[{s:s}]", "filename", "f")),
        "attachments[0].content_base64", "is required");
    json_t *many = json_array();
    for (int i = 0; i < JOB_ATTACHMENTS_MAX; i++)
        json_array_append_new(many, json_pack("{s:s,s:s}", "filename", "f",
                                              "content_base64", "QQ=="));
    json_t *b = with(base(), "attachments", json_deep_copy(many));
    j = GOOD(b);
    if (j) {
        CHECK(j->nattachments == JOB_ATTACHMENTS_MAX);
        job_free(j);
    }
    json_array_append_new(many, json_pack("{s:s,s:s}", "filename", "f",
                                          "content_base64", "QQ=="));
    BAD(with(base(), "attachments", many), "attachments",
        "has 33 entries, at most 32");
    j = GOOD(with(base(), "attachments", json_array()));
    if (j) {
        CHECK(j->nattachments == 0 && j->attachments == NULL);
        job_free(j);
    }
}

static void
test_send_at_priority(void)
{
    struct job *j = GOOD(with(base(), "send_at", STR("2026-11-26T14:58:07Z")));
    if (j) {
        CHECK(j->send_at_ms == INT64_C(1795705087000));
        check_round_trip("send_at", j);
        job_free(j);
    }
    j = GOOD(with(base(), "send_at", STR("2026-11-26T09:58:07.25-05:00")));
    if (j) {
        CHECK(j->send_at_ms == INT64_C(1795705087250));
        char *s = job_to_json(j);
        CHECK(strstr(s, "\"send_at\":\"2026-11-26T14:58:07.250Z\"") != NULL);
        free(s);
        job_free(j);
    }
    BAD(with(base(), "send_at", STR("tomorrow")), "send_at",
        "not an RFC 3339 time");
    BAD(with(base(), "send_at", STR("2026-11-26")), "send_at", "RFC 3339");
    BAD(with(base(), "send_at", STR("2026-11-26T14:58:07")), "send_at",
        "RFC 3339");
    BAD(with(base(), "send_at", STR("2026-13-01T00:00:00Z")), "send_at",
        "RFC 3339");
    BAD(with(base(), "send_at", STR("")), "send_at", "RFC 3339");

    const char *names[] = {"high", "normal", "low"};
    enum job_priority want[] = {JOB_PRIO_HIGH, JOB_PRIO_NORMAL, JOB_PRIO_LOW};
    for (int i = 0; i < 3; i++) {
        enum job_priority p = JOB_PRIO_COUNT;
        CHECK(job_priority_parse(names[i], &p) == 0 && p == want[i]);
        CHECK_STR(job_priority_name(want[i]), names[i]);
        j = GOOD(with(base(), "priority", STR(names[i])));
        if (j) {
            CHECK(j->priority == want[i]);
            check_round_trip(names[i], j);
            job_free(j);
        }
    }
    enum job_priority p = JOB_PRIO_LOW;
    CHECK(job_priority_parse("HIGH", &p) == HERR_INVALID && p == JOB_PRIO_LOW);
    CHECK(job_priority_parse("", &p) == HERR_INVALID);
    CHECK(job_priority_parse(NULL, &p) == HERR_INVALID);
    CHECK_STR(job_priority_name((enum job_priority)7), "normal");
    BAD(with(base(), "priority", STR("urgent")), "priority",
        "must be high, normal or low");
    BAD(with(base(), "priority", STR("")), "priority", "must be high");
}

static void
test_headers(void)
{
    json_t *h = json_pack("{s:s,s:s,s:s}", "X-Campaign", "spring", "x-lower",
                          "v \xc3\xa9", "X-Empty", "");
    struct job *j = GOOD(with(base(), "headers", h));
    if (j) {
        CHECK(j->nheaders == 3);
        CHECK_STR(j->headers[0].name, "X-Campaign");
        CHECK_STR(j->headers[0].value, "spring");
        CHECK_STR(j->headers[1].name, "x-lower");
        CHECK_STR(j->headers[2].value, "");
        check_round_trip("headers", j);
        job_free(j);
    }
#define HDR(name, value)                                                       \
    with(base(), "headers", json_pack("{s:o}", (name), (value)))
    BAD(HDR("Reply-To", STR("x")), "headers.Reply-To", "must start with X-");
    BAD(HDR("Subject", STR("x")), "headers.Subject", "must start with X-");
    BAD(HDR("X", STR("x")), "headers.X", "must start with X-");
    BAD(HDR("X-", STR("x")), "headers.X-", "must go on after X-");
    BAD(HDR("X-Herald-Id", STR("x")), "headers.X-Herald-Id", "reserved");
    BAD(HDR("x-HERALD-path", STR("x")), "headers.x-HERALD-path", "reserved");
    BAD(HDR("X-Foo:", STR("x")), "headers.X-Foo:", "printable ASCII");
    BAD(HDR("X-Foo Bar", STR("x")), "headers.X-Foo Bar", "printable ASCII");
    BAD(HDR("X-F\xc3\xb6o", STR("x")), "headers.X-F\xc3\xb6o",
        "printable ASCII");
    BAD(HDR("X-Foo\r\nBcc", STR("x")), "headers.X-Foo\\r\\nBcc",
        "contains a line break");
    BAD(HDR("X-Foo\tBar", STR("x")), "headers.X-Foo\\tBar",
        "control character");
    BAD(HDR("X-Foo", STR("a\r\nBcc: x@evil.example")), "headers.X-Foo",
        "contains a line break");
    BAD(HDR("X-Foo", STR("a\x0b")), "headers.X-Foo", "(U+000B)");
    BAD(HDR("X-Foo", json_integer(1)), "headers.X-Foo", "must be a string");
    BAD(HDR("X-Foo", json_null()), "headers.X-Foo", "must be a string");
    BAD(HDR("X-Foo", str_rep('v', 901)), "headers.X-Foo",
        "value is 901 bytes, at most 900");
    j = GOOD(HDR("X-Foo", str_rep('v', 900)));
    job_free(j);
    char name[80] = "X-";
    memset(name + 2, 'n', 74);
    name[76] = 0;
    j = GOOD(HDR(name, STR("v")));
    job_free(j);
    name[76] = 'n';
    name[77] = 0;
    char want[HERR_FIELD_MAX];
    memcpy(want, "headers.", 8);
    memcpy(want + 8, name, HERR_FIELD_MAX - 9);
    want[HERR_FIELD_MAX - 1] = '\0';
    BAD(HDR(name, STR("v")), want, "header name is 77 bytes, at most 76");
#undef HDR
    /* "X-Herald" alone is allowed: only the X-Herald- family is ours */
    j = GOOD(with(base(), "headers", json_pack("{s:s}", "X-Herald", "x")));
    job_free(j);
    BAD(with(base(), "headers", json_pack("{s:s,s:s}", "X-A", "1", "x-a", "2")),
        "headers.x-a", "duplicate header name");

    json_t *many = json_object();
    for (int i = 0; i < JOB_HEADERS_MAX; i++) {
        char k[16];
        snprintf(k, sizeof k, "X-H%d", i);
        json_object_set_new(many, k, STR("v"));
    }
    j = GOOD(with(base(), "headers", json_deep_copy(many)));
    if (j) {
        CHECK(j->nheaders == JOB_HEADERS_MAX);
        CHECK_STR(j->headers[31].name, "X-H31");
        job_free(j);
    }
    json_object_set_new(many, "X-H32", STR("v"));
    BAD(with(base(), "headers", many), "headers", "has 33 entries, at most 32");
}

/* resend_of (SPEC §6.4): a job id, kept through the canonical form. */
static void
test_resend_of(void)
{
    struct job *j = GOOD(with(base(), "resend_of", json_string("orig-1:a")));
    if (j) {
        CHECK_STR(j->resend_of, "orig-1:a");
        check_round_trip("resend_of", j);
        job_free(j);
    }
    BAD(with(base(), "resend_of", json_string("a b")), "resend_of", "");
    BAD(with(base(), "resend_of", json_integer(7)), "resend_of", "");
    BAD(with(base(), "resend_of", json_null()), "resend_of", "");
}

static void
test_meta(void)
{
    struct job *j =
        GOOD(with(base(), "meta",
                  json_pack("{s:i,s:{s:[i,s,n]},s:s}", "order", 42, "deep", "x",
                            1, "\xc3\xa9", "q", "a\"b")));
    if (j) {
        CHECK_STR(j->meta_json,
                  "{\"order\":42,\"deep\":{\"x\":[1,\"\xc3\xa9\",null]},"
                  "\"q\":\"a\\\"b\"}");
        check_round_trip("meta", j);
        job_free(j);
    }
    j = GOOD(with(base(), "meta", json_object()));
    if (j) {
        CHECK_STR(j->meta_json, "{}");
        job_free(j);
    }
}

static void
test_assign_id(void)
{
    struct job *a = GOOD(base());
    struct job *b = GOOD(base());
    if (a == NULL || b == NULL) {
        job_free(a);
        job_free(b);
        return;
    }
    job_assign_id(a);
    job_assign_id(b);
    CHECK(a->id && strlen(a->id) == 34 && strncmp(a->id, "h-", 2) == 0);
    int hex = 1;
    for (const char *p = a->id + 2; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            hex = 0;
    CHECK(hex);
    CHECK(job_valid_id(a->id));
    CHECK(strcmp(a->id, b->id) != 0);
    char *keep = a->id;
    job_assign_id(a); /* an id is never replaced */
    CHECK(a->id == keep);
    check_round_trip("assigned id", a);
    job_free(a);
    job_free(b);
}

static int
has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static void
test_corpus_valid(void)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/valid", corpus_dir());
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "cannot open %s (set HERALD_CORPUS)", dir);
    if (d == NULL)
        return;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!has_suffix(de->d_name, ".job"))
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        size_t len;
        char *raw = read_file(path, &len);
        CHECK_MSG(raw != NULL, "cannot read %s", path);
        if (raw == NULL)
            continue;
        struct job *j = NULL;
        struct herr e = {{0}, {0}};
        int rc = job_parse(raw, len, &j, &e);
        CHECK_MSG(rc == 0, "%s: %s: %s", de->d_name, e.field, e.msg);
        if (rc == 0) {
            check_round_trip(de->d_name, j);
            job_assign_id(j);
            check_round_trip(de->d_name, j);
            job_free(j);
        }
        free(raw);
        count++;
    }
    closedir(d);
    CHECK_MSG(count >= 8, "only %d valid jobs", count);
}

static void
test_corpus_hostile(void)
{
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/hostile", corpus_dir());
    snprintf(path, sizeof path, "%s/expect.tsv", dir);
    size_t tlen;
    char *tsv = read_file(path, &tlen);
    CHECK_MSG(tsv != NULL, "cannot read %s (set HERALD_CORPUS)", path);
    if (tsv == NULL)
        return;
    int count = 0;
    char **listed = NULL;
    for (char *line = tsv, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *f1 = strchr(line, '\t');
        char *f2 = f1 ? strchr(f1 + 1, '\t') : NULL;
        CHECK_MSG(f2 != NULL, "bad expect.tsv line: %s", line);
        if (f2 == NULL)
            continue;
        *f1++ = '\0';
        *f2++ = '\0';
        const char *field = strcmp(f1, "-") == 0 ? "" : f1;
        char fpath[1024];
        snprintf(fpath, sizeof fpath, "%s/%s", dir, line);
        size_t len;
        char *raw = read_file(fpath, &len);
        CHECK_MSG(raw != NULL, "cannot read %s", fpath);
        if (raw == NULL)
            continue;
        struct job *j = (struct job *)1;
        struct herr e = {{0}, {0}};
        int rc = job_parse(raw, len, &j, &e);
        CHECK_MSG(rc == HERR_INVALID && j == NULL, "%s: accepted (rc %d)", line,
                  rc);
        if (rc == 0)
            job_free(j);
        CHECK_MSG(strcmp(e.field, field) == 0, "%s: field \"%s\", want \"%s\"",
                  line, e.field, field);
        CHECK_MSG(strstr(e.msg, f2) != NULL, "%s: msg \"%s\" lacks \"%s\"",
                  line, e.msg, f2);
        /* the dead letter carries field and message as JSON strings */
        json_t *jf = json_string(e.field), *jm = json_string(e.msg);
        CHECK_MSG(jf && jm, "%s: field or message not UTF-8", line);
        CHECK_MSG(!strchr(e.field, '\n') && !strchr(e.field, '\r') &&
                      !strchr(e.field, '\t'),
                  "%s: field not one line", line);
        json_decref(jf);
        json_decref(jm);
        free(raw);
        listed = xrealloc(listed, (size_t)(count + 1) * sizeof *listed);
        listed[count++] = line;
    }
    CHECK_MSG(count >= 40, "only %d hostile jobs", count);

    /* every .job file is listed, and only once */
    DIR *d = opendir(dir);
    int files = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (!has_suffix(de->d_name, ".job"))
            continue;
        files++;
        int seen = 0;
        for (int i = 0; i < count; i++)
            seen += strcmp(listed[i], de->d_name) == 0;
        CHECK_MSG(seen == 1, "%s listed %d times in expect.tsv", de->d_name,
                  seen);
    }
    if (d)
        closedir(d);
    CHECK_MSG(files == count, "%d files, %d lines", files, count);
    free(listed);
    free(tsv);
}

static void
test_field_order(void)
{
    /* several faults: the first in the documented order wins */
    json_t *b = with(base(), "priority", STR("urgent"));
    with(b, "type", STR("BAD"));
    BAD(b, "type", "outside");
    b = with(base(), "zzz", json_integer(1));
    with(b, "id", json_integer(1));
    BAD(b, "zzz", "unknown field");
    b = with(base(), "to", addr_list("t", 51));
    with(b, "from", STR("x"));
    BAD(b, "from", "not an address");
}

/* A refusal names the job when its id and org can be read: the worker
 * logs and dead-letters it without parsing it again. */
static void
test_ident(void)
{
    struct job *j = NULL;
    struct herr e;
    struct job_ident who;
    const char *bad = "{\"id\":\"inv-7\",\"type\":\"receipt\",\"org\":"
                      "\"acme\",\"account\":\"a\",\"from\":\"nope\"}";
    CHECK(job_parse_ident(bad, strlen(bad), &j, &e, &who) == HERR_INVALID);
    CHECK(j == NULL);
    CHECK_STR(e.field, "from");
    CHECK_STR(who.id, "inv-7");
    CHECK_STR(who.org, "acme");
    /* ids and orgs that are not of their form are not reported */
    const char *odd = "{\"id\":\"a b\",\"org\":7}";
    CHECK(job_parse_ident(odd, strlen(odd), &j, &e, &who) == HERR_INVALID);
    CHECK_STR(who.id, "");
    CHECK_STR(who.org, "");
    CHECK(job_parse_ident("{", 1, &j, &e, &who) == HERR_INVALID);
    CHECK_STR(who.id, "");
    /* not JSON (or not UTF-8) at all: only an id it begins with */
    const char *cut = " { \"id\" : \"cut-1\", \"type\": ";
    CHECK(job_parse_ident(cut, strlen(cut), &j, &e, &who) == HERR_INVALID);
    CHECK_STR(who.id, "cut-1");
    CHECK_STR(who.org, "");
    const char *bin = "{\"id\":\"bin-2\",\"text\":\"\xff\"}";
    CHECK(job_parse_ident(bin, strlen(bin), &j, &e, &who) == HERR_INVALID);
    CHECK_STR(who.id, "bin-2");
    const char *late = "{\"type\":1,\"id\":\"late\",";
    CHECK(job_parse_ident(late, strlen(late), &j, &e, &who) == HERR_INVALID);
    CHECK_STR(who.id, "");
    const char *bad_id = "{\"id\":\"a b\",";
    CHECK(job_parse_ident(bad_id, strlen(bad_id), &j, &e, &who) ==
          HERR_INVALID);
    CHECK_STR(who.id, "");
    /* ten MiB of empty objects is refused while parsing, by count */
    size_t n = 150000;
    char *many = malloc(3 * n + 64);
    size_t o = (size_t)sprintf(many, "{\"id\":\"m-1\",\"meta\":{\"x\":[");
    for (size_t i = 0; i < n; i++) {
        memcpy(many + o, "{},", 3);
        o += 3;
    }
    memcpy(many + o - 1, "]}}", 3);
    o += 2;
    CHECK(job_parse_ident(many, o, &j, &e, &who) == HERR_INVALID);
    CHECK(strstr(e.msg, "too many values") != NULL);
    free(many);
}

int
main(void)
{
    test_minimal();
    test_size_cap();
    test_ident();
    test_utf8();
    test_escape();
    test_json_errors();
    test_unknown_and_types();
    test_required();
    test_tokens();
    test_email();
    test_recipients();
    test_text_rules();
    test_attachments();
    test_send_at_priority();
    test_headers();
    test_meta();
    test_resend_of();
    test_assign_id();
    test_field_order();
    test_corpus_valid();
    test_corpus_hostile();
    return T_DONE("test_job");
}
