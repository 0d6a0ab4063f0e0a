/*
 * mime — builds the RFC 5322 / MIME bytes of one message from a valid job.
 *
 * The sender path decides From and the envelope (see worker/resolver.h);
 * this module only writes bytes. Output uses CRLF line ends, folds header
 * lines at 78 columns where it can, and never emits a line over 998
 * octets. Header values are always written through encoders that cannot
 * produce a bare CR or LF, so header injection is impossible by
 * construction (whatever the validator let through). No I/O.
 *
 * Structure:
 *   text only           -> text/plain
 *   html only           -> text/html
 *   text + html         -> multipart/alternative
 *   + attachments       -> multipart/mixed { body part, attachments... }
 * Bodies are quoted-printable (or 7bit when already short ASCII lines);
 * attachments are base64 with 76-column lines. Non-ASCII header text is
 * written as RFC 2047 encoded words (UTF-8, B or Q).
 *
 * Details of the contract:
 * - Text and html bodies are text: bare LF and bare CR become CRLF. A body
 *   is 7bit when it is ASCII without control characters (TAB aside) and
 *   no line passes 998 octets, else quoted-printable (76 columns). A
 *   job with neither text nor html gets an empty text/plain body. The
 *   message always ends with CRLF.
 * - 7bit bodies are copied as they are, so lines may start with '.' or
 *   "From ": the SMTP sender must dot-stuff (io/mailer.c does).
 * - Header values: in every subject, display name, X- header value and
 *   attachment file name, each run of CR and LF becomes one space (the
 *   value never decodes to a line break); other control characters and
 *   non-ASCII text go out as encoded words (file names: RFC 2231
 *   name*=utf-8''..., with continuations name*0*=, name*1*= when long).
 *   ASCII text is folded at its spaces; an unbroken run over 900 octets
 *   and anything containing "=?" is encoded instead.
 * - Display names: plain atoms when they are atext words separated by
 *   single spaces, else a quoted-string, else (non-ASCII or control
 *   characters) encoded words.
 * - Refused with HERR_INVALID, the field named ("id", "from", "reply_to",
 *   "msgid_domain", "to[i]", "cc[i]", "headers[i]", "attachments[i]"),
 *   whatever cannot be encoded: a missing id or one outside
 *   [A-Za-z0-9._:-]{1,128}; an address that is not an ASCII addr-spec
 *   (dot-atom or quoted-string local part, dot-atom or [literal] domain)
 *   of at most 254 octets; a
 *   msgid_domain that is not a dot-atom of at most 253 octets; a header
 *   name that is not "X-" + printable ASCII without ':' (at most 76); an
 *   attachment content_type that is not token "/" token (at most 255).
 * - A job header named X-Herald-Id (any case) is skipped: ours stays the
 *   only one. An attachment typed multipart/... or message/... is sent as
 *   application/octet-stream (composite types cannot be base64).
 * - Reply-To comes from the options only (the sender path decides it);
 *   the job's bcc list is never read.
 * - Boundaries are "=_herald_" + 16 hex digits of a hash of the job id and
 *   a counter; a candidate found in the text or html is skipped. The same
 *   job and options always give the same bytes.
 */
#ifndef HERALD_MIME_H
#define HERALD_MIME_H

#include "job.h"

#include <stddef.h>
#include <stdint.h>

#define MIME_MAX_BYTES (16u * 1024 * 1024) /* cap on the built message */

struct mime_from {
    const char *name;  /* display name (UTF-8) or NULL */
    const char *email; /* address for From: */
};

struct mime_opts {
    struct mime_from from;    /* From: header */
    const char *reply_to;     /* Reply-To: address, or NULL for none */
    const char *msgid_domain; /* right side of the Message-ID */
    int64_t date_ms;          /* Date: header */
};

/*
 * Builds the message. Returns 0 and stores a new buffer (*out, *outlen;
 * caller frees; NUL-terminated, the NUL not counted) or HERR_TOOBIG /
 * HERR_INVALID with `e` filled (may be NULL), *out NULL and *outlen 0.
 * `outlen` may be NULL.
 *
 * Headers written, in order: Date, From, Reply-To (if any), To, Cc (if
 * any; Bcc never), Subject, Message-ID, MIME-Version, X-Herald-Id, the
 * job's X- headers, Content-Type (+ Content-Transfer-Encoding).
 * The Message-ID is derived from the job id only:
 *   <herald.{id-derived}@{msgid_domain}>
 * so the same job always gets the same Message-ID.
 */
int mime_build(const struct job *j, const struct mime_opts *o, char **out,
               size_t *outlen, struct herr *e);

/*
 * Returns the Message-ID (with angle brackets) for job id `id` as a new
 * string (caller frees). The id-left is "herald." + the id with every
 * character outside [A-Za-z0-9_-] written as "=XX" (uppercase hex) --
 * except a '.' that follows a character other than '.' and is not the
 * id's last: that one stays. So "order.42" -> <herald.order.42@domain>,
 * "a:b" -> <herald.a=3Ab@domain>, "..x.." -> <herald.=2E=2Ex.=2E@domain>.
 * The result is always a valid RFC 5322 msg-id, and since '=' is not a
 * job id character, different ids give different Message-IDs. A domain
 * that is not a dot-atom is replaced by "invalid".
 */
char *mime_message_id(const char *id, const char *domain);

#endif
