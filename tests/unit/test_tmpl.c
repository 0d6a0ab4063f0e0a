#include "../../common/tmpl.h"
#include "../../common/util.h"
#include "t.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

/* ---- helpers ----------------------------------------------------------- */

/* A template JSON from its parts (NULL = absent), via jansson so any
 * content is escaped correctly. */
static char *
tj(const char *subject, const char *text, const char *html)
{
    json_t *o = json_object();
    if (subject)
        json_object_set_new(o, "subject", json_string(subject));
    if (text)
        json_object_set_new(o, "text", json_string(text));
    if (html)
        json_object_set_new(o, "html", json_string(html));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

/* Parses the parts; returns the code, *out the template (or NULL). */
static int
parse_parts(const char *subject, const char *text, const char *html,
            struct tmpl **out, struct herr *e)
{
    char *j = tj(subject, text, html);
    int rc = tmpl_parse(j, strlen(j), out, e);
    free(j);
    return rc;
}

static int
parse_str(const char *json, struct tmpl **out, struct herr *e)
{
    return tmpl_parse(json, strlen(json), out, e);
}

static void
clear(struct herr *e)
{
    memset(e, 0, sizeof *e);
}

/* "field: msg" of e. */
static const char *
fmt(const struct herr *e)
{
    static char out[HERR_FIELD_MAX + HERR_MSG_MAX + 8];
    herr_format(e, out, sizeof out);
    return out;
}

/* A syntax check of one part: returns the code and fills e. */
static int
syntax(const char *part, const char *src, struct herr *e)
{
    struct tmpl *t = NULL;
    clear(e);
    int rc;
    if (strcmp(part, "subject") == 0)
        rc = parse_parts(src, "body", NULL, &t, e);
    else if (strcmp(part, "text") == 0)
        rc = parse_parts("S", src, NULL, &t, e);
    else
        rc = parse_parts("S", NULL, src, &t, e);
    CHECK((rc == 0) == (t != NULL));
    tmpl_free(t);
    return rc;
}

/*
 * Renders a template whose one part `part` is `src` (the others plain)
 * with `data`; returns the code and that part's output in *got (new or
 * NULL).
 */
static int
render1(const char *part, const char *src, const char *data, char **got,
        struct herr *e)
{
    struct tmpl *t = NULL;
    *got = NULL;
    clear(e);
    int rc;
    if (strcmp(part, "subject") == 0)
        rc = parse_parts(src, "body", NULL, &t, e);
    else if (strcmp(part, "text") == 0)
        rc = parse_parts("S", src, NULL, &t, e);
    else
        rc = parse_parts("S", NULL, src, &t, e);
    CHECK_MSG(rc == 0, "parse %s: %s", src, fmt(e));
    if (rc)
        return rc;
    char *s = NULL, *x = NULL, *h = NULL;
    rc = tmpl_render(t, data, &s, &x, &h, e);
    if (rc) {
        CHECK(s == NULL && x == NULL && h == NULL);
    } else if (strcmp(part, "subject") == 0) {
        *got = s;
        s = NULL;
    } else if (strcmp(part, "text") == 0) {
        *got = x;
        x = NULL;
    } else {
        *got = h;
        h = NULL;
    }
    free(s);
    free(x);
    free(h);
    tmpl_free(t);
    return rc;
}

/* Renders and compares; counts one check. */
static void
expect(const char *part, const char *src, const char *data, const char *want)
{
    struct herr e;
    char *got;
    int rc = render1(part, src, data, &got, &e);
    CHECK_MSG(rc == 0 && got && strcmp(got, want) == 0,
              "%s %s with %s: rc %d (%s), got \"%s\", want \"%s\"", part, src,
              data ? data : "NULL", rc, fmt(&e), got ? got : "(null)", want);
    free(got);
}

/* Renders and expects failure with code, field and message. */
static void
expect_fail(const char *part, const char *src, const char *data, int code,
            const char *field, const char *msg)
{
    struct herr e;
    char *got;
    int rc = render1(part, src, data, &got, &e);
    CHECK_MSG(rc == code && got == NULL, "%s %s with %s: rc %d, want %d", part,
              src, data ? data : "NULL", rc, code);
    CHECK_STR(e.field, field);
    if (msg)
        CHECK_STR(e.msg, msg);
}

/* A JSON string literal of n copies of c, as {"key": "..."}. */
static char *
data_repeat(const char *key, char c, size_t n)
{
    char *v = xmalloc(n + 1);
    memset(v, c, n);
    v[n] = '\0';
    json_t *o = json_object();
    json_object_set_new(o, key, json_string(v));
    free(v);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* ---- names ------------------------------------------------------------- */

static void
test_names(void)
{
    CHECK(tmpl_valid_name("receipt"));
    CHECK(tmpl_valid_name("Receipt.v2_final-1"));
    char n64[65], n65[66];
    memset(n64, 'a', 64);
    n64[64] = '\0';
    memset(n65, 'a', 65);
    n65[65] = '\0';
    CHECK(tmpl_valid_name(n64));
    CHECK(!tmpl_valid_name(n65));
    CHECK(!tmpl_valid_name(""));
    CHECK(!tmpl_valid_name(NULL));
    CHECK(!tmpl_valid_name("a b"));
    CHECK(!tmpl_valid_name("a/b"));
    CHECK(!tmpl_valid_name("a:b"));
    CHECK(!tmpl_valid_name("caf\xc3\xa9"));
}

/* ---- the stored form --------------------------------------------------- */

static void
test_parse_form(void)
{
    struct tmpl *t = NULL;
    struct herr e;

    clear(&e);
    CHECK(parse_str("{\"subject\":\"Hi {{name}}\",\"text\":\"T\"}", &t, &e) ==
          0);
    CHECK(t && strcmp(t->subject, "Hi {{name}}") == 0);
    CHECK(t && t->text && strcmp(t->text, "T") == 0 && t->html == NULL);
    tmpl_free(t);

    CHECK(parse_str("{\"html\":\"<p>x</p>\",\"subject\":\"S\"}", &t, &e) == 0);
    CHECK(t && t->text == NULL && strcmp(t->html, "<p>x</p>") == 0);
    if (t) {
        char *j = tmpl_to_json(t);
        CHECK_STR(j, "{\"subject\":\"S\",\"html\":\"<p>x</p>\"}");
        free(j);
    }
    tmpl_free(t);

    /* round trip, all three parts, with characters JSON must escape */
    const char *src = "{\"text\":\"line1\\nline2 \\\"q\\\" \\u00e9 {{a.b}}\","
                      "\"subject\":\"Caf\\u00e9 {{ n }}\","
                      "\"html\":\"<b>{{{raw}}}</b>\\t\"}";
    CHECK(parse_str(src, &t, &e) == 0);
    if (t) {
        char *j = tmpl_to_json(t);
        CHECK_STR(j,
                  "{\"subject\":\"Caf\xc3\xa9 {{ n }}\",\"text\":\"line1\\n"
                  "line2 \\\"q\\\" \xc3\xa9 {{a.b}}\",\"html\":\"<b>{{{raw}}}"
                  "</b>\\t\"}");
        struct tmpl *t2 = NULL;
        CHECK(tmpl_parse(j, strlen(j), &t2, &e) == 0);
        CHECK(t2 && strcmp(t2->subject, t->subject) == 0 &&
              strcmp(t2->text, t->text) == 0 && strcmp(t2->html, t->html) == 0);
        tmpl_free(t2);
        free(j);
    }
    tmpl_free(t);

    /* an empty text is present */
    CHECK(parse_str("{\"subject\":\"\",\"text\":\"\"}", &t, &e) == 0);
    tmpl_free(t);

    /* not needing a NUL terminator: only len bytes are read */
    const char *two = "{\"subject\":\"S\",\"text\":\"x\"}GARBAGE";
    CHECK(tmpl_parse(two, strlen(two) - 7, &t, &e) == 0);
    tmpl_free(t);

    struct {
        const char *json;
        int code;
        const char *field;
        const char *msg_start;
    } bad[] = {
        {"", HERR_INVALID, "", "not JSON"},
        {"{\"subject\":", HERR_INVALID, "", "not JSON"},
        {"[1]", HERR_INVALID, "", "must be a JSON object"},
        {"\"x\"", HERR_INVALID, "", "must be a JSON object"},
        {"{\"text\":\"x\"}", HERR_INVALID, "subject", "is required"},
        {"{\"subject\":1,\"text\":\"x\"}", HERR_INVALID, "subject",
         "must be a string"},
        {"{\"subject\":null,\"text\":\"x\"}", HERR_INVALID, "subject",
         "must be a string"},
        {"{\"subject\":\"S\",\"text\":[]}", HERR_INVALID, "text",
         "must be a string"},
        {"{\"subject\":\"S\",\"text\":\"x\",\"html\":{}}", HERR_INVALID, "html",
         "must be a string"},
        {"{\"subject\":\"S\"}", HERR_INVALID, "text", "text or html"},
        {"{\"subject\":\"S\",\"text\":\"x\",\"from\":\"a@b\"}", HERR_INVALID,
         "from", "unknown member"},
        {"{\"subject\":\"S\",\"text\":\"x\",\"text\":\"y\"}", HERR_INVALID, "",
         "not JSON"},
        {"{\"subject\":\"S\\u0000\",\"text\":\"x\"}", HERR_INVALID, "",
         "not JSON"},
        {"{\"subject\":\"a\\r\\nBcc: x@y\",\"text\":\"x\"}", HERR_INVALID,
         "subject", "contains a line break"},
        {"{\"subject\":\"a\\nb\",\"text\":\"x\"}", HERR_INVALID, "subject",
         "contains a line break"},
        {"{\"subject\":\"a\\tb\",\"text\":\"x\"}", HERR_INVALID, "subject",
         "contains a control character (U+0009)"},
        {"{\"subject\":\"a\\u0085b\",\"text\":\"x\"}", HERR_INVALID, "subject",
         "contains a control character (U+0085)"},
        {"{\"subject\":\"a\\u2028b\",\"text\":\"x\"}", HERR_INVALID, "subject",
         "contains a control character (U+2028)"},
        {"{\"subject\":\"a\\u007fb\",\"text\":\"x\"}", HERR_INVALID, "subject",
         "contains a control character (U+007F)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear(&e);
        t = (struct tmpl *)1;
        int rc = parse_str(bad[i].json, &t, &e);
        CHECK_MSG(rc == bad[i].code && t == NULL, "%s: rc %d", bad[i].json, rc);
        CHECK_MSG(strcmp(e.field, bad[i].field) == 0, "%s: field '%s'",
                  bad[i].json, e.field);
        CHECK_MSG(strncmp(e.msg, bad[i].msg_start, strlen(bad[i].msg_start)) ==
                      0,
                  "%s: msg '%s'", bad[i].json, e.msg);
    }

    /* not UTF-8 */
    const char raw[] = "{\"subject\":\"\xff\",\"text\":\"x\"}";
    clear(&e);
    CHECK(tmpl_parse(raw, sizeof raw - 1, &t, &e) == HERR_INVALID);
    CHECK(t == NULL && strncmp(e.msg, "not JSON", 8) == 0);

    /* e may be NULL */
    CHECK(parse_str("{}", &t, NULL) == HERR_INVALID && t == NULL);
}

/* ---- caps -------------------------------------------------------------- */

static void
test_caps(void)
{
    struct tmpl *t = NULL;
    struct herr e;
    char *big;

    /* subject: 998 bytes accepted, 999 refused */
    big = xmalloc(1000);
    memset(big, 's', 999);
    big[998] = '\0';
    CHECK(parse_parts(big, "x", NULL, &t, &e) == 0);
    tmpl_free(t);
    big[998] = 's';
    big[999] = '\0';
    clear(&e);
    CHECK(parse_parts(big, "x", NULL, &t, &e) == HERR_TOOBIG && t == NULL);
    CHECK_STR(e.field, "subject");
    CHECK_STR(e.msg, "is 999 bytes, at most 998");
    free(big);

    /* each part: 1 MiB accepted, 1 MiB + 1 refused */
    big = xmalloc(TMPL_PART_MAX + 2);
    memset(big, 'h', TMPL_PART_MAX + 1);
    big[TMPL_PART_MAX] = '\0';
    CHECK(parse_parts("S", big, big, &t, &e) == 0);
    tmpl_free(t);
    big[TMPL_PART_MAX] = 'h';
    big[TMPL_PART_MAX + 1] = '\0';
    clear(&e);
    CHECK(parse_parts("S", NULL, big, &t, &e) == HERR_TOOBIG && t == NULL);
    CHECK_STR(e.field, "html");
    clear(&e);
    CHECK(parse_parts("S", big, NULL, &t, &e) == HERR_TOOBIG);
    CHECK_STR(e.field, "text");
    free(big);

    /* the stored JSON as a whole */
    size_t n = TMPL_JSON_MAX + 1;
    big = xmalloc(n);
    memset(big, ' ', n);
    clear(&e);
    CHECK(tmpl_parse(big, n, &t, &e) == HERR_TOOBIG && t == NULL);
    CHECK_STR(e.field, "");
    free(big);

    /* a {{name}} of TMPL_VAR_MAX bytes is fine, one more is not */
    char name[TMPL_VAR_MAX + 2];
    memset(name, 'v', sizeof name);
    name[TMPL_VAR_MAX] = '\0';
    char *src = xasprintf("{{%s}}", name);
    CHECK(syntax("text", src, &e) == 0);
    char *data = xasprintf("{\"%s\":\"ok\"}", name);
    expect("text", src, data, "ok");
    free(data);
    free(src);
    name[TMPL_VAR_MAX] = 'v';
    name[TMPL_VAR_MAX + 1] = '\0';
    src = xasprintf("x{{%s}}", name);
    CHECK(syntax("text", src, &e) == HERR_INVALID);
    CHECK_STR(e.field, "text");
    CHECK_STR(e.msg, "name at byte 1 is 129 bytes, at most 128");
    free(src);
}

/* ---- syntax ------------------------------------------------------------ */

/* Marks a case that must fail with "bad name ..." in its part. */
static const char BAD[] = "bad name";

static void
test_syntax(void)
{
    struct herr e;

    /* the position is the byte offset of the opening braces */
    char html[200];
    memset(html, 'x', 120);
    strcpy(html + 120, "{{ total ");
    CHECK(syntax("html", html, &e) == HERR_INVALID);
    CHECK_STR(fmt(&e), "html: unclosed {{ at byte 120");

    struct {
        const char *part, *src, *want; /* want: "field: msg", NULL = ok */
    } cases[] = {
        {"text", "plain text, no tags", NULL},
        {"text", "{{a}}", NULL},
        {"text", "{{ a }}", NULL},
        {"text", "{{\ta.b_c.D9\n}}", NULL},
        {"text", "}} lone closers are literal }}", NULL},
        {"text", "a { single } brace", NULL},
        {"html", ".x{color:{{c}}}", NULL},
        {"html", "@media(max-width:6px){.a{b:c}}", NULL},
        {"html", "{{{raw}}} and {{{ raw.x }}}", NULL},
        {"html", "{{a}}}", NULL}, /* a tag, then a literal brace */
        {"subject", "Order {{order.id}} ({{ n }})", NULL},
        {"text", "{{", "text: unclosed {{ at byte 0"},
        {"text", "ab{{a}", "text: unclosed {{ at byte 2"},
        {"text", "{{a}} {{b", "text: unclosed {{ at byte 6"},
        {"text", "{{a {{b}}", "text: unclosed {{ at byte 0"},
        {"html", "{{{a", "html: unclosed {{{ at byte 0"},
        {"html", "x{{{a}}", "html: {{{ at byte 1 is closed by }}, not }}}"},
        {"html", "{{{a}} }", "html: {{{ at byte 0 is closed by }}, not }}}"},
        {"text", "{{{a}}}",
         "text: {{{ at byte 0: raw {{{ }}} is only allowed in html"},
        {"subject", "S {{{a}}}",
         "subject: {{{ at byte 2: raw {{{ }}} is only allowed in html"},
        {"text", "{{}}", "text: empty {{ }} at byte 0"},
        {"text", "x {{  }}", "text: empty {{ }} at byte 2"},
        {"html", "{{{ }}}", "html: empty {{{ }}} at byte 0"},
        {"text", "{{a..b}}",
         "text: bad name 'a..b' at byte 0 (names are letters, digits and _, "
         "joined by dots)"},
        {"text", "{{.a}}", BAD},
        {"text", "{{a.}}", BAD},
        {"text", "{{a-b}}", BAD},
        {"text", "{{a b}}", BAD},
        {"text", "{{#if x}}", BAD},
        {"text", "{{/if}}", BAD},
        {"text", "{{a\xc3\xa9}}", BAD},
        {"html", "{{{{a}}}}", BAD},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = syntax(cases[i].part, cases[i].src, &e);
        int bad_name = cases[i].want == BAD;
        if (bad_name) {
            CHECK_MSG(rc == HERR_INVALID && strstr(e.msg, "bad name"),
                      "%s: rc %d, %s", cases[i].src, rc, fmt(&e));
            CHECK_STR(e.field, cases[i].part);
        } else if (cases[i].want == NULL) {
            CHECK_MSG(rc == 0, "%s: rc %d, %s", cases[i].src, rc, fmt(&e));
        } else {
            CHECK_MSG(rc == HERR_INVALID, "%s: rc %d", cases[i].src, rc);
            CHECK_STR(fmt(&e), cases[i].want);
            CHECK_STR(e.field, cases[i].part);
        }
    }
    /* a non-printable name is not echoed */
    CHECK(syntax("html", "{{a\xc3\xa9}}", &e) == HERR_INVALID);
    CHECK(strncmp(e.msg, "bad name at byte 0", 18) == 0);
    /* parse reports the first part at fault: subject, then text, html */
    struct tmpl *t = NULL;
    clear(&e);
    CHECK(parse_parts("{{", "{{", "{{", &t, &e) == HERR_INVALID);
    CHECK_STR(e.field, "subject");
    clear(&e);
    CHECK(parse_parts("ok", "{{ok}}", "{{", &t, &e) == HERR_INVALID);
    CHECK_STR(e.field, "html");
}

/* ---- rendering --------------------------------------------------------- */

static void
test_render_values(void)
{
    const char *d =
        "{\"name\":\"Ada\",\"order\":{\"id\":\"A-17\",\"total\":"
        "{\"amount\":12.5,\"cents\":1250}},\"n\":-42,"
        "\"big\":9223372036854775807,\"small\":-9223372036854775807,"
        "\"tenth\":0.1,\"three\":3.0,\"huge\":1e300,\"neg\":-2.25,"
        "\"yes\":true,\"no\":false,\"nothing\":null,\"empty\":\"\","
        "\"utf\":\"caf\\u00e9 \\u2603\",\"braces\":\"{{name}}\","
        "\"nl\":\"a\\nb\"}";
    expect("text", "Hello {{name}}!", d, "Hello Ada!");
    expect("text", "{{ name }}{{name}}", d, "AdaAda");
    expect("text", "Order {{order.id}}: {{order.total.amount}} EUR", d,
           "Order A-17: 12.5 EUR");
    expect("text", "{{ order.total.cents }}", d, "1250");
    expect("text", "{{n}} {{big}} {{small}}", d,
           "-42 9223372036854775807 -9223372036854775807");
    expect("text", "{{tenth}} {{three}} {{huge}} {{neg}}", d,
           "0.1 3.0 1e+300 -2.25");
    expect("text", "{{yes}}/{{no}}/[{{nothing}}]/[{{empty}}]", d,
           "true/false/[]/[]");
    expect("text", "{{utf}}", d, "caf\xc3\xa9 \xe2\x98\x83");
    expect("text", "{{nl}}", d, "a\nb"); /* line breaks are fine in text */
    expect("html", "<p>{{nl}}</p>", d, "<p>a\nb</p>");
    /* values are never read as template syntax */
    expect("text", "{{braces}}", d, "{{name}}");
    expect("html", "{{braces}}", d, "{{name}}");
    /* literals around tags, lone braces */
    expect("text", "}}{ {{name}} }{", d, "}}{ Ada }{");
    expect("html", ".x{color:{{name}}}", d, ".x{color:Ada}");
    expect("text", "no tags at all", NULL, "no tags at all");
    expect("text", "", d, "");

    /* all three parts at once; absent parts are NULL */
    struct tmpl *t = NULL;
    struct herr e;
    clear(&e);
    CHECK(parse_parts("Receipt {{order.id}}", "Hi {{name}}", NULL, &t, &e) ==
          0);
    char *s = (char *)1, *x = (char *)1, *h = (char *)1;
    CHECK(tmpl_render(t, d, &s, &x, &h, &e) == 0);
    CHECK_STR(s, "Receipt A-17");
    CHECK_STR(x, "Hi Ada");
    CHECK(h == NULL);
    free(s);
    free(x);
    /* output pointers may be NULL: still rendered and checked */
    s = NULL;
    CHECK(tmpl_render(t, d, &s, NULL, NULL, &e) == 0);
    CHECK_STR(s, "Receipt A-17");
    free(s);
    clear(&e);
    CHECK(tmpl_render(t, "{\"order\":{\"id\":1}}", NULL, NULL, NULL, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "data.name");
    tmpl_free(t);
}

static void
test_render_errors(void)
{
    const char *d = "{\"name\":\"Ada\",\"order\":{\"id\":\"A-17\",\"items\":[1,"
                    "2]},\"s\":\"str\",\"n\":null}";
    expect_fail("text", "{{amount}}", d, HERR_INVALID, "data.amount",
                "missing");
    {
        struct herr e;
        char *got;
        render1("html", "x {{amount}}", d, &got, &e);
        CHECK_STR(fmt(&e), "data.amount: missing");
    }
    expect_fail("text", "{{order.total}}", d, HERR_INVALID, "data.order.total",
                "missing");
    expect_fail("text", "{{order.id.x}}", d, HERR_INVALID, "data.order.id.x",
                "missing (data.order.id is not an object)");
    expect_fail("text", "{{s.x.y}}", d, HERR_INVALID, "data.s.x.y",
                "missing (data.s is not an object)");
    expect_fail("text", "{{n.x}}", d, HERR_INVALID, "data.n.x",
                "missing (data.n is not an object)");
    expect_fail("text", "{{order}}", d, HERR_INVALID, "data.order",
                "is an object, not a value");
    expect_fail("html", "{{{order.items}}}", d, HERR_INVALID,
                "data.order.items", "is an array, not a value");
    expect_fail("subject", "Hi {{Name}}", d, HERR_INVALID, "data.Name",
                "missing"); /* names are case-sensitive */
    /* no data at all: {} */
    expect_fail("text", "{{name}}", NULL, HERR_INVALID, "data.name", "missing");
    /* bad data */
    expect_fail("text", "x", "[1,2]", HERR_INVALID, "data",
                "must be an object");
    expect_fail("text", "x", "\"s\"", HERR_INVALID, "data",
                "must be an object");
    expect_fail("text", "x", "{\"a\":", HERR_INVALID, "data", NULL);
    expect_fail("text", "x", "{\"a\":1,\"a\":2}", HERR_INVALID, "data", NULL);
    /* the first error in part order wins: subject before text before html */
    struct tmpl *t = NULL;
    struct herr e;
    clear(&e);
    CHECK(parse_parts("{{s1}}", "{{t1}}", "{{h1}}", &t, &e) == 0);
    CHECK(tmpl_render(t, "{}", NULL, NULL, NULL, &e) == HERR_INVALID);
    CHECK_STR(e.field, "data.s1");
    CHECK(tmpl_render(t, "{\"s1\":1}", NULL, NULL, NULL, &e) == HERR_INVALID);
    CHECK_STR(e.field, "data.t1");
    CHECK(tmpl_render(t, "{\"s1\":1,\"t1\":2}", NULL, NULL, NULL, &e) ==
          HERR_INVALID);
    CHECK_STR(e.field, "data.h1");
    CHECK(tmpl_render(t, "{\"s1\":1,\"t1\":2,\"h1\":3}", NULL, NULL, NULL,
                      NULL) == 0);
    tmpl_free(t);
}

static void
test_html_escaping(void)
{
    const char *d = "{\"x\":\"<script>alert('1' & \\\"2\\\")</script>\","
                    "\"link\":\"a\\\" onclick=\\\"evil()\",\"amp\":\"&amp;\"}";
    expect("html", "<p>{{x}}</p>", d,
           "<p>&lt;script&gt;alert(&#39;1&#39; &amp; &quot;2&quot;)"
           "&lt;/script&gt;</p>");
    expect("html", "<a href=\"{{link}}\">", d,
           "<a href=\"a&quot; onclick=&quot;evil()\">");
    expect("html", "{{amp}}", d, "&amp;amp;");
    /* raw: inserted as is */
    expect("html", "<div>{{{x}}}</div>", d,
           "<div><script>alert('1' & \"2\")</script></div>");
    /* literal html around values is never touched */
    expect("html", "<b>&nbsp;</b>{{amp}}", d, "<b>&nbsp;</b>&amp;amp;");
    /* text and subject are not HTML */
    expect("text", "{{x}}", d, "<script>alert('1' & \"2\")</script>");
    expect("subject", "{{amp}} <{{link}}>", d, "&amp; <a\" onclick=\"evil()>");
    /* numbers and booleans need no escaping but pass through the same path */
    expect("html", "{{n}}{{b}}", "{\"n\":-1.5,\"b\":true}", "-1.5true");
}

static void
test_subject_injection(void)
{
    struct {
        const char *data, *msg;
    } inj[] = {
        {"{\"v\":\"Hi\\r\\nBcc: victim@example.com\"}",
         "subject: contains a line break"},
        {"{\"v\":\"x\\nBcc: victim@example.com\"}",
         "subject: contains a line break"},
        {"{\"v\":\"x\\rTo: a@b\"}", "subject: contains a line break"},
        {"{\"v\":\"tab\\there\"}",
         "subject: contains a control character (U+0009)"},
        {"{\"v\":\"nul-ish \\u0001\"}",
         "subject: contains a control character (U+0001)"},
        {"{\"v\":\"del \\u007f\"}",
         "subject: contains a control character (U+007F)"},
        {"{\"v\":\"next line \\u0085\"}",
         "subject: contains a control character (U+0085)"},
        {"{\"v\":\"ls \\u2028 x\"}",
         "subject: contains a control character (U+2028)"},
        {"{\"v\":\"ps \\u2029\"}",
         "subject: contains a control character (U+2029)"},
    };
    for (size_t i = 0; i < sizeof inj / sizeof inj[0]; i++) {
        expect_fail("subject", "Re: {{v}}", inj[i].data, HERR_INVALID, "data.v",
                    inj[i].msg);
        /* the same value is fine in a body */
        struct herr e;
        char *got;
        CHECK(render1("text", "{{v}}", inj[i].data, &got, &e) == 0);
        free(got);
    }
    {
        struct herr e;
        char *got;
        render1("subject", "Re: {{v}}", inj[0].data, &got, &e);
        CHECK_STR(fmt(&e), "data.v: subject: contains a line break");
    }
    /* nested and raw-looking values are checked too */
    expect_fail("subject", "{{a.b.c}}", "{\"a\":{\"b\":{\"c\":\"x\\ny\"}}}",
                HERR_INVALID, "data.a.b.c", "subject: contains a line break");
    /* fine: other non-ASCII, and characters next to the control ranges */
    expect("subject", "{{v}}", "{\"v\":\"\\u00a0caf\\u00e9 \\u2027 ~\"}",
           "\xc2\xa0"
           "caf\xc3\xa9 \xe2\x80\xa7 ~");

    /* length: the rendered subject stays within 998 bytes */
    {
        struct herr e;
        char *got;
        char *d = data_repeat("x", 'a', 998);
        CHECK(render1("subject", "{{x}}", d, &got, &e) == 0);
        CHECK(got && strlen(got) == 998);
        free(got);
        free(d);
        d = data_repeat("x", 'a', 999);
        CHECK(render1("subject", "{{x}}", d, &got, &e) == HERR_TOOBIG);
        CHECK_STR(e.field, "data.x");
        CHECK_STR(e.msg, "subject: longer than 998 bytes after rendering");
        free(d);
        /* 996 from data + 3 literal = 999: the literal passed the cap */
        d = data_repeat("x", 'a', 996);
        CHECK(render1("subject", "{{x}}abc", d, &got, &e) == HERR_TOOBIG);
        CHECK_STR(e.field, "subject");
        CHECK(render1("subject", "{{x}}ab", d, &got, &e) == 0);
        CHECK(got && strlen(got) == 998);
        free(got);
        free(d);
        /* the same 999 bytes are fine in a body */
        d = data_repeat("x", 'a', 999);
        CHECK(render1("text", "{{x}}", d, &got, &e) == 0);
        free(got);
        free(d);
    }
}

static void
test_output_cap(void)
{
    struct herr e;
    char *got;
    size_t half = TMPL_OUTPUT_MAX / 2 - 1;
    char *d = data_repeat("x", 'z', half);
    /* "SS" + 2 * (5 MiB - 1) = exactly 10 MiB: accepted */
    struct tmpl *t = NULL;
    clear(&e);
    CHECK(parse_parts("SS", "{{x}}{{x}}", NULL, &t, &e) == 0);
    char *s = NULL, *x = NULL;
    CHECK(tmpl_render(t, d, &s, &x, NULL, &e) == 0);
    CHECK(s && x && strlen(s) + strlen(x) == TMPL_OUTPUT_MAX);
    free(s);
    free(x);
    tmpl_free(t);
    /* one byte more: refused, naming the value that passed the cap */
    CHECK(parse_parts("SSS", "{{x}}{{x}}", NULL, &t, &e) == 0);
    clear(&e);
    s = (char *)1;
    x = (char *)1;
    CHECK(tmpl_render(t, d, &s, &x, NULL, &e) == HERR_TOOBIG);
    CHECK(s == NULL && x == NULL);
    CHECK_STR(e.field, "data.x");
    CHECK(strstr(e.msg, "text: rendered output over") != NULL);
    tmpl_free(t);
    /* the cap is over all parts: text and html together */
    CHECK(parse_parts("SSS", "{{x}}", "{{x}}", &t, &e) == 0);
    clear(&e);
    CHECK(tmpl_render(t, d, NULL, NULL, NULL, &e) == HERR_TOOBIG);
    CHECK_STR(e.field, "data.x");
    CHECK(strncmp(e.msg, "html:", 5) == 0);
    tmpl_free(t);
    free(d);

    /* escaping counts: 2.5 MiB of '&' becomes 12.5 MiB */
    d = data_repeat("a", '&', TMPL_OUTPUT_MAX / 4);
    CHECK(render1("html", "{{a}}", d, &got, &e) == HERR_TOOBIG);
    CHECK_STR(e.field, "data.a");
    CHECK(render1("html", "{{{a}}}", d, &got, &e) == 0);
    CHECK(got && strlen(got) == TMPL_OUTPUT_MAX / 4);
    free(got);
    CHECK(render1("text", "{{a}}", d, &got, &e) == 0);
    free(got);
    free(d);
    /* 2 MiB of '<' becomes 8 MiB: fine */
    d = data_repeat("a", '<', 2u * 1024 * 1024);
    CHECK(render1("html", "{{a}}", d, &got, &e) == 0);
    CHECK(got && strlen(got) == 8u * 1024 * 1024 &&
          strncmp(got, "&lt;&lt;", 8) == 0);
    free(got);
    free(d);

    /* many small tags add up too: a 1 MiB template of {{v}} with a 64-byte
     * value would give ~13 MiB */
    size_t reps = TMPL_PART_MAX / 5;
    char *src = xmalloc(reps * 5 + 1);
    for (size_t i = 0; i < reps; i++)
        memcpy(src + i * 5, "{{v}}", 5);
    src[reps * 5] = '\0';
    d = data_repeat("v", 'q', 64);
    CHECK(render1("text", src, d, &got, &e) == HERR_TOOBIG);
    CHECK_STR(e.field, "data.v");
    free(d);
    d = data_repeat("v", 'q', 8); /* ~1.7 MiB: fine */
    CHECK(render1("text", src, d, &got, &e) == 0);
    CHECK(got && strlen(got) == reps * 8);
    free(got);
    free(d);
    free(src);

    /* data over its cap */
    size_t dn = TMPL_DATA_MAX + 1;
    char *bigdata = xmalloc(dn + 1);
    memset(bigdata, ' ', dn);
    bigdata[0] = '{';
    bigdata[dn - 1] = '}';
    bigdata[dn] = '\0';
    expect_fail("text", "x", bigdata, HERR_TOOBIG, "data", NULL);
    bigdata[dn - 2] = '}';
    bigdata[dn - 1] = '\0';
    expect("text", "x", bigdata, "x");
    free(bigdata);
}

/* Random templates built from the syntax's own characters: parse never
 * crashes; an accepted one round-trips through tmpl_to_json and renders or
 * fails with a named field. */
static void
test_fuzz(void)
{
    static const char alphabet[] = "{{}}{}a.b x_\n<&";
    const char *d = "{\"a\":\"<v>\",\"b\":{\"x\":1},\"x\":null,\"a_b\":2.5}";
    unsigned seed = 12345;
    int accepted = 0, rendered = 0, all_ok = 1;
    for (int round = 0; round < 20000; round++) {
        char src[40];
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 16) % (sizeof src - 1);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            src[i] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        src[n] = '\0';
        struct tmpl *t = NULL;
        struct herr e;
        clear(&e);
        int rc = parse_parts("S", src, src, &t, &e);
        if (rc) {
            all_ok &= (rc == HERR_INVALID && t == NULL && e.msg[0] &&
                       (strcmp(e.field, "text") == 0 ||
                        strcmp(e.field, "html") == 0));
            continue;
        }
        accepted++;
        char *j = tmpl_to_json(t);
        struct tmpl *t2 = NULL;
        all_ok &= tmpl_parse(j, strlen(j), &t2, NULL) == 0 && t2 &&
                  strcmp(t2->text, src) == 0 && strcmp(t2->html, src) == 0;
        tmpl_free(t2);
        free(j);
        char *x = NULL, *h = NULL;
        rc = tmpl_render(t, d, NULL, &x, &h, &e);
        if (rc == 0) {
            rendered++;
            all_ok &= x != NULL && h != NULL && strstr(h, "<v>") == NULL;
        } else {
            all_ok &= rc == HERR_INVALID && strncmp(e.field, "data.", 5) == 0;
        }
        free(x);
        free(h);
        tmpl_free(t);
    }
    CHECK(all_ok);
    CHECK(accepted > 1000);
    CHECK(rendered > 100);
}

int
main(void)
{
    test_names();
    test_parse_form();
    test_caps();
    test_syntax();
    test_render_values();
    test_render_errors();
    test_html_escaping();
    test_subject_injection();
    test_output_cap();
    test_fuzz();
    return T_DONE("tmpl");
}
