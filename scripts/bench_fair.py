#!/usr/bin/python3
"""make bench-fair — SPEC §8 fairness under load (issue 10).

Starts redis-server, Postfix's smtp-sink as the platform relay and a slow
organisation SMTP server (tests/integration/tls_smtpd.py, AUTH, answering
each message after 3 s), and one worker (HERALD_CONCURRENCY 32, two
connections per scheme server). Organisation A pushes 20,000 jobs for the
relay and 1,000 for its own slow server (one pipeline, interleaved); then
organisation B pushes one receipt every 100 ms while A's relay jobs drain
(B has sent one receipt before, not counted: its sender's SPF verdict is
known, as on a running platform).
Prints B's enqueue -> SMTP 250 latency (p50, p99, max; enqueue stamped in
meta, acceptance = the record's sent_at) and A's relay drain rate, first
with the default HERALD_FAIR_WINDOW, then first-in first-out
(HERALD_FAIR_WINDOW=0) for comparison. Prints figures; asserts nothing.
BENCH_FAIR_A (20000), BENCH_FAIR_SLOW (1000) change the sizes; BENCH_KEEP=1
keeps the run's directory (logs, stores).
"""
import json, os, signal, sqlite3, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import BIN, RedisConn, finish, free_port, pct, resp, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A_RELAY = int(os.environ.get("BENCH_FAIR_A", "20000"))
A_SLOW = int(os.environ.get("BENCH_FAIR_SLOW", "1000"))
BODY = ("Your child's session starts on Monday; bring a water bottle. " * 30)[:1800]


def job(id, org, frm, stamp=False):
    j = {"id": id, "type": "receipt" if org == "camp-b" else "reminder", "org": org,
         "account": "acct-" + id[-3:], "from": frm, "from_name": org,
         "to": [{"email": "parent-%s@family.example" % id}], "subject": "Reminder " + id,
         "text": BODY}
    if stamp:
        j["meta"] = {"enqueued_at": int(time.time() * 1000)}
    return json.dumps(j)


def one_run(tmp, window, rport, sink_port, slow_port, keyfile):
    prefix, db = "fair%d" % window, os.path.join(tmp, "mc-%d.db" % window)
    env = dict(os.environ, HERALD_REDIS="redis://127.0.0.1:%d/0" % rport,
               HERALD_RELAY="smtp://127.0.0.1:%d" % sink_port, HERALD_PREFIX=prefix,
               HERALD_MC="sqlite://" + db, HERALD_SECRET_KEY_FILE=keyfile,
               HERALD_FAIR_WINDOW=str(window), HERALD_DNS="127.0.0.1:%d" % free_port(),
               HERALD_SHUTDOWN_GRACE_S="5", HERALD_WORKER_ID="fair-w1")
    cp = subprocess.run([os.path.join(BIN, "heraldctl"), "scheme", "add", "--org", "camp-a",
                         "--email", "office@camp-a.example", "--smtp-host", "127.0.0.1",
                         "--smtp-port", str(slow_port), "--username", "orguser",
                         "--password-stdin", "--tls", "none"], env=env, input="pw\n",
                        capture_output=True, text=True)
    if cp.returncode != 0:
        raise RuntimeError("scheme add: " + cp.stderr)
    log = open(os.path.join(tmp, "worker-%d.log" % window), "w")
    w = subprocess.Popen([os.path.join(BIN, "herald-worker")], env=env, stderr=log,
                         stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    r = RedisConn(rport)
    lane = prefix + ":queue:normal"
    # B has sent before, as on any running platform: its sender's SPF
    # verdict is known (one receipt, not counted)
    r.call("LPUSH", lane, job("warm-b", "camp-b", "office@camp-b.example"))
    c = sqlite3.connect(db, timeout=10)
    for _ in range(300):
        try:
            if c.execute("select count(*) from messages where id = 'warm-b'"
                         " and status = 'sent'").fetchone()[0]:
                break
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    # A: one pipeline, a slow-server job every (A_RELAY / A_SLOW + 1)th
    every = max(1, A_RELAY // max(A_SLOW, 1))
    buf, nr, ns, i = bytearray(), 0, 0, 0
    while nr < A_RELAY or ns < A_SLOW:
        if ns < A_SLOW and (i % (every + 1) == every or nr >= A_RELAY):
            buf += resp("LPUSH", lane, job("a-slow-%05d" % ns, "camp-a", "office@camp-a.example"))
            ns += 1
        else:
            buf += resp("LPUSH", lane, job("a-relay-%05d" % nr, "camp-a", "news@camp-a.example"))
            nr += 1
        i += 1
    t_push = time.time()
    r.sock.sendall(bytes(buf))
    for _ in range(A_RELAY + A_SLOW):
        r.read_reply()
    # B: one receipt every 100 ms until A's relay jobs are all sent
    nb, a_done_at, deadline = 0, None, time.time() + 600
    while time.time() < deadline:
        r.call("LPUSH", lane, job("b-%05d" % nb, "camp-b", "office@camp-b.example", True))
        nb += 1
        time.sleep(0.1)
        if nb % 10 == 0:
            try:
                k = c.execute("select count(*) from messages where status = 'sent'"
                              " and id like 'a-relay-%'").fetchone()[0]
            except sqlite3.Error:
                k = 0
            if k >= A_RELAY:
                a_done_at = time.time()
                break
    # B's last receipts out, then stop (A's slow jobs are handed back)
    end = time.time() + 30
    while time.time() < end:
        k = c.execute("select count(*) from messages where status = 'sent'"
                      " and id like 'b-%'").fetchone()[0]
        if k >= nb:
            break
        time.sleep(0.1)
    w.send_signal(signal.SIGTERM)
    w.wait(60)
    r.close()
    rows = c.execute("select m.id, m.sent_at, c.meta_json, m.path from messages m"
                     " join message_content c using (seq) where m.id like 'b-%'"
                     " and m.status = 'sent'").fetchall()
    by_id = sorted((sent - json.loads(meta)["enqueued_at"], id) for id, sent, meta, _ in rows)
    lat = [ms for ms, _ in by_id]
    last_a = c.execute("select max(sent_at) from messages where id like 'a-relay-%'"
                       " and status = 'sent'").fetchone()[0]
    sent_a = c.execute("select count(*) from messages where id like 'a-relay-%'"
                       " and status = 'sent'").fetchone()[0]
    slow = c.execute("select count(*) from messages where id like 'a-slow-%'"
                     " and status = 'sent'").fetchone()[0]
    c.close()
    drain = sent_a / max(last_a / 1000.0 - t_push, 1e-3) if last_a else 0.0
    name = "HERALD_FAIR_WINDOW=%d" % window + (" (first in, first out)" if window == 0 else "")
    print("%-45s B: %d receipts, %d sent; latency p50 %d ms, p99 %d ms, max %d ms"
          % (name, nb, len(lat), pct(lat, 50), pct(lat, 99), max(lat) if lat else -1))
    print("%-45s B's slowest: %s" % ("", ", ".join("%s %d ms" % (id, ms) for ms, id in by_id[-3:])))
    print("%-45s A: %d relay jobs drained at %.0f msg/s; %d of %d slow-server jobs sent meanwhile"
          % ("", sent_a, drain, slow, A_SLOW))


def main():
    tmp = tempfile.mkdtemp(prefix="herald-bench-fair-")
    procs = []
    try:
        rport, sink_port, slow_port = free_port(), free_port(), free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", tmp],
                                      stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["/usr/sbin/smtp-sink", "-u", os.environ.get("USER", "root"),
                                       "127.0.0.1:%d" % sink_port, "1024"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        crt, key = os.path.join(tmp, "srv.pem"), os.path.join(tmp, "srv.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", crt, "-days", "1", "-subj", "/CN=slow.test"], check=True,
                       capture_output=True)
        procs.append(subprocess.Popen(
            ["/usr/bin/python3", os.path.join(ROOT, "tests/integration/tls_smtpd.py"),
             "--port", str(slow_port), "--dir", os.path.join(tmp, "slow"), "--cert", crt,
             "--key", key, "--plain", "--auth", "orguser:pw", "--delay-data", "3"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in (rport, sink_port, slow_port):
            wait_port(p, 20)
        keyfile = os.path.join(tmp, "herald.key")
        with open(keyfile, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(keyfile, 0o600)
        print("herald bench-fair: A pushes %d relay jobs and %d for its own server (3 s a message,"
              " 2 connections); B pushes a receipt every 100 ms; one worker, concurrency 32"
              % (A_RELAY, A_SLOW))
        print("machine: %d cores, %s" % (os.cpu_count(), os.uname().release))
        for window in (20000, 0):
            one_run(tmp, window, rport, sink_port, slow_port, keyfile)
    finally:
        finish(procs, tmp)


if __name__ == "__main__":
    main()
