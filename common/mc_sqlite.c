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
 */
#include "mc.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SCHEMA_VERSION 1
#define BUSY_MS_DEFAULT 5000
#define BUSY_MS_MAX 600000

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS messages ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " org TEXT NOT NULL,"
    " account TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " path TEXT,"
    " path_reason TEXT,"
    " from_addr TEXT NOT NULL,"
    " from_name TEXT,"
    " sender TEXT,"
    " reply_to TEXT,"
    " to_json TEXT,"
    " cc_json TEXT,"
    " bcc_json TEXT,"
    " subject TEXT,"
    " text TEXT,"
    " html TEXT,"
    " attachments_json TEXT,"
    " meta_json TEXT,"
    " recipients_json TEXT,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " sent_at INTEGER,"
    " next_attempt_at INTEGER,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT,"
    " smtp_reply TEXT);"
    "CREATE INDEX IF NOT EXISTS messages_org ON messages(org, created_at);"
    "CREATE INDEX IF NOT EXISTS messages_account"
    " ON messages(account, created_at);"
    "CREATE INDEX IF NOT EXISTS messages_status"
    " ON messages(status, created_at);"
    /* Small rows, always looked up by e-mail: the primary key is the
     * message_rcpt(email) index, covering the id. */
    "CREATE TABLE IF NOT EXISTS message_rcpt ("
    " id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,"
    " email TEXT NOT NULL,"
    " kind TEXT NOT NULL,"
    " PRIMARY KEY (email, id, kind)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS message_rcpt_id ON message_rcpt(id);";

/* Column order of every SELECT and of the INSERT. */
#define COLS                                                                   \
    "id, org, account, type, status, path, path_reason, from_addr, "           \
    "from_name, sender, reply_to, to_json, cc_json, bcc_json, subject, "       \
    "text, html, attachments_json, meta_json, recipients_json, created_at, "   \
    "updated_at, sent_at, next_attempt_at, attempts, last_error, smtp_reply"

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
    C_COUNT
};

static const char insert_sql[] =
    "INSERT INTO messages (" COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
    "?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, "
    "?23, ?24, ?25, ?26, ?27) ON CONFLICT(id) DO NOTHING";

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

/* mc_list filters, one bit each; a statement per combination. */
enum {
    F_ORG = 1,
    F_ACCOUNT = 2,
    F_STATUS = 4,
    F_SINCE = 8,
    F_UNTIL = 16,
    F_TO = 32,
    F_COMBOS = 64
};

struct mcs {
    sqlite3 *db;
    char *path;
    int busy_ms;
    int busy_hit; /* the last error was SQLITE_BUSY or SQLITE_LOCKED */
    int in_batch;
    sqlite3_stmt *begin, *commit, *rollback;
    sqlite3_stmt *sp, *sp_release, *sp_rollback;
    sqlite3_stmt *ins, *ins_rcpt, *status_of, *upd, *get;
    sqlite3_stmt *list[F_COMBOS];
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

/* Creates every missing directory above the file `path`. */
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
        if (mkdir(dir, 0750) != 0) {
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

static void
sq_close(void *state)
{
    struct mcs *s = state;
    if (s == NULL)
        return;
    if (s->db && !sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_stmt **all[] = {&s->begin, &s->commit,     &s->rollback,
                            &s->sp,    &s->sp_release, &s->sp_rollback,
                            &s->ins,   &s->ins_rcpt,   &s->status_of,
                            &s->upd,   &s->get};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(*all[i]);
    for (int i = 0; i < F_COMBOS; i++)
        sqlite3_finalize(s->list[i]);
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
    if (version < SCHEMA_VERSION) {
        char *sql = xasprintf("%sPRAGMA user_version = %d;", schema_sql,
                              SCHEMA_VERSION);
        rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        free(sql);
        if (rc != SQLITE_OK) {
            db_err(s, rc, e, "creating the schema");
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

/* A clock for timeouts only: clock_now_ms() may be pinned by tests. */
static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
    struct mcs *s = xcalloc(1, sizeof *s);
    s->path = path;
    s->busy_ms = busy_ms;
    rc = sqlite3_open_v2(
        path, &s->db,
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
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
        (rc = pragma(s, "PRAGMA foreign_keys = ON", NULL, e)))
        goto fail;

    /* Switching to WAL needs the file to itself, and SQLite reports
     * SQLITE_BUSY for that at once, without its busy handler: processes
     * that open the store together retry here, within the same timeout. */
    int64_t deadline = mono_ms() + busy_ms;
    for (unsigned n = 0;; n++) {
        s->busy_hit = 0;
        rc = pragma(s, "PRAGMA journal_mode = WAL",
                    strcmp(path, ":memory:") ? "wal" : NULL, e);
        if (rc == 0)
            rc = ensure_schema(s, e);
        if (rc == 0)
            break;
        if (!s->busy_hit || mono_ms() >= deadline)
            goto fail;
        struct timespec ts = {0, (long)(1 + (n % 10)) * 1000000L};
        nanosleep(&ts, NULL);
    }

    struct {
        sqlite3_stmt **st;
        const char *sql;
    } dml[] = {
        {&s->ins, insert_sql},
        {&s->ins_rcpt, "INSERT OR IGNORE INTO message_rcpt (id, email, kind)"
                       " VALUES (?1, ?2, ?3)"},
        {&s->status_of, "SELECT status FROM messages WHERE id = ?1"},
        {&s->upd, update_sql},
        {&s->get, "SELECT " COLS " FROM messages WHERE id = ?1"},
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

static int
sq_begin(void *state, struct herr *e)
{
    struct mcs *s = state;
    if (s->in_batch)
        return herr_set(e, HERR_INVALID, NULL, "a batch is already open");
    int rc = exec_stmt(s->begin);
    if (rc != SQLITE_OK)
        return db_err(s, rc, e, "beginning a batch");
    s->in_batch = 1;
    return 0;
}

static void
sq_rollback(void *state)
{
    struct mcs *s = state;
    if (!s->in_batch)
        return;
    s->in_batch = 0;
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
    int rc = exec_stmt(s->commit);
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
    if (js == NULL)
        return 0;
    json_t *arr = json_loads(js, 0, NULL);
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
    sqlite3_stmt *st = s->ins;
    bind_text(st, C_ID + 1, r->id);
    bind_text(st, C_ORG + 1, r->org);
    bind_text(st, C_ACCOUNT + 1, r->account);
    bind_text(st, C_TYPE + 1, r->type);
    bind_text(st, C_STATUS + 1, mc_status_name(r->status));
    bind_text(st, C_PATH + 1, r->path);
    bind_text(st, C_PATH_REASON + 1, r->path_reason);
    bind_text(st, C_FROM + 1, r->from);
    bind_text(st, C_FROM_NAME + 1, r->from_name);
    bind_text(st, C_SENDER + 1, r->sender);
    bind_text(st, C_REPLY_TO + 1, r->reply_to);
    bind_text(st, C_TO + 1, r->to_json);
    bind_text(st, C_CC + 1, r->cc_json);
    bind_text(st, C_BCC + 1, r->bcc_json);
    bind_text(st, C_SUBJECT + 1, r->subject);
    bind_text(st, C_TEXT + 1, r->text);
    bind_text(st, C_HTML + 1, r->html);
    bind_text(st, C_ATTACHMENTS + 1, r->attachments_json);
    bind_text(st, C_META + 1, r->meta_json);
    bind_text(st, C_RECIPIENTS + 1, r->recipients_json);
    sqlite3_bind_int64(st, C_CREATED + 1, r->created_at);
    sqlite3_bind_int64(st, C_UPDATED + 1,
                       r->updated_at > 0 ? r->updated_at : r->created_at);
    bind_time(st, C_SENT + 1, r->sent_at);
    bind_time(st, C_NEXT + 1, r->next_attempt_at);
    sqlite3_bind_int(st, C_ATTEMPTS + 1, r->attempts);
    bind_text(st, C_LAST_ERROR + 1, r->last_error);
    bind_text(st, C_SMTP_REPLY + 1, r->smtp_reply);
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

    for (size_t i = 0; i < rc_n; i++) {
        sqlite3_bind_text(s->ins_rcpt, 1, r->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s->ins_rcpt, 2, rc_v[i].email, -1, SQLITE_STATIC);
        sqlite3_bind_text(s->ins_rcpt, 3, rc_v[i].kind, -1, SQLITE_STATIC);
        rc = exec_stmt(s->ins_rcpt);
        if (rc != SQLITE_OK)
            goto db_fail;
    }
    rc = write_close(s);
    if (rc != SQLITE_OK) {
        ret = db_err(s, rc, e, "inserting a message");
        goto out;
    }
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
    /* A single statement is atomic on its own; in autocommit mode SQLite
     * takes the write lock directly, through the busy handler. */
    int rc = exec_stmt(st);
    if (rc != SQLITE_OK)
        return db_err(s, rc, e, "updating a message");
    if (sqlite3_changes(s->db) == 0)
        return herr_set(e, HERR_NOTFOUND, "id", "no such message");
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
    buf_puts(&b, "SELECT " COLS " FROM messages WHERE 1");
    if (mask & F_ORG)
        buf_puts(&b, " AND org = :org");
    if (mask & F_ACCOUNT)
        buf_puts(&b, " AND account = :account");
    if (mask & F_STATUS)
        buf_puts(&b, " AND status = :status");
    if (mask & F_SINCE)
        buf_puts(&b, " AND created_at >= :since");
    if (mask & F_UNTIL)
        buf_puts(&b, " AND created_at <= :until");
    if (mask & F_TO)
        buf_puts(&b, " AND id IN (SELECT id FROM message_rcpt"
                     " WHERE email = :to)");
    buf_puts(&b, " ORDER BY created_at DESC, id DESC LIMIT :limit");
    size_t len;
    return buf_take(&b, &len);
}

static int
sq_list(void *state, const struct mc_filter *f, struct mc_record ***out,
        size_t *n, struct herr *e)
{
    struct mcs *s = state;
    *out = NULL;
    *n = 0;
    int mask = (f->org ? F_ORG : 0) | (f->account ? F_ACCOUNT : 0) |
               (f->has_status ? F_STATUS : 0) | (f->since > 0 ? F_SINCE : 0) |
               (f->until > 0 ? F_UNTIL : 0) | (f->to ? F_TO : 0);
    if (s->list[mask] == NULL) {
        char *sql = list_sql(mask);
        int ret = prepare(s, sql, &s->list[mask], e);
        free(sql);
        if (ret != 0)
            return ret;
    }
    sqlite3_stmt *st = s->list[mask];
    int limit = f->limit <= 0 ? MC_LIST_DEFAULT : f->limit;
    if (limit > MC_LIST_MAX)
        limit = MC_LIST_MAX;
    char *to = NULL;
    if (f->to) {
        to = xstrdup(f->to);
        for (char *p = to; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    }
#define PARAM(name) sqlite3_bind_parameter_index(st, name)
    if (mask & F_ORG)
        sqlite3_bind_text(st, PARAM(":org"), f->org, -1, SQLITE_STATIC);
    if (mask & F_ACCOUNT)
        sqlite3_bind_text(st, PARAM(":account"), f->account, -1, SQLITE_STATIC);
    if (mask & F_STATUS)
        sqlite3_bind_text(st, PARAM(":status"), mc_status_name(f->status), -1,
                          SQLITE_STATIC);
    if (mask & F_SINCE)
        sqlite3_bind_int64(st, PARAM(":since"), f->since);
    if (mask & F_UNTIL)
        sqlite3_bind_int64(st, PARAM(":until"), f->until);
    if (mask & F_TO)
        sqlite3_bind_text(st, PARAM(":to"), to, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, PARAM(":limit"), limit);
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
    free(to);
    if (ret != 0) {
        mc_records_free(v, cnt);
        return ret;
    }
    *out = v;
    *n = cnt;
    return 0;
}

const struct mc_backend mc_backend_sqlite = {
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
};
