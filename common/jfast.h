/*
 * jfast — a strict RFC 8259 JSON parser that builds jansson values, and
 * a writer of them (jfast_dumpb).
 *
 * jansson's own parser reads its input one character at a time through a
 * stream abstraction; on a typical 2 KB job (mostly one long string) that
 * is ~27 µs, the largest single cost of a job in the worker. This parser
 * scans strings in runs and hands jansson finished values: the result is
 * the same json_t tree, about ten times sooner.
 *
 * The input must already be valid UTF-8 (job_parse checks it first); this
 * module does not check it again. It accepts any JSON value at the top
 * level (like JSON_DECODE_ANY) and refuses: trailing data, duplicate
 * object keys, "\u0000", lone or misordered surrogate escapes, raw control
 * characters in strings, integers outside int64, reals that overflow,
 * nesting deeper than JFAST_DEPTH_MAX, and more than JFAST_VALUES_MAX
 * values in all (jansson spends ~250 bytes on an empty object: ten MiB of
 * "{}," would take the better part of a gigabyte and seconds of a loop). On
 * failure it returns NULL and fills `err` (may be NULL) like jansson does:
 * text, line, column (both from 1) and position (byte offset). No I/O.
 */
#ifndef HERALD_JFAST_H
#define HERALD_JFAST_H

#include <jansson.h>
#include <stddef.h>

#define JFAST_DEPTH_MAX 512
#define JFAST_VALUES_MAX 100000
#define JFAST_VALUES_MAX_TEXT "100000"

/* Returns a new reference, or NULL with `err` filled. */
json_t *jfast_loadb(const char *buf, size_t len, json_error_t *err);

struct buf;

/*
 * Appends `v` as compact JSON to `b`: the bytes json_dumps(v,
 * JSON_COMPACT) gives (keys in jansson's order, strings escaped as
 * jansson does, reals as %.17g), without jansson's dump, which checks
 * every string's UTF-8 one code point at a time (a third of herald-api's
 * CPU for a page of records). Strings must be valid UTF-8, as jansson's
 * constructors make them. 0, or nonzero when `b` would pass its maximum
 * (HERR_TOOBIG) or the nesting is absurd (-1); `b` then holds part of it.
 */
int jfast_dumpb(const json_t *v, struct buf *b);

/* Appends the n bytes at s (valid UTF-8) as a JSON string, escaped as
 * jansson escapes it; 0 or nonzero as jfast_dumpb. */
int jfast_dump_string(struct buf *b, const char *s, size_t n);

#endif
