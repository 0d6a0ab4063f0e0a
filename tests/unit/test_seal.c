/*
 * test_seal — the password sealer: key files of every form, AES-256-GCM
 * known answers (the GCM specification's AES-256 test cases 13–16, as in
 * NIST SP 800-38D's validation vectors), tokens that round-trip, and
 * tokens that must not open (altered, truncated, wrong context, unknown
 * key), key files readable by others refused, and secret memory (outside
 * core dumps, counted, wiped, thread-safe, misuse fatal). Each case uses
 * its own files in its own temporary directory.
 */
#include "../../common/err.h"
#include "../../common/seal.h"
#include "../../common/util.h"
#include "t.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];

/* ---- helpers ---- */

static size_t
unhex(const char *h, unsigned char *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    return n;
}

static void
tohex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * n] = '\0';
}

static char *
write_file(const char *name, const void *data, size_t n, mode_t mode)
{
    char *path = xasprintf("%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    if (n)
        fwrite(data, 1, n, f);
    fclose(f);
    chmod(path, mode);
    return path;
}

/* Loads a key file written with `data`; returns the load's code. */
static int
load(const char *name, const void *data, size_t n, mode_t mode,
     struct seal_key **k, struct herr *e)
{
    char *path = write_file(name, data, n, mode);
    memset(e, 0, sizeof *e);
    int rc = seal_key_load(path, k, e);
    free(path);
    return rc;
}

static const unsigned char *
key_bytes(unsigned char seed)
{
    static unsigned char b[SEAL_KEY_LEN];
    for (size_t i = 0; i < SEAL_KEY_LEN; i++)
        b[i] = (unsigned char)(seed + i * 7);
    return b;
}

/* Decodes a token's base64 body; returns its length or -1. */
static int
token_body(const char *tok, unsigned char *out)
{
    const char *b = tok + 3 + SEAL_KEYID_LEN + 1;
    size_t bl = strlen(b);
    int m = EVP_DecodeBlock(out, (const unsigned char *)b, (int)bl);
    if (m < 0)
        return -1;
    if (bl && b[bl - 1] == '=')
        m--;
    if (bl > 1 && b[bl - 2] == '=')
        m--;
    return m;
}

/* A token with the same header as `tok` and body `blob`. */
static char *
token_with_body(const char *tok, const unsigned char *blob, size_t n)
{
    size_t hl = 3 + SEAL_KEYID_LEN + 1;
    char *t = xmalloc(hl + (n + 2) / 3 * 4 + 1);
    memcpy(t, tok, hl);
    EVP_EncodeBlock((unsigned char *)t + hl, blob, (int)n);
    return t;
}

static int
open1(const struct seal_key *k, const char *tok, const char *aad,
      struct herr *e)
{
    const struct seal_key *keys[1] = {k};
    char *pt = NULL;
    size_t n = 99;
    memset(e, 0, sizeof *e);
    int rc = seal_open(keys, 1, tok, aad, &pt, &n, e);
    if (rc != 0 && (pt != NULL || n != 0))
        return 12345; /* outputs must be cleared on error */
    seal_free_secret(pt, n);
    return rc;
}

/* ---- AES-256-GCM known answers ---- */

struct kat {
    const char *name, *key, *iv, *pt, *aad, *ct, *tag;
};

/* The GCM specification (McGrew & Viega), test cases 13-16: the AES-256
 * ones, 96-bit IVs. */
static const struct kat kats[] = {
    {"case 13",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "", "", "",
     "530f8afbc74536b9a963b4f1c4cb738b"},
    {"case 14",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "00000000000000000000000000000000", "",
     "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {"case 15",
     "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
     "",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    {"case 16",
     "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

static void
test_kat(void)
{
    for (size_t i = 0; i < sizeof kats / sizeof kats[0]; i++) {
        const struct kat *v = &kats[i];
        unsigned char key[32], iv[12], pt[64], aad[32], ct[64], tag[16];
        unsigned char out[64], outtag[16], back[64];
        char hex[129];
        CHECK(unhex(v->key, key) == 32);
        CHECK(unhex(v->iv, iv) == 12);
        size_t n = unhex(v->pt, pt), an = unhex(v->aad, aad);
        CHECK(unhex(v->ct, ct) == n);
        unhex(v->tag, tag);

        memset(out, 0xee, sizeof out);
        CHECK_MSG(seal_gcm_encrypt(key, iv, aad, an, pt, n, out, outtag) == 0,
                  "%s", v->name);
        tohex(out, n, hex);
        CHECK_STR(hex, v->ct);
        tohex(outtag, 16, hex);
        CHECK_STR(hex, v->tag);

        memset(back, 0xee, sizeof back);
        CHECK_MSG(seal_gcm_decrypt(key, iv, aad, an, ct, n, tag, back) == 0,
                  "%s", v->name);
        CHECK(memcmp(back, pt, n) == 0);

        /* The same vector with one tag bit flipped must not open, and
         * must leave no plaintext behind. */
        tag[15] ^= 0x80;
        memset(back, 0xee, sizeof back);
        CHECK(seal_gcm_decrypt(key, iv, aad, an, ct, n, tag, back) ==
              HERR_INVALID);
        int zero = 1;
        for (size_t j = 0; j < n; j++)
            if (back[j] != 0)
                zero = 0;
        CHECK_MSG(zero, "%s: plaintext left after a failed tag", v->name);
        tag[15] ^= 0x80;
        if (an) {
            aad[0] ^= 1;
            CHECK(seal_gcm_decrypt(key, iv, aad, an, ct, n, tag, back) ==
                  HERR_INVALID);
        }
    }

    unsigned char key[32] = {0}, iv[12] = {0}, tag[16];
    static unsigned char big[SEAL_PLAINTEXT_MAX + 1];
    CHECK(seal_gcm_encrypt(key, iv, NULL, 0, big, sizeof big, big, tag) ==
          HERR_TOOBIG);
    CHECK(seal_gcm_encrypt(key, iv, NULL, 0, NULL, 5, big, tag) ==
          HERR_INVALID);
    CHECK(seal_gcm_encrypt(key, iv, NULL, 3, big, 5, big, tag) == HERR_INVALID);
    CHECK(seal_gcm_encrypt(key, iv, NULL, 0, NULL, 0, NULL, tag) == 0);
}

/* ---- key files ---- */

static void
check_size_error(const char *name, const void *data, size_t n, const char *want)
{
    struct seal_key *k = (struct seal_key *)1;
    struct herr e;
    CHECK_MSG(load(name, data, n, 0600, &k, &e) == HERR_INVALID, "%s", name);
    CHECK(k == NULL);
    CHECK_MSG(strstr(e.msg, name) != NULL, "%s: %s", name, e.msg);
    CHECK_MSG(strstr(e.msg, want) != NULL, "%s: %s", name, e.msg);
    CHECK_MSG(strstr(e.msg, "expected 32 raw bytes or 64 hex characters") !=
                  NULL,
              "%s: %s", name, e.msg);
    CHECK(e.field[0] == '\0');
}

static void
test_key_files(void)
{
    const unsigned char *raw = key_bytes(0);
    unsigned char r[32];
    memcpy(r, raw, 32);
    struct seal_key *ref = seal_key_new(r);
    struct seal_key *k;
    struct herr e;

    /* The id: 8 bytes of SHA-256("herald-key-id" || key), in hex. The
     * expected value for bytes 0..31 was computed with Python's hashlib. */
    unsigned char seq[32];
    for (int i = 0; i < 32; i++)
        seq[i] = (unsigned char)i;
    struct seal_key *sk = seal_key_new(seq);
    CHECK_STR(seal_key_id(sk), "1839abb12cfd6b16");
    seal_key_free(sk);
    unsigned char msg[13 + 32], md[32];
    memcpy(msg, "herald-key-id", 13);
    memcpy(msg + 13, r, 32);
    SHA256(msg, sizeof msg, md);
    char want[17];
    tohex(md, 8, want);
    CHECK_STR(seal_key_id(ref), want);
    CHECK(strlen(seal_key_id(ref)) == SEAL_KEYID_LEN);
    CHECK(seal_key_warnings(ref) == 0);

    /* raw, with and without a newline */
    CHECK(load("raw", r, 32, 0600, &k, &e) == 0);
    CHECK(k && strcmp(seal_key_id(k), seal_key_id(ref)) == 0);
    CHECK(k && seal_key_warnings(k) == 0);
    seal_key_free(k);
    unsigned char b[80];
    memcpy(b, r, 32);
    b[32] = '\n';
    CHECK(load("raw-nl", b, 33, 0600, &k, &e) == 0);
    CHECK(k && strcmp(seal_key_id(k), seal_key_id(ref)) == 0);
    seal_key_free(k);
    b[32] = '\r';
    b[33] = '\n';
    CHECK(load("raw-crlf", b, 34, 0600, &k, &e) == 0);
    CHECK(k && strcmp(seal_key_id(k), seal_key_id(ref)) == 0);
    seal_key_free(k);

    /* a raw key whose own last bytes are '\r' or '\n' is read whole */
    unsigned char nl[34];
    memcpy(nl, r, 32);
    nl[31] = '\n';
    struct seal_key *refnl = seal_key_new(nl);
    CHECK(load("raw-ends-nl", nl, 32, 0600, &k, &e) == 0);
    CHECK(k && strcmp(seal_key_id(k), seal_key_id(refnl)) == 0);
    seal_key_free(k);
    seal_key_free(refnl);
    nl[31] = '\r';
    nl[32] = '\n';
    struct seal_key *refcr = seal_key_new(nl);
    CHECK(load("raw-ends-cr-nl", nl, 33, 0600, &k, &e) == 0);
    CHECK(k && strcmp(seal_key_id(k), seal_key_id(refcr)) == 0);
    seal_key_free(k);
    seal_key_free(refcr);

    /* hex: lower, upper, mixed, with "\n" and "\r\n" */
    char hex[70];
    tohex(r, 32, hex);
    const char *forms[] = {"lower", "upper", "mixed", "lower-nl", "upper-crlf"};
    for (int f = 0; f < 5; f++) {
        char h[70];
        strcpy(h, hex);
        for (int i = 0; i < 64; i++) {
            if (f == 1 || f == 4 || (f == 2 && i % 2))
                h[i] = (char)(h[i] >= 'a' ? h[i] - 32 : h[i]);
        }
        if (f == 3)
            strcat(h, "\n");
        if (f == 4)
            strcat(h, "\r\n");
        CHECK_MSG(load(forms[f], h, strlen(h), 0600, &k, &e) == 0, "%s: %s",
                  forms[f], e.msg);
        CHECK_MSG(k && strcmp(seal_key_id(k), seal_key_id(ref)) == 0, "%s",
                  forms[f]);
        CHECK(k && seal_key_warnings(k) == 0);
        seal_key_free(k);
    }

    /* wrong sizes */
    unsigned char junk[300];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)(0x80 + i % 100);
    check_size_error("empty", junk, 0, "is 0 bytes");
    check_size_error("raw31", junk, 31, "is 31 bytes");
    check_size_error("raw33", junk, 33, "is 33 bytes");
    junk[34] = '\n';
    check_size_error("raw34-nl", junk, 35,
                     "is 35 bytes (34 without the trailing newline)");
    junk[34] = (unsigned char)(0x80 + 34);
    char h63[80];
    memcpy(h63, hex, 63);
    h63[63] = '\0';
    check_size_error("hex63", h63, 63, "is 63 bytes");
    strcat(h63, "\n");
    check_size_error("hex63-nl", h63, 64,
                     "is 64 bytes (63 without the trailing newline)");
    char h65[80];
    memcpy(h65, hex, 64);
    h65[64] = 'a';
    h65[65] = '\0';
    check_size_error("hex65", h65, 65, "is 65 bytes");
    check_size_error("hex-2nl", (strcpy(h65, hex), strcat(h65, "\n\n")), 66,
                     "is 66 bytes (65 without the trailing newline)");
    check_size_error("huge", junk, sizeof junk, "is over 256 bytes");

    /* a non-hex character: named by position, never by value */
    char bad[70];
    strcpy(bad, hex);
    bad[9] = 'g';
    CHECK(load("nonhex", bad, 64, 0600, &k, &e) == HERR_INVALID);
    CHECK(k == NULL);
    CHECK_MSG(strstr(e.msg, "character 10 is not a hexadecimal digit") != NULL,
              "%s", e.msg);
    CHECK(strstr(e.msg, "nonhex") != NULL);
    char piece[9];
    memcpy(piece, hex + 20, 8);
    piece[8] = '\0';
    CHECK(strstr(e.msg, piece) == NULL);
    strcpy(bad, hex);
    bad[63] = ' ';
    CHECK(load("nonhex-last", bad, 64, 0600, &k, &e) == HERR_INVALID);
    CHECK_MSG(strstr(e.msg, "character 64 ") != NULL, "%s", e.msg);

    /* missing, a directory, no path */
    char *missing = xasprintf("%s/no-such-key", tmpdir);
    k = (struct seal_key *)1;
    memset(&e, 0, sizeof e);
    CHECK(seal_key_load(missing, &k, &e) == HERR_IO);
    CHECK(k == NULL);
    CHECK_MSG(strstr(e.msg, missing) != NULL, "%s", e.msg);
    free(missing);
    char *dir = xasprintf("%s/keydir", tmpdir);
    mkdir(dir, 0700);
    CHECK(seal_key_load(dir, &k, &e) == HERR_INVALID);
    CHECK(k == NULL);
    CHECK_MSG(strstr(e.msg, dir) && strstr(e.msg, "directory"), "%s", e.msg);
    free(dir);
    CHECK(seal_key_load("", &k, &e) == HERR_INVALID);
    CHECK(seal_key_load(NULL, &k, NULL) == HERR_INVALID);
    if (geteuid() != 0) {
        CHECK(load("unreadable", r, 32, 0000, &k, &e) == HERR_IO);
        CHECK(k == NULL && strstr(e.msg, "unreadable") != NULL);
    }

    /* permissions: readable by other users refused, by the group flagged */
    static const struct {
        const char *name;
        mode_t mode;
        const char *shown;
    } open_modes[] = {
        {"shared", 0644, "mode 0644"},
        {"world-ro", 0444, "mode 0444"},
        {"other-only", 0604, "mode 0604"},
    };
    for (size_t i = 0; i < sizeof open_modes / sizeof open_modes[0]; i++) {
        k = (struct seal_key *)1;
        CHECK_MSG(load(open_modes[i].name, r, 32, open_modes[i].mode, &k, &e) ==
                      HERR_INVALID,
                  "%s", open_modes[i].name);
        CHECK(k == NULL);
        CHECK_MSG(strstr(e.msg, open_modes[i].name) &&
                      strstr(e.msg, "readable by other users") &&
                      strstr(e.msg, open_modes[i].shown) &&
                      strstr(e.msg, "chmod 600"),
                  "%s", e.msg);
        CHECK(e.field[0] == '\0'); /* the caller names its setting */
    }
    /* refused before it is read: a malformed file says the same */
    CHECK(load("shared-short", "abcd\n", 5, 0644, &k, &e) == HERR_INVALID);
    CHECK_MSG(strstr(e.msg, "readable by other users"), "%s", e.msg);
    CHECK(load("group", hex, 64, 0440, &k, &e) == 0);
    CHECK(k && seal_key_warnings(k) == SEAL_WARN_MODE);
    seal_key_free(k);
    CHECK(load("group-rw", r, 32, 0640, &k, &e) == 0);
    CHECK(k && seal_key_warnings(k) == SEAL_WARN_MODE);
    seal_key_free(k);
    CHECK(load("owner", hex, 64, 0400, &k, &e) == 0);
    CHECK(k && seal_key_warnings(k) == 0);
    seal_key_free(k);

    /* `openssl rand -hex 16` (32 hex characters and a newline): a valid
     * raw key by the rule, flagged as text */
    CHECK(load("hex16", "0123456789abcdef0123456789abcdef\n", 33, 0600, &k,
               &e) == 0);
    CHECK(k && seal_key_warnings(k) == SEAL_WARN_TEXT);
    seal_key_free(k);
    CHECK(strlen(seal_warning_str(SEAL_WARN_MODE)) > 0);
    CHECK(strlen(seal_warning_str(SEAL_WARN_TEXT)) > 0);
    CHECK(strcmp(seal_warning_str(4), "") == 0);

    /* different keys, different ids; the id is not the key */
    struct seal_key *other = seal_key_new(key_bytes(1));
    CHECK(strcmp(seal_key_id(other), seal_key_id(ref)) != 0);
    CHECK(strstr(hex, seal_key_id(ref)) == NULL);
    seal_key_free(other);
    seal_key_free(ref);
    seal_key_free(NULL);
}

/* ---- sealing and opening ---- */

static void
roundtrip(const struct seal_key *k, const char *pt, size_t n, const char *aad)
{
    char *tok = seal_seal(k, pt, n, aad);
    CHECK(tok != NULL);
    if (tok == NULL)
        return;
    CHECK(strlen(tok) <= SEAL_TOKEN_MAX);
    CHECK(strncmp(tok, "v1:", 3) == 0);
    CHECK(strncmp(tok + 3, seal_key_id(k), SEAL_KEYID_LEN) == 0);
    CHECK(tok[3 + SEAL_KEYID_LEN] == ':');
    const struct seal_key *keys[1] = {k};
    char *out = NULL;
    size_t len = 0;
    struct herr e;
    CHECK_MSG(seal_open(keys, 1, tok, aad, &out, &len, &e) == 0, "%s", e.msg);
    CHECK(len == n);
    CHECK(out && memcmp(out, pt, n) == 0 && out[n] == '\0');
    seal_free_secret(out, len);
    free(tok);
}

static void
test_roundtrip(void)
{
    struct seal_key *k = seal_key_new(key_bytes(3));
    roundtrip(k, "", 0, "acme/email/smtp");
    roundtrip(k, "hunter2", 7, "acme/email/smtp");
    const char *utf8 = "pässwörd ✓ 密码 🔑";
    roundtrip(k, utf8, strlen(utf8), "acme/email/imap");
    roundtrip(k, "x", 1, "");
    char nul[] = "a\0b\0c";
    roundtrip(k, nul, 5, "acme/email/smtp");

    static char big[SEAL_PLAINTEXT_MAX + 1];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 31 + 7);
    roundtrip(k, big, SEAL_PLAINTEXT_MAX, "acme/email/smtp");
    CHECK(seal_seal(k, big, SEAL_PLAINTEXT_MAX + 1, "acme/email/smtp") == NULL);
    CHECK(seal_seal(k, NULL, 3, "x") == NULL);
    CHECK(seal_seal(NULL, "x", 1, "x") == NULL);
    static char longaad[SEAL_AAD_MAX + 2];
    memset(longaad, 'a', SEAL_AAD_MAX);
    roundtrip(k, "pw", 2, longaad);
    longaad[SEAL_AAD_MAX] = 'a';
    CHECK(seal_seal(k, "pw", 2, longaad) == NULL);
    struct herr e;
    const struct seal_key *keys[1] = {k};
    char *out = NULL;
    size_t len = 0;
    char *tok = seal_seal(k, "pw", 2, "a");
    CHECK(seal_open(keys, 1, tok, longaad, &out, &len, &e) == HERR_TOOBIG);
    free(tok);

    /* NULL aad is "" */
    tok = seal_seal(k, "pw", 2, NULL);
    CHECK(open1(k, tok, "", &e) == 0);
    CHECK(open1(k, tok, NULL, &e) == 0);
    CHECK(open1(k, tok, "x", &e) == HERR_INVALID);
    free(tok);

    /* two seals of one plaintext differ, and both open */
    char *t1 = seal_seal(k, "same-password", 13, "acme/email/smtp");
    char *t2 = seal_seal(k, "same-password", 13, "acme/email/smtp");
    CHECK(t1 && t2 && strcmp(t1, t2) != 0);
    CHECK(open1(k, t1, "acme/email/smtp", &e) == 0);
    CHECK(open1(k, t2, "acme/email/smtp", &e) == 0);
    free(t1);
    free(t2);

    /* the token holds neither the plaintext nor its hex */
    const char *secret = "CorrectHorseBatteryStaple";
    tok = seal_seal(k, secret, strlen(secret), "acme/email/smtp");
    CHECK(tok && strstr(tok, secret) == NULL);
    char sh[80];
    tohex((const unsigned char *)secret, strlen(secret), sh);
    CHECK(tok && strstr(tok, sh) == NULL);
    free(tok);
    seal_key_free(k);
}

/*
 * The token's layout, decoded here independently: the body is nonce ||
 * ciphertext || tag, and the authenticated data is "v1:<id>:" || aad.
 */
static void
test_layout(void)
{
    const unsigned char *raw = key_bytes(5);
    unsigned char r[32];
    memcpy(r, raw, 32);
    struct seal_key *k = seal_key_new(r);
    const char *pt = "s3cret-pässword";
    size_t n = strlen(pt);
    char *tok = seal_seal(k, pt, n, "acme/email/smtp");
    unsigned char blob[200];
    int m = token_body(tok, blob);
    CHECK(m == (int)(12 + n + 16));
    char aad[200];
    snprintf(aad, sizeof aad, "v1:%s:acme/email/smtp", seal_key_id(k));
    unsigned char ct[100], tag[16];
    CHECK(seal_gcm_encrypt(r, blob, aad, strlen(aad), pt, n, ct, tag) == 0);
    CHECK(memcmp(ct, blob + 12, n) == 0);
    CHECK(memcmp(tag, blob + 12 + n, 16) == 0);
    /* and it is the whole body: the encoded length is exact */
    CHECK(strlen(tok) == 20 + (12 + n + 16 + 2) / 3 * 4);
    free(tok);
    seal_key_free(k);
}

static void
test_refusals(void)
{
    struct seal_key *a = seal_key_new(key_bytes(10));
    struct seal_key *b = seal_key_new(key_bytes(20));
    const char *secret = "p4ssw0rd-for-smtp";
    const char *aad = "acme/email/smtp";
    char *tok = seal_seal(a, secret, strlen(secret), aad);
    struct herr e;

    /* wrong context */
    CHECK(open1(a, tok, "acme/email/imap", &e) == HERR_INVALID);
    CHECK_MSG(strstr(e.msg, "does not verify") != NULL, "%s", e.msg);
    CHECK(strstr(e.msg, secret) == NULL);
    CHECK(strstr(e.msg, tok + 20) == NULL);
    CHECK(open1(a, tok, "other/email/smtp", &e) == HERR_INVALID);
    CHECK(open1(a, tok, "", &e) == HERR_INVALID);
    CHECK(open1(a, tok, aad, &e) == 0);

    /* every single-bit change of nonce, ciphertext or tag fails */
    unsigned char blob[200];
    int m = token_body(tok, blob);
    CHECK(m == (int)(12 + strlen(secret) + 16));
    int tried = 0, refused = 0, nonce = 0, ct = 0, tagb = 0;
    for (int i = 0; i < m; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            blob[i] ^= (unsigned char)(1 << bit);
            char *t = token_with_body(tok, blob, (size_t)m);
            int rc = open1(a, t, aad, &e);
            tried++;
            if (rc == HERR_INVALID && strstr(e.msg, "does not verify")) {
                refused++;
                if (i < 12)
                    nonce++;
                else if (i < m - 16)
                    ct++;
                else
                    tagb++;
            }
            free(t);
            blob[i] ^= (unsigned char)(1 << bit);
        }
    }
    CHECK_MSG(refused == tried, "%d of %d altered tokens refused", refused,
              tried);
    CHECK(nonce == 24 && tagb == 32 && ct == 2 * (int)strlen(secret));
    char *same = token_with_body(tok, blob, (size_t)m);
    CHECK(open1(a, same, aad, &e) == 0);
    free(same);

    /* a swapped header: same body under another key's id */
    char *t = xstrdup(tok);
    memcpy(t + 3, seal_key_id(b), SEAL_KEYID_LEN);
    const struct seal_key *ab[2] = {a, b};
    char *out = NULL;
    size_t len = 0;
    CHECK(seal_open(ab, 2, t, aad, &out, &len, &e) == HERR_INVALID);
    free(t);

    /* every truncation fails */
    size_t tl = strlen(tok);
    int cut_refused = 0;
    for (size_t i = 0; i < tl; i++) {
        char *c = xstrndup(tok, i);
        if (open1(a, c, aad, &e) != 0)
            cut_refused++;
        free(c);
    }
    CHECK_MSG(cut_refused == (int)tl, "%d of %zu truncations refused",
              cut_refused, tl);
    /* a body cut to fewer than nonce + tag bytes says so */
    char *c = xstrndup(tok, 20 + 36);
    CHECK(open1(a, c, aad, &e) == HERR_INVALID);
    CHECK_MSG(strstr(e.msg, "truncated") != NULL, "%s", e.msg);
    free(c);
    /* whole groups removed from the body's end: shape fine, tag wrong */
    c = xstrndup(tok, tl - 4);
    CHECK(open1(a, c, aad, &e) == HERR_INVALID);
    free(c);

    /* additions */
    t = xasprintf("%s\n", tok);
    CHECK(open1(a, t, aad, &e) == HERR_INVALID);
    free(t);
    t = xasprintf(" %s", tok);
    CHECK(open1(a, t, aad, &e) == HERR_INVALID);
    free(t);
    t = xasprintf("%sAAAA", tok);
    CHECK(open1(a, t, aad, &e) == HERR_INVALID);
    free(t);

    /* unknown key id */
    CHECK(open1(b, tok, aad, &e) == HERR_NOTFOUND);
    char want[80];
    snprintf(want, sizeof want, "sealed with key %s, which is not loaded",
             seal_key_id(a));
    CHECK_STR(e.msg, want);
    CHECK(seal_open(NULL, 0, tok, aad, &out, &len, &e) == HERR_NOTFOUND);

    /* malformed */
    const char *bad[] = {
        "",
        "hunter2",
        "v1:",
        "v1:0123456789abcdef",
        "v1:0123456789abcdef:",
        "v1:0123456789ABCDEF:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1:0123456789abcdeX:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1:0123456789abcdef:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA*A",
        "v1:0123456789abcdef:AAAAAAAAAAAAAAAAAAAA=AAAAAAAAAAAAAAAAAAA",
        "v1:0123456789abcdef:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1-0123456789abcdef-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_MSG(open1(a, bad[i], aad, &e) == HERR_INVALID, "%s", bad[i]);
        char id[SEAL_KEYID_LEN + 1];
        CHECK(seal_token_key_id(bad[i], id) == HERR_INVALID);
    }
    CHECK(open1(a, NULL, aad, &e) == HERR_INVALID);
    t = xstrdup(tok);
    t[1] = '2';
    CHECK(open1(a, t, aad, &e) == HERR_INVALID);
    CHECK_MSG(strstr(e.msg, "format v2") != NULL, "%s", e.msg);
    free(t);

    /* caps: a token over 8 KiB, a token holding over 4 KiB */
    static char huge[SEAL_TOKEN_MAX + 2];
    memcpy(huge, tok, 20);
    memset(huge + 20, 'A', sizeof huge - 21);
    CHECK(open1(a, huge, aad, &e) == HERR_TOOBIG);
    static unsigned char fat[4200];
    char *ft = token_with_body(tok, fat, sizeof fat);
    CHECK(strlen(ft) <= SEAL_TOKEN_MAX);
    CHECK(open1(a, ft, aad, &e) == HERR_TOOBIG);
    free(ft);

    char id[SEAL_KEYID_LEN + 1];
    CHECK(seal_token_key_id(tok, id) == 0);
    CHECK_STR(id, seal_key_id(a));

    free(tok);
    seal_key_free(a);
    seal_key_free(b);
    seal_free_secret(NULL, 0);
}

/* seal with A; rotate to B: open with [B, A], re-seal under B, drop A */
static void
test_rotation(void)
{
    struct herr e;
    unsigned char r[32];
    memcpy(r, key_bytes(40), 32);
    char *pa = write_file("rot-a", r, 32, 0600);
    char hex[65];
    memcpy(r, key_bytes(50), 32);
    tohex(r, 32, hex);
    char *pb = write_file("rot-b", hex, 64, 0600);
    struct seal_key *a = NULL, *b = NULL;
    CHECK(seal_key_load(pa, &a, &e) == 0);
    CHECK(seal_key_load(pb, &b, &e) == 0);
    if (a == NULL || b == NULL)
        return;

    const char *aad = "acme/email/smtp";
    char *old = seal_seal(a, "rotating-pw", 11, aad);
    const struct seal_key *both[2] = {b, a};
    const struct seal_key *gap[3] = {NULL, a, NULL};
    char *out = NULL;
    size_t len = 0;
    CHECK(seal_open(both, 2, old, aad, &out, &len, &e) == 0);
    CHECK(len == 11 && out && memcmp(out, "rotating-pw", 11) == 0);
    seal_free_secret(out, len);
    CHECK(seal_open(gap, 3, old, aad, &out, &len, &e) == 0);
    seal_free_secret(out, len);

    char id[SEAL_KEYID_LEN + 1];
    CHECK(seal_token_key_id(old, id) == 0 && strcmp(id, seal_key_id(a)) == 0);
    CHECK(seal_open(both, 2, old, aad, &out, &len, &e) == 0);
    char *fresh = seal_seal(b, out, len, aad);
    seal_free_secret(out, len);
    CHECK(seal_token_key_id(fresh, id) == 0 && strcmp(id, seal_key_id(b)) == 0);
    const struct seal_key *newonly[1] = {b};
    CHECK(seal_open(newonly, 1, fresh, aad, &out, &len, &e) == 0);
    CHECK(len == 11 && out && memcmp(out, "rotating-pw", 11) == 0);
    seal_free_secret(out, len);
    CHECK(seal_open(newonly, 1, old, aad, &out, &len, &e) == HERR_NOTFOUND);
    CHECK(strstr(e.msg, seal_key_id(a)) != NULL);

    free(old);
    free(fresh);
    free(pa);
    free(pb);
    seal_key_free(a);
    seal_key_free(b);
}

/* ---- secret memory ---- */

/* Whether `p` lies in a mapping the kernel leaves out of core dumps
 * (VmFlags "dd" in /proc/self/smaps). */
static int
in_dontdump(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (f == NULL)
        return -1;
    char line[512];
    int inside = 0, dd = 0;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        /* a mapping's first line is "lo-hi perms ..."; the lines under it
         * are "Key: value" (no key is hex digits and a '-') */
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
            inside = a >= lo && a < hi;
            continue;
        }
        if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            dd = strstr(line, " dd") != NULL;
            break;
        }
    }
    fclose(f);
    return dd;
}

static uintptr_t
page_of(const void *p)
{
    return (uintptr_t)p & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1);
}

/* Dies (as the secret allocator does on misuse) or not: 1 when `fn` ended
 * the child abnormally. */
static int
dies(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (freopen("/dev/null", "w", stderr) == NULL)
            _exit(3);
        fn();
        _exit(0);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return 0;
    return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void
free_heap_pointer(void)
{
    /* a page of its own, so only seal.c's own check can object */
    char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        _exit(0);
    memset(m, 'x', 4096);
    seal_free_secret(m + 128, 10);
}

static void
free_twice(void)
{
    char *p = seal_secret_dup("twice", 5);
    char *keep = seal_secret_dup("keeps-the-page", 14);
    seal_free_secret(p, 5);
    seal_free_secret(p, 5);
    seal_free_secret(keep, 14);
}

static void
ref_after_free(void)
{
    char *keep = seal_secret_dup("keeps-the-page", 14);
    char *p = seal_secret_dup("gone", 4);
    seal_free_secret(p, 4);
    seal_secret_ref(p);
    seal_free_secret(keep, 14);
}

struct churn {
    char *shared;
    int id, bad;
};

static void *
churn_run(void *ud)
{
    struct churn *c = ud;
    char buf[96];
    for (int i = 0; i < 4000; i++) {
        int n = snprintf(buf, sizeof buf, "thread-%d-secret-%d-%0*d", c->id, i,
                         i % 60, 7);
        char *p = seal_secret_dup(buf, (size_t)n);
        char *q = seal_secret_ref(p);
        char *s = seal_secret_ref(c->shared);
        if (q != p || memcmp(p, buf, (size_t)n + 1) != 0 ||
            seal_secret_len(p) != (size_t)n ||
            strcmp(s, "shared-between-threads") != 0)
            c->bad++;
        seal_free_secret(p, 0);
        seal_free_secret(q, 0);
        seal_free_secret(s, 0);
    }
    return NULL;
}

static void
test_secret_memory(void)
{
    /* a copy: bytes, terminator, length; NULs allowed; excluded from dumps */
    char *p = seal_secret_dup("hunter2", 7);
    CHECK(p && strcmp(p, "hunter2") == 0 && seal_secret_len(p) == 7);
    CHECK_MSG(in_dontdump(p) == 1, "a secret at %p is not MADV_DONTDUMP", p);
    char *heap = xstrdup("control");
    CHECK(in_dontdump(heap) == 0); /* the check tells the heap apart */
    free(heap);
    char *z = seal_secret_dup("a\0b", 3);
    CHECK(seal_secret_len(z) == 3 && memcmp(z, "a\0b", 4) == 0);
    char *empty = seal_secret_dup(NULL, 0);
    CHECK(empty && empty[0] == '\0' && seal_secret_len(empty) == 0);
    seal_free_secret(z, 3);
    seal_free_secret(empty, 0);
    CHECK(seal_secret_ref(NULL) == NULL && seal_secret_len(NULL) == 0);
    seal_free_secret(NULL, 0);

    /* counted: a reference outlives the owner's free; the last one wipes */
    static const char uniq[] = "a-unique-secret-4f1d9c0e";
    char *own = seal_secret_dup(uniq, sizeof uniq - 1);
    CHECK(page_of(own) == page_of(p)); /* p keeps this page mapped */
    char *borrowed = seal_secret_ref(own);
    CHECK(borrowed == own);
    seal_free_secret(own, 0); /* the owner lets go (a table reload) */
    CHECK(strcmp(borrowed, uniq) == 0 && seal_secret_len(borrowed) == 24);
    seal_free_secret(borrowed, 0);
    CHECK(memmem((const void *)page_of(p), (size_t)sysconf(_SC_PAGESIZE), uniq,
                 sizeof uniq - 1) == NULL); /* wiped */
    CHECK(strcmp(p, "hunter2") == 0);
    seal_free_secret(p, 7);

    /* large ones get a mapping of their own, also excluded */
    for (size_t n = 1000; n <= SEAL_PLAINTEXT_MAX + 1000; n += 1003) {
        char *src = xmalloc(n);
        for (size_t i = 0; i < n; i++)
            src[i] = (char)('a' + (i * 7 + n) % 26);
        char *big = seal_secret_dup(src, n);
        CHECK(memcmp(big, src, n) == 0 && big[n] == '\0' &&
              seal_secret_len(big) == n);
        CHECK(in_dontdump(big) == 1 && in_dontdump(big + n) == 1);
        seal_free_secret(big, n);
        free(src);
    }

    /* many at once, every size class, freed out of order */
    enum { N = 3000 };
    char **v = xcalloc(N, sizeof *v);
    char buf[1200];
    for (size_t i = 0; i < N; i++) {
        size_t n = (i * 37) % 1100;
        memset(buf, (int)('A' + i % 50), n);
        snprintf(buf, sizeof buf, "%zu.", i);
        if (n < strlen(buf))
            n = strlen(buf);
        v[i] = seal_secret_dup(buf, n);
    }
    int bad = 0;
    unsigned x = 12345;
    for (size_t k = 0; k < N; k++) {
        x = x * 1103515245u + 12345u;
        size_t i = (x >> 8) % N;
        while (v[i] == NULL)
            i = (i + 1) % N;
        char want[24];
        int wl = snprintf(want, sizeof want, "%zu.", i);
        if (strncmp(v[i], want, (size_t)wl) != 0 || in_dontdump(v[i]) != 1)
            bad++;
        seal_free_secret(v[i], 0);
        v[i] = NULL;
    }
    CHECK_MSG(bad == 0, "%d secrets were damaged or dumpable", bad);
    free(v);

    /* seal_open's plaintext is a secret too */
    struct seal_key *k = seal_key_new(key_bytes(60));
    char *tok = seal_seal(k, "opened-password", 15, "acme/x/smtp");
    const struct seal_key *keys[1] = {k};
    char *out = NULL;
    size_t len = 0;
    struct herr e;
    CHECK(seal_open(keys, 1, tok, "acme/x/smtp", &out, &len, &e) == 0);
    CHECK(out && len == 15 && seal_secret_len(out) == 15);
    CHECK(in_dontdump(out) == 1);
    char *ref = seal_secret_ref(out);
    seal_free_secret(out, len);
    CHECK(strcmp(ref, "opened-password") == 0);
    seal_free_secret(ref, 0);
    free(tok);
    seal_key_free(k);

    /* threads: references taken and dropped concurrently */
    struct churn c[4];
    pthread_t th[4];
    char *shared = seal_secret_dup("shared-between-threads", 22);
    for (int i = 0; i < 4; i++) {
        c[i] = (struct churn){shared, i, 0};
        CHECK(pthread_create(&th[i], NULL, churn_run, &c[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(c[i].bad == 0);
    }
    CHECK(strcmp(shared, "shared-between-threads") == 0);
    seal_free_secret(shared, 0);

    /* misuse is fatal, not silent */
    CHECK(dies(free_heap_pointer));
    CHECK(dies(free_twice));
    CHECK(dies(ref_after_free));
}

static void
rm_tree(void)
{
    char *cmd = xasprintf("rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    free(cmd);
}

int
main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_seal.XXXXXX",
             base && *base ? base : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    test_kat();
    test_key_files();
    test_roundtrip();
    test_layout();
    test_refusals();
    test_rotation();
    test_secret_memory();
    rm_tree();
    return T_DONE("test_seal");
}
