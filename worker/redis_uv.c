#include "redis_uv.h"
#include "util.h"

#include <stdlib.h>

struct ruv {
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    uv_poll_t poll;
    int events;              /* what the poll handle watches now */
    int reading;             /* hiredis wants to read */
    int want_write;          /* hiredis has output */
    int poll_write;          /* output is waiting for writability */
    struct ruv *next, *prev; /* in the flush list */
    int listed;
};

static uv_prepare_t flusher;
static int flusher_ready;
static struct ruv *flush_list;

static void
unlist(struct ruv *r)
{
    if (!r->listed)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        flush_list = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = r->prev = NULL;
    r->listed = 0;
}

static void on_poll(uv_poll_t *h, int status, int events);

static void
update(struct ruv *r)
{
    int ev = (r->reading ? UV_READABLE : 0) | (r->poll_write ? UV_WRITABLE : 0);
    if (ev == r->events)
        return;
    r->events = ev;
    if (ev)
        uv_poll_start(&r->poll, ev, on_poll);
    else
        uv_poll_stop(&r->poll);
}

static void
on_poll(uv_poll_t *h, int status, int events)
{
    struct ruv *r = h->data;
    if (r->ac == NULL)
        return;
    redisAsyncContext *ac = r->ac;
    if (status < 0) {
        /* let hiredis find the error on the socket */
        events = UV_READABLE | UV_WRITABLE;
    }
    if (events & UV_READABLE)
        redisAsyncHandleRead(ac);
    if (r->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(ac);
}

static void
add_read(void *p)
{
    struct ruv *r = p;
    r->reading = 1;
    update(r);
}

static void
del_read(void *p)
{
    struct ruv *r = p;
    r->reading = 0;
    update(r);
}

static void
add_write(void *p)
{
    struct ruv *r = p;
    r->want_write = 1;
    if (!(r->ac->c.flags & REDIS_CONNECTED)) {
        /* connecting: completion shows as writability */
        r->poll_write = 1;
        update(r);
        return;
    }
    if (!r->listed && !r->poll_write) {
        r->next = flush_list;
        if (flush_list)
            flush_list->prev = r;
        flush_list = r;
        r->listed = 1;
    }
}

static void
del_write(void *p)
{
    struct ruv *r = p;
    r->want_write = 0;
    r->poll_write = 0;
    unlist(r);
    update(r);
}

static void
on_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
cleanup(void *p)
{
    struct ruv *r = p;
    unlist(r);
    r->ac = NULL;
    r->reading = r->want_write = r->poll_write = 0;
    uv_poll_stop(&r->poll);
    uv_close((uv_handle_t *)&r->poll, on_closed);
}

/* Before the loop waits: write what every context has buffered. */
static void
on_prepare(uv_prepare_t *h)
{
    (void)h;
    while (flush_list) {
        struct ruv *r = flush_list;
        unlist(r);
        if (r->ac == NULL || !r->want_write)
            continue;
        redisAsyncContext *ac = r->ac;
        /* hiredis calls del_write when all is written, add_write (which
         * lists us again) when not: then wait for writability instead */
        redisAsyncHandleWrite(ac);
        if (r->ac != NULL && r->want_write) {
            unlist(r);
            r->poll_write = 1;
            update(r);
        }
    }
}

void
redis_uv_init(uv_loop_t *loop)
{
    if (flusher_ready)
        return;
    uv_prepare_init(loop, &flusher);
    uv_prepare_start(&flusher, on_prepare);
    uv_unref((uv_handle_t *)&flusher); /* does not keep the loop alive */
    flusher_ready = 1;
}

void
redis_uv_done(void (*cb)(uv_handle_t *h))
{
    if (!flusher_ready)
        return;
    flusher_ready = 0;
    uv_prepare_stop(&flusher);
    uv_close((uv_handle_t *)&flusher, cb);
}

int
redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data != NULL)
        return REDIS_ERR;
    struct ruv *r = xcalloc(1, sizeof *r);
    if (uv_poll_init_socket(loop, &r->poll, ac->c.fd) != 0) {
        free(r);
        return REDIS_ERR;
    }
    r->ac = ac;
    r->poll.data = r;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    ac->ev.data = r;
    return REDIS_OK;
}
