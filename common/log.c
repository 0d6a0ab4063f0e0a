#include "log.h"
#include "clock.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *prog_name = "herald";
static int buffered;
static struct buf pending = {NULL, 0, 0, LOG_BUF_MAX};
static enum log_level min_level = LOG_INFO;
static const char *names[] = {"debug", "info", "warn", "error", "fatal"};

void
log_init(const char *prog, const char *level)
{
    prog_name = prog;
    for (int i = 0; i <= LOG_ERROR; i++)
        if (level && strcmp(level, names[i]) == 0)
            min_level = (enum log_level)i;
}

int
log_enabled(enum log_level lvl)
{
    return lvl >= min_level;
}

static void
put_json_str(struct buf *b, const char *s)
{
    buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            buf_puts(b, "\\\"");
            break;
        case '\\':
            buf_puts(b, "\\\\");
            break;
        case '\n':
            buf_puts(b, "\\n");
            break;
        case '\r':
            buf_puts(b, "\\r");
            break;
        case '\t':
            buf_puts(b, "\\t");
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                buf_printf(b, "\\u%04x", *p);
            else
                buf_append(b, p, 1);
        }
    }
    buf_puts(b, "\"");
}

static void
emit(enum log_level lvl, const char *job, const char *org, int attempt,
     const char *msg, va_list ap)
{
    struct buf b;
    char ts[CLOCK_RFC3339_LEN];
    buf_init(&b, 64 * 1024);
    clock_rfc3339(clock_now_ms(), ts);
    buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"prog\":", ts, names[lvl]);
    put_json_str(&b, prog_name);
    if (job) {
        buf_puts(&b, ",\"job\":");
        put_json_str(&b, job);
        buf_puts(&b, ",\"org\":");
        put_json_str(&b, org ? org : "");
        buf_printf(&b, ",\"attempt\":%d", attempt);
    }
    buf_puts(&b, ",\"msg\":");
    put_json_str(&b, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (k == NULL)
            break;
        const char *v = va_arg(ap, const char *);
        buf_puts(&b, ",");
        put_json_str(&b, k);
        buf_puts(&b, ":");
        put_json_str(&b, v ? v : "");
    }
    buf_puts(&b, "}\n");
    if (buffered && lvl <= LOG_INFO && buf_append(&pending, b.p, b.len) == 0) {
        buf_free(&b);
        return;
    }
    log_flush();
    fwrite(b.p, 1, b.len, stderr);
    buf_free(&b);
}

void
log_set_buffered(int on)
{
    if (!on)
        log_flush();
    buffered = on;
}

void
log_flush(void)
{
    if (pending.len == 0)
        return;
    fwrite(pending.p, 1, pending.len, stderr);
    buf_reset(&pending);
}

void
log_msg(enum log_level lvl, const char *msg, ...)
{
    if (lvl < min_level)
        return;
    va_list ap;
    va_start(ap, msg);
    emit(lvl, NULL, NULL, 0, msg, ap);
    va_end(ap);
}

void
log_job(enum log_level lvl, const char *job_id, const char *org, int attempt,
        const char *msg, ...)
{
    if (lvl < min_level)
        return;
    va_list ap;
    va_start(ap, msg);
    emit(lvl, job_id ? job_id : "-", org, attempt, msg, ap);
    va_end(ap);
}

int
log_due(long long *last_ms, long long every_ms)
{
    long long now = (long long)clock_now_ms();
    if (*last_ms && now - *last_ms < every_ms)
        return 0;
    *last_ms = now;
    return 1;
}
