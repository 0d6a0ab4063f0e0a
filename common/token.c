#include "token.h"
#include "clock.h"
#include "job.h"
#include "util.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
token_new(char out[TOKEN_LEN + 1])
{
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1)
        abort(); /* no randomness: no tokens */
    char b64[48];
    int n = EVP_EncodeBlock((unsigned char *)b64, raw, sizeof raw);
    while (n > 0 && b64[n - 1] == '=')
        n--;
    for (int i = 0; i < n; i++)
        b64[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    snprintf(out, TOKEN_LEN + 1, "%s%.*s", TOKEN_PREFIX, n, b64);
}

void
token_hash(const char *token, char out[TOKEN_HASH_LEN + 1])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token, strlen(token), d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

int
token_well_formed(const char *s)
{
    size_t pl = strlen(TOKEN_PREFIX);
    if (s == NULL || strlen(s) != TOKEN_LEN || strncmp(s, TOKEN_PREFIX, pl))
        return 0;
    for (const char *p = s + pl; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    return 1;
}

int
token_valid_name(const char *name)
{
    return job_valid_org(name); /* the same rule: [A-Za-z0-9._-]{1,64} */
}

const char *
token_role_name(enum token_role r)
{
    return r == TOKEN_APP ? "app" : "support";
}

int
token_role_parse(const char *s, enum token_role *out)
{
    if (s && strcmp(s, "support") == 0)
        *out = TOKEN_SUPPORT;
    else if (s && strcmp(s, "app") == 0)
        *out = TOKEN_APP;
    else
        return HERR_INVALID;
    return 0;
}

char *
token_rec_dump(const struct token_rec *t)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(t->name));
    json_object_set_new(o, "role", json_string(token_role_name(t->role)));
    json_t *a = json_array();
    for (size_t i = 0; i < t->norgs; i++)
        json_array_append_new(a, json_string(t->orgs[i]));
    json_object_set_new(o, "orgs", a);
    json_object_set_new(o, "resend", json_boolean(t->resend));
    char at[CLOCK_RFC3339_LEN];
    clock_rfc3339(t->created_at, at);
    json_object_set_new(o, "created_at", json_string(at));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (s == NULL)
        abort();
    return s;
}

void
token_rec_clear(struct token_rec *t)
{
    for (size_t i = 0; i < t->norgs; i++)
        free(t->orgs[i]);
    free(t->orgs);
    memset(t, 0, sizeof *t);
}

int
token_rec_parse(const char *json, size_t len, struct token_rec *out)
{
    memset(out, 0, sizeof *out);
    json_t *o = json_loadb(json, len, 0, NULL);
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *role = json_string_value(json_object_get(o, "role"));
    const char *at = json_string_value(json_object_get(o, "created_at"));
    json_t *orgs = json_object_get(o, "orgs");
    int rc = HERR_INVALID;
    if (!json_is_object(o) || !token_valid_name(name) ||
        token_role_parse(role, &out->role) != 0 || !json_is_array(orgs) ||
        json_array_size(orgs) > TOKEN_ORGS_MAX)
        goto out;
    snprintf(out->name, sizeof out->name, "%s", name);
    out->resend = json_is_true(json_object_get(o, "resend"));
    if (at)
        clock_parse_rfc3339(at, &out->created_at);
    size_t i;
    json_t *v;
    out->orgs = xcalloc(json_array_size(orgs) + 1, sizeof *out->orgs);
    json_array_foreach(orgs, i, v)
    {
        const char *org = json_string_value(v);
        if (!job_valid_org(org)) {
            token_rec_clear(out);
            goto out;
        }
        out->orgs[out->norgs++] = xstrdup(org);
    }
    if (out->role == TOKEN_APP && out->norgs == 0) {
        token_rec_clear(out); /* an app token reads nothing at all */
        goto out;
    }
    rc = 0;
out:
    json_decref(o);
    return rc;
}

int
token_may_read(const struct token_rec *t, const char *org)
{
    if (t->role == TOKEN_SUPPORT && t->norgs == 0)
        return 1;
    for (size_t i = 0; i < t->norgs; i++)
        if (org && strcmp(t->orgs[i], org) == 0)
            return 1;
    return 0;
}
