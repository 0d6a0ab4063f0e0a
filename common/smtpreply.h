/*
 * smtpreply — reading an SMTP server's replies (RFC 5321 §4.2): one line
 * at a time, and the extensions an EHLO reply's lines name. Pure: bytes
 * in, fields out; the client (io/mailer.c) feeds it each line it reads.
 * Fuzzed (tests/fuzz/fuzz_smtpreply.c).
 */
#ifndef HERALD_SMTPREPLY_H
#define HERALD_SMTPREPLY_H

#include <stddef.h>

/* One reply line: "250-PIPELINING", "250 2.0.0 Ok", "220" ... */
struct smtpreply_line {
    int code;         /* 200..599 */
    int more;         /* "NNN-": more lines of this reply follow */
    const char *text; /* after "NNN " / "NNN-", CR LF excluded */
    size_t textlen;
};

/*
 * Parses the `n` bytes of one line (its CR LF or LF may be there or not).
 * 0 and *out, or -1 when it is not a reply line: three digits, the first
 * 2 to 5, then a space, a '-', or the line's end.
 */
int smtpreply_parse(const char *line, size_t n, struct smtpreply_line *out);

/* What a server offers, from its EHLO reply's lines. Start zeroed. */
struct smtpreply_caps {
    int pipelining; /* RFC 2920 */
    int starttls;   /* RFC 3207 */
    int size;       /* RFC 1870 */
    int auth;       /* AUTH offered at all, whatever its mechanisms */
    int auth_plain, auth_login, auth_cram_md5; /* AUTH mechanisms offered */
};

/* Adds what one EHLO keyword line names (its text: "PIPELINING",
 * "AUTH PLAIN LOGIN", "AUTH=LOGIN", "SIZE 10240000"; case does not
 * matter); unknown keywords and mechanisms are left out. */
void smtpreply_ehlo_keyword(const char *text, size_t n,
                            struct smtpreply_caps *caps);

#endif
