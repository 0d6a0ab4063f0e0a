#!/usr/bin/python3
"""make bench-api — herald-api's query latencies on a PostgreSQL store of
1,000,000 records (BENCH_API_RECORDS).

1. A private PostgreSQL 15 cluster (scripts/bench.py's PgCluster: unix
   socket only, fsync off) and a redis-server on a free loopback port.
2. The schema is Herald's: `heraldctl mc migrate` creates it; each day's
   partitions are made as io/mc_pg.c makes them (CREATE TABLE ... LIKE
   the parent, ATTACH PARTITION: the parent's indexes follow), loaded with
   COPY before they are attached. The records are what mc_pg.c would have
   written for them: the id registry, the record and content rows, one
   recipient row per distinct lowercased address, subject_words by the
   rule of mc_q_words (common/mc.c); herald_recipients' partitions (a
   period of 8 days each) as mc_pg.c makes them. ~2,000 organisations
   with a skewed (Zipf) share of the traffic, their accounts (skewed too), 1-3
   recipients, mostly sent with some failed/deferred, subjects from a
   vocabulary, created_at over the 30 days ending now (the clock at run
   time). Then ANALYZE.
3. bin/herald-api on a free port, a support token (heraldctl token
   create), and 8 client processes (a minimal HTTP/1.1 reader on kept
   connections: http_get) per query kind: by recipient (to=), an account's inbox, org + status=failed
   + since/until, subject words (q=), one record by id, each after a
   warm-up of its first 1,000 requests (BENCH_API_WARMUP). Prints p50,
   p99, max and requests/s per kind; the client's own cost is shown by
   /healthz (no store work) under the same load.
Targets: p99 <= 50 ms for each list query, <= 10 ms for one record.
"""
import json, os, random, re, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import BIN, PG_BIN, PgCluster, free_port, wait_port, pct, stop_procs  # noqa: E402

RECORDS = int(os.environ.get("BENCH_API_RECORDS", "1000000"))
REQUESTS = int(os.environ.get("BENCH_API_REQUESTS", "4000"))  # per kind
CLIENTS = int(os.environ.get("BENCH_API_CLIENTS", "8"))
WARMUP = int(os.environ.get("BENCH_API_WARMUP", "1000"))  # per kind, not measured
SLOWEST = int(os.environ.get("BENCH_API_SLOWEST", "0"))  # print the N slowest per kind
HOLD = os.environ.get("BENCH_API_HOLD")  # a path: keep the cluster until it exists
NORG = 2000
DAYS = 30
DAY_MS = 86400000
PG_SETTINGS = ["fsync=off", "synchronous_commit=off", "full_page_writes=off",
               "shared_buffers=512MB", "max_connections=100"]

VOCAB = ("receipt invoice payment reminder registration confirmed cancelled "
         "schedule update camp session week summer winter spring autumn "
         "welcome password reset account verify email newsletter event "
         "ticket booking order shipped delivered refund balance due overdue "
         "statement report weekly monthly daily digest alert notice important "
         "action required change policy terms new message from your team "
         "coach parent child activity swim soccer tennis art music drama "
         "lunch menu pickup dropoff bus route field trip permission form "
         "photo gallery survey feedback thank you donation volunteer meeting "
         "agenda minutes calendar holiday closure weather delay".split())
VOCAB += ["café", "Überweisung", "naïve", "Zürich", "résumé", "jalapeño"]
TYPES = ["receipt", "reminder", "registration", "password_reset", "newsletter",
         "invoice", "schedule", "notice", "survey", "welcome", "alert", "digest"]


def words_of(subject):
    """subject_words as mc_pg.c computes it (mc_q_words' rule)."""
    out, cur = [], bytearray()
    for b in subject.encode():
        if (48 <= b <= 57) or (65 <= b <= 90) or (97 <= b <= 122) or b >= 0x80:
            cur.append(b + 32 if 65 <= b <= 90 else b)
        elif cur:
            out.append(bytes(cur))
            cur = bytearray()
    if cur:
        out.append(bytes(cur))
    return b" ".join(w[:2046] for w in out).decode("utf-8", "replace")


def copy_escape(s):
    if s is None:
        return "\\N"
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def zipf_weights(n, s):
    return [1.0 / (i + 1) ** s for i in range(n)]


class Data:
    """The records, generated day by day (deterministic for a seed, times
    from the clock now)."""

    def __init__(self, n, now_ms, seed=9):
        self.rng = random.Random(seed)
        self.n = n
        self.now = now_ms
        self.start = now_ms - DAYS * DAY_MS
        self.orgs = ["org-%04d" % i for i in range(NORG)]
        w = zipf_weights(NORG, 1.05)
        tot = sum(w)
        self.org_cum = []
        acc = 0.0
        for x in w:
            acc += x / tot
            self.org_cum.append(acc)
        # accounts per org: more for the big ones
        self.naccts = [max(3, int(3000 * x / w[0])) for x in w]
        self.paths = [self.rng.choice(["scheme", "spf", "relay"]) for _ in range(NORG)]
        self.vocab_cum = []
        vw = zipf_weights(len(VOCAB), 0.9)
        vt = sum(vw)
        acc = 0.0
        for x in vw:
            acc += x / vt
            self.vocab_cum.append(acc)
        # samples the queries draw from
        self.sample_to, self.sample_inbox, self.sample_org, self.sample_ids = [], [], [], []
        self.sample_q = []

    def pick(self, cum):
        import bisect
        return min(bisect.bisect_left(cum, self.rng.random()), len(cum) - 1)

    def record(self, i, at):
        rng = self.rng
        o = self.pick(self.org_cum)
        org = self.orgs[o]
        na = self.naccts[o]
        a = min(int(rng.paretovariate(1.2)) - 1, na - 1)
        account = "acct-%d-%d" % (o, a)
        rid = "j%08x%012x" % (i, rng.getrandbits(48))
        typ = TYPES[min(int(rng.expovariate(0.4)), len(TYPES) - 1)]
        nw = rng.randint(3, 8)
        words = [VOCAB[self.pick(self.vocab_cum)] for _ in range(nw)]
        if rng.random() < 0.5:
            words.insert(rng.randint(0, len(words)), "#%d" % rng.randint(1, 99999))
        subject = " ".join(words).capitalize()
        # recipients: a family (account) mostly writes to the same few
        fam = "%d-%d" % (o, a)
        nto = 1 if rng.random() < 0.7 else 2
        to = [{"email": "parent%d.%s@family%d.example" % (k, fam, o % 97), "name": "Parent %d" % k}
              for k in range(nto)]
        cc = [{"email": "guardian.%s@mail%d.example" % (fam, o % 13), "name": "Guardian"}] \
            if rng.random() < 0.2 else []
        bcc = [{"email": "archive@%s.example" % org, "name": ""}] if rng.random() < 0.05 else []
        r = rng.random()
        status = "sent" if r < 0.93 else "failed" if r < 0.96 else "deferred" if r < 0.99 else \
            ("queued" if r < 0.995 else "sending")
        if status in ("queued", "sending") and at < self.now - 3600_000:
            status = "sent"
        from_addr = "Notices@%s.example" % org
        attempts = {"sent": 1, "failed": rng.randint(1, 5), "deferred": rng.randint(1, 3),
                    "queued": 0, "sending": 1}[status]
        sent_at = at + rng.randint(200, 5000) if status == "sent" else None
        nxt = at + rng.randint(60_000, 3600_000) if status == "deferred" else None
        err = {"failed": "550 5.1.1 <%s>: Recipient address rejected: User unknown" % to[0]["email"],
               "deferred": "451 4.7.1 Greylisted, please try again later"}.get(status)
        reply = "250 2.0.0 Ok: queued as %X" % rng.getrandbits(40) if status == "sent" else err
        rstat = {"sent": "accepted", "failed": "failed", "deferred": "deferred"}.get(status, "pending")
        rcpts = [{"email": x["email"], "kind": kind, "status": rstat, "reply": reply}
                 for kind, lst in (("to", to), ("cc", cc), ("bcc", bcc)) for x in lst]
        text = ("Hello,\n\n%s.\n\nThis message concerns account %s. " % (subject, account)
                + "Please keep it for your records. " * rng.randint(2, 8) + "\n-- %s\n" % org)
        html = ("<html><body><p>%s</p><p>%s</p></body></html>" % (subject, text.replace("\n", "<br>"))
                if rng.random() < 0.3 else None)
        updated = sent_at or (at + 1000 if status != "queued" else at)
        if rng.random() < 0.02:
            self.sample_ids.append(rid)
            self.sample_to.append(rng.choice(to + cc)["email"].upper() if rng.random() < 0.1
                                  else rng.choice(to + cc)["email"])
            self.sample_inbox.append((org, account))
            self.sample_org.append(org)
            qw = [w for w in words if not w.startswith("#")]
            k = rng.choice(qw)
            q = k[:max(3, len(k) - rng.randint(0, 3))] if rng.random() < 0.3 else k
            if rng.random() < 0.3 and len(qw) > 1:
                q += " " + rng.choice(qw)
            self.sample_q.append(q)
        dumps = lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False)
        emails = []
        for x in to + cc + bcc:
            e = x["email"].lower()
            if e not in emails:
                emails.append(e)
        m = [at, rid, org, status, self.paths[o], "organisation setting" if self.paths[o] == "scheme"
             else "spf pass" if self.paths[o] == "spf" else "no scheme",
             "bounces@sender.example" if self.paths[o] != "scheme" else from_addr.lower(),
             None, attempts, updated, sent_at, nxt, err, reply, dumps(rcpts)]
        c = [at, rid, org, account, typ, from_addr.lower(), words_of(subject), from_addr,
             "%s Office" % org, dumps(to), dumps(cc), dumps(bcc), subject, text, html, "[]",
             None, None, "f"]
        return m, c, emails


def day_name(day):
    return time.strftime("%Y%m%d", time.gmtime(day * 86400))


def load(pg, db, data):
    """The records of each day into that day's partitions, made and
    attached as mc_pg.c's ensure_day does (the partitions' indexes are
    built at the attach); today's and tomorrow's exist already (the
    migrate's open made them): loaded in place. One psql per day."""
    first_day = data.start // DAY_MS
    last_day = data.now // DAY_MS
    per_ms = (data.now - data.start) / data.n
    i = 0
    t0 = time.time()
    fd, path = tempfile.mkstemp(prefix="herald-bench-api-", suffix=".sql")
    os.close(fd)
    existing = set(pg.psql(db, "SELECT relname FROM pg_class WHERE relname ~ '_p[0-9]{8}$'"
                           " AND relkind IN ('r', 'p')").split())
    try:
        for day in range(first_day, last_day + 2):
            dn = day_name(day)
            lo, hi = day * DAY_MS, (day + 1) * DAY_MS
            rows = {"herald_messages": [], "herald_message_content": [],
                    "herald_recipients": [], "herald_message_ids": []}
            while i < data.n:
                at = int(data.start + i * per_ms) + data.rng.randint(0, max(0, int(per_ms) - 1))
                if at >= hi:
                    break
                at = max(at, lo)
                m, c, emails = data.record(i, at)
                rows["herald_messages"].append(
                    "\t".join(copy_escape(None if v is None else str(v)) for v in m))
                rows["herald_message_content"].append(
                    "\t".join(copy_escape(None if v is None else str(v)) for v in c))
                for e in emails:
                    rows["herald_recipients"].append("%s\t%d\t%s" % (copy_escape(e), at, m[1]))
                rows["herald_message_ids"].append("%s\t%d" % (m[1], at))
                i += 1
            with open(path, "w", encoding="utf-8") as f:
                f.write("\\set ON_ERROR_STOP 1\nBEGIN;\n")
                for t in ("herald_messages", "herald_message_content"):
                    part = "%s_p%s" % (t, dn)
                    new = part not in existing
                    if new:
                        f.write("CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
                                " INCLUDING GENERATED)%s;\n"
                                % (part, t, " WITH (fillfactor = 90)" if t == "herald_messages" else ""))
                    if rows[t]:
                        f.write("COPY %s FROM stdin;\n%s\n\\.\n" % (part, "\n".join(rows[t])))
                    if new:
                        f.write("ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%d) TO (%d);\n"
                                % (t, part, lo, hi))
                # herald_recipients: a partition per period of 8 days
                period = day - day % 8
                part = "herald_recipients_p%s" % day_name(period)
                if part not in existing:
                    existing.add(part)
                    f.write("CREATE TABLE %s (LIKE herald_recipients INCLUDING DEFAULTS"
                            " INCLUDING CONSTRAINTS);\n"
                            "ALTER TABLE herald_recipients ATTACH PARTITION %s FOR VALUES"
                            " FROM (%d) TO (%d);\n"
                            % (part, part, period * DAY_MS, (period + 8) * DAY_MS))
                for t in ("herald_message_ids", "herald_recipients"):
                    if rows[t]:
                        f.write("COPY %s FROM stdin;\n%s\n\\.\n" % (t, "\n".join(rows[t])))
                f.write("COMMIT;\n")
            cp = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-h", pg.sock, "-d", db,
                                 "-f", path], capture_output=True, text=True)
            if cp.returncode != 0 or "ERROR" in cp.stderr:
                raise RuntimeError("loading %s: %s" % (dn, cp.stderr[-1000:]))
            if day % 5 == 0 or i == data.n:
                print("  loaded %d of %d records (%.0f s)" % (i, data.n, time.time() - t0), flush=True)
    finally:
        os.remove(path)
    pg.psql(db, "VACUUM ANALYZE")


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fl = f.read().rsplit(")", 1)[1].split()
    return (int(fl[11]) + int(fl[12])) / os.sysconf("SC_CLK_TCK")


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def http_get(sock, req, buf):
    """One request on a kept connection: (status, body, rest of buf).
    A minimal HTTP/1.1 reader (Content-Length or chunked), so that the
    client's own cost stays far below the server's: http.client parses
    each response's headers with the email package (~0.3 ms a request,
    under the GIL of one process)."""
    sock.sendall(req)
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    hdr = {}
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        hdr[k.strip().lower()] = v.strip()
    if hdr.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                buf += sock.recv(65536)
            size, buf = buf.split(b"\r\n", 1)
            n = int(size.split(b";")[0], 16)
            while len(buf) < n + 2:
                buf += sock.recv(65536)
            body += buf[:n]
            buf = buf[n + 2:]
            if n == 0:
                break
        return status, body, buf
    n = int(hdr.get(b"content-length", b"0"))
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return status, buf[:n], buf[n:]


def run_kind(port, token, paths, clients):
    """`clients` processes (no shared GIL), each on a kept connection,
    each taking every clients-th path; latencies, wall time, errors."""
    import socket
    t0 = time.time()
    kids = []
    for c in range(clients):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            out = {"lat": [], "errors": []}
            try:
                sock = socket.create_connection(("127.0.0.1", port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = b""
                for p in paths[c::clients]:
                    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s"
                           "\r\n\r\n" % (p, token)).encode()
                    t = time.perf_counter()
                    st, body, buf = http_get(sock, req, buf)
                    out["lat"].append((time.perf_counter() - t, p))
                    if st != 200:
                        out["errors"].append((st, p, body[:200].decode("utf-8", "replace")))
                sock.close()
            except Exception as ex:  # reported by the parent
                out["errors"].append((0, "", repr(ex)))
            with os.fdopen(w, "w") as f:
                json.dump(out, f)
            os._exit(0)
        os.close(w)
        kids.append((pid, r))
    lat, errors, slow = [], [], []
    for pid, r in kids:
        with os.fdopen(r) as f:
            got = json.load(f)
        os.waitpid(pid, 0)
        lat.extend(dt for dt, _ in got["lat"])
        slow.extend(got["lat"])
        errors.extend(got["errors"])
    wall = time.time() - t0
    run_kind.slowest = sorted(slow, reverse=True)[:SLOWEST]
    return lat, wall, errors


def client_cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def drive(pg, url, data, now, tmp, procs):
    """redis-server, a support token, herald-api on `url`; the queries."""
    from urllib.parse import quote
    rport, aport = free_port(), free_port()
    procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", tmp],
                                  stdout=subprocess.DEVNULL))
    wait_port(rport)
    env = dict(os.environ, HERALD_REDIS="redis://127.0.0.1:%d/0" % rport,
               HERALD_PREFIX="benchapi", HERALD_MC=url,
               HERALD_API_LISTEN="127.0.0.1:%d" % aport, HERALD_LOG_LEVEL="warn")
    out = subprocess.run([os.path.join(BIN, "heraldctl"), "token", "create", "--name", "bench",
                          "--role", "support"], env=env, check=True, capture_output=True,
                         text=True).stdout
    token = re.search(r"hrld_[A-Za-z0-9_-]+", out).group(0)
    log = open(os.path.join(tmp, "api.log"), "w")
    api = subprocess.Popen([os.path.join(BIN, "herald-api")], env=env, stdout=log, stderr=log)
    procs.append(api)
    wait_port(aport)

    rng = random.Random(5)
    n = REQUESTS

    def draw(v):
        return [rng.choice(v) for _ in range(n)]

    kinds = [
        ("healthz (client floor)", ["/healthz"] * n),
        ("to=", ["/v1/messages?to=" + quote(t) for t in draw(data.sample_to)]),
        ("account inbox", ["/v1/orgs/%s/accounts/%s/messages" % (quote(o), quote(a))
                           for o, a in draw(data.sample_inbox)]),
        ("org+failed+range", []),
        ("q=", ["/v1/messages?q=" + quote(q) for q in draw(data.sample_q)]),
        ("one record", ["/v1/messages/" + quote(i) for i in draw(data.sample_ids)]),
    ]
    for o in draw(data.sample_org):
        d = rng.choice([1, 3, 7, 14, 30])
        end = now - rng.randint(0, DAYS - d) * DAY_MS
        kinds[3][1].append("/v1/messages?org=%s&status=failed&since=%s&until=%s"
                           % (quote(o), rfc3339(end - d * DAY_MS), rfc3339(end)))
    # warm-up: the first 1,000 requests of each kind, not measured. What
    # is measured is a server that has been running: each of herald-api's
    # 4 store connections prepares a statement per day the first time it
    # reads that day (4 x 30 days for the gets alone), and those first
    # uses are a start's cost (one record's p99 was 13.9 ms with a
    # warm-up of 200, 6.1 ms after 4,000 more; docs/mc-postgres.md).
    for name, paths in kinds:
        run_kind(aport, token, paths[:WARMUP], CLIENTS)
    print("%d clients (processes, kept connections), %d requests per kind; ms:" % (CLIENTS, n))
    print("  %-24s %7s %7s %7s %7s %8s  %s" % ("query", "p50", "p99", "max", "req/s", "target",
                                               "CPU ms/request: postgres, herald-api, client"))
    for name, paths in kinds:
        c0 = (pg.cpu(), proc_cpu(api.pid), client_cpu())
        lat, wall, errors = run_kind(aport, token, paths, CLIENTS)
        c1 = (pg.cpu(), proc_cpu(api.pid), client_cpu())
        cpu = ", ".join("%.2f" % ((b - a) * 1000 / len(lat)) for a, b in zip(c0, c1))
        target = "" if name.startswith("healthz") else \
            "p99<=10" if name == "one record" else "p99<=50"
        ok = ""
        if target:
            lim = 10 if name == "one record" else 50
            ok = " ok" if pct(lat, 99) * 1000 <= lim else " MISSED"
        print("  %-24s %7.2f %7.2f %7.2f %7.0f %8s%-7s %s" % (
            name, pct(lat, 50) * 1000, pct(lat, 99) * 1000, max(lat) * 1000, len(lat) / wall,
            target, ok, cpu))
        if errors:
            print("    %d errors, e.g. %r" % (len(errors), errors[0]))
        for dt, p in run_kind.slowest:
            print("    %8.2f ms  %s" % (dt * 1000, p))
    if HOLD:
        print("BENCH_API_HOLD: the store is %s until %s exists" % (pg.url("benchapi"), HOLD),
              flush=True)
        while not os.path.exists(HOLD):
            time.sleep(1)


def main():
    from urllib.parse import quote
    now = int(time.time() * 1000)
    pg = PgCluster(PG_SETTINGS).start()
    procs = []
    tmp = tempfile.mkdtemp(prefix="herald-bench-api-")
    try:
        db = "benchapi"
        pg.psql("postgres", "CREATE DATABASE %s" % db)
        url = pg.url(db)
        subprocess.run([os.path.join(BIN, "heraldctl"), "--mc", url, "mc", "migrate"], check=True,
                       stdout=subprocess.DEVNULL)
        print("herald bench-api: %d records over %d days (ending now), PostgreSQL 15 (%s)"
              % (RECORDS, DAYS, ", ".join(PG_SETTINGS)))
        print("machine: %d cores, %s" % (os.cpu_count(), os.uname().release))
        data = Data(RECORDS, now)
        t0 = time.time()
        load(pg, db, data)
        print("  load + VACUUM ANALYZE: %.0f s; database %s" % (
            time.time() - t0, pg.psql(db, "SELECT pg_size_pretty(pg_database_size(current_database()))")))

        drive(pg, url, data, now, tmp, procs)
    finally:
        stop_procs(procs)
        pg.stop()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
