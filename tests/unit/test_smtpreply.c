/* common/smtpreply.c: reply lines and EHLO keywords, as the SMTP client
 * reads them. */
#include "../../common/smtpreply.h"
#include "t.h"

#include <string.h>

static int
parse(const char *s, struct smtpreply_line *l)
{
    return smtpreply_parse(s, strlen(s), l);
}

static void
test_lines(void)
{
    struct smtpreply_line l;
    CHECK(parse("250 2.0.0 Ok: queued as 12345\r\n", &l) == 0);
    CHECK(l.code == 250 && !l.more);
    CHECK(l.textlen == strlen("2.0.0 Ok: queued as 12345") &&
          memcmp(l.text, "2.0.0 Ok: queued as 12345", l.textlen) == 0);
    CHECK(parse("250-PIPELINING\r\n", &l) == 0 && l.code == 250 && l.more);
    CHECK(l.textlen == 10 && memcmp(l.text, "PIPELINING", 10) == 0);
    /* a bare code, with or without its line end */
    CHECK(parse("220", &l) == 0 && l.code == 220 && !l.more && l.textlen == 0);
    CHECK(parse("354\r\n", &l) == 0 && l.code == 354 && l.textlen == 0);
    CHECK(parse("421\n", &l) == 0 && l.code == 421);
    CHECK(parse("599 x", &l) == 0 && l.code == 599);
    /* LF alone ends a line too */
    CHECK(parse("452 4.5.3 Too many recipients\n", &l) == 0 && l.code == 452);
    CHECK(l.textlen == strlen("4.5.3 Too many recipients"));
    /* not replies */
    const char *bad[] = {"",     "\r\n",  "25",        "2500 x",  "250x",
                         "150 ", "650 x", "abc",       "25a x",   " 250 ok",
                         "2 50", "250\t", "HTTP/1.1 ", "250_ok\r"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_MSG(parse(bad[i], &l) == -1, "'%s' was read as a reply", bad[i]);
}

static struct smtpreply_caps
caps_of(const char *const *kw, size_t n)
{
    struct smtpreply_caps c;
    memset(&c, 0, sizeof c);
    for (size_t i = 0; i < n; i++)
        smtpreply_ehlo_keyword(kw[i], strlen(kw[i]), &c);
    return c;
}

static void
test_ehlo(void)
{
    const char *postfix[] = {"PIPELINING",
                             "SIZE 10240000",
                             "VRFY",
                             "ETRN",
                             "STARTTLS",
                             "AUTH PLAIN LOGIN",
                             "AUTH=PLAIN LOGIN",
                             "ENHANCEDSTATUSCODES",
                             "8BITMIME",
                             "DSN",
                             "SMTPUTF8",
                             "CHUNKING"};
    struct smtpreply_caps c = caps_of(postfix, 12);
    CHECK(c.pipelining && c.size && c.starttls && c.auth_plain &&
          c.auth_login && !c.auth_cram_md5);
    /* case does not matter; AUTH= is the old form */
    const char *lower[] = {"pipelining", "auth=login", "starttls"};
    c = caps_of(lower, 3);
    CHECK(c.pipelining && c.starttls && c.auth_login && !c.auth_plain);
    /* a CRAM-MD5-only server offers nothing else to log in with */
    const char *cram[] = {"AUTH CRAM-MD5"};
    c = caps_of(cram, 1);
    CHECK(c.auth && c.auth_cram_md5 && !c.auth_plain && !c.auth_login);
    /* AUTH without a mechanism Herald knows, and no AUTH at all */
    const char *other[] = {"AUTH GSSAPI NTLM"};
    c = caps_of(other, 1);
    CHECK(c.auth && !c.auth_plain && !c.auth_login && !c.auth_cram_md5);
    const char *none[] = {"PIPELINING", "STARTTLS"};
    c = caps_of(none, 2);
    CHECK(!c.auth);
    /* look-alikes name nothing */
    const char *near[] = {
        "PIPELININGX",  "AUTHPLAIN",          "STARTTLSX", "SIZEX",
        "X-AUTH PLAIN", "AUTH PLAINX LOGINX", ""};
    c = caps_of(near, 7);
    CHECK(!c.pipelining && !c.auth_plain && !c.auth_login && !c.starttls &&
          !c.size);
    /* several spaces, a trailing one */
    const char *spaced[] = {"AUTH  LOGIN   PLAIN ", "PIPELINING "};
    c = caps_of(spaced, 2);
    CHECK(c.auth_login && c.auth_plain && c.pipelining);
}

int
main(void)
{
    test_lines();
    test_ehlo();
    return T_DONE("test_smtpreply");
}
