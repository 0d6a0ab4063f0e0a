"""What heraldctl and herald-enqueue print for people never carries raw
control characters from message content (issue 8, hardening): a message
whose body holds ESC ]0;title BEL or ESC [2J must not retitle or clear the
support person's terminal, a C1 control (U+009B is CSI on many terminals)
must not act, and a bidirectional control (U+202E) must not reorder what
support sees. Human output shows them escaped (\\x1b, \\u009b, \\u202e);
`--json` stays exact. And attachment names with bidirectional controls are
refused (herald-enqueue exit 2, a raw-pushed job dead with reason
invalid), naming the field.

Every test starts its own Redis; the Message Center records are made by
the real worker delivering to the harness' SMTP server."""

import json
import os
import socket
import threading
import time

import harness
from harness import check, make_job, push, run, wait_until

# What a terminal could act on, or what could disguise the text.
BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}

ESC_TITLE = "\x1b]0;pwned\x07"
ESC_CLEAR = "\x1b[2J"
C1_CSI = "\u009b"
RLO = "\u202e"

SUBJECT = "Invoice " + RLO + "fdp.exe is ready"  # a subject refuses C0/C1
TEXT = (
    "Hello Alice,\n"
    + ESC_TITLE + "title changed\n"
    + ESC_CLEAR + "screen cleared\n"
    + "C1: " + C1_CSI + "31m red\n"
    + "bidi: " + RLO + "exe.fdp\u202c and \u2066iso\u2069\n"
    + "tab\there, a backslash C:\\temp, a lone CR\rover\r\n"
    + "DEL\x7f and NUL-free end\n"
)


def unsafe(text):
    """What in `text` is not safe on a terminal (a summary with the first
    place), or None. Line feeds separate output lines and may appear."""
    found, first = {}, None
    for i, ch in enumerate(text):
        cp = ord(ch)
        bad = (cp < 0x20 and ch != "\n") or cp == 0x7F or 0x80 <= cp <= 0x9F
        bad = bad or cp in BIDI or cp in (0x2028, 0x2029)
        if ch == "\ufffd":  # run() decodes stderr with errors="replace"
            bad = True
        if bad:
            found[f"U+{cp:04X}"] = found.get(f"U+{cp:04X}", 0) + 1
            if first is None:
                first = text[max(0, i - 40):i + 40]
    return f"{found}, first in {first!r}" if found else None


def check_safe(cp, what):
    """Neither stdout nor stderr of `cp` carries a raw control or a byte
    that is not UTF-8."""
    try:
        out = cp.stdout_bytes.decode("utf-8")  # strict
    except UnicodeDecodeError as e:
        b = cp.stdout_bytes
        raise AssertionError(f"{what}: stdout is not UTF-8 at byte {e.start}: "
                             f"{b[max(0, e.start - 30):e.start + 30]!r}")
    why = unsafe(out)
    check(why is None, f"{what}: stdout carries a raw control: {why}")
    why = unsafe(cp.stderr)
    check(why is None, f"{what}: stderr carries a raw control: {why}")


def setup(t):
    r = t.redis(aof=False)
    s = t.smtp()
    e = t.env(r, s)
    w = t.worker(e)
    return r, s, e, w


def delivered(e, id, timeout=20):
    """The Message Center record of `id` once it is "sent"."""
    def sent():
        rec = harness.mc_show(e, id)
        return rec if rec and rec.get("status") == "sent" else None

    return wait_until(sent, timeout, f"MC record {id} sent", interval=0.2)


# ---------------------------------------------------------------- mc show/list


def test_mc_show_and_list_escape_message_content(t):
    r, s, e, w = setup(t)
    job = make_job(
        id="esc-1",
        subject=SUBJECT,
        text=TEXT,
        from_name="Acme " + RLO + "Billing",
        to=[{"email": "alice@example.test", "name": "Al" + RLO + "ice"}],
        meta={"note": ESC_CLEAR + C1_CSI + RLO + "x"},
        attachments=[{"filename": "r\u00e9sum\u00e9.pdf", "content_type": "application/pdf",
                      "content_base64": "JVBERi0xLjQK"}],
    )
    push(r, t.prefix, job)
    rec = delivered(e, "esc-1")
    wait_until(lambda: "esc-1" in s.ids(), 10, "message at the SMTP server")

    # --json: the exact text, escaped only as JSON escapes it
    check(rec["text"] == TEXT, f"--json text not exact: {rec['text']!r}")
    check(rec["subject"] == SUBJECT, rec["subject"])
    check(rec["meta"] == job["meta"], rec["meta"])
    check(rec["attachments"][0]["filename"] == "r\u00e9sum\u00e9.pdf", rec["attachments"])

    cp = run("heraldctl", "mc", "show", "esc-1", env=e)
    check(cp.returncode == 0, f"mc show: exit {cp.returncode}: {cp.stderr}")
    check_safe(cp, "mc show")
    out = cp.stdout
    for want in (
        "\\x1b]0;pwned\\x07title changed\n",  # OSC: visible, line kept
        "\\x1b[2Jscreen cleared\n",
        "C1: \\u009b31m red\n",
        "bidi: \\u202eexe.fdp\\u202c and \\u2066iso\\u2069\n",
        "tab\\there, a backslash C:\\temp, a lone CR\\rover\n",  # CR LF stays a break
        "DEL\\x7f and NUL-free end\n",
        "Hello Alice,\n",
        "Invoice \\u202efdp.exe is ready",
        "Acme \\u202eBilling <billing@acme.test>",
        "Al\\u202eice <alice@example.test>",
        "r\u00e9sum\u00e9.pdf (application/pdf, 9 bytes)",  # plain non-ASCII kept
    ):
        check(want in out, f"{want!r} not in mc show:\n{out}")
    meta_line = [ln for ln in out.splitlines() if ln.startswith("meta:")]
    check(meta_line and "\\u009b\\u202ex" in meta_line[0], f"meta line: {meta_line}")

    # the table
    cp = run("heraldctl", "mc", "list", env=e)
    check(cp.returncode == 0, f"mc list: exit {cp.returncode}: {cp.stderr}")
    check_safe(cp, "mc list")
    check("Invoice \\u202efdp.exe is ready" in cp.stdout, cp.stdout)
    rows = cp.stdout.splitlines()
    col = rows[0].index("SUBJECT")
    check(len(rows) == 2 and rows[1][col:].startswith("Invoice \\u202e"),
          f"aligned, subject column escaped:\n{cp.stdout}")

    # --json of the list is exact too
    cp = run("heraldctl", "mc", "list", "--json", env=e)
    v = json.loads(cp.stdout)
    check(v[0]["text"] == TEXT and v[0]["subject"] == SUBJECT, v[0])
    check(w.alive(), "worker alive")


def test_mc_list_cuts_an_escaped_subject_whole(t):
    # A subject cut for the table never ends in half an escape.
    r, s, e, w = setup(t)
    subject = "x" * 45 + RLO + "tail of the subject"
    push(r, t.prefix, make_job(id="esc-cut", subject=subject))
    delivered(e, "esc-cut")
    cp = run("heraldctl", "mc", "list", env=e)
    check(cp.returncode == 0, cp.stderr)
    check_safe(cp, "mc list")
    row = cp.stdout.splitlines()[1]
    cell = row[cp.stdout.splitlines()[0].index("SUBJECT"):]
    check(cell == "x" * 45 + "\u2026", f"cut before the escape, not inside it: {cell!r}")


# ------------------------------------------------------------------ dead list


def test_dead_list_escapes_raw_job_fields(t):
    r, s, e, w = setup(t)
    bad = [
        # an id with OSC + BEL: refused; dead list's ID column still shows
        # the id read from inside the raw job
        dict(make_job(), id="evil" + ESC_TITLE),
        # an unknown key with ESC, C1 and RLO: the field path carries them
        dict(make_job(id="dead-key"), **{"x" + ESC_CLEAR + C1_CSI + RLO: 1}),
    ]
    for job in bad:
        push(r, t.prefix, job)
    # a raw job that is not UTF-8 (kept as job_base64), with ESC inside
    r.cmd("LPUSH", harness.queue_key(t.prefix), b'{"id":"x\x1b[2J\xff\x9b"')
    wait_until(lambda: r.cmd("LLEN", harness.dead_key(t.prefix)) >= 3, 15, "three dead letters")
    entries = harness.dead(r, t.prefix)

    cp = run("heraldctl", "dead", "list", env=e)
    check(cp.returncode == 0, f"dead list: exit {cp.returncode}: {cp.stderr}")
    check_safe(cp, "dead list")
    out = cp.stdout
    rows = out.splitlines()
    check(len(rows) == 4, out)
    check("evil\\x1b]0;pwned\\x07" in out, f"escaped id not shown:\n{out}")
    # job.c's field path already shows a key's C0 bytes as \xHH; its C1 and
    # bidirectional controls reach the dead entry as they are
    check(("x\\x1B[2J" + C1_CSI + RLO) in {d["field"] for d in entries}, entries)
    check("x\\x1B[2J\\u009b\\u202e" in out, f"escaped field path not shown:\n{out}")

    # --json: the entries exactly as stored
    cp = run("heraldctl", "dead", "list", "--json", env=e)
    check(cp.returncode == 0, cp.stderr)
    v = json.loads(cp.stdout)
    check(sorted(json.dumps(x, sort_keys=True) for x in v)
          == sorted(json.dumps(x, sort_keys=True) for x in entries), "--json exact")

    # replaying them: what is said about them is escaped too
    cp = run("heraldctl", "dead", "replay", "--all", env=e)
    check(cp.returncode == 2, f"exit {cp.returncode}: {cp.stdout} {cp.stderr}")
    check_safe(cp, "dead replay")
    check("not replayed 3" in cp.stdout, cp.stdout)


def test_raw_pushed_bidi_filename_is_dead_invalid(t):
    r, s, e, w = setup(t)
    rlo = make_job(id="dead-rlo", attachments=[{
        "filename": "invoice_" + RLO + "fdp.exe", "content_type": "application/pdf",
        "content_base64": "aGk="}])
    fine = make_job(id="fine-resume", attachments=[{
        "filename": "r\u00e9sum\u00e9.pdf", "content_type": "application/pdf",
        "content_base64": "aGk="}])
    push(r, t.prefix, rlo)
    push(r, t.prefix, fine)
    delivered(e, "fine-resume")
    wait_until(lambda: r.cmd("LLEN", harness.queue_key(t.prefix)) == 0
               and r.cmd("LLEN", harness.processing_key(t.prefix)) == 0, 15,
               "both jobs settled")
    entries = harness.dead(r, t.prefix)
    check(len(entries) == 1, f"one dead letter: {entries}")
    d = entries[0]
    check(d["reason"] == "invalid" and d["field"] == "attachments[0].filename"
          and "U+202E" in d["error"] and "bidirectional" in d["error"], d)
    check(d.get("id") == "dead-rlo" and json.loads(d["job"]) == rlo, "raw job kept whole")
    check("dead-rlo" not in s.ids(), "the disguised attachment was never sent")
    check(harness.mc_show(e, "dead-rlo") is None, "no Message Center record")
    cp = run("heraldctl", "dead", "list", env=e)
    check(cp.returncode == 0, cp.stderr)
    check_safe(cp, "dead list")
    check("attachments[0].filename" in cp.stdout and "dead-rlo" in cp.stdout, cp.stdout)


# -------------------------------------------------------- what Redis holds


def test_queue_stats_escapes_worker_ids(t):
    r = t.redis(aof=False)
    e = t.env(r, None)
    p = t.prefix
    now = int(time.time() * 1000)
    evil_worker = "w" + ESC_CLEAR + C1_CSI + RLO + "x"
    r.pipeline([("HSET", f"{p}:workers", evil_worker, now),
                ("LPUSH", f"{p}:processing:{evil_worker}", "j1")])
    cp = run("heraldctl", "queue", "stats", env=e)
    check(cp.returncode == 0, f"queue stats: exit {cp.returncode}: {cp.stderr}")
    check_safe(cp, "queue stats")
    check("w\\x1b[2J\\u009b\\u202ex" in cp.stdout, cp.stdout)
    cp = run("heraldctl", "queue", "stats", "--json", env=e)
    ids = [x["id"] for x in json.loads(cp.stdout)["workers"]]
    check(evil_worker in ids, f"--json exact: {ids}")


def test_template_show_and_render_escape_stored_text(t):
    r = t.redis(aof=False)
    e = t.env(r, None)
    p = t.prefix
    # a template as stored in Redis (by hand or by an older version)
    tmpl = {"subject": "Hi " + RLO + "{{name}}",
            "text": "Dear {{name}},\n" + ESC_TITLE + ESC_CLEAR + C1_CSI + "\n"}
    r.cmd("HSET", f"{p}:templates", "evil", json.dumps(tmpl))
    cp = run("heraldctl", "template", "show", "evil", env=e)
    check(cp.returncode == 0, f"template show: exit {cp.returncode}: {cp.stderr}")
    check_safe(cp, "template show")
    check("subject: Hi \\u202e{{name}}" in cp.stdout, cp.stdout)
    check("\\x1b]0;pwned\\x07\\x1b[2J\\u009b\n" in cp.stdout, cp.stdout)
    cp = run("heraldctl", "template", "show", "evil", "--json", env=e)
    check(json.loads(cp.stdout) == tmpl, f"--json exact: {cp.stdout!r}")

    cp = run("heraldctl", "template", "render", "evil", "--data", json.dumps({"name": "Ana"}),
             env=e)
    check(cp.returncode == 0, f"template render: exit {cp.returncode}: {cp.stderr}")
    check_safe(cp, "template render")
    check("Dear Ana,\n\\x1b]0;pwned\\x07" in cp.stdout, cp.stdout)
    cp = run("heraldctl", "template", "render", "evil", "--data", json.dumps({"name": "Ana"}),
             "--json", env=e)
    check(json.loads(cp.stdout)["text"] == "Dear Ana,\n" + ESC_TITLE + ESC_CLEAR + C1_CSI + "\n",
          cp.stdout)


class _EvilSmtp:
    """A loopback SMTP server (a thread of the test) whose replies carry
    terminal controls; it offers AUTH and refuses every login."""

    GREETING = b"220 mx.evil.test \x1b]0;pwned\x07 ESMTP \xc2\x9b31m \xe2\x80\xae ready\r\n"

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(c,), daemon=True).start()

    def _client(self, c):
        f = c.makefile("rb")
        try:
            c.sendall(self.GREETING)
            for line in f:
                cmd = line[:4].upper()
                if cmd in (b"EHLO", b"HELO"):
                    c.sendall(b"250-mx.evil.test \x1b[2J\r\n250 AUTH PLAIN LOGIN\r\n")
                elif cmd == b"AUTH":
                    c.sendall(b"535 5.7.8 \x1b[2J\xe2\x80\xae no \xff\r\n")
                elif cmd == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    break
                else:
                    c.sendall(b"502 5.5.2 what\r\n")
        except OSError:
            pass
        finally:
            f.close()
            c.close()

    def stop(self):
        self.sock.close()


@harness.timeout(60)
def test_scheme_test_escapes_server_replies(t):
    r = t.redis(aof=False)
    key = t.path("secret.key")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(key, 0o600)
    e = t.env(r, None, HERALD_SECRET_KEY_FILE=key, HERALD_SMTP_TIMEOUT_S=5,
              HERALD_CONNECT_TIMEOUT_S=5)
    srv = _EvilSmtp()
    try:
        cp = run("heraldctl", "scheme", "add", "--org", "acme", "--email", "billing@acme.test",
                 "--smtp-host", "127.0.0.1", "--smtp-port", srv.port, "--username", "billing",
                 "--password-stdin", "--tls", "none", env=e, input="pw-123\n")
        check(cp.returncode == 0, f"scheme add: exit {cp.returncode}: {cp.stderr}")
        cp = run("heraldctl", "scheme", "test", "--org", "acme", "--email", "billing@acme.test",
                 env=e)
        check(cp.returncode == 1, f"exit {cp.returncode}: {cp.stdout} {cp.stderr}")
        check_safe(cp, "scheme test")
        check("\\x1b]0;pwned\\x07 ESMTP \\u009b31m \\u202e ready" in cp.stdout, cp.stdout)
        check("535 5.7.8 \\x1b[2J\\u202e no \\xff" in cp.stdout, cp.stdout)
        check("FAILED at step 'auth'" in cp.stdout, cp.stdout)
    finally:
        srv.stop()


# ---------------------------------------------------------- herald-enqueue


def test_enqueue_refuses_bidi_filename_and_escapes_its_errors(t):
    r = t.redis(aof=False)
    e = t.env(r, None)
    job = make_job(attachments=[{"filename": "invoice_" + RLO + "fdp.exe",
                                 "content_type": "application/pdf", "content_base64": "aGk="}])
    cp = run("herald-enqueue", json.dumps(job), env=e)
    check(cp.returncode == 2, f"exit {cp.returncode}: {cp.stderr}")
    check("attachments[0].filename" in cp.stderr and "bidirectional" in cp.stderr
          and "U+202E" in cp.stderr, cp.stderr)
    check(r.cmd("LLEN", harness.queue_key(t.prefix)) == 0, "nothing pushed")
    for fname in ("\u2066a\u2069.pdf", "a\u200f.pdf", "a\u061c.pdf"):
        job = make_job(attachments=[{"filename": fname, "content_base64": "aGk="}])
        cp = run("herald-enqueue", json.dumps(job), env=e)
        check(cp.returncode == 2 and "attachments[0].filename" in cp.stderr,
              f"{fname!r}: exit {cp.returncode}: {cp.stderr}")
    job = make_job(attachments=[{"filename": "r\u00e9sum\u00e9.pdf", "content_base64": "aGk="}])
    cp = run("herald-enqueue", json.dumps(job, ensure_ascii=False), env=e)
    check(cp.returncode == 0 and cp.stdout.strip() == job["id"], f"résumé.pdf: {cp.stderr}")

    # an error naming a key with ESC, C1 and RLO in it: escaped on stderr
    job = make_job(**{"k" + ESC_TITLE + C1_CSI + RLO: 1})
    cp = run("herald-enqueue", json.dumps(job), env=e)
    check(cp.returncode == 2, f"exit {cp.returncode}: {cp.stderr}")
    check_safe(cp, "herald-enqueue")
    check("unknown field" in cp.stderr and "\\\\u009b\\\\u202e" in cp.stderr, cp.stderr)
