/*
 * mc_sqlite — the SQLite backend of the Message Center (mc.h).
 *
 * One connection per handle, used from one thread (SQLITE_OPEN_NOMUTEX).
 * Several processes share the file: WAL lets readers run beside the one
 * writer, and every write transaction starts with BEGIN IMMEDIATE so that
 * waiting for the write lock goes through the busy timeout instead of
 * failing on a read-to-write upgrade.
 *
 * All statements are prepared once per handle (the worker writes a few
 * per message at thousands of messages a second); mc_list's statements
 * are prepared on first use of each combination of filters and kept.
 *
 * The schema's version is PRAGMA user_version (3; see below). Opening a
 * version-1 or -2 file migrates it in place, in one transaction: other
 * processes opening the store meanwhile wait (busy_timeout_ms); about
 * 3 s per 20,000 messages from version 1, and the file keeps the old
 * tables' space as free pages, which new records reuse. A newer version
 * is refused.
 *
 * The store holds private mail: a new file is created 0600 (its -wal and
 * -shm follow it) in directories created 0700; the worker and heraldctl
 * (libherald) both open it here. An existing file or directory keeps its
 * mode.
 */
#include "clock.h"
#include "jfast.h"
#include "mc.h"
#include "sqlite_walbuf.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA_VERSION 3
#define BUSY_MS_DEFAULT 5000
#define BUSY_MS_MAX 600000

/*
 * Connection tuning, measured with tests/unit/bench_mc.c (the worker's
 * insert + two updates per message, in batches):
 * - temp_store MEMORY: every insert inside a batch runs in a savepoint,
 *   whose journal otherwise spills to a temporary file (-40 KB written
 *   per message, about a fifth of the time).
 * - a 2 MiB page cache (SQLite's default). 1.5 MiB cost two workers on
 *   one file 3-11 % of their msg/s in turns (each writer's cache is
 *   emptied when the other one writes, and refilled) for 0.6-1.7 MB of
 *   peak RSS. 4 MiB, used until 2026-12-05, cost 2.1 MB of peak RSS for
 *   no throughput the runs could tell apart; 16 MiB read 4x less at
 *   100,000 messages and nearly doubled the resident memory (17 -> 30
 *   MB). The worker's budget is 24 MB (issue 10).
 * - a checkpoint every 4000 WAL pages (16 MiB; default 1000): pages that
 *   change in several batches (index tails, recent rows) are copied into
 *   the database once instead of several times, and fsync runs a quarter
 *   as often. journal_size_limit trims a WAL that a long reader made grow
 *   back to 64 MiB once it is reset. A worker checkpoints on a handle of
 *   its own instead (sq_checkpoint, PASSIVE, every 100 ms on the thread
 *   pool: the writes never wait for a checkpoint, which was ~8 % of the
 *   writing thread's time); its writer then checkpoints only past 16000
 *   pages, as a fallback (sq_checkpoint_elsewhere). Checkpointing every
 *   16000 pages on the writer instead cut the time per write as much but
 *   stalled a batch for the whole copy: make bench-fair's p99 86-107 ms
 *   against 52.
 */
#define CACHE_KIB 2048
#define WAL_CHECKPOINT_PAGES 4000
#define WAL_KEEP_BYTES 67108864
#define WAL_RESTART_PAGES (2 * WAL_CHECKPOINT_PAGES)
#define RESTART_WAIT_MS 20
#define RESTART_AGAIN_MS 100
#define STR_(x) #x
#define STR(x) STR_(x)

/*
 * Schema version 3 (version 2 and the subject index, from_addr, resend_of,
 * body_expired). A record is split by how it changes:
 *
 * - messages: what the worker rewrites (status, route, attempts, times,
 *   outcome) plus the small immutable keys mc_list filters on (id, org,
 *   account, created_at) and type. About 300 bytes, so the two or three
 *   UPDATEs a message gets rewrite a small row, not the ~2.5 KB body.
 * - message_content: what never changes after the insert (from, to/cc/bcc,
 *   subject, text, html, attachments, meta), keyed by messages.seq. seq
 *   is an INTEGER PRIMARY KEY (stable across VACUUM), so content rows are
 *   appended in insertion order and the content table needs no index.
 * - message_rcpt: one row per to/cc/bcc address, for mc_list's `to`.
 * - message_subject: FTS5 over the subject (rowid = seq), for mc_list's
 *   `q`. The "ascii" tokenizer is mc_q_words' rule exactly: words are
 *   runs of ASCII letters and digits and of non-ASCII bytes, ASCII case
 *   folded; each word of q is a prefix query.
 *
 * Indexes, and what each is for:
 * - the UNIQUE id (mc_insert's duplicate check, mc_update, mc_get);
 * - messages_org, messages_account (org/account + created_at): only
 *   written on insert, as their columns never change;
 * - `from` (from_addr, lowercased), `type` and `path` have no index of
 *   their own: they narrow the rows another filter's index finds, or a
 *   newest-first walk until the page is full (an index on from_addr
 *   cost 4 % of the write path, measured with bench_mc under callgrind;
 *   the fleet's store, PostgreSQL, indexes it).
 * - messages_created (created_at): mc_list without org/account/status
 *   (the newest messages, a time range, `--status sent`) walks it newest
 *   first instead of sorting the whole table; written on insert only;
 * - messages_status (status, created_at), partial, WHERE status <> 'sent':
 *   status changes on every write, and almost every message ends "sent",
 *   so the index holds only the few rows in flight plus the deferred and
 *   failed ones (what support looks for) and stays small. A listing of
 *   "sent" uses the created_at or org/account indexes instead, where
 *   nearly every row matches. Queries repeat the index's WHERE term
 *   literally, as SQLite's planner needs to pick a partial index.
 * - message_rcpt's primary key (email, seq, kind), and message_rcpt_seq
 *   (seq) so that deleting a message (retention) cascades without a scan.
 *   Both are appended to in seq order but for the email part.
 */
static const char tables_sql[] =
    "CREATE TABLE messages ("
    " seq INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE,"
    " org TEXT NOT NULL,"
    " account TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " status TEXT NOT NULL,"
    " path TEXT,"
    " path_reason TEXT,"
    " sender TEXT,"
    " reply_to TEXT,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " updated_at INTEGER NOT NULL,"
    " sent_at INTEGER,"
    " next_attempt_at INTEGER,"
    " last_error TEXT,"
    " smtp_reply TEXT,"
    " recipients_json TEXT,"
    " from_addr TEXT NOT NULL DEFAULT '',"
    " resend_of TEXT,"
    " body_expired INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE message_content ("
    " seq INTEGER PRIMARY KEY REFERENCES messages(seq) ON DELETE CASCADE,"
    " from_addr TEXT NOT NULL,"
    " from_name TEXT,"
    " to_json TEXT,"
    " cc_json TEXT,"
    " bcc_json TEXT,"
    " subject TEXT,"
    " text TEXT,"
    " html TEXT,"
    " attachments_json TEXT,"
    " meta_json TEXT);"
    "CREATE TABLE message_rcpt ("
    " email TEXT NOT NULL,"
    " seq INTEGER NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,"
    " kind TEXT NOT NULL,"
    " PRIMARY KEY (email, seq, kind)) WITHOUT ROWID;"
    "CREATE VIRTUAL TABLE message_subject USING fts5(subject,"
    " tokenize = 'ascii', detail = none, columnsize = 0);";

static const char indexes_sql[] =
    "CREATE INDEX messages_org ON messages(org, created_at);"
    "CREATE INDEX messages_account ON messages(account, created_at);"
    "CREATE INDEX messages_created ON messages(created_at);"
    "CREATE INDEX messages_status ON messages(status, created_at)"
    " WHERE status <> 'sent';"
    "CREATE INDEX message_rcpt_seq ON message_rcpt(seq);";

/* Version 2 to 3: the new columns, the subject index and its content. */
static const char migrate_v2_sql[] =
    "ALTER TABLE messages ADD COLUMN from_addr TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE messages ADD COLUMN resend_of TEXT;"
    "ALTER TABLE messages ADD COLUMN body_expired INTEGER NOT NULL DEFAULT 0;"
    "UPDATE messages SET from_addr = (SELECT lower(c.from_addr)"
    " FROM message_content c WHERE c.seq = messages.seq);"
    "CREATE VIRTUAL TABLE message_subject USING fts5(subject,"
    " tokenize = 'ascii', detail = none, columnsize = 0);"
    "INSERT INTO message_subject (rowid, subject) SELECT seq, subject"
    " FROM message_content WHERE subject IS NOT NULL;";

/* Version 1 kept everything in one row of `messages` (rowid table, id
 * TEXT PRIMARY KEY) and message_rcpt(id, email, kind). The migration
 * moves the old tables aside, copies their rows (seq = the old rowid, so
 * the order of insertion is kept) and drops them, in the transaction that
 * checks the version. */
static const char migrate_v1_aside_sql[] =
    "DROP INDEX IF EXISTS messages_org;"
    "DROP INDEX IF EXISTS messages_account;"
    "DROP INDEX IF EXISTS messages_status;"
    "DROP INDEX IF EXISTS message_rcpt_id;"
    "ALTER TABLE message_rcpt RENAME TO message_rcpt_v1;"
    "ALTER TABLE messages RENAME TO messages_v1;";

static const char migrate_v1_copy_sql[] =
    "INSERT INTO messages (seq, id, org, account, type, created_at, status,"
    " path, path_reason, sender, reply_to, attempts, updated_at, sent_at,"
    " next_attempt_at, last_error, smtp_reply, recipients_json)"
    " SELECT rowid, id, org, account, type, created_at, status, path,"
    " path_reason, sender, reply_to, attempts, updated_at, sent_at,"
    " next_attempt_at, last_error, smtp_reply, recipients_json"
    " FROM messages_v1 ORDER BY rowid;"
    "INSERT INTO message_content (seq, from_addr, from_name, to_json,"
    " cc_json, bcc_json, subject, text, html, attachments_json, meta_json)"
    " SELECT rowid, from_addr, from_name, to_json, cc_json, bcc_json,"
    " subject, text, html, attachments_json, meta_json"
    " FROM messages_v1 ORDER BY rowid;"
    "INSERT OR IGNORE INTO message_rcpt (email, seq, kind)"
    " SELECT r.email, m.rowid, r.kind"
    " FROM message_rcpt_v1 r JOIN messages_v1 m ON m.id = r.id;"
    "UPDATE messages SET from_addr = (SELECT lower(c.from_addr)"
    " FROM message_content c WHERE c.seq = messages.seq);"
    "INSERT INTO message_subject (rowid, subject) SELECT seq, subject"
    " FROM message_content WHERE subject IS NOT NULL;"
    "DROP TABLE message_rcpt_v1;"
    "DROP TABLE messages_v1;";

/* Column order of every SELECT (row_record). */
#define COLS_WITH(bodies)                                                      \
    "m.id, m.org, m.account, m.type, m.status, m.path, m.path_reason, "        \
    "c.from_addr, c.from_name, m.sender, m.reply_to, c.to_json, c.cc_json, "   \
    "c.bcc_json, c.subject, " bodies ", c.attachments_json, "                  \
    "c.meta_json, m.recipients_json, m.created_at, m.updated_at, m.sent_at, "  \
    "m.next_attempt_at, m.attempts, m.last_error, m.smtp_reply, "              \
    "m.resend_of, m.body_expired"
#define COLS COLS_WITH("c.text, c.html")
/* the same without the bodies (a listing that does not show them) */
#define COLS_NO_BODIES COLS_WITH("NULL, NULL")

#define FROM_JOINED " FROM messages m JOIN message_content c ON c.seq = m.seq"

enum col {
    C_ID = 0,
    C_ORG,
    C_ACCOUNT,
    C_TYPE,
    C_STATUS,
    C_PATH,
    C_PATH_REASON,
    C_FROM,
    C_FROM_NAME,
    C_SENDER,
    C_REPLY_TO,
    C_TO,
    C_CC,
    C_BCC,
    C_SUBJECT,
    C_TEXT,
    C_HTML,
    C_ATTACHMENTS,
    C_META,
    C_RECIPIENTS,
    C_CREATED,
    C_UPDATED,
    C_SENT,
    C_NEXT,
    C_ATTEMPTS,
    C_LAST_ERROR,
    C_SMTP_REPLY,
    C_RESEND_OF,
    C_BODY_EXPIRED,
    C_COUNT
};

/* Parameters of ins_msg and ins_content, in order. */
static const char insert_msg_sql[] =
    "INSERT INTO messages (id, org, account, type, created_at, status, path,"
    " path_reason, sender, reply_to, attempts, updated_at, sent_at,"
    " next_attempt_at, last_error, smtp_reply, recipients_json, from_addr,"
    " resend_of, body_expired)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
    " ?15, ?16, ?17, lower(?18), ?19, ?20) ON CONFLICT(id) DO NOTHING";

static const char insert_content_sql[] =
    "INSERT INTO message_content (seq, from_addr, from_name, to_json,"
    " cc_json, bcc_json, subject, text, html, attachments_json, meta_json)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/* NULL parameter: keep; "": clear; a negative time: keep; 0: clear. */
static const char update_sql[] =
    "UPDATE messages SET status = ?1,"
    " path = CASE WHEN ?2 IS NULL THEN path ELSE NULLIF(?2, '') END,"
    " path_reason = CASE WHEN ?3 IS NULL THEN path_reason"
    "  ELSE NULLIF(?3, '') END,"
    " sender = CASE WHEN ?4 IS NULL THEN sender ELSE NULLIF(?4, '') END,"
    " reply_to = CASE WHEN ?5 IS NULL THEN reply_to ELSE NULLIF(?5, '') END,"
    " attempts = attempts + ?6,"
    " sent_at = CASE WHEN ?7 < 0 THEN sent_at ELSE NULLIF(?7, 0) END,"
    " next_attempt_at = CASE WHEN ?8 < 0 THEN next_attempt_at"
    "  ELSE NULLIF(?8, 0) END,"
    " last_error = CASE WHEN ?9 IS NULL THEN last_error"
    "  ELSE NULLIF(?9, '') END,"
    " smtp_reply = CASE WHEN ?10 IS NULL THEN smtp_reply"
    "  ELSE NULLIF(?10, '') END,"
    " recipients_json = CASE WHEN ?11 IS NULL THEN recipients_json"
    "  ELSE NULLIF(?11, '') END,"
    " updated_at = ?12"
    " WHERE id = ?13";

/* mc_list filters, one bit each; a statement per combination. A status
 * filter is F_STATUS, or F_STATUS | F_SENT for "sent", which the partial
 * messages_status index does not hold. */
enum {
    F_ORG = 1,
    F_ACCOUNT = 2,
    F_STATUS = 4,
    F_SENT = 8,
    F_SINCE = 16,
    F_UNTIL = 32,
    F_TO = 64,
    F_TYPE = 128,
    F_PATH = 256,
    F_FROM = 512,
    F_Q = 1024,
    F_CURSOR = 2048,
    F_SCOPE = 4096,
    F_NO_BODIES = 8192, /* not a filter: text and html left NULL */
    F_COMBOS = 16384
};

struct mcs {
    sqlite3 *db;
    char *path;
    int busy_ms;
    int64_t restart_until; /* restart_wait's deadline */
    int ckpt_elsewhere;    /* a worker's writer (sq_checkpoint_elsewhere) */
    int wal_frames;        /* the log's length after the last commit */
    int64_t restart_after; /* restart_log: not before (after a busy one) */
    int busy_hit;          /* the last error was SQLITE_BUSY or SQLITE_LOCKED */
    int in_batch;
    sqlite3_stmt *begin, *commit, *rollback;
    sqlite3_stmt *sp, *sp_release, *sp_rollback;
    sqlite3_stmt *ins_msg, *ins_content, *ins_rcpt, *status_of, *upd, *get;
    sqlite3_stmt *upd_content, *ins_subject, *set_subject;
    /* Subject index writes of the open batch, done at its commit: an FTS5
     * write inside a savepoint (every write of a batch is in one) flushes
     * the index to disk, 140,000 instructions a message; at the commit,
     * outside them, a few thousand. */
    struct subject_later {
        int64_t seq; /* an insert's row, or 0: by id (a new subject) */
        char *id, *subject;
    } * later;
    size_t nlater, caplater;
    sqlite3_stmt **list; /* [F_COMBOS], prepared on first use */
};

/* Fills `e` from the connection's last error. */
static int
db_err(struct mcs *s, int rc, struct herr *e, const char *what)
{
    int base = rc & 0xff;
    s->busy_hit = base == SQLITE_BUSY || base == SQLITE_LOCKED;
    if (s->busy_hit)
        return herr_set(e, HERR_STORE, NULL,
                        "%s: database is locked (another process held %s "
                        "for more than %d ms)",
                        what, s->path, s->busy_ms);
    return herr_set(e, HERR_STORE, NULL, "%s: %s (%s)", what,
                    s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc),
                    s->path);
}

/* Steps a statement that returns no rows, then resets it. */
static int
exec_stmt(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int
prepare(struct mcs *s, const char *sql, sqlite3_stmt **st, struct herr *e)
{
    int rc =
        sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc, e, "preparing a statement");
    return 0;
}

static void
bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void
bind_time(sqlite3_stmt *st, int i, int64_t ms)
{
    if (ms > 0)
        sqlite3_bind_int64(st, i, ms);
    else
        sqlite3_bind_null(st, i);
}

/* Creates every missing directory above the file `path`, 0700: the
 * store holds private mail. Existing directories are left as they are. */
static int
make_parents(const char *path, struct herr *e)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir) {
        free(dir);
        return 0;
    }
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(dir, 0700) != 0) {
            int err = errno == EEXIST ? ENOTDIR : errno;
            struct stat sb;
            if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
                herr_set(e, HERR_STORE, "HERALD_MC",
                         "cannot create directory %s: %s", dir, strerror(err));
                free(dir);
                return HERR_STORE;
            }
        }
        *p = c;
        if (c == '\0')
            break;
    }
    free(dir);
    return 0;
}

/* Splits "PATH[?busy_timeout_ms=N]" into a new path and the timeout. */
static int
parse_rest(const char *rest, char **path, int *busy_ms, struct herr *e)
{
    *path = NULL;
    *busy_ms = BUSY_MS_DEFAULT;
    const char *q = strchr(rest, '?');
    size_t plen = q ? (size_t)(q - rest) : strlen(rest);
    if (plen == 0)
        return herr_set(e, HERR_INVALID, "HERALD_MC",
                        "sqlite:// needs a path, e.g. sqlite://./var/mc.db");
    if (rest[plen - 1] == '/')
        return herr_set(e, HERR_INVALID, "HERALD_MC",
                        "sqlite://%.*s names a directory, not a file",
                        (int)(plen > 200 ? 200 : plen), rest);
    if (plen >= PATH_MAX)
        return herr_set(e, HERR_INVALID, "HERALD_MC", "path too long");
    while (q && *q) {
        q++;
        const char *end = strchr(q, '&');
        size_t n = end ? (size_t)(end - q) : strlen(q);
        static const char key[] = "busy_timeout_ms=";
        if (n > sizeof key - 1 && strncmp(q, key, sizeof key - 1) == 0) {
            const char *v = q + sizeof key - 1;
            char *stop;
            errno = 0;
            long ms = strtol(v, &stop, 10);
            if (stop != q + n || stop == v || errno || ms < 0 ||
                ms > BUSY_MS_MAX)
                return herr_set(e, HERR_INVALID, "HERALD_MC",
                                "busy_timeout_ms must be 0..%d", BUSY_MS_MAX);
            *busy_ms = (int)ms;
        } else {
            return herr_set(e, HERR_INVALID, "HERALD_MC",
                            "unknown sqlite option \"%.*s\" (known: "
                            "busy_timeout_ms)",
                            (int)(n > 64 ? 64 : n), q);
        }
        q = end;
    }
    *path = xstrndup(rest, plen);
    return 0;
}

static void subjects_forget(struct mcs *s);

static void
sq_close(void *state)
{
    struct mcs *s = state;
    if (s == NULL)
        return;
    if (s->db && !sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_stmt **all[] = {&s->begin,       &s->commit,      &s->rollback,
                            &s->sp,          &s->sp_release,  &s->sp_rollback,
                            &s->ins_msg,     &s->ins_content, &s->ins_rcpt,
                            &s->status_of,   &s->upd,         &s->get,
                            &s->upd_content, &s->ins_subject, &s->set_subject};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(*all[i]);
    for (int i = 0; s->list && i < F_COMBOS; i++)
        sqlite3_finalize(s->list[i]);
    free(s->list);
    subjects_forget(s);
    free(s->later);
    sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

/* Runs one pragma and, when `want` is given, checks the text it returns. */
static int
pragma(struct mcs *s, const char *sql, const char *want, struct herr *e)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_err(s, rc, e, sql);
    rc = sqlite3_step(st);
    int ok = rc == SQLITE_ROW || rc == SQLITE_DONE;
    int match = 1;
    if (want) {
        const unsigned char *v =
            rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
        match = v && sqlite3_stricmp((const char *)v, want) == 0;
    }
    sqlite3_finalize(st);
    if (!ok)
        return db_err(s, rc, e, sql);
    if (!match)
        return herr_set(e, HERR_STORE, "HERALD_MC",
                        "%s: the database refused (%s)", sql, s->path);
    return 0;
}

/* Creates or checks the schema, inside one write transaction so that
 * processes starting together do not race. */
static int
ensure_schema(struct mcs *s, struct herr *e)
{
    int rc = exec_stmt(s->begin);
    if (rc != SQLITE_OK)
        return db_err(s, rc, e, "opening the store");
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL);
    int version = -1;
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            version = sqlite3_column_int(st, 0);
            rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
    }
    if (rc != SQLITE_OK) {
        db_err(s, rc, e, "reading the schema version");
        goto fail;
    }
    if (version > SCHEMA_VERSION) {
        herr_set(e, HERR_STORE, "HERALD_MC",
                 "%s has schema version %d, newer than this program's %d",
                 s->path, version, SCHEMA_VERSION);
        goto fail;
    }
    if (version < 0) {
        herr_set(e, HERR_STORE, "HERALD_MC",
                 "%s has schema version %d, which is not a Message Center "
                 "store's",
                 s->path, version);
        goto fail;
    }
    if (version < SCHEMA_VERSION) {
        /* 0: a new file, or one without our schema (CREATE TABLE
         * without IF NOT EXISTS refuses a file that already has tables by
         * our names rather than mixing with them); 1 and 2: migrated in
         * place. */
        const char *what = version == 0 ? "creating the schema"
                           : version == 1
                               ? "migrating the store from schema version 1"
                               : "migrating the store from schema version 2";
        char *sql =
            version == 2
                ? xasprintf("%sPRAGMA user_version = %d;", migrate_v2_sql,
                            SCHEMA_VERSION)
                : xasprintf("%s%s%s%sPRAGMA user_version = %d;",
                            version == 1 ? migrate_v1_aside_sql : "",
                            tables_sql, version == 1 ? migrate_v1_copy_sql : "",
                            indexes_sql, SCHEMA_VERSION);
        rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        free(sql);
        if (rc != SQLITE_OK) {
            db_err(s, rc, e, what);
            goto fail;
        }
    }
    rc = exec_stmt(s->commit);
    if (rc != SQLITE_OK) {
        db_err(s, rc, e, "creating the schema");
        goto fail;
    }
    return 0;
fail:
    if (!sqlite3_get_autocommit(s->db))
        exec_stmt(s->rollback);
    return HERR_STORE;
}

/*
 * Before SQLite's first use in the process: page-cache lines come from
 * one pool of POOL_LINES (the writer's CACHE_KIB and a few for the other
 * handles; more come from malloc, as before) instead of a malloc each.
 * A store shared by two workers empties each one's cache whenever the
 * other writes: the pages freed and taken again a batch at a time
 * fragmented the heap (two workers' peak RSS 22.3 -> 24.6 MB from 50,000
 * to 150,000 jobs; with the pool 19.9 / 20.6 MB, one worker 20.2 ->
 * 20.4) and cost malloc time (bench_ab: one worker +2 %, two +4 %). The
 * pool is resident from the start (SQLite links its lines). When
 * something initialised SQLite first, sqlite3_config refuses and
 * SQLite's default stays.
 */
#define POOL_LINES (CACHE_KIB / 4 + 48)

static pthread_once_t sq_once = PTHREAD_ONCE_INIT;
static void *sq_pool; /* never freed: SQLite uses it until the end */

static void
sq_global_init(void)
{
    int hdr = 0;
    if (sqlite3_config(SQLITE_CONFIG_PCACHE_HDRSZ, &hdr) != SQLITE_OK ||
        hdr <= 0)
        return;
    int sz = (4096 + hdr + 7) & ~7;
    sq_pool = malloc((size_t)POOL_LINES * (size_t)sz);
    if (sq_pool && sqlite3_config(SQLITE_CONFIG_PAGECACHE, sq_pool, sz,
                                  POOL_LINES) != SQLITE_OK) {
        free(sq_pool);
        sq_pool = NULL;
    }
}

static int
sq_open(const char *rest, void **state, struct herr *e)
{
    *state = NULL;
    char *path;
    int busy_ms;
    int rc = parse_rest(rest, &path, &busy_ms, e);
    if (rc != 0)
        return rc;
    if (strcmp(path, ":memory:") != 0) {
        rc = make_parents(path, e);
        if (rc != 0) {
            free(path);
            return rc;
        }
    }
    if (strcmp(path, ":memory:") != 0) {
        /* A new store is created here, 0600, before SQLite would create
         * it 0644 (less the umask): it holds private mail, and SQLite
         * gives its -wal, -shm and -journal files the database file's
         * permissions. O_EXCL: an existing file (or a link) is left as it
         * is, mode included; an empty file is a valid new database. A
         * failure here is left to sqlite3_open_v2 to report. */
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY,
                      0600);
        if (fd >= 0)
            close(fd);
    }
    struct mcs *s = xcalloc(1, sizeof *s);
    s->path = path;
    s->busy_ms = busy_ms;
    pthread_once(&sq_once, sq_global_init);
    rc = sqlite3_open_v2(path, &s->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_NOMUTEX,
                         sqlite_walbuf_vfs());
    if (rc != SQLITE_OK) {
        if (s->db == NULL) /* out of memory */
            abort();
        db_err(s, rc, e, "opening the store");
        sq_close(s);
        return HERR_STORE;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, busy_ms);

    struct {
        sqlite3_stmt **st;
        const char *sql;
    } stmts[] = {
        {&s->begin, "BEGIN IMMEDIATE"},
        {&s->commit, "COMMIT"},
        {&s->rollback, "ROLLBACK"},
        {&s->sp, "SAVEPOINT mc_write"},
        {&s->sp_release, "RELEASE mc_write"},
        {&s->sp_rollback, "ROLLBACK TO mc_write"},
    };
    for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++)
        if ((rc = prepare(s, stmts[i].sql, stmts[i].st, e)) != 0)
            goto fail;
    if ((rc = pragma(s, "PRAGMA synchronous = NORMAL", NULL, e)) ||
        (rc = pragma(s, "PRAGMA foreign_keys = ON", NULL, e)) ||
        (rc = pragma(s, "PRAGMA temp_store = MEMORY", NULL, e)) ||
        (rc = pragma(s, "PRAGMA cache_size = -" STR(CACHE_KIB), NULL, e)) ||
        (rc =
             pragma(s, "PRAGMA wal_autocheckpoint = " STR(WAL_CHECKPOINT_PAGES),
                    NULL, e)) ||
        (rc = pragma(s, "PRAGMA journal_size_limit = " STR(WAL_KEEP_BYTES),
                     NULL, e)))
        goto fail;

    /* Switching to WAL needs the file to itself, and SQLite reports
     * SQLITE_BUSY for that at once, without its busy handler: processes
     * that open the store together retry here, within the same timeout. */
    int64_t deadline = clock_mono_ms() + busy_ms;
    for (unsigned n = 0;; n++) {
        s->busy_hit = 0;
        rc = pragma(s, "PRAGMA journal_mode = WAL",
                    strcmp(path, ":memory:") ? "wal" : NULL, e);
        if (rc == 0)
            rc = ensure_schema(s, e);
        if (rc == 0)
            break;
        if (!s->busy_hit || clock_mono_ms() >= deadline)
            goto fail;
        struct timespec ts = {0, (long)(1 + (n % 10)) * 1000000L};
        nanosleep(&ts, NULL);
    }

    struct {
        sqlite3_stmt **st;
        const char *sql;
    } dml[] = {
        {&s->ins_msg, insert_msg_sql},
        {&s->ins_content, insert_content_sql},
        {&s->ins_rcpt, "INSERT OR IGNORE INTO message_rcpt (email, seq, kind)"
                       " VALUES (?1, ?2, ?3)"},
        {&s->status_of, "SELECT status FROM messages WHERE id = ?1"},
        {&s->upd, update_sql},
        {&s->upd_content,
         "UPDATE message_content SET subject = ?1, text = ?2, html = ?3"
         " WHERE seq = (SELECT seq FROM messages WHERE id = ?4)"},
        {&s->ins_subject,
         "INSERT INTO message_subject (rowid, subject) VALUES (?1, ?2)"},
        {&s->set_subject,
         "INSERT OR REPLACE INTO message_subject (rowid, subject)"
         " SELECT seq, ?1 FROM messages WHERE id = ?2"},
        {&s->get, "SELECT " COLS FROM_JOINED " WHERE m.id = ?1"},
    };
    for (size_t i = 0; i < sizeof dml / sizeof dml[0]; i++)
        if ((rc = prepare(s, dml[i].sql, dml[i].st, e)) != 0)
            goto fail;
    *state = s;
    return 0;
fail:
    sq_close(s);
    return rc ? rc : HERR_STORE;
}

/* After some errors (disk full, I/O) SQLite rolls the whole transaction
 * back by itself; a batch that is gone must not turn later writes into
 * autocommits the caller believes are still pending. */
static int
batch_lost(struct mcs *s, struct herr *e)
{
    if (!s->in_batch || !sqlite3_get_autocommit(s->db))
        return 0;
    s->in_batch = 0;
    return herr_set(e, HERR_STORE, NULL,
                    "the batch was rolled back by the database after an "
                    "earlier error (%s)",
                    s->path);
}

/*
 * The log starts again from its beginning only when a writer finds every
 * frame copied into the database. With two writers on one store (two
 * workers) that moment never came: the checkpoint handles' passive
 * checkpoints always had a few frames to go, and the log grew by
 * everything written (590 MB in make bench's two-worker drain of
 * 200,000; its wal-index ~1 MB of each worker's memory). So a worker's
 * writer, finding the log past WAL_RESTART_PAGES after its last commit,
 * runs a RESTART checkpoint before its next batch: it copies the little
 * the passive ones left (holding the other writers off meanwhile) and
 * lets the next commit start the log again. It waits at most
 * RESTART_WAIT_MS for the write lock and the readers; busy, it is tried
 * again RESTART_AGAIN_MS later.
 */
static int
restart_wait(void *ud, int tries)
{
    struct mcs *s = ud;
    (void)tries;
    if (clock_mono_ms() >= s->restart_until)
        return 0;
    struct timespec ts = {0, 50 * 1000L}; /* the lock is free for moments */
    nanosleep(&ts, NULL);
    return 1;
}

static void
restart_log(struct mcs *s)
{
    int log = 0, done = 0;
    s->restart_until = clock_mono_ms() + RESTART_WAIT_MS;
    sqlite3_busy_handler(s->db, restart_wait, s);
    if (sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_RESTART, &log,
                                  &done) == SQLITE_OK)
        s->wal_frames = 0;
    else /* busy: not before RESTART_AGAIN_MS, so a batch pays it rarely */
        s->restart_after = clock_mono_ms() + RESTART_AGAIN_MS;
    sqlite3_busy_timeout(s->db, s->busy_ms);
}

static int
sq_begin(void *state, struct herr *e)
{
    struct mcs *s = state;
    if (s->in_batch)
        return herr_set(e, HERR_INVALID, NULL, "a batch is already open");
    if (s->ckpt_elsewhere && s->wal_frames > WAL_RESTART_PAGES &&
        clock_mono_ms() >= s->restart_after)
        restart_log(s);
    int rc = exec_stmt(s->begin);
    if (rc != SQLITE_OK)
        return db_err(s, rc, e, "beginning a batch");
    s->in_batch = 1;
    return 0;
}

static void
subject_later(struct mcs *s, int64_t seq, const char *id, const char *subject)
{
    if (s->nlater == s->caplater) {
        s->caplater = s->caplater ? 2 * s->caplater : 64;
        s->later = xrealloc(s->later, s->caplater * sizeof *s->later);
    }
    struct subject_later *l = &s->later[s->nlater++];
    l->seq = seq;
    l->id = id ? xstrdup(id) : NULL;
    l->subject = xstrdup(subject);
}

static void
subjects_forget(struct mcs *s)
{
    for (size_t i = 0; i < s->nlater; i++) {
        free(s->later[i].id);
        free(s->later[i].subject);
    }
    s->nlater = 0;
}

/* The batch's subject index writes, in order, in its transaction. */
static int
subjects_write(struct mcs *s)
{
    int rc = SQLITE_OK;
    for (size_t i = 0; rc == SQLITE_OK && i < s->nlater; i++) {
        const struct subject_later *l = &s->later[i];
        if (l->seq) {
            sqlite3_bind_int64(s->ins_subject, 1, l->seq);
            bind_text(s->ins_subject, 2, l->subject);
            rc = exec_stmt(s->ins_subject);
        } else {
            bind_text(s->set_subject, 1, l->subject);
            bind_text(s->set_subject, 2, l->id);
            rc = exec_stmt(s->set_subject);
        }
    }
    subjects_forget(s);
    return rc;
}

static void
sq_rollback(void *state)
{
    struct mcs *s = state;
    if (!s->in_batch)
        return;
    s->in_batch = 0;
    subjects_forget(s);
    if (!sqlite3_get_autocommit(s->db))
        exec_stmt(s->rollback);
}

static int
sq_commit(void *state, struct herr *e)
{
    struct mcs *s = state;
    if (!s->in_batch)
        return herr_set(e, HERR_INVALID, NULL, "no batch is open");
    if (batch_lost(s, e))
        return HERR_STORE;
    int rc = subjects_write(s);
    if (rc != SQLITE_OK) {
        db_err(s, rc, e, "indexing subjects (the batch is rolled back)");
        sq_rollback(s);
        return HERR_STORE;
    }
    rc = exec_stmt(s->commit);
    if (rc != SQLITE_OK) {
        db_err(s, rc, e, "committing a batch (rolled back)");
        sq_rollback(s);
        return HERR_STORE;
    }
    s->in_batch = 0;
    return 0;
}

/* A write of several statements: its own transaction outside a batch, a
 * savepoint inside one, so that a failure leaves nothing half-written. */
static int
write_open(struct mcs *s)
{
    return exec_stmt(s->in_batch ? s->sp : s->begin);
}

static int
write_close(struct mcs *s)
{
    int rc = exec_stmt(s->in_batch ? s->sp_release : s->commit);
    if (rc != SQLITE_OK && !s->in_batch && !sqlite3_get_autocommit(s->db))
        exec_stmt(s->rollback);
    return rc;
}

static void
write_abort(struct mcs *s)
{
    if (sqlite3_get_autocommit(s->db))
        return;
    if (s->in_batch) {
        exec_stmt(s->sp_rollback);
        exec_stmt(s->sp_release);
    } else {
        exec_stmt(s->rollback);
    }
}

struct rcpt {
    char *email; /* lowercased */
    const char *kind;
};

/* Collects the e-mails of one of to/cc/bcc_json for the recipient index. */
static int
rcpt_collect(const char *js, const char *kind, const char *field,
             struct rcpt **v, size_t *n, size_t *cap, struct herr *e)
{
    if (js == NULL || strcmp(js, "[]") == 0) /* most cc and bcc */
        return 0;
    /* jfast for the text the worker wrote (valid UTF-8; jansson's own
     * parser was a thirtieth of the writing thread), jansson's for the
     * rest */
    size_t len = strlen(js);
    json_t *arr = utf8_check((const unsigned char *)js, len) == len
                      ? jfast_loadb(js, len, NULL)
                      : NULL;
    if (arr == NULL)
        arr = json_loads(js, 0, NULL);
    if (arr == NULL || !json_is_array(arr)) {
        json_decref(arr);
        return herr_set(e, HERR_INVALID, field, "not a JSON array");
    }
    size_t i;
    json_t *it;
    json_array_foreach(arr, i, it)
    {
        const char *em = json_string_value(json_object_get(it, "email"));
        if (em == NULL) {
            json_decref(arr);
            return herr_set(e, HERR_INVALID, field,
                            "entry %zu has no \"email\"", i);
        }
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 8;
            *v = xrealloc(*v, *cap * sizeof **v);
        }
        char *low = xstrdup(em);
        for (char *p = low; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        (*v)[*n].email = low;
        (*v)[*n].kind = kind;
        (*n)++;
    }
    json_decref(arr);
    return 0;
}

static int
sq_insert(void *state, const struct mc_record *r, enum mc_status *existing,
          struct herr *e)
{
    struct mcs *s = state;
    struct rcpt *rc_v = NULL;
    size_t rc_n = 0, rc_cap = 0;
    int ret =
        rcpt_collect(r->to_json, "to", "to_json", &rc_v, &rc_n, &rc_cap, e);
    if (ret == 0)
        ret =
            rcpt_collect(r->cc_json, "cc", "cc_json", &rc_v, &rc_n, &rc_cap, e);
    if (ret == 0)
        ret = rcpt_collect(r->bcc_json, "bcc", "bcc_json", &rc_v, &rc_n,
                           &rc_cap, e);
    if (ret != 0 || (ret = batch_lost(s, e)) != 0)
        goto out;

    int rc = write_open(s);
    if (rc != SQLITE_OK) {
        ret = db_err(s, rc, e, "inserting a message");
        goto out;
    }
    sqlite3_stmt *st = s->ins_msg;
    bind_text(st, 1, r->id);
    bind_text(st, 2, r->org);
    bind_text(st, 3, r->account);
    bind_text(st, 4, r->type);
    sqlite3_bind_int64(st, 5, r->created_at);
    bind_text(st, 6, mc_status_name(r->status));
    bind_text(st, 7, r->path);
    bind_text(st, 8, r->path_reason);
    bind_text(st, 9, r->sender);
    bind_text(st, 10, r->reply_to);
    sqlite3_bind_int(st, 11, r->attempts);
    sqlite3_bind_int64(st, 12,
                       r->updated_at > 0 ? r->updated_at : r->created_at);
    bind_time(st, 13, r->sent_at);
    bind_time(st, 14, r->next_attempt_at);
    bind_text(st, 15, r->last_error);
    bind_text(st, 16, r->smtp_reply);
    bind_text(st, 17, r->recipients_json);
    bind_text(st, 18, r->from);
    bind_text(st, 19, r->resend_of);
    sqlite3_bind_int(st, 20, r->body_expired != 0);
    rc = exec_stmt(st);
    if (rc != SQLITE_OK)
        goto db_fail;

    if (sqlite3_changes(s->db) == 0) {
        sqlite3_bind_text(s->status_of, 1, r->id, -1, SQLITE_STATIC);
        rc = sqlite3_step(s->status_of);
        enum mc_status found = MC_QUEUED;
        int parsed =
            rc == SQLITE_ROW &&
            mc_status_parse((const char *)sqlite3_column_text(s->status_of, 0),
                            &found) == 0;
        sqlite3_reset(s->status_of);
        sqlite3_clear_bindings(s->status_of);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            goto db_fail;
        write_close(s);
        if (!parsed) {
            ret = herr_set(e, HERR_STORE, "id",
                           "a record with this id exists with an unreadable "
                           "status");
            goto out;
        }
        if (existing)
            *existing = found;
        ret = herr_set(e, HERR_EXISTS, "id", "already recorded as %s",
                       mc_status_name(found));
        goto out;
    }

    sqlite3_int64 seq = sqlite3_last_insert_rowid(s->db);
    st = s->ins_content;
    sqlite3_bind_int64(st, 1, seq);
    bind_text(st, 2, r->from);
    bind_text(st, 3, r->from_name);
    bind_text(st, 4, r->to_json);
    bind_text(st, 5, r->cc_json);
    bind_text(st, 6, r->bcc_json);
    bind_text(st, 7, r->subject);
    bind_text(st, 8, r->text);
    bind_text(st, 9, r->html);
    bind_text(st, 10, r->attachments_json);
    bind_text(st, 11, r->meta_json);
    rc = exec_stmt(st);
    if (rc != SQLITE_OK)
        goto db_fail;

    for (size_t i = 0; i < rc_n; i++) {
        sqlite3_bind_text(s->ins_rcpt, 1, rc_v[i].email, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s->ins_rcpt, 2, seq);
        sqlite3_bind_text(s->ins_rcpt, 3, rc_v[i].kind, -1, SQLITE_STATIC);
        rc = exec_stmt(s->ins_rcpt);
        if (rc != SQLITE_OK)
            goto db_fail;
    }
    if (r->subject && !s->in_batch) {
        sqlite3_bind_int64(s->ins_subject, 1, seq);
        bind_text(s->ins_subject, 2, r->subject);
        rc = exec_stmt(s->ins_subject);
        if (rc != SQLITE_OK)
            goto db_fail;
    }
    rc = write_close(s);
    if (rc != SQLITE_OK) {
        ret = db_err(s, rc, e, "inserting a message");
        goto out;
    }
    if (r->subject && s->in_batch)
        subject_later(s, seq, NULL, r->subject);
    ret = 0;
    goto out;

db_fail:
    ret = db_err(s, rc, e, "inserting a message");
    write_abort(s);
out:
    for (size_t i = 0; i < rc_n; i++)
        free(rc_v[i].email);
    free(rc_v);
    return ret;
}

static int
sq_update(void *state, const struct mc_update *u, int64_t now, struct herr *e)
{
    struct mcs *s = state;
    if (batch_lost(s, e))
        return HERR_STORE;
    sqlite3_stmt *st = s->upd;
    bind_text(st, 1, mc_status_name(u->status));
    bind_text(st, 2, u->path);
    bind_text(st, 3, u->path_reason);
    bind_text(st, 4, u->sender);
    bind_text(st, 5, u->reply_to);
    sqlite3_bind_int(st, 6, u->attempts_add);
    sqlite3_bind_int64(st, 7, u->sent_at < 0 ? -1 : u->sent_at);
    sqlite3_bind_int64(st, 8, u->next_attempt_at < 0 ? -1 : u->next_attempt_at);
    bind_text(st, 9, u->last_error);
    bind_text(st, 10, u->smtp_reply);
    bind_text(st, 11, u->recipients_json);
    sqlite3_bind_int64(st, 12, now);
    bind_text(st, 13, u->id);
    if (!u->set_content) {
        /* A single statement is atomic on its own; in autocommit mode
         * SQLite takes the write lock directly, through the busy
         * handler. */
        int rc = exec_stmt(st);
        if (rc != SQLITE_OK)
            return db_err(s, rc, e, "updating a message");
        if (sqlite3_changes(s->db) == 0)
            return herr_set(e, HERR_NOTFOUND, "id", "no such message");
        return 0;
    }
    int rc = write_open(s);
    if (rc != SQLITE_OK) {
        sqlite3_reset(st);
        return db_err(s, rc, e, "updating a message");
    }
    rc = exec_stmt(st);
    int found = rc == SQLITE_OK && sqlite3_changes(s->db) > 0;
    if (found) {
        sqlite3_stmt *c = s->upd_content;
        bind_text(c, 1, u->subject);
        bind_text(c, 2, u->text);
        bind_text(c, 3, u->html);
        bind_text(c, 4, u->id);
        rc = exec_stmt(c);
        if (rc == SQLITE_OK && !s->in_batch) {
            /* the subject index follows the content */
            bind_text(s->set_subject, 1, u->subject ? u->subject : "");
            bind_text(s->set_subject, 2, u->id);
            rc = exec_stmt(s->set_subject);
        }
    }
    if (rc == SQLITE_OK && found)
        rc = write_close(s);
    if (rc != SQLITE_OK || !found) {
        int err = rc != SQLITE_OK ? db_err(s, rc, e, "updating a message") : 0;
        write_abort(s);
        return err ? err : herr_set(e, HERR_NOTFOUND, "id", "no such message");
    }
    if (s->in_batch)
        subject_later(s, 0, u->id, u->subject ? u->subject : "");
    return 0;
}

static char *
col_str(sqlite3_stmt *st, int c)
{
    const unsigned char *v = sqlite3_column_text(st, c);
    if (v == NULL)
        return NULL;
    return xstrndup((const char *)v, (size_t)sqlite3_column_bytes(st, c));
}

static int64_t
col_time(sqlite3_stmt *st, int c)
{
    if (sqlite3_column_type(st, c) == SQLITE_NULL)
        return 0;
    return sqlite3_column_int64(st, c);
}

/* The current row as a new record, or NULL when its status is unknown. */
static struct mc_record *
row_record(sqlite3_stmt *st)
{
    enum mc_status status;
    if (mc_status_parse((const char *)sqlite3_column_text(st, C_STATUS),
                        &status) != 0)
        return NULL;
    struct mc_record *r = xcalloc(1, sizeof *r);
    r->status = status;
    r->id = col_str(st, C_ID);
    r->org = col_str(st, C_ORG);
    r->account = col_str(st, C_ACCOUNT);
    r->type = col_str(st, C_TYPE);
    r->path = col_str(st, C_PATH);
    r->path_reason = col_str(st, C_PATH_REASON);
    r->from = col_str(st, C_FROM);
    r->from_name = col_str(st, C_FROM_NAME);
    r->sender = col_str(st, C_SENDER);
    r->reply_to = col_str(st, C_REPLY_TO);
    r->to_json = col_str(st, C_TO);
    r->cc_json = col_str(st, C_CC);
    r->bcc_json = col_str(st, C_BCC);
    r->subject = col_str(st, C_SUBJECT);
    r->text = col_str(st, C_TEXT);
    r->html = col_str(st, C_HTML);
    r->attachments_json = col_str(st, C_ATTACHMENTS);
    r->meta_json = col_str(st, C_META);
    r->recipients_json = col_str(st, C_RECIPIENTS);
    r->created_at = col_time(st, C_CREATED);
    r->updated_at = col_time(st, C_UPDATED);
    r->sent_at = col_time(st, C_SENT);
    r->next_attempt_at = col_time(st, C_NEXT);
    r->attempts = sqlite3_column_int(st, C_ATTEMPTS);
    r->last_error = col_str(st, C_LAST_ERROR);
    r->smtp_reply = col_str(st, C_SMTP_REPLY);
    r->resend_of = col_str(st, C_RESEND_OF);
    r->body_expired = sqlite3_column_int(st, C_BODY_EXPIRED) != 0;
    return r;
}

static int
sq_get(void *state, const char *id, struct mc_record **out, struct herr *e)
{
    struct mcs *s = state;
    *out = NULL;
    sqlite3_bind_text(s->get, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s->get);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        *out = row_record(s->get);
        if (*out == NULL)
            ret = herr_set(e, HERR_STORE, "status",
                           "stored record %s has an unknown status", id);
    } else if (rc == SQLITE_DONE) {
        ret = herr_set(e, HERR_NOTFOUND, "id", "no such message");
    } else {
        ret = db_err(s, rc, e, "reading a message");
    }
    sqlite3_reset(s->get);
    sqlite3_clear_bindings(s->get);
    return ret;
}

static char *
list_sql(int mask)
{
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, mask & F_NO_BODIES ? "SELECT " COLS_NO_BODIES FROM_JOINED
                                      " WHERE 1"
                                    : "SELECT " COLS FROM_JOINED " WHERE 1");
    if (mask & F_ORG)
        buf_puts(&b, " AND m.org = :org");
    if (mask & F_ACCOUNT)
        buf_puts(&b, " AND m.account = :account");
    if (mask & F_STATUS)
        buf_puts(&b, mask & F_SENT ? " AND m.status = 'sent'"
                                   : " AND m.status = :status"
                                     " AND m.status <> 'sent'");
    if (mask & F_SINCE)
        buf_puts(&b, " AND m.created_at >= :since");
    if (mask & F_UNTIL)
        buf_puts(&b, " AND m.created_at <= :until");
    if (mask & F_TO)
        buf_puts(&b, " AND m.seq IN (SELECT seq FROM message_rcpt"
                     " WHERE email = :to)");
    if (mask & F_TYPE)
        buf_puts(&b, " AND m.type = :type");
    if (mask & F_PATH)
        buf_puts(&b, " AND m.path = :path");
    if (mask & F_FROM)
        buf_puts(&b, " AND m.from_addr = :from");
    if (mask & F_Q)
        buf_puts(&b, " AND m.seq IN (SELECT rowid FROM message_subject"
                     " WHERE message_subject MATCH :q)");
    if (mask & F_CURSOR)
        buf_puts(&b, " AND (m.created_at < :cat OR (m.created_at = :cat"
                     " AND m.id < :cid))");
    if (mask & F_SCOPE)
        buf_puts(&b, " AND m.org IN (SELECT value FROM json_each(:scope))");
    buf_puts(&b, " ORDER BY m.created_at DESC, m.id DESC LIMIT :limit");
    size_t len;
    return buf_take(&b, &len);
}

static int
sq_list(void *state, const struct mc_query *q, struct mc_record ***out,
        size_t *n, struct herr *e)
{
    struct mcs *s = state;
    const struct mc_filter *f = q->f;
    *out = NULL;
    *n = 0;
    int mask = (f->org ? F_ORG : 0) | (f->account ? F_ACCOUNT : 0) |
               (f->has_status ? F_STATUS : 0) |
               (f->has_status && f->status == MC_SENT ? F_SENT : 0) |
               (f->since > 0 ? F_SINCE : 0) | (f->until > 0 ? F_UNTIL : 0) |
               (q->to ? F_TO : 0) | (f->type ? F_TYPE : 0) |
               (f->path ? F_PATH : 0) | (q->from ? F_FROM : 0) |
               (q->nwords ? F_Q : 0) | (q->has_cursor ? F_CURSOR : 0) |
               (f->nscope ? F_SCOPE : 0) | (f->no_bodies ? F_NO_BODIES : 0);
    if (s->list == NULL)
        s->list = xcalloc(F_COMBOS, sizeof *s->list);
    if (s->list[mask] == NULL) {
        char *sql = list_sql(mask);
        int ret = prepare(s, sql, &s->list[mask], e);
        free(sql);
        if (ret != 0)
            return ret;
    }
    sqlite3_stmt *st = s->list[mask];
    /* FTS5: each word a prefix query, all of them ("w1"* AND "w2"*);
     * mc_q_words' words hold no quote. */
    struct buf fts;
    buf_init(&fts, 0);
    for (size_t i = 0; i < q->nwords; i++)
        buf_printf(&fts, "%s\"%s\"*", i ? " AND " : "", q->words[i]);
    char *scope = NULL;
    if (f->nscope) {
        json_t *a = json_array();
        for (size_t i = 0; i < f->nscope; i++)
            json_array_append_new(a, json_string(f->scope[i]));
        scope = json_dumps(a, JSON_COMPACT);
        json_decref(a);
    }
#define PARAM(name) sqlite3_bind_parameter_index(st, name)
    if (mask & F_ORG)
        sqlite3_bind_text(st, PARAM(":org"), f->org, -1, SQLITE_STATIC);
    if (mask & F_ACCOUNT)
        sqlite3_bind_text(st, PARAM(":account"), f->account, -1, SQLITE_STATIC);
    if ((mask & F_STATUS) && !(mask & F_SENT))
        sqlite3_bind_text(st, PARAM(":status"), mc_status_name(f->status), -1,
                          SQLITE_STATIC);
    if (mask & F_SINCE)
        sqlite3_bind_int64(st, PARAM(":since"), f->since);
    if (mask & F_UNTIL)
        sqlite3_bind_int64(st, PARAM(":until"), f->until);
    if (mask & F_TO)
        sqlite3_bind_text(st, PARAM(":to"), q->to, -1, SQLITE_STATIC);
    if (mask & F_TYPE)
        sqlite3_bind_text(st, PARAM(":type"), f->type, -1, SQLITE_STATIC);
    if (mask & F_PATH)
        sqlite3_bind_text(st, PARAM(":path"), f->path, -1, SQLITE_STATIC);
    if (mask & F_FROM)
        sqlite3_bind_text(st, PARAM(":from"), q->from, -1, SQLITE_STATIC);
    if (mask & F_Q)
        sqlite3_bind_text(st, PARAM(":q"), fts.p, -1, SQLITE_STATIC);
    if (mask & F_CURSOR) {
        sqlite3_bind_int64(st, PARAM(":cat"), q->cursor_at);
        sqlite3_bind_text(st, PARAM(":cid"), q->cursor_id, -1, SQLITE_STATIC);
    }
    if (mask & F_SCOPE)
        sqlite3_bind_text(st, PARAM(":scope"), scope, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, PARAM(":limit"), q->limit);
#undef PARAM

    struct mc_record **v = NULL;
    size_t cnt = 0, cap = 0;
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct mc_record *r = row_record(st);
        if (r == NULL) {
            ret = herr_set(e, HERR_STORE, "status",
                           "a stored record has an unknown status");
            break;
        }
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof *v);
        }
        v[cnt++] = r;
    }
    if (ret == 0 && rc != SQLITE_DONE)
        ret = db_err(s, rc, e, "listing messages");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    buf_free(&fts);
    free(scope);
    if (ret != 0) {
        mc_records_free(v, cnt);
        return ret;
    }
    *out = v;
    *n = cnt;
    return 0;
}

/* One statement with ?1 bound to `at`, stepped; the count of a SELECT
 * count(*) in *count (when not NULL), else the rows it changed. */
static int
purge_step(struct mcs *s, const char *sql, int64_t at, long long *count,
           struct herr *e)
{
    sqlite3_stmt *st;
    int rc = prepare(s, sql, &st, e);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, at);
    rc = sqlite3_step(st);
    long long n = 0;
    if (rc == SQLITE_ROW) {
        n = sqlite3_column_int64(st, 0);
        rc = SQLITE_DONE;
    } else if (rc == SQLITE_DONE) {
        n = sqlite3_changes(s->db);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_err(s, rc, e, "purging old records");
    if (count)
        *count = n;
    return 0;
}

#define PURGE_SEQS(cond)                                                       \
    "(SELECT seq FROM messages WHERE " cond                                    \
    " ORDER BY seq LIMIT " STR(MC_PURGE_CHUNK) ")"

/* Runs the statements of one chunk in one transaction: the count of the
 * last one (the rows it changed) in *n. */
static int
purge_chunk(struct mcs *s, const char *const *sqls, size_t nsql, int64_t at,
            long long *n, struct herr *e)
{
    int rc = exec_stmt(s->begin);
    if (rc != SQLITE_OK)
        return db_err(s, rc, e, "purging old records");
    int ret = 0;
    for (size_t i = 0; ret == 0 && i < nsql; i++)
        ret = purge_step(s, sqls[i], at, n, e);
    if (ret == 0 && (rc = exec_stmt(s->commit)) != SQLITE_OK)
        ret = db_err(s, rc, e, "purging old records");
    if (ret && !sqlite3_get_autocommit(s->db))
        exec_stmt(s->rollback);
    return ret;
}

static int
sq_purge(void *state, int64_t records_before, int64_t bodies_before,
         int dry_run, long long max, struct mc_purge_result *out,
         struct herr *e)
{
    struct mcs *s = state;
    if (s->in_batch)
        return herr_set(e, HERR_INVALID, NULL, "purging inside a batch");
    int ret = 0;
    if (dry_run) {
        if (records_before)
            ret = purge_step(s,
                             "SELECT count(*) FROM messages WHERE created_at < "
                             "?1",
                             records_before, &out->records, e);
        if (ret == 0 && bodies_before > records_before)
            ret = purge_step(s,
                             "SELECT count(*) FROM messages WHERE created_at < "
                             "?1 AND body_expired = 0",
                             bodies_before, &out->bodies, e);
        if (ret == 0 && bodies_before > records_before && records_before) {
            long long gone = 0;
            ret = purge_step(s,
                             "SELECT count(*) FROM messages WHERE created_at < "
                             "?1 AND body_expired = 0",
                             records_before, &gone, e);
            out->bodies -= gone; /* removed with their record instead */
        }
        return ret;
    }
    /* the subject index has no foreign key: its rows go first, then the
     * records (content and recipients cascade) */
    static const char *const del[] = {
        "DELETE FROM message_subject WHERE rowid IN " PURGE_SEQS(
            "created_at < ?1"),
        "DELETE FROM messages WHERE seq IN " PURGE_SEQS("created_at < ?1")};
    static const char *const bodies[] = {
        "UPDATE message_content SET text = NULL, html = NULL WHERE seq "
        "IN " PURGE_SEQS("created_at < ?1 AND body_expired = 0"),
        "UPDATE messages SET body_expired = 1 WHERE seq IN " PURGE_SEQS(
            "created_at < ?1 AND body_expired = 0")};
    long long n = 0;
#define PURGE_ROOM (max <= 0 || out->records + out->bodies < max)
    if (records_before) {
        do {
            n = 0;
            ret = purge_chunk(s, del, 2, records_before, &n, e);
            out->records += n;
        } while (ret == 0 && n > 0 && PURGE_ROOM);
    }
    if (ret == 0 && n == 0 && bodies_before > records_before) {
        do {
            n = 0;
            ret = purge_chunk(s, bodies, 2, bodies_before, &n, e);
            out->bodies += n;
        } while (ret == 0 && n > 0 && PURGE_ROOM);
    }
#undef PURGE_ROOM
    out->more = ret == 0 && n > 0;
    return ret;
}

static int
sq_checkpoint(void *state, struct herr *e)
{
    struct mcs *s = state;
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                       &log, &done);
    if (rc == SQLITE_OK || rc == SQLITE_BUSY)
        return 0; /* BUSY: another checkpoint runs; this one is not needed */
    return herr_set(e, HERR_STORE, "HERALD_MC", "checkpoint of %s: %s", s->path,
                    sqlite3_errmsg(s->db));
}

/* A worker's writer after each commit: the log's length, and the
 * fallback checkpoint (passive, as SQLite's automatic one) past four
 * times the threshold. */
static int
writer_wal_hook(void *ud, sqlite3 *db, const char *name, int frames)
{
    struct mcs *s = ud;
    s->wal_frames = frames;
    if (frames >= 4 * WAL_CHECKPOINT_PAGES)
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL,
                                  NULL);
    return SQLITE_OK;
}

static void
sq_checkpoint_elsewhere(void *state)
{
    struct mcs *s = state;
    s->ckpt_elsewhere = 1;
    sqlite3_wal_hook(s->db, writer_wal_hook, s);
}

const struct mc_backend mc_backend_sqlite = {
    .checkpoint = sq_checkpoint,
    .checkpoint_elsewhere = sq_checkpoint_elsewhere,
    .scheme = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .insert = sq_insert,
    .update = sq_update,
    .get = sq_get,
    .list = sq_list,
    .purge = sq_purge,
};
