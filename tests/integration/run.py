#!/usr/bin/python3
"""Runs Herald's integration tests. See harness.py for the conventions.

    /usr/bin/python3 tests/integration/run.py [-k PATTERN]... [-x] [-j N]
                                              [--store sqlite|postgresql] [FILE ...]

-j N runs the tests in N processes at once (each its own test process:
its own Redis servers, ports, PostgreSQL cluster), then the ones marked
@harness.alone (they measure time: a loaded machine would fail them) by
themselves. Output lines of the processes interleave; counts add up.

--store (default $HERALD_TEST_STORE, else sqlite) is the Message Center
store every test's env() points at: the same tests run against SQLite
and PostgreSQL (a private cluster, a database per test). Tests marked
@harness.stores(...) (or a file's HERALD_STORES) run with those only.

Ends with "integration: N passed, N failed" (", N skipped" when any) and
exits 1 if any test failed (2 on bad usage or when no test was found).
"""

import argparse
import glob
import importlib.util
import inspect
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout("test took longer than its time limit")


def load(path):
    name = "it_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tests = []
    file_stores = getattr(mod, "HERALD_STORES", None)
    for attr, fn in vars(mod).items():
        if attr.startswith("test_") and inspect.isfunction(fn) and fn.__module__ == name:
            if file_stores is not None and not hasattr(fn, "herald_stores"):
                fn.herald_stores = tuple(file_stores)
            tests.append((attr, fn))
    tests.sort(key=lambda t: t[1].__code__.co_firstlineno)
    return tests


def reason_of(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    where = ""
    for fr in reversed(tb):
        if os.path.basename(fr.filename).startswith("test_"):
            where = f" [{os.path.basename(fr.filename)}:{fr.lineno}]"
            break
    msg = str(exc) or type(exc).__name__
    if not isinstance(exc, AssertionError):
        msg = f"{type(exc).__name__}: {msg}"
    return msg.replace("\n", " | ")[:1500] + where


def run_one(name, fn, verbose):
    case = harness.Case(name)
    harness._set_current(case)
    limit = getattr(fn, "herald_timeout", 120)
    t0 = time.monotonic()
    outcome, reason = "PASS", ""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(limit))
    try:
        only = getattr(fn, "herald_stores", None)
        if only is not None and harness.STORE not in only:
            raise harness.Skip(f"runs on {'/'.join(only)} only (store: {harness.STORE})")
        params = inspect.signature(fn).parameters
        if params:
            fn(case)
        else:
            fn()
    except harness.Skip as e:
        outcome, reason = "SKIP", str(e)
    except (Exception, TestTimeout) as e:  # noqa: B902 - report every failure
        outcome, reason = "FAIL", reason_of(e)
        if verbose:
            traceback.print_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        case.kill_all()
        case.drop_stores()
        harness._set_current(None)
    if outcome != "FAIL":
        reports = case.sanitizer_reports()
        if reports:
            outcome = "FAIL"
            where, text = reports[0]
            reason = f"sanitizer report in {where}: " + text.replace("\n", " | ")[:800]
    dt = time.monotonic() - t0
    if outcome == "FAIL":
        print(f"FAIL {name}: {reason}  (kept {case.dir})", flush=True)
    else:
        if outcome == "SKIP":
            print(f"SKIP {name}: {reason}", flush=True)
        else:
            print(f"PASS {name} ({dt:.1f}s)", flush=True)
        shutil.rmtree(case.dir, ignore_errors=True)
    return outcome


def run_shards(args):
    """-j: the tests not alone, in args.j processes; their counts."""
    argv = [sys.executable, os.path.abspath(__file__), "--store", args.store]
    if args.v:
        argv.append("-v")
    for k in args.k:
        argv += ["-k", k]
    procs = [subprocess.Popen(argv + ["--shard", f"{i}/{args.j}", *args.files],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, bufsize=1)
             for i in range(args.j)]
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    import threading

    lock = threading.Lock()

    def pump(p):
        got = False
        for line in p.stdout:
            if line.startswith("shard: "):
                ok, bad, skipped = (int(x) for x in line.split()[1:4])
                with lock:
                    counts["PASS"] += ok
                    counts["FAIL"] += bad
                    counts["SKIP"] += skipped
                got = True
            else:
                with lock:
                    sys.stdout.write(line)
                    sys.stdout.flush()
        if p.wait() not in (0, 1) or not got:
            with lock:
                print(f"FAIL a test process exited {p.returncode} without its counts",
                      flush=True)
                counts["FAIL"] += 1

    threads = [threading.Thread(target=pump, args=(p,)) for p in procs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return counts


def main():
    ap = argparse.ArgumentParser(description="Herald integration tests")
    ap.add_argument("-k", action="append", default=[], metavar="PATTERN",
                    help="run only tests whose name contains PATTERN")
    ap.add_argument("-x", action="store_true", help="stop after the first failure")
    ap.add_argument("-v", action="store_true", help="print tracebacks of failures")
    ap.add_argument("--store", choices=harness.STORES, default=harness.STORE,
                    help="the Message Center store of every test (default: "
                    "$HERALD_TEST_STORE or sqlite)")
    ap.add_argument("-j", type=int, default=1, metavar="N",
                    help="run tests in N processes at once (@harness.alone ones after, alone)")
    ap.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/N", for -j
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    harness.STORE = args.store

    files = args.files or sorted(glob.glob(os.path.join(HERE, "test_*.py")))
    selected = []
    for path in files:
        try:
            tests = load(path)
        except Exception as e:  # noqa: B902 - a broken file is a failure
            print(f"FAIL {os.path.basename(path)}: cannot import: {type(e).__name__}: {e}",
                  flush=True)
            selected.append((os.path.basename(path), None))
            continue
        for name, fn in tests:
            if args.k and not any(k in name for k in args.k):
                continue
            selected.append((name, fn))

    if not selected:
        print("integration: no test matched", file=sys.stderr)
        print("integration: 0 passed, 0 failed")
        return 2

    bindir = os.environ.get("HERALD_BIN", "bin")
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    t0 = time.monotonic()
    if args.shard:
        # one of -j's processes: the i-th share of the tests not alone
        i, n = (int(x) for x in args.shard.split("/"))
        shared = [st for st in selected if not getattr(st[1], "herald_alone", False)]
        selected = shared[i::n]
    else:
        print(f"integration: {len(selected)} test(s), binaries from {bindir}/, "
              f"Message Center on {harness.STORE}"
              + (f", {args.j} at once" if args.j > 1 else ""), flush=True)
    if args.j > 1 and not args.shard:
        counts = run_shards(args)
        selected = [st for st in selected if getattr(st[1], "herald_alone", False)]
    for name, fn in selected:
        if fn is None:
            counts["FAIL"] += 1
        else:
            counts[run_one(name, fn, args.v)] += 1
        if args.x and counts["FAIL"]:
            break
    dt = time.monotonic() - t0
    if args.shard:
        # what the parent counts (not a total line: the parent prints that)
        print(f"shard: {counts['PASS']} {counts['FAIL']} {counts['SKIP']}", flush=True)
        return 1 if counts["FAIL"] else 0
    print(f"integration: {dt:.0f}s", flush=True)
    line = f"integration: {counts['PASS']} passed, {counts['FAIL']} failed"
    if counts["SKIP"]:
        line += f", {counts['SKIP']} skipped"
    print(line, flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
