/*
 * clock — wall-clock time as a seam, and RFC 3339 conversions.
 *
 * Everything that stamps or compares times calls clock_now_ms(); tests
 * may pin the clock with clock_set_fixed().
 */
#ifndef HERALD_CLOCK_H
#define HERALD_CLOCK_H

#include <stddef.h>
#include <stdint.h>

#define CLOCK_RFC3339_LEN 32 /* "2026-11-26T14:58:07.123Z" + NUL fits */

/* Milliseconds since the Unix epoch (UTC). */
int64_t clock_now_ms(void);

/* Pins clock_now_ms() to `ms`; a negative value returns to the real clock. */
void clock_set_fixed(int64_t ms);

/* Milliseconds of CLOCK_MONOTONIC: for timeouts and ages only (never
 * pinned, never a date). */
int64_t clock_mono_ms(void);

/*
 * Writes `ms` as RFC 3339 UTC with millisecond precision,
 * "2026-11-26T14:58:07.123Z", into out (CLOCK_RFC3339_LEN bytes).
 */
void clock_rfc3339(int64_t ms, char out[CLOCK_RFC3339_LEN]);

/*
 * Parses an RFC 3339 date-time ("2026-11-26T14:58:07Z",
 * "2026-11-26T09:58:07.5-05:00", 'T' or 't' or ' ' separator, 'Z' or 'z'
 * or a numeric offset required). Returns 0 and stores milliseconds since
 * the epoch, or HERR_INVALID.
 */
int clock_parse_rfc3339(const char *s, int64_t *ms);

/* RFC 5322 Date header value for `ms`: "Thu, 26 Nov 2026 14:58:07 +0000". */
void clock_rfc5322(int64_t ms, char out[40]);

#endif
