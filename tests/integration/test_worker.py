"""End-to-end tests of bin/herald-worker (SPEC §3, §4 path 3, §6, §8).

Every test starts its own Redis, recording SMTP server and worker on free
loopback ports. Jobs are pushed raw with LPUSH, as an upstream application
in any language would.
"""

import base64
import glob
import json
import os
import shutil
import signal
import subprocess
import time

import yaml

import harness
from harness import check, make_job, mc_show, push, wait_until

DEFAULT_FROM = "notices@platform.test"
PLATFORM = "Camp Platform"
LANES = ("high", "normal", "low")
RCPT_OK = ("accepted", "sent")  # per-recipient status of a recipient the server took


# ----------------------------------------------------------------- helpers


def setup(t, smtp_opts=None, start_smtp=True, start_worker=True, **overrides):
    r = t.redis()
    s = t.smtp(start=start_smtp, **(smtp_opts or {}))
    e = t.env(r, s, **overrides)
    w = t.worker(e) if start_worker else None
    return r, s, e, w


def emails(lst):
    """Addresses from an MC list of strings or {"email", ...} objects."""
    out = []
    for x in lst or []:
        out.append(x if isinstance(x, str) else x.get("email"))
    return out


def wait_status(e, id, want, timeout=20):
    """Polls `heraldctl mc show` until the record's status is in `want`."""
    if isinstance(want, str):
        want = (want,)
    seen = {}

    def probe():
        rec = mc_show(e, id)
        seen["rec"] = rec
        return rec if rec and rec.get("status") in want else None

    try:
        return wait_until(probe, timeout, f"MC record {id} status in {want}", interval=0.2)
    except AssertionError as ex:
        raise AssertionError(f"{ex}; last record: {json.dumps(seen.get('rec'))[:600]}")


def by_id(smtp):
    """{X-Herald-Id: [(envelope, raw), ...]} of every accepted message."""
    out = {}
    for env, raw in smtp.messages():
        m = harness.parse_message(raw)
        out.setdefault(str(m["X-Herald-Id"]), []).append((env, raw))
    return out


def one_message(smtp, id, timeout=15):
    wait_until(lambda: id in smtp.ids(), timeout, f"message {id} at the SMTP server")
    got = by_id(smtp)[id]
    check(len(got) == 1, f"{id} delivered {len(got)} times")
    return got[0]


def lists_len(r, prefix, worker_ids=("w1",)):
    n = 0
    for lane in LANES:
        for k in harness.lane_keys(r, prefix, lane):
            n += r.cmd("LLEN", k)
    for w in worker_ids:
        n += r.cmd("LLEN", harness.processing_key(prefix, w))
    return n


def pending_ids(r, prefix, worker_ids=("w1",)):
    """Job ids held in the lanes, the processing lists and the schedule."""
    raws = []
    for lane in LANES:
        for k in harness.lane_keys(r, prefix, lane):
            raws += r.cmd("LRANGE", k, 0, -1)
    for w in worker_ids:
        raws += r.cmd("LRANGE", harness.processing_key(prefix, w), 0, -1)
    raws += r.cmd("ZRANGE", f"{prefix}:scheduled", 0, -1)
    ids = []
    for raw in raws:
        ids.append(json.loads(raw).get("id"))
    return ids


def drained(r, prefix, worker_ids=("w1",)):
    return (lists_len(r, prefix, worker_ids) == 0
            and r.cmd("ZCARD", f"{prefix}:scheduled") == 0)


def addr(header):
    """[(display_name, addr_spec)] of an address header."""
    return [(a.display_name, a.addr_spec) for a in header.addresses]


def mc_unfinished(e):
    """{status: count} of MC records not yet sent (heraldctl mc list)."""
    out = {}
    for st in ("queued", "sending", "deferred", "failed"):
        n, cursor = 0, None
        while True:  # pages of 500, the next cursor logged on stderr
            args = ["--cursor", cursor] if cursor else []
            cp = harness.run("heraldctl", "mc", "list", "--status", st, "--limit", "500",
                             "--json", *args, env=e)
            check(cp.returncode == 0, f"mc list --status {st}: exit {cp.returncode} {cp.stderr}")
            n += len(json.loads(cp.stdout))
            nxt = [json.loads(l).get("next_cursor") for l in cp.stderr.splitlines()
                   if l.startswith("{") and "next_cursor" in l]
            if not nxt or not nxt[0]:
                break
            cursor = nxt[0]
        if n:
            out[st] = n
    return out


def stop_ok(w, timeout=20):
    rc = w.stop(signal.SIGTERM, timeout)
    check(rc == 0, f"worker exited {rc} on SIGTERM; stderr tail: {w.stderr()[-800:]}")


def bulk_jobs(n, tag):
    jobs = []
    for i in range(n):
        j = make_job(id=f"{tag}-{i:05d}", to=[f"user{i}@example.test"],
                     subject=f"Bulk {i}", text=f"message {i}\n")
        jobs.append(j)
    return jobs


def push_many(r, prefix, jobs):
    cmds = []
    for i, j in enumerate(jobs):
        cmds.append(("LPUSH", harness.queue_key(prefix, LANES[i % 3]),
                     json.dumps(j, ensure_ascii=False)))
    r.pipeline(cmds)


# ------------------------------------------------------------------ CLI


def test_version_help_print_config(t):
    e = harness.env(None, None, t.dir, HERALD_RELAY_PASSWORD="s3cret-relay-pw",
                    HERALD_RELAY_USER="relayuser")
    with open(os.path.join(harness.REPO, "VERSION")) as f:
        version = f.read().strip()
    cp = harness.run("herald-worker", "--version", env=e)
    check(cp.returncode == 0, f"--version exited {cp.returncode}: {cp.stderr}")
    check(version in cp.stdout, f"--version printed {cp.stdout!r}, VERSION is {version}")
    cp = harness.run("herald-worker", "--help", env=e)
    check(cp.returncode == 0, f"--help exited {cp.returncode}")
    for word in ("HERALD_REDIS", "HERALD_RELAY", "HERALD_CONCURRENCY", "--print-config"):
        check(word in cp.stdout, f"--help does not mention {word}")
    cp = harness.run("herald-worker", "--print-config", env=e)
    check(cp.returncode == 0, f"--print-config exited {cp.returncode}: {cp.stderr}")
    check(f"HERALD_RELAY={e['HERALD_RELAY']}" in cp.stdout, cp.stdout)
    check("HERALD_PLATFORM_NAME=Camp Platform" in cp.stdout, cp.stdout)
    check("HERALD_RETRY_BASE_S=1" in cp.stdout, cp.stdout)
    check("s3cret-relay-pw" not in cp.stdout + cp.stderr, "--print-config shows the password")
    # flags win over the environment
    cp = harness.run("herald-worker", "--print-config", "--platform-name", "Other", env=e)
    check(cp.returncode == 0 and "HERALD_PLATFORM_NAME=Other" in cp.stdout,
          f"flag did not win: {cp.stdout} {cp.stderr}")
    cp = harness.run("herald-worker", "--no-such-flag", env=e)
    check(cp.returncode == 2, f"unknown flag exited {cp.returncode}")


def test_bad_settings_exit_2(t):
    r = t.redis()
    s = t.smtp()
    cases = [
        ({"HERALD_CONCURRENCY": "0"}, "HERALD_CONCURRENCY"),
        ({"HERALD_REDIS": "http://x"}, "HERALD_REDIS"),
        ({"HERALD_RELAY": "ftp://127.0.0.1:25"}, "HERALD_RELAY"),
        ({"HERALD_RETRY_BASE_S": "soon"}, "HERALD_RETRY_BASE_S"),
        ({"HERALD_DNS": "dns.example"}, "'dns.example'"),
        ({"HERALD_DNS": "127.0.0.1:0"}, "HERALD_DNS"),
        ({"HERALD_SENDER_IPS": "192.0.2.1, nope"}, "'nope'"),
        ({"HERALD_HELO_NAME": "mail host.example"}, "HERALD_HELO_NAME"),
        ({"HERALD_HELO_NAME": "[300.1.2.3]"}, "HERALD_HELO_NAME"),
        ({"HERALD_HELO_NAME": "-mail.example"}, "HERALD_HELO_NAME"),
    ]
    for over, name in cases:
        e = t.env(r, s, **over)
        w = t.worker(e)
        rc = w.wait(15)
        check(rc == 2, f"{over}: worker exited {rc}, want 2; stderr: {w.stderr()[-500:]}")
        check(name in w.stderr(), f"{over}: message does not name {name}: {w.stderr()[-500:]}")
    check(s.count() == 0, "a misconfigured worker sent mail")


# ------------------------------------------------------------- delivery


PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


@harness.timeout(90)
def test_each_priority_end_to_end(t):
    r, s, e, w = setup(t)
    rich = make_job(
        id="rich-1",
        type="receipt",
        from_name="Zoë Café",
        reply_to="support@acme.test",
        to=[{"email": "juergen@example.test", "name": "Jürgen Groß"},
            "plain@example.test"],
        cc=[{"email": "carol@example.test", "name": "Carol, \"CC\" Person"},
            {"email": "dan@example.test", "name": "Dan"}],
        bcc=[{"email": "hidden@example.test", "name": "Hidden Person"}, "secret@example.test"],
        subject="Reçu n° 42 — ✓ payé 日本語 " + "long " * 30 + "end",
        text="Bonjour Jürgen,\nvotre reçu est joint.\n" + ("ligne " * 40) + "\n.\n..dots\n",
        html="<html><body><p>Bonjour <b>Jürgen</b> — reçu</p></body></html>",
        attachments=[{"filename": "reçu-42.pdf", "content_type": "application/pdf",
                      "content_base64": base64.b64encode(PDF).decode()}],
        headers={"X-Campaign": "spring-2026", "X-Camp-Session": "Été 2"},
        meta={"invoice": 42},
    )
    plain = make_job(id="plain-1", from_name=None, reply_to=None,
                     to=["bob@example.test"], subject="Plain normal", text="hello\n")
    html_only = make_job(id="html-1", text=None, html="<p>only html</p>",
                         subject="Low lane", to=[{"email": "eve@example.test", "name": "Eve"}])
    push(r, t.prefix, rich, "high")
    push(r, t.prefix, plain, "normal")
    push(r, t.prefix, html_only, "low")

    # --- the rich one
    env, raw = one_message(s, "rich-1")
    check(env["mail_from"] == DEFAULT_FROM, f"envelope sender {env['mail_from']}")
    check(sorted(env["rcpt_tos"]) == sorted(
        ["juergen@example.test", "plain@example.test", "carol@example.test", "dan@example.test",
         "hidden@example.test", "secret@example.test"]), env["rcpt_tos"])
    for line in raw.split(b"\r\n"):
        check(len(line) <= 998, f"line of {len(line)} bytes")
    check(b"\n" not in raw.replace(b"\r\n", b""), "bare LF in the message")
    m = harness.parse_message(raw)
    check(addr(m["From"]) == [(f"Zoë Café via {PLATFORM}", DEFAULT_FROM)], addr(m["From"]))
    check(addr(m["Reply-To"]) == [("", "support@acme.test")], addr(m["Reply-To"]))
    check(addr(m["To"]) == [("Jürgen Groß", "juergen@example.test"), ("", "plain@example.test")],
          addr(m["To"]))
    check(addr(m["Cc"]) == [('Carol, "CC" Person', "carol@example.test"),
                            ("Dan", "dan@example.test")], addr(m["Cc"]))
    check(m["Bcc"] is None, "a Bcc header was sent")
    head = raw.split(b"\r\n\r\n", 1)[0]
    check(b"hidden@example.test" not in raw and b"secret@example.test" not in raw,
          "a bcc address appears in the message")
    check(b"Hidden Person" not in raw, "a bcc name appears in the message")
    check(m["Subject"] == rich["subject"], f"subject {m['Subject']!r}")
    check(m["X-Herald-Id"] == "rich-1", m["X-Herald-Id"])
    check(m["X-Campaign"] == "spring-2026", m["X-Campaign"])
    check(m["X-Camp-Session"] == "Été 2", m["X-Camp-Session"])
    check(m["Message-ID"] is not None and "@" in str(m["Message-ID"]), "Message-ID")
    check(m["Date"] is not None and m["Date"].datetime is not None, "Date")
    check(m["MIME-Version"] == "1.0", "MIME-Version")
    mid_lines = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"message-id:")]
    check(len(mid_lines) == 1, f"{len(mid_lines)} Message-ID headers")
    text = m.get_body(preferencelist=("plain",))
    html = m.get_body(preferencelist=("html",))
    check(text is not None and html is not None, "text and html parts")
    check(text.get_content().replace("\r\n", "\n").rstrip("\n") == rich["text"].rstrip("\n"),
          f"text differs: {text.get_content()[:200]!r}")
    check(html.get_content().replace("\r\n", "\n").rstrip("\n") == rich["html"],
          f"html differs: {html.get_content()[:200]!r}")
    alt = [p for p in m.walk() if p.get_content_type() == "multipart/alternative"]
    check(len(alt) == 1, "one multipart/alternative")
    atts = list(m.iter_attachments())
    check(len(atts) == 1, f"{len(atts)} attachments")
    check(atts[0].get_filename() == "reçu-42.pdf", atts[0].get_filename())
    check(atts[0].get_content_type() == "application/pdf", atts[0].get_content_type())
    check(atts[0].get_content() == PDF, "attachment bytes differ")

    rec = wait_status(e, "rich-1", "sent")
    check(rec["path"] == "relay", rec["path"])
    check(rec["sender"] == DEFAULT_FROM, rec.get("sender"))
    check(rec["reply_to"] == "support@acme.test", rec.get("reply_to"))
    check(rec["subject"] == rich["subject"], rec.get("subject"))
    check(emails(rec["to"]) == ["juergen@example.test", "plain@example.test"], rec["to"])
    check(emails(rec["cc"]) == ["carol@example.test", "dan@example.test"], rec["cc"])
    check(rec["attempts"] == 1, rec["attempts"])
    check(rec.get("sent_at"), "sent_at empty")
    check(rec.get("org") == "acme" and rec.get("account") == "acct-1", rec)
    rcpts = {x["email"]: x for x in rec["recipients"]}
    check(set(rcpts) == set(env["rcpt_tos"]), rcpts)
    check(all(x["status"] in RCPT_OK for x in rcpts.values()), rcpts)
    check(rcpts["hidden@example.test"]["kind"] == "bcc", rcpts["hidden@example.test"])
    check(rcpts["carol@example.test"]["kind"] == "cc", rcpts["carol@example.test"])

    # --- no from_name, no reply_to: the address stands in
    env, raw = one_message(s, "plain-1")
    m = harness.parse_message(raw)
    check(addr(m["From"]) == [(f"billing@acme.test via {PLATFORM}", DEFAULT_FROM)],
          addr(m["From"]))
    check(addr(m["Reply-To"]) == [("", "billing@acme.test")], addr(m["Reply-To"]))
    check(m.get_content_type() == "text/plain", m.get_content_type())
    check(m.get_content().replace("\r\n", "\n").rstrip("\n") == "hello", m.get_content())
    check(env["rcpt_tos"] == ["bob@example.test"], env)

    # --- html only, low lane
    env, raw = one_message(s, "html-1")
    m = harness.parse_message(raw)
    check(m.get_body(preferencelist=("html",)) is not None, "html body")
    check(addr(m["To"]) == [("Eve", "eve@example.test")], addr(m["To"]))
    for id in ("plain-1", "html-1"):
        rec = wait_status(e, id, "sent")
        check(rec["path"] == "relay" and rec["attempts"] == 1, rec)

    wait_until(lambda: drained(r, t.prefix), 10, "queues and processing list empty")
    check(s.count() == 3, f"{s.count()} messages")
    stop_ok(w)


def test_priority_lanes_order(t):
    r, s, e, _ = setup(t, start_worker=False, HERALD_CONCURRENCY=1)
    for lane in ("low", "normal", "high"):
        for i in range(4):
            push(r, t.prefix, make_job(id=f"{lane}-{i}", subject=f"{lane} {i}"), lane)
    w = t.worker(e)
    s.wait_count(12, 30)
    order = [x.split("-")[0] for x in s.ids()]
    rank = {lane: sum(i for i, x in enumerate(order) if x == lane) / 4 for lane in LANES}
    check(rank["high"] < rank["normal"] < rank["low"], f"delivery order {order}")
    check(order[0] == "high", f"first delivered: {order[0]} ({order})")
    stop_ok(w)


def test_logs_the_redis_version_it_checked(t):
    """The worker reads INFO server at connect (it takes nothing from a
    Redis older than 6.2) and names the version it found."""
    r, s, e, w = setup(t)
    want = r.cmd("INFO", "server").decode().split("redis_version:")[1].split()[0]
    ready = wait_until(lambda: [d for d in w.logs() if d.get("msg") == "redis ready"], 10,
                       "redis ready")
    check(ready[0].get("redis_version") == want, "logged %r, INFO says %s" % (ready[0], want))
    check(not [d for d in w.logs() if "too old" in d.get("msg", "")], "called too old")
    push(r, t.prefix, make_job(id="ver-1"))
    one_message(s, "ver-1")
    stop_ok(w)


def test_redis_with_a_password_and_a_database(t):
    """HERALD_REDIS with a password and a database number: the worker
    authenticates and selects before anything else on every connection
    (it once sent its first commands, the resync LRANGE and the
    heartbeat, before AUTH: NOAUTH, then reconnects for ever), and keeps
    everything in that database."""
    r, s, e, _ = setup(t, start_worker=False)
    r.cmd("CONFIG", "SET", "requirepass", "s3cr3t-pw")
    r.cmd("AUTH", "s3cr3t-pw")
    e["HERALD_REDIS"] = f"redis://:s3cr3t-pw@127.0.0.1:{r.port}/2"
    w = t.worker(e)
    r.cmd("SELECT", "2")
    wait_until(lambda: r.cmd("HEXISTS", f"{t.prefix}:workers", "w1") == 1, 10,
               "the heartbeat in db 2")
    push(r, t.prefix, make_job(id="pw-1"))
    one_message(s, "pw-1")
    wait_status(e, "pw-1", "sent")
    check(not [d for d in w.logs() if "NOAUTH" in json.dumps(d)], "NOAUTH errors")
    r.cmd("SELECT", "0")
    check(r.cmd("KEYS", t.prefix + ":*") == [], "keys written to db 0: %r"
          % r.cmd("KEYS", t.prefix + ":*"))
    stop_ok(w)


def test_second_copy_of_a_job_in_flight_here_is_dropped(t):
    # The same job pushed again while this worker still sends the first
    # copy: the copy is dropped at once (never a second transaction), and
    # it leaves the processing list.
    r, s, e, w = setup(t, smtp_opts={"delay_data": 2, "delay_times": 1})
    job = make_job(id="twice-1")
    push(r, t.prefix, job)
    wait_until(lambda: any(ev["event"] == "data_delayed" for ev in s.events()), 10,
               "the message in DATA")
    push(r, t.prefix, job)
    w.wait_log(lambda d: d.get("msg", "").startswith("duplicate of a job this worker holds")
               and d.get("job") == "twice-1", 10, "the copy dropped")
    wait_status(e, "twice-1", "sent")
    wait_until(lambda: r.cmd("LLEN", harness.processing_key(t.prefix, "w1")) == 0, 10,
               "processing list empty")
    time.sleep(1)
    check(s.count() == 1, "%d messages" % s.count())
    stop_ok(w)


def test_processing_list_holds_job_in_flight(t):
    r, s, e, w = setup(t, smtp_opts={"delay_data": 2, "delay_times": 1})
    job = make_job(id="inflight-1")
    push(r, t.prefix, job)
    wait_until(lambda: any(ev["event"] == "data_delayed" for ev in s.events()), 10,
               "the message in DATA")
    proc = r.cmd("LRANGE", harness.processing_key(t.prefix, "w1"), 0, -1)
    check(len(proc) == 1 and json.loads(proc[0])["id"] == "inflight-1",
          f"processing list while in flight: {proc}")
    check(r.cmd("LLEN", harness.queue_key(t.prefix, "normal")) == 0, "job still in its lane")
    rec = mc_show(e, "inflight-1")
    check(rec is not None and rec["status"] in ("queued", "sending"),
          f"record while in flight: {rec}")
    check(r.cmd("HEXISTS", f"{t.prefix}:workers", "w1") == 1, "no heartbeat for w1")
    one_message(s, "inflight-1")
    wait_until(lambda: r.cmd("LLEN", harness.processing_key(t.prefix, "w1")) == 0, 10,
               "processing list empty after delivery")
    wait_status(e, "inflight-1", "sent")
    stop_ok(w)
    check(r.cmd("HEXISTS", f"{t.prefix}:workers", "w1") == 0,
          "heartbeat left behind after a clean stop")


# ------------------------------------------------------------- validation


def test_injection_attempts_go_to_dead(t):
    r, s, e, w = setup(t)
    bad = [
        (make_job(id="inj-subject", subject="Hello\r\nBcc: victim@evil.test"), "subject"),
        (make_job(id="inj-subject-lf", subject="Hello\nBcc: victim@evil.test"), "subject"),
        (make_job(id="inj-fromname", from_name="Acme\r\nBcc: victim@evil.test"), "from_name"),
        (make_job(id="inj-toname", to=[{"email": "a@example.test",
                                        "name": "A\r\nBcc: victim@evil.test"}]), "to[0].name"),
        (make_job(id="inj-ccname", cc=[{"email": "c@example.test", "name": "C\nX: y"}]),
         "cc[0].name"),
        (make_job(id="inj-header", headers={"X-Foo": "a\r\nBcc: victim@evil.test"}),
         "headers.X-Foo"),
        (make_job(id="inj-hname", headers={"Bcc": "victim@evil.test"}), "headers"),
        (make_job(id="inj-addr", to=["a@example.test>\r\nRCPT TO:<victim@evil.test"]), "to[0]"),
        (make_job(id="inj-replyto", reply_to="x@example.test\r\nBcc: victim@evil.test"),
         "reply_to"),
        (make_job(id="inj-filename", attachments=[{
            "filename": "a.txt\"\r\nContent-Type: text/html", "content_type": "text/plain",
            "content_base64": "aGk="}]), "attachments[0].filename"),
    ]
    for job, _ in bad:
        push(r, t.prefix, job)
    wait_until(lambda: r.cmd("LLEN", harness.dead_key(t.prefix)) >= len(bad), 15,
               f"{len(bad)} dead letters")
    entries = harness.dead(r, t.prefix)
    check(len(entries) == len(bad), f"{len(entries)} dead letters")
    by_job = {json.loads(d["job"])["id"]: d for d in entries}
    for job, field in bad:
        d = by_job.get(job["id"])
        check(d is not None, f"{job['id']} not in dead")
        check(d["reason"] == "invalid", d)
        check(d["field"].startswith(field), f"{job['id']}: field {d['field']!r}, want {field}")
        check(d["error"], d)
        check(d["at"].endswith("Z") and "T" in d["at"], d["at"])
        check(json.loads(d["job"]) == job, f"{job['id']}: raw job not kept whole")
    check(w.alive(), "worker died on hostile input")
    good = make_job(id="after-injection")
    push(r, t.prefix, good)
    one_message(s, "after-injection")
    check(s.count() == 1, f"{s.count()} messages; only the valid job may be sent")
    for ev in s.events():
        check("victim@evil.test" not in json.dumps(ev), f"injected recipient reached SMTP: {ev}")
    for env, raw in s.messages():
        check(b"victim@evil.test" not in raw, "injected text reached SMTP")
    stop_ok(w)


def _load_corpus():
    root = os.path.join(harness.REPO, "tests", "corpus", "hostile")
    tsv = os.path.join(root, "expect.tsv")
    if not os.path.exists(tsv):
        raise harness.Skip("tests/corpus/hostile/expect.tsv does not exist yet")
    rows = []
    with open(tsv, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            check(len(parts) == 3, f"expect.tsv line {ln}: {len(parts)} columns")
            name, field, sub = parts
            with open(os.path.join(root, name), "rb") as jf:
                raw = jf.read()
            rows.append((name, "" if field == "-" else field, sub, raw))
    files = {os.path.basename(p) for p in glob.glob(os.path.join(root, "*"))} - {"expect.tsv"}
    listed = {row[0] for row in rows}
    check(files <= listed, f"corpus files without an expect.tsv row: {sorted(files - listed)}")
    check(len(rows) >= 20, f"only {len(rows)} corpus rows")
    return rows


@harness.timeout(120)
def test_hostile_corpus_goes_to_dead(t):
    rows = _load_corpus()
    r, s, e, w = setup(t)
    r.pipeline([("LPUSH", harness.queue_key(t.prefix, "normal"), raw)
                for _, _, _, raw in rows])
    wait_until(lambda: r.cmd("LLEN", harness.dead_key(t.prefix)) >= len(rows), 60,
               f"{len(rows)} dead letters (have {r.cmd('LLEN', harness.dead_key(t.prefix))})")
    entries = harness.dead(r, t.prefix)
    check(len(entries) == len(rows), f"{len(entries)} dead letters for {len(rows)} files")
    check(w.alive(), "worker died on the corpus")
    remaining = list(entries)
    problems = []
    for name, field, sub, raw in rows:
        hit = None
        for d in remaining:
            if "job" in d:
                body = d["job"].encode("utf-8")
            else:
                body = base64.b64decode(d.get("job_base64", ""))
            if body == raw:
                hit = d
                break
        if hit is None:
            problems.append(f"{name}: no dead letter holds its raw bytes whole")
            continue
        remaining.remove(hit)
        if "job" not in hit:
            try:
                raw.decode("utf-8")
                problems.append(f"{name}: valid UTF-8 stored as job_base64")
            except UnicodeDecodeError:
                pass
        if hit.get("reason") != "invalid":
            problems.append(f"{name}: reason {hit.get('reason')!r}")
        if hit.get("field") != field:
            problems.append(f"{name}: field {hit.get('field')!r}, want {field!r}")
        if sub.lower() not in (hit.get("error") or "").lower():
            problems.append(f"{name}: error {hit.get('error')!r} lacks {sub!r}")
    check(not problems, f"{len(problems)} corpus mismatches: " + "; ".join(problems[:8]))
    check(s.count() == 0, f"{s.count()} hostile messages reached SMTP")
    push(r, t.prefix, make_job(id="after-corpus"))
    one_message(s, "after-corpus", 20)
    check(w.alive(), "worker died")
    stop_ok(w)


@harness.timeout(90)
def test_valid_corpus_delivered(t):
    root = os.path.join(harness.REPO, "tests", "corpus", "valid")
    paths = sorted(glob.glob(os.path.join(root, "*.job")))
    if not paths:
        raise harness.Skip("tests/corpus/valid/*.job does not exist yet")
    r, s, e, w = setup(t)
    expected = []  # (name, parsed job) that must reach the SMTP server now
    for p in paths:
        with open(p, "rb") as f:
            raw = f.read()
        job = json.loads(raw)
        r.cmd("LPUSH", harness.queue_key(t.prefix, job.get("priority", "normal")), raw)
        if "template" in job:
            continue  # rendering templates is not part of the relay contract yet
        if "send_at" in job and harness_time(job["send_at"]) > time.time():
            continue
        expected.append((os.path.basename(p), job))
    wait_until(lambda: s.count() >= len(expected), 30,
               f"{len(expected)} valid corpus jobs delivered (have {s.count()})")
    time.sleep(0.5)
    dead_entries = harness.dead(r, t.prefix)
    tmpl = [d for d in dead_entries if "template" in json.loads(d.get("job", "{}"))]
    for d in tmpl:  # a worker without a template store may refuse it, naming the field
        check(d.get("field") == "template", f"template job refused with field {d.get('field')!r}")
    invalid = [d for d in dead_entries if d.get("reason") == "invalid" and d not in tmpl]
    check(not invalid, f"valid corpus jobs refused: {[(d['field'], d['error']) for d in invalid]}")
    msgs = s.messages()
    for name, job in expected:
        rcpts = sorted(emails(job["to"]) + emails(job.get("cc")) + emails(job.get("bcc")))
        match = [m for env, raw in msgs for m in [harness.parse_message(raw)]
                 if sorted(env["rcpt_tos"]) == rcpts and m["Subject"] == job.get("subject")]
        if job.get("id"):  # several corpus jobs share recipients and subject
            match = [m for m in match if m["X-Herald-Id"] == job["id"]]
        check(match, f"{name}: no message to {rcpts[:3]} with its subject")
        m = match[0]
        check(addr(m["From"])[0][1] == DEFAULT_FROM, f"{name}: From {m['From']}")
        want_reply = job.get("reply_to", job["from"])
        check(addr(m["Reply-To"])[0][1] == want_reply,
              f"{name}: Reply-To {addr(m['Reply-To'])} want {want_reply}")
        if job.get("id"):
            check(m["X-Herald-Id"] == job["id"], f"{name}: X-Herald-Id {m['X-Herald-Id']}")
        else:
            check(m["X-Herald-Id"], f"{name}: no X-Herald-Id")
        for k, v in (job.get("headers") or {}).items():
            check(m[k] is not None and str(m[k]) == v, f"{name}: header {k}={m[k]!r}, want {v!r}")
    check(w.alive(), "worker died")
    stop_ok(w)


def harness_time(rfc3339):
    """Seconds since the epoch of an RFC 3339 time."""
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_send_at_not_before(t):
    from datetime import datetime, timedelta, timezone

    r, s, e, w = setup(t)
    due = datetime.now(timezone.utc) + timedelta(seconds=3)
    push(r, t.prefix, make_job(id="later-1", send_at=due.isoformat(timespec="milliseconds")
                               .replace("+00:00", "Z")))
    push(r, t.prefix, make_job(id="now-1"))
    one_message(s, "now-1")
    rec = wait_status(e, "later-1", ("queued", "deferred"), 5)
    check("later-1" not in s.ids(), "delivered before send_at")
    one_message(s, "later-1", 15)
    at = next(ev["at"] for ev in s.events() if ev.get("herald_id") == "later-1")
    check(at >= due.timestamp() - 0.05, f"delivered {due.timestamp() - at:.2f}s before send_at")
    check(at <= due.timestamp() + 1.5, f"delivered {at - due.timestamp():.1f}s after send_at")
    rec = wait_status(e, "later-1", "sent")
    check(rec["attempts"] == 1, f"attempts {rec['attempts']}")
    stop_ok(w)


def test_schedule_with_three_workers_due_within_a_second(t):
    # 60 jobs due over the next 4 s; three workers move due ones to their
    # lanes: each goes out once, never before its time, within ~1 s of it
    from datetime import datetime, timedelta, timezone

    r, s, e, w1 = setup(t)
    ws = [w1] + [t.worker(dict(e, HERALD_WORKER_ID="w%d" % i)) for i in (2, 3)]
    now = datetime.now(timezone.utc)
    due = {}
    for i in range(60):
        d = now + timedelta(seconds=2 + (i % 20) * 0.1)
        due["sched-%d" % i] = d.timestamp()
        push(r, t.prefix, make_job(id="sched-%d" % i, send_at=d.isoformat(
            timespec="milliseconds").replace("+00:00", "Z")))
    wait_until(lambda: s.count() >= 60, 20, "60 scheduled jobs delivered")
    time.sleep(0.5)
    ids = s.ids()
    check(sorted(ids) == sorted(due), f"{len(ids)} deliveries, {len(set(ids))} distinct")
    late = []
    for ev in s.events():
        if ev.get("event") == "accepted" and ev.get("herald_id") in due:
            d = due[ev["herald_id"]]
            check(ev["at"] >= d - 0.05, f"{ev['herald_id']} {d - ev['at']:.2f}s early")
            late.append(ev["at"] - d)
    check(max(late) <= 1.5, f"latest {max(late):.2f}s after its time")
    for w in ws:
        stop_ok(w)


def test_garbage_bytes_and_huge_job(t):
    r, s, e, w = setup(t)
    raw_bad = b'{"id": "x", "subject": "\xff\xfe caf\xe9"}'
    r.cmd("LPUSH", harness.queue_key(t.prefix, "high"), raw_bad)
    r.cmd("LPUSH", harness.queue_key(t.prefix, "low"), b"not json at all")
    huge = make_job(id="huge", text="x" * (11 * 1024 * 1024))
    push(r, t.prefix, huge)
    wait_until(lambda: r.cmd("LLEN", harness.dead_key(t.prefix)) >= 3, 30, "3 dead letters")
    entries = harness.dead(r, t.prefix)
    b64 = [d for d in entries if "job_base64" in d]
    check(len(b64) == 1 and base64.b64decode(b64[0]["job_base64"]) == raw_bad,
          "non-UTF-8 job not kept as job_base64")
    check(b64[0]["field"] == "" and b64[0]["reason"] == "invalid", b64[0])
    big = [d for d in entries if "job" in d and len(d["job"]) > 1024 * 1024]
    check(len(big) == 1 and big[0]["job"] == json.dumps(huge, ensure_ascii=False),
          "huge job not kept whole")
    check(w.alive(), "worker died")
    push(r, t.prefix, make_job(id="after-garbage"))
    one_message(s, "after-garbage")
    stop_ok(w)


# ------------------------------------------------------------- idempotency


def test_same_id_twice_before_start_delivered_once(t):
    r, s, e, _ = setup(t, start_worker=False)
    job = make_job(id="dup-1")
    push(r, t.prefix, job)
    push(r, t.prefix, job, "high")
    push(r, t.prefix, make_job(id="dup-other"))
    w = t.worker(e)
    one_message(s, "dup-1")
    one_message(s, "dup-other")
    wait_until(lambda: drained(r, t.prefix), 20, "queues, processing and schedule empty")
    time.sleep(1.5)
    check(s.ids().count("dup-1") == 1, f"dup-1 delivered {s.ids().count('dup-1')} times")
    # pushed again after delivery: never sent again
    push(r, t.prefix, job)
    push(r, t.prefix, job, "low")
    wait_until(lambda: drained(r, t.prefix), 20, "queues empty again")
    time.sleep(1.5)
    check(s.ids().count("dup-1") == 1, f"dup-1 delivered {s.ids().count('dup-1')} times")
    check(s.count() == 2, f"{s.count()} messages")
    rec = wait_status(e, "dup-1", "sent")
    check(rec["attempts"] == 1, f"attempts {rec['attempts']}")
    check(w.alive(), "worker died")
    stop_ok(w)


def test_same_id_pushed_while_in_flight(t):
    r, s, e, w = setup(t, smtp_opts={"delay_data": 2, "delay_times": 1})
    job = make_job(id="dup-inflight")
    push(r, t.prefix, job)
    wait_until(lambda: any(ev["event"] == "data_delayed" for ev in s.events()), 10,
               "first copy in DATA")
    push(r, t.prefix, job)
    push(r, t.prefix, job, "high")
    one_message(s, "dup-inflight")
    wait_until(lambda: drained(r, t.prefix), 20, "queues, processing and schedule empty")
    time.sleep(1.5)
    n = s.ids().count("dup-inflight")
    check(n == 1, f"delivered {n} times")
    stop_ok(w)


# ------------------------------------------------------------- failures


def test_5xx_at_data_fails_job(t):
    r, s, e, w = setup(t, smtp_opts={"reject_data": r"^Subject: Reject"})
    push(r, t.prefix, make_job(id="rej-1", subject="Reject this one"))
    rec = wait_status(e, "rej-1", "failed")
    check("554" in (rec.get("smtp_reply") or ""), f"smtp_reply {rec.get('smtp_reply')!r}")
    check("5.6.0" in (rec.get("smtp_reply") or "") + (rec.get("last_error") or ""), rec)
    check(rec.get("last_error"), "last_error empty")
    check(rec["attempts"] == 1, f"attempts {rec['attempts']}")
    check(not rec.get("sent_at"), "failed record has sent_at")
    d = wait_until(lambda: harness.dead(r, t.prefix), 10, "dead letter")
    check(len(d) == 1 and d[0]["reason"] == "rejected", d)
    check(d[0].get("id") == "rej-1" and json.loads(d[0]["job"])["id"] == "rej-1", d[0])
    check("554" in d[0]["error"], d[0]["error"])
    time.sleep(3)  # retry base is 1 s: a retry would show up by now
    n = sum(1 for ev in s.events() if ev["event"] == "data_rejected")
    check(n == 1, f"a 5xx was retried ({n} DATA attempts)")
    check(s.count() == 0, "message recorded")
    # a valid job after the failure still goes out
    push(r, t.prefix, make_job(id="after-rej"))
    one_message(s, "after-rej")
    stop_ok(w)


def test_550_for_every_recipient_fails_job(t):
    r, s, e, w = setup(t, smtp_opts={"reject_rcpt": r"@refused\.test$"})
    push(r, t.prefix, make_job(id="rej-all", to=["a@refused.test", "b@refused.test"]))
    rec = wait_status(e, "rej-all", "failed")
    check("550" in (rec.get("smtp_reply") or "") + (rec.get("last_error") or ""), rec)
    for x in rec["recipients"]:
        check(x["status"] not in RCPT_OK and "550" in (x.get("reply") or ""), x)
    d = wait_until(lambda: harness.dead(r, t.prefix), 10, "dead letter")
    check(d[0]["reason"] == "rejected", d)
    time.sleep(2.5)
    n = sum(1 for ev in s.events() if ev["event"] == "rcpt_rejected")
    check(n in (1, 2), f"{n} refused RCPTs for 2 recipients; a 5xx must not be retried")
    check(s.count() == 0, "message recorded")
    stop_ok(w)


def test_partial_recipient_refusal(t):
    r, s, e, w = setup(t, smtp_opts={"reject_rcpt": r"^bad"})
    job = make_job(id="partial-1",
                   to=[{"email": "good@example.test", "name": "Good"},
                       {"email": "bad1@example.test", "name": "Bad One"}],
                   cc=["bad2@example.test", "good2@example.test"])
    push(r, t.prefix, job)
    env, raw = one_message(s, "partial-1")
    check(sorted(env["rcpt_tos"]) == ["good2@example.test", "good@example.test"], env)
    m = harness.parse_message(raw)
    check([a for _, a in addr(m["To"])] == ["good@example.test", "bad1@example.test"],
          "To header changed")
    rec = wait_status(e, "partial-1", ("sent", "failed"))
    check(rec["status"] == "sent", f"status {rec['status']}")
    rc = {x["email"]: x for x in rec["recipients"]}
    check(rc["good@example.test"]["status"] in RCPT_OK, rc)
    check(rc["good2@example.test"]["status"] in RCPT_OK, rc)
    for bad in ("bad1@example.test", "bad2@example.test"):
        check(rc[bad]["status"] not in RCPT_OK, f"{bad}: {rc[bad]}")
        check("550" in (rc[bad].get("reply") or ""), f"{bad}: {rc[bad]}")
    time.sleep(2)
    check(s.count() == 1, f"{s.count()} messages: the refused ones were retried")
    stop_ok(w)


@harness.timeout(60)
def test_partial_4xx_retries_only_the_deferred_recipients(t):
    # 450 for one recipient while the others accept: the message is not
    # sent again to those that have it; the deferred one gets it alone.
    r, s, e, w = setup(t, smtp_opts={"tempfail_rcpt": r"^busy", "tempfail_times": 1})
    job = make_job(id="part-4xx", to=["one@example.test", "busy@example.test"],
                   cc=["two@example.test"])
    push(r, t.prefix, job)
    rec = wait_status(e, "part-4xx", "deferred", 10)
    rc = {x["email"]: x["status"] for x in rec["recipients"]}
    check(rc == {"one@example.test": "accepted", "busy@example.test": "deferred",
                 "two@example.test": "accepted"}, rc)
    acc = r.cmd("HGET", t.prefix + ":job:part-4xx", "accepted")
    check(acc is not None and sorted(acc.decode().split("\n")) ==
          ["one@example.test", "two@example.test"], "ledger accepted %r" % acc)
    rec = wait_status(e, "part-4xx", "sent", 20)
    msgs = s.messages()
    check(len(msgs) == 2, "%d messages" % len(msgs))
    check(sorted(msgs[0][0]["rcpt_tos"]) == ["one@example.test", "two@example.test"], msgs[0][0])
    check(msgs[1][0]["rcpt_tos"] == ["busy@example.test"], msgs[1][0])
    check(msgs[0][1].split(b"\r\n\r\n")[0].count(b"Message-ID") == 1 and
          harness.parse_message(msgs[0][1])["Message-ID"] ==
          harness.parse_message(msgs[1][1])["Message-ID"], "not the same message")
    rc = {x["email"]: x["status"] for x in rec["recipients"]}
    check(set(rc.values()) == {"accepted"}, rc)
    check(rec["attempts"] == 2, "attempts %r" % rec["attempts"])
    stop_ok(w)


@harness.timeout(60)
def test_pipelined_4xx_at_mail_is_retried_not_failed(t):
    # A server that answers MAIL with 451 while PIPELINING: the RCPTs and
    # DATA of that transaction then get 503 ("need MAIL"), which are not
    # the recipients' outcomes and must not turn the 451 into a
    # permanent failure: the job is deferred, then delivered.
    r, s, e, w = setup(t, smtp_opts={"tempfail_mail": 1, "pipelining": True})
    push(r, t.prefix, make_job(id="mail-451", to=["one@example.test", "two@example.test"]))
    rec = wait_status(e, "mail-451", "deferred", 10)
    check("451" in (rec.get("smtp_reply") or ""), rec.get("smtp_reply"))
    rc = {x["email"]: x["status"] for x in rec["recipients"]}
    check(set(rc.values()) == {"deferred"}, rc)
    rec = wait_status(e, "mail-451", "sent", 20)
    check(s.count() == 1, "%d messages" % s.count())
    check(rec["attempts"] == 2, "attempts %r" % rec["attempts"])
    stop_ok(w)


def too_many_case(t, pipelining):
    """A server that takes 10 recipients per message (452 4.5.3 after
    them, as Postfix's smtpd_recipient_limit) gets a 100-recipient job as
    10 transactions back to back in one session: one attempt, every
    recipient once, one Message-ID (RFC 5321 §4.5.3.1.10)."""
    r, s, e, w = setup(t, smtp_opts={"max_rcpt": 10, "pipelining": pipelining},
                       HERALD_RETRY_BASE_S=3600)
    rcpts = ["kid%03d@example.test" % i for i in range(100)]
    jid = "many-%d" % pipelining
    push(r, t.prefix, make_job(id=jid, to=rcpts[:50], cc=rcpts[50:90], bcc=rcpts[90:]))
    rec = wait_status(e, jid, ("sent", "deferred", "failed"), 30)
    check(rec["status"] == "sent" and rec["attempts"] == 1,
          "status %s after %s attempts: %s" % (rec["status"], rec["attempts"],
                                              rec.get("last_error")))
    msgs = s.messages()
    check(len(msgs) == 10, "%d messages, want 10" % len(msgs))
    got = [a for env, _ in msgs for a in env["rcpt_tos"]]
    check(sorted(got) == rcpts, "recipients delivered: %d, %d distinct"
          % (len(got), len(set(got))))
    check(all(len(env["rcpt_tos"]) == 10 for env, _ in msgs),
          [len(env["rcpt_tos"]) for env, _ in msgs])
    check(len({harness.parse_message(raw)["Message-ID"] for _, raw in msgs}) == 1,
          "not one message")
    check(len({tuple(env["peer"]) for env, _ in msgs}) == 1, "not one session")
    check(all(x["status"] in RCPT_OK for x in rec["recipients"]),
          [x for x in rec["recipients"] if x["status"] not in RCPT_OK][:3])
    check(any(d.get("transactions") == "10" for d in w.logs()),
          "no log line says it took 10 transactions")
    ev = s.events()
    if pipelining:
        check(any(x["event"] == "rcpt_too_many" for x in ev), "no 452 was given")
    stop_ok(w)


@harness.timeout(60)
def test_too_many_recipients_go_in_further_transactions(t):
    too_many_case(t, False)


@harness.timeout(60)
def test_too_many_recipients_go_in_further_transactions_pipelined(t):
    too_many_case(t, True)


@harness.timeout(60)
def test_a_later_transaction_failing_sends_nobody_twice(t):
    """The third of three transactions gets 451 at the end of DATA: the
    first two were accepted, so the job is not failed or sent again to
    their recipients; the third's recipients are deferred and retried
    alone, in one message."""
    r, s, e, w = setup(t, smtp_opts={"max_rcpt": 10, "tempfail_data": r"^Subject: Split",
                                     "tempfail_skip": 2, "tempfail_times": 1},
                       HERALD_RETRY_BASE_S=1)
    rcpts = ["p%02d@example.test" % i for i in range(30)]
    push(r, t.prefix, make_job(id="split-1", subject="Split run", to=rcpts))
    rec = wait_status(e, "split-1", ("deferred", "sent", "failed"), 20)
    check(rec["status"] == "deferred", "status %s" % rec["status"])
    st = {x["email"]: x["status"] for x in rec["recipients"]}
    check(sorted(a for a, v in st.items() if v == "accepted") == rcpts[:20], st)
    check(sorted(a for a, v in st.items() if v == "deferred") == rcpts[20:], st)
    rec = wait_status(e, "split-1", ("sent", "failed"), 30)
    check(rec["status"] == "sent" and rec["attempts"] == 2, (rec["status"], rec["attempts"]))
    msgs = s.messages()
    got = [a for env, _ in msgs for a in env["rcpt_tos"]]
    check(sorted(got) == rcpts, "delivered %d recipient copies, %d distinct"
          % (len(got), len(set(got))))
    check([sorted(env["rcpt_tos"]) for env, _ in msgs] ==
          [rcpts[:10], rcpts[10:20], rcpts[20:]], [env["rcpt_tos"] for env, _ in msgs])
    stop_ok(w)


@harness.timeout(60)
def test_messages_to_one_server_are_chained_on_one_connection(t):
    """One SMTP slot, 40 jobs waiting: each next transaction's MAIL, RCPT
    and DATA follow the previous message's end (RFC 2920 §3.1), on one
    connection. The server (aiosmtpd) sees them waiting when it answers
    the message; every job is delivered once, to its own recipient, and
    the worker's log says which went chained."""
    r = t.redis(aof=False)
    s = t.smtp(pipelining=True)
    e = t.env(r, s, HERALD_CONCURRENCY="1")
    ids = ["chain-%02d" % i for i in range(40)]
    for i, id in enumerate(ids):
        push(r, t.prefix, make_job(id=id, to=["p%02d@family.test" % i]))
    w = t.worker(e)
    s.wait_count(40, 60)
    check(sorted(s.ids()) == sorted(ids), "every job once: %r" % s.ids())
    for id, (env, raw) in zip(s.ids(), s.messages()):
        check(env["rcpt_tos"] == ["p%s@family.test" % id[-2:]], (id, env["rcpt_tos"]))
    ev = s.events()
    connects = sum(1 for x in ev if x["event"] == "ehlo")  # not the harness's probe
    ahead = sum(1 for x in ev if x["event"] == "accepted" and x.get("ahead", 0) > 0)
    check(connects == 1, "%d connections" % connects)
    check(ahead >= 20, "only %d of 40 messages had the next transaction chained" % ahead)
    stop_ok(w)
    chained = [d for d in w.logs() if d.get("msg") == "delivered" and d.get("connection") == "chained"]
    check(len(chained) >= 20, "the log says %d went chained" % len(chained))


def test_tempfail_is_retried_with_same_message_id(t):
    r, s, e, w = setup(t, smtp_opts={"tempfail_data": r"^Subject: Later"})
    push(r, t.prefix, make_job(id="temp-1", subject="Later please"))
    rec = wait_status(e, "temp-1", "deferred", 10)
    check(rec.get("next_attempt_at"), f"deferred without next_attempt_at: {rec}")
    check("451" in (rec.get("smtp_reply") or "") + (rec.get("last_error") or ""), rec)
    wait_until(lambda: sum(ev["event"] == "data_tempfail" for ev in s.events()) >= 2, 15,
               "a second attempt after the 451")
    s.restart()  # now accepting
    env, raw = one_message(s, "temp-1", 20)
    rec = wait_status(e, "temp-1", "sent")
    n_temp = sum(ev["event"] == "data_tempfail" for ev in s.events())
    check(rec["attempts"] == n_temp + 1, f"attempts {rec['attempts']}, server saw {n_temp} + 1")
    mids = {ev["message_id"] for ev in s.events()
            if ev["event"] in ("data_tempfail", "accepted")}
    check(len(mids) == 1 and None not in mids, f"Message-ID changed between attempts: {mids}")
    check(not harness.dead(r, t.prefix), "dead letter for a transient failure")
    stop_ok(w)


@harness.timeout(90)
def test_smtp_down_at_start_then_up(t):
    r, s, e, w = setup(t, start_smtp=False)
    push(r, t.prefix, make_job(id="down-1"))
    rec = wait_status(e, "down-1", "deferred", 15)
    check(rec.get("last_error"), f"no last_error: {rec}")
    check(rec.get("next_attempt_at"), f"no next_attempt_at: {rec}")
    check(w.alive(), "worker died without a relay")
    s.start()
    one_message(s, "down-1", 20)
    rec = wait_status(e, "down-1", "sent")
    check(rec["attempts"] >= 2, f"attempts {rec['attempts']}")
    stop_ok(w)


@harness.timeout(90)
def test_smtp_stall_times_out_and_retries(t):
    r, s, e, w = setup(t, smtp_opts={"delay_data": 10, "delay_times": 1})
    push(r, t.prefix, make_job(id="stall-1"))
    wait_until(lambda: any(ev["event"] == "data_delayed" for ev in s.events()), 10,
               "stall-1 stalled in DATA")
    # meanwhile the worker is not hung
    push(r, t.prefix, make_job(id="stall-2"))
    one_message(s, "stall-2", 3)
    one_message(s, "stall-1", 20)
    evs = s.events()
    t_stall = next(ev["at"] for ev in evs if ev["event"] == "data_delayed")
    t_acc = next(ev["at"] for ev in evs if ev["event"] == "accepted" and ev["herald_id"] == "stall-1")
    check(t_acc - t_stall < 8.5,
          f"retry came {t_acc - t_stall:.1f}s after the stall: not cut at HERALD_SMTP_TIMEOUT_S=3")
    check(t_acc - t_stall > 2.5, f"retry after only {t_acc - t_stall:.1f}s")
    rec = wait_status(e, "stall-1", "sent")
    check(rec["attempts"] == 2, f"attempts {rec['attempts']}")
    check(s.ids().count("stall-1") == 1, "stall-1 delivered twice")
    check(w.alive(), "worker died")
    stop_ok(w)


# ------------------------------------------------------------- robustness


def _check_accounting(r, s, prefix, ids, worker_ids=("w1",)):
    delivered = s.ids()
    dup = {x for x in delivered if delivered.count(x) > 1} if len(delivered) != len(
        set(delivered)) else set()
    check(not dup, f"{len(dup)} ids delivered more than once, e.g. {sorted(dup)[:5]}")
    pend = pending_ids(r, prefix, worker_ids)
    check(len(pend) == len(set(pend)), "a job is held twice in the queues")
    both = set(delivered) & set(pend)
    check(not both, f"{len(both)} delivered jobs still queued, e.g. {sorted(both)[:5]}")
    missing = set(ids) - set(delivered) - set(pend)
    check(not missing, f"{len(missing)} jobs lost, e.g. {sorted(missing)[:5]}")
    return len(delivered), len(pend)


@harness.timeout(180)
def test_sigterm_mid_run_loses_nothing(t):
    r, s, e, _ = setup(t, smtp_opts={"delay_data": 0.1}, start_worker=False)
    jobs = bulk_jobs(2000, "term")
    ids = [j["id"] for j in jobs]
    push_many(r, t.prefix, jobs)
    w = t.worker(e)
    wait_until(lambda: s.count() >= 200, 60, "200 deliveries")
    rc = w.stop(signal.SIGTERM, 25)
    check(rc == 0, f"exit {rc} on SIGTERM; stderr: {w.stderr()[-600:]}")
    n_sent, n_pend = _check_accounting(r, s, t.prefix, ids)
    print(f"    after SIGTERM: {n_sent} delivered, {n_pend} queued")
    check(n_sent < 2000, "everything was delivered before SIGTERM: test too slow to stop")
    # restart on a fast server: every id delivered exactly once
    s.restart()
    w2 = t.worker(e)
    wait_until(lambda: s.count() >= 2000, 90, f"all 2000 delivered (have {s.count()})")
    wait_until(lambda: drained(r, t.prefix), 20, "queues drained")
    time.sleep(1)
    delivered = s.ids()
    check(sorted(delivered) == sorted(ids), f"{len(delivered)} deliveries, "
          f"{len(set(delivered))} distinct, of {len(ids)}")
    for id in (ids[0], ids[999], ids[-1]):
        rec = mc_show(e, id)
        check(rec and rec["status"] == "sent", f"{id}: {rec}")
    left = mc_unfinished(e)
    check(not left, f"MC records not sent after the run: {left}")
    stop_ok(w2)


@harness.timeout(180)
def test_redis_killed_mid_run_loses_nothing(t):
    r, s, e, _ = setup(t, smtp_opts={"delay_data": 0.03}, start_worker=False)
    jobs = bulk_jobs(2000, "rk")
    ids = [j["id"] for j in jobs]
    push_many(r, t.prefix, jobs)
    w = t.worker(e)
    wait_until(lambda: s.count() >= 300, 60, "300 deliveries")
    r.kill()
    at_kill = s.count()
    check(at_kill < 1900, f"{at_kill} delivered before Redis went down: test too slow to catch")
    time.sleep(1.5)
    check(w.alive(), f"worker died when Redis went away: {w.stderr()[-600:]}")
    r.restart()
    wait_until(lambda: len(set(s.ids())) >= 2000, 120,
               f"all 2000 delivered after the Redis restart (have {len(set(s.ids()))})")
    wait_until(lambda: drained(r, t.prefix), 30, "queues drained")
    check(w.alive(), "worker died")
    time.sleep(1)
    _check_accounting(r, s, t.prefix, ids)
    check(s.count() == 2000, f"{s.count()} deliveries of 2000 ids")
    print(f"    Redis killed after {at_kill} deliveries")
    left = mc_unfinished(e)
    check(not left, f"MC records not sent after the run: {left}")
    stop_ok(w)


@harness.timeout(60)
def test_redis_down_at_start_then_up(t):
    r = harness.Redis()  # port reserved, nothing listening yet
    s = t.smtp()
    e = t.env(r, s)
    w = t.worker(e)
    time.sleep(2.5)
    check(w.alive(), f"worker gave up without Redis: {w.stderr()[-500:]}")
    r.start(t.path("redis-late"))
    push(r, t.prefix, make_job(id="late-redis"))
    one_message(s, "late-redis", 20)
    wait_status(e, "late-redis", "sent")
    stop_ok(w)


@harness.timeout(120)
def test_killed_worker_jobs_taken_by_another(t):
    r, s, e, w1 = setup(t, smtp_opts={"delay_data": 30}, HERALD_HEARTBEAT_S=2,
                        HERALD_CONCURRENCY=4, HERALD_SMTP_TIMEOUT_S=40)
    jobs = bulk_jobs(12, "orphan")
    push_many(r, t.prefix, jobs)
    wait_until(lambda: any(ev["event"] == "data_delayed" for ev in s.events()), 15,
               "a job stalled in DATA")
    check(r.cmd("LLEN", harness.processing_key(t.prefix, "w1")) >= 1, "w1 holds no jobs")
    w1.kill()  # its stalled sessions die with it: nothing was accepted
    s.restart()
    w2 = t.worker(dict(e, HERALD_WORKER_ID="w2"))
    wait_until(lambda: len(set(s.ids())) >= 12, 60,
               f"all 12 delivered by w2 (have {len(set(s.ids()))})")
    wait_until(lambda: drained(r, t.prefix, ("w1", "w2")), 20, "queues drained")
    _check_accounting(r, s, t.prefix, [j["id"] for j in jobs], ("w1", "w2"))
    check(r.cmd("HEXISTS", f"{t.prefix}:workers", "w1") == 0, "dead w1 still listed")
    stop_ok(w2)


@harness.timeout(90)
def test_frozen_worker_does_not_send_jobs_another_re_took(t):
    # w1 (one SMTP slot) holds 8 jobs and is frozen (SIGSTOP) past its
    # heartbeat; w2 re-takes and delivers them. When w1 thaws, its claims
    # are stale: it checks them before any new transaction and sends
    # nothing more. Only the transaction already under way when it froze
    # can end in a duplicate (counted, logged).
    r, s, e, w1 = setup(t, smtp_opts={"delay_data": 1}, HERALD_HEARTBEAT_S=2,
                        HERALD_CONCURRENCY=1)
    jobs = bulk_jobs(8, "frozen")
    push_many(r, t.prefix, jobs)
    wait_until(lambda: r.cmd("LLEN", harness.processing_key(t.prefix, "w1")) == 8 and
               any(ev["event"] == "data_delayed" for ev in s.events()), 15,
               "w1 holds all 8, one in DATA")
    os.kill(w1.pid, signal.SIGSTOP)
    try:
        w2 = t.worker(dict(e, HERALD_WORKER_ID="w2", HERALD_CONCURRENCY="8"))
        wait_until(lambda: len(set(s.ids())) >= 8, 30, "w2 delivered all 8")
    finally:
        os.kill(w1.pid, signal.SIGCONT)
    w1.wait_log(lambda d: "claim is no longer current" in d.get("msg", ""), 15,
                "w1 dropped a job it no longer holds")
    time.sleep(3)
    ids = s.ids()
    dups = len(ids) - len(set(ids))
    check(sorted(set(ids)) == sorted(j["id"] for j in jobs), "delivered %r" % sorted(set(ids)))
    check(dups <= 1, "%d duplicates: w1 sent jobs w2 had re-taken" % dups)
    stale = r.cmd("HGET", t.prefix + ":stats", "stale_accepts")
    # counted when w1 saw the 250 (its step timer may fire first on thawing)
    check(int(stale or 0) <= dups, "stale_accepts %r, duplicates %d" % (stale, dups))
    stop_ok(w1)
    stop_ok(w2)


@harness.alone
@harness.timeout(60)
def test_concurrent_transactions(t):
    """HERALD_CONCURRENCY transactions in flight: 20 jobs on a server that
    takes 1 s per message go out in a few seconds, not 20."""
    r, s, e, _ = setup(t, smtp_opts={"delay_data": 1}, start_worker=False,
                       HERALD_CONCURRENCY=10)
    jobs = bulk_jobs(20, "conc")
    push_many(r, t.prefix, jobs)
    t0 = time.monotonic()
    w = t.worker(e)
    wait_until(lambda: s.count() >= 20, 30, f"20 deliveries (have {s.count()})")
    dt = time.monotonic() - t0
    check(dt < 8, f"20 one-second transactions took {dt:.1f}s with HERALD_CONCURRENCY=10")
    peers = {tuple(env["peer"]) for env, _ in s.messages()}
    check(len(peers) >= 5, f"only {len(peers)} SMTP connections used")
    stop_ok(w)


def test_sigterm_idle_exits_zero(t):
    r, s, e, w = setup(t)
    push(r, t.prefix, make_job(id="idle-1"))
    one_message(s, "idle-1")
    t0 = time.monotonic()
    stop_ok(w, 15)
    check(time.monotonic() - t0 < 5, "idle worker took long to stop")
    logs = w.logs()
    check(logs, "no JSON log lines on stderr")
    for d in logs:
        for k in ("ts", "level", "msg"):
            check(k in d, f"log line without {k}: {d}")


def test_ehlo_name_and_quit(t):
    """EHLO gives HERALD_HELO_NAME, or the host's fully qualified name, or
    the connection's address literal (RFC 5321 §4.1.4: never a bare short
    name, which strict servers refuse); every session the worker ends, it
    ends with QUIT (§4.1.1.10), here at SIGTERM."""
    r, s, e, w = setup(t, HERALD_CONCURRENCY=4)
    push_many(r, t.prefix, bulk_jobs(8, "helo"))
    wait_until(lambda: s.count() >= 8, 30, f"8 deliveries (have {s.count()})")
    stop_ok(w)
    want = harness.default_helo_name()
    ev = s.events()
    # the worker's sessions: those that said EHLO (the harness' readiness
    # probe connects too, and says nothing)
    ehlo = [x for x in ev if x["event"] == "ehlo"]
    sessions = {tuple(x["peer"]) for x in ehlo}
    quits = {tuple(x["peer"]) for x in ev if x["event"] == "quit"}
    check(len(sessions) == len(ehlo) >= 1, f"EHLO twice in a session: {ehlo}")
    check(all(x["verb"] == "EHLO" and x["name"] == want for x in ehlo),
          f"EHLO names {[x['name'] for x in ehlo]}, want {want!r}")
    check(sessions <= quits, f"sessions ended without QUIT: {sorted(sessions - quits)}")
    check(any(d.get("msg", "").startswith("EHLO name") for d in w.logs()),
          "the worker does not log its EHLO name at start")

    n0 = len(ev)
    w = t.worker(dict(e, HERALD_HELO_NAME="mail.platform.test"))
    push(r, t.prefix, make_job(id="helo-named"))
    one_message(s, "helo-named")
    stop_ok(w)
    ev = s.events()[n0:]
    names = [x["name"] for x in ev if x["event"] == "ehlo"]
    check(names and all(n == "mail.platform.test" for n in names), names)
    check({tuple(x["peer"]) for x in ev if x["event"] == "ehlo"} <=
          {tuple(x["peer"]) for x in ev if x["event"] == "quit"}, ev)


# ------------------------------------------------------------- deploy


def test_docker_compose_config(t):
    path = None
    for cand in ("docker-compose.yml", "deploy/docker-compose.yml"):
        p = os.path.join(harness.REPO, cand)
        if os.path.exists(p):
            path = p
            break
    if path is None:
        raise harness.Skip("docker-compose.yml does not exist yet")
    exe = shutil.which("docker-compose")
    check(exe is not None, "docker-compose is not installed (scripts/deps.sh installs it)")
    cp = subprocess.run([exe, "-f", path, "config", "-q"], capture_output=True, text=True,
                        timeout=60, cwd=os.path.dirname(path))
    check(cp.returncode == 0, f"docker-compose config -q: {cp.stderr.strip()[:600]}")
    with open(path) as f:
        doc = yaml.safe_load(f)
    services = doc.get("services") or {}
    check(any("redis" in name for name in services), f"no redis service: {list(services)}")
    check(any("worker" in name for name in services), f"no worker service: {list(services)}")


@harness.timeout(180)
def test_smtp_killed_mid_run_loses_nothing(t):
    """The SMTP server SIGKILLed in the middle of 1,000 deliveries and
    restarted on the same port: every job is delivered, none is lost. A
    server killed between storing a message and answering 250 makes the
    client retry it — SMTP's own duplicate window, on the server side — so
    duplicates are allowed only up to the transactions in flight at the
    kill (HERALD_CONCURRENCY)."""
    r, s, e, _ = setup(t, smtp_opts={"delay_data": 0.02}, start_worker=False,
                       HERALD_CONCURRENCY=8)
    jobs = bulk_jobs(1000, "sk")
    ids = [j["id"] for j in jobs]
    push_many(r, t.prefix, jobs)
    w = t.worker(e)
    wait_until(lambda: s.count() >= 150, 60, "150 deliveries")
    s.kill()
    at_kill = s.count()
    check(at_kill < 950, f"{at_kill} delivered before the kill: test too slow to catch")
    time.sleep(2)
    check(w.alive(), "worker died when the SMTP server went away")
    s.restart()
    wait_until(lambda: len(set(s.ids())) >= 1000, 120,
               f"all 1000 delivered after the SMTP restart (have {len(set(s.ids()))})")
    wait_until(lambda: drained(r, t.prefix), 30, "queues drained")
    delivered = s.ids()
    dups = len(delivered) - len(set(delivered))
    check(set(delivered) == set(ids), "some jobs were never delivered")
    check(dups <= 8, f"{dups} duplicates: more than the transactions in flight")
    print(f"    SMTP killed after {at_kill} deliveries; {dups} delivered twice")
    left = mc_unfinished(e)
    check(not left, f"MC records not sent after the run: {left}")
    stop_ok(w)


@harness.timeout(90)
def test_invalid_job_releases_its_id(t):
    """A take claims ids it can read; when the job then proves invalid the
    claim is released, so a corrected job with the same id goes out even
    while the first worker still counts as alive."""
    r, s, e, _ = setup(t, start_worker=False, HERALD_HEARTBEAT_S=60)
    a = t.worker(dict(e, HERALD_WORKER_ID="wa"))
    bad = make_job(id="fix-me")
    bad["to"] = ["not an address"]
    push(r, t.prefix, bad)
    wait_until(lambda: len(harness.dead(r, t.prefix)) == 1, 10, "the bad job in dead")
    check(r.cmd("HGET", f"{t.prefix}:job:fix-me", "state") in (None, b"failed"),
          "the invalid job's id is still claimed")
    # wa goes away without a word but its heartbeat says it is alive: a
    # claim it still held would make wb drop the corrected job as "busy"
    os.kill(a.pid, signal.SIGKILL)
    a.proc.wait() if hasattr(a, "proc") else time.sleep(0.2)
    r.cmd("HSET", f"{t.prefix}:workers", "wa", str(int(time.time() * 1000)))
    b = t.worker(dict(e, HERALD_WORKER_ID="wb"))
    push(r, t.prefix, make_job(id="fix-me"))
    one_message(s, "fix-me", 15)
    check(s.ids().count("fix-me") == 1, "delivered more than once")
    stop_ok(b)


@harness.stores("sqlite")  # holds SQLite's write lock from outside
@harness.timeout(90)
def test_message_center_locked_jobs_wait(t):
    """Another process holds the Message Center's write lock: the worker
    cannot record, so it does not send (the record comes before the
    attempt); it logs why, keeps the jobs, and delivers all of them once
    the lock is released."""
    import sqlite3
    r, s, e, _ = setup(t, start_worker=False)
    db = e["HERALD_MC"][len("sqlite://"):]
    e["HERALD_MC"] = e["HERALD_MC"] + "?busy_timeout_ms=200"
    w = t.worker(e)
    push(r, t.prefix, make_job(id="mc-warmup"))  # creates the schema
    one_message(s, "mc-warmup", 15)
    lock = sqlite3.connect(db, timeout=5, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        jobs = bulk_jobs(20, "mclock")
        push_many(r, t.prefix, jobs)
        time.sleep(3)
        check(s.count() == 1, f"{s.count() - 1} messages went out without a record")
        wait_until(lambda: any("message center write failed" in (l.get("msg") or "")
                               for l in w.logs()), 10, "the failure logged")
        check(w.alive(), "worker died")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_until(lambda: len(set(s.ids())) == 21, 30, "all 20 delivered after the lock")
    for j in jobs:
        wait_status(e, j["id"], "sent")
    stop_ok(w)


@harness.stores("postgresql")
@harness.timeout(90)
def test_message_center_locked_or_cut_off_jobs_wait_postgresql(t):
    """PostgreSQL's counterpart: another session holds the id registry
    locked, then the server cuts the worker's connections. The worker
    cannot record, so it sends nothing; it logs the cut, reconnects, and
    delivers every job once the lock is gone, each with its record."""
    r, s, e, _ = setup(t, start_worker=False)
    url = e["HERALD_MC"]
    db = url.split("///", 1)[1].split("?", 1)[0]
    pg = harness.postgres()
    w = t.worker(e)
    push(r, t.prefix, make_job(id="mc-warmup"))  # creates the schema
    one_message(s, "mc-warmup", 15)
    locker = subprocess.Popen(
        [os.path.join(harness.PG_BIN, "psql"), "-X", "-q", "-h", pg.sock, "-d", db, "-c",
         "BEGIN; LOCK TABLE herald_message_ids IN ACCESS EXCLUSIVE MODE; "
         "SELECT pg_sleep(6); COMMIT;"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: pg.sql(db, "SELECT count(*) FROM pg_locks l JOIN pg_class c "
                                  "ON c.oid = l.relation WHERE c.relname = "
                                  "'herald_message_ids' AND l.mode = "
                                  "'AccessExclusiveLock' AND l.granted").strip() == "1",
                   10, "the lock taken")
        jobs = bulk_jobs(20, "pglock")
        push_many(r, t.prefix, jobs)
        time.sleep(2)
        check(s.count() == 1, f"{s.count() - 1} messages went out without a record")
        cut = pg.sql(db, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     f"WHERE datname = '{db}' AND application_name = 'herald'")
        check(int(cut.strip() or 0) >= 1, f"no worker connection to cut: {cut!r}")
        wait_until(lambda: any("message center write failed" in (l.get("msg") or "")
                               for l in w.logs()), 10, "the failure logged")
        check(s.count() == 1, f"{s.count() - 1} messages went out without a record")
        check(w.alive(), "worker died")
    finally:
        locker.wait(timeout=30)
    wait_until(lambda: len(set(s.ids())) == 21, 30, "all 20 delivered after the lock")
    for j in jobs:
        wait_status(e, j["id"], "sent")
    check(len(s.ids()) == 21, f"{len(s.ids()) - 21} delivered twice")
    stop_ok(w)
