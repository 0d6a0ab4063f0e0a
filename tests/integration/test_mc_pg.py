"""The Message Center on PostgreSQL (SPEC §6.1-6.3; io/mc_pg.c).

Every test gets a new database on the test process's private PostgreSQL
15 cluster (harness.Postgres: one cluster per run, socket only, as the
postgres user). The unit tests of the store run there too (bin/test_mc
with $HERALD_TEST_PG), then the worker, heraldctl and the queries against
the same records in SQLite.
"""

import csv
import io
import json
import os
import re
import signal
import subprocess
import threading
import time

import harness
from harness import check, make_job, mc_show, push, run, wait_until

# These tests make their own PostgreSQL databases and compare them with
# SQLite stores from env(): they run in the suite's SQLite pass only.
HERALD_STORES = ("sqlite",)


def _logs(text):
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _populate(env, url, records):
    cp = run("test_libherald", "populate-mc", url, env=env,
             input="".join(json.dumps(x) + "\n" for x in records))
    check(cp.returncode == 0, f"populate-mc {url}: exit {cp.returncode}: {cp.stderr}")
    return cp.stdout.split()


def _db(url):
    return url.split("///", 1)[1].split("?", 1)[0]


def _listing(env, *args):
    cp = run("heraldctl", "mc", "list", "--json", *args, env=env)
    check(cp.returncode == 0, f"mc list {args}: exit {cp.returncode}: {cp.stderr}")
    nxt = [d["next_cursor"] for d in _logs(cp.stderr) if "next_cursor" in d]
    return [r["id"] for r in json.loads(cp.stdout)], (nxt[0] if nxt else None)


def _all_ids(env, *args, limit=500):
    """Every page of a listing, following the cursor."""
    ids, cursor, pages = [], None, 0
    while True:
        extra = ["--cursor", cursor] if cursor else []
        page, cursor = _listing(env, "--limit", str(limit), *args, *extra)
        ids += page
        pages += 1
        check(pages < 1000, "paging does not end")
        if cursor is None:
            return ids


# ------------------------------------------------------------------ the unit suite


@harness.timeout(300)
def test_unit_suite_on_postgres(t):
    # bin/test_mc's store tests, the second time on PostgreSQL
    url = t.postgres()
    cp = run("test_mc", env={"HERALD_TEST_PG": url}, timeout=280)
    tail = (cp.stdout + cp.stderr)[-3000:]
    check("on PostgreSQL" in cp.stderr, f"the PostgreSQL pass did not run: {tail}")
    check(cp.returncode == 0 and " 0 failed" in cp.stdout, f"test_mc: {tail}")


# ------------------------------------------------------------------ schema


def test_migrate_empty_database_and_again(t):
    url = t.postgres()
    pg = harness.postgres()
    env = t.env(None, None, HERALD_MC=url)
    cp = run("heraldctl", "mc", "migrate", env=env)
    check(cp.returncode == 0, cp.stderr)
    check("created the Message Center schema, version 3" in cp.stdout, cp.stdout)
    check(pg.sql(_db(url), "SELECT version FROM herald_schema").strip() == "3", "version")
    tables = pg.sql(_db(url), "SELECT string_agg(tablename, ' ' ORDER BY tablename)"
                    " FROM pg_tables WHERE tablename NOT LIKE '%\\_p2%'").split()
    for want in ("herald_message_content", "herald_message_ids", "herald_recipients",
                 "herald_messages", "herald_schema"):
        check(want in tables, f"{want} not in {tables}")
    before = pg.sql(_db(url), "SELECT count(*) FROM pg_class")
    cp = run("heraldctl", "mc", "migrate", env=env)
    check(cp.returncode == 0 and "up to date, version 3" in cp.stdout, cp.stdout + cp.stderr)
    check(pg.sql(_db(url), "SELECT count(*) FROM pg_class") == before, "migrate again changed")
    # SQLite: opening migrates; it says the version
    cp = run("heraldctl", "mc", "migrate", env=t.env(None, None))
    check(cp.returncode == 0 and "version 3" in cp.stdout, cp.stdout + cp.stderr)
    # a store newer than this program is refused
    pg.sql(_db(url), "UPDATE herald_schema SET version = 7")
    cp = run("heraldctl", "mc", "migrate", env=env)
    check(cp.returncode == 1 and "newer" in cp.stderr, cp.stdout + cp.stderr)


def test_migrate_many_at_once(t):
    # eight processes open a new database together: one creates the
    # schema, the others wait for it and find it
    url = t.postgres()
    env = t.env(None, None, HERALD_MC=url)
    exe = harness.tool_path("heraldctl")
    procs = [subprocess.Popen([exe, "mc", "migrate"], env=harness._base_env(env),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              preexec_fn=harness._pdeathsig) for _ in range(8)]
    outs = []
    for p in procs:
        t.register(p)
        out, err = p.communicate(timeout=60)
        t.san_texts.append(("heraldctl mc migrate", err.decode(errors="replace")))
        check(p.returncode == 0, f"exit {p.returncode}: {err!r}")
        outs.append(out.decode())
    created = [o for o in outs if "created" in o]
    check(len(created) == 1, outs)
    pg = harness.postgres()
    check(pg.sql(_db(url), "SELECT count(*) FROM herald_schema").strip() == "1", "one row")


def test_store_urls(t):
    url = t.postgres()
    # postgres:// is the same store
    env = t.env(None, None, HERALD_MC=url.replace("postgresql://", "postgres://", 1))
    cp = run("heraldctl", "mc", "list", env=env)
    check(cp.returncode == 0 and "no messages" in cp.stdout, cp.stdout + cp.stderr)
    # a server that is not there: exit 1, said plainly
    env = t.env(None, None, HERALD_MC=f"postgresql:///nodb?host={t.path('nowhere')}")
    cp = run("heraldctl", "mc", "list", env=env)
    check(cp.returncode == 1 and "cannot connect" in cp.stderr, cp.stderr)
    # a password: hidden by --print-config; never on the command line, never
    # as a password= parameter (which --print-config would show)
    env = t.env(None, None, HERALD_MC="postgresql://herald:s3cret@db.example/mc")
    cp = run("heraldctl", "--print-config", env=env)
    check(cp.returncode == 0 and "s3cret" not in cp.stdout
          and "HERALD_MC=postgresql://herald:***@db.example/mc" in cp.stdout, cp.stdout)
    cp = run("heraldctl", "--mc", "postgresql://herald:s3cret@db.example/mc", "mc", "list",
             env=t.env(None, None))
    check(cp.returncode == 2 and "command line" in cp.stderr, cp.stderr)
    env = t.env(None, None, HERALD_MC="postgresql://db.example/mc?password=s3cret")
    cp = run("heraldctl", "mc", "list", env=env)
    check(cp.returncode == 2 and "password=" in cp.stderr, cp.stderr)


# ------------------------------------------------------------------ the worker


def test_worker_delivers_on_postgres(t):
    url = t.postgres()
    r, s = t.redis(), t.smtp()
    env = t.env(r, s, HERALD_MC=url)
    w = t.worker(env)
    jobs = [make_job(subject=f"Receipt R-{i} for Ana", to=[f"u{i}@example.test"],
                     cc=[{"email": "Office@Example.test", "name": "Office"}])
            for i in range(20)]
    for j in jobs:
        push(r, t.prefix, j)
    s.wait_count(20, timeout=30)

    def all_sent():
        ids, _ = _listing(env, "--status", "sent", "--limit", "500")
        return len(ids) == 20

    wait_until(all_sent, 30, "20 records sent", interval=0.2)
    rec = mc_show(env, jobs[3]["id"])
    check(rec["status"] == "sent" and rec["attempts"] == 1 and rec["path"] == "relay", rec)
    check(rec["subject"] == "Receipt R-3 for Ana" and rec["sent_at"], rec)
    check(len(rec["recipients"]) == 2
          and all(x["status"] == "accepted" for x in rec["recipients"]), rec)
    cp = run("heraldctl", "mc", "show", jobs[3]["id"], env=env)
    check(cp.returncode == 0 and "Receipt R-3 for Ana" in cp.stdout, cp.stdout)
    ids, _ = _listing(env, "--to", "OFFICE@example.test", "--limit", "500")
    check(sorted(ids) == sorted(j["id"] for j in jobs), ids)
    ids, _ = _listing(env, "--q", "rece r-1")
    check(sorted(ids) == sorted(jobs[i]["id"] for i in (1, 10, 11, 12, 13, 14, 15, 16, 17,
                                                           18, 19)), ids)
    check(w.stop() == 0, w.stderr()[-2000:])


def _start_worker(t, env, cwd):
    """A worker in its own working directory (Worker.start uses the Case's)."""
    os.makedirs(cwd, exist_ok=True)
    w = harness.Worker()
    w.log_path = os.path.join(cwd, "worker.log")
    fh = open(w.log_path, "ab")
    try:
        w.proc = harness._spawn([harness.tool_path("herald-worker")],
                                env=harness._base_env(env), stdout=fh, stderr=fh, cwd=cwd)
    finally:
        fh.close()
    t.san_files.append(w.log_path)
    return w


@harness.timeout(300)
def test_two_workers_2000_jobs_one_store(t):
    # two workers, different HERALD_WORKER_IDs and working directories, one
    # PostgreSQL store: 2,000 jobs delivered, every record there once
    url = t.postgres()
    r, s = t.redis(), t.smtp()
    base = t.env(r, s, HERALD_MC=url, HERALD_CONCURRENCY="16")
    w1 = _start_worker(t, {**base, "HERALD_WORKER_ID": "pg-w1"}, t.path("w1"))
    w2 = _start_worker(t, {**base, "HERALD_WORKER_ID": "pg-w2"}, t.path("w2"))
    jobs = [make_job(id=f"two-{i:04d}", subject=f"Notice {i}") for i in range(2000)]
    cmds = [("LPUSH", harness.queue_key(t.prefix), json.dumps(j)) for j in jobs]
    r.pipeline(cmds)
    s.wait_count(2000, timeout=240)
    pg = harness.postgres()
    db = _db(url)

    def recorded():
        return pg.sql(db, "SELECT count(*) FROM herald_messages WHERE status = 'sent'").strip()

    wait_until(lambda: recorded() == "2000", 60, "2000 records sent", interval=0.5)
    counts = pg.sql(db, "SELECT count(*), count(DISTINCT id) FROM herald_messages;"
                    " SELECT count(*) FROM herald_message_ids;"
                    " SELECT count(*) FROM herald_message_content").split()
    check(counts == ["2000|2000", "2000", "2000"], counts)
    ids = _all_ids(base)
    check(len(ids) == 2000 and sorted(ids) == [j["id"] for j in jobs],
          f"{len(ids)} listed, {len(set(ids))} distinct")
    by = pg.sql(db, "SELECT count(DISTINCT sender IS NULL) FROM herald_messages")
    check(by.strip() == "1", by)
    delivered = s.ids()
    check(sorted(set(delivered)) == [j["id"] for j in jobs], "every job delivered")
    n1, n2 = ([d for d in w.logs() if d.get("msg") == "delivered"] for w in (w1, w2))
    check(len(n1) + len(n2) == 2000 and n1 and n2,
          f"deliveries by worker: {len(n1)} + {len(n2)}")
    # herald-api on the same store serves every one of them
    import test_api
    api_base, api_proc = test_api.api(t, base)
    tok = test_api.token(base, "pg-support", "support")
    served, cursor = [], None
    while True:
        q = "/v1/messages?limit=500" + (f"&cursor={cursor}" if cursor else "")
        st, page = test_api.jcall(api_base, q, tok)
        check(st == 200, f"{q}: {st} {page}")
        served += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    check(sorted(served) == [j["id"] for j in jobs],
          f"herald-api served {len(served)}, {len(set(served))} distinct")
    st, one = test_api.jcall(api_base, "/v1/messages/two-1234", tok)
    check(st == 200 and one["status"] == "sent" and one["subject"] == "Notice 1234", one)
    check(api_proc.alive(), "herald-api died")
    for w in (w1, w2):
        check(w.stop() == 0, w.stderr()[-2000:])


# ------------------------------------------------------------------ import


def _records(n, now=None):
    now = now or time.time()
    recs = []
    for i in range(n):
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 86400 * (i % 9) - i)) + "Z"
        job = make_job(id=f"imp-{i:03d}", org=["acme", "globex"][i % 2],
                       account=f"a{i % 5}", type=["receipt", "reminder", "notice"][i % 3],
                       subject=["Receipt R-%d for Ana" % i, "Réunion café Ünïcode",
                                "Reminder: form due", "=SUM(A1) oops"][i % 4],
                       to=[f"p{i % 7}@example.test"],
                       **{"from": ["Office@Pine.test", "x@acme.test"][i % 4 == 0]})
        if i % 3 == 0:
            job["cc"] = [{"email": "Shared@Example.test", "name": "Shared"}]
        if i % 5 == 0:
            job["bcc"] = ["audit@example.test"]
        if i % 6 == 0:
            job["meta"] = {"order": i}
        rec = {"job": job, "created_at": at}
        st = ["sent", "sent", "failed", "deferred", "queued", "sending"][i % 6]
        rec.update(status=st, path=["relay", "spf", "scheme"][i % 3], attempts=i % 3)
        if st == "failed":
            rec["last_error"] = "550 no such user"
        recs.append(rec)
    return recs


@harness.timeout(180)
def test_import_from_sqlite_twice(t):
    url = t.postgres()
    sqlite_env = t.env(None, None)
    recs = _records(120)
    _populate(sqlite_env, sqlite_env["HERALD_MC"], recs)
    env = t.env(None, None, HERALD_MC=url)
    src = sqlite_env["HERALD_MC"]
    cp = run("heraldctl", "mc", "import", "--from", src, env=env)
    check(cp.returncode == 0 and "copied 120 records, skipped 0" in cp.stdout,
          cp.stdout + cp.stderr)
    cp = run("heraldctl", "mc", "import", "--from", src, env=env)
    check(cp.returncode == 0 and "copied 0 records, skipped 120" in cp.stdout,
          cp.stdout + cp.stderr)
    pg = harness.postgres()
    counts = pg.sql(_db(url), "SELECT count(*) FROM herald_messages;"
                    " SELECT count(*) FROM herald_message_ids").split()
    check(counts == ["120", "120"], counts)
    # every record as it was, field by field
    for store_env in (sqlite_env, env):
        cp = run("heraldctl", "mc", "list", "--json", "--limit", "500", env=store_env)
        check(cp.returncode == 0, cp.stderr)
        store_env["_records"] = json.loads(cp.stdout)
    check(sqlite_env["_records"] == env["_records"], "the records differ after import")
    # one more in SQLite: a third run copies just that one
    _populate(sqlite_env, src, [{"job": make_job(id="imp-new"), "status": "sent"}])
    cp = run("heraldctl", "mc", "import", "--from", src, env=env)
    check("copied 1 record, skipped 120" in cp.stdout, cp.stdout + cp.stderr)
    # bad input
    cp = run("heraldctl", "mc", "import", env=env)
    check(cp.returncode == 2 and "--from" in cp.stderr, cp.stderr)
    cp = run("heraldctl", "mc", "import", "--from", url, env=env)
    check(cp.returncode == 2 and "configured store" in cp.stderr, cp.stderr)
    cp = run("heraldctl", "mc", "import", "--from", "sqlite:///" + t.path("none", "x.db"),
             env=dict(env, HERALD_MC=url))
    check(cp.returncode in (0, 1), cp.stderr)  # an empty new SQLite file imports nothing


# ------------------------------------------------------------------ the same answers


@harness.timeout(180)
def test_list_filters_and_pages_same_as_sqlite(t):
    url = t.postgres()
    sqlite_env = t.env(None, None)
    env = t.env(None, None, HERALD_MC=url)
    recs = _records(120)
    _populate(sqlite_env, sqlite_env["HERALD_MC"], recs)
    _populate(env, url, recs)
    now = time.time()
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 86400 * 4))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 86400 * 1))
    queries = [
        (), ("--org", "acme"), ("--org", "globex", "--account", "a3"),
        ("--status", "sent"), ("--status", "failed"), ("--status", "queued", "--org", "acme"),
        ("--to", "p3@EXAMPLE.test"), ("--to", "shared@example.test", "--org", "globex"),
        ("--to", "audit@example.test"), ("--type", "reminder"),
        ("--type", "receipt", "--org", "acme"), ("--path", "spf"),
        ("--path", "scheme", "--org", "globex"), ("--from", "X@ACME.test"),
        ("--q", "rec r"), ("--q", "RECEIPT r-1"), ("--q", "café Ünï"), ("--q", "café ünï"),
        ("--q", "eceipt"), ("--q", "sum a1", "--status", "sent"), ("--q", "remind FORM"),
        ("--since", since), ("--until", until), ("--since", since, "--until", until),
        ("--since", since, "--org", "acme", "--to", "shared@example.test"),
    ]
    for q in queries:
        a = _all_ids(sqlite_env, *q, limit=13)
        b = _all_ids(env, *q, limit=13)
        check(a == b, f"{q}: sqlite {a} != postgresql {b}")
        c = _all_ids(env, *q)
        check(c == a, f"{q}: pages of 13 and of 500 differ")
    # CSV: the same bytes
    for q in ((), ("--org", "globex", "--status", "sent")):
        out = []
        for e in (sqlite_env, env):
            cp = run("heraldctl", "mc", "list", "--csv", "--limit", "500", *q, env=e)
            check(cp.returncode == 0, cp.stderr)
            out.append(cp.stdout_bytes)
        check(out[0] == out[1], f"csv {q} differs")
        rows = list(csv.reader(io.StringIO(out[1].decode(), newline="")))
        check(len(rows) > 1, rows[:2])
    # the same record by id
    for i in (0, 7, 119):
        check(mc_show(sqlite_env, f"imp-{i:03d}") == mc_show(env, f"imp-{i:03d}"), i)


@harness.timeout(180)
def test_purge_drops_partitions(t):
    # retention on PostgreSQL: whole old days dropped as partitions, the
    # straddling day's rows deleted, bodies cleared: the counts SQLite gives
    url = t.postgres()
    sqlite_env = t.env(None, None, HERALD_MC_RETENTION_DAYS="10", HERALD_MC_BODY_DAYS="3")
    env = t.env(None, None, HERALD_MC=url, HERALD_MC_RETENTION_DAYS="10",
                HERALD_MC_BODY_DAYS="3")
    now = time.time()
    recs = []
    for d in range(16):  # 16 days, three records a day, one every 8 hours
        for h in range(3):
            at = now - d * 86400 - h * 8 * 3600 - 60
            recs.append({"job": make_job(id=f"ret-{d:02d}-{h}", text=f"body {d}"),
                         "created_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + "Z",
                         "status": "sent"})
    _populate(sqlite_env, sqlite_env["HERALD_MC"], recs)
    _populate(env, url, recs)
    pg = harness.postgres()
    db = _db(url)
    parts = int(pg.sql(db, "SELECT count(*) FROM pg_inherits WHERE inhparent ="
                       " 'herald_messages'::regclass"))
    check(parts >= 16, parts)
    outs = []
    for e in (sqlite_env, env):
        dry = run("heraldctl", "mc", "purge", "--dry-run", env=e)
        real = run("heraldctl", "mc", "purge", env=e)
        again = run("heraldctl", "mc", "purge", env=e)
        check(dry.returncode == real.returncode == again.returncode == 0,
              dry.stderr + real.stderr + again.stderr)
        outs.append((dry.stdout, real.stdout, again.stdout))
    check(outs[0] == outs[1], f"sqlite {outs[0]} != postgresql {outs[1]}")
    m = re.search(r"removed (\d+) records.*cleared the body of (\d+)", outs[1][1])
    check(m and int(m.group(1)) > 0 and int(m.group(2)) > 0, outs[1][1])
    check("removed 0 records" in outs[1][2] and "body of 0" in outs[1][2], outs[1][2])
    left = int(pg.sql(db, "SELECT count(*) FROM pg_inherits WHERE inhparent ="
                      " 'herald_messages'::regclass"))
    check(left < parts - 4, f"{parts} partitions, {left} left")
    check(pg.sql(db, "SELECT count(*) FROM herald_message_ids").strip()
          == pg.sql(db, "SELECT count(*) FROM herald_messages").strip(), "registry follows")
    check(_all_ids(sqlite_env) == _all_ids(env), "the same records are left")
    check(mc_show(sqlite_env, "ret-05-0") == mc_show(env, "ret-05-0"), "bodies cleared alike")
