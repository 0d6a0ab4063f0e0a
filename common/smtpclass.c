/*
 * smtpclass.c — see smtpclass.h for the rules. The reply texts the phrase
 * tables rely on are cited next to each table; the test file carries the
 * full replies with their sources.
 */
#include "smtpclass.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct enhanced {
    int cls, subj, detail; /* cls 0: the reply carries no enhanced code */
};

/* The reply, normalised: continuation prefixes ("550-", "550 5.4.5 ") of
 * every line dropped, line breaks and tabs made single spaces, bytes
 * outside printable ASCII made '?'. `low` is the same text lower-cased,
 * for matching; `txt` keeps the case, for the reason. */
struct norm {
    char txt[SMTPCLASS_MAX_REPLY + 1];
    char low[SMTPCLASS_MAX_REPLY + 1];
    size_t len;
    struct enhanced enh;
};

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool
is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char
lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Reads "C.SSS.DDD" (RFC 3463: class 2/4/5, subject and detail of 1 to 3
 * digits) at s[0..n). Returns its length followed by a space or the end,
 * else 0. */
static size_t
parse_enhanced(const char *s, size_t n, struct enhanced *e)
{
    size_t i = 0;
    int part[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        size_t start = i;
        while (i < n && is_digit(s[i]) && i - start < 4)
            part[k] = part[k] * 10 + (s[i++] - '0');
        size_t digits = i - start;
        if (digits == 0 || digits > (k == 0 ? 1u : 3u))
            return 0;
        if (k < 2) {
            if (i >= n || s[i] != '.')
                return 0;
            i++;
        }
    }
    if (i < n && s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
        return 0;
    if (part[0] != 2 && part[0] != 4 && part[0] != 5)
        return 0;
    e->cls = part[0];
    e->subj = part[1];
    e->detail = part[2];
    return i;
}

static void
normalise(const char *reply, struct norm *nm)
{
    size_t n = strnlen(reply, SMTPCLASS_MAX_REPLY);
    size_t o = 0;
    bool line_start = true, space = true;
    nm->enh.cls = 0;
    for (size_t i = 0; i < n;) {
        if (line_start) {
            line_start = false;
            /* "550-" / "550 " */
            if (i + 3 < n && is_digit(reply[i]) && is_digit(reply[i + 1]) &&
                is_digit(reply[i + 2]) &&
                (reply[i + 3] == '-' || reply[i + 3] == ' '))
                i += 4;
            struct enhanced e;
            size_t el = parse_enhanced(reply + i, n - i, &e);
            if (el) {
                if (!nm->enh.cls)
                    nm->enh = e;
                i += el;
            }
            continue;
        }
        char c = reply[i++];
        if (c == '\n') {
            line_start = true;
            c = ' ';
        }
        if (c == '\r' || c == '\t')
            c = ' ';
        if (c == ' ') {
            if (space)
                continue;
            space = true;
        } else {
            space = false;
        }
        if ((unsigned char)c < 0x20 || (unsigned char)c > 0x7e)
            c = '?';
        nm->txt[o] = c;
        nm->low[o] = lower(c);
        o++;
    }
    while (o > 0 && nm->txt[o - 1] == ' ')
        o--;
    nm->txt[o] = nm->low[o] = '\0';
    nm->len = o;
}

static bool
has_any(const char *low, const char *const *phrases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strstr(low, phrases[i]))
            return true;
    return false;
}

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Quota replies: the sender's allowance for the day (or window) is used up.
 *   Gmail: "550 5.4.5 Daily user sending limit exceeded", "550-5.4.5 Daily
 *     user sending quota exceeded", "550 5.4.5 Daily sending quota exceeded
 *     - gsmtp", "550 5.4.5 Daily SMTP relay limit exceeded for user",
 *     "450 4.2.1 Peak SMTP relay limit exceeded for this customer" (Google
 *     Workspace "Gmail SMTP errors and codes").
 *   Microsoft 365: "554 5.2.0 STOREDRV.Submission.Exception:
 *     SubmissionQuotaExceededException" (Exchange Online, SMTP AUTH limit of
 *     10,000 recipients a day), RecipientRateLimitExceeded, Outlook.com
 *     "550 5.1.90 ... reached your daily limit for message recipients".
 *   Relays: "452 4.5.3 Daily message limit exceeded" (Emailit), "554 5.7.1
 *     ... You have exceeded your Outmail quota" (Prolateral outMail). */
static const char *const quota_phrases[] = {
    "daily user sending",
    "sending limit",
    "sending quota",
    "send limit",
    "daily limit",
    "daily quota",
    "daily message limit",
    "daily recipient limit",
    "relay limit",
    "submissionquotaexceeded",
    "recipientratelimitexceeded",
    "exceeded your sending",
};

/* Rate replies: too much too fast from this sender.
 *   Gmail "421-4.7.28 ... mail sent from your IP address has been
 *     temporarily rate limited"; Microsoft "421 4.4.2 Message submission
 *     rate for this client has exceeded the configured limit" (Exchange
 *     receive connector), "550 5.2.25x Sender throttled due to continuous
 *     ... errors" (Exchange Online SMTP AUTH throttling); Zoho "550 5.4.6
 *     mail rate exceeded limit"; Emailit "452 4.4.5 Messages per second
 *     limit exceeded"; Postfix policy daemons "450 4.7.1 <a@b>: Sender
 *     address rejected: Deferring: Too many messages from sender in last
 *     60"; msndr "550 Too many messages. Try again in 92 seconds."; Yahoo
 *     "421 4.7.0 [TSS04] Messages from x temporarily deferred due to
 *     unexpected volume or user complaints" (Yahoo Sender Hub). */
static const char *const rate_phrases[] = {
    "rate limited",     "ratelimited",       "rate-limited",
    "rate limit",       "rate exceeded",     "submission rate",
    "message rate",     "sending rate",      "too many messages",
    "messages per sec", "messages per min",  "messages per hour",
    "sender throttled", "unexpected volume",
};

/* The provider refuses the sender as a whole, not this message: Microsoft
 * "550 5.7.708 Service unavailable. Access denied, traffic not accepted
 * from this IP", "550 5.7.705 Access denied, tenant has exceeded
 * threshold", "550 5.1.8 Access denied, bad outbound sender" (Exchange
 * Online NDR reference). Failing each message would empty the queue. */
static const char *const blocked_phrases[] = {
    "traffic not accepted from this ip",
    "tenant has exceeded threshold",
    "bad outbound sender",
};

/* About the receiving side, not the sender: Gmail "450 4.2.1 The user you
 * are trying to contact is receiving mail at a rate that prevents
 * additional messages from being delivered", "552 5.2.2 The recipient's
 * inbox is out of storage space"; Yandex "451 4.5.1 The recipient <x> has
 * exceeded their message rate limit"; Juno "552 ... Mail quota exceeded";
 * Microsoft "432 4.3.2 Concurrent connections limit exceeded", "452 4.3.2
 * Connection rate limit exceeded". These never pause the sender.
 * " mail quota" has its space so that "Outmail quota" (a relay's sending
 * quota) is not taken for a mailbox quota. */
static const char *const receiver_phrases[] = {
    "receiving mail",  "receiving email",      "the recipient",
    "recipient's",     "recipient is",         "mailbox full",
    "mailbox is full", "out of storage",       "over quota",
    " mail quota",     "mailbox quota",        "concurrent connection",
    "connection rate", "too many connections",
};

enum pause_kind { PK_NONE, PK_QUOTA, PK_RATE, PK_BLOCKED };

static enum pause_kind
pause_kind(const struct norm *nm)
{
    const char *low = nm->low;
    const struct enhanced *e = &nm->enh;
    /* Gmail's daily limit, whatever the words around it. */
    if (e->cls == 5 && e->subj == 4 && e->detail == 5)
        return PK_QUOTA;
    if (e->cls == 5 && e->subj == 7 && (e->detail == 705 || e->detail == 708))
        return PK_BLOCKED;
    /* Exchange Online, the sending mailbox itself is full or over its
     * submission quota: "554 5.2.2 mailbox full; STOREDRV.Submission.
     * Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded".
     * It says "mailbox full" but it is ours. */
    if (strstr(low, "storedrv.submission") && strstr(low, "quota"))
        return PK_QUOTA;
    if (has_any(low, receiver_phrases, NELEM(receiver_phrases)))
        return PK_NONE;
    if (has_any(low, quota_phrases, NELEM(quota_phrases)))
        return PK_QUOTA;
    if (strstr(low, "exceeded your") &&
        (strstr(low, "quota") || strstr(low, "limit")))
        return PK_QUOTA;
    if (has_any(low, rate_phrases, NELEM(rate_phrases)))
        return PK_RATE;
    if (has_any(low, blocked_phrases, NELEM(blocked_phrases)))
        return PK_BLOCKED;
    return PK_NONE;
}

/* ---- times named in the reply ---- */

/* Caps the number before the unit: 10^9 days still fits int64 ms. */
#define NUM_CAP 1000000000LL

static int64_t
unit_ms(const char *w, size_t n, bool attached)
{
    static const struct {
        const char *name;
        int64_t ms;
        bool attached_only;
    } units[] = {
        {"s", 1000, true},         {"sec", 1000, false},
        {"secs", 1000, false},     {"second", 1000, false},
        {"seconds", 1000, false},  {"m", 60000, true},
        {"min", 60000, false},     {"mins", 60000, false},
        {"minute", 60000, false},  {"minutes", 60000, false},
        {"h", 3600000, true},      {"hr", 3600000, false},
        {"hrs", 3600000, false},   {"hour", 3600000, false},
        {"hours", 3600000, false}, {"d", 86400000, true},
        {"day", 86400000, false},  {"days", 86400000, false},
    };
    for (size_t i = 0; i < NELEM(units); i++)
        if (strlen(units[i].name) == n && memcmp(units[i].name, w, n) == 0 &&
            (attached || !units[i].attached_only))
            return units[i].ms;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil), so no timegm() and no TZ. */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
num_at(const char *s, size_t n, size_t *i, int digits)
{
    int v = 0;
    for (int k = 0; k < digits; k++) {
        if (*i >= n || !is_digit(s[*i]))
            return -1;
        v = v * 10 + (s[(*i)++] - '0');
    }
    return v;
}

/* "YYYY-MM-DD[( |T)HH:MM[:SS]][ ](utc|gmt|z|+HH:MM|-HHMM)" at s; no zone
 * means UTC. Returns ms since the epoch, or -1. */
static int64_t
parse_abs(const char *s, size_t n)
{
    size_t i = 0;
    int y = num_at(s, n, &i, 4);
    if (y < 1970 || i >= n || s[i++] != '-')
        return -1;
    int mo = num_at(s, n, &i, 2);
    if (mo < 1 || mo > 12 || i >= n || s[i++] != '-')
        return -1;
    int d = num_at(s, n, &i, 2);
    if (d < 1 || d > 31 || (i < n && is_digit(s[i])))
        return -1;
    int hh = 0, mi = 0, ss = 0;
    if (i + 1 < n && (s[i] == ' ' || s[i] == 't') && is_digit(s[i + 1])) {
        size_t j = i + 1;
        int h2 = num_at(s, n, &j, 2);
        if (h2 >= 0 && j < n && s[j] == ':') {
            j++;
            int m2 = num_at(s, n, &j, 2);
            if (h2 > 23 || m2 < 0 || m2 > 59)
                return -1;
            hh = h2;
            mi = m2;
            if (j < n && s[j] == ':') {
                j++;
                int s2 = num_at(s, n, &j, 2);
                if (s2 < 0 || s2 > 60)
                    return -1;
                ss = s2;
            }
            i = j;
        }
    }
    int64_t off_min = 0;
    size_t j = i;
    if (j < n && s[j] == ' ')
        j++;
    if (j < n && (s[j] == '+' || s[j] == '-')) {
        int sign = s[j] == '-' ? -1 : 1;
        size_t k = j + 1;
        int oh = num_at(s, n, &k, 2);
        if (oh >= 0 && k < n && s[k] == ':')
            k++;
        int om = num_at(s, n, &k, 2);
        if (oh >= 0 && oh <= 14 && om >= 0 && om <= 59)
            off_min = sign * (oh * 60 + om);
    }
    int64_t days = days_from_civil(y, mo, d);
    int64_t secs = days * 86400 + hh * 3600 + mi * 60 + ss - off_min * 60;
    return secs * 1000;
}

/* The first time the reply names after "in", "after", "for", "within",
 * "wait" or "until": an absolute time, or a number and a unit. Returns the
 * absolute ms, clamped to now + SMTPCLASS_MAX_PAUSE_MS, or 0. */
static int64_t
parse_pause(const char *low, size_t len, int64_t now_ms)
{
    static const char *const keys[] = {"in ",     "after ", "for ",
                                       "within ", "wait ",  "until "};
    for (size_t p = 0; p < len; p++) {
        if (p > 0 && is_alnum(low[p - 1]))
            continue;
        size_t i = 0;
        for (size_t k = 0; k < NELEM(keys); k++) {
            size_t kl = strlen(keys[k]);
            if (len - p >= kl && memcmp(low + p, keys[k], kl) == 0) {
                i = p + kl;
                break;
            }
        }
        if (!i || i >= len || !is_digit(low[i]))
            continue;
        int64_t at = parse_abs(low + i, len - i);
        if (at < 0) {
            int64_t num = 0;
            size_t j = i;
            while (j < len && is_digit(low[j])) {
                if (num < NUM_CAP)
                    num = num * 10 + (low[j] - '0');
                j++;
            }
            if (num > NUM_CAP)
                num = NUM_CAP;
            bool attached = j < len && low[j] != ' ';
            if (j < len && low[j] == ' ')
                j++;
            size_t w = j;
            while (j < len && low[j] >= 'a' && low[j] <= 'z')
                j++;
            if (j < len && is_alnum(low[j]))
                continue;
            int64_t u = unit_ms(low + w, j - w, attached);
            if (!u)
                continue;
            int64_t d = num * u;
            if (d > SMTPCLASS_MAX_PAUSE_MS)
                d = SMTPCLASS_MAX_PAUSE_MS;
            at = now_ms + d;
        }
        if (at <= now_ms)
            return 0;
        if (at - now_ms > SMTPCLASS_MAX_PAUSE_MS)
            at = now_ms + SMTPCLASS_MAX_PAUSE_MS;
        return at;
    }
    return 0;
}

/* ---- the verdict ---- */

static void
set_reason(struct smtp_class *out, const char *what, int code,
           const struct norm *nm)
{
    char head[64];
    if (nm->enh.cls)
        snprintf(head, sizeof head, "%s (%d %d.%d.%d)", what, code, nm->enh.cls,
                 nm->enh.subj, nm->enh.detail);
    else
        snprintf(head, sizeof head, "%s (%d)", what, code);
    size_t o = 0, cap = sizeof out->reason - 1;
    for (const char *s = head; *s && o < cap; s++)
        out->reason[o++] = *s;
    if (nm->len && o + 2 < cap) {
        out->reason[o++] = ':';
        out->reason[o++] = ' ';
        for (size_t i = 0; i < nm->len && o < cap; i++)
            out->reason[o++] = nm->txt[i];
    }
    out->reason[o] = '\0';
}

void
smtp_classify(int stage, int code, const char *reply, int64_t now_ms,
              struct smtp_class *out)
{
    struct norm nm;
    normalise(reply ? reply : "", &nm);
    out->v = SMTPV_RETRY;
    out->pause_until_ms = 0;
    out->window = 0;
    out->reason[0] = '\0';

    if (code < 200 || code > 599) {
        set_reason(out, "no valid reply code", code, &nm);
        return;
    }
    if (code < 400) {
        out->v = SMTPV_OK;
        set_reason(out, "accepted", code, &nm);
        return;
    }
    out->pause_until_ms = parse_pause(nm.low, nm.len, now_ms);

    switch (pause_kind(&nm)) {
    case PK_QUOTA:
        out->v = SMTPV_PAUSE_SENDER;
        out->window = 1;
        set_reason(out, "sending limit reached", code, &nm);
        return;
    case PK_RATE:
        out->v = SMTPV_PAUSE_SENDER;
        set_reason(out, "sending rate limited", code, &nm);
        return;
    case PK_BLOCKED:
        out->v = SMTPV_PAUSE_SENDER;
        set_reason(out, "sender refused by provider", code, &nm);
        return;
    case PK_NONE:
        break;
    }

    if (code < 500) {
        out->v = SMTPV_RETRY;
        if (code == 421)
            set_reason(out, "server closing connection", code, &nm);
        else if (nm.enh.cls == 4 && nm.enh.subj == 7)
            set_reason(out, "temporary policy refusal", code, &nm);
        else
            set_reason(out, "temporary failure", code, &nm);
        return;
    }

    switch (stage) {
    case SMTPC_CONNECT:
        out->v = SMTPV_PAUSE_SENDER;
        set_reason(out, "server refused the connection", code, &nm);
        return;
    case SMTPC_RCPT:
        out->v = SMTPV_PERM_RCPT;
        out->pause_until_ms = 0;
        set_reason(out, "recipient refused", code, &nm);
        return;
    default:
        out->v = SMTPV_PERM_MESSAGE;
        out->pause_until_ms = 0;
        set_reason(out, "message refused", code, &nm);
        return;
    }
}

const char *
smtp_verdict_name(enum smtp_verdict v)
{
    switch (v) {
    case SMTPV_OK:
        return "ok";
    case SMTPV_RETRY:
        return "retry";
    case SMTPV_PAUSE_SENDER:
        return "pause_sender";
    case SMTPV_PERM_RCPT:
        return "perm_rcpt";
    case SMTPV_PERM_MESSAGE:
        return "perm_message";
    }
    return "unknown";
}

int
smtp_too_many_rcpt(int code, const char *reply)
{
    if (code != 452 && code != 552)
        return 0;
    const char *p = reply ? reply : "";
    if (strncmp(p, code == 452 ? "452" : "552", 3) == 0)
        p += 3;
    while (*p == ' ' || *p == '-')
        p++;
    int esc = (p[0] == '4' || p[0] == '5') && p[1] == '.' &&
              isdigit((unsigned char)p[2]);
    if (!esc)
        return code == 452;
    return p[0] == (code == 452 ? '4' : '5') &&
           strncmp(p + 1, ".5.3", 4) == 0 &&
           (p[5] == ' ' || p[5] == '\0' || p[5] == '\n' || p[5] == '\r');
}
