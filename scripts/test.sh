#!/usr/bin/env bash
# `make check` — the README's test command. On a fresh Debian 12 machine it
# installs what is missing, builds the normal and the sanitizer variants
# with warnings as errors, checks formatting, then runs:
#   unit tests (both builds, and the normal build again three years
#   ahead under libfaketime), the MIME strict-parser check,
#   integration tests with real redis-server / SMTP servers (both builds;
#   the normal build again with the Message Center on PostgreSQL),
#   the fault-injection suite in its reduced form (make fault: full).
# Ends with one line "total: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export HERALD_REQUIRE_BROWSER=1 # the console's browser test may not skip here

scripts/deps.sh || { echo "deps: could not install packages" >&2; exit 1; }

jobs=$(nproc 2>/dev/null || echo 2)
make -j"$jobs" WERROR=-Werror all >/dev/null || { echo "build failed" >&2; make WERROR=-Werror all; exit 1; }
make -j"$jobs" WERROR=-Werror SAN=1 all >/dev/null || { echo "sanitizer build failed" >&2; exit 1; }

pass=0
fail=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Reads "name: N passed, N failed" lines from $log into the totals.
tally() {
  local p f
  while read -r p f; do
    pass=$((pass + p))
    fail=$((fail + f))
  done < <(sed -nE 's/^[A-Za-z0-9_-]+: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p' "$log")
}

step() { # step NAME COMMAND... — runs, shows output, counts a crash as a failure
  echo "== $1"
  shift
  "$@" >"$log" 2>&1
  local rc=$?
  cat "$log"
  local before=$fail
  tally
  if [ $rc -ne 0 ] && [ $fail -eq $before ]; then
    echo "($1 exited $rc without reporting a failure: counted as one)"
    fail=$((fail + 1))
  fi
}

if command -v clang-format >/dev/null; then
  echo "== format"
  if make -s fmt-check >"$log" 2>&1; then
    echo "format: 1 passed, 0 failed"; pass=$((pass + 1))
  else
    head -20 "$log"; echo "format: 0 passed, 1 failed"; fail=$((fail + 1))
  fi
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for b in bin bin-san; do
  for t in "$b"/test_*; do
    [ -x "$t" ] || continue
    step "$t" "$t"
  done
done

# The unit tests again with the clock three years ahead (libfaketime), to
# catch code that reads the real clock where it should take a seam, and
# tests that hold a fixed date. Only the normal build: ASan must be the
# first library loaded, and libfaketime is preloaded.
for t in bin/test_*; do
  [ -x "$t" ] || continue
  step "$t (faketime +1095d)" faketime -f +1095d "$t"
done

mimeout=$(mktemp -d)
step "mime strict parse" bash -c "MIME_OUT='$mimeout' bin/test_mime >/dev/null && /usr/bin/python3 tests/unit/mime_check.py '$mimeout'"
rm -rf "$mimeout"

# Tests mostly wait on their servers: $jobs at a time (the ones that
# measure time, @harness.alone, run by themselves after).
step "integration (bin)" env HERALD_BIN=bin /usr/bin/python3 tests/integration/run.py -j "$jobs"
step "integration (bin-san)" env HERALD_BIN=bin-san /usr/bin/python3 tests/integration/run.py -j "$jobs"
# The same suite with every test's Message Center on PostgreSQL (a private
# cluster per test process): normal build only, to stay within CI's time.
step "integration (bin, PostgreSQL)" env HERALD_BIN=bin /usr/bin/python3 tests/integration/run.py -j "$jobs" --store postgresql
step "fault injection (reduced; make fault: full)" env HERALD_BIN=bin /usr/bin/python3 tests/fault/run.py

echo "total: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
