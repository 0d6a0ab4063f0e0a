"""Every way an SMTP server can answer wrongly: the job is retried or
failed with a reason naming the server's answer, nothing is lost, the
worker keeps running. Servers: tests/integration/evil_smtpd.py (scripted
misbehaviour) and the worker against it."""
import calendar
import json
import os
import subprocess
import time

import harness
from harness import check, wait_until, mc_show

HERE = os.path.dirname(os.path.abspath(__file__))


def evil(t, mode):
    port = harness.free_port()
    d = t.path("evil-%s" % mode)
    p = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "evil_smtpd.py"),
                          "--port", str(port), "--dir", d, "--mode", mode],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t.register(p)
    import socket

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False
    wait_until(up, 10, "evil SMTP server up")
    return port, d


def delivered(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".eml")) if os.path.isdir(d) else []


def job(id, **kw):
    j = {"id": id, "type": "notice", "org": "acme", "account": "a1",
         "from": "billing@acme.test", "to": ["alice@example.test"],
         "subject": "Hello", "text": "Line one\n.line starting with a dot\n" + "x" * 500}
    j.update(kw)
    return json.dumps(j)


def run_mode(t, mode, status, fragment, **env):
    port, d = evil(t, mode)
    r = t.redis()
    e = t.env(r, None, HERALD_RELAY="smtp://127.0.0.1:%d" % port, **env)
    w = t.worker(e)
    r.cmd("LPUSH", t.prefix + ":queue:normal", job("evil-" + mode))
    wait_until(lambda: (mc_show(e, "evil-" + mode) or {}).get("status") == status, 20,
               "status %s" % status)
    rec = mc_show(e, "evil-" + mode)
    check(fragment in (rec["last_error"] or rec["smtp_reply"] or ""),
          "%s: reason should mention %r: %r / %r" % (mode, fragment, rec["last_error"],
                                                     rec["smtp_reply"]))
    check(w.alive(), "worker died")
    # the worker still delivers through a sane server afterwards
    return r, e, w, d


def test_garbage_greeting_is_a_temporary_failure(t):
    r, e, w, d = run_mode(t, "garbage", "deferred", "not an SMTP reply")
    check(w.stop() == 0, "exit code")


def test_overlong_reply_line(t):
    r, e, w, d = run_mode(t, "longline", "deferred", "too long")
    check(w.stop() == 0, "exit code")


def test_421_at_connect_defers(t):
    r, e, w, d = run_mode(t, "greet421", "deferred", "421")
    check(w.stop() == 0, "exit code")


def test_554_greeting_pauses_the_sender(t):
    # A greeting that refuses us refuses every message of this sender:
    # failing them one by one would empty the queue into dead. The sender
    # (here the relay) is paused and the job waits. The reply names no end
    # and no daily quota, so the pause is a probe: a minute (then twice as
    # long each time it still refuses), not until the next UTC midnight —
    # one 554 once stopped all platform mail for the rest of the day.
    t0 = time.time()
    r, e, w, d = run_mode(t, "greet554", "deferred", "554")
    check(r.cmd("LRANGE", t.prefix + ":dead", 0, -1) == [], "went to dead")
    pause = r.cmd("HGET", t.prefix + ":pauses", "relay")
    check(pause is not None and b"554" in pause, "pause entry %r" % pause)
    until = int(pause.split()[0]) / 1000
    check(t0 + 55 <= until <= time.time() + 61, "paused for %.0f s" % (until - t0))
    probe = r.cmd("HGET", t.prefix + ":pause_probes", "relay")
    check(probe is not None and probe.split()[0] == b"60000", "probe %r" % probe)
    rec = mc_show(e, "evil-greet554")
    check("paused" in rec["last_error"], "record %r" % rec)
    nxt = calendar.timegm(time.strptime(rec["next_attempt_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    check(until - 1 <= nxt <= until + 7, "next_attempt_at %s" % rec["next_attempt_at"])
    check(w.stop() == 0, "exit code")


def test_connection_dropped_mid_data_is_retried(t):
    r, e, w, d = run_mode(t, "drop-in-data", "deferred", "closed the connection")
    check(delivered(d) == [], "nothing should have been accepted")
    check(w.stop() == 0, "exit code")


def test_server_silent_after_data_times_out(t):
    r, e, w, d = run_mode(t, "silent-after-data", "deferred", "timed out",
                          HERALD_SMTP_TIMEOUT_S="2")
    check(w.stop() == 0, "exit code")


def test_helo_fallback_and_lockstep_without_pipelining(t):
    for mode in ("no-ehlo", "lockstep"):
        port, d = evil(t, mode)
        r = t.redis()
        e = t.env(r, None, HERALD_RELAY="smtp://127.0.0.1:%d" % port)
        w = t.worker(e)
        ids = ["%s-%d" % (mode, i) for i in range(5)]
        for i in ids:
            r.cmd("LPUSH", t.prefix + ":queue:normal",
                  job(i, to=["a@example.test", "b@example.test"], cc=["c@example.test"]))
        wait_until(lambda: len(delivered(d)) == 5, 20, "%s: 5 deliveries" % mode)
        for i in ids:
            wait_until(lambda: (mc_show(e, i) or {}).get("status") == "sent", 10, i + " sent")
        # dot-stuffing survived the round trip
        body = open(os.path.join(d, delivered(d)[0]), "rb").read()
        check(b"\r\n..line starting with a dot" in body,
              "the line starting with a dot was not dot-stuffed on the wire")
        check(w.stop() == 0, "exit code")
