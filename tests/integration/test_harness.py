"""Tests of the harness itself: Redis, the recording SMTP server, the runner's
bookkeeping. They need no Herald binary."""

import os
import smtplib
import socket
import threading
import time

import harness
from harness import check


def test_redis_commands_and_types(t):
    r = t.redis()
    check(r.cmd("PING") == b"PONG", "PING")
    check(r.cmd("SET", "k", "v\r\n\x00é") == b"OK", "SET")
    check(r.cmd("GET", "k") == "v\r\n\x00é".encode(), "GET round-trips binary")
    check(r.cmd("GET", "missing") is None, "nil bulk is None")
    check(r.cmd("LPUSH", "l", "a", "b", 3) == 3, "LPUSH returns an int")
    check(r.cmd("LRANGE", "l", 0, -1) == [b"3", b"b", b"a"], "LRANGE list")
    check(r.cmd("BLPOP", "nothing", "0.05") is None, "nil array is None")
    r.cmd("HSET", "h", "f", "1")
    check(r.cmd("HGETALL", "h") == [b"f", b"1"], "HGETALL")
    try:
        r.cmd("LPUSH", "k", "x")
    except harness.RedisError as e:
        check("WRONGTYPE" in str(e), f"error text: {e}")
    else:
        raise AssertionError("error reply did not raise")
    replies = r.pipeline([("RPUSH", "p", str(i)) for i in range(2500)])
    check(replies[-1] == 2500, f"pipeline: {replies[-1]}")
    check(r.cmd("LLEN", "p") == 2500, "pipeline pushed everything")
    check(r.url == f"redis://127.0.0.1:{r.port}/0", r.url)


def test_redis_kill_restart_keeps_aof_data(t):
    r = t.redis()
    pid = r.pid
    r.pipeline([("LPUSH", "q", f"job{i}") for i in range(100)])
    r.kill()
    check(not r.alive(), "redis still alive after kill")
    try:
        os.kill(pid, 0)
        raise AssertionError("pid still exists")
    except ProcessLookupError:
        pass
    check(r.dir.startswith(t.dir), "redis dir inside the test dir")
    r.restart()
    check(r.pid != pid, "restart made a new process")
    check(r.cmd("LLEN", "q") == 100, "AOF (appendfsync always) kept every push")
    # the client reconnects by itself after a restart
    r.kill()
    r.restart()
    check(r.cmd("LLEN", "q") == 100, "second restart")
    r.stop()
    check(not r.alive(), "stopped")


def test_redis_without_aof_loses_data(t):
    r = t.redis(aof=False)
    r.cmd("SET", "k", "v")
    r.kill()
    r.restart()
    check(r.cmd("GET", "k") is None, "no persistence when aof=False")


def _send(port, mail_from, rcpts, body):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo("client.test")
        return c.sendmail(mail_from, rcpts, body)


def test_smtp_records_messages(t):
    s = t.smtp()
    body = (b"From: a@x.test\r\nTo: b@y.test\r\nSubject: hello\r\nX-Herald-Id: id-1\r\n\r\n"
            b".leading dot\r\nbody\r\n")
    _send(s.port, "a@x.test", ["b@y.test", "c@y.test"], body)
    msgs = s.wait_count(1, 5)
    env, raw = msgs[0]
    check(env["mail_from"] == "a@x.test", env)
    check(env["rcpt_tos"] == ["b@y.test", "c@y.test"], env)
    check(env["peer"][0] == "127.0.0.1", env)
    check(env["n"] == 1, env)
    check(b".leading dot\r\n" in raw, "dot-unstuffed body kept")
    m = harness.parse_message(raw)
    check(m["Subject"] == "hello", m["Subject"])
    check(s.ids() == ["id-1"], s.ids())
    kinds = [e["event"] for e in s.events()]
    check("connect" in kinds and "accepted" in kinds, kinds)


def test_smtp_reject_and_tempfail_options(t):
    s = t.smtp(reject_rcpt=r"^bad", reject_data=r"^Subject: reject", tempfail_data=r"^Subject: later",
               tempfail_times=1)
    # partial recipient refusal
    refused = _send(s.port, "a@x.test", ["good@y.test", "bad@y.test"],
                    b"Subject: ok\r\n\r\nhi\r\n")
    check(list(refused) == ["bad@y.test"] and refused["bad@y.test"][0] == 550, refused)
    try:
        _send(s.port, "a@x.test", ["good@y.test"], b"Subject: reject me\r\n\r\nhi\r\n")
        raise AssertionError("554 expected")
    except smtplib.SMTPDataError as e:
        check(e.smtp_code == 554 and b"5.6.0" in e.smtp_error, e)
    try:
        _send(s.port, "a@x.test", ["good@y.test"], b"Subject: later\r\n\r\nhi\r\n")
        raise AssertionError("451 expected")
    except smtplib.SMTPDataError as e:
        check(e.smtp_code == 451 and b"4.3.0" in e.smtp_error, e)
    # tempfail_times=1: the second try is accepted
    _send(s.port, "a@x.test", ["good@y.test"], b"Subject: later\r\n\r\nhi\r\n")
    msgs = s.wait_count(2, 5)
    check(msgs[0][0]["rcpt_tos"] == ["good@y.test"], msgs[0][0])
    kinds = [e["event"] for e in s.events()]
    for k in ("rcpt_rejected", "data_rejected", "data_tempfail"):
        check(k in kinds, f"{k} not in {kinds}")
    try:
        _send(s.port, "a@x.test", ["bad@y.test"], b"Subject: ok\r\n\r\nhi\r\n")
        raise AssertionError("all recipients refused expected")
    except smtplib.SMTPRecipientsRefused:
        pass
    check(s.count() == 2, s.count())


@harness.alone
def test_smtp_delay_and_abandoned_client(t):
    s = t.smtp(delay_data=1.5, delay_times=1)
    c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    f = c.makefile("rb")
    f.readline()
    for line in (b"EHLO x\r\n",):
        c.sendall(line)
        while True:
            ln = f.readline()
            if ln[3:4] == b" ":
                break
    c.sendall(b"MAIL FROM:<a@x.test>\r\n")
    f.readline()
    c.sendall(b"RCPT TO:<b@y.test>\r\n")
    f.readline()
    c.sendall(b"DATA\r\n")
    f.readline()
    c.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    c.settimeout(0.5)
    try:
        f.readline()
        raise AssertionError("server answered before the delay")
    except (socket.timeout, TimeoutError):
        pass
    f.close()
    c.close()  # the client gives up: nothing may be recorded
    time.sleep(2)
    check(s.count() == 0, f"abandoned message recorded ({s.count()})")
    # delay_times=1: the next one is answered at once
    t0 = time.monotonic()
    _send(s.port, "a@x.test", ["b@y.test"], b"Subject: y\r\n\r\nbody\r\n")
    check(time.monotonic() - t0 < 1.0, "second message was delayed")
    check(s.count() == 1, s.count())


def test_smtp_restart_keeps_numbering_and_port(t):
    s = t.smtp()
    _send(s.port, "a@x.test", ["b@y.test"], b"Subject: 1\r\n\r\n1\r\n")
    port = s.port
    s.restart(reject_rcpt="nobody")
    check(s.port == port, "same port")
    _send(s.port, "a@x.test", ["b@y.test"], b"Subject: 2\r\n\r\n2\r\n")
    msgs = s.wait_count(2, 5)
    check([m[0]["n"] for m in msgs] == [1, 2], [m[0]["n"] for m in msgs])
    s.kill()
    check(not s.alive(), "killed")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        raise AssertionError("port still accepting after kill")
    except OSError:
        pass


def test_smtp_prestarted_port_and_late_start(t):
    s = t.smtp(start=False)
    try:
        socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
        raise AssertionError("nothing should listen yet")
    except OSError:
        pass
    e = t.env(None, s)
    check(e["HERALD_RELAY"] == f"smtp://127.0.0.1:{s.port}", e["HERALD_RELAY"])
    s.start()
    _send(s.port, "a@x.test", ["b@y.test"], b"Subject: late\r\n\r\nx\r\n")
    s.wait_count(1, 5)


@harness.timeout(60)
def test_smtp_throughput(t):
    """~2,000 messages/s on loopback: 8 clients, envelope pipelined by hand."""
    s = t.smtp()
    n_clients, per_client = 8, 500
    body = (b"From: a@x.test\r\nTo: b@y.test\r\nSubject: load\r\nX-Herald-Id: %s\r\n\r\n"
            + b"line of text\r\n" * 20)
    errors = []

    def client(k):
        try:
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=20)
            f = sock.makefile("rb")

            def reply():
                while True:
                    ln = f.readline()
                    if not ln:
                        raise ConnectionError("closed")
                    if ln[3:4] != b"-":
                        return ln

            reply()
            sock.sendall(b"EHLO c\r\n")
            reply()
            for i in range(per_client):
                # PIPELINING-style: envelope in one write
                sock.sendall(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
                for _ in range(3):
                    r = reply()
                    check(r[:1] in (b"2", b"3"), r)
                sock.sendall(body % f"{k}-{i}".encode() + b".\r\n")
                r = reply()
                check(r.startswith(b"250"), r)
            sock.sendall(b"QUIT\r\n")
            sock.close()
        except Exception as e:  # noqa: B902
            errors.append(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    dt = time.monotonic() - t0
    check(not errors, f"client errors: {errors[:3]}")
    total = n_clients * per_client
    check(s.count() == total, f"{s.count()} of {total}")
    ids = s.ids()
    check(len(set(ids)) == total, "every id once")
    rate = total / dt
    # A figure, not a verdict: speed is for benchmarks, never a timed
    # assertion (this one failed a run on a loaded machine at 393 msg/s).
    print(f"    smtpd throughput: {rate:.0f} msg/s ({total} in {dt:.1f}s)")


def test_case_kills_processes(t):
    r = t.redis()
    s = t.smtp()
    pids = [r.pid, s.pid]
    t.kill_all()
    for pid in pids:
        try:
            os.kill(pid, 0)
            # may be a zombie until waited: kill_all waits, so it must be gone
            raise AssertionError(f"pid {pid} survived kill_all")
        except ProcessLookupError:
            pass


def test_wait_until_and_env(t):
    check(harness.wait_until(lambda: 5, 1, "five") == 5, "returns the value")
    t0 = time.monotonic()
    try:
        harness.wait_until(lambda: False, 0.3, "never")
        raise AssertionError("no timeout")
    except AssertionError as e:
        check("never" in str(e), str(e))
    check(time.monotonic() - t0 < 2, "timeout honoured")
    r = harness.Redis()
    s = harness.Smtp()
    e = harness.env(r, s, t.dir, HERALD_CONCURRENCY=4, HERALD_LOG_LEVEL=None)
    check(e["HERALD_REDIS"] == f"redis://127.0.0.1:{r.port}/0", e)
    check(e["HERALD_MC"] == t.store_url(), e)
    if harness.STORE == "sqlite":
        check(e["HERALD_MC"] == f"sqlite://{t.dir}/mc.db", e)
    else:
        check(e["HERALD_MC"].startswith("postgresql:///"), e)
        check(t.store_url(t.path("other")) != e["HERALD_MC"], "one store per dir")
    check(e["HERALD_PREFIX"] == t.prefix and e["HERALD_CONCURRENCY"] == "4", e)
    check("HERALD_LOG_LEVEL" not in e, "None removes")
    check(e["HERALD_PLATFORM_NAME"] == "Camp Platform", e)
    j = harness.make_job(cc=[{"email": "c@x.test"}], text=None)
    check("text" not in j and j["cc"] == [{"email": "c@x.test"}], j)
    check(harness.make_job()["id"] != harness.make_job()["id"], "unique ids")


def test_sanitizer_reports_are_found(t):
    log = t.path("fake-worker.log")
    with open(log, "w") as f:
        f.write('{"level":"info","msg":"x"}\n==1==ERROR: LeakSanitizer: detected memory leaks\n')
    clean = t.path("clean.log")
    with open(clean, "w") as f:
        f.write('{"level":"info","msg":"runtime ok"}\n')
    t.san_files.append(clean)
    check(t.sanitizer_reports() == [], "a clean log reported")
    t.san_files.append(log)
    t.san_texts.append(("prog", "x.c:3:5: runtime error: signed integer overflow"))
    reps = t.sanitizer_reports()
    check(len(reps) == 2, reps)
    check("LeakSanitizer" in reps[0][1] and "runtime error" in reps[1][1], reps)
    t.san_files.clear()  # this test's own fake reports must not fail it
    t.san_texts.clear()
