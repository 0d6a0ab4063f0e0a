/*
 * smtpreply — reply lines and EHLO keywords (smtpreply.h).
 */
#include "smtpreply.h"

#include <string.h>
#include <strings.h>

int
smtpreply_parse(const char *line, size_t n, struct smtpreply_line *out)
{
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (n < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
        line[1] > '9' || line[2] < '0' || line[2] > '9')
        return -1;
    if (n > 3 && line[3] != ' ' && line[3] != '-')
        return -1;
    out->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    out->more = n > 3 && line[3] == '-';
    out->text = n > 4 ? line + 4 : line + n;
    out->textlen = n > 4 ? n - 4 : 0;
    return 0;
}

/* The word at *p (up to a space or '='), *p moved past it and the
 * separators after it; its length in *len, 0 at the end. */
static const char *
next_word(const char **p, const char *end, size_t *len)
{
    const char *s = *p;
    while (s < end && (*s == ' ' || *s == '='))
        s++;
    const char *w = s;
    while (s < end && *s != ' ' && *s != '=')
        s++;
    *len = (size_t)(s - w);
    *p = s;
    return w;
}

static int
word_is(const char *w, size_t n, const char *kw)
{
    return n == strlen(kw) && strncasecmp(w, kw, n) == 0;
}

void
smtpreply_ehlo_keyword(const char *text, size_t n, struct smtpreply_caps *caps)
{
    const char *p = text, *end = text + n;
    size_t kl;
    const char *kw = next_word(&p, end, &kl);
    if (word_is(kw, kl, "PIPELINING"))
        caps->pipelining = 1;
    else if (word_is(kw, kl, "STARTTLS"))
        caps->starttls = 1;
    else if (word_is(kw, kl, "SIZE"))
        caps->size = 1;
    else if (word_is(kw, kl, "AUTH")) {
        caps->auth = 1;
        size_t ml;
        for (const char *m = next_word(&p, end, &ml); ml > 0;
             m = next_word(&p, end, &ml)) {
            if (word_is(m, ml, "PLAIN"))
                caps->auth_plain = 1;
            else if (word_is(m, ml, "LOGIN"))
                caps->auth_login = 1;
            else if (word_is(m, ml, "CRAM-MD5"))
                caps->auth_cram_md5 = 1;
        }
    }
}
