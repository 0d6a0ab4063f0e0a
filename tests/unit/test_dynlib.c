/*
 * test_dynlib — libraries loaded on first use (io/dynlib.h, and the two
 * tables built on it, io/pqlib.h and io/curllib.h).
 *
 *   - a library that exists: every slot filled with the address dlsym
 *     gives (checked by calling it), the same answer on a second call;
 *   - a library that does not exist, and one without a wanted function:
 *     -1 with the reason, nothing half-filled, the same answer again;
 *   - pqlib_load and curllib_load against Debian's libpq5 and libcurl4
 *     (both installed by `make deps`): the tables work (a refused
 *     connection, an easy handle), with neither library linked into this
 *     test.
 */
#include "../../common/err.h"
#include "../../io/curllib.h"
#include "../../io/dynlib.h"
#include "../../io/pqlib.h"
#include "t.h"

#include <string.h>

struct libc_api {
    size_t (*strlen)(const char *);
    int (*abs)(int);
};

static void
test_loads(void)
{
    static const char *const names[] = {"strlen", "abs"};
    struct libc_api api = {0};
    struct dynlib d = {"libc.so.6", names, 2, &api, 0, ""};
    CHECK(dynlib_load(&d) == 0);
    CHECK(api.strlen != NULL && api.strlen("herald") == 6);
    CHECK(api.abs != NULL && api.abs(-3) == 3);
    CHECK(dynlib_load(&d) == 0); /* again: loaded */
}

static void
test_refused(void)
{
    static const char *const names[] = {"strlen", "no_such_function_here"};
    struct libc_api api = {0};
    struct dynlib d = {"libc.so.6", names, 2, &api, 0, ""};
    CHECK(dynlib_load(&d) == -1);
    CHECK_MSG(strstr(d.why, "no_such_function_here") != NULL, "%s", d.why);
    CHECK(dynlib_load(&d) == -1); /* the same answer, not a retry */

    struct dynlib none = {"libherald-none.so.9", names, 1, &api, 0, ""};
    CHECK(dynlib_load(&none) == -1);
    CHECK_MSG(strstr(none.why, "libherald-none.so.9") != NULL, "%s", none.why);
}

static void
test_tables(void)
{
    struct herr e;
    memset(&e, 0, sizeof e);
    CHECK_MSG(pqlib_load(&e) == 0, "%s", e.msg);
    if (pqlib.PQconnectdb) {
        /* no server behind this socket directory: a clean refusal */
        PGconn *c = pqlib.PQconnectdb(
            "host=/nonexistent-herald-dir dbname=x connect_timeout=1");
        CHECK(c != NULL);
        CHECK(pqlib.PQstatus(c) == CONNECTION_BAD);
        CHECK(strlen(pqlib.PQerrorMessage(c)) > 0);
        pqlib.PQfinish(c);
    }
    CHECK(pqlib_load(&e) == 0);

    memset(&e, 0, sizeof e);
    CHECK_MSG(curllib_load(&e) == 0, "%s", e.msg);
    if (curllib.curl_easy_init) {
        CURL *h = curllib.curl_easy_init();
        CHECK(h != NULL);
        CHECK(curllib.curl_easy_setopt(h, CURLOPT_URL, "imap://127.0.0.1") ==
              CURLE_OK);
        CHECK_STR(curllib.curl_easy_strerror(CURLE_OK), "No error");
        curllib.curl_easy_cleanup(h);
    }
}

int
main(void)
{
    test_loads();
    test_refused();
    test_tables();
    return T_DONE("test_dynlib");
}
