/*
 * log — one JSON object per line on stderr.
 *
 * Every line has "ts", "level", "prog" and "msg". Job lines add "job",
 * "org" and "attempt" (log_job). Extra fields are given as alternating
 * key / value strings ending with NULL; values are JSON-escaped. Never
 * pass a password or a message body.
 */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL };

/* Program name and minimum level ("debug", "info", "warn", "error"). */
void log_init(const char *prog, const char *level);

/*
 * Buffering for a busy event loop: when on, debug and info lines are
 * collected (up to LOG_BUF_MAX bytes) and written by log_flush(), which
 * the loop calls once per turn; warn and above flush everything at once,
 * in order. Off by default (every line is written as it is made).
 */
#define LOG_BUF_MAX (64 * 1024)
void log_set_buffered(int on);
void log_flush(void);
int log_enabled(enum log_level lvl);

/* log_msg(LOG_INFO, "started", "worker", id, NULL) */
void log_msg(enum log_level lvl, const char *msg, ...)
    __attribute__((sentinel));

/* For a failure that repeats every poll: 1 (and *last_ms = now) when
 * nothing was logged through *last_ms in the last every_ms, else 0. */
int log_due(long long *last_ms, long long every_ms);

/* Like log_msg, with the job's id, org and attempt first. */
void log_job(enum log_level lvl, const char *job_id, const char *org,
             int attempt, const char *msg, ...) __attribute__((sentinel));

#endif
