/*
 * scheme — Email Sending Schemes (SPEC §4, §7): an organisation's own SMTP
 * server and credentials for one sending address. The record, its
 * validation, and its JSON form. Pure: no I/O, no Redis, no crypto (the
 * password arrives here already sealed; common/seal.h seals and opens).
 *
 * STORAGE CONTRACT (written by heraldctl / libherald, read by workers)
 *
 *   <prefix>:schemes          hash   field "<org>/<email lowercased>"
 *                                    (scheme_field) -> the compact JSON
 *                                    below (scheme_to_json)
 *   <prefix>:schemes:version  string an integer INCR'd in the same atomic
 *                                    step (one Lua script) as every change
 *                                    to the hash; a worker polls it (GET)
 *                                    and reloads the hash (HGETALL) when it
 *                                    moved, so a change is seen within one
 *                                    poll interval. A missing key reads as 0.
 *
 * The value, one JSON object (members in this order; optional ones are
 * absent when unset, never null):
 *
 *   org              string  [A-Za-z0-9._-]{1,64} (job_valid_org)
 *   email            string  the sending address as given (job_valid_email);
 *                            the hash field holds it lowercased, and a
 *                            job's "from" is looked up lowercased
 *   smtp_host        string  hostname (LDH labels) or IPv4/IPv6 literal,
 *                            no brackets
 *   smtp_port        integer 1-65535
 *   imap_host        string  optional, same form as smtp_host
 *   imap_port        integer 1-65535, present exactly when imap_host is
 *   username         string  1-256 bytes, no control characters
 *   password         string  the SEALED token (seal.h "v1:<key id>:..."),
 *                            never the clear password. Sealed with the aad
 *                            (context) "<org>/<email lowercased>/smtp", i.e.
 *                            scheme_aad(): the hash field + "/smtp". The
 *                            same password serves SMTP AUTH and IMAP LOGIN.
 *   tls              string  "ssl" (implicit TLS), "starttls" (STARTTLS
 *                            required), "none" (only when smtp_host and
 *                            imap_host are loopback: 127.0.0.0/8, ::1,
 *                            "localhost"). The same mode applies to IMAP.
 *   daily_limit      integer optional, 1-SCHEME_LIMIT_MAX (recipients/day)
 *   minute_limit     integer optional, 1-SCHEME_LIMIT_MAX (recipients/min)
 *   time_zone        string  optional: the zone whose calendar days are
 *                            the daily_limit windows, an IANA name
 *                            (tzwin_valid_name: "Europe/Paris", at most
 *                            TZWIN_NAME_MAX bytes); absent: UTC days.
 *                            scheme_check checks the name only (pure);
 *                            heraldctl also checks that the zone loads
 *                            (tzwin_load) before writing it
 *   on_auth_failure  string  "fallback" (relay path with Reply-To) or
 *                            "hold" (jobs wait, deferred); default fallback
 *   sent_folder      string  optional IMAP folder for a copy of each sent
 *                            message; only with imap_host; 1-255 bytes
 *   state            string  "ok" or "auth_failed"
 *   state_reason     string  "" when ok; the server's reply otherwise
 *                            (at most SCHEME_REASON_MAX bytes)
 *   state_at         string  RFC 3339 UTC (clock_rfc3339): when state was
 *                            last set (created_at for a new scheme)
 *   created_at       string  RFC 3339 UTC
 *   updated_at       string  RFC 3339 UTC: the last change of a setting
 *                            (not of state, not a key rotation)
 *
 * Writers change a value only by compare-and-set: a Lua script that
 * replaces the field only if it still holds the exact JSON the writer read
 * (or is absent, for an add), then INCRs the version, in one step
 * (redis/scheme_cas.lua). A worker marking a scheme
 * auth_failed must do the same: read the value, set state = "auth_failed",
 * state_reason, state_at (scheme_mark_failed), and CAS it in; on a
 * mismatch the scheme was updated meanwhile and the mark is dropped (new
 * credentials deserve a try). An update that changes the username or the
 * password resets the state to "ok" (SPEC §4: "not tried again until
 * updated").
 *
 * Readers must ignore members they do not know (later versions may add
 * some) and refuse a value that scheme_from_json rejects.
 */
#ifndef HERALD_SCHEME_H
#define HERALD_SCHEME_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

#define SCHEME_HOST_MAX 253
#define SCHEME_USER_MAX 256
#define SCHEME_PASSWORD_MAX 1024 /* bytes of a clear password */
#define SCHEME_FOLDER_MAX 255
#define SCHEME_REASON_MAX 512
#define SCHEME_LIMIT_MAX 1000000000LL
#define SCHEME_JSON_MAX 16384 /* a stored value; longer is refused */
#define SCHEME_FIELD_MAX 320  /* "<org>/<email>" + NUL fits */
#define SCHEME_AAD_MAX 330    /* "<org>/<email>/smtp" + NUL fits */
#define SCHEME_AAD_SUFFIX "/smtp"

enum scheme_tls { SCHEME_TLS_SSL = 0, SCHEME_TLS_STARTTLS, SCHEME_TLS_NONE };
enum scheme_on_auth { SCHEME_AUTH_FALLBACK = 0, SCHEME_AUTH_HOLD };
enum scheme_state { SCHEME_STATE_OK = 0, SCHEME_STATE_AUTH_FAILED };

struct scheme {
    char *org;
    char *email;
    char *smtp_host;
    int smtp_port;
    char *imap_host; /* NULL: no IMAP */
    int imap_port;   /* 0 without imap_host */
    char *username;
    char *password; /* the sealed token */
    enum scheme_tls tls;
    long long daily_limit;  /* 0: none */
    long long minute_limit; /* 0: none */
    char *time_zone;        /* NULL: UTC */
    enum scheme_on_auth on_auth_failure;
    char *sent_folder; /* NULL: none */
    enum scheme_state state;
    char *state_reason; /* never NULL ("" when ok) */
    int64_t state_at;   /* ms since the epoch */
    int64_t created_at;
    int64_t updated_at;
};

/*
 * The settings an add or an update gives. A NULL pointer / 0 / -1 means
 * "not given" (the stored value stays; for an add, the default or an
 * error for a required one). The clear_* flags remove an optional
 * setting (update only). `password` is the sealed token, not the clear
 * password.
 */
struct scheme_patch {
    const char *smtp_host;
    int smtp_port; /* 0: not given */
    const char *imap_host;
    int imap_port;
    int clear_imap; /* removes imap_host, imap_port and sent_folder */
    const char *username;
    const char *password; /* sealed token */
    int tls;              /* enum scheme_tls, -1: not given */
    long long daily_limit;
    int clear_daily_limit;
    long long minute_limit;
    int clear_minute_limit;
    const char *time_zone; /* a zone name (tzwin_valid_name) */
    int clear_time_zone;   /* back to UTC days */
    int on_auth_failure;   /* enum scheme_on_auth, -1: not given */
    const char *sent_folder;
    int clear_sent_folder;
};

/* A patch with nothing given (pointers NULL, numbers 0, enums -1). */
void scheme_patch_init(struct scheme_patch *p);

/* Frees every string and the struct; NULL is a no-op. */
void scheme_free(struct scheme *s);

/* A deep copy (new). */
struct scheme *scheme_dup(const struct scheme *s);

/* ---- validators (pure; return 1 when valid) ---- */

/* A hostname of LDH labels (1-63 each, no leading or trailing hyphen, at
 * most 253 bytes, one trailing dot allowed) or an IPv4 / IPv6 literal. */
int scheme_valid_host(const char *s);
/* 127.0.0.0/8, ::1 (and ::ffff:127.x.y.z), "localhost" (any case, an
 * optional trailing dot). */
int scheme_host_is_loopback(const char *s);

/*
 * Parsers for command-line values: decimal digits only, no sign, no
 * spaces. 0 and *out set, or HERR_INVALID with a sentence in `e` (field
 * left for the caller: pass it as `field`).
 *   port: 1-65535.  limit: 1-SCHEME_LIMIT_MAX.
 */
int scheme_parse_port(const char *s, const char *field, int *out,
                      struct herr *e);
int scheme_parse_limit(const char *s, const char *field, long long *out,
                       struct herr *e);
/* "ssl" | "starttls" | "none"; "fallback" | "hold". 0 or HERR_INVALID. */
int scheme_tls_parse(const char *s, enum scheme_tls *out);
int scheme_on_auth_parse(const char *s, enum scheme_on_auth *out);
const char *scheme_tls_name(enum scheme_tls t);
const char *scheme_on_auth_name(enum scheme_on_auth a);
const char *scheme_state_name(enum scheme_state s);

/*
 * The hash field "<org>/<email lowercased>" and the seal context
 * "<org>/<email lowercased>/smtp". Write into `out` and return the length,
 * or -1 when it does not fit (SCHEME_FIELD_MAX / SCHEME_AAD_MAX always
 * suffice for a valid org and email).
 */
int scheme_field(char *out, size_t n, const char *org, const char *email);
int scheme_aad(char *out, size_t n, const char *org, const char *email);

/*
 * Checks a whole record against the rules above. 0, or HERR_INVALID /
 * HERR_TOOBIG with e->field the JSON member at fault ("smtp_port",
 * "tls", ...) and a sentence naming the value where that is not a secret.
 * The password is only checked to be a well-formed sealed token (its key
 * id readable); it is never quoted.
 */
int scheme_check(const struct scheme *s, struct herr *e);

/*
 * Builds a new scheme for `org` / `email` from an add's patch, stamped
 * `now_ms` (created_at = updated_at = state_at, state ok). Required:
 * smtp_host, smtp_port, username, password (e->field names the first one
 * missing); tls defaults to "ssl" when smtp_port is 465 and to "starttls"
 * otherwise; on_auth_failure to "fallback". imap_host and imap_port go
 * together. clear_* flags are refused. The result passes scheme_check;
 * otherwise HERR_INVALID / HERR_TOOBIG and *out NULL.
 */
int scheme_create(const char *org, const char *email,
                  const struct scheme_patch *p, int64_t now_ms,
                  struct scheme **out, struct herr *e);

/*
 * Applies an update's patch to `s` in place, stamped `now_ms`: only the
 * settings given change (updated_at too, when anything was given). A new
 * username or password resets state to "ok" (reason "", state_at now).
 * imap_host without imap_port (or the reverse) is allowed only when the
 * scheme already has IMAP. The result is checked (scheme_check); on error
 * `s` is left unchanged. HERR_INVALID when nothing is given ("nothing to
 * change").
 */
int scheme_apply(struct scheme *s, const struct scheme_patch *p, int64_t now_ms,
                 struct herr *e);

/*
 * Marks `s` auth_failed with `reason` (the server's reply; control
 * characters become spaces, cut to SCHEME_REASON_MAX bytes at a UTF-8
 * boundary) at `now_ms`. For the worker.
 */
void scheme_mark_failed(struct scheme *s, const char *reason, int64_t now_ms);

/* Every writer of <prefix>:schemes changes it by the compare-and-set
 * redis/scheme_cas.lua (common/rscript.h), which also moves
 * <prefix>:schemes:version. */

/* scheme_to_json flags */
#define SCHEME_JSON_PUBLIC 0x1 /* leave the password out (scheme list) */

/*
 * The record as one compact JSON object (layout above); with
 * SCHEME_JSON_PUBLIC without "password". New string (caller frees).
 */
char *scheme_to_json(const struct scheme *s, unsigned flags);

/*
 * Parses a stored value: `len` bytes of `json` (at most SCHEME_JSON_MAX).
 * Unknown members are ignored; every known one is type-checked, the
 * required ones must be there, and the record must pass scheme_check.
 * Returns 0 and a new scheme in *out, or HERR_INVALID / HERR_TOOBIG with
 * e->field the member at fault (*out NULL). Messages never quote the
 * password.
 */
int scheme_from_json(const char *json, size_t len, struct scheme **out,
                     struct herr *e);

#endif
