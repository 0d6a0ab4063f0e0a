"""SPEC §5 quotas and provider throttling in the worker (issue 4).

A scheme's daily and per-minute limits and an organisation's daily limit
on the platform relay are counted in recipients, in Redis, atomically
across the fleet; a job over quota is deferred to the start of the next
window (next_attempt_at in its record), never failed or dropped. A
provider's throttle reply pauses that sender only, fleet-wide, until the
time the reply names. Real redis-server, aiosmtpd relay, the TLS+AUTH
organisation server of test_scheme_path, three real workers."""
import calendar
import json
import os
import time

import harness
from harness import check, wait_until, mc_show, run
from test_scheme_path import ADDR, ORG, job, keyfile, push
from test_tls import TlsSmtp, make_ca


def utc_day_end(now=None):
    now = time.time() if now is None else now
    day = time.gmtime(now)
    start = calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0))
    return (start + 86400) * 1000, start * 1000


def parse_rfc3339_ms(s):
    base, frac = s.rstrip("Z"), 0
    if "." in base:
        base, f = base.split(".")
        frac = int(f.ljust(3, "0")[:3])
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) * 1000 + frac


def scheme_setup(t, workers=1, limits=(), worker_env=None):
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, auth="orguser:pw")
    r = t.redis()
    relay = t.smtp()
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=keyfile(t))
    cp = run("heraldctl", "scheme", "add", "--org", ORG, "--email", ADDR,
             "--smtp-host", "127.0.0.1", "--smtp-port", org.port, "--username", "orguser",
             "--password-stdin", "--tls", "starttls", *limits, env=e, input="pw\n")
    check(cp.returncode == 0, "scheme add: %s" % cp.stderr)
    ws = []
    for i in range(workers):
        we = dict(e, HERALD_WORKER_ID="w%d" % (i + 1), **(worker_env or {}))
        ws.append(t.worker(we))
    return r, relay, org, e, ws


def statuses(e, ids):
    out = {}
    for i in ids:
        rec = mc_show(e, i)
        out[i] = rec["status"] if rec else ""
    return out


@harness.timeout(90)
def test_daily_limit_5_of_8_with_three_workers(t):
    r, relay, org, e, ws = scheme_setup(t, workers=3, limits=("--daily-limit", "5"))
    ids = ["q%d" % i for i in range(8)]
    r.pipeline([("LPUSH", t.prefix + ":queue:normal", job(i)) for i in ids])
    wait_until(lambda: sorted(statuses(e, ids).values()) == ["deferred"] * 3 + ["sent"] * 5,
               30, "5 sent and 3 deferred")
    time.sleep(1.0)  # nothing else goes out
    check(len(org.messages()) == 5, "the org server got %d messages" % len(org.messages()))
    check(relay.count() == 0, "a scheme job went to the relay")
    end, start = utc_day_end()
    used = r.cmd("GET", "%s:quota:scheme:%s/%s:day:%d" % (t.prefix, ORG, ADDR, start))
    check(used == b"5", "counter %r" % used)
    deferred = [i for i, s in statuses(e, ids).items() if s == "deferred"]
    for i in deferred:
        rec = mc_show(e, i)
        nxt = parse_rfc3339_ms(rec["next_attempt_at"])
        check(end <= nxt <= end + 60000,
              "next_attempt_at %s is not the next UTC day (+<=60 s)" % rec["next_attempt_at"])
        check("over quota" in rec["last_error"] and "day limit of 5" in rec["last_error"],
              "last_error %r" % rec["last_error"])
        check(rec["attempts"] == 0, "a quota deferral counted an attempt: %r" % rec)
        ledger = r.cmd("HGET", "%s:job:%s" % (t.prefix, i), "attempts")
        check(ledger in (b"0", None), "ledger attempts %r" % ledger)
    sched = r.cmd("ZRANGE", t.prefix + ":scheduled", 0, -1, "WITHSCORES")
    check(len(sched) == 6, "scheduled %r" % sched)
    waiting = r.cmd("ZCARD", "%s:quota:wait:scheme:%s/%s" % (t.prefix, ORG, ADDR))
    check(waiting == 3, "waiting set %r" % waiting)
    for w in ws:
        check(w.stop() == 0, "exit code")


@harness.timeout(120)
def test_minute_limit_defers_to_the_next_minute(t):
    r, relay, org, e, ws = scheme_setup(t, limits=("--minute-limit", "2"))
    # start early in a minute so the first two surely share one
    while time.time() % 60 > 45:
        time.sleep(0.5)
    ids = ["m%d" % i for i in range(4)]
    r.pipeline([("LPUSH", t.prefix + ":queue:normal", job(i)) for i in ids])
    wait_until(lambda: sorted(statuses(e, ids).values()) == ["deferred"] * 2 + ["sent"] * 2,
               20, "2 sent and 2 deferred")
    minute_end = (int(time.time()) // 60 + 1) * 60
    for i, s in statuses(e, ids).items():
        if s == "deferred":
            nxt = parse_rfc3339_ms(mc_show(e, i)["next_attempt_at"]) / 1000
            check(minute_end <= nxt <= minute_end + 6, "next_attempt_at %r" % nxt)
    wait_until(lambda: len(org.messages()) == 4, 80, "the rest in the next minute")
    times = sorted(os.path.getmtime(os.path.join(org.dir, f))
                   for f in os.listdir(org.dir) if f.endswith(".json"))
    for at in times[2:]:
        check(at >= minute_end, "sent before its window: %r < %r" % (at, minute_end))
    check(ws[0].stop() == 0, "exit code")


def test_more_recipients_than_the_limit_fails_clearly(t):
    r, relay, org, e, ws = scheme_setup(t, limits=("--daily-limit", "2"))
    push(r, t, job("big", to=["a@example.test", "b@example.test", "c@example.test"]))
    wait_until(lambda: (mc_show(e, "big") or {}).get("status") == "failed", 15, "failed")
    rec = mc_show(e, "big")
    check("3 recipients" in rec["last_error"], "last_error %r" % rec["last_error"])
    dead = json.loads(run("heraldctl", "dead", "list", "--json", env=e).stdout)
    check(dead and dead[0]["reason"] == "quota", "dead %r" % dead)
    check(org.messages() == [], "sent anyway")
    check(ws[0].stop() == 0, "exit code")


@harness.timeout(90)
def test_throttle_pauses_that_sender_only(t):
    ca, crt, key = make_ca(t)
    orgsrv = TlsSmtp(t, crt, key, auth="orguser:pw")
    r = t.redis()
    relay = t.smtp(tempfail_data="Subject: first", tempfail_times=1,
                   tempfail_reply="451 4.7.1 Rate limited, try again in 4 seconds")
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=keyfile(t))
    cp = run("heraldctl", "scheme", "add", "--org", ORG, "--email", ADDR,
             "--smtp-host", "127.0.0.1", "--smtp-port", orgsrv.port, "--username",
             "orguser", "--password-stdin", "--tls", "starttls", env=e, input="pw\n")
    check(cp.returncode == 0, cp.stderr)
    w = t.worker(e)
    other = "news@pine.test"  # no scheme, SPF temperror: the relay
    push(r, t, job("first", frm=other, org="pine", subject="first"))
    wait_until(lambda: (mc_show(e, "first") or {}).get("status") == "deferred", 15, "throttled")
    t0 = time.time()
    for i in range(3):
        push(r, t, job("relay%d" % i, frm=other, org="pine"))
        push(r, t, job("scheme%d" % i))
    wait_until(lambda: len(orgsrv.messages()) == 3, 10, "the scheme's jobs go out meanwhile")
    check(time.time() - t0 < 4, "the scheme's jobs were slowed by the relay's pause")
    check(relay.count() == 0, "the paused relay was sent to during its pause")
    rec = mc_show(e, "relay0")
    check(rec["status"] == "deferred" and "paused" in rec["last_error"], "record %r" % rec)
    check(rec["attempts"] == 0, "a pause counted an attempt: %r" % rec)
    pause = r.cmd("HGET", t.prefix + ":pauses", "relay")
    check(pause is not None and b"rate" in pause.lower(), "pause entry %r" % pause)
    until = int(pause.split(b" ")[0]) / 1000
    check(t0 - 1 < until < t0 + 6, "pause until %r (t0 %r)" % (until, t0))
    relay.wait_count(4, 30)
    for m, _ in relay.messages():
        check(m["at"] >= until - 0.05, "sent at %r before the pause ended %r" % (m["at"], until))
    wait_until(lambda: set(statuses(e, ["first", "relay0", "relay1", "relay2"]).values())
               == {"sent"}, 10, "records sent")
    check(mc_show(e, "first")["attempts"] == 2, "attempts %r" % mc_show(e, "first"))
    check(w.stop() == 0, "exit code")


def test_pause_in_redis_is_obeyed_by_every_worker(t):
    r = t.redis()
    relay = t.smtp()
    e = t.env(r, relay)
    until = int((time.time() + 3) * 1000)
    r.cmd("HSET", t.prefix + ":pauses", "relay", "%d operator test" % until)
    w = t.worker(e)
    push(r, t, job("p1", frm="news@pine.test", org="pine"))
    wait_until(lambda: (mc_show(e, "p1") or {}).get("status") == "deferred", 10, "deferred")
    check("operator test" in mc_show(e, "p1")["last_error"], mc_show(e, "p1"))
    relay.wait_count(1, 20)
    check(relay.messages()[0][0]["at"] >= until / 1000 - 0.05, "sent during the pause")
    check(w.stop() == 0, "exit code")


def test_permanent_throttle_reply_is_not_a_failure(t):
    r = t.redis()
    relay = t.smtp(tempfail_data="Subject: quota", tempfail_times=1,
                   tempfail_reply="550 5.4.5 Daily user sending quota exceeded.")
    e = t.env(r, relay)
    w = t.worker(e)
    push(r, t, job("g1", frm="news@pine.test", org="pine", subject="quota"))
    wait_until(lambda: (mc_show(e, "g1") or {}).get("status") == "deferred", 10, "deferred")
    rec = mc_show(e, "g1")
    end, _ = utc_day_end()
    nxt = parse_rfc3339_ms(rec["next_attempt_at"])
    check(end <= nxt <= end + 7000, "paused until the next UTC day: %r" % rec["next_attempt_at"])
    check(json.loads(run("heraldctl", "dead", "list", "--json", env=e).stdout) == [],
          "a throttle went to dead")
    check(w.stop() == 0, "exit code")


def relay_job(id, org="pine", **kw):
    return job(id, frm="news@%s.test" % org, org=org, **kw)


@harness.timeout(60)
def test_org_relay_limit_with_three_workers_and_stats(t):
    r = t.redis()
    relay = t.smtp()
    e = t.env(r, relay)
    cp = run("heraldctl", "org", "set", "pine", "--relay-daily-limit", "3", env=e)
    check(cp.returncode == 0, cp.stderr)
    ws = [t.worker(dict(e, HERALD_WORKER_ID="w%d" % i)) for i in range(3)]
    ids = ["o%d" % i for i in range(5)]
    r.pipeline([("LPUSH", t.prefix + ":queue:normal", relay_job(i)) for i in ids])
    # another org on the same relay is not limited by pine's quota
    r.pipeline([("LPUSH", t.prefix + ":queue:normal", relay_job("x%d" % i, org="oak"))
                for i in range(4)])
    wait_until(lambda: sorted(statuses(e, ids).values()) == ["deferred"] * 2 + ["sent"] * 3,
               20, "3 sent and 2 deferred")
    relay.wait_count(7, 10)
    time.sleep(0.5)
    check(relay.count() == 7, "relay got %d" % relay.count())
    end, start = utc_day_end()
    for i, st in statuses(e, ids).items():
        if st == "deferred":
            nxt = parse_rfc3339_ms(mc_show(e, i)["next_attempt_at"])
            check(end <= nxt <= end + 60000, "next_attempt_at %r" % nxt)
            check(mc_show(e, i)["path"] == "relay", mc_show(e, i))
    stats = json.loads(run("heraldctl", "queue", "stats", "--json", env=e).stdout)
    pine = [x for x in stats["senders"] if x["sender"] == "org:pine"]
    check(len(pine) == 1, "stats senders %r" % stats["senders"])
    win = pine[0]["windows"][0]
    check(win["used"] == 3 and win["limit"] == 3 and pine[0]["waiting"] == 2,
          "stats %r" % pine[0])
    check(parse_rfc3339_ms(win["resets_at"]) == end, "resets_at %r" % win["resets_at"])
    for w in ws:
        check(w.stop() == 0, "exit code")


@harness.timeout(60)
def test_quota_given_back_when_not_accepted(t):
    # the first message is refused for a while; its recipients go back to
    # the counter, so with a limit of 2 both jobs still go out today
    r = t.redis()
    relay = t.smtp(tempfail_data="Subject: first", tempfail_times=1)
    e = t.env(r, relay)
    check(run("heraldctl", "org", "set", "pine", "--relay-daily-limit", "2",
              env=e).returncode == 0, "org set")
    w = t.worker(e)
    push(r, t, relay_job("g1", subject="first"))
    wait_until(lambda: (mc_show(e, "g1") or {}).get("status") == "deferred", 10, "deferred")
    push(r, t, relay_job("g2"))
    wait_until(lambda: set(statuses(e, ["g1", "g2"]).values()) == {"sent"}, 20, "both sent")
    _, start = utc_day_end()
    used = r.cmd("GET", "%s:quota:org:pine:day:%d" % (t.prefix, start))
    check(used == b"2", "counter %r" % used)
    check(w.stop() == 0, "exit code")


def test_raised_limit_applies_to_new_jobs_within_seconds(t):
    r = t.redis()
    relay = t.smtp()
    e = t.env(r, relay)
    check(run("heraldctl", "org", "set", "pine", "--relay-daily-limit", "1",
              env=e).returncode == 0, "org set")
    w = t.worker(e)
    push(r, t, relay_job("l1"))
    push(r, t, relay_job("l2"))
    wait_until(lambda: sorted(statuses(e, ["l1", "l2"]).values()) == ["deferred", "sent"],
               10, "1 sent, 1 deferred")
    check(run("heraldctl", "org", "set", "pine", "--no-relay-daily-limit",
              env=e).returncode == 0, "org set")
    time.sleep(1.5)
    push(r, t, relay_job("l3"))
    wait_until(lambda: (mc_show(e, "l3") or {}).get("status") == "sent", 10, "no limit now")
    check(w.stop() == 0, "exit code")


def test_daily_window_in_the_schemes_time_zone(t):
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo
    zone = "Pacific/Kiritimati"  # UTC+14: its midnight is far from UTC's
    r, relay, org, e, ws = scheme_setup(
        t, limits=("--daily-limit", "1", "--time-zone", zone))
    push(r, t, job("z1"))
    push(r, t, job("z2"))
    wait_until(lambda: sorted(statuses(e, ["z1", "z2"]).values()) == ["deferred", "sent"],
               15, "1 sent, 1 deferred")
    local = datetime.now(ZoneInfo(zone))
    midnight = datetime(local.year, local.month, local.day, tzinfo=ZoneInfo(zone)) + timedelta(days=1)
    want = int(midnight.timestamp() * 1000)
    deferred = [i for i, s in statuses(e, ["z1", "z2"]).items() if s == "deferred"][0]
    nxt = parse_rfc3339_ms(mc_show(e, deferred)["next_attempt_at"])
    check(want <= nxt <= want + 60000, "next_attempt_at %r, local midnight %r" % (nxt, want))
    day_start = want - 86400000
    used = r.cmd("GET", "%s:quota:scheme:%s/%s:day:%d" % (t.prefix, ORG, ADDR, day_start))
    check(used == b"1", "counter for the local day %r" % used)
    check(ws[0].stop() == 0, "exit code")


def test_pause_deleted_in_redis_is_lifted_within_seconds(t):
    r = t.redis()
    relay = t.smtp()
    e = t.env(r, relay)
    until = int((time.time() + 120) * 1000)
    r.cmd("HSET", t.prefix + ":pauses", "relay", "%d operator test" % until)
    w = t.worker(e)
    push(r, t, job("lift1", frm="news@pine.test", org="pine"))
    wait_until(lambda: (mc_show(e, "lift1") or {}).get("status") == "deferred", 10, "deferred")
    r.cmd("HDEL", t.prefix + ":pauses", "relay")
    w.wait_log(lambda d: d.get("msg") == "sender pause lifted in Redis", 5, "pause lifted")
    push(r, t, job("lift2", frm="news@pine.test", org="pine"))
    wait_until(lambda: (mc_show(e, "lift2") or {}).get("status") == "sent", 5, "sent after the lift")
    check(w.stop() == 0, "exit code")


def test_queue_resume_lifts_a_pause_and_releases_its_jobs(t):
    r = t.redis()
    relay = t.smtp(tempfail_data="Subject: first", tempfail_times=1,
                   tempfail_reply="550 5.4.5 Daily user sending quota exceeded.")
    e = t.env(r, relay)
    w = t.worker(e)
    push(r, t, job("r1", frm="news@pine.test", org="pine", subject="first"))
    wait_until(lambda: (mc_show(e, "r1") or {}).get("status") == "deferred", 10, "paused")
    push(r, t, job("r2", frm="news@pine.test", org="pine"))
    wait_until(lambda: (mc_show(e, "r2") or {}).get("status") == "deferred", 10, "r2 waits")
    stats = json.loads(run("heraldctl", "queue", "stats", "--json", env=e).stdout)
    relay_row = [x for x in stats["senders"] if x["sender"] == "relay"]
    check(relay_row and relay_row[0]["paused_until"] and relay_row[0]["waiting"] == 2,
          "stats %r" % stats["senders"])
    cp = run("heraldctl", "queue", "resume", "relay", env=e)
    check(cp.returncode == 0 and "pause lifted; 2 waiting jobs due now" in cp.stdout,
          "%r %r" % (cp.stdout, cp.stderr))
    t0 = time.time()
    relay.wait_count(2, 15)
    check(time.time() - t0 < 8, "released jobs took %.1fs" % (time.time() - t0))
    wait_until(lambda: set(statuses(e, ["r1", "r2"]).values()) == {"sent"}, 10, "sent")
    cp = run("heraldctl", "queue", "resume", "relay", env=e)
    check(cp.returncode == 0 and "was not paused; 0 waiting jobs" in cp.stdout, cp.stdout)
    for bad in ("bogus", "org:", "scheme:acme", "scheme:acme/not-an-address"):
        cp = run("heraldctl", "queue", "resume", bad, env=e)
        check(cp.returncode == 2 and "is not a sender" in cp.stderr, "%s: %r" % (bad, cp.stderr))
    check(w.stop() == 0, "exit code")


def test_unreadable_limits_stop_takes_visibly_until_fixed(t):
    # <p>:orgs holding the wrong type: a limit could be skipped, so the
    # worker takes nothing and says why; once fixed, the job goes out
    r = t.redis()
    relay = t.smtp()
    e = t.env(r, relay)
    r.cmd("SET", t.prefix + ":orgs", "oops")
    r.cmd("SET", t.prefix + ":orgs:version", "1")
    w = t.worker(e)
    push(r, t, job("u1", frm="news@pine.test", org="pine"))
    w.wait_log(lambda d: "cannot read the organisations" in d.get("msg", ""), 10,
               "the unreadable key is named")
    time.sleep(1.0)
    check(relay.count() == 0, "a job was taken without its limits")
    r.cmd("DEL", t.prefix + ":orgs")
    relay.wait_count(1, 10)
    check(w.stop() == 0, "exit code")


def test_queue_resume_takes_the_address_in_any_case(t):
    r = t.redis()
    e = t.env(r, None)
    sender = "scheme:%s/%s" % (ORG, ADDR)
    r.cmd("HSET", t.prefix + ":pauses", sender, "%d test" % int((time.time() + 600) * 1000))
    cp = run("heraldctl", "queue", "resume", "scheme:%s/%s" % (ORG, ADDR.upper()), env=e)
    check(cp.returncode == 0 and "pause lifted" in cp.stdout, "%r %r" % (cp.stdout, cp.stderr))
    check(r.cmd("HEXISTS", t.prefix + ":pauses", sender) == 0, "the pause is still there")


def test_queue_stats_survives_a_key_of_another_type(t):
    # one bad key must not hide the lanes, the workers and the other senders
    r = t.redis()
    e = t.env(r, None)
    check(run("heraldctl", "org", "set", "pine", "--relay-daily-limit", "5",
              env=e).returncode == 0, "org set")
    check(run("heraldctl", "org", "set", "oak", "--relay-daily-limit", "7",
              env=e).returncode == 0, "org set")
    _, start = utc_day_end()
    r.cmd("HSET", "%s:quota:org:pine:day:%d" % (t.prefix, start), "x", "1")
    r.cmd("SET", "%s:quota:org:oak:day:%d" % (t.prefix, start), "2")
    r.cmd("SET", t.prefix + ":pauses", "not a hash")
    r.cmd("LPUSH", t.prefix + ":queue:normal", "{}")
    cp = run("heraldctl", "queue", "stats", "--json", env=e)
    check(cp.returncode == 0, "exit %d: %s" % (cp.returncode, cp.stderr))
    check("could not be read" in cp.stderr, cp.stderr)
    st = json.loads(cp.stdout)
    check(st["queues"]["normal"] == 1, st["queues"])
    oak = [x for x in st["senders"] if x["sender"] == "org:oak"]
    check(oak and oak[0]["windows"][0]["used"] == 2, st["senders"])


@harness.timeout(90)
def test_long_scheme_address_keeps_its_limit(t):
    # A scheme address of 252 characters (64-byte local part, 63-byte
    # labels) makes counter keys longer than 256 bytes; the worker once
    # dropped such a counter and sent without a limit (3 of 3 with a
    # daily limit of 1).
    addr = "l" * 64 + "@" + ".".join(c * 60 for c in "abc") + ".test"
    check(len(addr) == 252, len(addr))
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, auth="orguser:pw")
    r = t.redis()
    relay = t.smtp()
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=keyfile(t))
    cp = run("heraldctl", "scheme", "add", "--org", ORG, "--email", addr,
             "--smtp-host", "127.0.0.1", "--smtp-port", org.port, "--username", "orguser",
             "--password-stdin", "--tls", "starttls", "--daily-limit", "1", env=e, input="pw\n")
    check(cp.returncode == 0, "scheme add: %s" % cp.stderr)
    t.worker(e)
    ids = ["long%d" % i for i in range(3)]
    r.pipeline([("LPUSH", t.prefix + ":queue:normal", job(i, frm=addr)) for i in ids])
    wait_until(lambda: sorted(statuses(e, ids).values()) == ["deferred", "deferred", "sent"],
               30, "1 sent and 2 deferred: %r" % statuses(e, ids))
    time.sleep(1.0)
    check(len(org.messages()) == 1, "the org server got %d messages" % len(org.messages()))
    for i in ids:
        rec = mc_show(e, i)
        if rec["status"] == "deferred":
            check("over quota" in rec["last_error"], rec["last_error"])
    cp = run("heraldctl", "queue", "stats", "--json", env=e)
    check(cp.returncode == 0, cp.stderr)
    st = json.loads(cp.stdout)
    check(addr in json.dumps(st), "queue stats does not show the sender: %s" % cp.stdout[:2000])
