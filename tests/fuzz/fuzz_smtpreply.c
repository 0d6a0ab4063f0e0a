/*
 * fuzz_smtpreply — any bytes as a server's reply lines (split at LF, as
 * the client splits them): a line is a reply exactly when it starts with
 * a code of 200..599 and a space, a '-' or its end; the text it gives
 * lies inside the line and holds no CR or LF at its end; EHLO keywords
 * of any bytes only ever set flags. The same replies drive a session's
 * session (common/smtpsess.c, configured by the first byte): its set-up
 * never sends credentials in clear text to a server not on loopback,
 * never traces them, says only whole CR LF lines; once set up, a
 * transaction of three recipients gets one result, at most one, with a
 * class and a code that a reply or Herald gave; with a second one chained
 * after its message (config bit 5, smtpsess_can_chain permitting), each
 * gets at most one result, the chained one's after the first's, and the
 * session is on the chained one exactly when it says chained_on.
 */
#include "../../common/smtpreply.h"
#include "../../common/smtpsess.h"
#include "fuzz_common.h"

#include <string.h>

#define FUZZ_PW "pa55word"

/* A transaction of three recipients over res and rr. */
static void
txn_setup(struct smtpsess_txn *t, struct mail_result *res,
          struct mail_rcpt_result *rr, const char *from,
          const char *const *rcpt)
{
    memset(rr, 0, 3 * sizeof *rr);
    memset(res, 0, sizeof *res);
    res->rcpt = rr;
    res->nrcpt = 3;
    memset(t, 0, sizeof *t);
    t->mail_from = from;
    t->rcpt = rcpt;
    t->nrcpt = 3;
    t->res = res;
    smtpsess_txn_init(t);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    struct smtpreply_caps caps;
    memset(&caps, 0, sizeof caps);
    struct smtpsess ss;
    memset(&ss, 0, sizeof ss);
    unsigned cfg = size ? data[0] : 0;
    ss.helo = "fuzz.test";
    ss.starttls = cfg & 1;
    ss.require_tls = (cfg >> 1) & 1;
    ss.plain_auth_ok = (cfg >> 2) & 1;
    ss.user = (cfg >> 3) & 1 ? "user" : NULL;
    ss.password = FUZZ_PW;
    smtpsess_begin(&ss, (cfg >> 4) & 1);
    struct buf cmd;
    buf_init(&cmd, 0);
    struct smtpsess_out o = {.cmd = &cmd};
    int stopped = 0, results = 0;
    static const char *const rcpt[3] = {"a@x.test", "b@x.test", "c@x.test"};
    struct mail_rcpt_result rr[3], rr2[3];
    struct mail_result res, res2;
    struct smtpsess_txn txn, txn2;
    txn_setup(&txn, &res, rr, "f@x.test", rcpt);
    txn_setup(&txn2, &res2, rr2, "g@x.test", rcpt);
    int chained = 0, results2 = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        struct smtpreply_line l;
        int rc = smtpreply_parse(p, n, &l);
        size_t m = n;
        while (m > 0 && (p[m - 1] == '\n' || p[m - 1] == '\r'))
            m--;
        int want = m >= 3 && p[0] >= '2' && p[0] <= '5' && p[1] >= '0' &&
                   p[1] <= '9' && p[2] >= '0' && p[2] <= '9' &&
                   (m == 3 || p[3] == ' ' || p[3] == '-');
        FUZZ_ASSERT((rc == 0) == want, "rc %d for a line of %zu bytes", rc, n);
        if (rc == 0) {
            FUZZ_ASSERT(l.code >= 200 && l.code <= 599, "code %d", l.code);
            FUZZ_ASSERT(l.text >= p && l.text + l.textlen <= p + m,
                        "text outside the line");
            FUZZ_ASSERT(l.textlen == 0 || (l.text[l.textlen - 1] != '\n' &&
                                           l.text[l.textlen - 1] != '\r'),
                        "line end in the text");
            FUZZ_ASSERT(l.more == (m > 3 && p[3] == '-'), "more %d", l.more);
            smtpreply_ehlo_keyword(l.text, l.textlen, &caps);
            if (!stopped) {
                smtpsess_line(&ss, &l);
                if (!l.more) {
                    char line[600];
                    snprintf(line, sizeof line, "%.*s",
                             (int)(m > 500 ? 500 : m), p);
                    buf_reset(&cmd);
                    smtpsess_reply(&ss, l.code, line, &o);
                    FUZZ_ASSERT(!strstr(o.trace, FUZZ_PW), "password traced");
                    FUZZ_ASSERT(cmd.len == 0 || (cmd.len >= 2 &&
                                                 cmd.p[cmd.len - 2] == '\r' &&
                                                 cmd.p[cmd.len - 1] == '\n'),
                                "a command not ended by CR LF");
                    int creds =
                        cmd.len >= 4 && (strncmp(cmd.p, "AUTH", 4) == 0 ||
                                         ss.wait == SMTPSESS_AUTH_USER ||
                                         ss.wait == SMTPSESS_AUTH_PASS);
                    FUZZ_ASSERT(!creds || ss.secure || ss.plain_auth_ok,
                                "credentials in clear text");
                    FUZZ_ASSERT(!(o.done && o.failed), "done and failed");
                    if (o.start_tls)
                        smtpsess_tls_up(&ss, &o);
                    if (o.txn_done) {
                        struct mail_result *r = o.txn == &txn2 ? &res2 : &res;
                        if (o.txn == &txn2) {
                            results2++;
                            FUZZ_ASSERT(chained && results == 1,
                                        "the chained one ended first");
                        } else {
                            results++;
                            FUZZ_ASSERT(o.txn == &txn,
                                        "the result of another transaction");
                        }
                        FUZZ_ASSERT(o.chained_on
                                        ? ss.txn == &txn2 && o.txn == &txn
                                        : ss.txn == NULL,
                                    "the session is on the wrong transaction");
                        FUZZ_ASSERT(r->cls <= MAIL_PERM, "class %d", r->cls);
                        FUZZ_ASSERT(r->code == 0 ||
                                        (r->code >= 200 && r->code <= 599),
                                    "code %d", r->code);
                    }
                    if (o.send_body && !chained && ((cfg >> 5) & 1) &&
                        smtpsess_can_chain(&ss)) {
                        size_t before = cmd.len;
                        smtpsess_txn_chain(&ss, &txn2, &o);
                        chained = 1;
                        FUZZ_ASSERT(cmd.len > before &&
                                        cmd.p[cmd.len - 1] == '\n',
                                    "chained commands not ended by CR LF");
                    }
                    if (o.done) {
                        buf_reset(&cmd);
                        smtpsess_txn_start(&ss, &txn, &o);
                    }
                    stopped = o.failed || o.error || o.close ||
                              (o.txn_done && !o.chained_on);
                }
            }
        }
        p += n;
    }
    FUZZ_ASSERT(results <= 1, "%d results for one transaction", results);
    FUZZ_ASSERT(results2 <= 1, "%d results for the chained one", results2);
    buf_free(&cmd);
    FUZZ_ASSERT((caps.pipelining | caps.starttls | caps.size | caps.auth |
                 caps.auth_plain | caps.auth_login | caps.auth_cram_md5) <= 1,
                "a flag other than 0 or 1");
    FUZZ_ASSERT(caps.auth ||
                    !(caps.auth_plain | caps.auth_login | caps.auth_cram_md5),
                "a mechanism without AUTH");
    return 0;
}
