#!/bin/sh
# `make fuzz`: build the libFuzzer targets (CMake preset `fuzz`, clang) and
# run each for FUZZ_SECONDS (default 60) over a copy of its committed corpus
# (tests/fuzz/corpus_<name>, with tests/fuzz/<name>.dict when there is one),
# one target at a time. Prints execs/s and any
# crash per target; exits 1 when a target found one. Crash inputs are kept in
# build/fuzz/findings/<name>/: add a fixed one to the corpus so the normal
# suite (fuzz.replay_<name>) keeps it fixed.
# Usage: scripts/fuzz.sh [target...]   (default: every target)
set -eu
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
ALL="purchase_body framing rpc_frame rpc_handshake config_load order_log_replay seglog_recover"
TARGETS=${*:-${FUZZ_TARGETS:-$ALL}}
BUILD=build/fuzz
corpus_of() {
    case "$1" in
        rpc_frame) echo tests/fuzz/corpus_rpc ;;
        seglog_recover) echo tests/fuzz/corpus_seglog ;;
        *) echo "tests/fuzz/corpus_$1" ;;
    esac
}

# clang and its libFuzzer runtime (libclang-rt-dev: libclang-rt-14-dev on
# Debian 12): only this target needs them
scripts/install-deps.sh clang libclang-rt-dev
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j"${JOBS:-2}"

# targets that write files work in TMPDIR: memory, not disk, when there is one
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    TMPDIR=/dev/shm
    export TMPDIR
fi

found=0
summary=""
for t in $TARGETS; do
    bin="$BUILD/tests/fuzz/fuzz_$t"
    src=$(corpus_of "$t")
    if [ ! -x "$bin" ] || [ ! -d "$src" ]; then
        echo "fuzz: unknown target '$t' (targets: $ALL)" >&2
        exit 2
    fi
    run="$BUILD/run/$t"
    rm -rf "$run" "$BUILD/findings/$t" # findings/<target>: this run's only
    mkdir -p "$run/corpus" "$BUILD/findings/$t"
    cp "$src"/* "$run/corpus/" 2>/dev/null || true
    echo "== fuzz_$t: ${SECONDS_EACH}s over $(find "$run/corpus" -type f | wc -l) seed inputs"
    dict=""
    [ -f "tests/fuzz/$t.dict" ] && dict="-dict=tests/fuzz/$t.dict"
    rc=0
    # shellcheck disable=SC2086 # $dict: one argument or none
    "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$BUILD/findings/$t/" $dict "$run/corpus" >"$run/log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$run/log" | tail -n 1)
    cov=$(grep -Eo 'cov: [0-9]+' "$run/log" | tail -n 1 | cut -d' ' -f2)
    crashes=$(grep -Eo 'Test unit written to [^ ]+' "$run/log" | sed 's/Test unit written to //' || true)
    if [ "$rc" -ne 0 ] || [ -n "$crashes" ]; then
        found=1
        verdict="CRASH (exit $rc): ${crashes:-see $run/log}"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*invariant failed|.*runtime error)' "$run/log" | head -n 5 || true
    else
        verdict="no crash"
    fi
    line=$(printf '%-18s %10s execs %8s execs/s  cov %-6s %s' "$t" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "$verdict")
    echo "$line"
    summary="$summary$line
"
done
echo "== fuzz summary (${SECONDS_EACH}s each; logs in $BUILD/run/<target>/log)"
printf '%s' "$summary"
exit "$found"
