/*
 * token — bearer tokens of herald-api (SPEC §9): what a token may do, and
 * how it is kept. Pure: no I/O (libherald stores, herald-api checks).
 *
 * A token is "hrld_" and 43 base64url characters (32 random bytes). Redis
 * keeps only its SHA-256 (<prefix>:tokens, hash: field = the hex digest,
 * value = the record below), so a stolen Redis dump gives no token.
 *
 * Record (compact JSON): {"name", "role": "support"|"app", "orgs": [...],
 * "resend": bool, "created_at": RFC 3339}. Role support reads every
 * organisation, or only `orgs` when any are given; role app reads its
 * `orgs` (at least one). `resend` allows POST …/resend (support only).
 */
#ifndef HERALD_TOKEN_H
#define HERALD_TOKEN_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

#define TOKEN_PREFIX "hrld_"
#define TOKEN_LEN (5 + 43)
#define TOKEN_HASH_LEN 64 /* hex SHA-256 */
#define TOKEN_NAME_MAX 64
#define TOKEN_ORGS_MAX 256

enum token_role { TOKEN_SUPPORT = 0, TOKEN_APP };

struct token_rec {
    char name[TOKEN_NAME_MAX + 1];
    enum token_role role;
    char **orgs; /* owned */
    size_t norgs;
    int resend;
    int64_t created_at;
};

/* A new random token into out (TOKEN_LEN + 1 bytes). */
void token_new(char out[TOKEN_LEN + 1]);

/* The hex SHA-256 of `token` (NUL-terminated) into out. */
void token_hash(const char *token, char out[TOKEN_HASH_LEN + 1]);

/* 1 when `s` has a token's form (so garbage is refused before Redis). */
int token_well_formed(const char *s);

/* 1 when `name` is a token name: [A-Za-z0-9._-]{1,64}. */
int token_valid_name(const char *name);

/* "support" / "app"; parse gives 0 or HERR_INVALID. */
const char *token_role_name(enum token_role r);
int token_role_parse(const char *s, enum token_role *out);

/* The record as compact JSON (new string), and back: 0 or HERR_INVALID
 * (a record that is not one: treated as no token). Free with
 * token_rec_clear. */
char *token_rec_dump(const struct token_rec *t);
int token_rec_parse(const char *json, size_t len, struct token_rec *out);
void token_rec_clear(struct token_rec *t);

/* 1 when the token may read organisation `org`. */
int token_may_read(const struct token_rec *t, const char *org);

#endif
