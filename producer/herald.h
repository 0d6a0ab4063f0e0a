/*
 * herald — libherald, the C client library behind herald-enqueue and
 * heraldctl (SPEC §1, §3, §6, §7).
 *
 * A `struct herald` is one synchronous connection to Redis (hiredis, the
 * blocking API) plus, opened on first use, the Message Center store. It
 * is not thread-safe: use one handle per thread.
 *
 *   herald_enqueue*      validate a job exactly as the worker does
 *                        (job_parse), give it an id when it has none,
 *                        and LPUSH its canonical JSON onto
 *                        <prefix>:queue:<priority>.
 *   herald_mc_*          read the Message Center (no Redis needed).
 *   herald_queue_stats   lane lengths, scheduled, dead, workers.
 *   herald_dead_*        list and replay the dead-letter list.
 *   herald_template_*    store, read, list and remove message templates
 *                        (common/tmpl.h) in <prefix>:templates.
 *   herald_scheme_*      Email Sending Schemes (common/scheme.h) in
 *                        <prefix>:schemes; herald_key_rotate re-seals
 *                        their passwords under a new key.
 *   herald_org_*         organisations' settings (common/org.h) in
 *                        <prefix>:orgs: name, relay daily limit.
 *
 * Errors follow common/err.h: every function returns 0 or a negative
 * HERR_* code and fills the optional `struct herr` (field + sentence).
 * HERR_INVALID / HERR_TOOBIG mean the caller's input is at fault (the
 * field is named: "to[2]", "priority", ...); HERR_REDIS means Redis
 * failed or is unreachable (the message names the URL, never the
 * password); HERR_STORE / HERR_NOTFOUND come from the Message Center.
 *
 * Redis connection: made by herald_open() (unless HERALD_OPEN_LAZY), with
 * settings->connect_timeout_s as the connect timeout and
 * HERALD_REDIS_TIMEOUT_S per command; AUTH and SELECT are sent when the
 * URL carries a password or a database. After an I/O error the
 * connection is dropped and the next call reconnects.
 *
 * Ownership: everything returned through an `out` pointer is new and is
 * released with the matching *_free function; every input is borrowed.
 */
#ifndef HERALD_HERALD_H
#define HERALD_HERALD_H

#include "dead.h"
#include "err.h"
#include "job.h"
#include "mc.h"
#include "org.h"
#include "quota.h"
#include "scheme.h"
#include "seal.h"
#include "settings.h"
#include "token.h"

#include <stddef.h>
#include <stdint.h>

#define HERALD_REDIS_TIMEOUT_S 60 /* one command (or pipeline read) */
#define HERALD_PIPELINE_MAX 1000  /* jobs per pipelined round trip */
#define HERALD_DEAD_PAGE 500      /* LRANGE page size for dead lists */

struct herald;

/* herald_open_ex flags */
#define HERALD_OPEN_LAZY 0x1 /* connect to Redis on first use, not now */

/*
 * Opens a handle for `s` (borrowed: it must outlive the handle). Connects
 * to s->redis now; returns 0 and a new handle in *out, HERR_INVALID for a
 * bad URL, HERR_REDIS when Redis cannot be reached or refuses AUTH or
 * SELECT (then *out is NULL). The Message Center (s->mc) is opened only
 * when an herald_mc_* function is first called.
 */
int herald_open(const struct settings *s, struct herald **out, struct herr *e);

/* Like herald_open; with HERALD_OPEN_LAZY only the URL is checked now. */
int herald_open_ex(const struct settings *s, int flags, struct herald **out,
                   struct herr *e);

/* Closes Redis and the Message Center and frees the handle. NULL is ok. */
void herald_close(struct herald *h);

/*
 * The Redis URL of the handle with any password replaced by "***", for
 * messages. Borrowed; valid until herald_close.
 */
const char *herald_redis_url(const struct herald *h);

/* ---- enqueue ---- */

/*
 * Validates `len` bytes of `json` (job_parse, the worker's own rules),
 * assigns an id when the job has none (job_assign_id), and pushes the
 * canonical JSON (job_to_json) onto <prefix>:queue:<priority>.
 *
 * Returns 0 and writes the job's id (NUL-terminated) into id_out, which
 * holds JOB_ID_MAX + 1 bytes (may be NULL). HERR_INVALID / HERR_TOOBIG
 * when the job is rejected (e->field names the field; nothing is
 * pushed); HERR_REDIS when the push failed (the job may or may not be
 * in the queue if the connection broke after sending).
 */
int herald_enqueue(struct herald *h, const char *json, size_t len, char *id_out,
                   struct herr *e);

/* One job of a bulk enqueue (borrowed bytes). */
struct herald_item {
    const char *json;
    size_t len;
};

/*
 * The outcome of one item of herald_enqueue_many:
 *   rc == 0             pushed; id holds its id
 *   HERR_INVALID/TOOBIG rejected by validation; err names the field;
 *                       nothing pushed
 *   HERR_REDIS          not confirmed: Redis failed before this item's
 *                       reply was read (it may or may not be queued)
 */
struct herald_result {
    int rc;
    char id[JOB_ID_MAX + 1];
    struct herr err;
};

/*
 * Enqueues `n` jobs: each is validated as herald_enqueue does; the valid
 * ones are pushed with pipelining (up to HERALD_PIPELINE_MAX LPUSH
 * commands written, then their replies read, per round trip). Invalid
 * items do not stop the others. `results` (caller-owned, n entries) gets
 * one outcome per item, in order.
 *
 * Returns 0 when Redis accepted every valid item (individual items may
 * still be rejected: look at results[i].rc), or HERR_REDIS (e filled with
 * the first failure) when the connection failed or a push got an error
 * reply; then every item not confirmed has rc HERR_REDIS. After a
 * connection failure no further item is sent.
 */
int herald_enqueue_many(struct herald *h, const struct herald_item *items,
                        size_t n, struct herald_result *results,
                        struct herr *e);

/* ---- Message Center ---- */

/*
 * Loads the record of job `id` (new; free with mc_record_free).
 * HERR_NOTFOUND for an unknown id, HERR_INVALID for a malformed id,
 * HERR_STORE / HERR_INVALID when the store cannot be opened.
 */
int herald_mc_get(struct herald *h, const char *id, struct mc_record **out,
                  struct herr *e);

/* Lists records matching `f`, newest first (free with mc_records_free);
 * *next_cursor (NULL: not wanted) as mc_list gives it (common/mc.h). */
int herald_mc_list(struct herald *h, const struct mc_filter *f,
                   struct mc_record ***out, size_t *n, char **next_cursor,
                   struct herr *e);

/*
 * Retention now (SPEC §6.3): mc_purge with the cutoffs of
 * HERALD_MC_RETENTION_DAYS and HERALD_MC_BODY_DAYS (neither set: nothing
 * to do, *out zero). It does not take the fleet's purge lease (Message
 * Center commands need no Redis); a purge is safe beside another.
 */
int herald_mc_purge(struct herald *h, int dry_run, struct mc_purge_result *out,
                    struct herr *e);

/*
 * Resends message `id` (SPEC §6.4): enqueues a new job (a new id, which
 * *new_id receives: JOB_ID_MAX + 1 bytes) with the stored content, to
 * the original recipients (to, cc, bcc) or, when nto > 0, to the
 * addresses `to` instead (as to), and resend_of = id. The new job goes
 * through validation, quotas and everything else like any job. Returns
 * 0; HERR_NOTFOUND (no such message); HERR_PERM when the message cannot
 * be resent (its attachments are not kept, or its body expired);
 * HERR_INVALID (an address given is not one, field "to[i]"); the store's
 * or Redis' errors.
 */
int herald_mc_resend(struct herald *h, const char *id, const char *const *to,
                     size_t nto, char *new_id, struct herr *e);

/* ---- queue stats ---- */

struct herald_worker_stat {
    char *id;
    int registered;       /* has an entry in <prefix>:workers */
    int64_t heartbeat_ms; /* last heartbeat; 0 when unknown */
    int64_t age_ms;       /* now - heartbeat_ms; -1 when unknown */
    long long processing; /* length of <prefix>:processing:<id> */
};

/* One quota window of a sender, the one holding herald_stats.now_ms. */
struct herald_window_stat {
    enum quota_kind kind;
    long long used;  /* GET of its counter key (0 when absent) */
    long long limit; /* the scheme's daily_limit / minute_limit, the org's
                        relay_daily_limit */
    int64_t start_ms, end_ms; /* [start, end): end is when it resets */
};

/*
 * A sender (common/quota.h) with a limit or an active pause. Windows, in
 * this order when present: the day (a scheme's in its time zone, an
 * org's in UTC), then the minute.
 */
struct herald_sender_stat {
    char *sender;     /* "scheme:<org>/<email lc>", "org:<org>", "relay", or a
                         paused name of another form, as stored */
    char *org;        /* NULL for "relay" and unknown forms */
    char *email;      /* schemes only: the scheme's address as stored (from
                         the sender name, lowercased, when no scheme is) */
    char *time_zone;  /* the day window's zone; NULL: UTC */
    char *zone_error; /* NULL, or why time_zone did not load (the day
                         window is then the UTC day) */
    struct herald_window_stat windows[2];
    size_t nwindows;
    long long waiting;    /* ZCARD <prefix>:quota:wait:<sender> */
    int64_t paused_until; /* 0: not paused at now_ms */
    char *pause_reason;   /* NULL when not paused ("" when none given) */
};

struct herald_stats {
    int64_t now_ms;
    long long queue[JOB_PRIO_COUNT]; /* indexed by enum job_priority */
    long long scheduled;
    long long dead;
    struct herald_worker_stat *workers; /* registered ones first, by id */
    size_t nworkers;
    struct herald_sender_stat *senders; /* sorted by sender */
    size_t nsenders;
    size_t invalid;    /* stored schemes / orgs skipped: they do not parse */
    size_t unreadable; /* quota keys Redis refused to read (a key of
                          another type): their figures are left out */
};

/*
 * Fills *out with the lengths of the three lanes (each the list and the
 * jobs a take staged by organisation: keys.h), <prefix>:scheduled
 * (ZCARD) and <prefix>:dead, and one row per worker: every entry of
 * <prefix>:workers, plus every <prefix>:processing:<id> list found by
 * SCAN that has no workers entry (registered = 0).
 *
 * Then the senders: every scheme of <prefix>:schemes with a daily_limit
 * and/or minute_limit, every org of <prefix>:orgs with a
 * relay_daily_limit, and every sender with a pause in <prefix>:pauses
 * that has not ended at now_ms. Each gets its windows' counters for the
 * windows holding now_ms (quota_window; a scheme's day in its time zone),
 * its waiting count and its pause. Pipelined: one round trip reads the
 * three hashes, then one per HERALD_PIPELINE_MAX commands reads the
 * counters and waiting sets (GET, ZCARD), never one per key.
 *
 * Free with herald_stats_free. HERR_REDIS on failure.
 */
int herald_queue_stats(struct herald *h, struct herald_stats *out,
                       struct herr *e);
void herald_stats_free(struct herald_stats *s);

/*
 * An operator lifts `sender`'s pause ("relay", "org:<org>",
 * "scheme:<org>/<email>"; common/quota.h) and makes every job waiting
 * for it due at due_ms (redis/quota_resume.lua). *lifted: a pause was there;
 * *moved: jobs made due. HERR_INVALID (field "SENDER") for a malformed
 * name, HERR_REDIS on failure.
 */
int herald_sender_resume(struct herald *h, const char *sender, int64_t due_ms,
                         int *lifted, long long *moved, struct herr *e);

/* ---- dead letters ---- */

struct herald_dead {
    char *raw; /* the entry exactly as stored */
    size_t rawlen;
    int parsed;              /* entry is a well-formed dead entry */
    struct dead_entry entry; /* valid when parsed */
    char *job_id; /* entry "id", else the "id" string inside the raw job,
                     else NULL */
};

/*
 * Lists <prefix>:dead, newest first (LRANGE in pages of HERALD_DEAD_PAGE),
 * at most `limit` entries (0 = all). *out is a new array of *n entries;
 * free with herald_dead_free. HERR_REDIS on failure.
 */
int herald_dead_list(struct herald *h, size_t limit, struct herald_dead **out,
                     size_t *n, struct herr *e);
void herald_dead_free(struct herald_dead *v, size_t n);

/*
 * What happened to one dead entry (or to one requested id) in
 * herald_dead_replay:
 *   rc == 0        replayed: removed from dead and pushed onto `lane`
 *   HERR_INVALID   the entry or its job is invalid: not replayed, stays
 *                  in dead; err names the field
 *   HERR_NOTFOUND  no entry carries the requested id (d == NULL), or the
 *                  entry vanished before it could be moved (replayed by
 *                  someone else)
 *   HERR_REDIS     Redis failed (the call then returns HERR_REDIS)
 */
struct herald_replay {
    const struct herald_dead *d; /* the entry; NULL for an unknown id */
    const char *requested;       /* the id asked for, NULL with all */
    int rc;
    struct herr err;
    enum job_priority lane;
    const char *job_id; /* the id the replayed job carries */
};

typedef void (*herald_replay_cb)(void *arg, const struct herald_replay *r);

/*
 * Replays dead entries: with ids == NULL every entry of <prefix>:dead
 * (as listed when the call starts); otherwise every entry whose job id
 * (herald_dead.job_id) is one of ids[0..nids). For each, the raw job is
 * validated with job_parse; a valid job gets an id if it had none and
 * its canonical JSON is pushed onto its priority lane while the entry is
 * removed from dead, both in one atomic step (a Lua script: LREM of the
 * exact entry, then LPUSH only if the entry was still there, so two
 * operators replaying at once never duplicate a job). An invalid one
 * stays in dead.
 *
 * `cb` (may be NULL) is called once per entry considered (oldest entry
 * first: the list is read from its tail, which concurrent LPUSHes do not
 * shift) and then once per requested id that matched no entry, in
 * argument order; the struct and its pointers are valid only during the call.
 * Counts go to *replayed / *kept (entries not replayed, ids not found
 * included); either may be NULL.
 *
 * Returns 0 when Redis answered throughout, HERR_REDIS otherwise.
 */
int herald_dead_replay(struct herald *h, const char *const *ids, size_t nids,
                       herald_replay_cb cb, void *arg, size_t *replayed,
                       size_t *kept, struct herr *e);

/* ---- templates ---- */

/*
 * Message templates live in the Redis hash <prefix>:templates: field =
 * template name ([A-Za-z0-9._-]{1,64}, tmpl_valid_name), value = the
 * template's compact JSON {"subject","text","html"} (layout and syntax:
 * common/tmpl.h).
 */

/*
 * Validates `len` bytes of `json` with tmpl_parse and stores its
 * canonical form (tmpl_to_json) as template `name` (HSET: a template of
 * that name is replaced). Validation comes first, so an invalid template
 * never needs Redis. Returns 0; HERR_INVALID with field "name" for a bad
 * name; HERR_INVALID / HERR_TOOBIG from tmpl_parse (e names the part and
 * position: "html" + "unclosed {{ at byte 120"; nothing is stored);
 * HERR_REDIS.
 */
int herald_template_set(struct herald *h, const char *name, const char *json,
                        size_t len, struct herr *e);

/*
 * The stored JSON of template `name`, exactly as stored (new string in
 * *json, caller frees; NULL on failure). HERR_NOTFOUND when there is no
 * such template, HERR_INVALID (field "name") for a bad name, HERR_REDIS.
 * The value is not re-validated: run tmpl_parse on it before use.
 */
int herald_template_get(struct herald *h, const char *name, char **json,
                        struct herr *e);

/*
 * The names of every stored template, sorted (strcmp). *names is a new
 * array of *n new strings (NULL when there are none); free with
 * herald_template_names_free. HERR_REDIS.
 */
int herald_template_list(struct herald *h, char ***names, size_t *n,
                         struct herr *e);
void herald_template_names_free(char **names, size_t n);

/*
 * Removes template `name`. HERR_NOTFOUND when there was none,
 * HERR_INVALID (field "name") for a bad name, HERR_REDIS.
 */
int herald_template_remove(struct herald *h, const char *name, struct herr *e);

/* ---- Email Sending Schemes ---- */

/*
 * Schemes live in <prefix>:schemes with a change counter in
 * <prefix>:schemes:version; the layout, the sealing context and the
 * compare-and-set script are in common/scheme.h. Every change below is one
 * redis/scheme_cas.lua call (the field and the version change together); when
 * another writer changed the scheme in between, the call re-reads and
 * tries again (at most HERALD_SCHEME_RETRIES times, then HERR_TEMP).
 *
 * Clear passwords are borrowed only for the length of a call, sealed with
 * seal_seal under `key` and the context scheme_aad(org, email), and never
 * copied anywhere else; the caller wipes its own copy.
 */
#define HERALD_SCHEME_RETRIES 16

/*
 * Loads the key file `path` named by setting `setting` (e.g.
 * "HERALD_SECRET_KEY_FILE"). Returns 0 and a new key (seal_key_free), or
 * HERR_INVALID with e->field = setting when the path is NULL or "" ("not
 * set"), the file is missing or unreadable, or it is not a key (wrong
 * size, not hex): a missing key is bad input, not a runtime failure.
 * The caller reports seal_key_warnings() of the key.
 */
int herald_key_load(const char *path, const char *setting,
                    struct seal_key **out, struct herr *e);

/*
 * Adds the scheme of `org` / `email` with the settings of `p` (see
 * scheme_create; p->password must be NULL) and the clear password
 * `password` (`len` bytes, 1..SCHEME_PASSWORD_MAX, no NUL), sealed under
 * `key`. Never contacts the scheme's servers. Returns 0, HERR_INVALID /
 * HERR_TOOBIG (e->field: "org", "email", "password" or the scheme member
 * at fault), HERR_EXISTS when the scheme is there already, HERR_REDIS.
 */
int herald_scheme_add(struct herald *h, const char *org, const char *email,
                      const struct scheme_patch *p, const char *password,
                      size_t len, const struct seal_key *key, struct herr *e);

/*
 * Changes only the settings given in `p` (scheme_apply; p->password must
 * be NULL) and, when `password` is not NULL, the password (sealed under
 * `key`, which may then not be NULL). A new username or password resets
 * the state to "ok". Atomic: the value read is replaced only if unchanged
 * meanwhile. HERR_NOTFOUND (field "email") for an unknown scheme,
 * HERR_INVALID / HERR_TOOBIG, HERR_TEMP, HERR_REDIS.
 */
int herald_scheme_update(struct herald *h, const char *org, const char *email,
                         const struct scheme_patch *p, const char *password,
                         size_t len, const struct seal_key *key,
                         struct herr *e);

/* The stored scheme (new; scheme_free). HERR_NOTFOUND, HERR_INVALID (a
 * bad org or email, or a stored value that does not parse: the message
 * says which member), HERR_REDIS. */
int herald_scheme_get(struct herald *h, const char *org, const char *email,
                      struct scheme **out, struct herr *e);

/* One stored scheme as listed: `scheme` is NULL when the stored value is
 * invalid; `err` then says why (never quoting the password). */
struct herald_scheme_row {
    char *field; /* "<org>/<email lowercased>" */
    struct scheme *scheme;
    struct herr err;
};

/*
 * Every stored scheme (of `org` only, when not NULL), sorted by field.
 * *rows is a new array of *n rows (NULL when none); free with
 * herald_scheme_rows_free. HERR_INVALID for a bad org, HERR_REDIS.
 */
int herald_scheme_list(struct herald *h, const char *org,
                       struct herald_scheme_row **rows, size_t *n,
                       struct herr *e);
void herald_scheme_rows_free(struct herald_scheme_row *rows, size_t n);

/* Removes a scheme. HERR_NOTFOUND (field "email"), HERR_INVALID,
 * HERR_REDIS. */
int herald_scheme_remove(struct herald *h, const char *org, const char *email,
                         struct herr *e);

/*
 * Clears an auth_failed mark after a passing `scheme test` of `tested` (the
 * scheme as it was read for the test): the stored scheme's state becomes
 * "ok" (state_reason "", state_at now) by compare-and-set, but only while
 * it still has the servers and credentials that were tested (smtp_host,
 * smtp_port, tls, imap_host, imap_port, username and the sealed password
 * token all equal); a scheme changed meanwhile keeps its state. *cleared
 * (may be NULL) is 1 when a mark was cleared now, 0 when there was none or
 * the scheme changed. HERR_NOTFOUND (field "email") when the scheme was
 * removed, HERR_STORE for a stored value that does not parse, HERR_TEMP,
 * HERR_REDIS.
 */
int herald_scheme_clear_failure(struct herald *h, const struct scheme *tested,
                                int *cleared, struct herr *e);

/* The value of <prefix>:schemes:version (0 when absent). HERR_REDIS. */
int herald_scheme_version(struct herald *h, long long *out, struct herr *e);

/* What happened to one scheme in herald_key_rotate. */
struct herald_rotate {
    const char *field;
    int rc;          /* 0 re-sealed, already under the new key, or removed */
    int resealed;    /* 1 when it was re-sealed now */
    int removed;     /* 1 when it was removed meanwhile (skipped) */
    struct herr err; /* why it could not be opened / parsed (rc != 0) */
};
typedef void (*herald_rotate_cb)(void *arg, const struct herald_rotate *r);

/*
 * Re-seals every stored password under `new_key`: each is opened with
 * `old_key` or `new_key` (so a rotation that was interrupted can be run
 * again; a token already under new_key is only checked to open), sealed
 * again under new_key with the same context, and written back with the
 * compare-and-set (a scheme changed meanwhile is re-read and retried; one
 * removed meanwhile is skipped). State, timestamps and every other member
 * stay as they are. `cb` (may be NULL) is called once per scheme. Counts:
 * *resealed re-sealed now, *already under new_key before, *failed could
 * not be parsed or opened (any may be NULL). Returns 0 when Redis answered
 * throughout (look at *failed), HERR_REDIS / HERR_TEMP otherwise.
 */
int herald_key_rotate(struct herald *h, const struct seal_key *old_key,
                      const struct seal_key *new_key, herald_rotate_cb cb,
                      void *arg, size_t *resealed, size_t *already,
                      size_t *failed, struct herr *e);

/* ---- organisations ---- */

/*
 * Organisations live in <prefix>:orgs with a change counter in
 * <prefix>:orgs:version (layout: common/org.h). A change reads the org's
 * value, applies the patch and writes it back with the compare-and-set
 * schemes use (redis/scheme_cas.lua); when the org changed meanwhile the patch
 * is applied again on top of the new value (at most HERALD_ORG_RETRIES
 * times, then HERR_TEMP).
 */
#define HERALD_ORG_RETRIES 16

/* What an org set gives; NULL / 0 mean "not given". */
struct herald_org_patch {
    const char *name;
    long long relay_daily_limit; /* 1-SCHEME_LIMIT_MAX */
    int clear_relay_daily_limit; /* removes the limit */
};

/*
 * Sets the members given in `p` on org `org` (created when it has no
 * record yet), keeping the others, and stamps updated_at. *out (may be
 * NULL) gets the record as written (new; org_free). Returns 0,
 * HERR_INVALID / HERR_TOOBIG with e->field "org", "name" or
 * "relay_daily_limit" (also when nothing is given: field "", "nothing to
 * change"; or a limit both given and cleared), HERR_STORE when the stored
 * value does not parse (it is left alone), HERR_TEMP, HERR_REDIS.
 * Validation comes first: bad input never needs Redis.
 */
int herald_org_set(struct herald *h, const char *org,
                   const struct herald_org_patch *p, struct org **out,
                   struct herr *e);

/* The stored org (new; org_free). HERR_NOTFOUND (field "org"),
 * HERR_INVALID (a bad org name), HERR_STORE (a stored value that does not
 * parse: the message says which member), HERR_REDIS. */
int herald_org_get(struct herald *h, const char *org, struct org **out,
                   struct herr *e);

/* One stored org as listed: `org` is NULL when the stored value is
 * invalid (or names another org); `err` then says why. */
struct herald_org_row {
    char *field;
    struct org *org;
    struct herr err;
};

/* Every stored org, sorted by name. *rows is a new array of *n rows (NULL
 * when none); free with herald_org_rows_free. HERR_REDIS. */
int herald_org_list(struct herald *h, struct herald_org_row **rows, size_t *n,
                    struct herr *e);
void herald_org_rows_free(struct herald_org_row *rows, size_t n);

/*
 * Writes `url` into out with the password of a redis:// URL replaced by
 * "***" (always NUL-terminated).
 */
void herald_redact_url(const char *url, char *out, size_t outlen);

/* ---- API tokens (common/token.h; <prefix>:tokens) ---- */

/*
 * Creates a token named `name` (unique: HERR_EXISTS when one has it) for
 * `role` and `orgs` (app: at least one; resend: support only), writes it
 * into token_out (TOKEN_LEN + 1 bytes) — the only time it is seen: Redis
 * keeps its SHA-256. HERR_INVALID names the field at fault.
 */
int herald_token_create(struct herald *h, const char *name,
                        enum token_role role, const char *const *orgs,
                        size_t norgs, int resend, char token_out[TOKEN_LEN + 1],
                        struct herr *e);

/* Every token's record, sorted by name (free with herald_tokens_free). */
int herald_token_list(struct herald *h, struct token_rec **out, size_t *n,
                      struct herr *e);
void herald_tokens_free(struct token_rec *v, size_t n);

/* Revokes the token named `name`: HERR_NOTFOUND when there is none. */
int herald_token_revoke(struct herald *h, const char *name, struct herr *e);

/* What `token` may do (*out; token_rec_clear it), or HERR_NOTFOUND for
 * an unknown, revoked or malformed token. A token found is answered from
 * the handle's memory for half a second after (SPEC §9: a revoked token
 * stops working within a second); an unknown one is asked every time. */
int herald_token_check(struct herald *h, const char *token,
                       struct token_rec *out, struct herr *e);

/* ---- Message Center: schema and import ---- */

/*
 * Opens the configured store (which creates or upgrades its schema, SPEC
 * §6.1: heraldctl mc migrate) and says its schema version (*version) and
 * the one it had before this open (*before: 0 = just created, -1 = the
 * store does not say, as SQLite). Needs no Redis. HERR_STORE /
 * HERR_INVALID when the store cannot be opened (or is newer).
 */
int herald_mc_migrate(struct herald *h, int *version, int *before,
                      struct herr *e);

/*
 * Copies every record of the store at `from_url` (any store URL, e.g.
 * sqlite:///old/mc.db) into the configured one (mc_import: records the
 * configured store already holds are skipped, so running it twice copies
 * nothing twice). HERR_INVALID for a bad URL (field "from") or when it
 * names the configured store itself; HERR_STORE when either store fails
 * (out says what was done before).
 */
int herald_mc_import(struct herald *h, const char *from_url,
                     struct mc_import_result *out, struct herr *e);

#endif
