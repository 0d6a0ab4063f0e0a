/*
 * lib_mc — the Message Center through the handle: the store opened on
 * first use (no Redis needed), herald_mc_get / list / purge, resend (a
 * stored message enqueued again as a new job), and the store's schema
 * (herald_mc_migrate) and import from another store.
 */
#include "herald.h"
#include "clock.h"
#include "lib_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
need_mc(struct herald *h, struct herr *e)
{
    if (h->mc)
        return 0;
    return mc_open(h->s->mc, &h->mc, e);
}

int
herald_mc_get(struct herald *h, const char *id, struct mc_record **out,
              struct herr *e)
{
    *out = NULL;
    if (!job_valid_id(id))
        return herr_set(e, HERR_INVALID, "id",
                        "not a job id ([A-Za-z0-9._:-]{1,128})");
    int rc = need_mc(h, e);
    if (rc)
        return rc;
    return mc_get(h->mc, id, out, e);
}

int
herald_mc_list(struct herald *h, const struct mc_filter *f,
               struct mc_record ***out, size_t *n, char **next_cursor,
               struct herr *e)
{
    *out = NULL;
    *n = 0;
    if (next_cursor)
        *next_cursor = NULL;
    int rc = need_mc(h, e);
    if (rc)
        return rc;
    return mc_list(h->mc, f, out, n, next_cursor, e);
}

int
herald_mc_purge(struct herald *h, int dry_run, struct mc_purge_result *out,
                struct herr *e)
{
    memset(out, 0, sizeof *out);
    int rc = need_mc(h, e);
    if (rc)
        return rc;
    int64_t rec, body;
    mc_purge_cutoffs(h->s->mc_retention_days, h->s->mc_body_days,
                     clock_now_ms(), &rec, &body);
    return mc_purge(h->mc, rec, body, dry_run, 0, out, e);
}

/* A stored [{"email","name"}...] list as a job's (names kept). */
static json_t *
resend_addrs(const char *js)
{
    json_t *a = js ? json_loads(js, 0, NULL) : NULL;
    if (!json_is_array(a)) {
        json_decref(a);
        return NULL;
    }
    return a;
}

int
herald_mc_resend(struct herald *h, const char *id, const char *const *to,
                 size_t nto, char *new_id, struct herr *e)
{
    if (new_id)
        new_id[0] = '\0';
    for (size_t i = 0; i < nto; i++)
        if (!job_valid_email(to[i]))
            return herr_set(e, HERR_INVALID, NULL,
                            "to[%zu]: '%.80s' is not an address", i, to[i]);
    struct mc_record *r = NULL;
    int rc = herald_mc_get(h, id, &r, e);
    if (rc)
        return rc;
    json_t *att = resend_addrs(r->attachments_json);
    size_t natt = json_array_size(att);
    json_decref(att);
    if (natt) {
        rc = herr_set(e, HERR_PERM, "id",
                      "%s has %zu attachment%s, whose content is not kept: "
                      "it cannot be resent",
                      id, natt, natt == 1 ? "" : "s");
    } else if (r->body_expired || (r->text == NULL && r->html == NULL)) {
        rc = herr_set(e, HERR_PERM, "id",
                      "%s has no body any more (HERALD_MC_BODY_DAYS): it "
                      "cannot be resent",
                      id);
    }
    if (rc) {
        mc_record_free(r);
        return rc;
    }
    json_t *j = json_object();
    json_object_set_new(j, "type", json_string(r->type));
    json_object_set_new(j, "org", json_string(r->org));
    json_object_set_new(j, "account", json_string(r->account));
    json_object_set_new(j, "from", json_string(r->from));
    if (r->from_name)
        json_object_set_new(j, "from_name", json_string(r->from_name));
    if (nto) {
        json_t *a = json_array();
        for (size_t i = 0; i < nto; i++)
            json_array_append_new(a, json_string(to[i]));
        json_object_set_new(j, "to", a);
    } else {
        const char *lists[3][2] = {
            {"to", r->to_json}, {"cc", r->cc_json}, {"bcc", r->bcc_json}};
        for (int i = 0; i < 3; i++) {
            json_t *a = resend_addrs(lists[i][1]);
            if (a && json_array_size(a))
                json_object_set_new(j, lists[i][0], a);
            else
                json_decref(a);
        }
    }
    json_object_set_new(j, "subject",
                        json_string(r->subject ? r->subject : "(no subject)"));
    if (r->text)
        json_object_set_new(j, "text", json_string(r->text));
    if (r->html)
        json_object_set_new(j, "html", json_string(r->html));
    if (r->meta_json) {
        json_t *m = json_loads(r->meta_json, 0, NULL);
        if (json_is_object(m))
            json_object_set_new(j, "meta", m);
        else
            json_decref(m);
    }
    json_object_set_new(j, "resend_of", json_string(r->id));
    mc_record_free(r);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s == NULL)
        abort();
    rc = herald_enqueue(h, s, strlen(s), new_id, e);
    free(s);
    return rc;
}

/* ---- schema and import ---- */

int
herald_mc_migrate(struct herald *h, int *version, int *before, struct herr *e)
{
    *version = 0;
    *before = -1;
    int rc = need_mc(h, e);
    if (rc)
        return rc;
    return mc_schema_version(h->mc, version, before);
}

int
herald_mc_import(struct herald *h, const char *from_url,
                 struct mc_import_result *out, struct herr *e)
{
    memset(out, 0, sizeof *out);
    if (from_url == NULL || *from_url == '\0')
        return herr_set(e, HERR_INVALID, "from", "missing store URL");
    if (strcmp(from_url, h->s->mc) == 0)
        return herr_set(e, HERR_INVALID, "from",
                        "that is the configured store (HERALD_MC) itself");
    int rc = need_mc(h, e);
    if (rc)
        return rc;
    struct mc *src = NULL;
    rc = mc_open(from_url, &src, e);
    if (rc) {
        if (rc == HERR_INVALID && e)
            snprintf(e->field, sizeof e->field, "from");
        return rc;
    }
    rc = mc_import(h->mc, src, out, e);
    mc_close(src);
    return rc;
}
