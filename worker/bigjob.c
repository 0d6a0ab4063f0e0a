#include "bigjob.h"
#include "clock.h"
#include "dead.h"
#include "job.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct item {
    struct item *next;
    size_t len;
};

enum phase { B_IDLE, B_STAGE, B_SCAN, B_WRITE, B_FINISH };

struct bigjob {
    struct queue *q;
    struct item *head, *tail;
    int stopped;
    enum phase phase;
    int restarts;
    size_t off;  /* next byte of the job to read */
    size_t woff; /* next byte of the entry to write */
    int writes_out;
    char *write_error; /* the first write Redis refused */
    struct dead_scan scan;
    size_t text_len; /* the job JSON-escaped, counted in the scan */
    struct dead_b64 b64;
    int text;
    char id[JOB_ID_MAX + 1];
};

static void step(struct bigjob *b);

struct bigjob *
bigjob_new(struct queue *q)
{
    struct bigjob *b = xcalloc(1, sizeof *b);
    b->q = q;
    return b;
}

void
bigjob_add(struct bigjob *b, size_t len)
{
    struct item *it = xcalloc(1, sizeof *it);
    it->len = len;
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    char n[32];
    snprintf(n, sizeof n, "%zu", len);
    log_msg(LOG_WARN,
            "took a job over the 10 MiB limit; moving it to dead in pieces",
            "bytes", n, NULL);
    if (b->phase == B_IDLE)
        step(b);
}

size_t
bigjob_count(const struct bigjob *b, size_t len)
{
    size_t n = 0;
    for (const struct item *it = b->head; it; it = it->next)
        n += it->len == len;
    return n;
}

void
bigjob_stop(struct bigjob *b)
{
    b->stopped = 1;
}

void
bigjob_free(struct bigjob *b)
{
    if (b == NULL)
        return;
    while (b->head) {
        struct item *it = b->head;
        b->head = it->next;
        free(it);
    }
    free(b->write_error);
    free(b);
}

/* The current job is over (moved, gone, or given up): the next one. */
static void
next(struct bigjob *b)
{
    struct item *it = b->head;
    b->head = it->next;
    if (b->head == NULL)
        b->tail = NULL;
    free(it);
    b->phase = B_IDLE;
    b->restarts = 0;
    step(b);
}

static const char *
job_id(const struct bigjob *b)
{
    return b->id[0] ? b->id : NULL;
}

static void
give_up(struct bigjob *b, const char *why, const char *error)
{
    log_job(LOG_ERROR, job_id(b), NULL, 0, why, "error", error, NULL);
    next(b);
}

/* The stage went away: the job starts again from its copy. */
static void
restart(struct bigjob *b, const char *why)
{
    if (++b->restarts > BIGJOB_RESTARTS) {
        give_up(b,
                "could not move a job over the size limit to dead; it stays "
                "in the processing list",
                why);
        return;
    }
    log_job(LOG_WARN, job_id(b), NULL, 0,
            "moving a job over the size limit: starting again", "reason", why,
            NULL);
    b->phase = B_IDLE;
    step(b);
}

static int
ignored(struct bigjob *b)
{
    return b->stopped;
}

static void on_read(void *ud, redisReply *r);

static void
read_piece(struct bigjob *b)
{
    size_t left = b->head->len - b->off;
    queue_big_read(b->q, b->off, left < BIGJOB_PIECE ? left : BIGJOB_PIECE,
                   on_read, b);
}

static void on_finish(void *ud, redisReply *r);

/* Every piece written and none refused: the entry is whole. */
static void
maybe_finish(struct bigjob *b)
{
    if (b->phase != B_FINISH || b->writes_out > 0)
        return;
    if (b->write_error) {
        char *e = b->write_error;
        b->write_error = NULL;
        give_up(b,
                "could not write the dead entry of a job over the size "
                "limit; it stays in the processing list",
                e);
        free(e);
        return;
    }
    queue_big_finish(b->q, on_finish, b);
}

static void
on_write(void *ud, redisReply *r)
{
    struct bigjob *b = ud;
    b->writes_out--;
    if (ignored(b))
        return;
    if (r->type == REDIS_REPLY_ERROR && b->write_error == NULL)
        b->write_error = xstrdup(r->str);
    maybe_finish(b);
}

static void
write_at(struct bigjob *b, const char *p, size_t n)
{
    if (n == 0)
        return;
    b->writes_out++;
    queue_big_write(b->q, b->woff, p, n, on_write, b);
    b->woff += n;
}

static void
on_finish(void *ud, redisReply *r)
{
    struct bigjob *b = ud;
    if (ignored(b))
        return;
    if (r->type != REDIS_REPLY_INTEGER) {
        give_up(b,
                "could not move a job over the size limit to dead; it stays "
                "in the processing list",
                r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        return;
    }
    if (r->integer == -1) {
        restart(b, "the staged copy is gone");
        return;
    }
    char n[32];
    snprintf(n, sizeof n, "%zu", b->head->len);
    if (r->integer == 1)
        log_job(LOG_WARN, job_id(b), NULL, 0,
                "invalid job moved to dead: over the 10 MiB limit", "bytes", n,
                "kept_as", b->text ? "job" : "job_base64", NULL);
    else
        log_job(LOG_INFO, job_id(b), NULL, 0,
                "a job over the size limit left the processing list before "
                "it was moved (handed back?)",
                "bytes", n, NULL);
    next(b);
}

static void
on_read(void *ud, redisReply *r)
{
    struct bigjob *b = ud;
    if (ignored(b))
        return;
    if (r->type != REDIS_REPLY_STRING) {
        give_up(b,
                "could not read a job over the size limit; it stays in the "
                "processing list",
                r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        return;
    }
    size_t len = b->head->len;
    if (r->len == 0 || b->off + r->len > len) {
        restart(b, "the staged copy is gone");
        return;
    }
    b->off += r->len;
    if (b->phase == B_SCAN) {
        dead_scan_feed(&b->scan, r->str, r->len);
        b->text_len += dead_entry_text_len(r->str, r->len);
        if (b->off < len) {
            read_piece(b);
            return;
        }
        log_job(LOG_DEBUG, job_id(b), NULL, 0, "big job: scanned", NULL);
        /* pass 2: the entry, from its head */
        b->text = dead_scan_text(&b->scan);
        b->phase = B_WRITE;
        b->off = 0;
        b->woff = 0;
        memset(&b->b64, 0, sizeof b->b64);
        char why[96];
        snprintf(why, sizeof why, "job is %zu bytes, at most %u", len,
                 JOB_MAX_BYTES);
        char *head = dead_entry_head("invalid", "", why, job_id(b),
                                     clock_now_ms(), !b->text);
        size_t hl = strlen(head), tl = strlen(DEAD_ENTRY_TAIL);
        size_t body = b->text ? b->text_len : 4 * ((len + 2) / 3);
        write_at(b, head, hl);
        /* the tail first, at the entry's end: Redis sizes the string
         * once instead of growing it piece by piece */
        b->woff = hl + body;
        write_at(b, DEAD_ENTRY_TAIL, tl);
        b->woff = hl;
        free(head);
        read_piece(b);
        return;
    }
    struct buf out;
    buf_init(&out, 0);
    if (b->text)
        dead_entry_text(&out, r->str, r->len);
    else
        dead_entry_b64(&out, &b->b64, r->str, r->len);
    if (b->off >= len && !b->text)
        dead_entry_b64_end(&out, &b->b64);
    write_at(b, out.p, out.len);
    buf_free(&out);
    if (b->off < len) {
        read_piece(b);
        return;
    }
    log_job(LOG_DEBUG, job_id(b), NULL, 0, "big job: written", NULL);
    b->phase = B_FINISH;
    maybe_finish(b);
}

static void
on_stage(void *ud, redisReply *r)
{
    struct bigjob *b = ud;
    if (ignored(b))
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        give_up(b,
                "could not stage a job over the size limit; it stays in the "
                "processing list",
                r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        return;
    }
    if (r->element[0]->integer == 0) {
        log_msg(LOG_INFO,
                "a job over the size limit is no longer in the processing "
                "list (moved already, or handed back)",
                NULL);
        next(b);
        return;
    }
    const redisReply *id = r->element[1];
    b->id[0] = '\0';
    if (id->type == REDIS_REPLY_STRING && id->len < sizeof b->id) {
        memcpy(b->id, id->str, id->len);
        b->id[id->len] = '\0';
        if (!job_valid_id(b->id))
            b->id[0] = '\0';
    }
    log_job(LOG_DEBUG, job_id(b), NULL, 0, "big job: staged", NULL);
    b->phase = B_SCAN;
    b->off = 0;
    b->text_len = 0;
    memset(&b->scan, 0, sizeof b->scan);
    free(b->write_error);
    b->write_error = NULL;
    read_piece(b);
}

static void
step(struct bigjob *b)
{
    if (b->stopped || b->head == NULL || b->phase != B_IDLE)
        return;
    b->phase = B_STAGE;
    queue_big_stage(b->q, b->head->len, on_stage, b);
}
