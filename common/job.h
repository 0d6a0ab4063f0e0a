/*
 * job — the notification job of SPEC §3: parse and validate.
 *
 * job_parse() takes the raw bytes exactly as they came off the queue and
 * either returns a fully validated `struct job` or fills a `struct herr`
 * naming the first field at fault ("to[2]" + "not an address", "subject" +
 * "contains a line break"). It checks the size cap before parsing. No I/O.
 *
 * Every string in a parsed job is valid UTF-8 without NUL; every header
 * field (subject, names, addresses, X- header values) is free of CR, LF
 * and other control characters, so the message builder can trust them.
 */
#ifndef HERALD_JOB_H
#define HERALD_JOB_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

#define JOB_MAX_BYTES (10u * 1024 * 1024) /* whole job, raw JSON */
#define JOB_ID_MAX 128
#define JOB_TYPE_MAX 32
#define JOB_ORG_MAX 64
#define JOB_ACCOUNT_MAX 64
#define JOB_TO_MAX 50
#define JOB_RCPT_MAX 100    /* to + cc + bcc */
#define JOB_SUBJECT_MAX 998 /* bytes */
#define JOB_NAME_MAX 256    /* display names, bytes */
#define JOB_ADDR_MAX 254    /* RFC 5321 path limit */
#define JOB_HEADERS_MAX 32  /* extra X- headers */
#define JOB_HEADER_NAME_MAX 76
#define JOB_HEADER_VALUE_MAX 900
#define JOB_ATTACHMENTS_MAX 32
#define JOB_FILENAME_MAX 255
#define JOB_TEMPLATE_MAX 64
#define JOB_CONTENT_TYPE_MAX 255 /* attachment "type/subtype" */

enum job_priority { JOB_PRIO_HIGH = 0, JOB_PRIO_NORMAL = 1, JOB_PRIO_LOW = 2 };
#define JOB_PRIO_COUNT 3

struct job_addr {
    char *email; /* local@domain, validated */
    char *name;  /* display name or NULL */
};

struct job_attachment {
    char *filename;
    char *content_type;  /* "type/subtype", validated; default
                            application/octet-stream */
    unsigned char *data; /* decoded bytes */
    size_t len;
};

struct job_header {
    char *name; /* "X-..." */
    char *value;
};

struct job {
    char *id; /* NULL when the job carried none (see job_assign_id) */
    char *type;
    char *org;
    char *account;
    char *from;
    char *from_name; /* NULL if absent */
    char *reply_to;  /* NULL if absent (then `from` applies) */
    struct job_addr *to, *cc, *bcc;
    size_t nto, ncc, nbcc;
    char *subject;       /* NULL only with a template */
    char *text;          /* NULL if absent */
    char *html;          /* NULL if absent */
    char *template_name; /* NULL if absent */
    char *data_json;     /* template data, compact JSON, or NULL */
    struct job_attachment *attachments;
    size_t nattachments;
    int64_t send_at_ms; /* 0 when absent */
    enum job_priority priority;
    struct job_header *headers;
    size_t nheaders;
    char *meta_json; /* compact JSON of `meta`, or NULL */
    char *resend_of; /* the id of the message this one resends, or NULL */
};

/*
 * Parses and validates `len` bytes of `raw` (need not be NUL-terminated).
 * On success returns 0 and stores a new job in *out (caller frees with
 * job_free). On failure returns HERR_INVALID or HERR_TOOBIG, leaves *out
 * NULL and fills `e` (may be NULL) with the field and the rule.
 *
 * Details of the contract:
 * - Checked in this order: size (HERR_TOOBIG, field ""), UTF-8 ("not valid
 *   UTF-8 at byte N", N counted from 0, field ""), JSON syntax ("not JSON:
 *   <jansson's text> (line L, column C)", field "", also for duplicate keys
 *   and \u0000), top level an object, unknown top-level keys (field = the
 *   key, "unknown field"), then the fields in the order of struct job.
 *   A job with several faults reports the first in that order.
 * - Field paths name the member: "to[2]", "to[2].email", "cc[0].name",
 *   "attachments[1].content_base64", "headers.X-Foo", "to+cc+bcc". Keys
 *   taken from the job are shown with control bytes escaped (\r, \n, \t,
 *   \xHH) and cut to fit HERR_FIELD_MAX.
 * - JSON null is not "absent": an optional member given as null is
 *   rejected ("must be a string", ...).
 * - An empty display name ("" in from_name or a recipient's name) is stored
 *   as NULL. Empty cc/bcc/attachments/headers arrays or objects give
 *   count 0 and a NULL pointer. send_at of exactly the epoch reads as
 *   absent (send_at_ms == 0).
 * - A job over JOB_MAX_BYTES / 8 is also refused with HERR_TOOBIG when its
 *   canonical form (job_to_json after job_assign_id) would exceed
 *   JOB_MAX_BYTES, so whatever job_to_json gives back always parses again.
 */
int job_parse(const char *raw, size_t len, struct job **out, struct herr *e);

/*
 * job_parse, and when it fails, the job's id and org in *who (each "" when
 * none can be read: not a string of its valid form; for a job that is not
 * JSON at all, only an id it begins with, {"id":"…"), so a refusal names
 * the job without parsing it again. `who` may be NULL.
 */
struct job_ident {
    char id[JOB_ID_MAX + 1];
    char org[JOB_ORG_MAX + 1];
};
int job_parse_ident(const char *raw, size_t len, struct job **out,
                    struct herr *e, struct job_ident *who);

void job_free(struct job *j);

/* Assigns a fresh random id ("h-" + 32 hex) when the job has none. */
void job_assign_id(struct job *j);

/*
 * Serializes a valid job back to compact JSON (the canonical form the
 * producer pushes). Returns a new NUL-terminated string (caller frees).
 * Members appear in the order of struct job; absent ones are left out,
 * "priority" and each attachment's "content_type" are always written, a
 * recipient without a name is a plain string, attachments are base64
 * without line breaks, send_at is RFC 3339 UTC with milliseconds.
 * job_parse() of the result gives an equal job.
 */
char *job_to_json(const struct job *j);

/* "high", "normal", "low"; an out-of-range value names the default. */
const char *job_priority_name(enum job_priority p);
/* Returns 0 and sets *p for "high"/"normal"/"low", else HERR_INVALID. */
int job_priority_parse(const char *s, enum job_priority *p);

/*
 * Field validators shared with the CLIs (return 1 when valid).
 * job_valid_email: an RFC 5321 Mailbox in ASCII: dot-atom or quoted-string
 * local part (at most 64 bytes, no spaces, no angle brackets), then a
 * domain of LDH labels (a single label such as "localhost" is accepted) or
 * an IPv4 address literal "[192.0.2.1]"; at most 254 bytes in all.
 */
int job_valid_email(const char *s);
int job_valid_id(const char *s);
int job_valid_org(const char *s); /* also for account */
int job_valid_type(const char *s);

#endif
