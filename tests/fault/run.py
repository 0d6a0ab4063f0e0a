#!/usr/bin/python3
"""Herald's fault-injection suite: real processes (redis-server, SMTP
servers, bin/herald-worker, bin/heraldctl) on loopback, faults injected
from outside, and every job accounted for at the end.

    /usr/bin/python3 tests/fault/run.py [--full] [--report PATH] [--keep]
                                        [--seed N] [--restart-ids alternate|new|same]
                                        [--list] [SCENARIO ...]

Without names every scenario runs. The default is the REDUCED form (the
test command's: all scenarios in about two minutes on two cores);
--full or FAULT_FULL=1 is the full form (`make fault`: 20,000 jobs for
kill-workers, a few thousand elsewhere; about ten minutes). Binaries come
from $HERALD_BIN (default bin/), as for tests/integration/run.py.

Each scenario starts its own Redis, SMTP server(s) and workers (one
harness.Case: a temp dir under the run's dir, a unique key prefix, every
process registered and SIGKILLed by PID at the end), injects its fault,
waits for the run to settle, stops the workers with SIGTERM and then
ACCOUNTS for every pushed job id, from four independent sources:

  the SMTP server   X-Herald-Id of every accepted message (D/<n>.eml)
  Message Center    `heraldctl mc list --json` (paged) — status, attempts
  dead letters      `heraldctl dead list --json`
  Redis             <p>:queue:*, <p>:processing:*, <p>:scheduled (the
                    job bodies still on their way)

Each id gets exactly one final state: `sent` (accepted by the server at
least once), `failed` (in the dead list with a reason), `pending` (its
body still in a queue, a processing list or the schedule) or `lost`
(none of these). A scenario passes when lost = 0, duplicates (accepted
more than once) stay within its documented bound, every state is one the
scenario allows for that job and agrees with the Message Center, and the
scenario's own checks hold (the fault really happened, retried jobs show
attempts > 1, ...). One line per scenario:

  fault kill-workers: jobs=3000 sent=3000 failed=0 pending=0 lost=0
      duplicates=0 (bound 64 = kills x HERALD_CONCURRENCY) time=14.2s  PASS

and every figure goes to the JSON report (--report, default
<run dir>/report.json). Exit 0 when every scenario passed, 1 otherwise,
2 on bad usage. Passed scenarios' dirs are removed unless --keep; failed
ones are kept and named.

Scenarios: see SCENARIOS at the bottom (one function each).
"""

import argparse
import collections
import datetime
import json
import os
import random
import re
import signal
import shutil
import socket
import sys
import tempfile
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
IT = os.path.join(REPO, "tests", "integration")
sys.path.insert(0, IT)

import harness  # noqa: E402
from harness import wait_until  # noqa: E402

LANES = ("high", "normal", "low")
STATES = ("sent", "failed", "pending", "lost")
MC_PENDING = ("queued", "sending", "deferred")
HERALD_ID_RE = re.compile(rb"^X-Herald-Id:[ \t]*([^\r\n]*)", re.M | re.I)


class ScenarioTimeout(Exception):
    pass


class _Stuck(Exception):
    pass


# ------------------------------------------------------------------ jobs


def bulk_jobs(n, tag, **fields):
    """n valid single-recipient jobs with ids <tag>-00000 ..."""
    out = []
    for i in range(n):
        f = dict(to=[f"user{i}@example.test"], subject=f"{tag} {i}",
                 text=f"message {i} of {tag}\n")
        f.update(fields)
        out.append(harness.make_job(id=f"{tag}-{i:05d}", **f))
    return out


def push_jobs(r, prefix, jobs):
    """LPUSH raw, spread over the three lanes."""
    r.pipeline([("LPUSH", harness.queue_key(prefix, LANES[i % 3]),
                 json.dumps(j, ensure_ascii=False)) for i, j in enumerate(jobs)])


# ------------------------------------------------------------ SMTP side


class Received:
    """X-Herald-Id of every message a server accepted, read from its
    D/<n>.eml (harness smtpd.py, tls_smtpd.py and evil_smtpd.py all save
    them). `marker` is the file whose presence says message n is complete:
    ".json" for the aiosmtpd servers (written last), ".eml" for
    evil_smtpd.py (written before its 250). Parsed files are cached, so
    polling a 20,000-message dir stays cheap."""

    def __init__(self, d, marker):
        self.dir = d
        self.marker = marker
        self._cache = {}

    def _numbers(self):
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.endswith(self.marker) and name[: -len(self.marker)].isdigit():
                out.append(int(name[: -len(self.marker)]))
        out.sort()
        return out

    def count(self):
        return len(self._numbers())

    def ids(self):
        out = []
        for n in self._numbers():
            if n not in self._cache:
                try:
                    with open(os.path.join(self.dir, f"{n}.eml"), "rb") as f:
                        raw = f.read()
                except FileNotFoundError:
                    continue
                parts = raw.split(b"\r\n\r\n", 1)
                if len(parts) < 2:
                    continue  # still being written
                m = HERALD_ID_RE.search(parts[0])
                self._cache[n] = m.group(1).strip().decode("utf-8", "replace") if m else None
            out.append(self._cache[n])
        return out

    def distinct(self):
        return len(set(self.ids()) - {None})


class Evil:
    """tests/integration/evil_smtpd.py in one of its modes, registered with
    the current Case (killed by PID at the end)."""

    def __init__(self, t, mode, **opts):
        self.port = harness.free_port()
        self.dir = t.path(f"evil-{mode}-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        argv = [harness.PY, os.path.join(IT, "evil_smtpd.py"), "--port", str(self.port),
                "--dir", self.dir, "--mode", mode]
        for k, v in opts.items():
            if v is not None:
                argv += ["--" + k.replace("_", "-"), str(v)]
        log = open(os.path.join(self.dir, "server.log"), "ab")
        try:
            self.proc = harness._spawn(argv, stdout=log, stderr=log)
        finally:
            log.close()
        self.received = Received(self.dir, ".eml")

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"evil_smtpd --mode {mode} exited {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_until(up, 10, f"evil_smtpd --mode {mode} listening")

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"

    def events(self, kind=None):
        out = []
        try:
            with open(os.path.join(self.dir, "events.jsonl"), encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):
                        ev = json.loads(line)
                        if kind is None or ev.get("event") == kind:
                            out.append(ev)
        except FileNotFoundError:
            pass
        return out


# ------------------------------------------------------- the four sources


def ctl(env, *args, timeout=120):
    cp = harness.run("heraldctl", *args, env=env, timeout=timeout)
    if cp.returncode != 0:
        raise AssertionError(f"heraldctl {' '.join(map(str, args))} exited {cp.returncode}: "
                             f"{cp.stderr.strip()[:400]}")
    return cp.stdout


def mc_all(env, status=None, org=None):
    """{id: record} of every Message Center record (optionally of one
    status / org): `heraldctl mc list --json --limit 500`, paged
    backwards with --until (inclusive, millisecond times), newest first."""
    out = {}
    until = None
    while True:
        args = ["mc", "list", "--json", "--limit", "500"]
        if status:
            args += ["--status", status]
        if org:
            args += ["--org", org]
        if until:
            args += ["--until", until]
        recs = json.loads(ctl(env, *args))
        new = 0
        for rec in recs:
            if rec["id"] not in out:
                new += 1
            out[rec["id"]] = rec
        if len(recs) < 500:
            return out
        if new == 0:
            raise AssertionError(f"mc list: more than 500 records created at {until}; "
                                 "cannot page past them")
        until = recs[-1]["created_at"]


def dead_all(env):
    """The dead letters (`heraldctl dead list --json`), each with "_id"."""
    out = []
    for d in json.loads(ctl(env, "dead", "list", "--json", "--limit", "1000000")):
        jid = d.get("id")
        if not jid and d.get("job"):
            try:
                jid = json.loads(d["job"]).get("id")
            except (ValueError, AttributeError):
                jid = None
        d["_id"] = jid
        out.append(d)
    return out


def redis_holdings(r, prefix):
    """{id: [place, ...]} of the job bodies Redis still holds: the lanes
    (<p>:queue:*), the processing lists (<p>:processing:*) and the schedule
    (<p>:scheduled, with its due time). Also {"quota_wait": {id: [sender]}}
    — the ids waiting for a quota (<p>:quota:wait:*; ids only, no body)."""
    held = collections.defaultdict(list)
    due = {}
    for kind in ("queue", "processing"):
        for key in sorted(r.cmd("KEYS", f"{prefix}:{kind}:*") or []):
            place = key.decode()[len(prefix) + 1:]
            for raw in r.cmd("LRANGE", key, 0, -1) or []:
                held[_job_id(raw)].append(place)
    flat = r.cmd("ZRANGE", f"{prefix}:scheduled", 0, -1, "WITHSCORES") or []
    for raw, score in zip(flat[0::2], flat[1::2]):
        jid = _job_id(raw)
        held[jid].append("scheduled")
        due[jid] = float(score)
    wait = collections.defaultdict(list)
    for key in r.cmd("KEYS", f"{prefix}:quota:wait:*") or []:
        sender = key.decode()[len(prefix) + len(":quota:wait:"):]
        for m in r.cmd("ZRANGE", key, 0, -1) or []:
            wait[m.decode("utf-8", "replace")].append(sender)
    return dict(held), due, dict(wait)


def _job_id(raw):
    try:
        return json.loads(raw).get("id") or "<no id>"
    except (ValueError, AttributeError):
        return "<unparsable>"


def redis_counts(r, prefix):
    n = {"queued": 0, "processing": 0}
    for kind, name in (("queue", "queued"), ("processing", "processing")):
        for key in r.cmd("KEYS", f"{prefix}:{kind}:*") or []:
            n[name] += r.cmd("LLEN", key)
    n["scheduled"] = r.cmd("ZCARD", f"{prefix}:scheduled")
    return n


def drained(r, prefix):
    return not any(redis_counts(r, prefix).values())


# ------------------------------------------------------------ accounting


def account(ids, delivered, mc, dead, holdings, allowed, dup_bound):
    """Classifies every pushed id into exactly one final state and checks
    it against the other sources.

      ids        the pushed job ids
      delivered  X-Herald-Id of each accepted message (repeats = duplicates)
      mc         {id: Message Center record}
      dead       dead letters (dead_all)
      holdings   {id: [place]} (redis_holdings)
      allowed    id -> the set of final states this scenario allows it
      dup_bound  the scenario's bound on duplicates

    Returns the figures: counts per state, duplicates, and "unexpected":
    one line per job whose state is not allowed or whose sources disagree
    (a delivered job also dead or still queued, a Message Center status
    that says otherwise, a job held twice, no record at all)."""
    got = collections.Counter(x for x in delivered if x is not None)
    dead_by = collections.defaultdict(list)
    for d in dead:
        dead_by[d["_id"]].append(d)
    idset = set(ids)
    states = {}
    unexpected = []
    for jid in ids:
        if got[jid] >= 1:
            st = "sent"
        elif jid in dead_by:
            st = "failed"
        elif jid in holdings:
            st = "pending"
        else:
            st = "lost"
        states[jid] = st
        if st == "lost":
            continue
        why = []
        ok = allowed(jid)
        if st not in ok:
            why.append(f"{st}, expected {'/'.join(sorted(ok))}")
        if st == "sent" and jid in dead_by:
            why.append("delivered and also dead (" + dead_by[jid][0].get("reason", "?") + ")")
        if st in ("sent", "failed") and jid in holdings:
            why.append(f"{st} yet still held in Redis: {holdings[jid]}")
        if st == "failed" and not all(d.get("reason") for d in dead_by[jid]):
            why.append("dead letter without a reason")
        if len(holdings.get(jid, ())) > 1:
            why.append(f"held {len(holdings[jid])} times: {holdings[jid]}")
        rec = mc.get(jid)
        if rec is None:
            why.append("no Message Center record")
        else:
            ms = rec.get("status")
            if st == "sent" and ms != "sent":
                why.append(f"delivered but MC status {ms}")
            elif st == "failed" and ms != "failed":
                why.append(f"dead but MC status {ms}")
            elif st == "pending" and ms not in MC_PENDING:
                why.append(f"held in Redis ({holdings[jid]}) but MC status {ms}")
        if why:
            unexpected.append(f"{jid}: " + "; ".join(why))
    counts = collections.Counter(states.values())
    dups = {k: n - 1 for k, n in got.items() if n > 1}
    strays = sorted(k for k in got if k not in idset)
    stray_dead = sorted({d["_id"] for d in dead} - idset, key=str)
    lost = sorted(k for k, v in states.items() if v == "lost")
    mc_hist = collections.Counter((states[j], (mc.get(j) or {}).get("status")) for j in ids)
    out = {
        "jobs": len(ids),
        "sent": counts["sent"], "failed": counts["failed"],
        "pending": counts["pending"], "lost": counts["lost"],
        "duplicates": sum(dups.values()),
        "duplicated_ids": len(dups),
        "dup_bound": dup_bound,
        "duplicate_examples": sorted(dups.items(), key=lambda kv: -kv[1])[:20],
        "lost_ids": lost[:50],
        "unexpected": len(unexpected),
        "unexpected_examples": unexpected[:50],
        "deliveries": sum(got.values()),
        "stray_deliveries": strays[:20],
        "stray_dead": stray_dead[:20],
        "state_vs_mc": {f"{a}/{b}": n for (a, b), n in sorted(mc_hist.items(), key=str)},
    }
    out["_states"] = states  # internal (not in the report): every id's state
    out["_lost_all"] = lost
    return out


def selftest_account():
    """account() on made-up sources: every state, every disagreement it
    must catch. Runs before the scenarios (milliseconds); raises if the
    accounting itself is wrong."""
    ids = ["a", "b", "c", "d", "e", "f", "g", "h"]
    delivered = ["a", "b", "a", "a", "g", "zz"]
    mc = {"a": {"status": "sent"}, "b": {"status": "deferred"}, "c": {"status": "failed"},
          "d": {"status": "deferred"}, "e": {"status": "queued"}, "g": {"status": "sent"},
          "h": {"status": "sent"}}
    dead = [{"_id": "c", "reason": "rejected"}, {"_id": "g", "reason": "rejected"},
            {"_id": "h", "reason": ""}]
    holdings = {"d": ["scheduled"], "e": ["queue:normal", "processing:w1"]}
    fig = account(ids, delivered, mc, dead, holdings,
                  lambda j: {"sent", "failed", "pending"} if j != "e" else {"sent"}, 1)
    st = fig["_states"]
    want = {"a": "sent", "b": "sent", "c": "failed", "d": "pending", "e": "pending",
            "f": "lost", "g": "sent", "h": "failed"}
    if st != want:
        raise AssertionError(f"selftest: states {st}, want {want}")
    if (fig["lost"], fig["duplicates"], fig["duplicated_ids"]) != (1, 2, 1):
        raise AssertionError(f"selftest: figures {fig}")
    flagged = sorted(x.split(":")[0] for x in fig["unexpected_examples"])
    # b: delivered, MC deferred; e: not allowed pending, held twice, f: lost
    # (counted apart); g: delivered and dead; h: no reason, MC sent
    if flagged != ["b", "e", "g", "h"] or fig["stray_deliveries"] != ["zz"]:
        raise AssertionError(f"selftest: flagged {fig['unexpected_examples']}")


# -------------------------------------------------------------- scenario


class Ctx:
    """What a scenario works with: its Case, the form, an RNG, and the
    result it fills: figures (from account()), checks that failed, notes
    and details for the report."""

    def __init__(self, t, full, seed, restart_ids="alternate"):
        self.t = t
        self.full = full
        self.restart_ids = restart_ids
        self.rng = random.Random(seed)
        self.fig = None
        self.bound_rule = ""
        self.failures = []
        self.notes = []
        self.details = {}
        self.workers = []

    def check(self, cond, message):
        if not cond:
            self.failures.append(message)
        return cond

    def settle(self, pred, timeout, what, interval=0.25, stuck=None, progress=None):
        """Waits for pred; a timeout is a failure of the scenario, not an
        exception: the accounting still runs and shows where jobs are.
        stuck: a predicate that says nothing more can happen (e.g. Redis
        holds no job any more); true for 5 s in a row ends the wait early.
        progress: a count that grows while the system works towards pred
        (jobs seen so far): each time it grows the wait may go on for
        `timeout` more seconds, up to four times `timeout` in all, so a
        loaded machine that is slow but moving does not fail the wait."""
        t0 = time.monotonic()
        since = [None]
        last = [progress() if progress else 0, t0]

        def probe():
            if pred():
                return True
            if stuck is not None and stuck():
                since[0] = since[0] or time.monotonic()
                if time.monotonic() - since[0] > 5:
                    raise _Stuck()
            else:
                since[0] = None
            if progress is not None:
                now, v = time.monotonic(), progress()
                if v > last[0]:
                    last[0], last[1] = v, now
                if now - last[1] > timeout:
                    raise AssertionError(f"no progress for {timeout}s waiting for {what} "
                                         f"(at {last[0]})")
            return False

        try:
            wait_until(probe, 4 * timeout if progress else timeout, what, interval)
            return time.monotonic() - t0
        except AssertionError as e:
            self.failures.append(str(e))
        except _Stuck:
            self.failures.append(f"gave up waiting for {what}: Redis holds no job any more "
                                 f"(after {time.monotonic() - t0:.0f}s)")
        return None

    def worker(self, env, wid):
        w = self.t.worker(dict(env, HERALD_WORKER_ID=wid))
        w.wid = wid
        self.workers.append(w)
        return w

    def stop_workers(self):
        """SIGTERM every live worker; each must exit 0 (SPEC §8)."""
        for w in self.workers:
            if w.alive():
                try:
                    rc = w.stop(signal.SIGTERM, 30)
                except AssertionError as e:
                    self.failures.append(f"worker {w.wid}: {e}")
                    continue
                self.check(rc == 0, f"worker {w.wid} (pid {w.pid}) exited {rc} on SIGTERM; "
                           f"log {w.log_path}")

    def collect(self, r, env, ids, delivered, allowed, dup_bound, bound_rule):
        """Stops the workers and accounts for every id (see account())."""
        self.stop_workers()
        mc = mc_all(env)
        dead = dead_all(env)
        holdings, due, wait = redis_holdings(r, self.t.prefix)
        fig = account(ids, delivered, mc, dead, holdings, allowed, dup_bound)
        self.fig = fig
        self.bound_rule = bound_rule
        self.details["redis_left"] = redis_counts(r, self.t.prefix)
        self.details["dead_reasons"] = dict(collections.Counter(d.get("reason") for d in dead))
        self.details["dup_window_logs"] = dup_window_logs(self.workers)
        lost_logs = job_log_lines(self.workers, set(fig["_lost_all"]))
        last = {jid: lines[-1] for jid, lines in lost_logs.items()}
        self.details["lost_last_log"] = dict(collections.Counter(
            f"{x['worker']}: {x['msg']}" for x in last.values()))
        for jid in fig["lost_ids"][:10]:  # what Redis and the MC still say about a lost job
            rec = mc.get(jid) or {}
            self.notes.append(
                f"lost {jid}: ledger {ledger_of(r, self.t.prefix, jid)}, "
                f"MC status {rec.get('status')} attempts {rec.get('attempts')} "
                f"last_error {rec.get('last_error')!r}, quota-wait {wait.get(jid)}; "
                f"worker logs: {lost_logs.get(jid, [])[-3:]}")
        if self.details["lost_last_log"]:
            self.notes.insert(0, "last worker log line of each lost job: "
                              f"{self.details['lost_last_log']}")
        return mc, dead, holdings, due, wait


def ledger_of(r, prefix, jid):
    """The delivery ledger hash <prefix>:job:<id> (common/keys.h) as a dict."""
    flat = r.cmd("HGETALL", f"{prefix}:job:{jid}") or []
    return {k.decode(): v.decode() for k, v in zip(flat[0::2], flat[1::2])}


def job_log_lines(workers, ids):
    """{id: [{"worker", "ts", "msg"}]} — every worker log line naming one
    of `ids` (field "job"), in each worker's order."""
    out = collections.defaultdict(list)
    if not ids:
        return out
    for w in workers:
        for d in w.logs():
            if d.get("job") in ids:
                out[d["job"]].append({"worker": getattr(w, "wid", None), "ts": d.get("ts"),
                                      "msg": d.get("msg")})
    for v in out.values():
        v.sort(key=lambda x: x["ts"] or "")
    return out


def dup_window_logs(workers):
    """The workers' own "duplicate window" log lines (acceptance -> ledger)."""
    out = []
    for w in workers:
        for d in w.logs():
            if str(d.get("msg", "")).startswith("duplicate window"):
                out.append({"worker": getattr(w, "wid", None),
                            **{k: d.get(k) for k in ("messages", "p50_us_at_most",
                                                     "p99_us_at_most", "max_us")}})
    return out


def utc_iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


# ============================================================ scenarios


def sc_kill_workers(c):
    """Three workers; every 2-3 s one is SIGKILLed and a replacement
    started (alternately under a new worker id, so the others reclaim the
    dead one's processing list after HERALD_HEARTBEAT_S=2, and under the
    same id, as a supervisor restart would) during an N-job run (20,000
    full / 5,000 reduced). The SMTP server stalls each message 0.1 s in
    DATA so the run lasts long enough for several kills.
    Expect: every job sent, none lost; duplicates <= kills x
    HERALD_CONCURRENCY (SPEC §8: a killed worker can have at most
    HERALD_CONCURRENCY messages between the server's 250 and its ledger
    write)."""
    t = c.t
    n = 20000 if c.full else 5000
    conc = 16
    r = t.redis()
    s = t.smtp(delay_data=0.1)
    rec = Received(s.dir, ".json")
    e = t.env(r, s, HERALD_HEARTBEAT_S=2, HERALD_CONCURRENCY=conc,
              HERALD_RETRY_MAX_ATTEMPTS=1000, HERALD_SMTP_TIMEOUT_S=10)
    jobs = bulk_jobs(n, "kw")
    ids = [j["id"] for j in jobs]
    push_jobs(r, t.prefix, jobs)
    t0 = time.monotonic()
    live = [c.worker(e, f"w{i}") for i in (1, 2, 3)]
    next_id = 4
    kills = []
    progress = (0, time.monotonic())
    while True:
        time.sleep(c.rng.uniform(2.0, 3.0))
        got = rec.count()
        if got != progress[0]:
            progress = (got, time.monotonic())
        if rec.distinct() >= n:
            break
        if time.monotonic() - t0 > (300 if c.full else 90):
            c.failures.append(f"kill loop stopped after {time.monotonic() - t0:.0f}s with "
                              f"{rec.distinct()} of {n} delivered")
            break
        cnt = redis_counts(r, t.prefix)
        if not cnt["queued"] and not cnt["processing"]:
            # nothing left to kill a worker over (and no kill to count)
            if time.monotonic() - progress[1] > 15:
                c.failures.append(f"run stalled: no delivery for 15 s, nothing queued or in "
                                  f"processing, {rec.distinct()} of {n} delivered")
                break
            continue
        victim = c.rng.choice(live)
        victim.kill()
        live.remove(victim)
        same = {"same": True, "new": False}.get(c.restart_ids, len(kills) % 2 == 1)
        wid = victim.wid if same else f"w{next_id}"
        if not same:
            next_id += 1
        kills.append({"at_s": round(time.monotonic() - t0, 2), "worker": victim.wid,
                      "pid": victim.pid, "replacement": wid,
                      "delivered_before": rec.count()})
        live.append(c.worker(e, wid))
    c.details["kills"] = kills
    c.settle(lambda: rec.distinct() >= n and drained(r, t.prefix), 120,
             f"all {n} delivered and Redis drained after {len(kills)} kills",
             stuck=lambda: drained(r, t.prefix),
             progress=rec.distinct)
    c.details["run_s"] = round(time.monotonic() - t0, 1)
    c.check(len(kills) >= (5 if c.full else 2),
            f"only {len(kills)} kill(s) landed before the run finished: too short to test")
    for w in live:
        c.check(w.alive(), f"worker {w.wid} died on its own: {w.stderr()[-300:]}")
    c.collect(r, e, ids, rec.ids(), lambda _: {"sent"}, len(kills) * conc,
              "kills x HERALD_CONCURRENCY")
    if c.fig["_lost_all"]:
        # whose claim do the lost jobs' ledgers still name, and was that id
        # restarted (same id) after a kill?
        owners = collections.Counter(ledger_of(r, t.prefix, j).get("owner")
                                     for j in c.fig["_lost_all"])
        same = sorted({k["worker"] for k in kills if k["replacement"] == k["worker"]})
        c.details["lost_ledger_owners"] = dict(owners)
        c.notes.insert(0, f"ledger owners of the lost jobs (state inflight): {dict(owners)}; "
                       f"ids restarted under the same id after a SIGKILL: {same}")


def sc_redis_restart(c):
    """Redis with AOF (appendfsync always, as harness Redis starts it)
    SIGKILLed mid-run and restarted on the same port and dir after ~1 s —
    once in the reduced form (at ~15% delivered), twice in the full form
    (~15% and ~60%). Two workers, HERALD_CONCURRENCY=16, 2,000 / 5,000
    jobs. Expect: the workers survive, every job sent, none lost;
    duplicates <= Redis kills x workers x HERALD_CONCURRENCY (what was in
    flight: a message accepted while its ledger write could not reach
    Redis is sent again)."""
    t = c.t
    n = 5000 if c.full else 2000
    conc, nw = 16, 2
    r = t.redis(aof=True)
    c.details["redis_appendfsync"] = r.cmd("CONFIG", "GET", "appendfsync")[1].decode()
    c.details["redis_appendonly"] = r.cmd("CONFIG", "GET", "appendonly")[1].decode()
    s = t.smtp(delay_data=0.02)
    rec = Received(s.dir, ".json")
    e = t.env(r, s, HERALD_CONCURRENCY=conc, HERALD_RETRY_MAX_ATTEMPTS=1000)
    jobs = bulk_jobs(n, "rr")
    ids = [j["id"] for j in jobs]
    push_jobs(r, t.prefix, jobs)
    t0 = time.monotonic()
    ws = [c.worker(e, f"w{i}") for i in range(1, nw + 1)]
    kills = []
    for frac in ((0.15, 0.6) if c.full else (0.15,)):
        if c.settle(lambda: rec.count() >= n * frac, 120, f"{int(n * frac)} deliveries") is None:
            break
        at = rec.count()
        r.kill()
        time.sleep(1.0)
        alive = [w.wid for w in ws if w.alive()]
        r.restart()
        kills.append({"at_s": round(time.monotonic() - t0, 2), "delivered_before": at,
                      "workers_alive_while_down": alive})
        c.check(at < n * 0.95, f"Redis killed only after {at} of {n} deliveries: too late")
        c.check(len(alive) == nw, f"workers died while Redis was down: alive {alive}")
    c.details["redis_kills"] = kills
    c.settle(lambda: rec.distinct() >= n and drained(r, t.prefix), 120,
             f"all {n} delivered and Redis drained after the restart(s)",
             stuck=lambda: drained(r, t.prefix),
             progress=rec.distinct)
    c.details["run_s"] = round(time.monotonic() - t0, 1)
    for w in ws:
        c.check(w.alive(), f"worker {w.wid} died: {w.stderr()[-300:]}")
    c.collect(r, e, ids, rec.ids(), lambda _: {"sent"}, len(kills) * nw * conc,
              "redis kills x workers x HERALD_CONCURRENCY")


def _transient(c, mode, code, n, probe, env_over=None, server=None, nw=2, times=None):
    """A server that misbehaves (evil_smtpd --mode MODE) until told to
    behave: all n jobs pushed; once `probe` shows every job refused at least
    once, and at least 3 s (full: 8 s) after the start, the flag file
    appears and the server serves normally (with `times`: the server
    misbehaves for its first `times` messages only). Expect: every
    job sent (retried; HERALD_RETRY_BASE_S=1, CAP 2, MAX_ATTEMPTS 1000 so
    retries come fast and never expire), none lost, none dead, no
    duplicates (nothing was accepted during the bad phase), and every job
    the server refused has MC attempts > 1."""
    t = c.t
    flag = t.path("behave")
    opts = dict(server or {})
    if times is not None:
        opts["times"] = times
    else:
        opts["until_file"] = flag
    ev = Evil(t, mode, **opts)
    r = t.redis()
    over = {"HERALD_RETRY_MAX_ATTEMPTS": 1000, "HERALD_RETRY_MAX_AGE_S": 3600}
    over.update(env_over or {})
    e = t.env(r, None, HERALD_RELAY=ev.url, **over)
    jobs = bulk_jobs(n, mode)
    ids = [j["id"] for j in jobs]
    push_jobs(r, t.prefix, jobs)
    t0 = time.monotonic()
    for i in range(1, nw + 1):
        c.worker(e, f"w{i}")
    refused = set()
    if times is None:
        def all_refused():
            refused.update(probe(ev, e))
            return refused >= set(ids)

        dt = c.settle(all_refused, 90 if c.full else 40,
                      f"every job refused once by the {mode} server", interval=0.5,
                      progress=lambda: len(refused))
        # and for a while longer: several rounds of backoff against it
        min_bad = 8 if c.full else 3
        while time.monotonic() - t0 < min_bad:
            time.sleep(0.1)
        c.details["bad_phase_s"] = round(time.monotonic() - t0, 1)
        early = ev.received.count()
        open(flag, "w").close()
        c.check(dt is not None, f"only {len(refused)} of {n} jobs saw the {code}")
        c.check(early == 0, f"{early} messages accepted during the bad phase")
    c.settle(lambda: ev.received.distinct() >= n and drained(r, t.prefix), 120,
             f"all {n} delivered and Redis drained once the server behaves",
             stuck=lambda: drained(r, t.prefix),
             progress=ev.received.distinct)
    c.details["run_s"] = round(time.monotonic() - t0, 1)
    mc, dead, _, _, _ = c.collect(r, e, ids, ev.received.ids(), lambda _: {"sent"}, 0,
                                  "nothing accepted twice")
    return ev, e, mc, dead, refused


def _mc_refused(code):
    """Probe: ids whose MC record carries the server's `code` in
    last_error / smtp_reply (connection-level refusals name no job)."""
    def probe(ev, e):
        out = set()
        for jid, rec in mc_all(e).items():
            text = (rec.get("last_error") or "") + " " + (rec.get("smtp_reply") or "")
            if code in text and (rec.get("attempts") or 0) >= 1:
                out.add(jid)
        return out
    return probe


def _server_refused(kind):
    """Probe: ids the server itself refused (its events name the job)."""
    return lambda ev, e: {x.get("herald_id") for x in ev.events(kind)} - {None}


def _attempts_checks(c, mc, refusals_by_id, exact):
    """Every refused job: MC attempts > 1; with exact, attempts ==
    the server's refusals of it + 1 (SPEC §6: attempts made, the
    successful one included)."""
    bad_gt1, bad_exact = [], []
    for jid, k in refusals_by_id.items():
        a = (mc.get(jid) or {}).get("attempts") or 0
        if a <= 1:
            bad_gt1.append(f"{jid} attempts={a}")
        if exact and a != k + 1:
            bad_exact.append(f"{jid} attempts={a}, server refused it {k} time(s)")
    c.check(not bad_gt1, f"{len(bad_gt1)} retried jobs with MC attempts <= 1: {bad_gt1[:5]}")
    c.check(not bad_exact, f"{len(bad_exact)} jobs whose MC attempts != refusals + 1: "
            f"{bad_exact[:5]}")
    hist = collections.Counter((mc.get(j) or {}).get("attempts") for j in mc)
    c.details["mc_attempts_histogram"] = {str(k): v for k, v in sorted(hist.items(), key=str)}
    c.details["mc_retries_total"] = sum(max(0, (r.get("attempts") or 0) - 1) for r in mc.values())


def sc_smtp_421_connect(c):
    """The relay answers "421 4.3.2 too busy" at connect until every job
    has been refused once (the MC records name the 421), then serves.
    Expect all sent, attempts > 1 for every job, none dead, none lost."""
    n = 2000 if c.full else 300
    ev, e, mc, dead, refused = _transient(c, "connect421", "421", n, _mc_refused("421"))
    c.details["refused_connections"] = len(ev.events("refused_connect"))
    c.check(c.details["refused_connections"] >= 1, "the server never refused a connection")
    _attempts_checks(c, mc, {j: 1 for j in refused}, exact=False)
    c.check(not dead, f"{len(dead)} dead letters for a transient failure")


def sc_smtp_451_data(c):
    """The relay answers "451 4.3.0" at the end of DATA until every job
    has had one, then accepts. Expect all sent, none dead or lost, and
    each job's MC attempts == the server's 451s for it + 1."""
    n = 2000 if c.full else 300
    ev, e, mc, dead, refused = _transient(c, "data451", "451", n,
                                          _server_refused("tempfail_data"))
    per = collections.Counter(x["herald_id"] for x in ev.events("tempfail_data"))
    c.details["tempfails"] = sum(per.values())
    _attempts_checks(c, mc, per, exact=True)
    c.check(not dead, f"{len(dead)} dead letters for a transient failure")


def sc_smtp_drop_mid_data(c):
    """The relay reads part of each message's DATA and drops the
    connection, until every job has been cut once; then it accepts.
    Expect all sent, none dead or lost, no duplicates, and each job's MC
    attempts == drops of it + 1."""
    n = 2000 if c.full else 300
    ev, e, mc, dead, refused = _transient(c, "drop-mid-data", "closed", n,
                                          _server_refused("dropped_mid_data"))
    per = collections.Counter(x["herald_id"] for x in ev.events("dropped_mid_data"))
    c.details["drops"] = sum(per.values())
    _attempts_checks(c, mc, per, exact=True)
    c.check(not dead, f"{len(dead)} dead letters for a transient failure")


def sc_smtp_stall(c):
    """The relay never answers the end of DATA for its first K messages
    (K = 96 reduced / 400 full, HERALD_CONCURRENCY=32 and 2 workers), with
    HERALD_SMTP_TIMEOUT_S=2; after that it answers at once. Expect all
    sent, none dead or lost, no duplicates (a stalled message was never
    accepted), each stalled job's MC attempts == its stalls + 1, and the
    stalled jobs' retries come no sooner than the timeout."""
    n = 2000 if c.full else 300
    k = 400 if c.full else 96
    ev, e, mc, dead, _ = _transient(c, "stall-data", "timed out", n, None,
                                    env_over={"HERALD_SMTP_TIMEOUT_S": 2,
                                              "HERALD_CONCURRENCY": 32}, times=k)
    stalls = ev.events("stalled")
    per = collections.Counter(x["herald_id"] for x in stalls)
    c.details["stalls"] = len(stalls)
    c.check(len(stalls) == k, f"{len(stalls)} stalls, the server was set for {k}")
    _attempts_checks(c, mc, per, exact=True)
    c.check(not dead, f"{len(dead)} dead letters for a transient failure")
    # a stalled attempt is cut at the timeout: the job's next try at the
    # server comes >= 2 s after the stall began
    evs = ev.events()
    early = []
    for i, x in enumerate(evs):
        if x.get("event") != "stalled":
            continue
        nxt = next((y for y in evs[i + 1:] if y.get("herald_id") == x["herald_id"]
                    and y.get("event") in ("stalled", "accepted")), None)
        if nxt and nxt["at"] - x["at"] < 1.9:
            early.append(f"{x['herald_id']} retried {nxt['at'] - x['at']:.2f}s after its stall")
    c.check(not early, f"{len(early)} retries before HERALD_SMTP_TIMEOUT_S: {early[:5]}")


def sc_smtp_535_auth(c):
    """The relay requires AUTH (HERALD_RELAY_USER / PASSWORD; loopback,
    so without TLS) and answers every AUTH with "535 5.7.8" until every
    job's MC record shows the 535; then it accepts those credentials.
    Today's worker treats a refused relay login as transient (SPEC §4 marks
    only schemes auth_failed): expect all sent once the login works, none
    dead or lost, attempts > 1 everywhere."""
    n = 2000 if c.full else 300
    ev, e, mc, dead, refused = _transient(
        c, "auth535", "535", n, _mc_refused("535"),
        env_over={"HERALD_RELAY_USER": "relayuser", "HERALD_RELAY_PASSWORD": "relaypass"},
        server={"user": "relayuser", "password": "relaypass"})
    c.details["auth_refused"] = len(ev.events("auth_refused"))
    c.details["auth_ok"] = len(ev.events("auth_ok"))
    c.check(c.details["auth_ok"] >= 1, "the worker never logged in once the server accepted")
    c.check(not any(x.get("wrong") for x in ev.events("auth_refused")),
            "the worker sent wrong credentials")
    _attempts_checks(c, mc, {j: 1 for j in refused}, exact=False)
    c.check(not dead, f"{len(dead)} dead letters: the relay login refusal was treated as "
            f"permanent ({collections.Counter(d.get('reason') for d in dead)})")


def sc_smtp_552_size(c):
    """A relay limited to 20,000 bytes: every 4th job carries a 30,000-byte
    body. Two phases on one Redis / Message Center: first a server that
    offers "SIZE 20000" (the 552 comes at MAIL FROM SIZE=), then one that
    offers no SIZE (the 552 comes at the end of DATA). Expect the large
    jobs failed — dead letter reason "rejected" naming the 552, MC status
    failed, attempts 1, refused exactly once by the server — and the
    others sent; none lost."""
    t = c.t
    n = 2000 if c.full else 200
    limit = 20000
    big = "0123456789abcdefghijklmnopqrstuvwxyz" * 40 + "\n"
    r = t.redis()
    jobs = []
    for i in range(n):
        j = bulk_jobs(1, "sz")[0]
        j["id"] = f"sz-{i:05d}"
        if i % 4 == 3:
            j["text"] = big * (30000 // len(big) + 1)
        jobs.append(j)
    ids = [j["id"] for j in jobs]
    large = {j["id"] for j in jobs if len(j["text"]) > limit}
    e = None
    delivered = []
    t0 = time.monotonic()
    phase_rej = {}
    for phase, part in (("mail", jobs[: n // 2]), ("data", jobs[n // 2:])):
        ev = Evil(t, "size552", max_size=limit, size_at=phase)
        e = t.env(r, None, HERALD_RELAY=ev.url)
        push_jobs(r, t.prefix, part)
        ws = [c.worker(e, f"{phase}{i}") for i in (1, 2)]
        pids = {j["id"] for j in part}
        want_small = len(pids - large)
        want_large = len(pids & large)
        c.settle(lambda: ev.received.distinct() >= want_small
                 and len([d for d in dead_all(e) if d["_id"] in pids]) >= want_large
                 and drained(r, t.prefix), 90,
                 f"phase {phase}: {want_small} sent and {want_large} dead", interval=0.5)
        time.sleep(1.5)  # a wrong retry of a 552 would show up by now
        for w in ws:
            if w.alive():
                rc = w.stop()
                c.check(rc == 0, f"worker {w.wid} exited {rc} on SIGTERM")
        delivered += ev.received.ids()
        rej = ev.events("rejected_size")
        phase_rej[phase] = {"rejections": len(rej),
                            "at": dict(collections.Counter(x["at_command"] for x in rej))}
        c.check(len(rej) == want_large,
                f"phase {phase}: the server refused {len(rej)} times for {want_large} "
                "large jobs (a 552 must not be retried)")
    c.details["phases"] = phase_rej
    c.details["run_s"] = round(time.monotonic() - t0, 1)
    mc, dead, _, _, _ = c.collect(r, e, ids, delivered,
                                  lambda j: {"failed"} if j in large else {"sent"}, 0,
                                  "nothing accepted twice")
    bad = []
    for d in dead:
        if d["_id"] in large and (d.get("reason") != "rejected" or "552" not in
                                  (d.get("error") or "")):
            bad.append(f"{d['_id']}: reason {d.get('reason')!r} error {d.get('error')!r}")
    c.check(not bad, f"{len(bad)} dead letters not 'rejected' with the 552: {bad[:3]}")
    bad = []
    for jid in large:
        rec = mc.get(jid) or {}
        text = (rec.get("smtp_reply") or "") + (rec.get("last_error") or "")
        if rec.get("status") != "failed" or rec.get("attempts") != 1 or "552" not in text:
            bad.append(f"{jid}: status {rec.get('status')} attempts {rec.get('attempts')} "
                       f"reply {text[:80]!r}")
    c.check(not bad, f"{len(bad)} large jobs' MC records not failed/1 attempt/552: {bad[:3]}")


def _next_utc_day(ts):
    d = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).date()
    nd = datetime.datetime.combine(d + datetime.timedelta(days=1), datetime.time(),
                                   datetime.timezone.utc)
    return nd.timestamp()


def _org_set(c, e, r, org, limit):
    """`heraldctl org set ORG --relay-daily-limit N` (SPEC §7). When this
    heraldctl lacks the command the scenario fails for it, and goes on with
    the documented storage contract (common/org.h) written directly, so the
    worker side is still measured."""
    cp = harness.run("heraldctl", "org", "set", org, "--relay-daily-limit", limit, env=e)
    if cp.returncode == 0:
        return "heraldctl"
    c.failures.append(f"heraldctl org set {org} --relay-daily-limit {limit} exited "
                      f"{cp.returncode}: {cp.stderr.strip()[:200]}")
    now = utc_iso(time.time())
    value = json.dumps({"org": org, "relay_daily_limit": limit, "updated_at": now},
                       separators=(",", ":"))
    r.cmd("HSET", f"{c.t.prefix}:orgs", org, value)
    r.cmd("INCR", f"{c.t.prefix}:orgs:version")
    c.notes.append("org limit written to <prefix>:orgs directly (common/org.h contract)")
    return "redis (org.h contract)"


def sc_quota_midrun(c):
    """An organisation with a relay daily limit of 150 recipients
    (`heraldctl org set quota-org --relay-daily-limit 150`) and 200
    single-recipient jobs for it on the relay path (SPF temperror), three
    workers racing, plus 30 jobs of an organisation without a limit.
    Expect (SPEC §5): exactly 150 of quota-org's jobs sent, the other 50
    pending — MC status "deferred", next_attempt_at = the start of the
    next UTC day + at most 60 s, body in <prefix>:scheduled due then —
    nothing failed, none lost; every control job sent."""
    t = c.t
    limit, n, nctl = 150, 200, 30
    r = t.redis()
    s = t.smtp()
    rec = Received(s.dir, ".json")
    e = t.env(r, s)
    c.details["org_set_via"] = _org_set(c, e, r, "quota-org", limit)
    jobs = bulk_jobs(n, "qo", org="quota-org", **{"from": "billing@quota-org.test"})
    ctl_jobs = bulk_jobs(nctl, "qc", org="free-org", **{"from": "billing@free-org.test"})
    qids = [j["id"] for j in jobs]
    ids = qids + [j["id"] for j in ctl_jobs]
    mixed = [x for pair in zip(jobs, ctl_jobs) for x in pair] + jobs[nctl:]
    push_jobs(r, t.prefix, mixed)
    t0 = time.monotonic()
    for i in (1, 2, 3):
        c.worker(e, f"w{i}")
    qset = set(qids)

    def settled():
        got = set(rec.ids())
        cnt = redis_counts(r, t.prefix)
        return (len(got & qset) >= limit and len(got) - len(got & qset) >= nctl
                and cnt["queued"] == 0 and cnt["processing"] == 0)

    c.settle(settled, 40, f"{limit} quota-org jobs and {nctl} control jobs delivered")
    time.sleep(2.0)  # over-sending would show up by now
    c.details["run_s"] = round(time.monotonic() - t0, 1)
    t_end = time.time()
    delivered = rec.ids()
    mc, dead, holdings, due, wait = c.collect(
        r, e, ids, delivered, lambda j: {"sent", "pending"} if j in qset else {"sent"}, 0,
        "no kills, no faults")
    states = c.fig["_states"]
    q_sent = sum(1 for j in qids if states[j] == "sent")
    q_pend = [j for j in qids if states[j] == "pending"]
    c.details["quota_org"] = {"sent": q_sent, "pending": len(q_pend), "limit": limit}
    c.check(q_sent == limit, f"quota-org: {q_sent} sent, the daily limit is {limit}")
    c.check(len(q_pend) == n - limit, f"quota-org: {len(q_pend)} pending, want {n - limit}")
    lo_ok = _next_utc_day(t_end)
    bad = []
    for j in q_pend:
        m = mc.get(j) or {}
        nxt = m.get("next_attempt_at")
        start = _next_utc_day(parse_iso(m["updated_at"])) if m.get("updated_at") else lo_ok
        if m.get("status") != "deferred" or not nxt:
            bad.append(f"{j}: MC status {m.get('status')} next_attempt_at {nxt}")
            continue
        at = parse_iso(nxt)
        if not (start <= at <= start + 60):
            bad.append(f"{j}: next_attempt_at {nxt}, want {utc_iso(start)} + <= 60 s")
        if "scheduled" not in holdings.get(j, ()):
            bad.append(f"{j}: not in <prefix>:scheduled ({holdings.get(j)})")
        elif not (start * 1000 <= due[j] <= (start + 60) * 1000):
            bad.append(f"{j}: scheduled for {utc_iso(due[j] / 1000)}")
    c.check(not bad, f"{len(bad)} deferred jobs not as SPEC §5 says: {bad[:4]}")
    day = int(datetime.datetime.combine(
        datetime.datetime.now(datetime.timezone.utc).date(), datetime.time(),
        datetime.timezone.utc).timestamp() * 1000)
    counter = r.cmd("GET", f"{t.prefix}:quota:org:quota-org:day:{day}")
    c.details["quota_counter"] = counter.decode() if counter else None
    c.details["quota_wait_ids"] = len(wait)


def sc_quota_scheme_minute(c):
    """An Email Sending Scheme with --minute-limit 20 (STARTTLS + AUTH test
    server, as tests/integration/test_scheme_path.py sets up) and 30
    single-recipient jobs from its address, three workers. Expect (SPEC
    §5): no UTC minute sees more than 20 deliveries at the scheme's server;
    jobs beyond the limit are deferred to the start of the next minute (+
    at most 6 s jitter; MC status "deferred") and go out then — in the
    full form the run waits for all 30 sent, in the reduced form the rest
    may still be pending (deferred); none failed, none lost, the relay
    sees nothing."""
    from test_tls import TlsSmtp, make_ca

    t = c.t
    limit, n = 20, 30
    # not within 10 s of a minute's end: the first window must hold the burst
    sec = time.time() % 60
    if sec > 48:
        time.sleep(61 - sec)
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, auth="orguser:right-pw")
    orgrec = Received(org.dir, ".json")
    r = t.redis()
    relay = t.smtp()
    kf = t.path("herald.key")
    with open(kf, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(kf, 0o600)
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=kf)
    cp = harness.run("heraldctl", "scheme", "add", "--org", "acme", "--email",
                     "billing@acme.test", "--smtp-host", "127.0.0.1", "--smtp-port", org.port,
                     "--username", "orguser", "--password-stdin", "--tls", "starttls",
                     "--minute-limit", limit, env=e, input="right-pw\n")
    if not c.check(cp.returncode == 0, f"scheme add --minute-limit: {cp.stderr.strip()[:200]}"):
        return
    jobs = bulk_jobs(n, "qm")
    ids = [j["id"] for j in jobs]
    push_jobs(r, t.prefix, jobs)
    t0 = time.monotonic()
    for i in (1, 2, 3):
        c.worker(e, f"w{i}")
    if c.full:
        c.settle(lambda: orgrec.distinct() >= n and drained(r, t.prefix), 90,
                 f"all {n} sent through the scheme")
    else:
        c.settle(lambda: orgrec.distinct() >= limit and
                 redis_counts(r, t.prefix)["queued"] == 0 and
                 redis_counts(r, t.prefix)["processing"] == 0, 30,
                 f"{limit} sent through the scheme")
        time.sleep(2.0)
    c.details["run_s"] = round(time.monotonic() - t0, 1)
    per_min = collections.Counter()  # acceptance time = the .eml's mtime
    for name in os.listdir(org.dir):
        if name.endswith(".eml"):
            per_min[int(os.stat(os.path.join(org.dir, name)).st_mtime // 60)] += 1
    c.details["deliveries_per_utc_minute"] = {utc_iso(k * 60): v for k, v in
                                              sorted(per_min.items())}
    mc, dead, holdings, due, wait = c.collect(
        r, e, ids, orgrec.ids() + Received(relay.dir, ".json").ids(),
        (lambda j: {"sent"}) if c.full else (lambda j: {"sent", "pending"}), 0,
        "no kills, no faults")
    c.check(relay.count() == 0, f"the relay received {relay.count()} of the scheme's jobs")
    over = {k: v for k, v in c.details["deliveries_per_utc_minute"].items() if v > limit}
    c.check(not over, f"minutes with more than {limit} deliveries: {over}")
    bad = []
    for j in ids:
        if c.fig["_states"][j] != "pending":
            continue
        m = mc.get(j) or {}
        nxt = m.get("next_attempt_at")
        if m.get("status") != "deferred" or not nxt:
            bad.append(f"{j}: MC status {m.get('status')} next_attempt_at {nxt}")
            continue
        start = (int(parse_iso(m["updated_at"]) // 60) + 1) * 60
        if not (start <= parse_iso(nxt) <= start + 6):
            bad.append(f"{j}: next_attempt_at {nxt}, want {utc_iso(start)} + <= 6 s")
    c.check(not bad, f"{len(bad)} deferred jobs not as SPEC §5 says: {bad[:4]}")


SCENARIOS = [
    ("kill-workers", sc_kill_workers),
    ("redis-restart", sc_redis_restart),
    ("smtp-421-connect", sc_smtp_421_connect),
    ("smtp-451-data", sc_smtp_451_data),
    ("smtp-552-size", sc_smtp_552_size),
    ("smtp-drop-mid-data", sc_smtp_drop_mid_data),
    ("smtp-stall", sc_smtp_stall),
    ("smtp-535-auth", sc_smtp_535_auth),
    ("quota-midrun", sc_quota_midrun),
    ("quota-scheme-minute", sc_quota_scheme_minute),
]


# ---------------------------------------------------------------- runner


def _alarm(signum, frame):
    raise ScenarioTimeout("scenario took longer than its time limit")


def run_scenario(name, fn, full, seed, run_dir, keep, restart_ids="alternate"):
    d = tempfile.mkdtemp(prefix=f"{name}-", dir=run_dir)
    t = harness.Case(name, dir=d, prefix="hf" + uuid.uuid4().hex[:10])
    harness._set_current(t)
    c = Ctx(t, full, seed, restart_ids)
    t0 = time.monotonic()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(900 if full else 150)
    try:
        fn(c)
    except (Exception, ScenarioTimeout) as e:  # noqa: B902 - every failure is reported
        c.failures.append(f"aborted: {type(e).__name__}: {e}")
        c.notes.append(traceback.format_exc(limit=6))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        t.kill_all()
        harness._set_current(None)
    for where, text in t.sanitizer_reports():
        c.failures.append(f"sanitizer report in {where}: {text[:400]}")
    dt = time.monotonic() - t0
    fig = c.fig or {}
    if c.fig is None:
        c.failures.append("no accounting (the scenario stopped before it)")
    else:
        if fig["lost"]:
            c.failures.append(f"{fig['lost']} job(s) LOST: {fig['lost_ids'][:10]}")
        if fig["duplicates"] > fig["dup_bound"]:
            c.failures.append(f"{fig['duplicates']} duplicates above the bound "
                              f"{fig['dup_bound']}: {fig['duplicate_examples'][:5]}")
        if fig["unexpected"]:
            c.failures.append(f"{fig['unexpected']} job(s) in an unexpected state: "
                              f"{fig['unexpected_examples'][:5]}")
        if fig["stray_deliveries"]:
            c.failures.append(f"deliveries of ids never pushed: {fig['stray_deliveries'][:5]}")
    ok = not c.failures
    line = (f"fault {name}: jobs={fig.get('jobs', '?')} sent={fig.get('sent', '?')} "
            f"failed={fig.get('failed', '?')} pending={fig.get('pending', '?')} "
            f"lost={fig.get('lost', '?')} duplicates={fig.get('duplicates', '?')} "
            f"(bound {fig.get('dup_bound', '?')} = {c.bound_rule or '?'}) "
            f"time={dt:.1f}s  {'PASS' if ok else 'FAIL'}")
    print(line, flush=True)
    for f in c.failures:
        print(f"    - {f}"[:1200], flush=True)
    if not ok:
        for n in c.notes:
            print(f"    . {n}"[:1500], flush=True)
        print(f"    kept {d}", flush=True)
    elif not keep:
        shutil.rmtree(d, ignore_errors=True)
    fig.pop("_states", None)
    fig.pop("_lost_all", None)
    return {
        "scenario": name, "pass": ok, "time_s": round(dt, 1), "line": line,
        **{k: fig.get(k) for k in ("jobs", "sent", "failed", "pending", "lost", "duplicates",
                                   "dup_bound")},
        "dup_bound_rule": c.bound_rule, "failures": c.failures, "notes": c.notes,
        "accounting": fig, "details": c.details,
        "dir": d if (not ok or keep) else None, "doc": (fn.__doc__ or "").strip(),
    }


def main():
    names = [n for n, _ in SCENARIOS]
    ap = argparse.ArgumentParser(description="Herald fault-injection suite",
                                 epilog="scenarios: " + ", ".join(names))
    ap.add_argument("--full", action="store_true",
                    help="full sizes (also FAULT_FULL=1); default: the reduced form")
    ap.add_argument("--report", help="JSON report path (default <run dir>/report.json)")
    ap.add_argument("--keep", action="store_true", help="keep the dirs of passed scenarios")
    ap.add_argument("--seed", type=int, help="RNG seed (kill timing and victims)")
    ap.add_argument("--restart-ids", choices=("alternate", "new", "same"), default="alternate",
                    help="kill-workers: start each replacement under a new worker id, the "
                    "killed one's id, or alternately (default)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO")
    a = ap.parse_args()
    if a.list:
        for n, fn in SCENARIOS:
            doc = " ".join((fn.__doc__ or "").split())
            print(f"{n}: {doc.split('. ')[0]}.")
        return 0
    unknown = [s for s in a.scenarios if s not in names]
    if unknown:
        print(f"fault: unknown scenario(s) {', '.join(unknown)}; known: {', '.join(names)}",
              file=sys.stderr)
        return 2
    full = a.full or os.environ.get("FAULT_FULL", "") not in ("", "0")
    seed = a.seed if a.seed is not None else int(time.time()) % 100000
    chosen = [(n, fn) for n, fn in SCENARIOS if not a.scenarios or n in a.scenarios]
    for tool in ("herald-worker", "heraldctl"):
        if not os.path.exists(harness.tool_path(tool)):
            print(f"fault: {harness.tool_path(tool)} does not exist (run make)", file=sys.stderr)
            return 2
    selftest_account()
    run_dir = tempfile.mkdtemp(prefix="herald-fault-", dir="/tmp")
    report = a.report or os.path.join(run_dir, "report.json")
    form = "full" if full else "reduced"
    print(f"fault: {len(chosen)} scenario(s), {form} form, binaries from "
          f"{os.environ.get('HERALD_BIN', 'bin')}/, seed {seed}, run dir {run_dir}", flush=True)
    t0 = time.monotonic()
    results = []
    for n, fn in chosen:
        results.append(run_scenario(n, fn, full, seed, run_dir, a.keep, a.restart_ids))
    dt = time.monotonic() - t0
    npass = sum(1 for x in results if x["pass"])
    out = {"form": form, "seed": seed, "restart_ids": a.restart_ids,
           "binaries": os.environ.get("HERALD_BIN", "bin"),
           "started_at": utc_iso(time.time() - dt), "time_s": round(dt, 1),
           "passed": npass, "failed": len(results) - npass, "scenarios": results}
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report, "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(f"fault: {npass} passed, {len(results) - npass} failed in {dt:.0f}s; report {report}",
          flush=True)
    return 0 if npass == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
