#include "org.h"
#include "clock.h"
#include "job.h"
#include "scheme.h"
#include "util.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void
org_free(struct org *o)
{
    if (o == NULL)
        return;
    free(o->org);
    free(o->name);
    free(o);
}

/* 0, or the offset + 1 of the first control character (C0, DEL or C1) in
 * the UTF-8 text s[0..len). */
static size_t
control_at(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] == 0x7f)
            return i + 1;
        /* U+0080..U+009F are C2 80..C2 9F. */
        if (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f)
            return i + 1;
    }
    return 0;
}

static int
check_name(const char *name, struct herr *e)
{
    size_t len = strlen(name);
    if (len == 0)
        return herr_set(e, HERR_INVALID, "name", "empty (1-%d bytes)",
                        ORG_NAME_MAX);
    if (len > ORG_NAME_MAX)
        return herr_set(e, HERR_TOOBIG, "name", "%zu bytes, longer than %d",
                        len, ORG_NAME_MAX);
    size_t bad = utf8_check((const unsigned char *)name, len);
    if (bad != len)
        return herr_set(e, HERR_INVALID, "name", "not valid UTF-8 at byte %zu",
                        bad);
    size_t ctl = control_at((const unsigned char *)name, len);
    if (ctl)
        return herr_set(e, HERR_INVALID, "name",
                        "contains a control character at byte %zu", ctl - 1);
    return 0;
}

int
org_check(const struct org *o, struct herr *e)
{
    if (o->org == NULL || !job_valid_org(o->org))
        return herr_set(e, HERR_INVALID, "org",
                        "'%.80s' is not an organisation ([A-Za-z0-9._-]{1,64})",
                        o->org ? o->org : "");
    int rc;
    if (o->name && (rc = check_name(o->name, e)) != 0)
        return rc;
    if (o->relay_daily_limit < 0 || o->relay_daily_limit > SCHEME_LIMIT_MAX)
        return herr_set(e, HERR_INVALID, "relay_daily_limit",
                        "%lld is not a positive integer (1-%lld)",
                        o->relay_daily_limit, SCHEME_LIMIT_MAX);
    if (o->updated_at < 0)
        return herr_set(e, HERR_INVALID, "updated_at", "before the epoch");
    return 0;
}

char *
org_to_json(const struct org *o)
{
    json_t *j = json_object();
    json_t *v = json_string(o->org ? o->org : "");
    json_object_set_new(j, "org", v ? v : json_string(""));
    if (o->name) {
        v = json_string(o->name); /* NULL when not UTF-8 (unchecked) */
        json_object_set_new(j, "name", v ? v : json_string(""));
    }
    if (o->relay_daily_limit)
        json_object_set_new(j, "relay_daily_limit",
                            json_integer(o->relay_daily_limit));
    char t[CLOCK_RFC3339_LEN];
    clock_rfc3339(o->updated_at, t);
    json_object_set_new(j, "updated_at", json_string(t));
    char *r = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (r == NULL)
        abort(); /* only allocation fails here */
    return r;
}

static int
get_str(json_t *o, const char *k, int required, char **out, struct herr *e)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL)
        return required ? herr_set(e, HERR_INVALID, k, "missing") : 0;
    if (!json_is_string(v))
        return herr_set(e, HERR_INVALID, k, "not a string");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return herr_set(e, HERR_INVALID, k, "contains a NUL byte");
    *out = xstrdup(json_string_value(v));
    return 0;
}

int
org_from_json(const char *json, size_t len, struct org **out, struct herr *e)
{
    *out = NULL;
    if (len > ORG_JSON_MAX)
        return herr_set(e, HERR_TOOBIG, NULL, "%zu bytes, over %d", len,
                        ORG_JSON_MAX);
    json_error_t jerr;
    json_t *j =
        json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (j == NULL)
        return herr_set(e, HERR_INVALID, NULL, "not JSON: %s (column %d)",
                        jerr.text, jerr.column);
    if (!json_is_object(j)) {
        json_decref(j);
        return herr_set(e, HERR_INVALID, NULL, "not a JSON object");
    }
    struct org *o = xcalloc(1, sizeof *o);
    char *at = NULL;
    int rc;
    if ((rc = get_str(j, "org", 1, &o->org, e)) != 0 ||
        (rc = get_str(j, "name", 0, &o->name, e)) != 0)
        goto fail;
    json_t *lim = json_object_get(j, "relay_daily_limit");
    if (lim) {
        if (!json_is_integer(lim) || json_integer_value(lim) < 1 ||
            json_integer_value(lim) > SCHEME_LIMIT_MAX) {
            rc = herr_set(e, HERR_INVALID, "relay_daily_limit",
                          "not an integer 1-%lld", SCHEME_LIMIT_MAX);
            goto fail;
        }
        o->relay_daily_limit = json_integer_value(lim);
    }
    if ((rc = get_str(j, "updated_at", 1, &at, e)) != 0)
        goto fail;
    if (clock_parse_rfc3339(at, &o->updated_at) != 0) {
        rc = herr_set(e, HERR_INVALID, "updated_at", "not an RFC 3339 time");
        goto fail;
    }
    if ((rc = org_check(o, e)) != 0)
        goto fail;
    free(at);
    json_decref(j);
    *out = o;
    return 0;
fail:
    free(at);
    json_decref(j);
    org_free(o);
    return rc;
}
