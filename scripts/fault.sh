#!/usr/bin/env bash
# `make fault` — Herald's fault-injection suite (tests/fault/run.py): real
# redis-server, SMTP servers and workers; SIGKILLed workers, a SIGKILLed
# Redis, misbehaving SMTP servers, a quota reached mid-run; every job
# accounted for (sent / failed / pending / lost) and duplicates against
# their bound.
#
#   scripts/fault.sh [--full] [--report PATH] [--keep] [--seed N] [SCENARIO ...]
#   FAULT_FULL=1 scripts/fault.sh          # the full form (also --full)
#
# Without --full it runs the reduced form (about two minutes). Builds the
# binaries first when needed (HERALD_BIN=bin-san: the sanitizer build);
# a failed build fails the run. Ends with
# "fault: N passed, N failed ..." and exits non-zero if any scenario failed.
set -uo pipefail
cd "$(dirname "$0")/.."

bindir=${HERALD_BIN:-bin}
case "$bindir" in
  bin) mk=(make -j2 bin/herald-worker bin/heraldctl) ;;
  bin-san) mk=(make -j2 SAN=1 bin-san/herald-worker bin-san/heraldctl) ;;
  *) mk=() ;;  # a directory of someone else's binaries: used as is
esac
if [ ${#mk[@]} -gt 0 ] && ! "${mk[@]}" >/dev/null; then
  echo "fault: the build failed" >&2
  exit 1
fi

exec /usr/bin/python3 tests/fault/run.py "$@"
