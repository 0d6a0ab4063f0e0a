#!/usr/bin/python3
"""bench_ab -- two builds of herald-worker side by side, at the same time.

This VM's speed drifts by a third within minutes, more than most changes
move `make bench`'s figure, so two builds run one after the other compare
the moments as much as the builds. Here each round starts both builds'
workers at once, each with its own redis-server, smtp-sink and Message
Center (SQLite), on the same number of jobs (scripts/bench.py's), and
prints both drain rates and their ratio: the machine's moment is the same
for both. The two share the two cores, so the rates are about half of
`make bench`'s; what the ratio shows is which build does the same work
with less of the machine. A benchmark: it prints figures, asserts
nothing.

Usage: scripts/bench_ab.py DIR_A DIR_B   (each a directory holding a built
       herald-worker, e.g. a worktree's bin/)
Environment: AB_ROUNDS (default 5), BENCH_JOBS (default 30000),
             HERALD_CONCURRENCY (default 32); other HERALD_* pass through;
             AB_ENV_A / AB_ENV_B: "NAME=VALUE ..." for one side only (a
             setting's two values with one build); AB_WORKERS (default
             1): workers a side, sharing that side's store.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("BENCH_JOBS", "30000")
import bench  # noqa: E402  (after BENCH_JOBS: it reads it at import)

ROUNDS = int(os.environ.get("AB_ROUNDS", "5"))
WORKERS = int(os.environ.get("AB_WORKERS", "1"))


def side(tmp, name, bindir):
    """One build's servers: (redis port, smtp port, processes)."""
    rport, sport = bench.free_port(), bench.free_port()
    d = os.path.join(tmp, name)
    os.mkdir(d)
    procs = [subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", d],
                              stdout=subprocess.DEVNULL),
             subprocess.Popen(["/usr/sbin/smtp-sink", "-u", os.environ.get("USER", "root"),
                               "127.0.0.1:%d" % sport, "1024"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    bench.wait_port(rport)
    bench.wait_port(sport)
    return {"name": name, "bin": bindir, "dir": d, "rport": rport, "sport": sport,
            "procs": procs}


def prepare(s, run):
    prefix = "ab%d" % run
    db = os.path.join(s["dir"], "mc%d.db" % run)
    env = dict(os.environ, HERALD_REDIS="redis://127.0.0.1:%d/0" % s["rport"],
               HERALD_RELAY="smtp://127.0.0.1:%d" % s["sport"], HERALD_PREFIX=prefix,
               HERALD_MC="sqlite://" + db, HERALD_CONCURRENCY=str(bench.CONC),
               HERALD_DNS="127.0.0.1:%d" % bench.free_port(), HERALD_WORKER_ID="ab-" + s["name"],
               HERALD_LOG_LEVEL="warn")
    bench.enqueue(s["rport"], prefix, bench.N)
    for kv in os.environ.get("AB_ENV_" + s["name"], "").split():
        k, _, v = kv.partition("=")
        env[k] = v
    s["db"], s["prefix"], s["env"] = db, prefix, env
    s["log"] = os.path.join(s["dir"], "worker%d.log" % run)


def launch(s):
    return [subprocess.Popen([os.path.join(s["bin"], "herald-worker")],
                             env=dict(s["env"], HERALD_WORKER_ID="ab-%s%d" % (s["name"], i)),
                             stderr=open("%s.%d" % (s["log"], i), "w"), stdout=subprocess.DEVNULL)
            for i in range(WORKERS)]


def span(s):
    c = bench.sqlite3.connect(s["db"])
    first, last = c.execute("select min(created_at), max(sent_at) from messages").fetchone()
    c.close()
    return first, last


def sent_between(s, t1, t2):
    c = bench.sqlite3.connect(s["db"])
    n = c.execute("select count(*) from messages where sent_at >= ? and sent_at < ?",
                  (t1, t2)).fetchone()[0]
    c.close()
    return n


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tmp = tempfile.mkdtemp(prefix="herald-ab-")
    sides = [side(tmp, "A", sys.argv[1]), side(tmp, "B", sys.argv[2])]
    print("bench_ab: %d jobs a side, %d worker%s a side, %d rounds, A=%s B=%s"
          % (bench.N, WORKERS, "s" if WORKERS > 1 else "", ROUNDS, sys.argv[1], sys.argv[2]))
    ratios = []
    try:
        for run in range(ROUNDS):
            # both lanes filled first, then both workers started together
            # (in turns, which goes first); each rate counts only the
            # window in which both were running, less the first half
            # second: the faster one alone on the machine at the end would
            # flatter the slower
            for s in sides:
                prepare(s, run)
            order = sides if run % 2 == 0 else sides[::-1]
            ws = [(s, launch(s)) for s in order]
            for s, _ in ws:
                bench.wait_sent(s["db"], bench.N, port=s["rport"], prefix=s["prefix"])
            for _, group in ws:
                for w in group:
                    w.terminate()
                for w in group:
                    w.wait(60)
            spans = [span(s) for s in sides]
            t1 = max(f for f, _ in spans) + 500
            t2 = min(l for _, l in spans)
            if t2 - t1 < 1000:
                print("round %d: the two overlapped for %d ms only; not counted"
                      % (run + 1, t2 - t1))
                continue
            a, b = (sent_between(s, t1, t2) * 1000.0 / (t2 - t1) for s in sides)
            ratios.append(b / a)
            print("round %d: A %6.0f msg/s  B %6.0f msg/s  B/A %.3f" % (run + 1, a, b, b / a))
        if ratios:
            print("B/A median %.3f (min %.3f, max %.3f)"
                  % (statistics.median(ratios), min(ratios), max(ratios)))
        else:
            print("no round counted: more jobs (BENCH_JOBS) make the drains overlap")
    finally:
        for s in sides:
            bench.stop_procs(s["procs"])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
