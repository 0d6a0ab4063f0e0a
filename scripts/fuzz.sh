#!/usr/bin/env bash
# fuzz.sh — builds the libFuzzer targets of tests/fuzz/ with clang
# (ASan + UBSan, leak detection on) and runs each for a fixed time from
# its seed corpus in tests/fuzz/corpus/<target>/.
#
#   FUZZ_SECONDS   seconds per target (default 20)
#   FUZZ_TARGETS   space-separated subset (default: all)
#   FUZZ_JOBS      parallel compile jobs (default: nproc)
#   FUZZ_KEEP=1    keep the work directory even when everything passed
#   CLANG          compiler (default clang)
#
# Prints one line per target and "fuzz: N passed, N failed". Exits 1 when
# a target crashed, leaked, timed out or tripped a sanitizer; the crash
# artifacts and logs stay in the work directory, whose path is printed.
# New inputs libFuzzer finds go to the work directory, never into the
# seed corpora.
set -u

cd "$(dirname "$0")/.." || exit 2
SECONDS_PER=${FUZZ_SECONDS:-20}
TARGETS=${FUZZ_TARGETS:-"fuzz_job fuzz_mime fuzz_spf fuzz_jfast fuzz_tzwin fuzz_dead fuzz_api_params fuzz_smtpreply"}
CLANG=${CLANG:-clang}
JOBS=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}

if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "fuzz: $CLANG not found (apt-get install clang)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/herald-fuzz.XXXXXX") || exit 2
mkdir -p "$WORK/obj" "$WORK/bin" "$WORK/corpus" "$WORK/artifacts" "$WORK/log"

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer $SAN \
 -Icommon -Iio $(pkg-config --cflags jansson openssl sqlite3 libpq libuv)"
LIBS="$(pkg-config --libs jansson openssl sqlite3 libpq libuv) -lresolv -lm"

# common/*.c and io/*.c get coverage instrumentation without libFuzzer's
# main()
build_fail=0
srcs=(common/*.c io/*.c)
# shellcheck disable=SC2016 # the sh -c script expands its own arguments
printf '%s\n' "${srcs[@]}" |
    xargs -P "$JOBS" -I{} sh -c \
        'o="$1/obj/$(basename "$2" .c).o"; $3 $4 -fsanitize=fuzzer-no-link -c "$2" -o "$o" 2>>"$1/log/build.log"' \
        _ "$WORK" {} "$CLANG" "$CFLAGS" || build_fail=1
if [ "$build_fail" -ne 0 ]; then
    cat "$WORK/log/build.log" >&2
    echo "fuzz: building common/*.c and io/*.c failed (logs in $WORK)" >&2
    exit 2
fi

passed=0
failed=0
for t in $TARGETS; do
    src="tests/fuzz/$t.c"
    seeds="tests/fuzz/corpus/${t#fuzz_}"
    bin="$WORK/bin/$t"
    log="$WORK/log/$t.log"
    if [ ! -f "$src" ]; then
        echo "$t: FAIL (no $src)"
        failed=$((failed + 1))
        continue
    fi
    # fuzz_api_params also takes herald-api's parameter parser
    extra=""
    [ "$t" = fuzz_api_params ] && extra="api/params.c -Iapi"
    # fuzz_spf answers from the in-memory DNS double of the tests
    [ "$t" = fuzz_spf ] && extra="tests/spf_zone.c"
    # shellcheck disable=SC2086
    if ! $CLANG $CFLAGS -fsanitize=fuzzer "$src" $extra "$WORK"/obj/*.o $LIBS \
        -o "$bin" >"$log" 2>&1; then
        echo "$t: FAIL (build; see $log)"
        failed=$((failed + 1))
        continue
    fi
    mkdir -p "$WORK/corpus/$t" "$WORK/artifacts/$t"
    # fuzz_tzwin starts from real zone files (tzdata), when installed
    if [ "$t" = fuzz_tzwin ]; then
        for z in UTC Europe/Paris America/New_York Australia/Lord_Howe \
            Africa/Casablanca Pacific/Apia America/Santiago Etc/GMT+5; do
            [ -f "/usr/share/zoneinfo/$z" ] &&
                cp "/usr/share/zoneinfo/$z" "$WORK/corpus/$t/seed_${z//\//_}"
        done
    fi
    set -- "$WORK/corpus/$t"
    [ -d "$seeds" ] && set -- "$@" "$seeds"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$bin" -max_total_time="$SECONDS_PER" -detect_leaks=1 -timeout=10 \
        -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
        -artifact_prefix="$WORK/artifacts/$t/" "$@" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    ncorp=$(find "$WORK/corpus/$t" -type f | wc -l)
    nart=$(find "$WORK/artifacts/$t" -type f | wc -l)
    if [ "$rc" -eq 0 ] && [ "$nart" -eq 0 ]; then
        echo "$t: ok, ${runs:-?} runs in ${secs:-?} s (${rate:-?} exec/s), ${cov:-cov: ?}, $ncorp new inputs"
        passed=$((passed + 1))
    else
        why=$(grep -m1 -o 'ERROR: [A-Za-z]*Sanitizer: [a-z-]*\|ERROR: libFuzzer: [a-z-]*\|fuzz property failed: .*\|runtime error: .*' "$log")
        echo "$t: FAIL (exit $rc: ${why:-see log}); artifacts in $WORK/artifacts/$t, log $log"
        failed=$((failed + 1))
    fi
done

echo "fuzz: $passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
    echo "fuzz: work directory kept: $WORK"
    exit 1
fi
if [ "${FUZZ_KEEP:-0}" = 1 ]; then
    echo "fuzz: work directory kept: $WORK"
else
    rm -rf "$WORK"
fi
exit 0
