/*
 * fuzz_tzwin — the input is a zone file: written to a private temporary
 * directory and loaded with tzwin_load(). It must be refused with
 * HERR_INVALID (field "time_zone", a message) or load; a loaded zone's
 * offsets stay within RFC 8536's bounds and its days partition the time
 * line: day_start(t) <= t < next_day_start(t), a next day starts where
 * day_start says, and no day is longer than the searches allow (for
 * instants within +-2^50 s; tzwin clamps the others).
 */
#include "../../common/tzwin.h"
#include "fuzz_common.h"

#include <string.h>
#include <unistd.h>

#define LIMIT (((int64_t)1 << 50) - 16 * 86400)

static char dir[256];
static char path[300];

static void
cleanup(void)
{
    unlink(path);
    rmdir(dir);
}

static void
setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/fuzz_tzwin.XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
    snprintf(path, sizeof path, "%s/Zone", dir);
    atexit(cleanup);
}

static void
check_days(const struct tzwin *z, int64_t t)
{
    long off = tzwin_offset(z, t);
    FUZZ_ASSERT(off >= -89999 && off <= 93599, "offset %ld at %lld", off,
                (long long)t);
    int64_t ds = tzwin_day_start(z, t), nx = tzwin_next_day_start(z, t);
    if (t < -LIMIT || t > LIMIT) {
        /* tzwin clamps instants to +-2^50 s; next to that, only order */
        FUZZ_ASSERT(ds < nx, "t=%lld ds=%lld nx=%lld", (long long)t,
                    (long long)ds, (long long)nx);
        return;
    }
    FUZZ_ASSERT(ds <= t && t < nx, "t=%lld ds=%lld nx=%lld", (long long)t,
                (long long)ds, (long long)nx);
    FUZZ_ASSERT(nx - ds <= 8 * 86400, "a day of %lld s", (long long)(nx - ds));
    FUZZ_ASSERT(tzwin_day_start(z, nx) == nx, "next day at %lld starts at %lld",
                (long long)nx, (long long)tzwin_day_start(z, nx));
    FUZZ_ASSERT(tzwin_day_start(z, nx - 1) == ds, "day of %lld", (long long)t);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (dir[0] == '\0')
        setup();
    FILE *f = fopen(path, "wb");
    FUZZ_ASSERT(f != NULL, "cannot write %s", path);
    if (size)
        FUZZ_ASSERT(fwrite(data, 1, size, f) == size, "short write");
    fclose(f);
    struct tzwin *z = NULL;
    struct herr e = {{0}, {0}};
    int rc = tzwin_load(dir, "Zone", &z, &e);
    if (rc != 0) {
        FUZZ_ASSERT(rc == HERR_INVALID && z == NULL, "code %d", rc);
        FUZZ_ASSERT(strcmp(e.field, "time_zone") == 0 && e.msg[0],
                    "field '%s' msg '%s'", e.field, e.msg);
        return 0;
    }
    static const int64_t ts[] = {
        INT64_MIN, -2208988800, -1,         0,          1,
        951782400, 1711846800,  2147483647, 2871763200, INT64_MAX};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        check_days(z, ts[i]);
    /* Instants from the input itself (often the transition times). */
    for (size_t i = 0; i + 8 <= size && i < 512; i += 8) {
        uint64_t v = 0;
        for (int k = 0; k < 8; k++)
            v = v << 8 | data[i + k];
        check_days(z, (int64_t)v);
        check_days(z, (int64_t)(v - 1));
    }
    tzwin_free(z);
    return 0;
}
