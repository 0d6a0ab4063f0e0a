"""The producer side against a real redis-server: herald-enqueue (one job,
files, stdin, NDJSON bulk), heraldctl mc show/list (against a Message Center
file filled by bin/test_libherald populate-mc), queue stats, dead list and
dead replay, usage errors and exit codes (SPEC §1, §3, §6, §7)."""

import csv
import io
import json
import os
import re
import time

import harness
from harness import check, make_job, run


def _env(t, redis, **overrides):
    return t.env(redis, None, **overrides)


def _lane(r, t, prio="normal"):
    return [json.loads(x) for x in (r.cmd("LRANGE", harness.queue_key(t.prefix, prio), 0, -1) or [])]


def _all_lanes(r, t):
    return {p: _lane(r, t, p) for p in ("high", "normal", "low")}


def _logs(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


# ------------------------------------------------------------ herald-enqueue


def test_enqueue_from_argument_file_and_stdin(t):
    r = t.redis(aof=False)
    env = _env(t, r)

    # argument, no id: one is assigned and printed
    job = make_job(id=None, subject="from argument")
    cp = run("herald-enqueue", json.dumps(job), env=env)
    check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr}")
    ids = cp.stdout.split()
    check(len(ids) == 1 and ids[0].startswith("h-"), f"assigned id: {cp.stdout!r}")
    lane = _lane(r, t)
    check(len(lane) == 1, f"one job pushed: {lane}")
    check(lane[0]["id"] == ids[0], f"pushed job carries the printed id: {lane[0]}")
    check(lane[0]["subject"] == "from argument" and lane[0]["to"], lane[0])

    # file, with its own id
    job = make_job(subject="from file")
    path = t.path("job.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(job, f)
        f.write("\n")
    for args in (("-f", path), (f"--file={path}",)):
        cp = run("herald-enqueue", *args, env=env)
        check(cp.returncode == 0, f"{args}: exit {cp.returncode}: {cp.stderr}")
        check(cp.stdout.strip() == job["id"], f"{args}: printed {cp.stdout!r}")

    # stdin: with '-' and with no argument at all (stdin not a terminal)
    for args in (("-",), ()):
        job = make_job(subject="from stdin é")
        cp = run("herald-enqueue", *args, env=env, input=json.dumps(job, ensure_ascii=False))
        check(cp.returncode == 0, f"{args}: exit {cp.returncode}: {cp.stderr}")
        check(cp.stdout.strip() == job["id"], f"{args}: printed {cp.stdout!r}")

    lane = _lane(r, t)
    check(len(lane) == 5, f"five jobs in the normal lane: {len(lane)}")
    check(lane[0]["subject"] == "from stdin é", f"newest at the left: {lane[0]}")
    check(_lane(r, t, "high") == [] and _lane(r, t, "low") == [], "other lanes empty")


def test_enqueue_priority_lanes(t):
    r = t.redis(aof=False)
    env = _env(t, r)
    want = {}
    for prio in ("high", "normal", "low", None):
        job = make_job(priority=prio)
        cp = run("herald-enqueue", json.dumps(job), env=env)
        check(cp.returncode == 0, f"{prio}: exit {cp.returncode}: {cp.stderr}")
        want.setdefault(prio or "normal", []).append(job["id"])
    lanes = _all_lanes(r, t)
    for prio in ("high", "normal", "low"):
        got = sorted(j["id"] for j in lanes[prio])
        check(got == sorted(want[prio]), f"lane {prio}: {got} != {want[prio]}")
        for j in lanes[prio]:
            check(j["priority"] == prio, f"canonical job names its lane: {j}")


def test_enqueue_rejects_invalid_job(t):
    r = t.redis(aof=False)
    env = _env(t, r)
    cases = [
        (make_job(to=["alice@example.test", "bob@example.test", "not-an-address"]), "to[2]"),
        (make_job(subject="line\r\nBcc: evil@x.test"), "subject"),
        (make_job(org=None), "org"),
        (make_job(priority="urgent"), "priority"),
        (make_job(headers={"Subject": "x"}), "headers"),
    ]
    for job, field in cases:
        cp = run("herald-enqueue", json.dumps(job), env=env)
        check(cp.returncode == 2, f"{field}: exit {cp.returncode}: {cp.stderr}")
        check(field in cp.stderr, f"{field} not named: {cp.stderr}")
        check(cp.stdout == "", f"{field}: nothing on stdout: {cp.stdout!r}")
    cp = run("herald-enqueue", "{not json", env=env)
    check(cp.returncode == 2, f"bad JSON: exit {cp.returncode}")
    cp = run("herald-enqueue", "-", env=env, input="")
    check(cp.returncode == 2, f"empty stdin: exit {cp.returncode}")
    logs = _logs(cp.stderr)
    check(logs and logs[-1]["level"] == "error", f"JSON log line: {cp.stderr}")
    lanes = _all_lanes(r, t)
    check(lanes == {"high": [], "normal": [], "low": []}, f"nothing pushed: {lanes}")


def test_enqueue_invalid_job_needs_no_redis(t):
    # Validation happens before any connection: a bad job is exit 2 even
    # when Redis is down.
    env = _env(t, None)
    cp = run("herald-enqueue", json.dumps(make_job(to=["x"])), env=env)
    check(cp.returncode == 2, f"exit {cp.returncode}: {cp.stderr}")
    check("to[0]" in cp.stderr, cp.stderr)


def test_enqueue_ndjson_bulk_with_invalid_lines(t):
    r = t.redis(aof=False)
    env = _env(t, r)
    lines, valid_ids, bad_lines = [], [], {}
    prios = ("high", "normal", "low")
    for i in range(2500):
        if i == 16:
            job = make_job(to=["a@example.test", "b@example.test", "nope"])
            bad_lines[len(lines) + 1] = "to[2]"
            lines.append(json.dumps(job))
            continue
        if i == 1700:
            bad_lines[len(lines) + 1] = None
            lines.append("{broken json")
            continue
        if i % 500 == 3:
            lines.append("")  # blank lines are skipped but counted
            lines.append("   ")
        job = make_job(priority=prios[i % 3], subject=f"bulk {i}")
        if i % 7 == 0:
            del job["id"]
        else:
            valid_ids.append(job["id"])
        lines.append(json.dumps(job))
    path = t.path("jobs.ndjson")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))  # no newline after the last line
    cp = run("herald-enqueue", "--ndjson", "-f", path, env=env, timeout=120)
    check(cp.returncode == 2, f"exit {cp.returncode} (want 2): {cp.stderr[-500:]}")
    printed = cp.stdout.split()
    check(len(printed) == 2498, f"printed {len(printed)} ids")
    check(len(set(printed)) == 2498, "ids unique")
    check(set(valid_ids) <= set(printed), "every given id printed")
    lanes = _all_lanes(r, t)
    pushed = [j["id"] for p in prios for j in lanes[p]]
    check(len(pushed) == 2498, f"pushed {len(pushed)}")
    check(set(pushed) == set(printed), "pushed = printed")
    for p in prios:
        check(all(j["priority"] == p for j in lanes[p]), f"lane {p} holds only {p} jobs")
        check(len(lanes[p]) > 800, f"lane {p}: {len(lanes[p])}")
    # FIFO per lane: the lane's oldest (rightmost) is the first such line
    normal = lanes["normal"]
    check(normal[-1]["subject"] == "bulk 1", f"order kept: {normal[-1]['subject']}")
    logs = _logs(cp.stderr)
    for ln, field in bad_lines.items():
        hits = [d for d in logs if d.get("line") == str(ln)]
        check(hits, f"line {ln} not reported: {cp.stderr[:800]}")
        check(hits[0]["msg"].startswith(f"line {ln}: "), hits[0])
        if field:
            check(hits[0]["field"] == field and field in hits[0]["msg"], hits[0])
    summary = [d for d in logs if d.get("enqueued") is not None]
    check(summary and summary[-1]["enqueued"] == "2498" and summary[-1]["rejected"] == "2",
          f"summary: {summary}")
    check("enqueued 2498, rejected 2" in summary[-1]["msg"], summary[-1])
    check("\r" not in cp.stderr, "no progress line when stderr is not a terminal")

    # all valid, from stdin: exit 0
    more = [json.dumps(make_job()) for _ in range(1200)]
    cp = run("herald-enqueue", "--ndjson", env=env, input="\r\n".join(more) + "\r\n")  # CRLF
    check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr[-300:]}")
    check(len(cp.stdout.split()) == 1200, "1200 ids")
    check(r.cmd("LLEN", harness.queue_key(t.prefix)) == len(lanes["normal"]) + 1200, "pushed")
    check("enqueued 1200, rejected 0" in cp.stderr, cp.stderr[-300:])


def test_enqueue_redis_down(t):
    port = harness.free_port()
    env = _env(t, None, HERALD_REDIS=f"redis://:hunter2secret@127.0.0.1:{port}/0")
    cp = run("herald-enqueue", json.dumps(make_job()), env=env)
    check(cp.returncode == 1, f"exit {cp.returncode}: {cp.stderr}")
    check(f"127.0.0.1:{port}" in cp.stderr, f"URL named: {cp.stderr}")
    check("hunter2secret" not in cp.stderr, "password leaked")
    check(cp.stdout == "", "no id printed")
    cp = run("herald-enqueue", "--ndjson", env=env, input=json.dumps(make_job()) + "\n")
    check(cp.returncode == 1, f"bulk: exit {cp.returncode}: {cp.stderr}")
    check(f"127.0.0.1:{port}" in cp.stderr and "hunter2secret" not in cp.stderr, cp.stderr)
    cp = run("heraldctl", "queue", "stats", env=env)
    check(cp.returncode == 1, f"heraldctl: exit {cp.returncode}: {cp.stderr}")
    check(f"127.0.0.1:{port}" in cp.stderr and "hunter2secret" not in cp.stderr, cp.stderr)


def test_redis_auth_and_db(t):
    r = t.redis(aof=False)
    r.cmd("CONFIG", "SET", "requirepass", "s3cr3t-pw")
    r.cmd("AUTH", "s3cr3t-pw")
    env = _env(t, r, HERALD_REDIS=f"redis://:s3cr3t-pw@127.0.0.1:{r.port}/3")
    job = make_job()
    cp = run("herald-enqueue", json.dumps(job), env=env)
    check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr}")
    r.cmd("SELECT", "3")
    check(r.cmd("LLEN", harness.queue_key(t.prefix)) == 1, "pushed into db 3")
    env["HERALD_REDIS"] = f"redis://:wrong-pw@127.0.0.1:{r.port}/3"
    cp = run("herald-enqueue", json.dumps(make_job()), env=env)
    check(cp.returncode == 1, f"wrong password: exit {cp.returncode}: {cp.stderr}")
    check("wrong-pw" not in cp.stderr and "AUTH" in cp.stderr, cp.stderr)


def test_print_config_hides_secrets(t):
    env = _env(t, None, HERALD_REDIS="redis://:redis-secret-1@127.0.0.1:6390/0",
               HERALD_RELAY_PASSWORD="relay-secret-2")
    for prog, args in (("herald-enqueue", ("--print-config",)),
                       ("heraldctl", ("--print-config",))):
        cp = run(prog, *args, "--prefix", "flagwins", env=env)
        check(cp.returncode == 0, f"{prog}: exit {cp.returncode}: {cp.stderr}")
        out = cp.stdout
        check("redis-secret-1" not in out and "relay-secret-2" not in out, f"{prog}: {out}")
        check("HERALD_RELAY_PASSWORD=(hidden)" in out, out)
        check("HERALD_REDIS=redis://:***@127.0.0.1:6390/0" in out, out)
        check("HERALD_PREFIX=flagwins" in out, f"{prog}: the flag wins over the environment")


def test_usage_errors_and_help(t):
    env = _env(t, None)
    bad = [
        ("herald-enqueue", ("--bogus",), "--bogus"),
        ("herald-enqueue", ("-f",), "-f"),
        ("herald-enqueue", ("{}", "{}"), "one job"),
        ("herald-enqueue", ("--ndjson", "{}"), "--ndjson"),
        ("herald-enqueue", ("--concurrency", "0"), "--concurrency"),
        ("herald-enqueue", ("--relay-password", "x"), "--relay-password"),
        ("heraldctl", (), "Usage"),
        ("heraldctl", ("--bogus",), "--bogus"),
        ("heraldctl", ("frobnicate",), "frobnicate"),
        ("heraldctl", ("mc",), "missing subcommand"),
        ("heraldctl", ("mc", "delete"), "delete"),
        ("heraldctl", ("mc", "show"), "missing ID"),
        ("heraldctl", ("mc", "show", "a b"), "'a b'"),
        ("heraldctl", ("mc", "show", "x", "y"), "one ID"),
        ("heraldctl", ("mc", "list", "--status", "sentt"),
         "--status: 'sentt' is not one of queued, sending, sent, deferred, failed"),
        ("heraldctl", ("mc", "list", "--since", "yesterday"), "--since: 'yesterday' is not an RFC 3339 time"),
        ("heraldctl", ("mc", "list", "--until=2026-13-01T00:00:00Z"), "--until"),
        ("heraldctl", ("mc", "list", "--since", "2026-02-01T00:00:00Z", "--until",
                       "2026-01-01T00:00:00Z"), "--until"),
        ("heraldctl", ("mc", "list", "--limit", "0"), "--limit"),
        ("heraldctl", ("mc", "list", "--limit", "ten"), "--limit"),
        ("heraldctl", ("mc", "list", "--limit", "1001"), "--limit"),
        ("heraldctl", ("mc", "list", "--org", "bad org"), "--org"),
        ("heraldctl", ("mc", "list", "--to", "nobody"), "--to"),
        ("heraldctl", ("mc", "list", "--json=yes"), "--json"),
        ("heraldctl", ("mc", "list", "--status"), "--status needs a value"),
        ("heraldctl", ("mc", "list", "--frob"), "--frob"),
        ("heraldctl", ("mc", "list", "extra"), "extra"),
        ("heraldctl", ("queue", "stats", "--frob"), "--frob"),
        ("heraldctl", ("dead", "replay"), "--all"),
        ("heraldctl", ("dead", "replay", "x", "--all"), "not both"),
        ("heraldctl", ("dead", "list", "--limit", "-1"), "--limit"),
        ("heraldctl", ("scheme", "test", "--org", "a"), "--email: required"),
        ("heraldctl", ("scheme", "add", "--org", "a"), "--email"),
        ("heraldctl", ("spf", "check", "a..b.test"), "not a domain name"),
        ("heraldctl", ("org", "set", "acme"), "nothing to change"),
        ("heraldctl", ("--redis", "http://x", "mc", "list"), "--redis"),
    ]
    for prog, args, want in bad:
        cp = run(prog, *args, env=env)
        check(cp.returncode == 2, f"{prog} {args}: exit {cp.returncode} (want 2): {cp.stderr}")
        check(want in cp.stderr, f"{prog} {args}: {want!r} not in {cp.stderr!r}")
        check(cp.stdout == "", f"{prog} {args}: stdout {cp.stdout!r}")

    env_bad = _env(t, None, HERALD_CONCURRENCY="lots")
    cp = run("heraldctl", "mc", "list", env=env_bad)
    check(cp.returncode == 2 and "HERALD_CONCURRENCY" in cp.stderr, cp.stderr)
    cp = run("herald-enqueue", "{}", env=env_bad)
    check(cp.returncode == 2 and "HERALD_CONCURRENCY" in cp.stderr, cp.stderr)

    good = [
        ("herald-enqueue", ("--help",), "--ndjson"),
        ("heraldctl", ("--help",), "heraldctl dead replay"),
        ("heraldctl", ("help",), "heraldctl mc list"),
        ("heraldctl", ("mc", "--help"), "heraldctl mc show"),
        ("heraldctl", ("mc", "list", "--help"), "--since"),
        ("heraldctl", ("mc", "show", "--help"), "no such message"),
        ("heraldctl", ("queue", "stats", "--help"), "heartbeat"),
        ("heraldctl", ("dead", "list", "--help"), "reason"),
        ("heraldctl", ("dead", "replay", "--help"), "invalid"),
    ]
    for prog, args, want in good:
        for e in (env, env_bad):  # --help works even with a broken setting
            cp = run(prog, *args, env=e)
            check(cp.returncode == 0, f"{prog} {args}: exit {cp.returncode}: {cp.stderr}")
            check(want in cp.stdout, f"{prog} {args}: {want!r} not in help")
    cp = run("heraldctl", "--help", env=env)
    check("heraldctl org set ORG" in cp.stdout and "scheme" in cp.stdout,
          "--help lists every command group")
    version = open(os.path.join(harness.REPO, "VERSION")).read().strip()
    for prog in ("herald-enqueue", "heraldctl"):
        cp = run(prog, "--version", env=env)
        check(cp.returncode == 0 and cp.stdout.strip() == f"{prog} {version}", cp.stdout)


# ------------------------------------------------------------------ heraldctl mc


def _populate(t, env, records):
    cp = run("test_libherald", "populate-mc", env["HERALD_MC"], env=env,
             input="".join(json.dumps(x) + "\n" for x in records))
    check(cp.returncode == 0, f"populate-mc: exit {cp.returncode}: {cp.stderr}")
    return cp.stdout.split()


def test_mc_list_filters_pages_and_csv(t):
    # SPEC §6.2 in heraldctl: type, path, from, q (subject words), keyset
    # pages by --cursor (every record once, newest first), limit <= 500,
    # CSV; bad filters are exit 2 naming the flag.
    env = _env(t, None)
    now = time.time()
    recs = []
    for i in range(12):
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 3600 + i // 3)) + "Z"
        subject = ["Receipt R-%d for Ana" % i, "Reminder: form due", "=SUM(A1) oops"][i % 3]
        recs.append({"job": make_job(id="p-%02d" % i, type=["receipt", "reminder"][i % 2],
                                     subject=subject,
                                     to=["ann@example.test", "Bo@Example.test"],
                                     **{"from": ["Office@Pine.test", "x@acme.test"][i % 4 == 0]}),
                     "created_at": at, "status": "sent",
                     "path": ["relay", "spf", "scheme"][i % 3]})
    ids = _populate(t, env, recs)
    check(len(ids) == 12, ids)

    def listing(*args):
        cp = run("heraldctl", "mc", "list", "--json", *args, env=env)
        check(cp.returncode == 0, f"mc list {args}: {cp.stderr}")
        return [r["id"] for r in json.loads(cp.stdout)]

    check(listing("--type", "reminder") == ["p-11", "p-09", "p-07", "p-05", "p-03", "p-01"],
          listing("--type", "reminder"))
    check(listing("--path", "spf") == ["p-10", "p-07", "p-04", "p-01"], listing("--path", "spf"))
    check(listing("--from", "X@ACME.test") == ["p-08", "p-04", "p-00"], "from")
    got = listing("--q", "rec r")
    check(got == ["p-09", "p-06", "p-03", "p-00"], got)
    check(listing("--q", "remind FORM", "--type", "receipt") == ["p-10", "p-04"],
          listing("--q", "remind FORM", "--type", "receipt"))
    check(listing("--q", "nothing-like-it") == [], "no match")

    # pages of 5: the table says where the next one starts
    seen, cursor, pages = [], None, 0
    while True:
        args = ["--limit", "5"] + (["--cursor", cursor] if cursor else [])
        cp = run("heraldctl", "mc", "list", *args, env=env)
        check(cp.returncode == 0, cp.stderr)
        rows = [l.split()[1] for l in cp.stdout.splitlines()[1:] if l.startswith("20")]
        seen += rows
        pages += 1
        m = re.search(r"--cursor (\S+)\)", cp.stdout)
        if not m:
            break
        cursor = m.group(1)
    check(pages == 3 and seen == ["p-%02d" % i for i in range(11, -1, -1)], (pages, seen))
    # --json: stdout is the page, the cursor is on stderr
    cp = run("heraldctl", "mc", "list", "--json", "--limit", "10", env=env)
    page = json.loads(cp.stdout)
    nxt = [d["next_cursor"] for d in _logs(cp.stderr) if "next_cursor" in d]
    check(len(page) == 10 and len(nxt) == 1, cp.stderr)
    cp = run("heraldctl", "mc", "list", "--json", "--limit", "10", "--cursor", nxt[0], env=env)
    check([r["id"] for r in json.loads(cp.stdout)] == ["p-01", "p-00"], cp.stdout)
    check(not [d for d in _logs(cp.stderr) if "next_cursor" in d], "a last page has no cursor")

    # CSV
    cp = run("heraldctl", "mc", "list", "--csv", "--type", "receipt", env=env)
    check(cp.returncode == 0, cp.stderr)
    check(cp.stdout_bytes.count(b"\r\n") == 7, cp.stdout_bytes[:300])
    rows = list(csv.reader(io.StringIO(cp.stdout, newline="")))
    check(rows[0] == ["id", "created_at", "org", "account", "type", "status", "path", "from",
                      "to", "subject", "attempts", "sent_at", "last_error"], rows[0])
    check([r[0] for r in rows[1:]] == ["p-10", "p-08", "p-06", "p-04", "p-02", "p-00"], rows)
    by_id = {r[0]: r for r in rows[1:]}
    check(by_id["p-02"][9] == "'=SUM(A1) oops", "a formula cell: %r" % by_id["p-02"][9])
    check(by_id["p-00"][8] == "ann@example.test; Bo@Example.test", by_id["p-00"][8])

    # bad input: exit 2, the flag named
    for args, flag in ((("--q", " ... "), "--q"), (("--cursor", "not-a-cursor!"), "--cursor"),
                       (("--limit", "501"), "--limit"), (("--path", "smtp"), "--path"),
                       (("--type", "Receipt"), "--type"), (("--from", "nope"), "--from"),
                       (("--json", "--csv"), "--csv")):
        cp = run("heraldctl", "mc", "list", *args, env=env)
        check(cp.returncode == 2 and flag in cp.stderr, f"{args}: {cp.returncode} {cp.stderr}")


def test_mc_show_and_list(t):
    env = _env(t, None)  # no Redis at all: Message Center commands need none
    recs = [
        {"job": make_job(id="m-1", org="acme", account="a1", subject="First receipt",
                         to=["alice@example.test", "bob@example.test", "carol@example.test"]),
         "created_at": "2026-01-01T10:00:00Z", "status": "sent", "path": "spf", "attempts": 1,
         "smtp_reply": "250 2.0.0 queued"},
        {"job": make_job(id="m-2", org="acme", account="a2", subject="Reminder " + "é" * 80,
                         cc=[{"email": "cc@example.test", "name": "Cee"}]),
         "created_at": "2026-01-02T10:00:00Z", "status": "deferred", "attempts": 2,
         "last_error": "451 try later"},
        {"job": make_job(id="m-3", org="globex", account="g1", subject="Globex notice",
                         to=["dave@example.test"], meta={"order": 17}),
         "created_at": "2026-01-03T10:00:00Z", "status": "failed", "path": "relay",
         "last_error": "550 no such user"},
        {"job": make_job(id="m-4", org="acme", account="a1", subject="Queued one"),
         "created_at": "2026-01-04T10:00:00Z"},
    ]
    ids = _populate(t, env, recs)
    check(ids == ["m-1", "m-2", "m-3", "m-4"], ids)

    rec = harness.mc_show(env, "m-3")
    check(rec is not None, "m-3 found")
    check(rec["id"] == "m-3" and rec["org"] == "globex" and rec["status"] == "failed", rec)
    check(rec["path"] == "relay" and rec["last_error"] == "550 no such user", rec)
    check(rec["to"][0]["email"] == "dave@example.test", rec["to"])
    check(rec["meta"] == {"order": 17}, rec.get("meta"))
    check(rec["created_at"].startswith("2026-01-03T10:00:00"), rec["created_at"])
    check(harness.mc_show(env, "m-404") is None, "unknown id is exit 1")
    cp = run("heraldctl", "mc", "show", "m-404", env=env)
    check(cp.returncode == 1 and "no such message" in cp.stderr, cp.stderr)
    check(_logs(cp.stderr), f"the failure is a JSON log line: {cp.stderr}")

    cp = run("heraldctl", "mc", "show", "m-1", env=env)
    check(cp.returncode == 0, cp.stderr)
    for want in ("m-1", "sent", "First receipt", "spf", "alice@example.test",
                 "bob@example.test", "250 2.0.0 queued", "Thank you for your payment."):
        check(want in cp.stdout, f"{want!r} not in human view:\n{cp.stdout}")

    def listing(*args):
        cp = run("heraldctl", "mc", "list", *args, "--json", env=env)
        check(cp.returncode == 0, f"mc list {args}: exit {cp.returncode}: {cp.stderr}")
        v = json.loads(cp.stdout)
        check(isinstance(v, list), f"an array: {cp.stdout[:200]}")
        return [x["id"] for x in v]

    check(listing() == ["m-4", "m-3", "m-2", "m-1"], "newest first")
    check(listing("--org", "acme") == ["m-4", "m-2", "m-1"], listing("--org", "acme"))
    check(listing("--org", "acme", "--account", "a1") == ["m-4", "m-1"], "org+account")
    check(listing("--status", "failed") == ["m-3"], "status")
    check(listing("--status=deferred") == ["m-2"], "status=")
    check(listing("--to", "carol@example.test") == ["m-1"], listing("--to", "carol@example.test"))
    check(listing("--since", "2026-01-02T00:00:00Z") == ["m-4", "m-3", "m-2"], "since")
    check(listing("--until", "2026-01-02T12:00:00+01:00") == ["m-2", "m-1"], "until with offset")
    check(listing("--since", "2026-01-02T00:00:00Z", "--until", "2026-01-03T23:00:00Z")
          == ["m-3", "m-2"], "range")
    check(listing("--limit", "2") == ["m-4", "m-3"], "limit")
    check(listing("--org", "initech") == [], "no match is an empty array")

    cp = run("heraldctl", "mc", "list", env=env)
    check(cp.returncode == 0, cp.stderr)
    rows = cp.stdout.splitlines()
    check(rows[0].split() == ["CREATED", "ID", "STATUS", "ORG", "ACCOUNT", "PATH", "TO", "SUBJECT"],
          rows[0])
    check(len(rows) == 5, cp.stdout)
    check(rows[1].split()[1] == "m-4" and rows[4].split()[1] == "m-1", cp.stdout)
    col = rows[0].index("STATUS")
    check(all(len(r) > col and r[col - 2:col] == "  " for r in rows[1:]), "aligned columns")
    check("alice@example.test +2" in rows[4], rows[4])
    check("2026-01-01T10:00:00Z" in rows[4], rows[4])
    check("…" in rows[3] and "é" * 80 not in rows[3], f"long subject cut: {rows[3]}")
    cp = run("heraldctl", "mc", "list", "--org", "initech", env=env)
    check(cp.returncode == 0 and "no messages" in cp.stdout, cp.stdout)


def test_mc_store_unusable(t):
    os.makedirs(t.path("ro"))
    open(t.path("ro", "file"), "w").close()
    # the store's parent directory is a regular file
    env = _env(t, None, HERALD_MC=f"sqlite://{t.path('ro', 'file')}/mc.db")
    cp = run("heraldctl", "mc", "list", env=env)
    check(cp.returncode == 1, f"exit {cp.returncode}: {cp.stderr}")
    check(_logs(cp.stderr), cp.stderr)


# -------------------------------------------------------------- queue stats


def test_queue_stats(t):
    r = t.redis(aof=False)
    env = _env(t, r, HERALD_HEARTBEAT_S="15")
    p = t.prefix
    now = int(time.time() * 1000)
    r.pipeline(
        [("LPUSH", f"{p}:queue:high", "a", "b", "c"),
         ("LPUSH", f"{p}:queue:low", "d"),
         ("ZADD", f"{p}:scheduled", now + 60000, "s1", now + 120000, "s2"),
         ("LPUSH", f"{p}:dead", "{}", "{}", "{}", "{}"),
         ("HSET", f"{p}:workers", "w-alive", now - 1000, "w-stale", now - 60000),
         ("LPUSH", f"{p}:processing:w-alive", "j1", "j2"),
         ("LPUSH", f"{p}:processing:w-orphan", "j3", "j4", "j5"),
         ("LPUSH", "otherprefix:queue:normal", "zzz")])
    cp = run("heraldctl", "queue", "stats", "--json", env=env)
    check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr}")
    s = json.loads(cp.stdout)
    check(s["queues"] == {"high": 3, "normal": 0, "low": 1}, s["queues"])
    check(s["scheduled"] == 2 and s["dead"] == 4, s)
    w = {x["id"]: x for x in s["workers"]}
    check(set(w) == {"w-alive", "w-stale", "w-orphan"}, w)
    check(w["w-alive"]["alive"] is True and w["w-alive"]["processing"] == 2, w["w-alive"])
    check(500 <= w["w-alive"]["heartbeat_age_ms"] < 30000, w["w-alive"])
    check(w["w-stale"]["alive"] is False and w["w-stale"]["processing"] == 0, w["w-stale"])
    check(w["w-stale"]["heartbeat_age_ms"] >= 60000, w["w-stale"])
    check(w["w-orphan"]["registered"] is False and w["w-orphan"]["processing"] == 3
          and w["w-orphan"]["last_heartbeat"] is None, w["w-orphan"])
    check([x["id"] for x in s["workers"]] == ["w-alive", "w-stale", "w-orphan"],
          "registered first, by id")

    cp = run("heraldctl", "queue", "stats", env=env)
    check(cp.returncode == 0, cp.stderr)
    out = cp.stdout
    for want in ("queue high    3", "queue low     1", "scheduled     2", "dead          4",
                 "workers       3", "w-orphan", "(not registered)"):
        check(want in out, f"{want!r} not in:\n{out}")

    # an empty prefix: all zero, no workers
    cp = run("heraldctl", "queue", "stats", "--json", "--prefix", "emptyprefix", env=env)
    s = json.loads(cp.stdout)
    check(s["queues"] == {"high": 0, "normal": 0, "low": 0} and s["workers"] == [], s)


# ---------------------------------------------------------------- dead letters


def _dead_entry(t, env, raw, reason, field, error, id=None):
    args = ["dead-entry", reason, field, error] + ([id] if id else [])
    cp = run("test_libherald", *args, env=env, input=raw)
    check(cp.returncode == 0, cp.stderr)
    return cp.stdout_bytes.rstrip(b"\n")


def test_dead_list_and_replay(t):
    r = t.redis(aof=False)
    env = _env(t, r)
    p = t.prefix
    ok_normal = make_job(subject="was rejected")
    ok_high = make_job(priority="high", subject="expired one")
    no_id = make_job(id=None, priority="low", subject="no id")
    bad = make_job(to=["not an address"])
    entries = [
        _dead_entry(t, env, json.dumps(ok_normal), "rejected", "", "550 mailbox unavailable",
                    ok_normal["id"]),
        _dead_entry(t, env, json.dumps(ok_high), "expired", "", "too old", None),
        _dead_entry(t, env, json.dumps(no_id), "auth", "", "535 auth failed", None),
        _dead_entry(t, env, json.dumps(bad), "invalid", "to[0]", "to[0]: not an address",
                    bad["id"]),
        _dead_entry(t, env, b"\xff\xfe not utf-8 {", "invalid", "", "not JSON", None),
    ]
    check(b'"job_base64"' in entries[4], entries[4])
    for e in entries:
        r.cmd("LPUSH", harness.dead_key(p), e)

    cp = run("heraldctl", "dead", "list", "--json", env=env)
    check(cp.returncode == 0, cp.stderr)
    v = json.loads(cp.stdout)
    check(len(v) == 5, v)
    check(v[0]["job_base64"] and v[4]["id"] == ok_normal["id"], "newest first, as stored")
    check(v[1]["field"] == "to[0]" and v[1]["reason"] == "invalid", v[1])
    cp = run("heraldctl", "dead", "list", "--limit", "2", "--json", env=env)
    check(len(json.loads(cp.stdout)) == 2, cp.stdout)

    cp = run("heraldctl", "dead", "list", env=env)
    check(cp.returncode == 0, cp.stderr)
    rows = cp.stdout.splitlines()
    check(rows[0].split() == ["AT", "ID", "REASON", "FIELD", "ERROR"], rows[0])
    check(len(rows) == 6, cp.stdout)
    check(ok_high["id"] in cp.stdout, "id read from inside the job")
    check("550 mailbox unavailable" in cp.stdout and "rejected" in cp.stdout, cp.stdout)

    # replay one by its entry id, one by the id inside its job
    cp = run("heraldctl", "dead", "replay", ok_normal["id"], ok_high["id"], env=env)
    check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stdout} {cp.stderr}")
    check(f"replayed {ok_normal['id']} to normal" in cp.stdout, cp.stdout)
    check(f"replayed {ok_high['id']} to high" in cp.stdout, cp.stdout)
    check("replayed 2, not replayed 0" in cp.stdout, cp.stdout)
    normal, high = _lane(r, t, "normal"), _lane(r, t, "high")
    check([j["id"] for j in normal] == [ok_normal["id"]], normal)
    check([j["id"] for j in high] == [ok_high["id"]] and high[0]["subject"] == "expired one", high)
    check(r.cmd("LLEN", harness.dead_key(p)) == 3, "two entries left the dead list")

    # the same id again: gone from dead, exit 1
    cp = run("heraldctl", "dead", "replay", ok_normal["id"], env=env)
    check(cp.returncode == 1, f"exit {cp.returncode}: {cp.stderr}")
    check(ok_normal["id"] in cp.stderr and "no dead-letter entry" in cp.stderr, cp.stderr)
    check(len(_lane(r, t, "normal")) == 1, "nothing pushed twice")

    # the invalid one by id: stays, exit 2, field named
    cp = run("heraldctl", "dead", "replay", bad["id"], env=env)
    check(cp.returncode == 2, f"exit {cp.returncode}: {cp.stderr}")
    check("to[0]" in cp.stderr and bad["id"] in cp.stderr, cp.stderr)
    check(r.cmd("LLEN", harness.dead_key(p)) == 3, "invalid entry kept")

    # --all: the job without id is replayed with a fresh one; the two
    # invalid entries stay
    cp = run("heraldctl", "dead", "replay", "--all", env=env)
    check(cp.returncode == 2, f"exit {cp.returncode}: {cp.stdout} {cp.stderr}")
    check("replayed 1, not replayed 2" in cp.stdout, cp.stdout)
    low = _lane(r, t, "low")
    check(len(low) == 1 and low[0]["id"].startswith("h-") and low[0]["subject"] == "no id", low)
    left = harness.dead(r, p)
    check(len(left) == 2 and {d["reason"] for d in left} == {"invalid"}, left)
    warns = [d for d in _logs(cp.stderr) if d.get("level") == "warn"]
    check(len(warns) == 2, cp.stderr)

    # an empty dead list: nothing to do
    r.cmd("DEL", harness.dead_key(p))
    cp = run("heraldctl", "dead", "replay", "--all", env=env)
    check(cp.returncode == 0 and "replayed 0, not replayed 0" in cp.stdout, cp.stdout)
    cp = run("heraldctl", "dead", "list", env=env)
    check(cp.returncode == 0 and "no dead letters" in cp.stdout, cp.stdout)


def test_enqueued_job_is_what_the_worker_validates(t):
    # The canonical JSON herald-enqueue pushes parses back to the same job:
    # a second enqueue of it is accepted and keeps the id.
    r = t.redis(aof=False)
    env = _env(t, r)
    # send_at a year from now, from the clock (never a fixed date)
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 365 * 86400))
    job = make_job(cc=[{"email": "c@example.test", "name": "Cé"}], headers={"X-Tag": "a"},
                   meta={"k": [1, 2]}, send_at=later, priority="low",
                   attachments=[{"filename": "a.txt", "content_type": "text/plain",
                                 "content_base64": "aGVsbG8="}])
    cp = run("herald-enqueue", json.dumps(job), env=env)
    check(cp.returncode == 0, cp.stderr)
    pushed = r.cmd("LPOP", harness.queue_key(t.prefix, "low"))
    cp = run("herald-enqueue", "-", env=env, input=pushed)
    check(cp.returncode == 0 and cp.stdout.strip() == job["id"], cp.stderr)
    again = r.cmd("LPOP", harness.queue_key(t.prefix, "low"))
    check(json.loads(again) == json.loads(pushed), "canonical form is stable")


def test_enqueue_oversize_jobs(t):
    r = t.redis(aof=False)
    env = _env(t, r)
    big = make_job(text="x" * (10 * 1024 * 1024 + 10))
    small1, small2 = make_job(), make_job()
    path = t.path("big.ndjson")
    with open(path, "w") as f:
        f.write(json.dumps(small1) + "\n" + json.dumps(big) + "\n" + json.dumps(small2) + "\n")
    cp = run("herald-enqueue", "--ndjson", "-f", path, env=env)
    check(cp.returncode == 2, f"exit {cp.returncode}: {cp.stderr[-400:]}")
    check(cp.stdout.split() == [small1["id"], small2["id"]], cp.stdout)
    hits = [d for d in _logs(cp.stderr) if d.get("line") == "2"]
    check(hits, f"line 2 reported: {cp.stderr[-400:]}")
    check(r.cmd("LLEN", harness.queue_key(t.prefix)) == 2, "the two small jobs pushed")
    path1 = t.path("big.json")
    with open(path1, "w") as f:
        json.dump(big, f)
    cp = run("herald-enqueue", "-f", path1, env=env)
    check(cp.returncode == 2 and cp.stdout == "", f"exit {cp.returncode}: {cp.stderr[-400:]}")
    check(r.cmd("LLEN", harness.queue_key(t.prefix)) == 2, "nothing more pushed")
    cp = run("herald-enqueue", "-f", t.path("missing.json"), env=env)
    check(cp.returncode == 1 and "missing.json" in cp.stderr, cp.stderr)


def test_dead_list_and_replay_many(t):
    # More entries than one LRANGE page (500): listing is complete and in
    # order, and --all replays every one, oldest first.
    r = t.redis(aof=False)
    env = _env(t, r)
    jobs = [make_job(subject=f"dead {i}") for i in range(1234)]
    entries = [json.dumps({"error": "550 no", "field": "", "reason": "rejected",
                           "at": "2026-01-01T00:00:00.000Z", "id": j["id"],
                           "job": json.dumps(j)}) for j in jobs]
    r.pipeline([("LPUSH", harness.dead_key(t.prefix), e) for e in entries])
    cp = run("heraldctl", "dead", "list", "--json", env=env)
    check(cp.returncode == 0, cp.stderr)
    listed = [d["id"] for d in json.loads(cp.stdout)]
    check(listed == [j["id"] for j in reversed(jobs)], "all entries, newest first")
    cp = run("heraldctl", "dead", "list", "--limit", "600", "--json", env=env)
    check([d["id"] for d in json.loads(cp.stdout)] == listed[:600], "--limit over a page")
    cp = run("heraldctl", "dead", "replay", "--all", env=env)
    check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr[-300:]}")
    check("replayed 1234, not replayed 0" in cp.stdout, cp.stdout[-200:])
    check(r.cmd("LLEN", harness.dead_key(t.prefix)) == 0, "dead list emptied")
    lane = _lane(r, t)
    # the lane is taken from the right: the oldest dead job comes out first
    check([j["id"] for j in reversed(lane)] == [j["id"] for j in jobs], "FIFO order kept")


# ------------------------------------------------------------------ templates


def _tkey(t):
    return f"{t.prefix}:templates"


def _write(t, name, data):
    path = t.path(name)
    with open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_template_set_show_list_remove_render(t):
    r = t.redis(aof=False)
    env = _env(t, r)

    # set from parts: subject flag, text and html files (html from stdin)
    text_f = _write(t, "receipt.txt", "Hello {{ name }},\nyou paid {{order.total}} EUR.\n")
    html = "<p>Hello {{name}}</p><p>{{{sig}}}</p><style>.a{b:c}}</style>"
    cp = run("heraldctl", "template", "set", "receipt", "--subject",
             "Receipt {{order.id}} for {{name}}", "--text-file", text_f,
             "--html-file", "-", env=env, input=html)
    check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr}")
    check("receipt" in cp.stdout, cp.stdout)
    stored = r.cmd("HGET", _tkey(t), "receipt")
    check(stored is not None, "stored in <prefix>:templates")
    check(b"\n" not in stored.replace(b"\\n", b"") and b": " not in stored, f"compact: {stored!r}")
    check(list(json.loads(stored).items()) ==
          [("subject", "Receipt {{order.id}} for {{name}}"),
           ("text", "Hello {{ name }},\nyou paid {{order.total}} EUR.\n"),
           ("html", html)], stored)

    # set from a whole JSON file; replacing an existing one
    tpl = {"subject": "Reminder: {{what}}", "text": "Do not forget {{what}}."}
    path = _write(t, "reminder.json", json.dumps(tpl))
    for _ in range(2):
        cp = run("heraldctl", "template", "set", "reminder", "--file", path, env=env)
        check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr}")
    cp = run("heraldctl", "template", "set", "a.first-1", f"--file={path}", env=env)
    check(cp.returncode == 0, cp.stderr)
    check(r.cmd("HLEN", _tkey(t)) == 3, "three templates")

    # show
    cp = run("heraldctl", "template", "show", "receipt", "--json", env=env)
    check(cp.returncode == 0, cp.stderr)
    check(cp.stdout_bytes.rstrip(b"\n") == stored, f"--json is the stored form: {cp.stdout!r}")
    cp = run("heraldctl", "template", "show", "receipt", env=env)
    check(cp.returncode == 0, cp.stderr)
    for want in ("template: receipt", "subject: Receipt {{order.id}} for {{name}}",
                 "you paid {{order.total}} EUR.", "{{{sig}}}", "text (", "html ("):
        check(want in cp.stdout, f"{want!r} not in:\n{cp.stdout}")
    # what show --json prints can be set again as is
    again = _write(t, "again.json", run("heraldctl", "template", "show", "reminder", "--json",
                                        env=env).stdout)
    cp = run("heraldctl", "template", "set", "copy", "--file", again, env=env)
    check(cp.returncode == 0, cp.stderr)
    check(r.cmd("HGET", _tkey(t), "copy") == r.cmd("HGET", _tkey(t), "reminder"), "round trip")

    # list
    cp = run("heraldctl", "template", "list", "--json", env=env)
    check(cp.returncode == 0, cp.stderr)
    check(json.loads(cp.stdout) == ["a.first-1", "copy", "receipt", "reminder"], cp.stdout)
    cp = run("heraldctl", "template", "list", env=env)
    check(cp.stdout.split() == ["a.first-1", "copy", "receipt", "reminder"], cp.stdout)

    # render: values, nesting, numbers, escaping in html, raw, text as is
    data = {"name": "Ada <& 'Co'>", "order": {"id": "A-17", "total": 12.5},
            "sig": "<b>Acme</b>"}
    cp = run("heraldctl", "template", "render", "receipt", "--data", json.dumps(data),
             "--json", env=env)
    check(cp.returncode == 0, f"exit {cp.returncode}: {cp.stderr}")
    out = json.loads(cp.stdout)
    check(out["subject"] == "Receipt A-17 for Ada <& 'Co'>", out)
    check(out["text"] == "Hello Ada <& 'Co'>,\nyou paid 12.5 EUR.\n", out)
    check(out["html"] == "<p>Hello Ada &lt;&amp; &#39;Co&#39;&gt;</p><p><b>Acme</b></p>"
          "<style>.a{b:c}}</style>", out)
    cp = run("heraldctl", "template", "render", "receipt", "--data", json.dumps(data), env=env)
    check(cp.returncode == 0, cp.stderr)
    check(cp.stdout.startswith("subject: Receipt A-17 for Ada <& 'Co'>\n"), cp.stdout)
    check("you paid 12.5 EUR." in cp.stdout and "&lt;&amp;" in cp.stdout, cp.stdout)
    cp = run("heraldctl", "template", "render", "reminder", "--data",
             '{"what": 3, "x": [1]}', "--json", env=env)
    check(cp.returncode == 0, cp.stderr)
    check(json.loads(cp.stdout) == {"subject": "Reminder: 3", "text": "Do not forget 3."},
          cp.stdout)

    # remove
    cp = run("heraldctl", "template", "remove", "copy", env=env)
    check(cp.returncode == 0, cp.stderr)
    check(r.cmd("HEXISTS", _tkey(t), "copy") == 0, "removed")
    for args in (("remove", "copy"), ("show", "copy"), ("show", "copy", "--json"),
                 ("render", "copy", "--data", "{}")):
        cp = run("heraldctl", "template", *args, env=env)
        check(cp.returncode == 1, f"{args}: exit {cp.returncode}: {cp.stderr}")
        logs = _logs(cp.stderr)
        check(logs and "no such template: copy" in logs[-1]["msg"], f"{args}: {cp.stderr}")
        check(cp.stdout == "", f"{args}: {cp.stdout!r}")

    for name in ("a.first-1", "receipt", "reminder"):
        check(run("heraldctl", "template", "remove", name, env=env).returncode == 0, name)
    cp = run("heraldctl", "template", "list", env=env)
    check(cp.returncode == 0 and "no templates" in cp.stdout, cp.stdout)
    cp = run("heraldctl", "template", "list", "--json", env=env)
    check(cp.returncode == 0 and json.loads(cp.stdout) == [], cp.stdout)


def test_template_bad_templates(t):
    r = t.redis(aof=False)
    env = _env(t, r)
    html = "x" * 120 + "{{ total "
    cases = [
        ({"subject": "S", "html": html}, "html: unclosed {{ at byte 120"),
        ({"subject": "S", "text": "a {{{raw}}}"},
         "text: {{{ at byte 2: raw {{{ }}} is only allowed in html"),
        ({"subject": "S", "text": "{{a..b}}"}, "text: bad name 'a..b' at byte 0"),
        ({"subject": "S", "html": "{{{a}}"}, "html: {{{ at byte 0 is closed by }}"),
        ({"subject": "Hi\r\nBcc: x@example.test", "text": "x"}, "subject: contains a line break"),
        ({"subject": "S" * 999, "text": "x"}, "subject: is 999 bytes, at most 998"),
        ({"subject": "S", "text": "x" * (1024 * 1024 + 1)}, "text: is 1048577 bytes"),
        ({"text": "x"}, "subject: is required"),
        ({"subject": "S"}, "text: text or html is required"),
        ({"subject": "S", "text": "x", "from": "a@b.test"}, "from: unknown member"),
        ([1], "must be a JSON object"),
    ]
    for i, (tpl, want) in enumerate(cases):
        path = _write(t, f"bad{i}.json", json.dumps(tpl))
        cp = run("heraldctl", "template", "set", "bad", "--file", path, env=env)
        check(cp.returncode == 2, f"{want}: exit {cp.returncode}: {cp.stderr}")
        check(want in cp.stderr, f"{want!r} not in {cp.stderr!r}")
        check(cp.stdout == "", cp.stdout)
    path = _write(t, "broken.json", '{"subject": ')
    cp = run("heraldctl", "template", "set", "bad", "--file", path, env=env)
    check(cp.returncode == 2 and "not JSON" in cp.stderr, cp.stderr)
    # the parts form names the part too
    text_f = _write(t, "t.txt", "Dear {{name}")
    cp = run("heraldctl", "template", "set", "bad", "--subject", "S", "--text-file", text_f,
             env=env)
    check(cp.returncode == 2 and "text: unclosed {{ at byte 5" in cp.stderr, cp.stderr)
    cp = run("heraldctl", "template", "set", "bad", "--subject", "Hi {{{n}}}", "--text-file",
             _write(t, "ok.txt", "x"), env=env)
    check(cp.returncode == 2 and "subject: {{{ at byte 3" in cp.stderr, cp.stderr)
    check(r.cmd("EXISTS", _tkey(t)) == 0, "nothing stored")

    # an invalid template needs no Redis: exit 2 even when it is down
    down = _env(t, None)
    cp = run("heraldctl", "template", "set", "bad", "--file", _write(t, "b.json",
             json.dumps({"subject": "S", "html": "{{"})), env=down)
    check(cp.returncode == 2 and "html: unclosed {{ at byte 0" in cp.stderr, cp.stderr)
    cp = run("heraldctl", "template", "set", "good", "--file", _write(t, "g.json",
             json.dumps({"subject": "S", "text": "x"})), env=down)
    check(cp.returncode == 1 and "127.0.0.1" in cp.stderr, f"Redis down: {cp.stderr}")

    # a value written to the hash by hand that is not a valid template
    r.cmd("HSET", _tkey(t), "handmade", '{"subject": "S", "text": "{{oops"}')
    cp = run("heraldctl", "template", "show", "handmade", env=env)
    check(cp.returncode == 1 and "stored but invalid" in cp.stderr
          and "text: unclosed {{ at byte 0" in cp.stderr, cp.stderr)
    cp = run("heraldctl", "template", "render", "handmade", env=env)
    check(cp.returncode == 1 and "stored but invalid" in cp.stderr, cp.stderr)
    cp = run("heraldctl", "template", "show", "handmade", "--json", env=env)
    check(cp.returncode == 0 and "{{oops" in cp.stdout, "--json shows it as stored")


def test_template_render_errors(t):
    r = t.redis(aof=False)
    env = _env(t, r)
    tpl = {"subject": "Your order {{order.id}} from {{name}}",
           "text": "Total: {{amount}}", "html": "<p>{{order.items}}</p>"}
    cp = run("heraldctl", "template", "set", "order", "--file", "-", env=env,
             input=json.dumps(tpl))
    check(cp.returncode == 0, cp.stderr)
    ok = {"order": {"id": "7", "items": "3"}, "name": "Ada", "amount": 9}
    cases = [
        ({k: v for k, v in ok.items() if k != "amount"}, "data.amount: missing"),
        ({**ok, "order": {"items": "3"}}, "data.order.id: missing"),
        ({**ok, "order": "x"}, "data.order.id: missing (data.order is not an object)"),
        ({**ok, "order": {"id": "7", "items": [1, 2]}}, "data.order.items: is an array"),
        ({**ok, "amount": {"v": 1}}, "data.amount: is an object"),
        # header injection through data into the subject
        ({**ok, "name": "Ada\r\nBcc: victim@example.test"},
         "data.name: subject: contains a line break"),
        ({**ok, "name": "Ada\nX-Evil: 1"}, "data.name: subject: contains a line break"),
        ({**ok, "name": "A\tB"}, "data.name: subject: contains a control character"),
        ({**ok, "name": "N" * 990}, "data.name: subject: longer than 998 bytes"),
    ]
    for data, want in cases:
        cp = run("heraldctl", "template", "render", "order", "--data", json.dumps(data), env=env)
        check(cp.returncode == 2, f"{want}: exit {cp.returncode}: {cp.stderr}")
        check(want in cp.stderr, f"{want!r} not in {cp.stderr!r}")
        check(cp.stdout == "", f"{want}: nothing rendered: {cp.stdout!r}")
    # the same line break is fine in a body
    cp = run("heraldctl", "template", "render", "order", "--json", "--data",
             json.dumps({**ok, "amount": "9\r\nBcc: x"}), env=env)
    check(cp.returncode == 0 and json.loads(cp.stdout)["text"] == "Total: 9\r\nBcc: x",
          cp.stdout)
    for data, want in (("{nope", "--data: not JSON"), ("[1]", "--data: must be a JSON object"),
                       ('"s"', "--data: must be a JSON object")):
        cp = run("heraldctl", "template", "render", "order", "--data", data, env=env)
        check(cp.returncode == 2 and want in cp.stderr, f"{data}: {cp.stderr}")
    cp = run("heraldctl", "template", "render", "order", env=env)
    check(cp.returncode == 2 and "data.order.id: missing" in cp.stderr, "no --data is {}")


def test_template_usage_errors(t):
    env = _env(t, None)  # usage errors never need Redis
    f = _write(t, "f.json", "{}")
    latin1 = _write(t, "latin1.txt", b"caf\xe9")
    nul = _write(t, "nul.txt", b"a\x00b")
    bad = [
        (("template",), "missing subcommand"),
        (("template", "frob"), "frob"),
        (("template", "set"), "missing NAME"),
        (("template", "set", "a b", "--file", f), "NAME: 'a b' is not a template name"),
        (("template", "set", "x" * 65, "--file", f), "is not a template name"),
        (("template", "set", "n", "m", "--file", f), "'m'"),
        (("template", "set", "n"), "--file"),
        (("template", "set", "n", "--file", f, "--subject", "S"), "--file"),
        (("template", "set", "n", "--subject", "S"), "--text-file"),
        (("template", "set", "n", "--text-file", f), "--subject"),
        (("template", "set", "n", "--subject", "S", "--text-file", "-", "--html-file", "-"),
         "--html-file"),
        (("template", "set", "n", "--subject", "S", "--text-file", latin1),
         ("--text-file: ", "latin1.txt is not valid UTF-8")),
        (("template", "set", "n", "--subject", "S", "--html-file", nul),
         ("--html-file: ", "nul.txt contains a NUL byte")),
        (("template", "set", "n", "--file"), "--file needs a value"),
        (("template", "set", "n", "--bogus", "1"), "--bogus"),
        (("template", "show"), "missing NAME"),
        (("template", "show", "a/b"), "not a template name"),
        (("template", "show", "n", "--frob"), "--frob"),
        (("template", "list", "extra"), "extra"),
        (("template", "remove"), "missing NAME"),
        (("template", "remove", "n", "--json"), "--json"),
        (("template", "render", "n", "--data"), "--data needs a value"),
        (("template", "render", "n", "--data", "[]"), "--data"),
    ]
    for args, want in bad:
        cp = run("heraldctl", *args, env=env)
        check(cp.returncode == 2, f"{args}: exit {cp.returncode} (want 2): {cp.stderr}")
        for w in (want if isinstance(want, tuple) else (want,)):
            check(w in cp.stderr, f"{args}: {w!r} not in {cp.stderr!r}")
        check(cp.stdout == "", f"{args}: stdout {cp.stdout!r}")
    # an unreadable file is a runtime failure, named
    cp = run("heraldctl", "template", "set", "n", "--subject", "S", "--text-file",
             t.path("missing.txt"), env=env)
    check(cp.returncode == 1 and "missing.txt" in cp.stderr, cp.stderr)
    cp = run("heraldctl", "template", "set", "n", "--file", t.path("missing.json"), env=env)
    check(cp.returncode == 1 and "missing.json" in cp.stderr, cp.stderr)
    big = _write(t, "big.txt", "x" * (1024 * 1024 + 1))
    cp = run("heraldctl", "template", "set", "n", "--subject", "S", "--text-file", big, env=env)
    check(cp.returncode == 2 and "--text-file" in cp.stderr, cp.stderr)

    for args, want in ((("--help",), "heraldctl template render"),
                       (("template", "--help"), "heraldctl template set"),
                       (("template", "set", "--help"), "--html-file"),
                       (("template", "render", "--help"), "data.amount"),
                       (("template", "show", "--help"), "no such template")):
        cp = run("heraldctl", *args, env=env)
        check(cp.returncode == 0 and want in cp.stdout, f"{args}: {cp.stdout}")
