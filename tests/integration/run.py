#!/usr/bin/python3
"""Runs Herald's integration tests. See harness.py for the conventions.

    /usr/bin/python3 tests/integration/run.py [-k PATTERN]... [-x]
                                              [--store sqlite|postgresql] [FILE ...]

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


def main():
    ap = argparse.ArgumentParser(description="Herald integration tests")
    ap.add_argument("-k", action="append", default=[], metavar="PATTERN",
                    help="run only tests whose name contains PATTERN")
    ap.add_argument("-x", action="store_true", help="stop after the first failure")
    ap.add_argument("-v", action="store_true", help="print tracebacks of failures")
    ap.add_argument("--store", choices=harness.STORES, default=harness.STORE,
                    help="the Message Center store of every test (default: "
                    "$HERALD_TEST_STORE or sqlite)")
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
    print(f"integration: {len(selected)} test(s), binaries from {bindir}/, "
          f"Message Center on {harness.STORE}", flush=True)
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    t0 = time.monotonic()
    for name, fn in selected:
        if fn is None:
            counts["FAIL"] += 1
        else:
            counts[run_one(name, fn, args.v)] += 1
        if args.x and counts["FAIL"]:
            break
    dt = time.monotonic() - t0
    print(f"integration: {dt:.0f}s", flush=True)
    line = f"integration: {counts['PASS']} passed, {counts['FAIL']} failed"
    if counts["SKIP"]:
        line += f", {counts['SKIP']} skipped"
    print(line, flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
