/*
 * tzwin — calendar-day boundaries in a named time zone, for quota windows
 * (issue 4: "daily windows are UTC calendar days unless the scheme names a
 * time zone; providers reset at their own midnight").
 *
 * Reads the system's compiled zone files (TZif, RFC 8536, versions 1-3;
 * /usr/share/zoneinfo/<name>, Debian's tzdata) itself: no TZ environment
 * variable, no tzset(), no global state, so it is safe on any thread.
 * After the last transition in the file, the POSIX TZ footer string
 * (RFC 8536 §3.3, e.g. "PST8PDT,M3.2.0,M11.1.0") gives the rule.
 */
#ifndef HERALD_TZWIN_H
#define HERALD_TZWIN_H

#include "err.h"

#include <stdint.h>

#define TZWIN_NAME_MAX 64

struct tzwin;

/*
 * A zone name is valid when it is 1-TZWIN_NAME_MAX bytes of
 * [A-Za-z0-9_+-] separated by single '/', no segment "." or "..", not
 * starting with '/': "UTC", "Europe/Paris", "America/Argentina/Salta",
 * "Etc/GMT+5". Returns 1 when valid (it may still not exist).
 */
int tzwin_valid_name(const char *name);

/*
 * Loads zone `name` from `dir` (NULL: "/usr/share/zoneinfo"). 0 and a new
 * zone in *out, or HERR_INVALID (bad name, field "time_zone"),
 * HERR_NOTFOUND ("no time zone named ..."), HERR_IO / HERR_INVALID (not a
 * TZif file, truncated, ...) with a sentence that names the zone.
 * "UTC" and "Etc/UTC" always load, even without zone files.
 */
int tzwin_load(const char *dir, const char *name, struct tzwin **out,
               struct herr *e);

/* The pure half of tzwin_load: the zone `name` from the TZif bytes of
 * its file (`where` names it in errors), or the UTC zone under that
 * name. */
int tzwin_from_tzif(const char *name, const char *where,
                    const unsigned char *data, size_t len, struct tzwin **out,
                    struct herr *e);
struct tzwin *tzwin_utc(const char *name);

void tzwin_free(struct tzwin *z);

/* The zone's name as loaded. */
const char *tzwin_name(const struct tzwin *z);

/* Offset from UTC (seconds, east positive) in effect at UTC time t_s. */
long tzwin_offset(const struct tzwin *z, int64_t t_s);

/*
 * The start of the local calendar day holding UTC time t_s, as UTC
 * seconds: the first instant whose local date is that date (local
 * midnight, or the first local time after a transition that skips it).
 * z NULL means UTC.
 */
int64_t tzwin_day_start(const struct tzwin *z, int64_t t_s);

/* The start of the next local calendar day after the one holding t_s. */
int64_t tzwin_next_day_start(const struct tzwin *z, int64_t t_s);

#endif
