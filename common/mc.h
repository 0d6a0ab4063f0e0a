/*
 * mc — the Message Center store (SPEC §6).
 *
 * One record per job id: what was sent (or is being sent), to whom, by
 * which path, and what happened. The store sits behind a small table of
 * function pointers (struct mc_backend) chosen by the URL scheme: SQLite
 * ("sqlite://PATH", WAL, safe for several worker processes on one host)
 * and PostgreSQL ("postgresql://..." or "postgres://...", a libpq URI: a
 * fleet on any number of hosts; see mc_pg.c and docs/mc-postgres.md).
 *
 * Batching: writes may be grouped with mc_batch_begin()/mc_batch_commit();
 * outside a batch each write is its own transaction. A record is durable
 * once the call (or the commit of its batch) returned 0. Inside a batch a
 * failed write leaves no partial record behind (the batch stays open and
 * the caller may go on or roll back).
 *
 * SQLite URL: "sqlite://./rel/mc.db", "sqlite://rel/mc.db" (relative) or
 * "sqlite:///abs/mc.db", optionally followed by "?busy_timeout_ms=N"
 * (default 5000, 0..600000): how long a write waits for another process
 * holding the file before failing with HERR_STORE "database is locked".
 * A handle is for one thread; each process opens its own.
 *
 * Times are milliseconds since the epoch (UTC); 0 means "not set". Fields
 * typed JSON in SPEC §6 (to, cc, attachments, meta, recipients) are held
 * as compact JSON text.
 */
#ifndef HERALD_MC_H
#define HERALD_MC_H

#include "err.h"
#include "job.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>

enum mc_status {
    MC_QUEUED = 0,
    MC_SENDING,
    MC_SENT,
    MC_DEFERRED,
    MC_FAILED,
};

const char *mc_status_name(enum mc_status s);
int mc_status_parse(const char *s, enum mc_status *out); /* 0 / HERR_INVALID */
int mc_status_valid(enum mc_status s); /* one of the enum's values */

struct mc_record {
    char *id, *org, *account, *type;
    enum mc_status status;
    char *path;        /* "scheme" | "spf" | "relay", NULL until resolved */
    char *path_reason; /* why that path, NULL until resolved */
    char *from;        /* the job's from (the organisation's address) */
    char *from_name;
    char *sender;   /* envelope sender actually used, NULL until resolved */
    char *reply_to; /* Reply-To actually used (or the job's) */
    char *to_json, *cc_json, *bcc_json; /* [{"email","name"}...] */
    char *subject, *text, *html;
    char *attachments_json; /* [{"filename","content_type","size"}...] */
    char *meta_json;        /* NULL when the job had none */
    char *recipients_json;  /* [{"email","kind","status","reply"}...] */
    int64_t created_at, updated_at, sent_at, next_attempt_at;
    int attempts;
    char *last_error, *smtp_reply;
    char *resend_of;  /* the id this message resends (SPEC §6.4), or NULL */
    int body_expired; /* text and html were removed by retention (§6.3) */
};

/* A change to an existing record. NULL strings and negative times mean
 * "leave as is"; `status` is always applied. */
struct mc_update { /* start from mc_update_init() */
    const char *id;
    enum mc_status status;
    const char *path, *path_reason, *sender, *reply_to;
    int attempts_add;                 /* added to attempts */
    int64_t sent_at, next_attempt_at; /* -1: unchanged; 0: clear */
    const char *last_error, *smtp_reply, *recipients_json;
    /* For every string above: NULL leaves the field, "" clears it. */
    /* The message as sent (a template rendered when the job was taken):
     * with set_content, subject, text and html replace the stored ones
     * (NULL: none). */
    int set_content;
    const char *subject, *text, *html;
};

/* The checks mc_insert and mc_update make before a backend sees the
 * write: 0, or HERR_INVALID naming the field (see mc_insert). */
int mc_record_check(const struct mc_record *r, struct herr *e);
int mc_update_check(const struct mc_update *u, struct herr *e);

/* Fills `u` with "change nothing but the status" (times -1, strings NULL,
 * attempts_add 0, set_content 0). Zero-initialised updates would clear the
 * times. */
void mc_update_init(struct mc_update *u, const char *id, enum mc_status status);

#define MC_LIST_DEFAULT 50
#define MC_LIST_MAX 500
#define MC_Q_WORDS_MAX 8  /* words in a subject search */
#define MC_Q_WORD_MAX 64  /* bytes in one of them */
#define MC_CURSOR_MAX 256 /* bytes in a cursor */
#define MC_SCOPE_MAX 256  /* organisations in a scope */

/*
 * mc_list's filters (SPEC §6.2); NULL / 0 = any. Start from a zeroed
 * struct.
 *
 *   org, account, type, path   exact
 *   to     any to, cc or bcc address, case-insensitive
 *   from   the job's from address, case-insensitive
 *   q      words of the subject: every word of q starts a word of the
 *          subject (case-insensitive for ASCII). A word is a run of ASCII
 *          letters and digits and of non-ASCII characters; anything else
 *          separates words. At most MC_Q_WORDS_MAX words of MC_Q_WORD_MAX
 *          bytes; a q without a word is refused.
 *   since, until   created_at, both inclusive
 *   scope  only these organisations (an API token's); nscope 0 = all
 *   cursor a previous page's next_cursor: the page after it
 */
struct mc_filter {
    const char *org, *account, *to, *type, *path, *from, *q;
    int has_status;
    enum mc_status status;
    int64_t since, until; /* created_at range, both inclusive, 0 = open */
    int limit;            /* <= 0: MC_LIST_DEFAULT; capped at MC_LIST_MAX */
    const char *cursor;
    const char *const *scope;
    size_t nscope;
    int no_bodies; /* not a filter: the records' text and html left NULL
                      (a listing that does not show them) */
};

/* The word rule shared by q and the stores' subject-word indexes: the
 * next word of the string at *p (a run of ASCII letters and digits and of
 * non-ASCII bytes), its start returned and its length in *len, *p moved
 * past it; NULL when none is left. */
const char *mc_word_next(const char **p, size_t *len);

/* The words of a subject search (see struct mc_filter's q), lowercased
 * (ASCII), each NUL-terminated in `buf`: 0 and *n words, or HERR_INVALID
 * naming field "q". A word that repeats an earlier one or begins another
 * is left out (it matches nothing more). Shared by the backends so both
 * read q alike. */
int mc_q_words(const char *q, char words[MC_Q_WORDS_MAX][MC_Q_WORD_MAX + 1],
               size_t *n, struct herr *e);

/* Keyset paging: the position after a record (newest first: created_at,
 * then id, both descending) as an opaque cursor (new string), and back.
 * A cursor that is not one is HERR_INVALID naming field "cursor". */
char *mc_cursor_new(int64_t created_at, const char *id);
int mc_cursor_parse(const char *cursor, int64_t *created_at, char *id,
                    size_t idsize, struct herr *e);

/* CSV (RFC 4180, CRLF) of list results, the same columns for heraldctl mc
 * list --csv and the API's format=csv: id, created_at, org, account, type,
 * status, path, from, to (every to/cc address, "; "-separated), subject,
 * attempts, sent_at, last_error. A cell that a spreadsheet would run as a
 * formula (it starts with =, +, -, @, TAB or CR) gets a leading '. */
void mc_csv_header(struct buf *out);
void mc_csv_row(struct buf *out, const struct mc_record *r);

struct mc;

/*
 * Opens the store named by `url`. Returns 0 and a new handle in *out, or
 * HERR_INVALID (unknown scheme, bad path) / HERR_STORE with `e` filled.
 * Creates the schema (and missing parent directory) when needed.
 */
int mc_open(const char *url, struct mc **out, struct herr *e);
void mc_close(struct mc *m);

/* begin: HERR_INVALID when a batch is already open. commit: HERR_INVALID
 * when none is open; on HERR_STORE the batch has been rolled back and is
 * closed. rollback: no-op when no batch is open. */
int mc_batch_begin(struct mc *m, struct herr *e);
int mc_batch_commit(struct mc *m, struct herr *e);
void mc_batch_rollback(struct mc *m);

/*
 * Inserts `r` if no record with r->id exists. Returns 0 when inserted;
 * HERR_EXISTS when a record is already there, with its status stored in
 * *existing (may be NULL); HERR_STORE on failure; HERR_INVALID when id,
 * org, account, type or from is missing, created_at is not set, or
 * to/cc/bcc_json is not a JSON array of {"email"...} objects.
 * Recipient e-mails are indexed lowercased for mc_list's `to` filter.
 */
int mc_insert(struct mc *m, const struct mc_record *r, enum mc_status *existing,
              struct herr *e);

/* Applies `u` (all of it, or nothing). HERR_NOTFOUND when no such id.
 * Sets updated_at to now. */
int mc_update(struct mc *m, const struct mc_update *u, struct herr *e);

/*
 * Deferred writes. Inside a batch, mc_insert_deferred and
 * mc_update_deferred may queue the write and return before it is done
 * (the PostgreSQL store sends the writes of a batch without waiting for
 * each: a batch costs a round trip or two, not one per write). The
 * outcome -- what mc_insert or mc_update would have returned at that
 * point of the batch: rc, *existing with HERR_EXISTS, the error -- is in
 * *res once mc_batch_sync() returned (or mc_batch_commit() or
 * mc_batch_rollback()); `res` must stay valid until then. The record and
 * update are copied: the caller may free them at once. The writes of
 * one record take effect in the order they were made, and every record
 * ends as if each write had waited (the PostgreSQL store may send the
 * writes of different records in another order, and gathers those of
 * one day into one statement). A write the database refuses loses the
 * batch: its outcome, and that of every write gathered with it, names
 * the database's reason; later ones say the batch was rolled back.
 * Outside a batch, and on a store that does not defer (SQLite), the
 * write is done at once and *res is filled before the call returns.
 *
 * mc_batch_sync: waits for every deferred write of the batch and fills
 * their results. Returns 0, or HERR_STORE when the database refused a
 * write: the batch has been rolled back (as with a failed mc_insert in a
 * batch), every result not yet 0 says so, and `e` says why; close the
 * batch with mc_batch_rollback() (or the commit, which fails). Outcomes
 * that are answers (HERR_EXISTS, HERR_NOTFOUND, HERR_INVALID) leave the
 * batch open and mc_batch_sync at 0.
 */
struct mc_result {
    int rc;                  /* 0 or what mc_insert / mc_update returned */
    enum mc_status existing; /* with HERR_EXISTS from an insert */
    struct herr err;         /* with rc != 0 */
};
void mc_insert_deferred(struct mc *m, const struct mc_record *r,
                        struct mc_result *res);
void mc_update_deferred(struct mc *m, const struct mc_update *u,
                        struct mc_result *res);
int mc_batch_sync(struct mc *m, struct herr *e);

/* Loads one record (caller frees with mc_record_free); HERR_NOTFOUND. */
int mc_get(struct mc *m, const char *id, struct mc_record **out,
           struct herr *e);

/* Lists records matching `f` (see struct mc_filter), newest first
 * (created_at, then id, both descending), at most f->limit of them. *out
 * is an array of *n records (caller frees with mc_records_free; *out may
 * be NULL when *n is 0); *next_cursor (may be NULL: not wanted) is the
 * cursor of the next page, a new string, or NULL when this page is the
 * last. HERR_INVALID names the filter at fault. */
int mc_list(struct mc *m, const struct mc_filter *f, struct mc_record ***out,
            size_t *n, char **next_cursor, struct herr *e);

/*
 * Retention (SPEC §6.3): removes the records created before
 * records_before, and clears the text and html of those created before
 * bodies_before (body_expired becomes true); 0 for either: none. The
 * work goes in chunks of MC_PURGE_CHUNK records, each its own
 * transaction, so writers (the workers) wait little; not inside a batch.
 * With dry_run nothing changes. `max` > 0 stops after about that many
 * records and bodies (a chunk is not cut; out->more says work is left):
 * a worker purges in rounds its shutdown need not wait for. *out says how
 * many records were (or would be) removed and bodies cleared. Safe to
 * run twice, or by two processes at once. mc_purge_cutoffs turns the
 * settings into the two times (days 0: none).
 */
#define MC_PURGE_CHUNK 5000
struct mc_purge_result {
    long long records, bodies;
    int more; /* stopped at `max` with work left */
};
int mc_purge(struct mc *m, int64_t records_before, int64_t bodies_before,
             int dry_run, long long max, struct mc_purge_result *out,
             struct herr *e);
void mc_purge_cutoffs(long retention_days, long body_days, int64_t now_ms,
                      int64_t *records_before, int64_t *bodies_before);

void mc_record_free(struct mc_record *r);
void mc_records_free(struct mc_record **v, size_t n);

/*
 * Schema (heraldctl mc migrate): opening a store creates or upgrades its
 * schema; this says to which version (*version) and from which (*before:
 * 0 = it was created by this open, -1 = the backend does not say; equal
 * to *version when there was nothing to do). Returns 0.
 */
int mc_schema_version(struct mc *m, int *version, int *before);

/* Whether the store has checkpoints (SQLite: copying its write-ahead log
 * into the database file). */
int mc_has_checkpoint(const struct mc *m);

/* A checkpoint now, waiting for no reader or writer (SQLite's PASSIVE): as
 * much of the log as can be copied is. 0, or HERR_STORE. 0 at once for a
 * store without checkpoints. Meant for a handle of its own, on a thread
 * other than the writer's, so the writes never wait for it. */
int mc_checkpoint(struct mc *m, struct herr *e);

/* This handle's writes leave checkpoints to another handle's
 * mc_checkpoint calls: its own automatic checkpoint runs only when the log
 * grew four times past its usual size (the other one fell behind). */
void mc_checkpoint_elsewhere(struct mc *m);

/*
 * Import (heraldctl mc import): copies every record of `src` into `dst`,
 * as stored (status, times, outcome and all), newest first, in batches of
 * MC_LIST_MAX. A record whose id `dst` already holds is left as it is and
 * counted as skipped, so importing twice copies nothing the second time.
 * Records written to `src` while it runs may be missed (run it again).
 * Returns 0; HERR_STORE (either store; `e` says which record); `out`
 * counts what was done before a failure too.
 */
struct mc_import_result {
    long long copied, skipped;
};
int mc_import(struct mc *dst, struct mc *src, struct mc_import_result *out,
              struct herr *e);

/*
 * Builds the initial record of a valid job (status queued, created_at =
 * updated_at = now, recipients all "pending"). The job must have an id;
 * returns NULL when j->id is NULL.
 */
struct mc_record *mc_record_from_job(const struct job *j);

/*
 * The record as one JSON object (SPEC §6 field names: "from" for the
 * from field; JSON-typed fields embedded, times RFC 3339 UTC or null,
 * absent strings null), appended to `b` compact — the bytes json_dumps
 * gives for the same object (JSON_COMPACT) — and shaped by flags:
 * MC_JSON_NO_BODIES leaves out text and html (a list row, SPEC §9);
 * MC_JSON_NO_BCC leaves out bcc and the bcc recipients' outcomes (an
 * account's in-app inbox). Written field by field, not built as a
 * jansson tree (the tree's allocations were a third of herald-api's CPU
 * for a page). 0, or nonzero when `b` would pass its maximum.
 */
#define MC_JSON_NO_BODIES 1u
#define MC_JSON_NO_BCC 2u
struct buf;
int mc_record_write(struct buf *b, const struct mc_record *r, unsigned flags);

/* The whole record (flags 0) as a new string. */
char *mc_record_to_json(const struct mc_record *r);

/* The same as a jansson object (new reference). */
struct json_t;
struct json_t *mc_record_json(const struct mc_record *r, unsigned flags);

/* mc_list's filter as a backend gets it: checked, and what the backends
 * would each parse, parsed once. */
struct mc_query {
    const struct mc_filter *f;
    int limit; /* rows wanted: the page and one more (is there a next?) */
    int has_cursor;
    int64_t cursor_at; /* only records before (cursor_at, cursor_id) */
    char cursor_id[JOB_ID_MAX + 1];
    char words[MC_Q_WORDS_MAX][MC_Q_WORD_MAX + 1]; /* q's words, lowercased */
    size_t nwords;
    const char *to, *from; /* lowercased, or NULL */
};

/* Backend table: one per URL scheme. */
struct mc_backend {
    const char *scheme; /* "sqlite" */
    int (*open)(const char *rest, void **state, struct herr *e);
    void (*close)(void *state);
    int (*begin)(void *state, struct herr *e);
    int (*commit)(void *state, struct herr *e);
    void (*rollback)(void *state);
    int (*insert)(void *state, const struct mc_record *r,
                  enum mc_status *existing, struct herr *e);
    int (*update)(void *state, const struct mc_update *u, int64_t now,
                  struct herr *e);
    int (*get)(void *state, const char *id, struct mc_record **out,
               struct herr *e);
    int (*list)(void *state, const struct mc_query *q, struct mc_record ***out,
                size_t *n, struct herr *e);
    int (*purge)(void *state, int64_t records_before, int64_t bodies_before,
                 int dry_run, long long max, struct mc_purge_result *out,
                 struct herr *e);
    /* The schema version now, and the one the open found (0: none, it
     * was created); NULL when the backend does not report them. */
    int (*schema)(void *state, int *version, int *before);
    /* Deferred writes (see mc_insert_deferred); NULL: mc.c does the
     * write at once. The validation of mc_insert/mc_update is done. */
    void (*insert_deferred)(void *state, const struct mc_record *r,
                            struct mc_result *res);
    void (*update_deferred)(void *state, const struct mc_update *u, int64_t now,
                            struct mc_result *res);
    int (*sync)(void *state, struct herr *e);
    /* A checkpoint now, not waiting for anyone (SQLite's WAL); and whether
     * this handle leaves checkpoints to another's (its own only as a
     * fallback). NULL: the store has none. */
    int (*checkpoint)(void *state, struct herr *e);
    void (*checkpoint_elsewhere)(void *state);
};

extern const struct mc_backend mc_backend_sqlite;
/* mc_pg.c: "postgresql://..." and "postgres://..." (libpq URIs). */
extern const struct mc_backend mc_backend_pg;
extern const struct mc_backend mc_backend_postgres;

#endif
