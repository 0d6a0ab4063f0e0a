/*
 * smtpclass — what an SMTP reply means for the job and its sender (issue 4,
 * "Provider throttling"). A pure function over (stage, code, reply text):
 * no I/O, no allocation, no clock (the caller passes now_ms).
 *
 * Verdicts, in the order the rules are tried:
 *   2xx/3xx                        -> SMTPV_OK
 *   sender quota / rate replies    -> SMTPV_PAUSE_SENDER, 4xx *and* 5xx:
 *       enhanced 5.4.5 (Gmail "550 5.4.5 Daily user sending quota
 *       exceeded"), "daily limit", "sending limit/quota", "rate limited",
 *       "too many messages", Microsoft "SubmissionQuotaExceeded",
 *       "RecipientRateLimitExceeded", "Sender throttled", 5.7.705/5.7.708
 *       (tenant / sending IP refused), Yahoo "[TSS..] ... unexpected
 *       volume". A throttle is never a permanent failure. Replies about
 *       the *recipient's* side ("receiving mail at a rate", "the
 *       recipient's inbox is out of storage") are not sender pauses.
 *   other 4xx (421, 450, 451, 452, 454, 4.7.x, anything) -> SMTPV_RETRY
 *   5xx at SMTPC_RCPT              -> SMTPV_PERM_RCPT (550 5.1.1, 553, 552
 *                                     "mailbox full" from old servers)
 *   5xx at SMTPC_MAIL/DATA/END     -> SMTPV_PERM_MESSAGE (552 5.3.4 size)
 *   5xx at SMTPC_CONNECT           -> SMTPV_PAUSE_SENDER: a greeting that
 *       refuses us refuses every message of this sender, so failing them
 *       one by one would empty the queue into dead.
 *   code outside 200..599 (0: no reply, connection lost) -> SMTPV_RETRY
 *
 * AUTH replies (535, 534, 530 to AUTH) are not classified here: the caller
 * handles authentication (SPEC's `auth` reason, the fleet-wide login lease).
 *
 * window: 1 for a quota the provider counts per window ("daily limit",
 * "sending quota exceeded", 5.4.5): without a stated time the sender waits
 * for its next window. Other pauses (rate limits, a provider refusing the
 * sender, a 5xx greeting) without a stated time are probed again soon
 * (common/quota.h's PROBE), not held until the next day.
 *
 * pause_until_ms: an absolute time parsed from the reply when it names one
 * ("try again in 15 minutes", "retry after 3600 seconds", "after 24 hours",
 * "after 2026-11-27 00:00 UTC"); 0 when it does not, and the caller then
 * uses the end of the sender's quota window. Set for RETRY too, as the
 * earliest retry time the server asked for. Never more than
 * SMTPCLASS_MAX_PAUSE_MS after now_ms; a time in the past gives 0.
 */
#ifndef HERALD_SMTPCLASS_H
#define HERALD_SMTPCLASS_H

#include <stdint.h>

/* At most this many bytes of the reply text are looked at. */
#define SMTPCLASS_MAX_REPLY 2048
/* A parsed pause is clamped to now + 7 days. */
#define SMTPCLASS_MAX_PAUSE_MS (7LL * 24 * 3600 * 1000)

/* The command the reply answers. SMTPC_DATA is the reply to the DATA
 * command itself (354 expected); SMTPC_END the reply after the final ".". */
enum smtpc_stage {
    SMTPC_CONNECT,
    SMTPC_MAIL,
    SMTPC_RCPT,
    SMTPC_DATA,
    SMTPC_END
};

enum smtp_verdict {
    SMTPV_OK,
    SMTPV_RETRY,        /* this message later */
    SMTPV_PAUSE_SENDER, /* stop this sender until a time */
    SMTPV_PERM_RCPT,    /* these recipients, permanently */
    SMTPV_PERM_MESSAGE  /* the message, permanently */
};

struct smtp_class {
    enum smtp_verdict v;
    int64_t pause_until_ms; /* 0 when the reply does not say */
    int window;             /* SMTPV_PAUSE_SENDER: a per-window quota */
    char reason[128];       /* printable ASCII, NUL-terminated, e.g.
                               "daily sending limit reached (550 5.4.5): ..." */
};

/* Classifies one reply. `reply` is the whole reply text, lines joined with
 * "\n", with or without the "NNN-"/"NNN " prefixes; NULL is taken as "".
 * Always fills *out. */
void smtp_classify(int stage, int code, const char *reply, int64_t now_ms,
                   struct smtp_class *out);

/* "ok", "retry", "pause_sender", "perm_rcpt", "perm_message". */
const char *smtp_verdict_name(enum smtp_verdict v);

/* 1 when a reply to RCPT means "not so many recipients in one message"
 * (RFC 5321 §4.5.3.1.10): 452 without an enhanced status code or with
 * 4.5.3, and 552 5.5.3 from older servers; not 452 4.2.2 (mailbox full),
 * 452 4.3.1 (system storage) or any other. `reply` as for smtp_classify
 * (the code may lead it); NULL is taken as "". The mailer sends such
 * recipients in the next transaction at once. */
int smtp_too_many_rcpt(int code, const char *reply);

#endif
