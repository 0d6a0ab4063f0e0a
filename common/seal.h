/*
 * seal — sealing the SMTP/IMAP passwords of Email Sending Schemes with
 * AES-256-GCM (OpenSSL EVP) under the key of HERALD_SECRET_KEY_FILE.
 *
 * A sealed value is one printable token, safe to store in Redis, print or
 * log:
 *
 *   v1:<key id>:<base64 of nonce(12) || ciphertext || tag(16)>
 *
 *   - "v1" is the format; another version is refused, not guessed at.
 *   - the key id is 16 lowercase hex characters: the first 8 bytes of
 *     SHA-256("herald-key-id" || key). It names the key without revealing
 *     it, so a token says which key opens it and several keys can be
 *     loaded at once while `heraldctl key rotate` re-seals (old and new).
 *   - the nonce is 96 random bits (RAND_bytes) drawn for every seal, so
 *     two seals of the same password differ; the tag is 128 bits.
 *   - base64 is the standard alphabet with "=" padding (RFC 4648 §4).
 *
 * The authenticated data is the token's header "v1:<key id>:" followed by
 * the caller's `aad`, a context string such as "acme/email/smtp" (the
 * organisation, the scheme, which password). A token opens only with the
 * same `aad`, so a sealed value cannot be moved to another scheme or
 * another field, nor its header edited, without `seal_open` refusing it.
 *
 * Secrets never leave this module by a side door: no error message holds
 * a plaintext, a key byte or a token byte (the key id is not a secret and
 * is named). Key memory and secret memory (below: the plaintexts of
 * `seal_open`, copies from `seal_secret_dup`) are kept on pages of their
 * own, never on the heap: locked in RAM when the system allows it (mlock,
 * best effort), excluded from core dumps (MADV_DONTDUMP), and wiped
 * (OPENSSL_cleanse) when freed.
 *
 * No I/O: `seal_key_load`, which reads the key file, is io/seal_keyfile.c.
 */
#ifndef HERALD_SEAL_H
#define HERALD_SEAL_H

#include "err.h"

#include <stddef.h>

#define SEAL_KEY_LEN 32         /* AES-256 */
#define SEAL_NONCE_LEN 12       /* 96-bit GCM nonce */
#define SEAL_TAG_LEN 16         /* 128-bit GCM tag */
#define SEAL_KEYID_LEN 16       /* hex characters, without the NUL */
#define SEAL_PLAINTEXT_MAX 4096 /* bytes a sealed value may hold */
#define SEAL_TOKEN_MAX 8192     /* characters of a token, without NUL */
#define SEAL_AAD_MAX 1024       /* bytes of the caller's context */
#define SEAL_KEYFILE_MAX 256    /* a longer key file is refused unread */

struct seal_key;

/*
 * Reads a key file: exactly 32 raw bytes, or 64 hexadecimal characters
 * (upper or lower case), either optionally followed by one "\n" or one
 * "\r\n". The length decides the form: 32, 33 (+"\n") or 34 (+"\r\n")
 * bytes are raw, so a raw key whose own last byte is '\n' or '\r' is read
 * whole; 64, 65 or 66 bytes are hex. A file over SEAL_KEYFILE_MAX bytes
 * is refused after reading only that much.
 *
 * Returns 0 and a new key in *out (free with seal_key_free), or:
 *   HERR_IO       the file is missing or cannot be opened or read;
 *   HERR_INVALID  anything else: a directory, the wrong size ("is 31
 *                 bytes; expected 32 raw bytes or 64 hex characters"), a
 *                 non-hex character in a 64-character file (its position
 *                 is named, never its value).
 * The message names the file; `e->field` is left "" so the caller can
 * name the setting (HERALD_SECRET_KEY_FILE) there. *out is NULL on error.
 *
 * A key file readable by other users (mode o+r) is refused before it is
 * read: HERR_INVALID, "key file F is readable by other users (mode 0644):
 * chmod 600 it". One readable by its group only (a secret mounted 0440
 * for a service group) is accepted but flagged: see seal_key_warnings().
 */
int seal_key_load(const char *path, struct seal_key **out, struct herr *e);

/* The pure half of seal_key_load: a key from the `n` bytes of a key file
 * (named `name` in errors), with the SEAL_WARN_* bits the caller noticed
 * in `warnings` (SEAL_WARN_TEXT is added here). */
int seal_key_parse(const char *name, const unsigned char *b, size_t n,
                   unsigned warnings, struct seal_key **out, struct herr *e);

/* A key from 32 raw bytes (copied; the caller wipes its own copy). */
struct seal_key *seal_key_new(const unsigned char raw[SEAL_KEY_LEN]);

/* Wipes and frees the key; NULL is a no-op. */
void seal_key_free(struct seal_key *k);

/* The key id: SEAL_KEYID_LEN lowercase hex characters, owned by the key. */
const char *seal_key_id(const struct seal_key *k);

/*
 * What seal_key_load noticed about an accepted key file, as a bit set (0
 * for keys from seal_key_new):
 */
#define SEAL_WARN_MODE 1u /* the file is readable by its group */
#define SEAL_WARN_TEXT                                                         \
    2u /* the 32 "raw" bytes are all printable ASCII: a                        \
          passphrase or a 128-bit key in hex, not 32                           \
          random bytes (e.g. `openssl rand -hex 16`) */
unsigned seal_key_warnings(const struct seal_key *k);

/* A static sentence for one SEAL_WARN_* bit ("" for an unknown bit). */
const char *seal_warning_str(unsigned bit);

/*
 * Seals `len` bytes of `plaintext` (any bytes; NULs allowed) bound to
 * `aad` (NUL-terminated; NULL is taken as ""). Returns a new
 * NUL-terminated token (free with free()), or NULL when the plaintext is
 * over SEAL_PLAINTEXT_MAX, the aad over SEAL_AAD_MAX, or the system's
 * random generator or OpenSSL failed. A token is at most
 * SEAL_TOKEN_MAX characters.
 */
char *seal_seal(const struct seal_key *k, const char *plaintext, size_t len,
                const char *aad);

/*
 * Opens `token` with whichever of `keys[0..nkeys)` has its key id (NULL
 * entries are skipped) and checks it against `aad` (NULL is taken as "").
 * Returns 0 with a new NUL-terminated plaintext in *plaintext (its length,
 * not counting the terminator, in *len; it may contain NULs): a secret
 * (secret memory, below; one reference) which the caller frees with
 * seal_free_secret(), or:
 *   HERR_TOOBIG    the token is over SEAL_TOKEN_MAX, or holds more than
 *                  SEAL_PLAINTEXT_MAX bytes, or aad is over SEAL_AAD_MAX;
 *   HERR_INVALID   not a token (bad prefix, key id, base64 or length),
 *                  an unknown format version, or it "does not verify":
 *                  wrong key, wrong context (aad) or altered;
 *   HERR_NOTFOUND  "sealed with key <id>, which is not loaded".
 * On error *plaintext is NULL and *len 0; `e->field` is "" (the caller
 * knows which field held the token). Messages never quote the token.
 */
int seal_open(const struct seal_key *const *keys, size_t nkeys,
              const char *token, const char *aad, char **plaintext, size_t *len,
              struct herr *e);

/*
 * Copies the key id of a well-formed v1 token into `id` (NUL-terminated),
 * without opening it: for `heraldctl key rotate` (which tokens are not yet
 * under the new key) and for listing. Returns 0 or HERR_INVALID.
 */
int seal_token_key_id(const char *token, char id[SEAL_KEYID_LEN + 1]);

/*
 * Secret memory: where clear secrets live for as long as a program keeps
 * them (a worker keeps its schemes' opened passwords for the scheme
 * table's life). Pages of their own, as for the key: excluded from core
 * dumps, locked in RAM when allowed, wiped when freed; small secrets share
 * pages (slots of a few size classes), large ones get a mapping each.
 * Thread-safe.
 *
 * A secret is reference-counted: it is made with one reference,
 * seal_secret_ref adds one, seal_free_secret drops one and the last wipes
 * and frees it. So a borrower that may outlive the owner's copy (a job's
 * route across a reload of the scheme table, an IMAP copy on a worker
 * thread) takes a reference instead of a copy. A secret's bytes never
 * change after it is made; any thread holding a reference may read them.
 *
 * Only secrets from seal_open / seal_secret_dup / seal_secret_ref may be
 * given to seal_secret_ref, seal_secret_len and seal_free_secret; any
 * other pointer (heap memory, a string literal) aborts the program.
 */

/* A new secret holding `len` bytes of `s` (any bytes; NULs allowed; `s`
 * may be NULL when len is 0) and a terminating NUL, with one reference.
 * Never NULL: running out of memory aborts, as xmalloc does. */
char *seal_secret_dup(const void *s, size_t len);

/* Takes one more reference to secret `p` and returns `p` (without const,
 * as strchr does: the caller now holds a reference and drops it with
 * seal_free_secret). NULL gives NULL. */
char *seal_secret_ref(const char *p);

/* The secret's length as made, not counting the terminator (NULL: 0). */
size_t seal_secret_len(const char *p);

/* Drops one reference to secret `p`; the last one wipes and frees it. NULL
 * is a no-op. `len` is not used (a secret knows its size); it is kept for
 * the callers that pass seal_open's length. */
void seal_free_secret(char *p, size_t len);

/*
 * The raw AES-256-GCM primitives under seal_seal/seal_open, exposed for
 * known-answer tests (NIST / McGrew–Viega vectors). `nonce` is 12 bytes,
 * the tag 16; `len` and `aadlen` may be 0 (pointers may then be NULL).
 *
 * seal_gcm_encrypt writes `len` bytes to `ct` and the tag. Returns 0,
 * HERR_TOOBIG (len over SEAL_PLAINTEXT_MAX or aadlen over
 * SEAL_TOKEN_MAX), HERR_INVALID (a NULL pointer with a non-zero length), or
 * HERR_PERM when OpenSSL fails.
 *
 * seal_gcm_decrypt writes `len` bytes to `pt` and returns 0 only when the
 * tag verifies; otherwise `pt` is zeroed and HERR_INVALID returned (or
 * HERR_PERM when OpenSSL fails). Same caps.
 *
 * Never call seal_gcm_encrypt twice with one key and one nonce: use
 * seal_seal, which draws a fresh nonce.
 */
int seal_gcm_encrypt(const unsigned char key[SEAL_KEY_LEN],
                     const unsigned char nonce[SEAL_NONCE_LEN], const void *aad,
                     size_t aadlen, const void *pt, size_t len,
                     unsigned char *ct, unsigned char tag[SEAL_TAG_LEN]);
int seal_gcm_decrypt(const unsigned char key[SEAL_KEY_LEN],
                     const unsigned char nonce[SEAL_NONCE_LEN], const void *aad,
                     size_t aadlen, const void *ct, size_t len,
                     const unsigned char tag[SEAL_TAG_LEN], unsigned char *pt);

#endif
