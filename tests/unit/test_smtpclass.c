/*
 * test_smtpclass — smtp_classify() over real-world replies (sources beside
 * each group; "IP"/addresses anonymised) and edge cases.
 */
#include "smtpclass.h"
#include "t.h"

#include <stdint.h>
#include <stdlib.h>

/* 2026-11-26T12:00:00Z */
#define NOW 1795694400000LL
#define SEC(n) (NOW + (n)*1000LL)
#define MIN(n) SEC((n)*60LL)
#define HOUR(n) MIN((n)*60LL)
#define DAY(n) HOUR((n)*24LL)

struct row {
    int stage, code;
    const char *reply;
    enum smtp_verdict v;
    int64_t pause; /* expected pause_until_ms, 0 = none */
};

static const struct row rows[] = {
    /* --- Gmail / Google Workspace: "Gmail SMTP errors and codes"
     * (knowledge.workspace.google.com, support.google.com/a/answer/3726730)
     * and bounces quoting gsmtp. */
    {SMTPC_RCPT, 550, "550 5.4.5 Daily user sending limit exceeded.",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_MAIL, 550,
     "550-5.4.5 Daily user sending quota exceeded.\n550 5.4.5 "
     "https://support.google.com/mail/?p=DailyLimitExceeded",
     SMTPV_PAUSE_SENDER, 0},
    /* the last line alone: only the enhanced code says it */
    {SMTPC_RCPT, 550,
     "550 5.4.5 https://support.google.com/mail/?p=DailyLimitExceeded",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_END, 550, "550 5.4.5 Daily sending quota exceeded - gsmtp",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_MAIL, 550,
     "550 5.4.5 Daily SMTP relay limit exceeded for user. For more "
     "information on SMTP relay sending limits please contact your "
     "administrator",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_MAIL, 450,
     "450 4.2.1 Peak SMTP relay limit exceeded for this customer. This is "
     "a temporary error.",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_RCPT, 450,
     "450 4.2.1 The user you are trying to contact is receiving mail at a "
     "rate that prevents additional messages from being delivered. Please "
     "resend your message at a later time.",
     SMTPV_RETRY, 0},
    {SMTPC_RCPT, 452,
     "452-4.2.2 The recipient's inbox is out of storage space.\n452 4.2.2 "
     "Please direct the recipient to https://support.google.com/mail/"
     "?p=OverQuotaTemp",
     SMTPV_RETRY, 0},
    {SMTPC_RCPT, 552,
     "552-5.2.2 The recipient's inbox is out of storage space and "
     "inactive.\n552 5.2.2 Please direct the recipient to the help center.",
     SMTPV_PERM_RCPT, 0},
    {SMTPC_RCPT, 452, "452 4.5.3 Your message has too many recipients.",
     SMTPV_RETRY, 0},
    {SMTPC_CONNECT, 421, "421 4.7.0 Try again later, closing connection.",
     SMTPV_RETRY, 0},
    {SMTPC_END, 421, "421 4.3.0 Temporary System Problem. Try again later.",
     SMTPV_RETRY, 0},
    {SMTPC_END, 451, "451 4.3.0 Mail server temporarily rejected message.",
     SMTPV_RETRY, 0},
    {SMTPC_MAIL, 454,
     "454 4.7.0 Too many login attempts, please try again "
     "later.",
     SMTPV_RETRY, 0},
    /* Exim log quoting gmail-smtp-in (pastebin 6G7q8H39) */
    {SMTPC_END, 421,
     "421-4.7.0 [192.0.2.80 15] Our system has detected an unusual rate "
     "of\n421-4.7.0 unsolicited mail originating from your IP address. To "
     "protect our\n421-4.7.0 users from spam, mail sent from your IP "
     "address has been temporarily\n421-4.7.0 rate limited. Please "
     "visit\n421 4.7.0 review our Bulk Email Senders Guidelines. - gsmtp",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_RCPT, 550,
     "550-5.1.1 The email account that you tried to reach does not "
     "exist.\n550 5.1.1 Please try double-checking the recipient's email "
     "address for typos - gsmtp",
     SMTPV_PERM_RCPT, 0},
    {SMTPC_END, 552,
     "552-5.3.4 Your message exceeded Google's message size limits.\n552 "
     "5.3.4 Please go to https://support.google.com/mail/?p=MaxSizeError",
     SMTPV_PERM_MESSAGE, 0},
    {SMTPC_END, 550,
     "550-5.7.26 This mail is unauthenticated, which poses a security risk "
     "to the\n550 5.7.26 sender and Gmail users, and has been blocked.",
     SMTPV_PERM_MESSAGE, 0},
    {SMTPC_MAIL, 555, "555 5.5.2 Syntax error. - gsmtp", SMTPV_PERM_MESSAGE, 0},
    /* --- Microsoft 365 / Exchange Online: learn.microsoft.com "Message
     * storage and concurrent connection throttling for SMTP Authenticated
     * Submission", "Continuous error throttling for SMTP AUTH", NDR
     * 5.7.700-5.7.750, smtp.codes/exchangeonline. */
    {SMTPC_END, 554,
     "554 5.2.0 STOREDRV.Submission.Exception:"
     "SubmissionQuotaExceededException; Failed to process message due to "
     "a permanent exception with message Cannot submit message.",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_END, 554,
     "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:"
     "QuotaExceededException.MapiExceptionShutoffQuotaExceeded",
     SMTPV_PAUSE_SENDER, 0},
    /* constructed: Microsoft's exception name with the "after 24 hours"
     * wording the brief quotes; not verified as one verbatim reply */
    {SMTPC_END, 554,
     "554 5.2.0 STOREDRV.Submission.Exception:"
     "RecipientRateLimitExceededException; Sending quota exceeded, try "
     "again after 24 hours",
     SMTPV_PAUSE_SENDER, HOUR(24)},
    {SMTPC_MAIL, 432, "432 4.3.2 Concurrent connections limit exceeded.",
     SMTPV_RETRY, 0},
    {SMTPC_CONNECT, 421,
     "421 4.3.2 The maximum number of concurrent connections per resource "
     "forest has exceeded a limit, closing transmission channel.",
     SMTPV_RETRY, 0},
    {SMTPC_END, 451,
     "451 4.7.0 Temporary server error. Please try again later. PRX4",
     SMTPV_RETRY, 0},
    {SMTPC_RCPT, 451,
     "451 4.7.500 Server busy. Please try again later from [192.0.2.1]. "
     "(AS77712344)",
     SMTPV_RETRY, 0},
    {SMTPC_MAIL, 421,
     "421 4.4.2 Message submission rate for this client has exceeded the "
     "configured limit",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_MAIL, 550,
     "550 5.2.252 Sender throttled due to continuous send as denied errors.",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_MAIL, 550,
     "550 5.7.708 Service unavailable. Access denied, traffic not accepted "
     "from this IP. For more information please go to "
     "https://go.microsoft.com/fwlink/?LinkID=526655 AS(7171)",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_END, 550,
     "550 5.7.705 Access denied, tenant has exceeded "
     "threshold",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_RCPT, 550,
     "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by "
     "SMTP address lookup",
     SMTPV_PERM_RCPT, 0},
    {SMTPC_RCPT, 550, "550 5.4.1 Recipient address rejected: Access denied",
     SMTPV_PERM_RCPT, 0},
    {SMTPC_MAIL, 550,
     "550 5.1.90 Your message can't be sent because you've reached your "
     "daily limit for message recipients.",
     SMTPV_PAUSE_SENDER, 0},
    /* --- Yahoo: Sender Hub error codes; bounces quoted by Fortinet and
     * secuserve.zammad.com. */
    {SMTPC_MAIL, 421,
     "421 4.7.0 [TSS04] Messages from 192.0.2.9 temporarily deferred due "
     "to unexpected volume or user complaints - 4.16.55.1; see "
     "https://postmaster.yahooinc.com/error-codes",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_CONNECT, 553,
     "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.9, "
     "because the ip is in Spamhaus's list; see "
     "https://postmaster.yahooinc.com/error-codes",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_RCPT, 554,
     "554 delivery error: dd This user doesn't have a yahoo.com account "
     "(x@yahoo.com) [0] - mta1234.mail.ne1.yahoo.com",
     SMTPV_PERM_RCPT, 0},
    /* --- Postfix (smtpd, postscreen, policy daemons) */
    {SMTPC_RCPT, 550,
     "550 5.1.1 <x@example.org>: Recipient address rejected: User unknown "
     "in virtual mailbox table",
     SMTPV_PERM_RCPT, 0},
    {SMTPC_RCPT, 554, "554 5.7.1 <x@example.org>: Relay access denied",
     SMTPV_PERM_RCPT, 0},
    {SMTPC_RCPT, 553,
     "553 5.7.1 <x@example.org>: Sender address rejected: not owned by "
     "user y",
     SMTPV_PERM_RCPT, 0},
    {SMTPC_END, 552, "552 5.3.4 Message size exceeds fixed limit",
     SMTPV_PERM_MESSAGE, 0},
    {SMTPC_RCPT, 452, "452 4.5.3 Error: too many recipients", SMTPV_RETRY, 0},
    {SMTPC_MAIL, 452, "452 4.3.1 Insufficient system storage", SMTPV_RETRY, 0},
    {SMTPC_RCPT, 450,
     "450 4.2.0 <x@example.org>: Recipient address rejected: Greylisted, "
     "see http://postgrey.schweikert.ch/help/example.org.html",
     SMTPV_RETRY, 0},
    {SMTPC_RCPT, 451,
     "451 4.7.1 Please try again later: greylisted for 300 seconds",
     SMTPV_RETRY, SEC(300)},
    {SMTPC_MAIL, 450,
     "450 4.1.8 <a@example.net>: Sender address rejected: Domain not found",
     SMTPV_RETRY, 0},
    {SMTPC_CONNECT, 421, "421 4.4.2 mx.example.org Error: timeout exceeded",
     SMTPV_RETRY, 0},
    {SMTPC_MAIL, 454, "454 4.7.0 TLS not available due to local problem",
     SMTPV_RETRY, 0},
    {SMTPC_DATA, 554, "554 5.5.1 Error: no valid recipients",
     SMTPV_PERM_MESSAGE, 0},
    /* Zimbra + policyd (pastebin V80548k6) */
    {SMTPC_RCPT, 450,
     "450 4.7.1 <a@example.net>: Sender address rejected: Deferring: Too "
     "many messages from sender in last 60",
     SMTPV_PAUSE_SENDER, 0},
    /* --- Exim */
    {SMTPC_CONNECT, 421,
     "421 Too many concurrent SMTP connections from this IP address; "
     "please try again later.",
     SMTPV_RETRY, 0},
    {SMTPC_RCPT, 452, "452 too many recipients", SMTPV_RETRY, 0},
    {SMTPC_END, 451, "451 Temporary local problem - please try later",
     SMTPV_RETRY, 0},
    {SMTPC_RCPT, 550, "550 Administrative prohibition", SMTPV_PERM_RCPT, 0},
    {SMTPC_MAIL, 550,
     "550-Verification failed for <a@example.net>\n550 Sender verify failed",
     SMTPV_PERM_MESSAGE, 0},
    /* Yandex (Exim bounce, pastebin pEBS5hy4): the recipient's rate */
    {SMTPC_END, 451,
     "451 4.5.1 The recipient <x@yandex.com> has exceeded their message "
     "rate limit. Try again later.",
     SMTPV_RETRY, 0},
    /* Juno, old sendmail: recipient mailbox full at RCPT */
    {SMTPC_RCPT, 552, "552 <JDOE@JUNO.COM>... Mail quota exceeded",
     SMTPV_PERM_RCPT, 0},
    /* --- Relays and smaller providers */
    {SMTPC_MAIL, 452, "452 4.4.5 Messages per second limit exceeded",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_MAIL, 452, "452 4.5.3 Daily message limit exceeded",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_RCPT, 554,
     "554 5.7.1 <x@example.org>: Recipient address rejected: You have "
     "exceeded your Outmail quota.",
     SMTPV_PAUSE_SENDER, 0},
    {SMTPC_MAIL, 550, "550 5.4.6 mail rate exceeded limit", SMTPV_PAUSE_SENDER,
     0},
    {SMTPC_MAIL, 550, "550 Too many messages. Try again in 92 seconds.",
     SMTPV_PAUSE_SENDER, SEC(92)},
    /* --- Explicit times (the forms the brief lists) */
    {SMTPC_MAIL, 451, "451 4.7.1 Rate limited, try again in 15 minutes",
     SMTPV_PAUSE_SENDER, MIN(15)},
    {SMTPC_MAIL, 450,
     "450 4.7.1 Sending rate exceeded, retry after 3600 seconds",
     SMTPV_PAUSE_SENDER, SEC(3600)},
    {SMTPC_MAIL, 550,
     "550 5.4.5 Daily sending quota exceeded, try again after 2026-11-27 "
     "00:00 UTC",
     SMTPV_PAUSE_SENDER, 1795737600000LL},
    {SMTPC_END, 451, "451 4.7.1 Sending limit reached; try again in 1 hour",
     SMTPV_PAUSE_SENDER, HOUR(1)},
    {SMTPC_MAIL, 421,
     "421 4.7.0 Sending quota exceeded until "
     "2026-11-28T09:30:15Z",
     SMTPV_PAUSE_SENDER, 1795858215000LL},
    {SMTPC_MAIL, 421,
     "421 4.7.0 Sending quota exceeded until "
     "2026-11-28 10:30:15 +01:00",
     SMTPV_PAUSE_SENDER, 1795858215000LL},
    {SMTPC_MAIL, 450, "450 4.7.1 Too many messages, wait 30s",
     SMTPV_PAUSE_SENDER, SEC(30)},
    {SMTPC_MAIL, 450, "450 4.7.1 Too many messages, try again in 2 days",
     SMTPV_PAUSE_SENDER, DAY(2)},
    /* a time in the past says nothing */
    {SMTPC_MAIL, 421, "421 4.7.0 Daily limit reached until 2026-11-01",
     SMTPV_PAUSE_SENDER, 0},
    /* numbers that are not durations */
    {SMTPC_MAIL, 550,
     "550 5.4.5 Daily limit of 2000 recipients per 24 hours exceeded",
     SMTPV_PAUSE_SENDER, 0},
    /* --- Successes */
    {SMTPC_CONNECT, 220, "220 mx.google.com ESMTP a1-20020a - gsmtp", SMTPV_OK,
     0},
    {SMTPC_DATA, 354, "354 Go ahead a1si123 - gsmtp", SMTPV_OK, 0},
    {SMTPC_END, 250, "250 2.0.0 OK 1452005382 o123si5764107wmd.53 - gsmtp",
     SMTPV_OK, 0},
};

static void
test_table(void)
{
    size_t n = sizeof rows / sizeof rows[0];
    CHECK(n >= 40);
    for (size_t i = 0; i < n; i++) {
        struct smtp_class c;
        smtp_classify(rows[i].stage, rows[i].code, rows[i].reply, NOW, &c);
        CHECK_MSG(c.v == rows[i].v, "row %zu \"%.60s\": got %s, want %s", i,
                  rows[i].reply, smtp_verdict_name(c.v),
                  smtp_verdict_name(rows[i].v));
        CHECK_MSG(c.pause_until_ms == rows[i].pause,
                  "row %zu \"%.60s\": pause %lld, want %lld", i, rows[i].reply,
                  (long long)c.pause_until_ms, (long long)rows[i].pause);
        CHECK_MSG(c.reason[0] != '\0', "row %zu: empty reason", i);
    }
}

/* Which pauses wait for the next window (a per-window quota) and which
 * are probed again soon (everything else without a stated time). */
static void
test_window(void)
{
    struct smtp_class c;
    smtp_classify(SMTPC_RCPT, 550,
                  "550 5.4.5 Daily user sending limit "
                  "exceeded.",
                  NOW, &c);
    CHECK(c.v == SMTPV_PAUSE_SENDER && c.window == 1);
    smtp_classify(SMTPC_MAIL, 452, "452 4.5.3 Daily message limit exceeded",
                  NOW, &c);
    CHECK(c.v == SMTPV_PAUSE_SENDER && c.window == 1);
    smtp_classify(SMTPC_CONNECT, 554, "554 5.3.2 no service here", NOW, &c);
    CHECK(c.v == SMTPV_PAUSE_SENDER && c.window == 0 && c.pause_until_ms == 0);
    smtp_classify(SMTPC_MAIL, 451, "451 4.7.1 rate limited, slow down", NOW,
                  &c);
    CHECK(c.v == SMTPV_PAUSE_SENDER && c.window == 0);
    smtp_classify(SMTPC_RCPT, 451, "451 4.7.1 try again later", NOW, &c);
    CHECK(c.v == SMTPV_RETRY && c.window == 0);
    smtp_classify(SMTPC_END, 250, "250 ok", NOW, &c);
    CHECK(c.v == SMTPV_OK && c.window == 0);
}

/* Unknown codes by class and stage, with no helpful text. */
static void
test_unknown_codes(void)
{
    struct smtp_class c;
    smtp_classify(SMTPC_MAIL, 499, "499 whatever", NOW, &c);
    CHECK(c.v == SMTPV_RETRY);
    smtp_classify(SMTPC_RCPT, 599, "599 whatever", NOW, &c);
    CHECK(c.v == SMTPV_PERM_RCPT);
    smtp_classify(SMTPC_DATA, 599, "599 whatever", NOW, &c);
    CHECK(c.v == SMTPV_PERM_MESSAGE);
    smtp_classify(SMTPC_END, 500, "", NOW, &c);
    CHECK(c.v == SMTPV_PERM_MESSAGE);
    smtp_classify(SMTPC_CONNECT, 554, "554 No SMTP service here", NOW, &c);
    CHECK(c.v == SMTPV_PAUSE_SENDER);
    CHECK(c.pause_until_ms == 0);
    smtp_classify(42, 550, "550 odd stage", NOW, &c);
    CHECK(c.v == SMTPV_PERM_MESSAGE);
    /* 4.4.5 is congestion (RFC 3463), only 5.4.5 is Gmail's daily limit */
    smtp_classify(SMTPC_END, 451, "451 4.4.5 System congestion", NOW, &c);
    CHECK(c.v == SMTPV_RETRY);
    /* a permanent refusal never carries a pause */
    smtp_classify(SMTPC_RCPT, 550, "550 5.1.1 gone, try again in 5 minutes",
                  NOW, &c);
    CHECK(c.v == SMTPV_PERM_RCPT);
    CHECK(c.pause_until_ms == 0);
}

static void
test_edges(void)
{
    struct smtp_class c;

    smtp_classify(SMTPC_END, 451, "", NOW, &c);
    CHECK(c.v == SMTPV_RETRY);
    CHECK(c.pause_until_ms == 0);
    CHECK_STR(c.reason, "temporary failure (451)");

    smtp_classify(SMTPC_END, 451, NULL, NOW, &c);
    CHECK(c.v == SMTPV_RETRY);

    /* code 0: no reply at all (connection lost) */
    smtp_classify(SMTPC_DATA, 0, "", NOW, &c);
    CHECK(c.v == SMTPV_RETRY);
    CHECK_STR(c.reason, "no valid reply code (0)");
    smtp_classify(SMTPC_DATA, -5, "550 5.4.5 Daily limit", NOW, &c);
    CHECK(c.v == SMTPV_RETRY);
    smtp_classify(SMTPC_DATA, 999, "x", NOW, &c);
    CHECK(c.v == SMTPV_RETRY);
    smtp_classify(SMTPC_DATA, 199, "x", NOW, &c);
    CHECK(c.v == SMTPV_RETRY);

    /* garbage bytes: classified by code, reason stays printable ASCII */
    const char garbage[] = "\x01\xff\xfe\x80 550 5.\x7f.\n\n\r\t%s%n";
    smtp_classify(SMTPC_RCPT, 550, garbage, NOW, &c);
    CHECK(c.v == SMTPV_PERM_RCPT);
    int printable = 1;
    for (const char *p = c.reason; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            printable = 0;
    CHECK(printable);
    CHECK(strlen(c.reason) < sizeof c.reason);

    /* huge numbers clamp to 7 days */
    smtp_classify(SMTPC_MAIL, 451,
                  "451 4.7.1 Rate limited, try again in 999999999999 minutes",
                  NOW, &c);
    CHECK(c.v == SMTPV_PAUSE_SENDER);
    CHECK(c.pause_until_ms == NOW + SMTPCLASS_MAX_PAUSE_MS);
    smtp_classify(SMTPC_MAIL, 451,
                  "451 4.7.1 Rate limited, try again in "
                  "99999999999999999999999999999999999999 days",
                  NOW, &c);
    CHECK(c.pause_until_ms == NOW + SMTPCLASS_MAX_PAUSE_MS);
    smtp_classify(SMTPC_MAIL, 451,
                  "451 4.7.1 Sending quota exceeded until 9999-12-31 23:59 UTC",
                  NOW, &c);
    CHECK(c.pause_until_ms == NOW + SMTPCLASS_MAX_PAUSE_MS);
    smtp_classify(SMTPC_MAIL, 451,
                  "451 4.7.1 Rate limited, try again in 0 "
                  "minutes",
                  NOW, &c);
    CHECK(c.pause_until_ms == 0);
    /* malformed dates and units are not times */
    smtp_classify(SMTPC_MAIL, 451, "451 4.7.1 Rate limited until 2026-13-01",
                  NOW, &c);
    CHECK(c.pause_until_ms == 0);
    smtp_classify(SMTPC_MAIL, 451, "451 4.7.1 Rate limited in 5 parsecs", NOW,
                  &c);
    CHECK(c.pause_until_ms == 0);
    smtp_classify(SMTPC_MAIL, 451, "451 4.7.1 Rate limited in 5 m", NOW, &c);
    CHECK(c.pause_until_ms == 0);

    /* a 4xx that names a time keeps it as the earliest retry */
    smtp_classify(SMTPC_END, 450, "450 4.2.0 busy, retry in 10 minutes", NOW,
                  &c);
    CHECK(c.v == SMTPV_RETRY);
    CHECK(c.pause_until_ms == MIN(10));

    /* reason: what, code, enhanced code, the text without the prefixes */
    smtp_classify(SMTPC_MAIL, 550,
                  "550-5.4.5 Daily user sending quota exceeded.\n550 5.4.5 "
                  "see help",
                  NOW, &c);
    CHECK_STR(c.reason, "sending limit reached (550 5.4.5): Daily user "
                        "sending quota exceeded. see help");
}

/* Only the first SMTPCLASS_MAX_REPLY bytes count; a long reply is no
 * problem and a phrase past the cap is not seen. */
static void
test_cap(void)
{
    size_t n = 64 * 1024;
    char *big = malloc(n + 64);
    CHECK(big != NULL);
    if (!big)
        return;
    memset(big, 'a', n);
    strcpy(big + n, " daily sending quota exceeded");
    memcpy(big, "451 4.7.1 ", 10);
    struct smtp_class c;
    smtp_classify(SMTPC_MAIL, 451, big, NOW, &c);
    CHECK(c.v == SMTPV_RETRY);
    CHECK(strlen(c.reason) == sizeof c.reason - 1);

    memcpy(big + 10, "daily sending quota exceeded ", 29);
    smtp_classify(SMTPC_MAIL, 451, big, NOW, &c);
    CHECK(c.v == SMTPV_PAUSE_SENDER);
    free(big);
}

static void
test_names(void)
{
    CHECK_STR(smtp_verdict_name(SMTPV_OK), "ok");
    CHECK_STR(smtp_verdict_name(SMTPV_RETRY), "retry");
    CHECK_STR(smtp_verdict_name(SMTPV_PAUSE_SENDER), "pause_sender");
    CHECK_STR(smtp_verdict_name(SMTPV_PERM_RCPT), "perm_rcpt");
    CHECK_STR(smtp_verdict_name(SMTPV_PERM_MESSAGE), "perm_message");
}

/* smtp_too_many_rcpt: which RCPT refusals mean "fewer per message" */
static void
test_too_many_rcpt(void)
{
    struct {
        int code;
        const char *reply;
        int want;
    } cases[] = {
        {452, "452 4.5.3 Error: too many recipients", 1},     /* Postfix */
        {452, "452 too many recipients", 1},                  /* no ESC */
        {452, "452-4.5.3 Too many\n452 4.5.3 recipients", 1}, /* multi-line */
        {452, "4.5.3 Too many recipients", 1},                /* no code */
        {452, "", 1},
        {452, NULL, 1},
        {552, "552 5.5.3 Too many recipients", 1}, /* RFC 5321 4.5.3.1.10 */
        {452, "452 4.2.2 Mailbox full", 0},
        {452, "452 4.3.1 Insufficient system storage", 0},
        {452, "452 4.5.30 odd", 0},
        {452, "452 5.5.3 wrong class", 0},
        {552, "552 5.2.2 Mailbox full", 0},
        {552, "552 too many recipients", 0}, /* 552 alone: a 5xx stands */
        {451, "451 4.5.3 Too many recipients", 0},
        {450, "450 too many recipients", 0},
        {250, "250 2.1.5 Ok", 0},
        {0, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MSG(
            smtp_too_many_rcpt(cases[i].code, cases[i].reply) == cases[i].want,
            "%d %s", cases[i].code, cases[i].reply ? cases[i].reply : "(null)");
}

int
main(void)
{
    test_too_many_rcpt();
    test_table();
    test_window();
    test_unknown_codes();
    test_edges();
    test_cap();
    test_names();
    return T_DONE("test_smtpclass");
}
