/*
 * lib_internal — what the files of libherald (producer/lib*.c) share and
 * no user of producer/herald.h sees: the handle's layout, the Redis
 * connection, one command, one script, pipelined replies, the keys and
 * rows of schemes and organisations, and the versioned hashes both are
 * kept in. Every name declared here starts with lh_ / LH_ (struct herald
 * aside, which herald.h names).
 */
#ifndef HERALD_LIB_INTERNAL_H
#define HERALD_LIB_INTERNAL_H

#include "herald.h"
#include "rscript.h"

#include <hiredis.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the handle (libherald.c) ---- */

/* herald_token_check's memory (lib_tokens.c): the last tokens found, by
 * hash, each answered from here for a moment after Redis gave it. */
#define LH_TOKEN_SEEN_N 8

struct lh_token_seen {
    char hash[TOKEN_HASH_LEN + 1];
    char *rec; /* the record's JSON as Redis has it; NULL: empty slot */
    size_t len;
    int64_t at; /* clock_mono_ms() of the HGET */
};

struct herald {
    const struct settings *s;
    struct redis_target target;
    char url[512]; /* redacted */
    redisContext *c;
    struct mc *mc;
    struct lh_token_seen seen[LH_TOKEN_SEEN_N];
    unsigned seen_next; /* the slot the next token takes */
};

/* ---- Redis (libherald.c) ---- */

/* Connects (AUTH, SELECT) unless connected: 0 or HERR_REDIS. */
int lh_need_redis(struct herald *h, struct herr *e);

/* Drops the connection (after an I/O failure); the next call reconnects. */
void lh_drop_redis(struct herald *h);

/*
 * Runs one command. Returns the reply (caller frees), or NULL with
 * HERR_REDIS in `e` for an I/O failure (the connection is dropped) or an
 * error reply.
 */
redisReply *lh_command(struct herald *h, struct herr *e, const char *fmt, ...);

/*
 * Runs Redis script `id` (common/rscript.h) by EVALSHA, and by EVAL
 * (which caches it for the next time) when Redis does not have it
 * (NOSCRIPT). argv holds its nkeys keys, then its arguments (lens NULL:
 * strlen). The reply, or NULL as with lh_command().
 */
redisReply *lh_script(struct herald *h, struct herr *e, enum rscript_id id,
                      int nkeys, int argc, const char **argv,
                      const size_t *lens);

/*
 * Reads `n` pipelined replies into out[] (all of them, caller frees).
 * `strict`: an error reply fails the read; otherwise only a lost
 * connection does, and the caller looks at each reply's type. On a
 * failure, frees what was read, leaves out[] all NULL and returns
 * HERR_REDIS.
 */
int lh_read_replies_opt(struct herald *h, size_t n, redisReply **out,
                        int strict, struct herr *e);

/* Reads n pipelined replies; an error reply fails the whole read. */
int lh_read_replies(struct herald *h, size_t n, redisReply **out,
                    struct herr *e);

/* Counts the error replies among n (a wrong-type key) and returns how
 * many: for reads where one bad key must not hide the rest. */
size_t lh_count_errors(redisReply **r, size_t n);

/* An integer reply's value; 0 for anything else (or NULL). */
long long lh_reply_int(const redisReply *r);

/* ---- jobs (lib_enqueue.c) ---- */

/*
 * Validates one job and builds what gets pushed: its canonical JSON (new,
 * in *canon), its lane and its id (copied into id_out when not NULL).
 */
int lh_prepare(const char *json, size_t len, char **canon,
               enum job_priority *prio, char *id_out, struct herr *e);

/* The key of lane `p` (<prefix>:queue:<priority>). */
int lh_lane_key(struct herald *h, enum job_priority p, char *out, size_t n,
                struct herr *e);

/* ---- schemes (lib_schemes.c) and organisations (lib_orgs.c) ---- */

/* The keys of the hash and of its version counter, KEYS_MAX each. */
int lh_scheme_keys(struct herald *h, char *hash, char *version, struct herr *e);
int lh_org_keys(struct herald *h, char *hash, char *version, struct herr *e);

/* Parses a stored row and checks it sits under its own field. */
int lh_scheme_decode_row(const char *field, const char *raw, size_t rawlen,
                         struct scheme **out, struct herr *e);
int lh_org_decode_row(const char *field, const char *raw, size_t rawlen,
                      struct org **out, struct herr *e);

/* ---- versioned hashes (lib_versioned.c) ---- */

/* Reads one field: 0 with *raw (new) or NULL when absent; HERR_REDIS. */
int lh_hash_read(struct herald *h, const char *hash, const char *field,
                 char **raw, size_t *rawlen, struct herr *e);

/* The compare-and-set of a versioned hash (redis/scheme_cas.lua: schemes
 * and organisations): 1 done, 0 the field changed meanwhile, or HERR_REDIS.
 * `old` / `neu` NULL stand for "absent" / "delete". */
int lh_hash_cas(struct herald *h, const char *hash, const char *version,
                const char *field, const char *old, size_t oldlen,
                const char *neu, struct herr *e);

/* What an lh_modify_fn answers (or a negative HERR_*), and what
 * lh_versioned_update returns. */
enum lh_vu {
    LH_VU_KEEP = 0,  /* leave the field as it is: done */
    LH_VU_WRITE = 1, /* put *neu in its place (NULL *neu: delete the field) */
    LH_VU_BUSY = 2,  /* returned only: it changed under every try */
};

/*
 * Makes a field's new value from its current one (`old`, NULL when the
 * field is absent): LH_VU_WRITE with *neu new (or NULL), LH_VU_KEEP, or
 * a negative HERR_* in `e`; lh_versioned_update frees *neu. It is called
 * again, with the newer `old`, when the field changed before the write.
 */
typedef int (*lh_modify_fn)(void *ud, const char *field, const char *old,
                            size_t oldlen, char **neu, struct herr *e);

/* A field of a versioned hash. */
struct lh_vfield {
    const char *hash;    /* the hash's key */
    const char *version; /* the key of its version counter */
    const char *field;
    int tries; /* rounds before LH_VU_BUSY */
    /* The value already read (NULL: none): the first round takes it
     * instead of reading the field. */
    const char *known;
    size_t knownlen;
};

/*
 * Read, modify, compare-and-set, again while the field changed meanwhile
 * (at most f->tries rounds): what writes schemes and organisations.
 * Returns LH_VU_WRITE (written), LH_VU_KEEP (`fn` left it), LH_VU_BUSY (it
 * changed under every round; the caller says so), or a negative HERR_*
 * (from Redis or from `fn`).
 */
int lh_versioned_update(struct herald *h, const struct lh_vfield *f,
                        lh_modify_fn fn, void *ud, struct herr *e);

/* ---- quota figures of senders (lib_senders.c) ---- */

/* Fills out->senders (and unreadable, invalid) for herald_queue_stats;
 * out->now_ms is set. */
int lh_sender_stats(struct herald *h, struct herald_stats *out, struct herr *e);

#endif
