/*
 * token: the form of a token, its hash, the stored record and what it may
 * read (common/token.h).
 */
#include "../../common/token.h"
#include "../../common/util.h"
#include "t.h"

#include <stdlib.h>
#include <string.h>

int
main(void)
{
    char a[TOKEN_LEN + 1], b[TOKEN_LEN + 1];
    token_new(a);
    token_new(b);
    CHECK(strlen(a) == TOKEN_LEN && strncmp(a, "hrld_", 5) == 0);
    CHECK(strcmp(a, b) != 0);
    CHECK(token_well_formed(a) && token_well_formed(b));
    CHECK(!token_well_formed(NULL) && !token_well_formed("") &&
          !token_well_formed("hrld_short"));
    char bad[TOKEN_LEN + 1];
    memcpy(bad, a, sizeof bad);
    bad[10] = '+';
    CHECK(!token_well_formed(bad));
    bad[10] = a[10];
    bad[0] = 'x';
    CHECK(!token_well_formed(bad));

    char h1[TOKEN_HASH_LEN + 1], h2[TOKEN_HASH_LEN + 1];
    token_hash("abc", h1);
    CHECK_STR(h1,
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015"
              "ad");
    token_hash(a, h1);
    token_hash(b, h2);
    CHECK(strcmp(h1, h2) != 0 && strlen(h1) == TOKEN_HASH_LEN);

    /* records round-trip; what they may read */
    const char *orgs[] = {"acme", "globex"};
    struct token_rec t = {.role = TOKEN_SUPPORT,
                          .orgs = (char **)orgs,
                          .norgs = 2,
                          .resend = 1,
                          .created_at = 1790000000000};
    snprintf(t.name, sizeof t.name, "support-1");
    char *js = token_rec_dump(&t);
    struct token_rec back;
    CHECK(token_rec_parse(js, strlen(js), &back) == 0);
    CHECK_STR(back.name, "support-1");
    CHECK(back.role == TOKEN_SUPPORT && back.norgs == 2 && back.resend == 1 &&
          back.created_at == 1790000000000);
    CHECK(token_may_read(&back, "acme") && token_may_read(&back, "globex") &&
          !token_may_read(&back, "initech") && !token_may_read(&back, NULL));
    token_rec_clear(&back);
    free(js);
    t.norgs = 0;
    js = token_rec_dump(&t);
    CHECK(token_rec_parse(js, strlen(js), &back) == 0);
    CHECK(token_may_read(&back, "anything")); /* support without orgs */
    token_rec_clear(&back);
    free(js);
    /* an app token without organisations reads nothing: not a token */
    t.role = TOKEN_APP;
    js = token_rec_dump(&t);
    CHECK(token_rec_parse(js, strlen(js), &back) == HERR_INVALID);
    free(js);
    static const char *const broken[] = {
        "",
        "[]",
        "{}",
        "{\"name\":\"a b\",\"role\":\"support\",\"orgs\":[]}",
        "{\"name\":\"a\",\"role\":\"boss\",\"orgs\":[]}",
        "{\"name\":\"a\",\"role\":\"support\",\"orgs\":[\"x y\"]}",
        "{\"name\":\"a\",\"role\":\"support\",\"orgs\":\"acme\"}"};
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++)
        CHECK_MSG(token_rec_parse(broken[i], strlen(broken[i]), &back) ==
                      HERR_INVALID,
                  "%s", broken[i]);
    enum token_role r;
    CHECK(token_role_parse("app", &r) == 0 && r == TOKEN_APP);
    CHECK(token_role_parse("App", &r) == HERR_INVALID);
    CHECK(token_valid_name("sup.port-1_x") && !token_valid_name("") &&
          !token_valid_name("a/b"));
    return T_DONE("token");
}
