/*
 * lib_templates — message templates in <prefix>:templates (one field a
 * name): herald_template_set (checked by tmpl_parse, stored canonical),
 * get, list (sorted) and remove.
 */
#include "herald.h"
#include "keys.h"
#include "lib_internal.h"
#include "tmpl.h"
#include "util.h"

#include <hiredis.h>
#include <stdlib.h>
#include <string.h>

static int
template_key(struct herald *h, char *out, size_t n, struct herr *e)
{
    if (keys_simple(out, n, h->s->prefix, "templates") < 0)
        return herr_set(e, HERR_INVALID, "HERALD_PREFIX", "prefix too long");
    return 0;
}

static int
check_template_name(const char *name, struct herr *e)
{
    if (!tmpl_valid_name(name))
        return herr_set(e, HERR_INVALID, "name",
                        "not a template name ([A-Za-z0-9._-]{1,64})");
    return 0;
}

int
herald_template_set(struct herald *h, const char *name, const char *json,
                    size_t len, struct herr *e)
{
    char key[KEYS_MAX];
    int rc = check_template_name(name, e);
    if (rc)
        return rc;
    struct tmpl *t;
    if ((rc = tmpl_parse(json, len, &t, e)) != 0)
        return rc;
    char *canon = tmpl_to_json(t);
    tmpl_free(t);
    rc = template_key(h, key, sizeof key, e);
    if (rc == 0) {
        redisReply *r =
            lh_command(h, e, "HSET %s %s %b", key, name, canon, strlen(canon));
        if (r == NULL)
            rc = HERR_REDIS;
        else
            freeReplyObject(r);
    }
    free(canon);
    return rc;
}

int
herald_template_get(struct herald *h, const char *name, char **json,
                    struct herr *e)
{
    *json = NULL;
    char key[KEYS_MAX];
    int rc = check_template_name(name, e);
    if (rc == 0)
        rc = template_key(h, key, sizeof key, e);
    if (rc)
        return rc;
    redisReply *r = lh_command(h, e, "HGET %s %s", key, name);
    if (r == NULL)
        return HERR_REDIS;
    if (r->type == REDIS_REPLY_STRING)
        *json = xstrndup(r->str, r->len);
    else
        rc = herr_set(e, HERR_NOTFOUND, "name", "no such template");
    freeReplyObject(r);
    return rc;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int
herald_template_list(struct herald *h, char ***names, size_t *n, struct herr *e)
{
    *names = NULL;
    *n = 0;
    char key[KEYS_MAX];
    int rc = template_key(h, key, sizeof key, e);
    if (rc)
        return rc;
    redisReply *r = lh_command(h, e, "HKEYS %s", key);
    if (r == NULL)
        return HERR_REDIS;
    size_t m = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
    char **v = m ? xcalloc(m, sizeof *v) : NULL;
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        const redisReply *el = r->element[i];
        if (el->type == REDIS_REPLY_STRING)
            v[k++] = xstrndup(el->str, el->len);
    }
    freeReplyObject(r);
    if (k)
        qsort(v, k, sizeof *v, cmp_str);
    *names = v;
    *n = k;
    return 0;
}

void
herald_template_names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int
herald_template_remove(struct herald *h, const char *name, struct herr *e)
{
    char key[KEYS_MAX];
    int rc = check_template_name(name, e);
    if (rc == 0)
        rc = template_key(h, key, sizeof key, e);
    if (rc)
        return rc;
    redisReply *r = lh_command(h, e, "HDEL %s %s", key, name);
    if (r == NULL)
        return HERR_REDIS;
    if (lh_reply_int(r) == 0)
        rc = herr_set(e, HERR_NOTFOUND, "name", "no such template");
    freeReplyObject(r);
    return rc;
}
