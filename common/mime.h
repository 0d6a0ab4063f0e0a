/*
 * mime — builds the RFC 5322 / MIME bytes of one message from a valid job.
 *
 * The sender path decides From and the envelope (see worker/resolve.h);
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
    struct mime_from from; /* From: header */
    const char *reply_to;  /* Reply-To: address, or NULL for none */
    const char *msgid_domain; /* right side of the Message-ID */
    int64_t date_ms;          /* Date: header */
};

/*
 * Builds the message. Returns 0 and stores a new buffer (*out, *outlen;
 * caller frees) or HERR_TOOBIG / HERR_INVALID with `e` filled.
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

/* Writes the Message-ID (with angle brackets) for job id `id`. */
char *mime_message_id(const char *id, const char *domain);

#endif
