/*
 * fuzz_api_params — herald-api's query string as a Message Center filter
 * (api/params.c), from any bytes: NUL-separated "key=value" pairs. It
 * refuses cleanly or accepts, and what it accepts lists from a real (in
 * memory) store without an error: every value it lets through is one the
 * store takes.
 */
#include "../../api/params.h"
#include "../../common/mc.h"
#include "../../common/util.h"
#include "fuzz_common.h"

#include <string.h>

static struct mc *store;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (store == NULL) {
        struct herr e;
        if (mc_open("sqlite://:memory:", &store, &e) != 0)
            abort();
    }
    char *buf = xmalloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    struct api_param p[API_PARAMS_MAX + 2];
    size_t n = 0;
    for (char *s = buf; s < buf + size && n < API_PARAMS_MAX + 2;) {
        size_t len = strlen(s);
        char *eq = strchr(s, '=');
        p[n].key = s;
        p[n].value = eq ? eq + 1 : NULL;
        if (eq)
            *eq = '\0';
        n++;
        s += len + 1;
    }
    struct api_list l;
    struct herr e = {{0}, {0}};
    int rc = api_params_list(p, n, NULL, &l, &e);
    FUZZ_ASSERT(rc == 0 || rc == HERR_INVALID, "rc %d", rc);
    if (rc == 0) {
        struct mc_record **v = NULL;
        size_t cnt = 0;
        char *next = NULL;
        rc = mc_list(store, &l.f, &v, &cnt, &next, &e);
        FUZZ_ASSERT(rc == 0, "accepted, then the store refused: %s: %s",
                    e.field, e.msg);
        mc_records_free(v, cnt);
        free(next);
    } else {
        FUZZ_ASSERT(e.msg[0] != '\0', "a refusal without a message");
    }
    free(buf);
    return 0;
}
