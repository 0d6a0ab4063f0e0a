/*
 * redis_uv — attaches a hiredis async context to a libuv loop.
 *
 * Unlike hiredis' bundled adapter, writes are not driven by poll
 * readiness: commands issued during a loop turn are written together by
 * a prepare handle just before the loop waits for I/O, and the socket is
 * watched for writability only when the kernel buffer is full. That is
 * one write per turn and no epoll changes per command.
 *
 * The adapter frees its state in the poll handle's close callback, after
 * hiredis calls cleanup (on redisAsyncFree or a disconnect).
 */
#ifndef HERALD_REDIS_UV_H
#define HERALD_REDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

/* Sets up the per-loop flusher (once per loop). */
void redis_uv_init(uv_loop_t *loop);

/* Closes the per-loop flusher; call once every context is freed. */
void redis_uv_done(void (*cb)(uv_handle_t *h));

/* Returns REDIS_OK or REDIS_ERR (already attached / out of memory). */
int redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop);

#endif
