/*
 * mc_pg — the PostgreSQL backend of the Message Center (mc.h), for a
 * fleet: workers and readers on any number of hosts share one store.
 *
 * URL: a libpq URI, "postgresql://[user[:pw]@][host][:port][/db][?k=v&...]"
 * or "postgres://..." ("host=/socket/dir" for a unix socket). The
 * connection defaults to connect_timeout=10 and application_name=herald
 * (the URL may override both) and always speaks UTF-8. The database must
 * be UTF8 (or SQL_ASCII), PostgreSQL 14 or newer. Tables live in the
 * first schema of the search path ("options=-csearch_path%3Dherald" in
 * the URL puts them in schema herald).
 *
 * One connection per handle, used from one thread, blocking (the worker
 * calls the store on libuv's thread pool). docs/mc-postgres.md has the
 * design and its measurements; in short:
 *
 * - Schema versions: table herald_schema holds the version (3). Opening
 *   creates or upgrades it in one transaction under a transaction-level
 *   advisory lock, so processes starting together wait for the first;
 *   a newer version is refused.
 * - A record is split by how it changes: herald_messages holds what the
 *   worker rewrites (status, route, attempts, times, outcome) and org,
 *   with the indexes on status and path; herald_message_content what never
 *   changes after the insert (org, account, type, from, subject words,
 *   addresses, subject, bodies, attachments, meta) with the indexes on
 *   those, which the worker's status updates (never HOT: status is
 *   indexed) therefore do not touch. Both are range-partitioned by
 *   created_at (ms), one partition per UTC day, named <table>_pYYYYMMDD.
 *   herald_recipients holds one row per distinct to/cc/bcc address of a
 *   record, partitioned by periods of RCPT_DAYS days (named by their
 *   first day): an address's records over a month are found newest first
 *   in four or five index descents, not thirty.
 * - Partitions are created on demand: for today and tomorrow when the
 *   store opens and at each batch, and for any other day before an insert
 *   needs it. The handle remembers which days exist. Creation runs under
 *   an advisory lock as CREATE TABLE ... (LIKE parent) + ATTACH PARTITION,
 *   which takes SHARE UPDATE EXCLUSIVE on the parent (CREATE TABLE ...
 *   PARTITION OF takes ACCESS EXCLUSIVE, which would stall every reader
 *   and writer of the fleet for the moment).
 * - herald_message_ids (id -> created_at, not partitioned) makes inserts
 *   idempotent across partitions: a partitioned table cannot have a
 *   unique index on id alone. The insert is one statement: the id goes
 *   into the registry ON CONFLICT DO NOTHING, and the record's rows are
 *   inserted only when it did. The registry also turns an id into its
 *   partition for mc_update and mc_get (a small per-handle cache of
 *   id -> created_at spares the look-up for records this handle just
 *   wrote).
 * - Every write is one SQL statement, atomic on its own: a failed write
 *   leaves nothing of its record behind, in a batch or not. A batch is
 *   one transaction (BEGIN ... COMMIT) without savepoints: a savepoint per
 *   write would give every write of a batch its own subtransaction id
 *   (256 per batch in the worker; PostgreSQL keeps 64 per backend before
 *   every other session's snapshots turn "suboverflowed" and slow) and
 *   cost two more statements each. A write that the database refuses
 *   inside a batch therefore ends the batch: it is rolled back at once,
 *   and later writes and the commit fail with HERR_STORE saying so (the
 *   SQLite backend does the same when SQLite rolls a batch back by
 *   itself). Writes refused before reaching the database (HERR_INVALID,
 *   HERR_EXISTS, HERR_NOTFOUND) leave the batch open.
 * - Deferred writes (mc_insert_deferred, mc_update_deferred): inside a
 *   batch they are sent in libpq's pipeline mode and their results read
 *   at mc_batch_sync or the commit, so a batch costs a round trip or two,
 *   not one per write; inserts of one day, and status updates of one
 *   day, go as one statement each (S_INSERT_MANY, S_UPDATE_MANY: up to
 *   GROUP_MAX writes); the outcomes are those of the writes done one
 *   after the other (see "deferred writes" below).
 * - Planning: a prepared statement on the partitioned tables is planned
 *   again at every run (its generic plan, costed over every partition,
 *   never beats a custom one), which doubled the cost of the worker's
 *   writes. So the writes and reads of one record (insert, update, get)
 *   name the day's partitions themselves, in statements prepared per day
 *   for the few days the handle uses (DAY_SLOTS), planned once; a day the
 *   handle has not seen goes through the partitioned tables, planned with
 *   its created_at known, so pruned to one partition. mc_list reads the
 *   attached days newest first, in groups of 1, 2, 4, 8 days per round
 *   trip, until the page is full; each day's key query names that day's
 *   partitions and is prepared on the connection with a generic plan
 *   without bitmap scans (planned once; an ordered index walk whatever
 *   the value's frequency); days cut by since/until/cursor are planned
 *   with their values. A listing by recipient is one statement on
 *   herald_recipients instead (list_rcpt). The list of attached days is
 *   read again at most once a second (DAYS_TTL_MS).
 * - q: herald_message_content.subject_words holds the subject's words as
 *   mc_q_words defines them (computed here, not by a PostgreSQL parser,
 *   whose rules depend on the database's locale), space-separated;
 *   subject_tsv, stored, is array_to_tsvector(string_to_array(
 *   subject_words, ' ')), with a GIN index: it answers "every word of q
 *   is a prefix of a word" as a tsquery 'w1':* & 'w2':* built from the
 *   words as they are (no dictionary). A day's query reads the newest
 *   records first and the GIN index only for rarer words (enum lq).
 * - Retention drops whole partitions (DETACH PARTITION CONCURRENTLY, then
 *   DROP TABLE: no lock that stops the fleet), deletes the rows of the
 *   partition that straddles the cutoff in chunks, then drops the periods
 *   of herald_recipients wholly before the cutoff, and clears bodies in
 *   chunks from the day's mark in herald_bodies_cleared on.
 */
#include "mc.h"
#include "clock.h"
#include "pqlib.h"
#include "util.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PG_SCHEMA_VERSION 3
#define PG_MIN_SERVER 140000 /* DETACH PARTITION CONCURRENTLY */
#define DAY_MS 86400000LL
#define IDCACHE_SLOTS 16384 /* id -> created_at of recent writes */
/* Days with their own prepared statements. A worker uses one or two; a
 * reader's gets go to any day (a support search, an inbox): with 4, a
 * one-record get of bench-api, spread over 30 days, prepared its
 * statement (parse and plan, then DEALLOCATE another) nine times in ten,
 * most of the server's work for it. A day's statements cost the server a
 * few plans' memory, and only once used. */
#define DAY_SLOTS 64
#define LSTMT_SLOTS 256 /* mc_list's statements prepared per connection */
#define LEXEME_MAX 2046 /* PostgreSQL's limit on a tsvector lexeme */
#define PARAMS_MAX 40
/* Advisory lock keys: (LOCK_NS, what). */
#define LOCK_NS 1212501060 /* "HERD" */
#define LOCK_SCHEMA 1
#define LOCK_PARTITIONS 2
#define LOCK_PURGE 3

static const char *const part_tables[] = {"herald_messages",
                                          "herald_message_content"};
#define NPART_TABLES (sizeof part_tables / sizeof part_tables[0])

/* Version 1. Text keys compare as bytes (COLLATE "C"): the order of ids
 * in a page, and the cursor's comparison, must not depend on the
 * database's locale (they are the SQLite store's too). */
static const char schema_v1_sql[] =
    "CREATE TABLE herald_schema ("
    " singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),"
    " version integer NOT NULL,"
    " migrated_at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE herald_message_ids ("
    " id text COLLATE \"C\" PRIMARY KEY,"
    " created_at bigint NOT NULL);"
    "CREATE INDEX herald_message_ids_created ON herald_message_ids"
    " (created_at);"
    "CREATE TABLE herald_messages ("
    " created_at bigint NOT NULL,"
    " id text COLLATE \"C\" NOT NULL,"
    " org text COLLATE \"C\" NOT NULL,"
    " status text COLLATE \"C\" NOT NULL,"
    " path text COLLATE \"C\","
    " path_reason text,"
    " sender text,"
    " reply_to text,"
    " attempts integer NOT NULL DEFAULT 0,"
    " updated_at bigint NOT NULL,"
    " sent_at bigint,"
    " next_attempt_at bigint,"
    " last_error text,"
    " smtp_reply text,"
    " recipients_json text,"
    " PRIMARY KEY (created_at, id)) PARTITION BY RANGE (created_at);"
    "CREATE INDEX herald_messages_status ON herald_messages"
    " (status, created_at, id) WHERE status <> 'sent';"
    "CREATE INDEX herald_messages_org_status ON herald_messages"
    " (org, status, created_at, id) WHERE status <> 'sent';"
    "CREATE INDEX herald_messages_org_path ON herald_messages"
    " (org, path, created_at, id);"
    "CREATE TABLE herald_message_content ("
    " created_at bigint NOT NULL,"
    " id text COLLATE \"C\" NOT NULL,"
    " org text COLLATE \"C\" NOT NULL,"
    " account text COLLATE \"C\" NOT NULL,"
    " type text COLLATE \"C\" NOT NULL,"
    " from_lc text COLLATE \"C\" NOT NULL,"
    " subject_words text,"
    " subject_tsv tsvector GENERATED ALWAYS AS"
    " (array_to_tsvector(string_to_array(subject_words, ' '))) STORED,"
    " from_addr text NOT NULL,"
    " from_name text,"
    " to_json text,"
    " cc_json text,"
    " bcc_json text,"
    " subject text,"
    " text text,"
    " html text,"
    " attachments_json text,"
    " meta_json text,"
    " resend_of text,"
    " body_expired boolean NOT NULL DEFAULT false,"
    " PRIMARY KEY (created_at, id)) PARTITION BY RANGE (created_at);"
    "CREATE INDEX herald_message_content_bodies ON herald_message_content"
    " (created_at) WHERE NOT body_expired;"
    "CREATE INDEX herald_message_content_org ON herald_message_content"
    " (org, created_at, id);"
    "CREATE INDEX herald_message_content_account ON herald_message_content"
    " (account, created_at, id);"
    "CREATE INDEX herald_message_content_from ON herald_message_content"
    " (from_lc, created_at, id);"
    "CREATE INDEX herald_message_content_org_type ON herald_message_content"
    " (org, type, created_at, id);"
    "CREATE INDEX herald_message_content_subject ON herald_message_content"
    " USING gin (subject_tsv);"
    "CREATE TABLE herald_message_rcpt ("
    " email text COLLATE \"C\" NOT NULL,"
    " created_at bigint NOT NULL,"
    " id text COLLATE \"C\" NOT NULL,"
    " PRIMARY KEY (email, created_at, id)) PARTITION BY RANGE (created_at);";

/*
 * Version 2: the recipients' rows in herald_recipients, partitioned by
 * periods of RCPT_DAYS days, not by day (herald_message_rcpt). A query by
 * recipient read each day's partition in turn (30 index descents and 30
 * statements' start for an address over 30 days: make bench-api's `to=`
 * missed its target); one statement over four or five periods finds an
 * address's records newest first. Retention drops a period when all of
 * it is past the cutoff; until then the rows of records already purged
 * stay (a listing skips them), at most RCPT_DAYS days' worth. The rows
 * move over in the upgrade's transaction; any partition of the old table
 * left detached by an interrupted purge goes too. Workers of version 1
 * must be stopped first: they write to the old table (and refuse a
 * store of version 2 when they start).
 */
#define RCPT_DAYS 8
#define RCPT_TABLE "herald_recipients"
/* the migration below spells RCPT_DAYS days in ms: 691200000 */
_Static_assert(RCPT_DAYS * 86400000LL == 691200000LL, "RCPT_DAYS");
static const char schema_v2_sql[] =
    "CREATE TABLE herald_recipients ("
    " email text COLLATE \"C\" NOT NULL,"
    " created_at bigint NOT NULL,"
    " id text COLLATE \"C\" NOT NULL,"
    " PRIMARY KEY (email, created_at, id)) PARTITION BY RANGE (created_at);"
    "DO $herald$ DECLARE p bigint; ms bigint := 691200000; BEGIN"
    " FOR p IN SELECT DISTINCT floor(created_at::numeric / ms)::bigint"
    " FROM herald_message_rcpt LOOP"
    " EXECUTE format('CREATE TABLE %I PARTITION OF herald_recipients"
    " FOR VALUES FROM (%s) TO (%s)', 'herald_recipients_p' ||"
    " to_char(to_timestamp(p * ms / 1000) AT TIME ZONE 'UTC', 'YYYYMMDD'),"
    " p * ms, (p + 1) * ms); END LOOP; END $herald$;"
    "INSERT INTO herald_recipients (email, created_at, id)"
    " SELECT email, created_at, id FROM herald_message_rcpt;"
    "DROP TABLE herald_message_rcpt;"
    "DO $herald$ DECLARE t text; BEGIN FOR t IN SELECT relname FROM pg_class"
    " WHERE relkind = 'r' AND relnamespace = current_schema()::regnamespace"
    " AND relname ~ '^herald_message_rcpt_p[0-9]{8}$' LOOP"
    " EXECUTE format('DROP TABLE %I', t); END LOOP; END $herald$;";

/*
 * Version 3: two index entries fewer per message written (make bench's
 * PostgreSQL server spent ~40 % of its time inserting into btrees, 15
 * entries per message). herald_message_ids loses its index on
 * created_at: retention deletes a day's registry entries through that
 * day's rows before dropping its partitions (drop_day), and entries a
 * version 2 purge left behind (below the oldest record) go here, while
 * the index still finds them. herald_messages_org_path becomes partial
 * (WHERE path IS NOT NULL): a record is inserted before it is routed, so
 * its insert no longer writes a null path into it, and a filter by path
 * (m.path = $n) implies the predicate. Rebuilding it locks writes to
 * herald_messages for the time it takes on a large store: stop workers
 * of version 2 first (they refuse a store of version 3 anyway).
 */
static const char schema_v3_sql[] =
    "DELETE FROM herald_message_ids WHERE created_at < (SELECT"
    " coalesce(min(created_at), 9223372036854775807) FROM herald_messages);"
    "DROP INDEX IF EXISTS herald_message_ids_created;"
    "DROP INDEX IF EXISTS herald_messages_org_path;"
    "CREATE INDEX herald_messages_org_path ON herald_messages"
    " (org, path, created_at, id) WHERE path IS NOT NULL;"
    "CREATE TABLE herald_bodies_cleared ("
    " day integer PRIMARY KEY,"
    " before bigint NOT NULL);"
    "DROP INDEX IF EXISTS herald_message_content_bodies;";

/* The upgrades, migrations[v] taking version v to v + 1 (a new store
 * goes through them all). */
static const char *const migrations[PG_SCHEMA_VERSION] = {
    [0] = schema_v1_sql,
    [1] = schema_v2_sql,
    [2] = schema_v3_sql,
};

/* Column order of every full-record SELECT (row_record). */
#define COLS_WITH(bodies)                                                      \
    "m.id, m.org, c.account, c.type, m.status, m.path, m.path_reason, "        \
    "c.from_addr, c.from_name, m.sender, m.reply_to, c.to_json, c.cc_json, "   \
    "c.bcc_json, c.subject, " bodies ", c.attachments_json, "                  \
    "c.meta_json, m.recipients_json, m.created_at, m.updated_at, m.sent_at, "  \
    "m.next_attempt_at, m.attempts, m.last_error, m.smtp_reply, "              \
    "c.resend_of, c.body_expired"
#define COLS COLS_WITH("c.text, c.html")
/* the same without the bodies (a listing that does not show them) */
#define COLS_NO_BODIES COLS_WITH("NULL, NULL")

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

#define JOINED                                                                 \
    " FROM herald_messages m JOIN herald_message_content c"                    \
    " ON c.created_at = m.created_at AND c.id = m.id"

/* The prepared statements, made on first use of a connection. */
enum stmt {
    S_REGISTRY = 0,
    S_INSERT, /* these name the day's partitions (day_exec) */
    S_UPDATE,
    S_UPDATE_CONTENT,
    S_GET,
    S_INSERT_MANY, /* and these two */
    S_UPDATE_MANY,
    S_DAYS,
    S_NSTMT
};

static const struct {
    const char *name, *sql;
} stmts[S_NSTMT] = {
    [S_INSERT] =
        {"insert",
         "WITH reg AS (INSERT INTO herald_message_ids (id, created_at)"
         " VALUES ($1::text, $2::bigint) ON CONFLICT (id) DO NOTHING"
         " RETURNING id),"
         " m AS (INSERT INTO herald_messages (created_at, id, org, status,"
         " path, path_reason, sender, reply_to, attempts, updated_at,"
         " sent_at, next_attempt_at, last_error, smtp_reply,"
         " recipients_json)"
         " SELECT $2::bigint, reg.id, $3::text, $8::text, $9::text,"
         " $10::text, $11::text, $12::text, $13::integer, $14::bigint,"
         " $15::bigint, $16::bigint, $17::text, $18::text, $19::text"
         " FROM reg),"
         " c AS (INSERT INTO herald_message_content (created_at, id, org,"
         " account, type, from_lc, subject_words, from_addr, from_name,"
         " to_json, cc_json, bcc_json, subject, text, html,"
         " attachments_json, meta_json, resend_of, body_expired)"
         " SELECT $2::bigint, reg.id, $3::text, $4::text, $5::text,"
         " $6::text, $7::text, $20::text, $21::text, $22::text,"
         " $23::text, $24::text, $25::text, $26::text, $27::text, $28::text,"
         " $29::text, $30::text, $31::boolean FROM reg),"
         " r AS (INSERT INTO herald_recipients (email, created_at, id)"
         " SELECT e, $2::bigint, reg.id FROM reg, unnest($32::text[]) AS e"
         " ON CONFLICT DO NOTHING)"
         " SELECT count(*) FROM reg"},
    /* S_INSERT for many records of one day: $k is the array of S_INSERT's
     * $k over the records ($32: of their recipients' array literals);
     * the ids inserted come back. One statement for a batch's inserts
     * spares the server the executor's start and the protocol's round of
     * each (a third of its time in the worker's writes). */
    [S_INSERT_MANY] =
        {"insert_many",
         "WITH v AS (SELECT * FROM unnest($1::text[], $2::bigint[],"
         " $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],"
         " $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],"
         " $13::integer[], $14::bigint[], $15::bigint[], $16::bigint[],"
         " $17::text[], $18::text[], $19::text[], $20::text[], $21::text[],"
         " $22::text[], $23::text[], $24::text[], $25::text[], $26::text[],"
         " $27::text[], $28::text[], $29::text[], $30::text[],"
         " $31::boolean[], $32::text[]) AS v(id, created_at, org, account,"
         " type, from_lc, subject_words, status, path, path_reason, sender,"
         " reply_to, attempts, updated_at, sent_at, next_attempt_at,"
         " last_error, smtp_reply, recipients_json, from_addr, from_name,"
         " to_json, cc_json, bcc_json, subject, text, html,"
         " attachments_json, meta_json, resend_of, body_expired, rcpt)),"
         " reg AS (INSERT INTO herald_message_ids (id, created_at)"
         " SELECT id, created_at FROM v ON CONFLICT (id) DO NOTHING"
         " RETURNING id),"
         " n AS (SELECT v.* FROM v JOIN reg ON reg.id = v.id COLLATE \"C\"),"
         " m AS (INSERT INTO herald_messages (created_at, id, org, status,"
         " path, path_reason, sender, reply_to, attempts, updated_at,"
         " sent_at, next_attempt_at, last_error, smtp_reply,"
         " recipients_json)"
         " SELECT created_at, id, org, status, path, path_reason, sender,"
         " reply_to, attempts, updated_at, sent_at, next_attempt_at,"
         " last_error, smtp_reply, recipients_json FROM n),"
         " c AS (INSERT INTO herald_message_content (created_at, id, org,"
         " account, type, from_lc, subject_words, from_addr, from_name,"
         " to_json, cc_json, bcc_json, subject, text, html,"
         " attachments_json, meta_json, resend_of, body_expired)"
         " SELECT created_at, id, org, account, type, from_lc,"
         " subject_words, from_addr, from_name, to_json, cc_json, bcc_json,"
         " subject, text, html, attachments_json, meta_json, resend_of,"
         " body_expired FROM n),"
         " r AS (INSERT INTO herald_recipients (email, created_at, id)"
         " SELECT e, n.created_at, n.id FROM n, unnest(n.rcpt::text[]) AS e"
         " ON CONFLICT DO NOTHING)"
         " SELECT id FROM reg"},
    /* S_UPDATE for many records of one day, by arrays as S_INSERT_MANY;
     * the ids updated come back. */
    [S_UPDATE_MANY] =
        {"update_many",
         "UPDATE herald_messages m SET status = v.status,"
         " path = CASE WHEN v.path IS NULL THEN m.path"
         "  ELSE NULLIF(v.path, '') END,"
         " path_reason = CASE WHEN v.path_reason IS NULL THEN m.path_reason"
         "  ELSE NULLIF(v.path_reason, '') END,"
         " sender = CASE WHEN v.sender IS NULL THEN m.sender"
         "  ELSE NULLIF(v.sender, '') END,"
         " reply_to = CASE WHEN v.reply_to IS NULL THEN m.reply_to"
         "  ELSE NULLIF(v.reply_to, '') END,"
         " attempts = m.attempts + v.attempts_add,"
         " sent_at = CASE WHEN v.sent_at < 0 THEN m.sent_at"
         "  ELSE NULLIF(v.sent_at, 0) END,"
         " next_attempt_at = CASE WHEN v.next_attempt_at < 0"
         "  THEN m.next_attempt_at ELSE NULLIF(v.next_attempt_at, 0) END,"
         " last_error = CASE WHEN v.last_error IS NULL THEN m.last_error"
         "  ELSE NULLIF(v.last_error, '') END,"
         " smtp_reply = CASE WHEN v.smtp_reply IS NULL THEN m.smtp_reply"
         "  ELSE NULLIF(v.smtp_reply, '') END,"
         " recipients_json = CASE WHEN v.recipients_json IS NULL"
         "  THEN m.recipients_json ELSE NULLIF(v.recipients_json, '') END,"
         " updated_at = v.updated_at"
         " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
         " $5::text[], $6::integer[], $7::bigint[], $8::bigint[],"
         " $9::text[], $10::text[], $11::text[], $12::bigint[],"
         " $13::bigint[], $14::text[]) AS v(status, path, path_reason,"
         " sender, reply_to, attempts_add, sent_at, next_attempt_at,"
         " last_error, smtp_reply, recipients_json, updated_at, at, id)"
         " WHERE m.created_at = v.at AND m.id = v.id COLLATE \"C\""
         " RETURNING m.id"},
    /* the days whose partitions are attached (those of herald_messages) */
    [S_DAYS] = {"herald_days",
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c"
                " ON c.oid = i.inhrelid WHERE i.inhparent ="
                " 'herald_messages'::regclass"},
    [S_REGISTRY] = {"herald_registry",
                    "SELECT created_at FROM herald_message_ids WHERE id = $1"},
    /* NULL string: keep; "": clear; a negative time: keep; 0: clear. */
    [S_UPDATE] =
        {"update",
         "UPDATE herald_messages SET status = $1::text,"
         " path = CASE WHEN $2::text IS NULL THEN path"
         "  ELSE NULLIF($2::text, '') END,"
         " path_reason = CASE WHEN $3::text IS NULL THEN path_reason"
         "  ELSE NULLIF($3::text, '') END,"
         " sender = CASE WHEN $4::text IS NULL THEN sender"
         "  ELSE NULLIF($4::text, '') END,"
         " reply_to = CASE WHEN $5::text IS NULL THEN reply_to"
         "  ELSE NULLIF($5::text, '') END,"
         " attempts = attempts + $6::integer,"
         " sent_at = CASE WHEN $7::bigint < 0 THEN sent_at"
         "  ELSE NULLIF($7::bigint, 0) END,"
         " next_attempt_at = CASE WHEN $8::bigint < 0 THEN next_attempt_at"
         "  ELSE NULLIF($8::bigint, 0) END,"
         " last_error = CASE WHEN $9::text IS NULL THEN last_error"
         "  ELSE NULLIF($9::text, '') END,"
         " smtp_reply = CASE WHEN $10::text IS NULL THEN smtp_reply"
         "  ELSE NULLIF($10::text, '') END,"
         " recipients_json = CASE WHEN $11::text IS NULL THEN recipients_json"
         "  ELSE NULLIF($11::text, '') END,"
         " updated_at = $12::bigint"
         " WHERE created_at = $13::bigint AND id = $14::text"},
    /* The same, and the content as sent (subject, text, html). */
    [S_UPDATE_CONTENT] =
        {"update_content",
         "WITH u AS (UPDATE herald_messages SET status = $1::text,"
         " path = CASE WHEN $2::text IS NULL THEN path"
         "  ELSE NULLIF($2::text, '') END,"
         " path_reason = CASE WHEN $3::text IS NULL THEN path_reason"
         "  ELSE NULLIF($3::text, '') END,"
         " sender = CASE WHEN $4::text IS NULL THEN sender"
         "  ELSE NULLIF($4::text, '') END,"
         " reply_to = CASE WHEN $5::text IS NULL THEN reply_to"
         "  ELSE NULLIF($5::text, '') END,"
         " attempts = attempts + $6::integer,"
         " sent_at = CASE WHEN $7::bigint < 0 THEN sent_at"
         "  ELSE NULLIF($7::bigint, 0) END,"
         " next_attempt_at = CASE WHEN $8::bigint < 0 THEN next_attempt_at"
         "  ELSE NULLIF($8::bigint, 0) END,"
         " last_error = CASE WHEN $9::text IS NULL THEN last_error"
         "  ELSE NULLIF($9::text, '') END,"
         " smtp_reply = CASE WHEN $10::text IS NULL THEN smtp_reply"
         "  ELSE NULLIF($10::text, '') END,"
         " recipients_json = CASE WHEN $11::text IS NULL THEN recipients_json"
         "  ELSE NULLIF($11::text, '') END,"
         " updated_at = $12::bigint"
         " WHERE created_at = $13::bigint AND id = $14::text RETURNING 1),"
         " c AS (UPDATE herald_message_content SET subject_words = $15::text,"
         " subject = $16::text, text = $17::text, html = $18::text"
         " WHERE created_at = $13::bigint AND id = $14::text)"
         " SELECT count(*) FROM u"},
    [S_GET] = {"get", "SELECT " COLS JOINED " WHERE m.created_at = $1::bigint"
                      " AND c.created_at = $1::bigint"
                      " AND m.id = $2::text"},
};

struct idslot {
    char *id;
    int64_t at;
};

struct pgs {
    PGconn *conn;
    char *where; /* "database D on H", for messages */
    int in_batch;
    int batch_lost;                /* a write failed: rolled back already */
    char lost_why[HERR_MSG_MAX];   /* what ended it */
    int prepared[S_NSTMT];         /* on this connection */
    int schema_before, schema_now; /* the version found, and now */
    int32_t *days;                 /* partitions known to exist, sorted */
    size_t ndays, capdays;
    int32_t *pending; /* created inside the open batch */
    size_t npending, cappending;
    struct idslot ids[IDCACHE_SLOTS];
    /* days whose partitions the hot statements name directly, prepared
     * on this connection (a bit per enum stmt), least recently used
     * first out */
    struct dayslot {
        int32_t day;
        unsigned prepared;
        unsigned long long used; /* 0: free */
    } dayslots[DAY_SLOTS];
    unsigned long long uses;
    /* mc_list's statements on single days */
    struct lstmt {
        char *sql;
        uint64_t hash;
        unsigned long long used; /* 0: free */
    } lst[LSTMT_SLOTS];
    /* deferred writes sent in pipeline mode, results not read yet */
    struct pend **pend;
    size_t npend, cappend;
    /* deferred inserts, updates of one day not sent yet */
    struct pend *grp, *ugrp;
    int piped;          /* the connection is in pipeline mode */
    int pipe_unflushed; /* sent since the last PQflush */
    int reads_mode;     /* day_reads' settings in force (0: the usual) */
    /* attached_days' last answer, and when (monotonic ms) */
    int32_t *adays;
    size_t nadays;
    int64_t adays_ms;
};

static void pipe_settle(struct pgs *s);
static void lstmt_reset(struct pgs *s);

/* ---- small helpers ---- */

static int64_t
day_of(int64_t ms)
{
    return ms >= 0 ? ms / DAY_MS : -((-ms + DAY_MS - 1) / DAY_MS);
}

/* "YYYYMMDD" of a day number. */
static void
day_name(int32_t day, char out[16])
{
    time_t t = (time_t)day * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 16, "%04u%02u%02u", (unsigned)(tm.tm_year + 1900) % 10000u,
             (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u);
}

/* The first day of the period of herald_recipients that holds `day`. */
static int32_t
rcpt_period(int32_t day)
{
    int32_t r = day % RCPT_DAYS;
    return day - (r < 0 ? r + RCPT_DAYS : r);
}

/* The day of a partition's name, "<table>_pYYYYMMDD"; -1 if not one. */
static int
day_parse(const char *name, const char *table, int32_t *day)
{
    size_t tl = strlen(table);
    if (strncmp(name, table, tl) != 0 || strncmp(name + tl, "_p", 2) != 0)
        return -1;
    const char *d = name + tl + 2;
    if (strlen(d) != 8 || strspn(d, "0123456789") != 8)
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 +
                 (d[3] - '0') - 1900;
    tm.tm_mon = (d[4] - '0') * 10 + (d[5] - '0') - 1;
    tm.tm_mday = (d[6] - '0') * 10 + (d[7] - '0');
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *day = (int32_t)(t / 86400);
    return 0;
}

/* `s` when it is valid UTF-8; else a new copy in *own with each byte that
 * is not part of a valid sequence as U+FFFD (PostgreSQL refuses text that
 * is not UTF-8; an SMTP reply may carry anything). */
static const char *
utf8_clean(const char *s, char **own)
{
    *own = NULL;
    if (s == NULL)
        return NULL;
    size_t len = strlen(s);
    if (utf8_check((const unsigned char *)s, len) == len)
        return s;
    struct buf b;
    buf_init(&b, 0);
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t n = utf8_decode(p + i, len - i, &cp);
        if (n) {
            buf_append(&b, p + i, n);
            i += n;
        } else {
            buf_puts(&b, "\xEF\xBF\xBD");
            i++;
        }
    }
    *own = buf_take(&b, NULL);
    return *own;
}

/* The words of a subject as mc_q_words reads q (runs of ASCII letters
 * and digits and of non-ASCII bytes, ASCII lowercased), space-separated;
 * a word is cut (on a character boundary) at LEXEME_MAX bytes. NULL for
 * no subject. New string. */
static char *
subject_words(const char *subject)
{
    if (subject == NULL)
        return NULL;
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "");
    const char *p = subject, *word;
    size_t len;
    while ((word = mc_word_next(&p, &len)) != NULL) {
        const unsigned char *w = (const unsigned char *)word;
        if (len > LEXEME_MAX) {
            len = LEXEME_MAX;
            while (len > 0 && (w[len] & 0xC0) == 0x80)
                len--;
        }
        if (b.len)
            buf_puts(&b, " ");
        for (size_t i = 0; i < len; i++) {
            char c = (char)w[i];
            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            buf_append(&b, &c, 1);
        }
    }
    return buf_take(&b, NULL);
}

/* A text[] literal of `n` strings (quoted, \ and " escaped). */
static char *
text_array(const char *const *v, size_t n)
{
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "{");
    for (size_t i = 0; i < n; i++) {
        buf_puts(&b, i ? ",\"" : "\"");
        for (const char *p = v[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                buf_puts(&b, "\\");
            buf_append(&b, p, 1);
        }
        buf_puts(&b, "\"");
    }
    buf_puts(&b, "}");
    return buf_take(&b, NULL);
}

/* Statement parameters: text values (NULL = SQL NULL). */
struct params {
    int n;
    const char *v[PARAMS_MAX];
    char *own[PARAMS_MAX];
    char num[PARAMS_MAX][24];
    /* with `binary`: each parameter's length and format (1: binary) */
    int binary;
    int len[PARAMS_MAX], fmt[PARAMS_MAX];
};

static void
p_init(struct params *p)
{
    p->n = 0;
    p->binary = 0;
}

static void
p_free(struct params *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->own[i]);
    p->n = 0;
}

/* A string, made valid UTF-8. */
static void
p_str(struct params *p, const char *s)
{
    p->v[p->n] = utf8_clean(s, &p->own[p->n]);
    p->n++;
}

/* A string the parameters take (freed with them). */
static void
p_take(struct params *p, char *s)
{
    p->own[p->n] = s;
    p->v[p->n] = s;
    p->n++;
}

static void
p_i64(struct params *p, int64_t v)
{
    snprintf(p->num[p->n], sizeof p->num[p->n], "%lld", (long long)v);
    p->own[p->n] = NULL;
    p->v[p->n] = p->num[p->n];
    p->n++;
}

/* A time: NULL when not set. */
static void
p_time(struct params *p, int64_t ms)
{
    if (ms > 0) {
        p_i64(p, ms);
    } else {
        p->own[p->n] = NULL;
        p->v[p->n++] = NULL;
    }
}

/* ---- errors, statements ---- */

/* The first line of libpq's or the server's message. */
static void
pg_message(struct pgs *s, const PGresult *res, char *out, size_t outlen)
{
    const char *m =
        res ? pqlib.PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (m == NULL || *m == '\0')
        m = pqlib.PQerrorMessage(s->conn);
    if (m == NULL || *m == '\0')
        m = "unknown error";
    size_t n = strcspn(m, "\n");
    snprintf(out, outlen, "%.*s", (int)n, m);
}

/* Fills `e` from a failed statement. Inside a batch the transaction is
 * now aborted: it is rolled back and the batch is marked lost. */
static int
pg_fail(struct pgs *s, const PGresult *res, struct herr *e, const char *what)
{
    char msg[HERR_MSG_MAX];
    pg_message(s, res, msg, sizeof msg);
    if (s->in_batch && !s->batch_lost) {
        s->batch_lost = 1;
        snprintf(s->lost_why, sizeof s->lost_why, "%.60s: %.180s", what, msg);
        pqlib.PQclear(pqlib.PQexec(s->conn, "ROLLBACK"));
        s->npending = 0;
    }
    return herr_set(e, HERR_STORE, NULL, "%s: %s (%s)", what, msg, s->where);
}

static int
ok_status(const PGresult *res)
{
    ExecStatusType st = pqlib.PQresultStatus(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* Runs `sql` (no parameters, any number of statements). */
static int
run(struct pgs *s, const char *sql, struct herr *e, const char *what)
{
    PGresult *res = pqlib.PQexec(s->conn, sql);
    int rc = ok_status(res) ? 0 : pg_fail(s, res, e, what);
    pqlib.PQclear(res);
    return rc;
}

/* Runs one statement with parameters; its result, or NULL with `e`
 * filled. */
static PGresult *
query(struct pgs *s, const char *sql, const struct params *p, struct herr *e,
      const char *what)
{
    PGresult *res = pqlib.PQexecParams(s->conn, sql, p ? p->n : 0, NULL,
                                       p ? p->v : NULL, NULL, NULL, 0);
    if (ok_status(res))
        return res;
    pg_fail(s, res, e, what);
    pqlib.PQclear(res);
    return NULL;
}

/* Runs prepared statement `k` (preparing it on first use): its result,
 * whatever its status, or NULL when it could not be prepared. */
static PGresult *
exec_prepared(struct pgs *s, enum stmt k, const struct params *p,
              struct herr *e, const char *what)
{
    if (!s->prepared[k]) {
        PGresult *res =
            pqlib.PQprepare(s->conn, stmts[k].name, stmts[k].sql, 0, NULL);
        if (!ok_status(res)) {
            pg_fail(s, res, e, what);
            pqlib.PQclear(res);
            return NULL;
        }
        pqlib.PQclear(res);
        s->prepared[k] = 1;
    }
    return pqlib.PQexecPrepared(s->conn, stmts[k].name, p->n, p->v, NULL, NULL,
                                0);
}

static PGresult *
query_prepared(struct pgs *s, enum stmt k, const struct params *p,
               struct herr *e, const char *what)
{
    PGresult *res = exec_prepared(s, k, p, e, what);
    if (res == NULL || ok_status(res))
        return res;
    pg_fail(s, res, e, what);
    pqlib.PQclear(res);
    return NULL;
}

static int64_t
val_i64(const PGresult *res, int row, int col)
{
    if (pqlib.PQgetisnull(res, row, col))
        return 0;
    return strtoll(pqlib.PQgetvalue(res, row, col), NULL, 10);
}

/* The SQLSTATE of a failed result ("" when none). */
static const char *
sqlstate(const PGresult *res)
{
    const char *c =
        res ? pqlib.PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return c ? c : "";
}

/* ---- the id cache ---- */

static struct idslot *
id_slot(struct pgs *s, const char *id)
{
    return &s->ids[util_hash(id) % IDCACHE_SLOTS];
}

static int
id_get(struct pgs *s, const char *id, int64_t *at)
{
    struct idslot *sl = id_slot(s, id);
    if (sl->id == NULL || strcmp(sl->id, id) != 0)
        return 0;
    *at = sl->at;
    return 1;
}

static void
id_put(struct pgs *s, const char *id, int64_t at)
{
    struct idslot *sl = id_slot(s, id);
    if (sl->id == NULL || strcmp(sl->id, id) != 0) {
        free(sl->id);
        sl->id = xstrdup(id);
    }
    sl->at = at;
}

static void
id_forget(struct pgs *s, const char *id)
{
    struct idslot *sl = id_slot(s, id);
    if (sl->id && strcmp(sl->id, id) == 0) {
        free(sl->id);
        sl->id = NULL;
    }
}

/* The created_at of record `id` from the registry: 1 found, 0 not, or
 * HERR_STORE. */
static int
registry_at(struct pgs *s, const char *id, int64_t *at, struct herr *e)
{
    struct params p;
    p_init(&p);
    p_str(&p, id);
    PGresult *res =
        query_prepared(s, S_REGISTRY, &p, e, "looking up a message");
    p_free(&p);
    if (res == NULL)
        return HERR_STORE;
    int found = pqlib.PQntuples(res) == 1;
    if (found) {
        *at = val_i64(res, 0, 0);
        id_put(s, id, *at);
    }
    pqlib.PQclear(res);
    return found;
}

/* ---- partitions ---- */

static int
days_find(const int32_t *v, size_t n, int32_t day, size_t *pos)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v[mid] < day)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return lo < n && v[lo] == day;
}

static void
days_add(int32_t **v, size_t *n, size_t *cap, int32_t day)
{
    size_t pos;
    if (days_find(*v, *n, day, &pos))
        return;
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *v = xrealloc(*v, *cap * sizeof **v);
    }
    memmove(*v + pos + 1, *v + pos, (*n - pos) * sizeof **v);
    (*v)[pos] = day;
    (*n)++;
}

static void
days_remove(int32_t *v, size_t *n, int32_t day)
{
    size_t pos;
    if (!days_find(v, *n, day, &pos))
        return;
    memmove(v + pos, v + pos + 1, (*n - pos - 1) * sizeof *v);
    (*n)--;
}

/* The handle's days changed: mc_list asks for the attached ones again. */
static void
days_known_add(struct pgs *s, int32_t day)
{
    size_t pos;
    if (days_find(s->days, s->ndays, day, &pos))
        return;
    days_add(&s->days, &s->ndays, &s->capdays, day);
    s->adays_ms = INT64_MIN / 2;
}

static void
days_known_remove(struct pgs *s, int32_t day)
{
    size_t pos;
    if (!days_find(s->days, s->ndays, day, &pos))
        return;
    days_remove(s->days, &s->ndays, day);
    s->adays_ms = INT64_MIN / 2;
}

static int
day_known(struct pgs *s, int32_t day)
{
    size_t pos;
    return days_find(s->days, s->ndays, day, &pos) ||
           (s->in_batch && days_find(s->pending, s->npending, day, &pos));
}

/* Appends to a DO block: table t's partition <t>_p<dn> for [lo, hi),
 * created (LIKE t, `with` its storage options) and attached unless it
 * is. */
static void
part_sql(struct buf *b, const char *t, const char *dn, const char *with,
         long long lo, long long hi)
{
    buf_printf(b,
               " IF to_regclass('%s_p%s') IS NULL THEN"
               " CREATE TABLE %s_p%s (LIKE %s INCLUDING DEFAULTS"
               " INCLUDING CONSTRAINTS INCLUDING GENERATED)%s; END IF;"
               " IF NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid ="
               " '%s_p%s'::regclass) THEN ALTER TABLE %s ATTACH PARTITION"
               " %s_p%s FOR VALUES FROM (%lld) TO (%lld); END IF;",
               t, dn, t, dn, t, with, t, dn, t, t, dn, lo, hi);
}

/*
 * Makes sure the tables have their partition for `day` (and
 * herald_recipients the one of its period): one DO block (one round trip)
 * under the partition lock, so that processes doing it at once do it
 * once. CREATE TABLE ... LIKE + ATTACH PARTITION
 * rather than CREATE TABLE ... PARTITION OF: attaching locks the parent
 * SHARE UPDATE EXCLUSIVE, which readers and writers do not wait for.
 * Inside a batch it is part of the batch's transaction (and its lock
 * held to the commit); outside one, its own.
 */
static int
ensure_day(struct pgs *s, int32_t day, struct herr *e)
{
    if (day_known(s, day))
        return 0;
    char dn[16];
    day_name(day, dn);
    long long lo = (long long)day * DAY_MS, hi = lo + DAY_MS;
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b,
               "DO $herald$ BEGIN PERFORM pg_advisory_xact_lock(%d, %d);"
               " SET LOCAL lock_timeout = '30s';",
               LOCK_NS, LOCK_PARTITIONS);
    for (size_t i = 0; i < NPART_TABLES; i++)
        part_sql(&b, part_tables[i], dn,
                 i == 0 ? " WITH (fillfactor = 90)" : "", lo, hi);
    /* and the period of herald_recipients that holds the day */
    int32_t period = rcpt_period(day);
    char pn[16];
    day_name(period, pn);
    long long plo = (long long)period * DAY_MS;
    part_sql(&b, RCPT_TABLE, pn, "", plo, plo + RCPT_DAYS * DAY_MS);
    /* a record written into a past day (an import, a late insert) may
     * have a body retention already passed: the day's bodies are looked
     * at again from its start (purge_bodies) */
    if (day < (int32_t)day_of(clock_now_ms()) - 1)
        buf_printf(&b, " DELETE FROM herald_bodies_cleared WHERE day = %d;",
                   (int)day);
    buf_puts(&b, " END $herald$");
    int rc = run(s, b.p, e, "creating a day's partitions");
    buf_free(&b);
    if (rc)
        return rc;
    if (s->in_batch)
        days_add(&s->pending, &s->npending, &s->cappending, day);
    else
        days_known_add(s, day);
    return 0;
}

/* Today's and tomorrow's partitions, so that the worker's inserts (made
 * now) never create one inside a batch. */
static int
ensure_now(struct pgs *s, struct herr *e)
{
    int32_t today = (int32_t)day_of(clock_now_ms());
    int rc = ensure_day(s, today, e);
    if (rc == 0)
        rc = ensure_day(s, today + 1, e);
    return rc;
}

/* The days that have a table of any of the three (attached, being
 * detached, or left detached by an interrupted purge), oldest first, each
 * once. */
static int
list_days(struct pgs *s, int32_t **out, size_t *n, struct herr *e)
{
    *out = NULL;
    *n = 0;
    PGresult *res = query(
        s,
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace ="
        " current_schema()::regnamespace AND relname ~"
        " '^herald_(messages|message_content)_p[0-9]{8}$'",
        NULL, e, "listing partitions");
    if (res == NULL)
        return HERR_STORE;
    int32_t *v = NULL;
    size_t cap = 0;
    for (int i = 0; i < pqlib.PQntuples(res); i++) {
        const char *name = pqlib.PQgetvalue(res, i, 0);
        int32_t day;
        for (size_t t = 0; t < NPART_TABLES; t++)
            if (day_parse(name, part_tables[t], &day) == 0) {
                days_add(&v, n, &cap, day);
                break;
            }
    }
    pqlib.PQclear(res);
    *out = v;
    return 0;
}

/* `sql` with the partitioned tables replaced by the partitions that hold
 * `day` (the day's own of part_tables, and the period's of
 * herald_recipients); new string. */
static char *
sql_on_day(const char *sql, int32_t day)
{
    char dn[16], pn[16];
    day_name(day, dn);
    day_name(rcpt_period(day), pn);
    struct buf b;
    buf_init(&b, 0);
    for (const char *p = sql; *p;) {
        size_t i;
        for (i = 0; i < NPART_TABLES; i++)
            if (strncmp(p, part_tables[i], strlen(part_tables[i])) == 0)
                break;
        if (i < NPART_TABLES) {
            buf_printf(&b, "%s_p%s", part_tables[i], dn);
            p += strlen(part_tables[i]);
        } else if (strncmp(p, RCPT_TABLE, sizeof RCPT_TABLE - 1) == 0) {
            buf_printf(&b, "%s_p%s", RCPT_TABLE, pn);
            p += sizeof RCPT_TABLE - 1;
        } else {
            buf_append(&b, p, 1);
            p++;
        }
    }
    return buf_take(&b, NULL);
}

static void
dayslot_free(struct pgs *s, struct dayslot *d)
{
    char dn[16], sql[96];
    day_name(d->day, dn);
    for (int k = 0; k < S_NSTMT; k++)
        if (d->prepared & (1u << k)) {
            snprintf(sql, sizeof sql, "DEALLOCATE herald_%s_p%s", stmts[k].name,
                     dn);
            pqlib.PQclear(pqlib.PQexec(s->conn, sql));
        }
    memset(d, 0, sizeof *d);
}

/* The slot of `day` (a day in s->days): found, or taken from the least
 * recently used day (its statements deallocated). */
static struct dayslot *
day_slot(struct pgs *s, int32_t day)
{
    struct dayslot *d = NULL, *lru = &s->dayslots[0];
    for (int i = 0; i < DAY_SLOTS && d == NULL; i++) {
        if (s->dayslots[i].used && s->dayslots[i].day == day)
            d = &s->dayslots[i];
        else if (s->dayslots[i].used < lru->used)
            lru = &s->dayslots[i];
    }
    if (d == NULL) {
        d = lru;
        if (d->used)
            dayslot_free(s, d);
        d->day = day;
    }
    d->used = ++s->uses;
    return d;
}

static void
day_stmt_name(enum stmt k, int32_t day, char name[64])
{
    char dn[16];
    day_name(day, dn);
    snprintf(name, 64, "herald_%s_p%s", stmts[k].name, dn);
}

/* Prepares statement `k` of slot `d` unless it is: NULL when ready, else
 * the failed result. */
static PGresult *
day_prepare(struct pgs *s, struct dayslot *d, enum stmt k)
{
    if (d->prepared & (1u << k))
        return NULL;
    char dn[16], name[64];
    day_name(d->day, dn);
    day_stmt_name(k, d->day, name);
    char *sql = sql_on_day(stmts[k].sql, d->day);
    PGresult *res = pqlib.PQprepare(s->conn, name, sql, 0, NULL);
    free(sql);
    if (!ok_status(res))
        return res;
    pqlib.PQclear(res);
    d->prepared |= 1u << k;
    return NULL;
}

/* A statement on the day's partitions failed (`res`, cleared here): `e`
 * filled (a batch is lost); *gone when the partitions were dropped
 * meanwhile (retention elsewhere), which the handle then forgets. */
static void
day_fail(struct pgs *s, int32_t day, PGresult *res, struct herr *e,
         const char *what, int *gone)
{
    *gone = res && strcmp(sqlstate(res), "42P01") == 0; /* undefined_table */
    pg_fail(s, res, e, what);
    pqlib.PQclear(res);
    if (*gone) {
        days_known_remove(s, day);
        s->adays_ms = INT64_MIN / 2; /* the attached days: asked again */
        for (int i = 0; i < DAY_SLOTS; i++)
            if (s->dayslots[i].used && s->dayslots[i].day == day)
                dayslot_free(s, &s->dayslots[i]);
    }
}

static int day_attached(struct pgs *s, int32_t day);

/*
 * Runs statement `k` on the record's day. A day whose partitions this
 * handle knows of (it made sure of them), or outside a batch one that is
 * attached (a reader's gets of any day), gets its own prepared
 * statements naming them: planned once, where a statement on the
 * partitioned tables is planned at every run (its generic plan, costed
 * over every partition, always loses to a custom one; planning over a
 * month of days was most of a get's cost for herald-api). Other days go
 * through the partitioned tables. Returns
 * the result, or NULL with `e` filled; *gone is set when the day's
 * partitions were dropped meanwhile (retention elsewhere): outside a
 * batch the caller may run it again (through the partitioned tables
 * then).
 */
static PGresult *
day_exec(struct pgs *s, enum stmt k, int32_t day, const struct params *p,
         struct herr *e, const char *what, int *gone)
{
    *gone = 0;
    size_t pos;
    if (!days_find(s->days, s->ndays, day, &pos) &&
        (s->in_batch || !day_attached(s, day)))
        return query(s, stmts[k].sql, p, e, what);
    struct dayslot *d = day_slot(s, day);
    PGresult *res = day_prepare(s, d, k);
    if (res == NULL) {
        char name[64];
        day_stmt_name(k, day, name);
        res = pqlib.PQexecPrepared(s->conn, name, p->n, p->v, NULL, NULL, 0);
    }
    if (ok_status(res))
        return res;
    day_fail(s, day, res, e, what, gone);
    return NULL;
}

/* ---- opening ---- */

static void
notice_ignore(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Session settings, after every (re)connection. */
static int
session_setup(struct pgs *s, struct herr *e)
{
    memset(s->prepared, 0, sizeof s->prepared);
    memset(s->dayslots, 0, sizeof s->dayslots);
    lstmt_reset(s);
    s->reads_mode = 0;
    pqlib.PQsetNoticeProcessor(s->conn, notice_ignore, NULL);
    const char *enc = pqlib.PQparameterStatus(s->conn, "server_encoding");
    if (enc == NULL || (strcmp(enc, "UTF8") && strcmp(enc, "SQL_ASCII")))
        return herr_set(e, HERR_STORE, "HERALD_MC",
                        "%s: the database's encoding is %s; the Message "
                        "Center needs UTF8 (CREATE DATABASE ... ENCODING "
                        "'UTF8')",
                        s->where, enc ? enc : "unknown");
    if (pqlib.PQserverVersion(s->conn) < PG_MIN_SERVER)
        return herr_set(e, HERR_STORE, "HERALD_MC",
                        "%s: PostgreSQL %d is too old; the Message Center "
                        "needs 14 or newer",
                        s->where, pqlib.PQserverVersion(s->conn) / 10000);
    /* the planner's default (a database may set another): statements on
     * the partitioned tables planned with their values, so pruned */
    int rc =
        run(s, "SET plan_cache_mode = auto", e, "setting up the connection");
    /* Bodies of 2 KB and more are compressed: lz4 costs a fraction of
     * pglz's CPU (a server built without lz4 keeps its default) */
    if (rc == 0)
        pqlib.PQclear(
            pqlib.PQexec(s->conn, "SET default_toast_compression = lz4"));
    return rc;
}

/* Creates or upgrades the schema in one transaction under the schema
 * lock: processes that start together wait for the first one. */
static int
ensure_schema(struct pgs *s, struct herr *e)
{
    char sql[128];
    snprintf(sql, sizeof sql, "BEGIN; SELECT pg_advisory_xact_lock(%d, %d)",
             LOCK_NS, LOCK_SCHEMA);
    int rc = run(s, sql, e, "opening the store");
    if (rc)
        return rc;
    PGresult *res = query(s,
                          "SELECT CASE WHEN to_regclass('herald_schema') IS"
                          " NULL THEN 0 ELSE -1 END",
                          NULL, e, "reading the schema version");
    int version = res ? atoi(pqlib.PQgetvalue(res, 0, 0)) : -2;
    pqlib.PQclear(res);
    if (version == -1) {
        res = query(s, "SELECT version FROM herald_schema", NULL, e,
                    "reading the schema version");
        version = res && pqlib.PQntuples(res) == 1
                      ? atoi(pqlib.PQgetvalue(res, 0, 0))
                  : res ? -3
                        : -2;
        pqlib.PQclear(res);
    }
    if (version == -2) {
        rc = HERR_STORE;
    } else if (version == -3) {
        rc = herr_set(e, HERR_STORE, "HERALD_MC",
                      "%s: herald_schema has no version row", s->where);
    } else if (version > PG_SCHEMA_VERSION) {
        rc = herr_set(e, HERR_STORE, "HERALD_MC",
                      "%s has schema version %d, newer than this program's "
                      "%d",
                      s->where, version, PG_SCHEMA_VERSION);
    } else {
        s->schema_before = version;
        for (int v = version; rc == 0 && v < PG_SCHEMA_VERSION; v++) {
            char what[64];
            if (v == 0)
                snprintf(what, sizeof what, "creating the schema");
            else
                snprintf(what, sizeof what,
                         "migrating the store from schema version %d", v);
            rc = run(s, migrations[v], e, what);
        }
        if (rc == 0 && version < PG_SCHEMA_VERSION) {
            if (version == 0)
                snprintf(sql, sizeof sql,
                         "INSERT INTO herald_schema (version) VALUES (%d)",
                         PG_SCHEMA_VERSION);
            else
                snprintf(sql, sizeof sql,
                         "UPDATE herald_schema SET version = %d,"
                         " migrated_at = now()",
                         PG_SCHEMA_VERSION);
            rc = run(s, sql, e, "recording the schema version");
        }
    }
    if (rc == 0)
        rc = run(s, "COMMIT", e, "creating the schema");
    if (rc) {
        pqlib.PQclear(pqlib.PQexec(s->conn, "ROLLBACK"));
        return rc;
    }
    s->schema_now = PG_SCHEMA_VERSION;
    return 0;
}

static void
pg_close(void *state)
{
    struct pgs *s = state;
    if (s == NULL)
        return;
    if (s->conn && s->in_batch)
        pipe_settle(s);
    if (s->conn && s->in_batch && !s->batch_lost &&
        pqlib.PQstatus(s->conn) == CONNECTION_OK)
        pqlib.PQclear(pqlib.PQexec(s->conn, "ROLLBACK"));
    pqlib.PQfinish(s->conn);
    lstmt_reset(s);
    for (size_t i = 0; i < IDCACHE_SLOTS; i++)
        free(s->ids[i].id);
    free(s->days);
    free(s->adays);
    free(s->pending);
    free(s->where);
    free(s);
}

static int
pg_open_url(const char *url, void **state, struct herr *e)
{
    *state = NULL;
    if (pqlib_load(e) != 0)
        return HERR_STORE;
    /* Ours first: the URL's own settings override them (later entries
     * override the expanded URL, earlier ones are overridden by it); the
     * encoding is always ours. */
    const char *keys[] = {"connect_timeout", "application_name", "dbname",
                          "client_encoding", NULL};
    const char *vals[] = {"10", "herald", url, "UTF8", NULL};
    struct pgs *s = xcalloc(1, sizeof *s);
    s->conn = pqlib.PQconnectdbParams(keys, vals, 1);
    if (s->conn == NULL) /* out of memory */
        abort();
    const char *db = pqlib.PQdb(s->conn), *host = pqlib.PQhost(s->conn);
    s->where = xasprintf("database %s on %s", db && *db ? db : "?",
                         host && *host ? host : "localhost");
    int rc;
    if (pqlib.PQstatus(s->conn) != CONNECTION_OK) {
        char msg[HERR_MSG_MAX];
        pg_message(s, NULL, msg, sizeof msg);
        rc = herr_set(e, HERR_STORE, "HERALD_MC", "cannot connect to %s: %s",
                      s->where, msg);
        goto fail;
    }
    if ((rc = session_setup(s, e)) || (rc = ensure_schema(s, e)))
        goto fail;
    /* Best effort: a reader (herald-api, heraldctl) may lack the right to
     * create tables, and needs none; a writer's insert creates its day's
     * partitions itself, and says so when it cannot. */
    (void)ensure_now(s, NULL);
    *state = s;
    return 0;
fail:
    pg_close(s);
    return rc ? rc : HERR_STORE;
}

static int
pg_open(const char *rest, void **state, struct herr *e)
{
    char *url = xasprintf("postgresql://%s", rest);
    int rc = pg_open_url(url, state, e);
    free(url);
    return rc;
}

/* Reconnects a connection that broke (outside a batch). */
static int
ensure_conn(struct pgs *s, struct herr *e)
{
    if (pqlib.PQstatus(s->conn) == CONNECTION_OK)
        return 0;
    pqlib.PQreset(s->conn);
    if (pqlib.PQstatus(s->conn) != CONNECTION_OK) {
        char msg[HERR_MSG_MAX];
        pg_message(s, NULL, msg, sizeof msg);
        return herr_set(e, HERR_STORE, NULL, "reconnecting to %s: %s", s->where,
                        msg);
    }
    return session_setup(s, e);
}

/* ---- batches ---- */

static int
batch_gone(struct pgs *s, struct herr *e)
{
    if (!s->in_batch || !s->batch_lost)
        return 0;
    return herr_set(e, HERR_STORE, NULL,
                    "the batch was rolled back after an earlier error (%s)",
                    s->lost_why);
}

static int pipe_drain(struct pgs *s, struct herr *e);

/* Reads the outcome of every deferred write still in flight, so that the
 * connection can run a statement of its own again. */
static void
pipe_settle(struct pgs *s)
{
    if (s->npend || s->piped || s->grp || s->ugrp)
        (void)pipe_drain(s, NULL);
}

static int
pg_begin(void *state, struct herr *e)
{
    struct pgs *s = state;
    if (s->in_batch)
        return herr_set(e, HERR_INVALID, NULL, "a batch is already open");
    int rc = ensure_conn(s, e);
    if (rc == 0)
        (void)ensure_now(s, NULL); /* best effort, as at the open */
    if (rc == 0)
        /* A batch's statements find their rows by key; the joins of
         * S_UPDATE_MANY must be index look-ups whatever the planner
         * thinks of a day's partition (its plan is made when the day is
         * new and small, and kept: a hash join over a sequential scan
         * was 111 µs a row by the end of a day's bench). */
        rc = run(s,
                 "BEGIN; SET LOCAL enable_hashjoin = off;"
                 " SET LOCAL enable_mergejoin = off",
                 e, "beginning a batch");
    if (rc)
        return rc;
    s->in_batch = 1;
    s->batch_lost = 0;
    s->npending = 0;
    return 0;
}

static void
batch_end(struct pgs *s)
{
    s->in_batch = 0;
    s->batch_lost = 0;
    s->npending = 0;
}

static void
pg_rollback(void *state)
{
    struct pgs *s = state;
    if (!s->in_batch)
        return;
    pipe_settle(s);
    if (!s->batch_lost)
        pqlib.PQclear(pqlib.PQexec(s->conn, "ROLLBACK"));
    batch_end(s);
}

static int
pg_commit(void *state, struct herr *e)
{
    struct pgs *s = state;
    if (!s->in_batch)
        return herr_set(e, HERR_INVALID, NULL, "no batch is open");
    pipe_settle(s);
    if (s->batch_lost) {
        int rc = batch_gone(s, e);
        batch_end(s);
        return rc;
    }
    PGresult *res = pqlib.PQexec(s->conn, "COMMIT");
    int rc = 0;
    if (!ok_status(res)) {
        char msg[HERR_MSG_MAX];
        pg_message(s, res, msg, sizeof msg);
        rc = herr_set(e, HERR_STORE, NULL,
                      "committing a batch (rolled back): %s (%s)", msg,
                      s->where);
        pqlib.PQclear(pqlib.PQexec(s->conn, "ROLLBACK"));
    } else if (strcmp(pqlib.PQcmdStatus(res), "ROLLBACK") == 0) {
        /* the transaction had failed: COMMIT rolled it back */
        rc = herr_set(e, HERR_STORE, NULL,
                      "committing a batch: the database rolled it back (%s)",
                      s->where);
    }
    pqlib.PQclear(res);
    if (rc == 0)
        for (size_t i = 0; i < s->npending; i++)
            days_known_add(s, s->pending[i]);
    batch_end(s);
    return rc;
}

/* ---- insert ---- */

/* Collects the distinct lowercased e-mails of one of to/cc/bcc_json. */
static int
rcpt_collect(const char *js, const char *field, char ***v, size_t *n,
             size_t *cap, struct herr *e)
{
    if (js == NULL || strcmp(js, "[]") == 0) /* most cc and bcc */
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
        char *own;
        const char *clean = utf8_clean(em, &own);
        char *low = own ? own : xstrdup(clean);
        for (char *p = low; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        int dup = 0;
        for (size_t k = 0; k < *n && !dup; k++)
            dup = strcmp((*v)[k], low) == 0;
        if (dup) {
            free(low);
            continue;
        }
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 8;
            *v = xrealloc(*v, *cap * sizeof **v);
        }
        (*v)[(*n)++] = low;
    }
    json_decref(arr);
    return 0;
}

/* The status of the existing record `id`: 1 found (in *st), 0 the
 * registry names a record that is not there, -1 no registry entry, or
 * HERR_STORE. */
static int
existing_status(struct pgs *s, const char *id, enum mc_status *st, int64_t *at,
                struct herr *e)
{
    int rc = registry_at(s, id, at, e);
    if (rc == 0)
        return -1;
    if (rc < 0)
        return rc;
    struct params p;
    p_init(&p);
    p_i64(&p, *at);
    p_str(&p, id);
    PGresult *res = query(s,
                          "SELECT status FROM herald_messages"
                          " WHERE created_at = $1::bigint AND id = $2",
                          &p, e, "looking up a message");
    p_free(&p);
    if (res == NULL)
        return HERR_STORE;
    int found = pqlib.PQntuples(res) == 1;
    if (found && mc_status_parse(pqlib.PQgetvalue(res, 0, 0), st) != 0) {
        pqlib.PQclear(res);
        return herr_set(e, HERR_STORE, "id",
                        "a record with this id exists with an unreadable "
                        "status");
    }
    pqlib.PQclear(res);
    return found;
}

/* The parameters of S_INSERT for `r` (into `p`, empty): 0, or
 * HERR_INVALID for a to/cc/bcc that is not a list of addresses. */
static int
insert_params(const struct mc_record *r, struct params *p, struct herr *e)
{
    char **rcpt = NULL;
    size_t nrcpt = 0, caprcpt = 0;
    int ret = rcpt_collect(r->to_json, "to_json", &rcpt, &nrcpt, &caprcpt, e);
    if (ret == 0)
        ret = rcpt_collect(r->cc_json, "cc_json", &rcpt, &nrcpt, &caprcpt, e);
    if (ret == 0)
        ret = rcpt_collect(r->bcc_json, "bcc_json", &rcpt, &nrcpt, &caprcpt, e);
    if (ret)
        goto out;
    char *from_lc = xstrdup(r->from);
    for (char *c = from_lc; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    p_init(p);
    p_str(p, r->id);
    p_i64(p, r->created_at);
    p_str(p, r->org);
    p_str(p, r->account);
    p_str(p, r->type);
    p_take(p, from_lc); /* the parameters own it */
    char *own_subject;
    const char *subject = utf8_clean(r->subject, &own_subject);
    p_take(p, subject_words(subject));
    p_str(p, mc_status_name(r->status));
    p_str(p, r->path);
    p_str(p, r->path_reason);
    p_str(p, r->sender);
    p_str(p, r->reply_to);
    p_i64(p, r->attempts);
    p_i64(p, r->updated_at > 0 ? r->updated_at : r->created_at);
    p_time(p, r->sent_at);
    p_time(p, r->next_attempt_at);
    p_str(p, r->last_error);
    p_str(p, r->smtp_reply);
    p_str(p, r->recipients_json);
    p_str(p, r->from); /* 20 */
    p_str(p, r->from_name);
    p_str(p, r->to_json);
    p_str(p, r->cc_json);
    p_str(p, r->bcc_json);
    if (own_subject)
        p_take(p, own_subject);
    else
        p_str(p, subject);
    p_str(p, r->text);
    p_str(p, r->html);
    p_str(p, r->attachments_json);
    p_str(p, r->meta_json);
    p_str(p, r->resend_of); /* 30 */
    p_str(p, r->body_expired ? "true" : "false");
    p_take(p, text_array((const char *const *)rcpt, nrcpt));
out:
    for (size_t i = 0; i < nrcpt; i++)
        free(rcpt[i]);
    free(rcpt);
    return ret;
}

/*
 * Runs the insert of `p` (record `id` created at `at`, on `day`) to its
 * end: 0 inserted, HERR_EXISTS (*existing), HERR_STORE. `first` is
 * the outcome of its first run when that was done already (a deferred
 * write's): 1 inserted, 0 not; -1 when not. At most three runs: again
 * after a partition another process dropped (outside a batch), or after
 * the id's registry entry went away.
 */
static int
insert_run(struct pgs *s, const char *id, int64_t at, int32_t day,
           const struct params *p, int first, enum mc_status *existing,
           struct herr *e)
{
    int ret;
    for (int attempt = 0;; attempt++) {
        int inserted = first;
        first = -1;
        if (inserted < 0) {
            int gone = 0;
            PGresult *res =
                day_exec(s, S_INSERT, day, p, e, "inserting a message", &gone);
            if (res == NULL) {
                ret = HERR_STORE;
                if (gone && !s->in_batch && attempt == 0) {
                    /* the day's partitions, which this handle knew of,
                     * were dropped (retention elsewhere): again */
                    if ((ret = ensure_day(s, day, e)) != 0)
                        break;
                    continue;
                }
                break;
            }
            inserted = atoi(pqlib.PQgetvalue(res, 0, 0)) == 1;
            pqlib.PQclear(res);
        }
        if (inserted) {
            id_put(s, id, at);
            ret = 0;
            break;
        }
        enum mc_status found = MC_QUEUED;
        int64_t old = 0;
        int st = existing_status(s, id, &found, &old, e);
        if (st < -1) {
            ret = st;
            break;
        }
        if (st == 1) {
            if (existing)
                *existing = found;
            ret = herr_set(e, HERR_EXISTS, "id", "already recorded as %s",
                           mc_status_name(found));
            break;
        }
        id_forget(s, id);
        if (attempt == 2) {
            ret = herr_set(e, HERR_STORE, "id",
                           "inserting a message: its id is taken and "
                           "released again and again (%s)",
                           s->where);
            break;
        }
        if (st == 0) {
            /* The registry names a record that is gone (its partition
             * was dropped and the registry's clean-up did not finish):
             * the id is free again. */
            struct params d;
            p_init(&d);
            p_str(&d, id);
            p_i64(&d, old);
            PGresult *dr = query(s,
                                 "DELETE FROM herald_message_ids WHERE id = $1"
                                 " AND created_at = $2::bigint",
                                 &d, e, "inserting a message");
            p_free(&d);
            if (dr == NULL) {
                ret = HERR_STORE;
                break;
            }
            pqlib.PQclear(dr);
        }
    }
    return ret;
}

static int
pg_insert(void *state, const struct mc_record *r, enum mc_status *existing,
          struct herr *e)
{
    struct pgs *s = state;
    pipe_settle(s);
    struct params p;
    p_init(&p);
    int ret = insert_params(r, &p, e);
    if (ret == 0)
        ret = batch_gone(s, e);
    if (ret == 0 && !s->in_batch)
        ret = ensure_conn(s, e);
    int32_t day = (int32_t)day_of(r->created_at);
    if (ret == 0)
        ret = ensure_day(s, day, e);
    if (ret == 0)
        ret = insert_run(s, r->id, r->created_at, day, &p, -1, existing, e);
    p_free(&p);
    return ret;
}

/* ---- update ---- */

/* The parameters of S_UPDATE (S_UPDATE_CONTENT with set_content) for `u`
 * on the record created at `at` (0: NULL, for upd_reg_sql). */
static void
update_params(const struct mc_update *u, int64_t now, int64_t at,
              struct params *p)
{
    p_init(p);
    p_str(p, mc_status_name(u->status));
    p_str(p, u->path);
    p_str(p, u->path_reason);
    p_str(p, u->sender);
    p_str(p, u->reply_to);
    p_i64(p, u->attempts_add);
    p_i64(p, u->sent_at < 0 ? -1 : u->sent_at);
    p_i64(p, u->next_attempt_at < 0 ? -1 : u->next_attempt_at);
    p_str(p, u->last_error);
    p_str(p, u->smtp_reply);
    p_str(p, u->recipients_json);
    p_i64(p, now);
    p_time(p, at); /* 13 */
    p_str(p, u->id);
    if (u->set_content) {
        char *own_subject;
        const char *subject = utf8_clean(u->subject, &own_subject);
        p_take(p, subject_words(subject));
        if (own_subject)
            p_take(p, own_subject);
        else
            p_str(p, subject);
        p_str(p, u->text);
        p_str(p, u->html);
    }
}

#define P_UPDATE_AT 12 /* the index of $13, the record's created_at */

/* Whether an update's result changed its record. */
static int
update_changed(PGresult *res, int set_content)
{
    if (pqlib.PQresultStatus(res) == PGRES_TUPLES_OK && set_content)
        return pqlib.PQntuples(res) == 1 &&
               atoi(pqlib.PQgetvalue(res, 0, 0)) > 0;
    return atoi(pqlib.PQcmdTuples(res)) > 0;
}

/* Runs update `p` on the record created at `at` (set in p): 1 changed,
 * 0 no such row, HERR_STORE. */
static int
update_exec(struct pgs *s, const struct params *p, int set_content, int64_t at,
            struct herr *e)
{
    int gone;
    enum stmt k = set_content ? S_UPDATE_CONTENT : S_UPDATE;
    int32_t day = (int32_t)day_of(at);
    PGresult *res = day_exec(s, k, day, p, e, "updating a message", &gone);
    if (res == NULL && gone && !s->in_batch)
        res = day_exec(s, k, day, p, e, "updating a message", &gone);
    if (res == NULL)
        return HERR_STORE;
    int changed = update_changed(res, set_content);
    pqlib.PQclear(res);
    return changed;
}

/* Sets the created_at of update parameters `p`. */
static void
update_set_at(struct params *p, int64_t at)
{
    snprintf(p->num[P_UPDATE_AT], sizeof p->num[P_UPDATE_AT], "%lld",
             (long long)at);
    p->v[P_UPDATE_AT] = p->num[P_UPDATE_AT];
}

/* The update found no row at the created_at this handle had cached for
 * `id` (`cached`; 0: none): the registry says where the record is.
 * 0 updated, HERR_NOTFOUND, HERR_STORE. */
static int
update_via_registry(struct pgs *s, const char *id, struct params *p,
                    int set_content, int have, int64_t cached, struct herr *e)
{
    int64_t at = 0;
    int rc = registry_at(s, id, &at, e);
    if (rc < 0)
        return rc;
    if (rc == 0 || (have && at == cached)) {
        id_forget(s, id);
        return herr_set(e, HERR_NOTFOUND, "id", "no such message");
    }
    update_set_at(p, at);
    rc = update_exec(s, p, set_content, at, e);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        id_forget(s, id);
        return herr_set(e, HERR_NOTFOUND, "id", "no such message");
    }
    return 0;
}

static int
pg_update(void *state, const struct mc_update *u, int64_t now, struct herr *e)
{
    struct pgs *s = state;
    pipe_settle(s);
    int rc = batch_gone(s, e);
    if (rc == 0 && !s->in_batch)
        rc = ensure_conn(s, e);
    if (rc)
        return rc;
    int64_t cached = 0;
    int have = id_get(s, u->id, &cached);
    struct params p;
    update_params(u, now, cached, &p);
    if (have) {
        rc = update_exec(s, &p, u->set_content, cached, e);
        if (rc != 0) {
            p_free(&p);
            return rc < 0 ? rc : 0;
        }
    }
    rc = update_via_registry(s, u->id, &p, u->set_content, have, cached, e);
    p_free(&p);
    return rc;
}

/* ---- deferred writes (pipeline mode) ---- */

/*
 * Inside a batch the writes are sent in libpq's pipeline mode and their
 * results read later, together: a batch of N writes costs a round trip
 * or two, not N, and the server works on the batch while the caller
 * prepares the next write. The results are read (pipe_drain) at
 * mc_batch_sync, at the commit, before any statement of the handle's
 * own, before a write whose id is already in flight (so the outcomes are
 * those of the writes done one after the other), and every PIPE_MAX
 * writes (the server's replies then never fill the socket while the
 * handle is still sending). What a write does after its statement (an
 * insert that found the id: the existing status; an update whose cached
 * partition was stale: the registry) is done then, one statement at a
 * time, in the order of the writes: these touch only their own record.
 * A write the database refuses aborts the transaction, as a statement
 * does outside pipeline mode: the batch is lost (rolled back), the
 * writes after it are skipped by the server, and every result says so.
 */
#define PIPE_MAX 256
#define PIPE_FLUSH 8 /* writes per PQflush: the server starts on them */
#define GROUP_MAX 64 /* inserts per S_INSERT_MANY */

enum pend_kind {
    PD_INSERT,
    PD_INSERT_MANY, /* deferred inserts of one day, one statement */
    PD_UPDATE,      /* on the partition of a cached created_at */
    PD_UPDATE_MANY, /* PD_UPDATEs of one day, one statement */
    PD_UPDATE_REG,  /* created_at from the registry, in the statement */
};

struct pend {
    enum pend_kind kind;
    struct mc_result *res;
    struct params p; /* owning their strings: the caller's may go */
    char *id;
    int64_t at; /* insert: created_at; PD_UPDATE: the cached one */
    int32_t day;
    int set_content;
    int sent; /* libpq took it */
    /* PD_INSERT_MANY, PD_UPDATE_MANY: its writes (each a PD_INSERT with
     * the parameters of S_INSERT, a PD_UPDATE with S_UPDATE's), and its
     * statement prepared for the day or not */
    struct pend **m;
    size_t nm;
    int named;
    char name[64];
};

static void
pend_free(struct pend *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->nm; i++)
        pend_free(d->m[i]);
    free(d->m);
    p_free(&d->p);
    free(d->id);
    free(d);
}

/* Copies the strings `p` points to, so that it owns all of them. */
static void
p_own(struct params *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->own[i] == NULL && p->v[i] && p->v[i] != p->num[i]) {
            p->own[i] = xstrdup(p->v[i]);
            p->v[i] = p->own[i];
        }
}

static int
pend_has(const struct pend *d, const char *id)
{
    if (d->kind != PD_INSERT_MANY && d->kind != PD_UPDATE_MANY)
        return strcmp(d->id, id) == 0;
    for (size_t i = 0; i < d->nm; i++)
        if (strcmp(d->m[i]->id, id) == 0)
            return 1;
    return 0;
}

static int
pipe_has(const struct pgs *s, const char *id)
{
    for (size_t i = 0; i < s->npend; i++)
        if (pend_has(s->pend[i], id))
            return 1;
    return (s->grp && pend_has(s->grp, id)) ||
           (s->ugrp && pend_has(s->ugrp, id));
}

/* The statement of update kind `k` (S_UPDATE or S_UPDATE_CONTENT) with
 * the record's created_at read from the registry when $13 is NULL; new
 * string. Through the partitioned tables: for a record this handle has
 * not written or read lately. */
static char *
upd_reg_sql(enum stmt k)
{
    static const char from[] = "WHERE created_at = $13::bigint";
    static const char to[] =
        "WHERE created_at = COALESCE($13::bigint, (SELECT i.created_at"
        " FROM herald_message_ids i WHERE i.id = $14::text))";
    struct buf b;
    buf_init(&b, 0);
    const char *p = stmts[k].sql, *hit;
    while ((hit = strstr(p, from)) != NULL) {
        buf_append(&b, p, (size_t)(hit - p));
        buf_puts(&b, to);
        p = hit + strlen(from);
    }
    buf_puts(&b, p);
    return buf_take(&b, NULL);
}

/* Sends `d` (statement `name` prepared, or `sql`) in pipeline mode and
 * keeps it for pipe_drain; takes `d`. */
static void
pipe_send(struct pgs *s, struct pend *d, const char *name, const char *sql)
{
    if (!s->piped && pqlib.PQenterPipelineMode(s->conn) == 1)
        s->piped = 1;
    if (s->piped)
        d->sent =
            name ? pqlib.PQsendQueryPrepared(s->conn, name, d->p.n, d->p.v,
                                             d->p.binary ? d->p.len : NULL,
                                             d->p.binary ? d->p.fmt : NULL, 0)
                 : pqlib.PQsendQueryParams(s->conn, sql, d->p.n, NULL, d->p.v,
                                           d->p.binary ? d->p.len : NULL,
                                           d->p.binary ? d->p.fmt : NULL, 0);
    if (s->npend == s->cappend) {
        s->cappend = s->cappend ? 2 * s->cappend : 64;
        s->pend = xrealloc(s->pend, s->cappend * sizeof *s->pend);
    }
    s->pend[s->npend++] = d;
    if (d->sent && ++s->pipe_unflushed >= PIPE_FLUSH) {
        (void)pqlib.PQflush(s->conn);
        s->pipe_unflushed = 0;
    }
    if (s->npend >= PIPE_MAX || !d->sent)
        (void)pipe_drain(s, NULL);
}

/* The statement of a deferred write on `day`: 1 and its name when the
 * day has its own statements (prepared now if need be: the pipeline is
 * drained first), 0 for the partitioned tables, or HERR_STORE (`e`). */
static int
pipe_day_stmt(struct pgs *s, enum stmt k, int32_t day, char name[64],
              struct herr *e)
{
    size_t pos;
    if (!days_find(s->days, s->ndays, day, &pos))
        return 0;
    day_stmt_name(k, day, name);
    for (int i = 0; i < DAY_SLOTS; i++) {
        struct dayslot *d = &s->dayslots[i];
        if (d->used && d->day == day && (d->prepared & (1u << k))) {
            d->used = ++s->uses;
            return 1;
        }
    }
    int rc = pipe_drain(s, e);
    if (rc)
        return rc;
    if (!days_find(s->days, s->ndays, day, &pos))
        return 0;
    struct dayslot *d = day_slot(s, day);
    PGresult *res = day_prepare(s, d, k);
    if (res == NULL)
        return 1;
    int gone;
    day_fail(s, day, res, e, "preparing a statement", &gone);
    return HERR_STORE;
}

/* One element of an array literal: NULL, or quoted. */
static void
array_elem(struct buf *b, const char *v)
{
    if (v == NULL) {
        buf_puts(b, "NULL");
        return;
    }
    buf_puts(b, "\"");
    for (const char *q = v;;) {
        size_t n = strcspn(q, "\"\\");
        buf_append(b, q, n);
        if (q[n] == '\0')
            break;
        buf_puts(b, "\\");
        buf_append(b, q + n, 1);
        q += n + 1;
    }
    buf_puts(b, "\"");
}

/* A text[] of `n` values (NULL: SQL NULL) in PostgreSQL's binary array
 * format (array_send: dimensions, the element type, then each element's
 * length and bytes), its length in *len. The server copies the bytes
 * (array_recv) instead of scanning a quoted literal twice (array_in): a
 * tenth of its time on the worker's writes, most of it the bodies. */
static char *
array_bin_text(const char *const *v, size_t n, int *len)
{
    size_t total = 20 + 4 * n;
    int nulls = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i])
            total += strlen(v[i]);
        else
            nulls = 1;
    }
    unsigned char *b = xmalloc(total), *o = b;
#define PUT32(x)                                                               \
    do {                                                                       \
        uint32_t u_ = (uint32_t)(x);                                           \
        o[0] = (unsigned char)(u_ >> 24);                                      \
        o[1] = (unsigned char)(u_ >> 16);                                      \
        o[2] = (unsigned char)(u_ >> 8);                                       \
        o[3] = (unsigned char)u_;                                              \
        o += 4;                                                                \
    } while (0)
    PUT32(1);     /* dimensions */
    PUT32(nulls); /* has NULLs */
    PUT32(25);    /* element type: text */
    PUT32(n);     /* length of dimension 1 */
    PUT32(1);     /* its lower bound */
    for (size_t i = 0; i < n; i++) {
        if (v[i] == NULL) {
            PUT32(-1);
            continue;
        }
        size_t l = strlen(v[i]);
        PUT32(l);
        memcpy(o, v[i], l);
        o += l;
    }
#undef PUT32
    *len = (int)total;
    return (char *)b;
}

/* Sends the group being filled in *slot, if any: the parameters of
 * S_INSERT_MANY (S_UPDATE_MANY) are those of its writes' S_INSERT
 * (S_UPDATE), each an array over the writes; text arrays go in binary,
 * the few others as array literals. */
static void
group_send_one(struct pgs *s, struct pend **slot)
{
    struct pend *g = *slot;
    if (g == NULL)
        return;
    *slot = NULL;
    int np = g->m[0]->p.n;
    enum stmt stmt_k =
        g->kind == PD_INSERT_MANY ? S_INSERT_MANY : S_UPDATE_MANY;
    p_init(&g->p);
    g->p.binary = 1;
    const char **col = xcalloc(g->nm, sizeof *col);
    for (int k = 0; k < np; k++) {
        char cast[24];
        snprintf(cast, sizeof cast, "$%d::text[]", k + 1);
        if (strstr(stmts[stmt_k].sql, cast)) {
            for (size_t i = 0; i < g->nm; i++)
                col[i] = g->m[i]->p.v[k];
            g->p.fmt[g->p.n] = 1;
            int len = 0;
            char *a = array_bin_text(col, g->nm, &len);
            g->p.len[g->p.n] = len;
            p_take(&g->p, a);
            continue;
        }
        g->p.fmt[g->p.n] = 0;
        g->p.len[g->p.n] = 0;
        struct buf b;
        buf_init(&b, 0);
        buf_puts(&b, "{");
        for (size_t i = 0; i < g->nm; i++) {
            if (i)
                buf_puts(&b, ",");
            array_elem(&b, g->m[i]->p.v[k]);
        }
        buf_puts(&b, "}");
        p_take(&g->p, buf_take(&b, NULL));
    }
    free(col);
    pipe_send(s, g, g->named ? g->name : NULL, stmts[stmt_k].sql);
}

static void
group_send(struct pgs *s)
{
    group_send_one(s, &s->grp);
    group_send_one(s, &s->ugrp);
}

/* Adds write `d` to the group of its day in *slot (of `kind`, whose
 * statement is `name` when `named`), sending the group when full. */
static void
group_add(struct pgs *s, struct pend **slot, enum pend_kind kind,
          struct pend *d, int named, const char *name)
{
    struct pend *g = *slot;
    if (g == NULL) {
        g = *slot = xcalloc(1, sizeof *g);
        g->kind = kind;
        g->day = d->day;
        g->id = xstrdup("");
        g->m = xcalloc(GROUP_MAX, sizeof *g->m);
        g->named = named;
        if (named)
            snprintf(g->name, sizeof g->name, "%s", name);
    }
    g->m[g->nm++] = d;
    if (g->nm == GROUP_MAX)
        group_send_one(s, slot);
}

static void
pg_insert_deferred(void *state, const struct mc_record *r,
                   struct mc_result *res)
{
    struct pgs *s = state;
    if (!s->in_batch) {
        res->rc = pg_insert(s, r, &res->existing, &res->err);
        return;
    }
    struct herr *e = &res->err;
    struct pend *d = xcalloc(1, sizeof *d);
    d->day = (int32_t)day_of(r->created_at);
    int rc = batch_gone(s, e);
    if (rc == 0)
        rc = insert_params(r, &d->p, e);
    if (rc == 0 && (pipe_has(s, r->id) || !day_known(s, d->day))) {
        rc = pipe_drain(s, e);
        if (rc == 0)
            rc = ensure_day(s, d->day, e);
    }
    if (rc == 0 && s->grp && s->grp->day != d->day)
        group_send_one(s, &s->grp);
    char name[64];
    int named = 0;
    if (rc == 0)
        rc = named = pipe_day_stmt(s, S_INSERT_MANY, d->day, name, e);
    if (rc < 0) {
        res->rc = rc;
        pend_free(d);
        return;
    }
    d->kind = PD_INSERT;
    d->res = res;
    d->id = xstrdup(r->id);
    d->at = r->created_at;
    p_own(&d->p);
    /* Into the day's group (pipe_day_stmt may have sent the last one,
     * draining the pipeline to prepare the statement). */
    group_add(s, &s->grp, PD_INSERT_MANY, d, named, name);
}

static void
pg_update_deferred(void *state, const struct mc_update *u, int64_t now,
                   struct mc_result *res)
{
    struct pgs *s = state;
    if (!s->in_batch) {
        res->rc = pg_update(s, u, now, &res->err);
        return;
    }
    struct herr *e = &res->err;
    int rc = batch_gone(s, e);
    if (rc == 0 && pipe_has(s, u->id))
        rc = pipe_drain(s, e);
    if (rc) {
        res->rc = rc;
        return;
    }
    struct pend *d = xcalloc(1, sizeof *d);
    enum stmt k = u->set_content ? S_UPDATE_CONTENT : S_UPDATE;
    int64_t at = 0;
    int have = id_get(s, u->id, &at);
    update_params(u, now, have ? at : 0, &d->p);
    d->res = res;
    d->id = xstrdup(u->id);
    d->set_content = u->set_content;
    p_own(&d->p);
    if (!have) {
        d->kind = PD_UPDATE_REG;
        char *sql = upd_reg_sql(k);
        pipe_send(s, d, NULL, sql);
        free(sql);
        return;
    }
    d->kind = PD_UPDATE;
    d->at = at;
    d->day = (int32_t)day_of(at);
    if (k == S_UPDATE && s->ugrp && s->ugrp->day != d->day)
        group_send_one(s, &s->ugrp);
    char name[64];
    int named =
        pipe_day_stmt(s, k == S_UPDATE ? S_UPDATE_MANY : k, d->day, name, e);
    if (named < 0) {
        res->rc = named;
        pend_free(d);
        return;
    }
    if (k == S_UPDATE)
        group_add(s, &s->ugrp, PD_UPDATE_MANY, d, named, name);
    else
        pipe_send(s, d, named ? name : NULL, stmts[k].sql);
}

/* Leaves pipeline mode after the results were read; if libpq will not,
 * the connection is started again (the batch is lost with it). */
static void
pipe_exit(struct pgs *s)
{
    s->piped = 0;
    s->pipe_unflushed = 0;
    if (pqlib.PQpipelineStatus(s->conn) == PQ_PIPELINE_OFF ||
        pqlib.PQexitPipelineMode(s->conn) == 1)
        return;
    PGresult *r;
    for (int i = 0; i < 64 && (r = pqlib.PQgetResult(s->conn)) != NULL; i++)
        pqlib.PQclear(r);
    if (pqlib.PQexitPipelineMode(s->conn) == 1)
        return;
    if (s->in_batch && !s->batch_lost) {
        s->batch_lost = 1;
        snprintf(s->lost_why, sizeof s->lost_why,
                 "the connection was reset: %.180s",
                 pqlib.PQerrorMessage(s->conn));
    }
    pqlib.PQreset(s->conn);
    if (pqlib.PQstatus(s->conn) == CONNECTION_OK)
        (void)session_setup(s, NULL);
}

/* The result `r` (taken) of group `g`: each insert's outcome, as each
 * S_INSERT would have had it. */
static void
group_finish(struct pgs *s, struct pend *g, PGresult *r)
{
    if (!s->batch_lost && (r == NULL || !ok_status(r))) {
        /* the batch is lost with it: every insert says why */
        struct herr why;
        int gone;
        day_fail(s, g->day, r, &why,
                 g->kind == PD_INSERT_MANY ? "inserting a message"
                                           : "updating a message",
                 &gone);
        for (size_t i = 0; i < g->nm; i++) {
            g->m[i]->res->rc = HERR_STORE;
            g->m[i]->res->err = why;
        }
        return;
    }
    int rows = s->batch_lost ? 0 : pqlib.PQntuples(r);
    for (size_t i = 0; i < g->nm; i++) {
        struct pend *d = g->m[i];
        struct mc_result *res = d->res;
        if (s->batch_lost) {
            res->rc = batch_gone(s, &res->err);
            continue;
        }
        int done = 0;
        for (int j = 0; j < rows && !done; j++)
            done = strcmp(pqlib.PQgetvalue(r, j, 0), d->id) == 0;
        if (g->kind == PD_INSERT_MANY)
            res->rc = insert_run(s, d->id, d->at, d->day, &d->p, done,
                                 &res->existing, &res->err);
        else
            res->rc = done ? 0
                           : update_via_registry(s, d->id, &d->p, 0, 1, d->at,
                                                 &res->err);
    }
    pqlib.PQclear(r);
}

/* Reads the results of the deferred writes in flight and finishes each
 * (see above), filling their mc_result. 0, or HERR_STORE when the batch
 * is lost (`e` says why). */
static int
pipe_drain(struct pgs *s, struct herr *e)
{
    group_send(s);
    size_t n = s->npend;
    struct pend **v = s->pend;
    s->pend = NULL;
    s->npend = s->cappend = 0;
    PGresult **got = n ? xcalloc(n, sizeof *got) : NULL;
    if (s->piped) {
        int ok = pqlib.PQpipelineSync(s->conn) == 1;
        for (size_t i = 0; ok && i < n; i++) {
            if (!v[i]->sent)
                continue;
            got[i] = pqlib.PQgetResult(s->conn);
            if (got[i] == NULL) {
                ok = 0; /* the connection is gone */
                break;
            }
            PGresult *x;
            while ((x = pqlib.PQgetResult(s->conn)) != NULL)
                pqlib.PQclear(x); /* the end of this statement's results */
        }
        PGresult *x;
        while (ok && (x = pqlib.PQgetResult(s->conn)) != NULL) {
            int sync = pqlib.PQresultStatus(x) == PGRES_PIPELINE_SYNC;
            pqlib.PQclear(x);
            if (sync)
                break;
        }
        pipe_exit(s);
    }
    for (size_t i = 0; i < n; i++) {
        struct pend *d = v[i];
        struct mc_result *res = d->res;
        PGresult *r = got[i];
        got[i] = NULL;
        const char *what = d->kind == PD_INSERT || d->kind == PD_INSERT_MANY
                               ? "inserting a message"
                               : "updating a message";
        if (d->kind == PD_INSERT_MANY || d->kind == PD_UPDATE_MANY) {
            group_finish(s, d, r);
        } else if (s->batch_lost) {
            res->rc = batch_gone(s, &res->err);
            pqlib.PQclear(r);
        } else if (r == NULL || !ok_status(r)) {
            if (d->kind == PD_UPDATE_REG) {
                res->rc = pg_fail(s, r, &res->err, what);
                pqlib.PQclear(r);
            } else {
                int gone;
                day_fail(s, d->day, r, &res->err, what, &gone);
                res->rc = HERR_STORE;
            }
        } else if (d->kind == PD_INSERT) {
            int inserted = atoi(pqlib.PQgetvalue(r, 0, 0)) == 1;
            pqlib.PQclear(r);
            res->rc = insert_run(s, d->id, d->at, d->day, &d->p, inserted,
                                 &res->existing, &res->err);
        } else {
            int changed = update_changed(r, d->set_content);
            pqlib.PQclear(r);
            if (changed)
                res->rc = 0;
            else if (d->kind == PD_UPDATE)
                res->rc = update_via_registry(s, d->id, &d->p, d->set_content,
                                              1, d->at, &res->err);
            else {
                id_forget(s, d->id);
                res->rc =
                    herr_set(&res->err, HERR_NOTFOUND, "id", "no such message");
            }
        }
        pend_free(d);
    }
    free(got);
    free(v);
    return batch_gone(s, e);
}

static int
pg_sync(void *state, struct herr *e)
{
    struct pgs *s = state;
    if (!s->in_batch)
        return 0;
    return pipe_drain(s, e);
}

/* ---- reads ---- */

static char *
col_str(const PGresult *res, int row, int c)
{
    if (pqlib.PQgetisnull(res, row, c))
        return NULL;
    return xstrndup(pqlib.PQgetvalue(res, row, c),
                    (size_t)pqlib.PQgetlength(res, row, c));
}

/* Row `row` as a new record, or NULL when its status is unknown. */
static struct mc_record *
row_record(const PGresult *res, int row)
{
    enum mc_status status;
    if (mc_status_parse(pqlib.PQgetvalue(res, row, C_STATUS), &status) != 0)
        return NULL;
    struct mc_record *r = xcalloc(1, sizeof *r);
    r->status = status;
    r->id = col_str(res, row, C_ID);
    r->org = col_str(res, row, C_ORG);
    r->account = col_str(res, row, C_ACCOUNT);
    r->type = col_str(res, row, C_TYPE);
    r->path = col_str(res, row, C_PATH);
    r->path_reason = col_str(res, row, C_PATH_REASON);
    r->from = col_str(res, row, C_FROM);
    r->from_name = col_str(res, row, C_FROM_NAME);
    r->sender = col_str(res, row, C_SENDER);
    r->reply_to = col_str(res, row, C_REPLY_TO);
    r->to_json = col_str(res, row, C_TO);
    r->cc_json = col_str(res, row, C_CC);
    r->bcc_json = col_str(res, row, C_BCC);
    r->subject = col_str(res, row, C_SUBJECT);
    r->text = col_str(res, row, C_TEXT);
    r->html = col_str(res, row, C_HTML);
    r->attachments_json = col_str(res, row, C_ATTACHMENTS);
    r->meta_json = col_str(res, row, C_META);
    r->recipients_json = col_str(res, row, C_RECIPIENTS);
    r->created_at = val_i64(res, row, C_CREATED);
    r->updated_at = val_i64(res, row, C_UPDATED);
    r->sent_at = val_i64(res, row, C_SENT);
    r->next_attempt_at = val_i64(res, row, C_NEXT);
    r->attempts = (int)val_i64(res, row, C_ATTEMPTS);
    r->last_error = col_str(res, row, C_LAST_ERROR);
    r->smtp_reply = col_str(res, row, C_SMTP_REPLY);
    r->resend_of = col_str(res, row, C_RESEND_OF);
    r->body_expired =
        strcmp(pqlib.PQgetvalue(res, row, C_BODY_EXPIRED), "t") == 0;
    return r;
}

/* The record at (at, id): 1 found, 0 not, HERR_STORE. */
static int
get_at(struct pgs *s, const char *id, int64_t at, struct mc_record **out,
       struct herr *e)
{
    struct params p;
    p_init(&p);
    p_i64(&p, at);
    p_str(&p, id);
    int gone;
    int32_t day = (int32_t)day_of(at);
    PGresult *res = day_exec(s, S_GET, day, &p, e, "reading a message", &gone);
    if (res == NULL && gone && !s->in_batch)
        res = day_exec(s, S_GET, day, &p, e, "reading a message", &gone);
    p_free(&p);
    if (res == NULL)
        return HERR_STORE;
    int found = pqlib.PQntuples(res) == 1;
    int rc = found;
    if (found) {
        *out = row_record(res, 0);
        if (*out == NULL)
            rc = herr_set(e, HERR_STORE, "status",
                          "stored record %s has an unknown status", id);
    }
    pqlib.PQclear(res);
    return rc;
}

static int
pg_get(void *state, const char *id, struct mc_record **out, struct herr *e)
{
    struct pgs *s = state;
    *out = NULL;
    pipe_settle(s);
    int rc = s->in_batch ? batch_gone(s, e) : ensure_conn(s, e);
    if (rc)
        return rc;
    int64_t at = 0, cached = 0;
    int have = id_get(s, id, &cached);
    if (have && (rc = get_at(s, id, cached, out, e)) != 0)
        return rc < 0 ? rc : 0;
    rc = registry_at(s, id, &at, e);
    if (rc < 0)
        return rc;
    if (rc == 1 && !(have && at == cached))
        rc = get_at(s, id, at, out, e);
    else
        rc = 0;
    if (rc < 0)
        return rc;
    if (rc == 0) {
        id_forget(s, id);
        return herr_set(e, HERR_NOTFOUND, "id", "no such message");
    }
    return 0;
}

/* The keys (created_at, id) of a page of mc_list, newest first. */
struct keys {
    int64_t *at;
    char **id;
    size_t n, cap;
};

/* The rows (created_at, id) of `res` appended to k, up to max keys. */
static void
keys_take(struct keys *k, const PGresult *res, size_t max)
{
    for (int r = 0; r < pqlib.PQntuples(res) && k->n < max; r++) {
        if (k->n == k->cap) {
            k->cap = k->cap ? 2 * k->cap : 64;
            k->at = xrealloc(k->at, k->cap * sizeof *k->at);
            k->id = xrealloc(k->id, k->cap * sizeof *k->id);
        }
        k->at[k->n] = val_i64(res, r, 0);
        k->id[k->n] = col_str(res, r, 1);
        k->n++;
    }
}

static void
keys_free(struct keys *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->id[i]);
    free(k->id);
    free(k->at);
    memset(k, 0, sizeof *k);
}

/*
 * How a day's key query finds the records whose subject has q's words.
 * PostgreSQL cannot estimate how many records a word prefix matches (it
 * assumes 2 % of them, for any prefix: make bench-api, one day of 33,000
 * records: 'zzzq':* estimated 667, matching none; 'receipt':* 667 for
 * 19,888; 'receipt':* & 'invoice':* 13 for 7,204), so its choice between
 * walking the day newest first and reading the GIN index is a guess: a
 * walk for a word that is not there reads the whole day (16 ms), the
 * index for a common word reads every match (6 ms). The shape of the
 * statement decides instead, and its cost is bounded either way:
 * - LQ_WALK_FIRST walks the newest Q_WALK records of the day; when they
 *   hold a page, that is the page (a common word: ~0.5 µs a record);
 *   when not, the word is rarer than 1 in Q_WALK / page, and the GIN
 *   index gives the day's matches, sorted (~2.5 µs a match);
 * - LQ_INDEX reads the GIN index only, for the days after a whole day
 *   that did not fill the page (a rare word stays rare from day to day).
 * Both are planned once (a generic plan: the ORDER BY on created_at + 0
 * keeps the index read from turning into a walk).
 */
enum lq { LQ_WALK_FIRST = 0, LQ_INDEX };
#define Q_WALK 3000

/* The key query of mc_list for records in [lo, hi) matching the filter
 * (has_lo, has_hi 0: no bound; for a day's query, the whole day of its
 * partitions), newest first, at most `want` ($ last): its SQL on the
 * partitioned tables into `b`, its parameters into `p`. With `to`, the
 * keys are those of herald_recipients (by periods, not days), and
 * the record's tables are joined only for the other filters. With q's
 * words, `lq` says how (above). */
static void
list_sql(const struct mc_query *q, int has_lo, int64_t lo, int has_hi,
         int64_t hi, int want, enum lq lq, struct buf *b, struct params *p)
{
    const struct mc_filter *f = q->f;
    struct params *pp = p;
    p_init(pp);
    /* Status and path are in herald_messages, the other filters' columns
     * in herald_message_content (org in both); a table is read only when
     * a filter needs it (c when none does and there is no `to`: every
     * record has both rows). k is the table whose key orders the page. */
    int need_m = f->has_status || f->path;
    int need_c = f->account || f->type || q->from || q->nwords ||
                 (!need_m && (!q->to || f->org || f->nscope));
    const char *kt = q->to ? "r" : need_c ? "c" : "m";
    const char *first = q->to    ? "herald_recipients r"
                        : need_c ? "herald_message_content c"
                                 : "herald_messages m";
    struct buf w; /* FROM ... WHERE ..., without q's words */
    buf_init(&w, 0);
    buf_printf(&w, " FROM %s", first);
    if (need_c && kt[0] != 'c')
        buf_printf(&w,
                   " JOIN herald_message_content c ON c.created_at ="
                   " %s.created_at AND c.id = %s.id",
                   kt, kt);
    if (need_m && kt[0] != 'm')
        buf_printf(&w,
                   " JOIN herald_messages m ON m.created_at = %s.created_at"
                   " AND m.id = %s.id",
                   kt, kt);
    buf_puts(&w, " WHERE true");
    /* each table's time bounds, so each is pruned to the window */
    const char *tabs[3];
    size_t ntabs = 0;
    if (q->to)
        tabs[ntabs++] = "r";
    if (need_c)
        tabs[ntabs++] = "c";
    if (need_m)
        tabs[ntabs++] = "m";
    if (has_lo) {
        p_i64(pp, lo);
        for (size_t i = 0; i < ntabs; i++)
            buf_printf(&w, " AND %s.created_at >= $%d::bigint", tabs[i], pp->n);
    }
    if (has_hi) {
        p_i64(pp, hi);
        for (size_t i = 0; i < ntabs; i++)
            buf_printf(&w, " AND %s.created_at < $%d::bigint", tabs[i], pp->n);
    }
    if (q->to) {
        p_str(pp, q->to);
        buf_printf(&w, " AND r.email = $%d", pp->n);
    }
    if (f->org) {
        p_str(pp, f->org);
        if (need_c)
            buf_printf(&w, " AND c.org = $%d", pp->n);
        if (need_m)
            buf_printf(&w, " AND m.org = $%d", pp->n);
    }
    if (f->account) {
        p_str(pp, f->account);
        buf_printf(&w, " AND c.account = $%d", pp->n);
    }
    if (f->has_status) {
        if (f->status == MC_SENT) {
            buf_puts(&w, " AND m.status = 'sent'");
        } else {
            p_str(pp, mc_status_name(f->status));
            buf_printf(&w, " AND m.status = $%d AND m.status <> 'sent'", pp->n);
        }
    }
    if (f->type) {
        p_str(pp, f->type);
        buf_printf(&w, " AND c.type = $%d", pp->n);
    }
    if (f->path) {
        p_str(pp, f->path);
        buf_printf(&w, " AND m.path = $%d", pp->n);
    }
    if (q->from) {
        p_str(pp, q->from);
        buf_printf(&w, " AND c.from_lc = $%d", pp->n);
    }
    if (q->has_cursor) {
        p_i64(pp, q->cursor_at);
        p_str(pp, q->cursor_id);
        for (size_t i = 0; i < ntabs; i++)
            buf_printf(&w, " AND (%s.created_at, %s.id) < ($%d::bigint, $%d)",
                       tabs[i], tabs[i], pp->n - 1, pp->n);
    }
    if (f->nscope) {
        p_take(pp, text_array(f->scope, f->nscope));
        if (need_c)
            buf_printf(&w, " AND c.org = ANY($%d::text[])", pp->n);
        if (need_m)
            buf_printf(&w, " AND m.org = ANY($%d::text[])", pp->n);
    }
    int tsq = 0;
    if (q->nwords) {
        /* each word a prefix (mc_q_words' words hold no quote) */
        struct buf t;
        buf_init(&t, 0);
        for (size_t i = 0; i < q->nwords; i++)
            buf_printf(&t, "%s'%s':*", i ? " & " : "", q->words[i]);
        p_take(pp, buf_take(&t, NULL));
        tsq = pp->n;
    }
    p_i64(pp, want);
    int lim = pp->n;
    if (!q->nwords) {
        buf_printf(b,
                   "SELECT %s.created_at, %s.id%s ORDER BY %s.created_at"
                   " DESC, %s.id DESC LIMIT $%d",
                   kt, kt, w.p, kt, kt, lim);
    } else if (lq == LQ_INDEX) {
        buf_printf(b,
                   "SELECT %s.created_at, %s.id%s AND c.subject_tsv @@"
                   " $%d::tsquery ORDER BY %s.created_at + 0 DESC, %s.id DESC"
                   " LIMIT $%d",
                   kt, kt, w.p, tsq, kt, kt, lim);
    } else {
        /* the walk's matches when they fill the page or when the walk
         * saw every record of the day (the other filters leave fewer
         * than Q_WALK: n counts them, only then); the index's otherwise.
         * The walk is a subquery, not a CTE, so that its order is known
         * and it stops at the page's last match. */
        buf_printf(b,
                   "WITH a AS (SELECT created_at, id FROM (SELECT"
                   " %s.created_at, %s.id, c.subject_tsv @@ $%d::tsquery"
                   " AS hit%s ORDER BY %s.created_at DESC, %s.id DESC"
                   " LIMIT %d) w WHERE hit ORDER BY created_at DESC, id DESC"
                   " LIMIT $%d),"
                   " n AS (SELECT count(*) AS walked FROM (SELECT 1%s"
                   " LIMIT %d) x)"
                   " SELECT created_at, id FROM a"
                   " WHERE (SELECT count(*) FROM a) >= $%d"
                   " OR (SELECT walked FROM n) < %d"
                   " UNION ALL (SELECT %s.created_at, %s.id%s"
                   " AND c.subject_tsv @@ $%d::tsquery"
                   " AND (SELECT count(*) FROM a) < $%d"
                   " AND (SELECT walked FROM n) >= %d"
                   " ORDER BY %s.created_at + 0 DESC, %s.id DESC LIMIT $%d)",
                   kt, kt, tsq, w.p, kt, kt, Q_WALK, lim, w.p, Q_WALK, lim,
                   Q_WALK, kt, kt, w.p, tsq, lim, Q_WALK, kt, kt, lim);
    }
    buf_free(&w);
}

/* The statement cache of mc_list: statements naming one day's
 * partitions, prepared on this connection, least recently used out. */
static void
lstmt_reset(struct pgs *s)
{
    for (int i = 0; i < LSTMT_SLOTS; i++)
        free(s->lst[i].sql);
    memset(s->lst, 0, sizeof s->lst);
}

/* The prepared statement of `sql` (prepared now if need be): 0 and its
 * name, or HERR_STORE (*gone: a table it names is not there). */
static int
lstmt_get(struct pgs *s, const char *sql, char name[32], int *gone,
          struct herr *e)
{
    *gone = 0;
    uint64_t h = util_hash(sql);
    struct lstmt *slot = NULL, *lru = &s->lst[0];
    for (int i = 0; i < LSTMT_SLOTS; i++) {
        struct lstmt *l = &s->lst[i];
        if (l->sql && l->hash == h && strcmp(l->sql, sql) == 0) {
            l->used = ++s->uses;
            snprintf(name, 32, "herald_l%d", i);
            return 0;
        }
        if (l->used < lru->used)
            lru = l;
    }
    slot = lru;
    int i = (int)(slot - s->lst);
    snprintf(name, 32, "herald_l%d", i);
    if (slot->sql) {
        char sqld[64];
        snprintf(sqld, sizeof sqld, "DEALLOCATE %s", name);
        pqlib.PQclear(pqlib.PQexec(s->conn, sqld));
        free(slot->sql);
        slot->sql = NULL;
        slot->used = 0;
    }
    PGresult *res = pqlib.PQprepare(s->conn, name, sql, 0, NULL);
    if (!ok_status(res)) {
        *gone = strcmp(sqlstate(res), "42P01") == 0;
        pg_fail(s, res, e, "listing messages");
        pqlib.PQclear(res);
        return HERR_STORE;
    }
    pqlib.PQclear(res);
    slot->sql = xstrdup(sql);
    slot->hash = h;
    slot->used = ++s->uses;
    return 0;
}

/* The session's planner settings back to the usual ones (day_reads
 * changes them for its statements). */
static void
reads_reset(struct pgs *s)
{
    pqlib.PQclear(pqlib.PQexec(s->conn, "SET plan_cache_mode = auto;"
                                        " SET enable_bitmapscan = on"));
    s->reads_mode = 0;
}

/*
 * Runs n statements on single days at once (pipeline mode: one round
 * trip), each prepared and run with a generic plan (planned once per
 * connection: a day's statement has one partition per table, so the
 * generic plan is the custom one without its planning). res[i] gets
 * each result (the caller clears them). 0, or HERR_STORE (*gone: a day's
 * partitions were dropped meanwhile).
 */
static int
day_reads(struct pgs *s, size_t n, char *const *sql, struct params *p,
          const int *custom, int bitmaps, int reset, PGresult **res, int *gone,
          struct herr *e)
{
    char(*names)[32] = xcalloc(n ? n : 1, sizeof *names);
    size_t *order = xcalloc(n + 3, sizeof *order); /* result -> item + 1 */
    int rc = 0;
    *gone = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!custom || !custom[i])
            rc = lstmt_get(s, sql[i], names[i], gone, e);
    if (rc) {
        free(names);
        free(order);
        return rc;
    }
    /* the generic ones under the generic settings, then the others
     * (planned with their values: a partial day's bounds) under the
     * usual ones; the settings are changed only when they must be
     * (s->reads_mode; mc_list puts them back with its last call, reset) */
    static const char *const modes[] = {
        "SELECT set_config('plan_cache_mode', 'auto', false),"
        " set_config('enable_bitmapscan', 'on', false)",
        "SELECT set_config('plan_cache_mode', 'force_generic_plan', false),"
        " set_config('enable_bitmapscan', 'off', false)",
        "SELECT set_config('plan_cache_mode', 'force_generic_plan', false),"
        " set_config('enable_bitmapscan', 'on', false)"};
    size_t nr = 0;
    int mode = s->reads_mode;
    int ok = pqlib.PQenterPipelineMode(s->conn) == 1;
    for (size_t i = 0; ok && i < n; i++)
        if (!custom || !custom[i]) {
            if (mode != (bitmaps ? 2 : 1)) {
                mode = bitmaps ? 2 : 1;
                ok = pqlib.PQsendQueryParams(s->conn, modes[mode], 0, NULL,
                                             NULL, NULL, NULL, 0) == 1;
                order[nr++] = 0;
            }
            ok = ok && pqlib.PQsendQueryPrepared(s->conn, names[i], p[i].n,
                                                 p[i].v, NULL, NULL, 0) == 1;
            order[nr++] = i + 1;
        }
    for (size_t i = 0; ok && custom && i < n; i++)
        if (custom[i]) {
            if (mode != 0) {
                mode = 0;
                ok = pqlib.PQsendQueryParams(s->conn, modes[0], 0, NULL, NULL,
                                             NULL, NULL, 0) == 1;
                order[nr++] = 0;
            }
            ok = ok && pqlib.PQsendQueryParams(s->conn, sql[i], p[i].n, NULL,
                                               p[i].v, NULL, NULL, 0) == 1;
            order[nr++] = i + 1;
        }
    if (ok && reset && mode != 0) {
        mode = 0;
        ok = pqlib.PQsendQueryParams(s->conn, modes[0], 0, NULL, NULL, NULL,
                                     NULL, 0) == 1;
        order[nr++] = 0;
    }
    ok = ok && pqlib.PQpipelineSync(s->conn) == 1;
    PGresult *fail = NULL;
    for (size_t i = 0; ok && i < nr; i++) {
        PGresult *r = pqlib.PQgetResult(s->conn), *x;
        if (r == NULL) {
            ok = 0;
            break;
        }
        while ((x = pqlib.PQgetResult(s->conn)) != NULL)
            pqlib.PQclear(x);
        if (!ok_status(r) && fail == NULL) {
            fail = r;
            continue;
        }
        if (order[i] && ok_status(r))
            res[order[i] - 1] = r;
        else
            pqlib.PQclear(r);
    }
    free(order);
    PGresult *x;
    while (ok && (x = pqlib.PQgetResult(s->conn)) != NULL) {
        int sync = pqlib.PQresultStatus(x) == PGRES_PIPELINE_SYNC;
        pqlib.PQclear(x);
        if (sync)
            break;
    }
    if (pqlib.PQpipelineStatus(s->conn) != PQ_PIPELINE_OFF)
        pipe_exit(s);
    free(names);
    if (ok && fail == NULL) {
        s->reads_mode = mode;
        return 0;
    }
    s->reads_mode = 0;
    for (size_t i = 0; i < n; i++) {
        pqlib.PQclear(res[i]);
        res[i] = NULL;
    }
    *gone = fail && strcmp(sqlstate(fail), "42P01") == 0;
    rc = pg_fail(s, fail, e, "listing messages");
    pqlib.PQclear(fail);
    if (!s->in_batch) /* the SET after the failure was skipped */
        reads_reset(s);
    return rc;
}

static int
cmp_newest(const void *a, const void *b)
{
    const struct mc_record *x = *(const struct mc_record *const *)a;
    const struct mc_record *y = *(const struct mc_record *const *)b;
    if (x->created_at != y->created_at)
        return x->created_at > y->created_at ? -1 : 1;
    return -strcmp(x->id, y->id);
}

/*
 * The days whose partitions are attached (those of herald_messages),
 * ascending: asked again when `fresh` or when the last answer is
 * DAYS_TTL_MS old. The look-up was 10-20 % of the server's work for a
 * list. A day dropped meanwhile fails its query, and mc_list asks again
 * (fresh); a day attached meanwhile was attached ahead of its records
 * (today's and tomorrow's exist from the first open and every batch on),
 * but for an import or a clock ahead, whose records show a second later.
 */
#define DAYS_TTL_MS 1000

/* s->adays, read again when `fresh` or DAYS_TTL_MS old. */
static int
adays_refresh(struct pgs *s, int fresh, struct herr *e)
{
    int64_t now = clock_mono_ms();
    if (!fresh && s->adays != NULL && now - s->adays_ms < DAYS_TTL_MS)
        return 0;
    struct params none;
    p_init(&none);
    PGresult *res = query_prepared(s, S_DAYS, &none, e, "listing messages");
    if (res == NULL)
        return HERR_STORE;
    int32_t *v = NULL;
    size_t nv = 0, cap = 0;
    for (int i = 0; i < pqlib.PQntuples(res); i++) {
        int32_t day;
        if (day_parse(pqlib.PQgetvalue(res, i, 0), "herald_messages", &day) ==
            0)
            days_add(&v, &nv, &cap, day);
    }
    pqlib.PQclear(res);
    free(s->adays);
    s->adays = v ? v : xcalloc(1, sizeof *v);
    s->nadays = nv;
    s->adays_ms = now;
    return 0;
}

/* 1 when `day`'s partitions are attached, by the list of attached days
 * (read at most once a second). */
static int
day_attached(struct pgs *s, int32_t day)
{
    size_t pos;
    struct herr e = {0};
    return adays_refresh(s, 0, &e) == 0 &&
           days_find(s->adays, s->nadays, day, &pos);
}

/* A copy of the attached days (mc_list walks it while a retry may read
 * them again). */
static int
attached_days(struct pgs *s, int32_t **out, size_t *n, int fresh,
              struct herr *e)
{
    *out = NULL;
    *n = 0;
    int rc = adays_refresh(s, fresh, e);
    if (rc)
        return rc;
    *out = xmalloc((s->nadays ? s->nadays : 1) * sizeof **out);
    memcpy(*out, s->adays, s->nadays * sizeof **out);
    *n = s->nadays;
    return 0;
}

#define FETCH_SQL_WITH(cols)                                                   \
    "SELECT " cols " FROM unnest($1::bigint[], $2::text[]) AS k (at, id)"      \
    " JOIN herald_messages m ON m.created_at = k.at AND m.id = k.id"           \
    " JOIN herald_message_content c ON c.created_at = k.at AND c.id = k.id"
#define FETCH_SQL FETCH_SQL_WITH(COLS)
#define FETCH_SQL_NO_BODIES FETCH_SQL_WITH(COLS_NO_BODIES)
#define LIST_GROUP_MAX 8

/* The records of keys k (appended to v, *cnt): one statement per day,
 * the days at once; text and html left NULL with no_bodies. */
static int
fetch_keys(struct pgs *s, const struct keys *k, int no_bodies,
           struct mc_record **v, size_t *cnt, struct herr *e)
{
    size_t ndays = 0;
    for (size_t i = 0; i < k->n; i++)
        if (i == 0 || day_of(k->at[i]) != day_of(k->at[i - 1]))
            ndays++;
    char **sql = xcalloc(ndays, sizeof *sql);
    struct params *p = xcalloc(ndays, sizeof *p);
    PGresult **res = xcalloc(ndays, sizeof *res);
    size_t d = 0;
    for (size_t i = 0; i < k->n; d++) {
        int64_t day = day_of(k->at[i]);
        size_t j = i;
        while (j < k->n && day_of(k->at[j]) == day)
            j++;
        struct buf at;
        buf_init(&at, 0);
        buf_puts(&at, "{");
        for (size_t x = i; x < j; x++)
            buf_printf(&at, "%s%lld", x > i ? "," : "", (long long)k->at[x]);
        buf_puts(&at, "}");
        p_init(&p[d]);
        p_take(&p[d], buf_take(&at, NULL));
        p_take(&p[d], text_array((const char *const *)k->id + i, j - i));
        sql[d] = sql_on_day(no_bodies ? FETCH_SQL_NO_BODIES : FETCH_SQL,
                            (int32_t)day);
        i = j;
    }
    int gone;
    int rc = day_reads(s, ndays, sql, p, NULL, 0, 1, res, &gone, e);
    for (size_t x = 0; x < ndays; x++) {
        for (int r = 0; rc == 0 && r < pqlib.PQntuples(res[x]); r++) {
            v[*cnt] = row_record(res[x], r);
            if (v[*cnt] == NULL)
                rc = herr_set(e, HERR_STORE, "status",
                              "a stored record has an unknown status");
            else
                (*cnt)++;
        }
        pqlib.PQclear(res[x]);
        free(sql[x]);
        p_free(&p[x]);
    }
    free(res);
    free(sql);
    free(p);
    return rc;
}

/*
 * mc_list by recipient (`to`), records in [lo, hi): the key query is one
 * statement on herald_recipients (and the record's tables for the other
 * filters), prepared with a generic plan: planned once per connection, a
 * backward walk of (email, created_at, id) whatever the address's
 * frequency, one index descent per period of RCPT_DAYS days. A
 * recipient's rows outlive their record until their whole period is
 * past the retention cutoff, so the page is what the keys' records are:
 * when some are gone, the keys after the last one are asked for until
 * the page is full or there are no more.
 */
static int
list_rcpt(struct pgs *s, const struct mc_query *q, int64_t lo, int64_t hi,
          struct mc_record ***out, size_t *n, struct herr *e)
{
    struct mc_query qq = *q;
    struct mc_record **v =
        xcalloc(q->limit > 0 ? (size_t)q->limit : 1, sizeof *v);
    size_t cnt = 0;
    int rc = 0;
    for (int again = 0; rc == 0 && (int)cnt < q->limit;) {
        int want = q->limit - (int)cnt;
        struct buf b;
        struct params p;
        buf_init(&b, 0);
        list_sql(&qq, lo != INT64_MIN, lo, hi != INT64_MAX, hi, want,
                 LQ_WALK_FIRST, &b, &p);
        char *sql = buf_take(&b, NULL);
        PGresult *res = NULL;
        int gone;
        rc = day_reads(s, 1, &sql, &p, NULL, 0, 0, &res, &gone, e);
        free(sql);
        p_free(&p);
        if (rc && gone && !s->in_batch && !again) {
            /* a day was dropped meanwhile (retention) */
            again = 1;
            rc = 0;
            continue;
        }
        if (rc)
            break;
        struct keys k = {0};
        keys_take(&k, res, (size_t)want);
        pqlib.PQclear(res);
        size_t before = cnt;
        if (k.n > 0)
            rc = fetch_keys(s, &k, q->f->no_bodies, v, &cnt, e);
        int more = rc == 0 && k.n == (size_t)want && cnt - before < k.n;
        if (more) {
            qq.has_cursor = 1;
            qq.cursor_at = k.at[k.n - 1];
            snprintf(qq.cursor_id, sizeof qq.cursor_id, "%s", k.id[k.n - 1]);
        }
        keys_free(&k);
        if (!more)
            break;
    }
    if (s->reads_mode) /* no records to read, or a failure */
        reads_reset(s);
    if (rc || cnt == 0) {
        mc_records_free(v, cnt);
        return rc;
    }
    qsort(v, cnt, sizeof *v, cmp_newest);
    *out = v;
    *n = cnt;
    return 0;
}

/*
 * mc_list: the attached days, newest first, from the day of the newest
 * time wanted (now, until, the cursor) down to since: each day's key
 * query names that day's partitions, so it plans nothing else, locks
 * nothing else, and is planned once per connection (a prepared
 * statement, generic plan). The days go in groups of 1, 2, 4, 8 (each
 * group one round trip) until the page is full; then the page's records
 * are read, a statement per day, in one round trip too.
 */
static int
pg_list(void *state, const struct mc_query *q, struct mc_record ***out,
        size_t *n, struct herr *e)
{
    struct pgs *s = state;
    const struct mc_filter *f = q->f;
    *out = NULL;
    *n = 0;
    pipe_settle(s);
    int rc = s->in_batch ? batch_gone(s, e) : ensure_conn(s, e);
    if (rc)
        return rc;
    int64_t hi = INT64_MAX, lo = f->since > 0 ? f->since : INT64_MIN;
    if (f->until > 0)
        hi = f->until + 1;
    if (q->has_cursor && q->cursor_at + 1 < hi)
        hi = q->cursor_at + 1;
    if (q->to)
        return list_rcpt(s, q, lo, hi, out, n, e);
    int32_t *days = NULL;
    size_t ndays = 0;
    struct keys k = {0};
    rc = attached_days(s, &days, &ndays, 0, e);
    size_t j = ndays; /* days[j - 1] is the next one to read */
    while (j > 0 && hi != INT64_MAX && (int64_t)days[j - 1] * DAY_MS >= hi)
        j--;
    size_t group = 1;
    enum lq lq = LQ_WALK_FIRST;
    int32_t today = (int32_t)day_of(clock_now_ms());
    for (int again = 0; rc == 0 && (int)k.n < q->limit && j > 0;) {
        if (lo != INT64_MIN && ((int64_t)days[j - 1] + 1) * DAY_MS <= lo)
            break;
        /* the group's days, newest first: a day cut by since, until or
         * the cursor is a statement of its own, planned with its values;
         * a run of whole days is one statement, a UNION ALL of each
         * day's query, generic */
        size_t g = 0, nd = 0;
        char *sql[LIST_GROUP_MAX];
        int custom[LIST_GROUP_MAX];
        struct params p[LIST_GROUP_MAX];
        struct buf run[LIST_GROUP_MAX];
        size_t runlen[LIST_GROUP_MAX];
        PGresult *res[LIST_GROUP_MAX] = {0};
        int want = q->limit - (int)k.n;
        int whole_past = 0; /* a whole day before today in the group */
        /* days after today (empty but for a clock ahead) count as
         * today: the first group is today's */
        for (size_t counted = 0;
             counted < group && nd < LIST_GROUP_MAX && j - nd > 0; nd++) {
            int32_t day = days[j - 1 - nd];
            if (day <= today)
                counted++;
            int64_t d0 = (int64_t)day * DAY_MS;
            if (lo != INT64_MIN && d0 + DAY_MS <= lo)
                break;
            int64_t wlo = d0 > lo ? d0 : lo;
            int64_t whi = d0 + DAY_MS < hi ? d0 + DAY_MS : hi;
            /* a whole day: no bounds, and a generic plan (with bounds
             * it would think the range holds next to nothing). A q
             * search's statement decides its plan by its shape (enum
             * lq), generic too. */
            int cut = wlo > d0 || whi < d0 + DAY_MS;
            if (!cut && day < today)
                whole_past = 1;
            /* joins the run before it (same parameters) */
            int join = !cut && g > 0 && !custom[g - 1];
            struct params dp, *pp = join ? &dp : &p[g];
            struct buf b;
            buf_init(&b, 0);
            list_sql(q, wlo > d0, wlo, whi < d0 + DAY_MS, whi, want, lq, &b,
                     pp);
            char *one = sql_on_day(b.p, day);
            buf_free(&b);
            if (join) {
                buf_printf(&run[g - 1], " UNION ALL (%s)", one);
                runlen[g - 1]++;
                free(one);
                p_free(&dp);
                continue;
            }
            custom[g] = cut;
            buf_init(&run[g], 0);
            buf_printf(&run[g], "(%s)", one);
            free(one);
            runlen[g] = 1;
            g++;
        }
        for (size_t x = 0; x < g; x++) {
            if (runlen[x] == 1) {
                /* without its parentheses */
                run[x].p[run[x].len - 1] = '\0';
                sql[x] = xstrdup(run[x].p + 1);
            } else {
                sql[x] = xasprintf("SELECT * FROM (%s) u ORDER BY 1 DESC,"
                                   " 2 DESC LIMIT $%d",
                                   run[x].p, p[x].n);
            }
            buf_free(&run[x]);
        }
        int gone;
        rc = day_reads(s, g, sql, p, custom, q->nwords > 0, 0, res, &gone, e);
        for (size_t x = 0; x < g; x++) {
            if (rc == 0)
                keys_take(&k, res[x], (size_t)q->limit);
            pqlib.PQclear(res[x]);
            free(sql[x]);
            p_free(&p[x]);
        }
        if (rc && gone && !s->in_batch && !again) {
            /* a day was dropped meanwhile (retention): the days again */
            again = 1;
            keys_free(&k);
            free(days);
            rc = attached_days(s, &days, &ndays, 1, e);
            lq = LQ_WALK_FIRST;
            j = ndays;
            while (j > 0 && hi != INT64_MAX &&
                   (int64_t)days[j - 1] * DAY_MS >= hi)
                j--;
            group = 1;
            continue;
        }
        j -= nd;
        if (group < LIST_GROUP_MAX)
            group *= 2;
        /* a whole day that did not fill the page: q's words are rare
         * (known only without other filters: with them, the walk may
         * have seen the day's every record, few, and the words be
         * common in the rest) */
        if (q->nwords && whole_past && (int)k.n < q->limit && !f->org &&
            !f->account && !f->has_status && !f->type && !f->path && !q->from &&
            !f->nscope)
            lq = LQ_INDEX;
    }
    free(days);
    if (rc == 0 && k.n > 0) {
        struct mc_record **v = xcalloc(k.n, sizeof *v);
        size_t cnt = 0;
        rc = fetch_keys(s, &k, f->no_bodies, v, &cnt,
                        e); /* the usual settings back */
        if (rc) {
            mc_records_free(v, cnt);
        } else {
            qsort(v, cnt, sizeof *v, cmp_newest);
            *out = v;
            *n = cnt;
        }
    }
    if (s->reads_mode) /* no page to read, or a failure */
        reads_reset(s);
    keys_free(&k);
    return rc;
}

/* ---- retention ---- */

/* One statement with $1 (and $2) bound; the count it returns in *count
 * (a SELECT count(*)), else the rows it changed. */
static int
purge_stmt(struct pgs *s, const char *sql, int64_t a, int64_t b, int nparams,
           long long *count, struct herr *e)
{
    struct params p;
    p_init(&p);
    p_i64(&p, a);
    if (nparams > 1)
        p_i64(&p, b);
    PGresult *res = query(s, sql, &p, e, "purging old records");
    p_free(&p);
    if (res == NULL)
        return HERR_STORE;
    *count = pqlib.PQresultStatus(res) == PGRES_TUPLES_OK &&
                     pqlib.PQntuples(res) == 1
                 ? val_i64(res, 0, 0)
                 : atoll(pqlib.PQcmdTuples(res));
    pqlib.PQclear(res);
    return 0;
}

/* Detaches (without stopping readers and writers) and drops partition
 * <table>_p<dn>: attached, being detached (an interrupted earlier purge),
 * or already detached. */
static int
drop_part(struct pgs *s, const char *t, const char *dn, struct herr *e)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT i.inhdetachpending FROM pg_inherits i WHERE"
             " i.inhrelid = to_regclass('%s_p%s')",
             t, dn);
    PGresult *res = query(s, sql, NULL, e, "purging old records");
    if (res == NULL)
        return HERR_STORE;
    int attached = pqlib.PQntuples(res) == 1;
    int pending = attached && strcmp(pqlib.PQgetvalue(res, 0, 0), "t") == 0;
    pqlib.PQclear(res);
    int rc = 0;
    if (attached) {
        snprintf(sql, sizeof sql, "ALTER TABLE %s DETACH PARTITION %s_p%s %s",
                 t, t, dn, pending ? "FINALIZE" : "CONCURRENTLY");
        rc = run(s, sql, e, "detaching an old partition");
    }
    if (rc == 0) {
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s_p%s", t, dn);
        rc = run(s, sql, e, "dropping an old partition");
    }
    return rc;
}

/* Drops the partitions of `day`; *rows: how many records it held. */
static int
drop_day(struct pgs *s, int32_t day, long long *rows, struct herr *e)
{
    char dn[16];
    day_name(day, dn);
    char sql[256];
    *rows = 0;
    for (size_t i = 0; i < NPART_TABLES; i++) {
        snprintf(sql, sizeof sql, "SELECT to_regclass('%s_p%s') IS NOT NULL",
                 part_tables[i], dn);
        PGresult *res = query(s, sql, NULL, e, "purging old records");
        if (res == NULL)
            return HERR_STORE;
        int has = strcmp(pqlib.PQgetvalue(res, 0, 0), "t") == 0;
        pqlib.PQclear(res);
        if (!has)
            continue;
        if (i == 0) {
            snprintf(sql, sizeof sql, "SELECT count(*) FROM %s_p%s",
                     part_tables[i], dn);
            res = query(s, sql, NULL, e, "purging old records");
            if (res == NULL)
                return HERR_STORE;
            *rows = val_i64(res, 0, 0);
            pqlib.PQclear(res);
        }
        /* the day's registry entries first, found through the day's own
         * rows (the registry has no index on created_at since version
         * 3), through either table (an interrupted purge may have dropped
         * one): the next purge finds nothing more to delete and drops
         * what is left */
        snprintf(sql, sizeof sql,
                 "DELETE FROM herald_message_ids i USING %s_p%s m"
                 " WHERE i.id = m.id AND i.created_at = m.created_at",
                 part_tables[i], dn);
        int rc = run(s, sql, e, "purging old records");
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < NPART_TABLES; i++) {
        int rc = drop_part(s, part_tables[i], dn, e);
        if (rc)
            return rc;
    }
    snprintf(sql, sizeof sql,
             "DELETE FROM herald_bodies_cleared WHERE day = %d", (int)day);
    int rc = run(s, sql, e, "purging old records");
    if (rc)
        return rc;
    days_known_remove(s, day);
    return 0;
}

/*
 * Bodies (text, html) of the records created before `before` are
 * cleared, day partition by day partition, oldest first, in chunks of
 * 5,000 in (created_at, id) order. herald_bodies_cleared holds, per day,
 * the instant before which every body of that day is cleared (a chunk
 * moves it to its last created_at); a run starts each day there, so it
 * never reads again what an earlier one cleared, without an index of the
 * bodies not yet cleared (which every insert would write to). Inserting
 * into a past day clears its mark (ensure_day). With `dry_run`, counts
 * what would be cleared. *n: bodies cleared (or counted); *more: a limit
 * (`room` bodies) stopped the work.
 */
static int
purge_bodies(struct pgs *s, int64_t before, int64_t after, int dry_run,
             long long room, long long *n, int *more, struct herr *e)
{
    *n = 0;
    *more = 0;
    int32_t *days = NULL;
    size_t ndays = 0;
    int rc = list_days(s, &days, &ndays, e);
    PGresult *res = NULL;
    if (rc == 0) {
        res = query(s, "SELECT day, before FROM herald_bodies_cleared", NULL, e,
                    "clearing old bodies");
        if (res == NULL)
            rc = HERR_STORE;
    }
    for (size_t i = 0; rc == 0 && i < ndays; i++) {
        int32_t day = days[i];
        int64_t lo = (int64_t)day * DAY_MS, hi = lo + DAY_MS;
        if (lo >= before)
            break;
        if (hi > before)
            hi = before;
        if (lo < after)
            lo = after;
        for (int k = 0; k < pqlib.PQntuples(res); k++)
            if (atoi(pqlib.PQgetvalue(res, k, 0)) == day &&
                atoll(pqlib.PQgetvalue(res, k, 1)) > lo)
                lo = atoll(pqlib.PQgetvalue(res, k, 1));
        if (lo >= hi)
            continue;
        char dn[16], sql[768];
        day_name(day, dn);
        snprintf(sql, sizeof sql,
                 "SELECT to_regclass('herald_message_content_p%s') IS NOT NULL",
                 dn);
        PGresult *x = query(s, sql, NULL, e, "clearing old bodies");
        if (x == NULL) {
            rc = HERR_STORE;
            break;
        }
        int has = strcmp(pqlib.PQgetvalue(x, 0, 0), "t") == 0;
        pqlib.PQclear(x);
        if (!has)
            continue;
        if (dry_run) {
            snprintf(sql, sizeof sql,
                     "SELECT count(*) FROM herald_message_content_p%s WHERE"
                     " created_at >= $1::bigint AND created_at < $2::bigint"
                     " AND NOT body_expired",
                     dn);
            long long c = 0;
            rc = purge_stmt(s, sql, lo, hi, 2, &c, e);
            *n += c;
            continue;
        }
        snprintf(sql, sizeof sql,
                 "WITH k AS (SELECT created_at, id FROM"
                 " herald_message_content_p%s WHERE created_at >= $1::bigint"
                 " AND created_at < $2::bigint AND NOT body_expired"
                 " ORDER BY created_at, id LIMIT 5000),"
                 " u AS (UPDATE herald_message_content_p%s c SET text = NULL,"
                 " html = NULL, body_expired = true FROM k"
                 " WHERE c.created_at = k.created_at AND c.id = k.id"
                 " RETURNING c.created_at)"
                 " SELECT count(*), coalesce(max(created_at), $1::bigint)"
                 " FROM u",
                 dn, dn);
        for (;;) {
            if (room > 0 && *n >= room) {
                *more = 1;
                break;
            }
            struct params p;
            p_init(&p);
            p_i64(&p, lo);
            p_i64(&p, hi);
            x = query(s, sql, &p, e, "clearing old bodies");
            p_free(&p);
            if (x == NULL) {
                rc = HERR_STORE;
                break;
            }
            long long c = val_i64(x, 0, 0);
            int64_t last = val_i64(x, 0, 1);
            pqlib.PQclear(x);
            *n += c;
            /* every body before `last` is cleared; before `hi` when this
             * was the day's (or the cutoff's) last chunk */
            int64_t mark = c < 5000 ? hi : last;
            p_init(&p);
            p_i64(&p, day);
            p_i64(&p, mark);
            x = query(s,
                      "INSERT INTO herald_bodies_cleared (day, before)"
                      " VALUES ($1::integer, $2::bigint) ON CONFLICT (day)"
                      " DO UPDATE SET before = greatest("
                      "herald_bodies_cleared.before, excluded.before)",
                      &p, e, "clearing old bodies");
            p_free(&p);
            if (x == NULL) {
                rc = HERR_STORE;
                break;
            }
            pqlib.PQclear(x);
            if (c < 5000)
                break;
            lo = last;
        }
        if (*more)
            break;
    }
    pqlib.PQclear(res);
    free(days);
    return rc;
}

static int
purge_records(struct pgs *s, int64_t before, long long max,
              struct mc_purge_result *out, long long *last, struct herr *e)
{
#define ROOM (max <= 0 || out->records + out->bodies < max)
    int32_t *parts = NULL;
    size_t nparts = 0;
    int rc = list_days(s, &parts, &nparts, e);
    /* whole days older than the cutoff: their partitions go */
    for (size_t i = 0; rc == 0 && i < nparts && ROOM; i++) {
        if ((int64_t)(parts[i] + 1) * DAY_MS > before)
            break;
        long long rows = 0;
        rc = drop_day(s, parts[i], &rows, e);
        if (rc == 0) {
            out->records += rows;
            *last = rows + 1; /* a partition is work done, even empty */
        }
    }
    free(parts);
    /* the rows of the day that straddles the cutoff, in chunks, with their
     * registry entries */
    long long n = 1;
    while (rc == 0 && n > 0 && ROOM) {
        rc = purge_stmt(
            s,
            "WITH k AS (SELECT created_at, id FROM herald_messages"
            " WHERE created_at < $1::bigint ORDER BY created_at, id"
            " LIMIT 5000),"
            " dm AS (DELETE FROM herald_messages m USING k"
            " WHERE m.created_at < $1::bigint AND m.created_at = k.created_at"
            " AND m.id = k.id RETURNING m.id),"
            " dc AS (DELETE FROM herald_message_content c USING k"
            " WHERE c.created_at < $1::bigint AND c.created_at = k.created_at"
            " AND c.id = k.id),"
            " di AS (DELETE FROM herald_message_ids i USING k"
            " WHERE i.id = k.id AND i.created_at = k.created_at)"
            " SELECT count(*) FROM dm",
            before, 0, 1, &n, e);
        if (rc == 0) {
            out->records += n;
            *last = n;
        }
    }
    /* then the periods of herald_recipients wholly before the cutoff
     * (after the records: a query by recipient skips a row whose record
     * is gone), when the records are done */
    PGresult *res = NULL;
    if (rc == 0 && *last == 0)
        res = query(s,
                    "SELECT relname FROM pg_class WHERE relkind = 'r' AND"
                    " relnamespace = current_schema()::regnamespace AND"
                    " relname ~ '^herald_recipients_p[0-9]{8}$'",
                    NULL, e, "listing partitions");
    if (rc == 0 && *last == 0 && res == NULL)
        rc = HERR_STORE;
    for (int i = 0; rc == 0 && res && i < pqlib.PQntuples(res); i++) {
        int32_t day;
        if (day_parse(pqlib.PQgetvalue(res, i, 0), "herald_recipients", &day) !=
                0 ||
            (int64_t)(day + RCPT_DAYS) * DAY_MS > before)
            continue;
        char dn[16];
        day_name(day, dn);
        rc = drop_part(s, "herald_recipients", dn, e);
    }
    pqlib.PQclear(res);
    return rc;
#undef ROOM
}

static int
pg_purge(void *state, int64_t records_before, int64_t bodies_before,
         int dry_run, long long max, struct mc_purge_result *out,
         struct herr *e)
{
    struct pgs *s = state;
    if (s->in_batch)
        return herr_set(e, HERR_INVALID, NULL, "purging inside a batch");
    int rc = ensure_conn(s, e);
    if (rc)
        return rc;
    if (dry_run) {
        if (records_before)
            rc = purge_stmt(s,
                            "SELECT count(*) FROM herald_messages"
                            " WHERE created_at < $1::bigint",
                            records_before, 0, 1, &out->records, e);
        int more = 0;
        if (rc == 0 && bodies_before > records_before)
            rc = purge_bodies(s, bodies_before, records_before, 1, 0,
                              &out->bodies, &more, e);
        return rc;
    }
    /* one purge at a time per store: a second waits, then finds little */
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%d, %d)", LOCK_NS,
             LOCK_PURGE);
    if ((rc = run(s, sql, e, "purging old records")) != 0)
        return rc;
    long long last = 0;
    if (records_before)
        rc = purge_records(s, records_before, max, out, &last, e);
    if (rc == 0 && last == 0 && bodies_before > records_before) {
        long long room = max > 0 ? max - out->records : 0;
        int more = 0;
        if (max > 0 && room <= 0) {
            last = 1;
        } else {
            rc = purge_bodies(s, bodies_before, 0, 0, room, &out->bodies, &more,
                              e);
            last = more;
        }
    }
    snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%d, %d)", LOCK_NS,
             LOCK_PURGE);
    if (pqlib.PQstatus(s->conn) == CONNECTION_OK)
        pqlib.PQclear(pqlib.PQexec(s->conn, sql));
    out->more = rc == 0 && last > 0;
    return rc;
}

static int
pg_schema(void *state, int *version, int *before)
{
    struct pgs *s = state;
    *version = s->schema_now;
    *before = s->schema_before;
    return 0;
}

#define PG_BACKEND(name)                                                       \
    {                                                                          \
        .scheme = name, .open = pg_open, .close = pg_close, .begin = pg_begin, \
        .commit = pg_commit, .rollback = pg_rollback, .insert = pg_insert,     \
        .update = pg_update, .get = pg_get, .list = pg_list,                   \
        .purge = pg_purge, .schema = pg_schema,                                \
        .insert_deferred = pg_insert_deferred,                                 \
        .update_deferred = pg_update_deferred, .sync = pg_sync,                \
    }

const struct mc_backend mc_backend_pg = PG_BACKEND("postgresql");
const struct mc_backend mc_backend_postgres = PG_BACKEND("postgres");
