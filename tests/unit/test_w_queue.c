/* worker/queue.c's pure part through libworker.a: which Redis versions
 * the worker takes jobs from (the take needs BLMOVE and RPOP with a
 * count: 6.2), read from INFO server as Redis words it. */
#include "../../worker/queue.h"
#include "t.h"

#include <string.h>

static int
ok(const char *info, const char *want_version)
{
    char v[40];
    int r = queue_redis_version_ok(info, v, sizeof v);
    CHECK_MSG(strcmp(v, want_version) == 0, "version '%s', want '%s'", v,
              want_version);
    return r;
}

int
main(void)
{
    const char *head = "# Server\r\nredis_version:";
    const char *tail =
        "\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n";
    struct {
        const char *v;
        int ok;
    } cases[] = {{"7.0.15", 1}, {"6.2.0", 1},  {"6.2.14", 1},
                 {"7.2.4", 1},  {"10.0.0", 1}, {"6.0.16", 0},
                 {"5.0.14", 0}, {"6.1.9", 0},  {"3.2.12", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char info[256];
        snprintf(info, sizeof info, "%s%s%s", head, cases[i].v, tail);
        CHECK_MSG(ok(info, cases[i].v) == cases[i].ok, "%s", cases[i].v);
    }
    /* a server that does not say (a proxy): let it try */
    CHECK(ok("# Server\r\nuptime_in_seconds:5\r\n", "unknown") == 1);
    CHECK(ok(NULL, "unknown") == 1);
    /* the last line, without its CR LF */
    CHECK(ok("redis_version:6.0.9", "6.0.9") == 0);
    return T_DONE("test_w_queue");
}
