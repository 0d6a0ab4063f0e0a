/*
 * tmpl — message templates (SPEC §3: a job may carry `template`, a name,
 * and `data`, an object, instead of subject / text / html). Pure: no I/O.
 *
 * Storage, the contract between libherald / heraldctl (which write) and
 * the worker (which reads):
 *
 *   <prefix>:templates   hash   field = template name, [A-Za-z0-9._-]{1,64}
 *                               (the rule of the job's `template`);
 *                               value = compact JSON
 *                               {"subject": "...", "text": "...",
 *                                "html": "..."}
 *                               subject required, at least one of text /
 *                               html, no other members.
 *
 * libherald stores tmpl_to_json() of a template tmpl_parse() accepted, so
 * whatever is in the hash parses; the worker still runs tmpl_parse() on
 * what it reads (a hash written by hand is input like any other).
 *
 * Syntax of each part (subject, text, html):
 *
 *   {{name}}  {{ a.b.c }}   the value of data.name / data.a.b.c; white
 *                           space (space, tab, CR, LF) around the name is
 *                           allowed. Names: [A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*,
 *                           at most TMPL_VAR_MAX bytes; each dot goes one
 *                           object deeper into data.
 *   {{{name}}}              html only: the value inserted without escaping.
 *
 *   Everything else is literal, including a lone "}}" (CSS in html often
 *   ends in "}}"). Every "{{" must be closed by "}}" (and "{{{" by "}}}")
 *   with a valid name between. A literal "{{" cannot be written in a
 *   template; pass it as a data value: values are inserted once and never
 *   read as template syntax themselves.
 *
 * Values: a string as is; an integer or a real as its JSON number (a real
 * in the shortest form that reads back to the same double, 12.5, 0.1,
 * 3.0); true / false as "true" / "false"; null as "". A missing key, a
 * path through a non-object, an object or an array is an error naming the
 * data field. In html every {{...}} value is HTML-escaped (& < > " '
 * become &amp; &lt; &gt; &quot; &#39;), {{{...}}} is raw. In text nothing
 * is escaped. In the subject a value must not contain a control character
 * (C0, DEL, C1, U+2028, U+2029) and the rendered subject must stay within
 * TMPL_SUBJECT_MAX bytes, so data can never inject a header.
 *
 * Errors follow common/err.h. Positions are byte offsets into the part,
 * counted from 0 (the offset of the opening "{{").
 */
#ifndef HERALD_TMPL_H
#define HERALD_TMPL_H

#include "err.h"

#include <stddef.h>

#define TMPL_NAME_MAX 64                    /* a template's name */
#define TMPL_PART_MAX (1024u * 1024)        /* each part, as stored */
#define TMPL_SUBJECT_MAX 998                /* subject, before and after */
#define TMPL_JSON_MAX (8u * 1024 * 1024)    /* the stored JSON */
#define TMPL_DATA_MAX (10u * 1024 * 1024)   /* data JSON given to render */
#define TMPL_OUTPUT_MAX (10u * 1024 * 1024) /* subject + text + html */
#define TMPL_VAR_MAX 128                    /* a {{name}}, bytes */

/* A parsed template: the three parts as stored (template syntax kept). */
struct tmpl {
    char *subject; /* never NULL */
    char *text;    /* NULL when absent */
    char *html;    /* NULL when absent */
};

/* 1 when s is a valid template name ([A-Za-z0-9._-]{1,TMPL_NAME_MAX}). */
int tmpl_valid_name(const char *s);

/*
 * Parses `len` bytes of `json` (need not be NUL-terminated), the stored
 * form, and checks the template syntax of every part. Returns 0 and a new
 * template in *out (free with tmpl_free), or leaves *out NULL and returns:
 *   HERR_TOOBIG   len over TMPL_JSON_MAX (field ""), a part over
 *                 TMPL_PART_MAX or the subject over TMPL_SUBJECT_MAX
 *                 (field = the part)
 *   HERR_INVALID  not JSON or not an object (field ""), an unknown member
 *                 (field = its name), subject missing or a part not a
 *                 string, neither text nor html ("text"), a control
 *                 character in the subject ("subject"), a syntax error:
 *                 field = the part, msg such as "unclosed {{ at byte 120",
 *                 "bad name 'a..b' at byte 7", "{{{ at byte 3: raw
 *                 {{{ }}} is only allowed in html".
 */
int tmpl_parse(const char *json, size_t len, struct tmpl **out, struct herr *e);

void tmpl_free(struct tmpl *t);

/*
 * The stored form of `t`: compact JSON, members in the order subject,
 * text, html, absent parts left out. New string (caller frees).
 * tmpl_parse() of it gives an equal template.
 */
char *tmpl_to_json(const struct tmpl *t);

/*
 * Renders `t` (as tmpl_parse returned it) with `data_json`, a
 * NUL-terminated JSON object (NULL means {}). On success returns 0 and
 * stores new strings in *subject, *text and *html (NULL for an absent
 * part; the caller frees them). Any of the three pointers may be NULL:
 * that part is still rendered and checked, then dropped. On failure every
 * output is NULL and:
 *   HERR_INVALID  data not JSON or not an object (field "data"); a name
 *                 missing from data (field "data.amount", msg "missing"),
 *                 or naming an object or array ("is an object, not a
 *                 value"); a subject value with CR or LF (field
 *                 "data.<name>", msg "subject: contains a line break") or
 *                 another control character
 *   HERR_TOOBIG   data_json over TMPL_DATA_MAX (field "data"); the
 *                 rendered subject over TMPL_SUBJECT_MAX (field = the
 *                 data field that passed it, or "subject"); all output
 *                 over TMPL_OUTPUT_MAX (field = the data field or part)
 */
int tmpl_render(const struct tmpl *t, const char *data_json, char **subject,
                char **text, char **html, struct herr *e);

#endif
