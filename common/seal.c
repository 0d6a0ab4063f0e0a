#include "seal.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define VERSION_TAG "v1:"
/* "v1:" + key id + ":" */
#define HDR_LEN (sizeof VERSION_TAG - 1 + SEAL_KEYID_LEN + 1)
#define OVERHEAD (SEAL_NONCE_LEN + SEAL_TAG_LEN)
/* The most bytes the base64 part of a token can decode to. */
#define BLOB_MAX ((SEAL_TOKEN_MAX / 4) * 3)

struct seal_key {
    unsigned char raw[SEAL_KEY_LEN];
    char id[SEAL_KEYID_LEN + 1];
    unsigned warnings;
    size_t mapsize; /* 0: from the heap (mmap failed) */
    int locked;
};

static const char key_id_label[] = "herald-key-id";

/* ---- memory kept out of core dumps ---- */

static size_t
page_size(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    return pg > 0 ? (size_t)pg : 4096;
}

/*
 * A private anonymous mapping of `sz` bytes (whole pages), zeroed,
 * excluded from core dumps (MADV_DONTDUMP) and locked in RAM when the
 * system allows it (*locked says whether it did); NULL when mmap fails.
 * Pages of their own because mlock/munlock work on whole pages and do not
 * nest: sharing a page with anything else would let its free unlock ours.
 */
static void *
guarded_map(size_t sz, int *locked)
{
    void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    *locked = mlock(p, sz) == 0;
#ifdef MADV_DONTDUMP
    (void)madvise(p, sz, MADV_DONTDUMP);
#endif
    return p;
}

/* Wipes, unlocks and unmaps what guarded_map gave. */
static void
guarded_unmap(void *p, size_t sz, int locked)
{
    OPENSSL_cleanse(p, sz);
    if (locked)
        (void)munlock(p, sz);
    (void)munmap(p, sz);
}

/* ---- key memory ---- */

/* Each key gets a guarded mapping of its own. */
static struct seal_key *
key_alloc(void)
{
    size_t sz = page_size();
    while (sz < sizeof(struct seal_key))
        sz *= 2;
    int locked = 0;
    struct seal_key *k = guarded_map(sz, &locked);
    if (k == NULL)
        return xcalloc(1, sizeof(struct seal_key));
    k->mapsize = sz; /* anonymous pages come zeroed */
    k->locked = locked;
    return k;
}

void
seal_key_free(struct seal_key *k)
{
    if (k == NULL)
        return;
    size_t sz = k->mapsize;
    if (sz == 0) {
        OPENSSL_cleanse(k, sizeof *k);
        free(k);
        return;
    }
    guarded_unmap(k, sz, k->locked);
}

/* ---- secret memory ---- */

/*
 * Clear secrets (seal_open's plaintexts, seal_secret_dup's copies) live on
 * guarded pages too, never on the heap. A page holds slots of one size
 * class; a secret too big for the largest class gets a mapping of its
 * own. Every mapping begins with a `spage` header and a secret always lies
 * in the first page of its mapping, so rounding a secret's address down
 * to the page finds its header. A slot is a `shdr` (reference count and
 * length) followed by the bytes and a NUL.
 *
 * The lists and the page headers are guarded by one mutex; the reference
 * counts are atomic, so a secret may be referenced from any thread while
 * only the last release takes the mutex.
 */
#define SPAGE_MAGIC 0x68657273u /* "hers" */
#define SPAGE_BIG UINT32_MAX    /* a mapping holding one large secret */

static const size_t slot_sizes[] = {64, 128, 256, 512, 1024};
#define NCLASSES (sizeof slot_sizes / sizeof slot_sizes[0])

struct shdr {
    atomic_size_t refs; /* 0 while the slot is free */
    union {
        size_t len;             /* in use: the secret's length */
        struct shdr *next_free; /* free: the next free slot of its page */
    } u;
};

struct spage {
    uint32_t magic;
    uint32_t cls; /* index into slot_sizes, or SPAGE_BIG */
    size_t mapsize;
    int locked;
    unsigned nslots, nfree;
    struct shdr *free;         /* free slots */
    struct spage *prev, *next; /* in avail[cls] while nfree > 0 */
};

/* Where the first slot starts: after the header, 16-byte aligned. */
#define SLOT0 ((sizeof(struct spage) + 15) & ~(size_t)15)

static pthread_mutex_t secret_mu = PTHREAD_MUTEX_INITIALIZER;
static struct spage *avail[NCLASSES]; /* pages with a free slot */

static _Noreturn void
secret_fatal(const char *msg)
{
    fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"%s\"}\n", msg);
    abort();
}

static void
avail_unlink(struct spage *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        avail[p->cls] = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

static void
avail_push(struct spage *p)
{
    p->prev = NULL;
    p->next = avail[p->cls];
    if (p->next)
        p->next->prev = p;
    avail[p->cls] = p;
}

/* A new page of class c, its slots all free (called with the mutex). */
static struct spage *
page_new(size_t c)
{
    size_t pg = page_size();
    int locked = 0;
    struct spage *p = guarded_map(pg, &locked);
    if (p == NULL)
        secret_fatal("out of memory for secrets (mmap failed)");
    p->magic = SPAGE_MAGIC;
    p->cls = (uint32_t)c;
    p->mapsize = pg;
    p->locked = locked;
    p->nslots = (unsigned)((pg - SLOT0) / slot_sizes[c]);
    for (unsigned i = p->nslots; i-- > 0;) {
        struct shdr *h =
            (struct shdr *)((char *)p + SLOT0 + (size_t)i * slot_sizes[c]);
        h->u.next_free = p->free;
        p->free = h;
    }
    p->nfree = p->nslots;
    avail_push(p);
    return p;
}

/* Room for a secret of `len` bytes, one reference held. */
static struct shdr *
secret_alloc(size_t len)
{
    size_t pg = page_size();
    if (len > SIZE_MAX / 2)
        secret_fatal("a secret of impossible size");
    size_t need = sizeof(struct shdr) + len + 1;
    size_t c = 0;
    while (c < NCLASSES && (slot_sizes[c] < need || SLOT0 + slot_sizes[c] > pg))
        c++;
    struct shdr *h;
    if (c == NCLASSES) {
        size_t sz = (SLOT0 + need + pg - 1) / pg * pg;
        int locked = 0;
        struct spage *p = guarded_map(sz, &locked);
        if (p == NULL)
            secret_fatal("out of memory for secrets (mmap failed)");
        p->magic = SPAGE_MAGIC;
        p->cls = SPAGE_BIG;
        p->mapsize = sz;
        p->locked = locked;
        p->nslots = 1;
        h = (struct shdr *)((char *)p + SLOT0);
    } else {
        pthread_mutex_lock(&secret_mu);
        struct spage *p = avail[c] ? avail[c] : page_new(c);
        h = p->free;
        p->free = h->u.next_free;
        if (--p->nfree == 0)
            avail_unlink(p);
        pthread_mutex_unlock(&secret_mu);
    }
    atomic_init(&h->refs, 1);
    h->u.len = len;
    return h;
}

/* The header of secret `p`; aborts when `p` is not one. */
static struct shdr *
secret_hdr(const char *p)
{
    struct shdr *h = (struct shdr *)(uintptr_t)(p - sizeof(struct shdr));
    const struct spage *pg =
        (const struct spage *)((uintptr_t)h & ~(uintptr_t)(page_size() - 1));
    if (pg->magic != SPAGE_MAGIC)
        secret_fatal("seal: not a secret from seal_open / seal_secret_dup");
    return h;
}

char *
seal_secret_dup(const void *s, size_t len)
{
    struct shdr *h = secret_alloc(len);
    char *p = (char *)(h + 1);
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *
seal_secret_ref(const char *p)
{
    if (p == NULL)
        return NULL;
    struct shdr *h = secret_hdr(p);
    if (atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed) == 0)
        secret_fatal("seal: a reference to a freed secret");
    return (char *)(uintptr_t)p;
}

size_t
seal_secret_len(const char *p)
{
    return p ? secret_hdr(p)->u.len : 0;
}

void
seal_free_secret(char *p, size_t len)
{
    (void)len; /* the secret knows its own size */
    if (p == NULL)
        return;
    struct shdr *h = secret_hdr(p);
    size_t was = atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel);
    if (was == 0)
        secret_fatal("seal: a secret freed twice");
    if (was > 1)
        return;
    struct spage *pg =
        (struct spage *)((uintptr_t)h & ~(uintptr_t)(page_size() - 1));
    if (pg->cls == SPAGE_BIG) {
        guarded_unmap(pg, pg->mapsize, pg->locked);
        return;
    }
    OPENSSL_cleanse(h, slot_sizes[pg->cls]);
    pthread_mutex_lock(&secret_mu);
    h->u.next_free = pg->free;
    pg->free = h;
    if (pg->nfree++ == 0)
        avail_push(pg);
    /* An empty page goes back to the system unless it is its class's
     * only page with room (no churn for one secret made and freed). */
    if (pg->nfree == pg->nslots && (pg->prev || pg->next)) {
        avail_unlink(pg);
        guarded_unmap(pg, pg->mapsize, pg->locked);
    }
    pthread_mutex_unlock(&secret_mu);
}

static void
key_derive_id(struct seal_key *k)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c == NULL || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(c, key_id_label, sizeof key_id_label - 1) != 1 ||
        EVP_DigestUpdate(c, k->raw, SEAL_KEY_LEN) != 1 ||
        EVP_DigestFinal_ex(c, md, &mdlen) != 1 || mdlen < 8) {
        /* Only an out-of-memory OpenSSL gets here; treat it as xmalloc
         * treats that. */
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"SHA-256 failed\"}\n");
        abort();
    }
    EVP_MD_CTX_free(c);
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < SEAL_KEYID_LEN / 2; i++) {
        k->id[2 * i] = hx[md[i] >> 4];
        k->id[2 * i + 1] = hx[md[i] & 15];
    }
    k->id[SEAL_KEYID_LEN] = '\0';
    OPENSSL_cleanse(md, sizeof md);
}

struct seal_key *
seal_key_new(const unsigned char raw[SEAL_KEY_LEN])
{
    struct seal_key *k = key_alloc();
    memcpy(k->raw, raw, SEAL_KEY_LEN);
    key_derive_id(k);
    return k;
}

const char *
seal_key_id(const struct seal_key *k)
{
    return k->id;
}

unsigned
seal_key_warnings(const struct seal_key *k)
{
    return k->warnings;
}

const char *
seal_warning_str(unsigned bit)
{
    switch (bit) {
    case SEAL_WARN_MODE:
        return "the key file is readable by its group; make it readable by "
               "the service's user only (mode 0400 or 0600)";
    case SEAL_WARN_TEXT:
        return "the key file's 32 bytes are printable text (a passphrase, "
               "or a 128-bit key in hex), not 32 random bytes; generate a "
               "key with `openssl rand -hex 32`";
    }
    return "";
}

/* ---- the key file ---- */

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Length of the content once one trailing "\n" or "\r\n" is dropped. */
static size_t
strip_newline(const unsigned char *b, size_t n)
{
    if (n >= 1 && b[n - 1] == '\n') {
        n--;
        if (n >= 1 && b[n - 1] == '\r')
            n--;
    }
    return n;
}

/* Whether n bytes are `want` bytes plus nothing, "\n" or "\r\n". */
static int
is_len_nl(const unsigned char *b, size_t n, size_t want)
{
    return n == want || (n == want + 1 && b[want] == '\n') ||
           (n == want + 2 && b[want] == '\r' && b[want + 1] == '\n');
}

/*
 * Decides the form by the length of the file, so a raw key whose last
 * byte happens to be '\n' or '\r' is still read whole: 32, 33 (+"\n")
 * or 34 (+"\r\n") bytes are raw; 64, 65 or 66 are hex.
 */
static int
key_parse(const char *path, const unsigned char *b, size_t n,
          unsigned char raw[SEAL_KEY_LEN], unsigned *warnings, struct herr *e)
{
    if (is_len_nl(b, n, SEAL_KEY_LEN)) {
        memcpy(raw, b, SEAL_KEY_LEN);
        int text = 1;
        for (size_t i = 0; i < SEAL_KEY_LEN; i++)
            if (b[i] < 0x20 || b[i] > 0x7e)
                text = 0;
        if (text)
            *warnings |= SEAL_WARN_TEXT;
        return 0;
    }
    /* A file that ends in a newline is text: judge it without the
     * newline (64 bytes = 63 characters + "\n" is too short, not "a
     * non-hex 64th character"). */
    size_t body = strip_newline(b, n);
    if (body != 2 * SEAL_KEY_LEN && body != n)
        return herr_set(e, HERR_INVALID, NULL,
                        "key file %s is %zu bytes (%zu without the trailing "
                        "newline); expected 32 raw bytes or 64 hex "
                        "characters",
                        path, n, body);
    if (is_len_nl(b, n, 2 * SEAL_KEY_LEN)) {
        for (size_t i = 0; i < SEAL_KEY_LEN; i++) {
            int hi = hexval(b[2 * i]), lo = hexval(b[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                OPENSSL_cleanse(raw, SEAL_KEY_LEN);
                return herr_set(e, HERR_INVALID, NULL,
                                "key file %s has 64 characters but "
                                "character %zu is not a hexadecimal digit",
                                path, 2 * i + (hi < 0 ? 1 : 2));
            }
            raw[i] = (unsigned char)(hi << 4 | lo);
        }
        return 0;
    }
    return herr_set(e, HERR_INVALID, NULL,
                    "key file %s is %zu bytes; expected 32 raw bytes or 64 "
                    "hex characters",
                    path, n);
}

int
seal_key_parse(const char *name, const unsigned char *b, size_t n,
               unsigned warnings, struct seal_key **out, struct herr *e)
{
    *out = NULL;
    unsigned char raw[SEAL_KEY_LEN];
    int rc = key_parse(name, b, n, raw, &warnings, e);
    if (rc != 0)
        return rc;
    struct seal_key *k = seal_key_new(raw);
    OPENSSL_cleanse(raw, sizeof raw);
    k->warnings = warnings;
    *out = k;
    return 0;
}

/* ---- AES-256-GCM ---- */

static int
gcm_args_ok(const void *aad, size_t aadlen, const void *in, size_t len,
            const void *out)
{
    if (len > SEAL_PLAINTEXT_MAX || aadlen > SEAL_TOKEN_MAX)
        return HERR_TOOBIG;
    if ((aadlen && aad == NULL) || (len && (in == NULL || out == NULL)))
        return HERR_INVALID;
    return 0;
}

int
seal_gcm_encrypt(const unsigned char key[SEAL_KEY_LEN],
                 const unsigned char nonce[SEAL_NONCE_LEN], const void *aad,
                 size_t aadlen, const void *pt, size_t len, unsigned char *ct,
                 unsigned char tag[SEAL_TAG_LEN])
{
    int rc = gcm_args_ok(aad, aadlen, pt, len, ct);
    if (rc != 0)
        return rc;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (c == NULL)
        return HERR_PERM;
    /* GCM's Final writes nothing; a buffer of its own keeps `ct + outl`
     * off a NULL `ct` when len is 0. */
    unsigned char fin_out[SEAL_TAG_LEN];
    int outl = 0, fin = 0;
    rc = HERR_PERM;
    if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE_LEN, NULL) !=
            1 ||
        EVP_EncryptInit_ex(c, NULL, NULL, key, nonce) != 1)
        goto out;
    if (aadlen && EVP_EncryptUpdate(c, NULL, &outl, aad, (int)aadlen) != 1)
        goto out;
    outl = 0;
    if (len && EVP_EncryptUpdate(c, ct, &outl, pt, (int)len) != 1)
        goto out;
    if ((size_t)outl != len)
        goto out;
    if (EVP_EncryptFinal_ex(c, fin_out, &fin) != 1 || fin != 0)
        goto out;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN, tag) != 1)
        goto out;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(c); /* wipes the key schedule */
    if (rc != 0 && len)
        OPENSSL_cleanse(ct, len);
    return rc;
}

int
seal_gcm_decrypt(const unsigned char key[SEAL_KEY_LEN],
                 const unsigned char nonce[SEAL_NONCE_LEN], const void *aad,
                 size_t aadlen, const void *ct, size_t len,
                 const unsigned char tag[SEAL_TAG_LEN], unsigned char *pt)
{
    int rc = gcm_args_ok(aad, aadlen, ct, len, pt);
    if (rc != 0)
        return rc;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (c == NULL)
        return HERR_PERM;
    unsigned char t[SEAL_TAG_LEN];
    memcpy(t, tag, sizeof t); /* the ctrl takes a non-const pointer */
    /* GCM's Final writes nothing; a buffer of its own keeps `ct + outl`
     * off a NULL `ct` when len is 0. */
    unsigned char fin_out[SEAL_TAG_LEN];
    int outl = 0, fin = 0;
    rc = HERR_PERM;
    if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE_LEN, NULL) !=
            1 ||
        EVP_DecryptInit_ex(c, NULL, NULL, key, nonce) != 1)
        goto out;
    if (aadlen && EVP_DecryptUpdate(c, NULL, &outl, aad, (int)aadlen) != 1)
        goto out;
    outl = 0;
    if (len && EVP_DecryptUpdate(c, pt, &outl, ct, (int)len) != 1)
        goto out;
    if ((size_t)outl != len)
        goto out;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_LEN, t) != 1)
        goto out;
    if (EVP_DecryptFinal_ex(c, fin_out, &fin) != 1) {
        rc = HERR_INVALID;
        goto out;
    }
    rc = 0;
out:
    EVP_CIPHER_CTX_free(c);
    if (rc != 0 && len)
        OPENSSL_cleanse(pt, len);
    return rc;
}

/* ---- tokens ---- */

static int
is_b64(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '+' || c == '/';
}

static int
is_lower_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/*
 * Checks the whole shape of a token (nothing about keys) and decodes its
 * body into blob (BLOB_MAX bytes). Returns 0 with *bloblen, or an error
 * whose message quotes nothing of the token but the version digits.
 */
static int
token_parse(const char *token, unsigned char *blob, size_t *bloblen,
            struct herr *e)
{
    if (token == NULL)
        return herr_set(e, HERR_INVALID, NULL, "no sealed value");
    size_t tl = strnlen(token, SEAL_TOKEN_MAX + 1);
    if (tl > SEAL_TOKEN_MAX)
        return herr_set(e, HERR_TOOBIG, NULL,
                        "sealed value is over %d characters", SEAL_TOKEN_MAX);
    if (strncmp(token, VERSION_TAG, sizeof VERSION_TAG - 1) != 0) {
        size_t d = 0;
        while (token[0] == 'v' && d < 8 && token[1 + d] >= '0' &&
               token[1 + d] <= '9')
            d++;
        if (d > 0 && token[1 + d] == ':')
            return herr_set(e, HERR_INVALID, NULL,
                            "sealed value is in format v%.*s, which this "
                            "version does not read",
                            (int)d, token + 1);
        return herr_set(e, HERR_INVALID, NULL,
                        "not a sealed value (expected v1:<key id>:<data>)");
    }
    const char *id = token + sizeof VERSION_TAG - 1;
    for (size_t i = 0; i < SEAL_KEYID_LEN; i++)
        if (!is_lower_hex((unsigned char)id[i]))
            return herr_set(e, HERR_INVALID, NULL,
                            "sealed value has a malformed key id");
    if (id[SEAL_KEYID_LEN] != ':')
        return herr_set(e, HERR_INVALID, NULL,
                        "sealed value has a malformed key id");

    const char *b = token + HDR_LEN;
    size_t bl = tl - HDR_LEN;
    if (bl % 4 != 0)
        return herr_set(e, HERR_INVALID, NULL,
                        "sealed value is truncated or not base64");
    size_t pad = 0;
    if (bl >= 1 && b[bl - 1] == '=')
        pad++;
    if (bl >= 2 && b[bl - 2] == '=')
        pad++;
    for (size_t i = 0; i < bl - pad; i++)
        if (!is_b64((unsigned char)b[i]))
            return herr_set(e, HERR_INVALID, NULL,
                            "sealed value is not base64 (character %zu)",
                            HDR_LEN + i + 1);
    size_t n = bl / 4 * 3 - pad;
    if (n < OVERHEAD)
        return herr_set(e, HERR_INVALID, NULL, "sealed value is truncated");
    if (n - OVERHEAD > SEAL_PLAINTEXT_MAX)
        return herr_set(e, HERR_TOOBIG, NULL,
                        "sealed value holds over %d bytes", SEAL_PLAINTEXT_MAX);
    int m = EVP_DecodeBlock(blob, (const unsigned char *)b, (int)bl);
    if (m < 0 || (size_t)m != bl / 4 * 3)
        return herr_set(e, HERR_INVALID, NULL, "sealed value is not base64");
    *bloblen = n;
    return 0;
}

int
seal_token_key_id(const char *token, char id[SEAL_KEYID_LEN + 1])
{
    unsigned char blob[BLOB_MAX];
    size_t n;
    id[0] = '\0';
    if (token_parse(token, blob, &n, NULL) != 0)
        return HERR_INVALID;
    memcpy(id, token + sizeof VERSION_TAG - 1, SEAL_KEYID_LEN);
    id[SEAL_KEYID_LEN] = '\0';
    return 0;
}

char *
seal_seal(const struct seal_key *k, const char *plaintext, size_t len,
          const char *aad)
{
    if (k == NULL || len > SEAL_PLAINTEXT_MAX || (len && plaintext == NULL))
        return NULL;
    if (aad == NULL)
        aad = "";
    size_t aadlen = strlen(aad);
    if (aadlen > SEAL_AAD_MAX)
        return NULL;

    unsigned char full[HDR_LEN + SEAL_AAD_MAX];
    int h = snprintf((char *)full, sizeof full, "%s%s:", VERSION_TAG, k->id);
    if (h != (int)HDR_LEN)
        return NULL;
    memcpy(full + HDR_LEN, aad, aadlen);

    unsigned char blob[SEAL_PLAINTEXT_MAX + OVERHEAD];
    if (RAND_bytes(blob, SEAL_NONCE_LEN) != 1)
        return NULL;
    if (seal_gcm_encrypt(k->raw, blob, full, HDR_LEN + aadlen, plaintext, len,
                         blob + SEAL_NONCE_LEN,
                         blob + SEAL_NONCE_LEN + len) != 0)
        return NULL;
    size_t n = len + OVERHEAD;
    size_t b64 = (n + 2) / 3 * 4;
    char *tok = xmalloc(HDR_LEN + b64 + 1);
    memcpy(tok, full, HDR_LEN);
    EVP_EncodeBlock((unsigned char *)tok + HDR_LEN, blob, (int)n);
    tok[HDR_LEN + b64] = '\0';
    return tok;
}

int
seal_open(const struct seal_key *const *keys, size_t nkeys, const char *token,
          const char *aad, char **plaintext, size_t *len, struct herr *e)
{
    *plaintext = NULL;
    *len = 0;
    if (aad == NULL)
        aad = "";
    size_t aadlen = strlen(aad);
    if (aadlen > SEAL_AAD_MAX)
        return herr_set(e, HERR_TOOBIG, NULL,
                        "sealing context is over %d bytes", SEAL_AAD_MAX);
    unsigned char blob[BLOB_MAX];
    size_t n;
    int rc = token_parse(token, blob, &n, e);
    if (rc != 0)
        return rc;

    const char *id = token + sizeof VERSION_TAG - 1;
    const struct seal_key *k = NULL;
    for (size_t i = 0; i < nkeys && k == NULL; i++)
        if (keys[i] && memcmp(keys[i]->id, id, SEAL_KEYID_LEN) == 0)
            k = keys[i];
    if (k == NULL)
        return herr_set(e, HERR_NOTFOUND, NULL,
                        "sealed with key %.*s, which is not loaded",
                        (int)SEAL_KEYID_LEN, id);

    unsigned char full[HDR_LEN + SEAL_AAD_MAX];
    memcpy(full, token, HDR_LEN);
    memcpy(full + HDR_LEN, aad, aadlen);
    size_t ctlen = n - OVERHEAD;
    /* straight into secret memory: the plaintext never touches the heap */
    unsigned char *pt = (unsigned char *)(secret_alloc(ctlen) + 1);
    rc = seal_gcm_decrypt(k->raw, blob, full, HDR_LEN + aadlen,
                          blob + SEAL_NONCE_LEN, ctlen,
                          blob + SEAL_NONCE_LEN + ctlen, pt);
    if (rc != 0) {
        seal_free_secret((char *)pt, ctlen);
        if (rc == HERR_INVALID)
            return herr_set(e, HERR_INVALID, NULL,
                            "sealed value (key %s) does not verify: it was "
                            "sealed for another context, or altered",
                            k->id);
        return herr_set(e, rc, NULL, "AES-256-GCM failed in OpenSSL");
    }
    pt[ctlen] = '\0';
    *plaintext = (char *)pt;
    *len = ctlen;
    return 0;
}
