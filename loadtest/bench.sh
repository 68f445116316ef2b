#!/bin/sh
# Benchmark harness: every scenario of the gateway against the HTTP ceiling of
# this machine, measured in the same run, with wrk on loopback.
#
# usage: loadtest/bench.sh [--quick] [--duration SECONDS] [--runs N]
#          [--threads N] [--c10k] [--pace RPS] [--only LIST]
#   --duration S  seconds per scenario (default 10); the flash sale and the
#                 c10k scenario run twice as long (20 s by default)
#   --quick       --duration 3
#   --runs N      runs of each event-park scenario at 256 and 1,000
#                 connections, each with a fresh gateway (default 3)
#   --threads N   wrk threads (default: one per CPU)
#   --c10k        also open 10,000 connections (event park, full path,
#                 wait_timeout_ms = 3000): peak connections, RSS, lateness
#   --pace RPS    the paced scenario's offered req/s (default: 0.51 x the
#                 best ceiling at 256 connections measured before it; without
#                 the ceiling scenario, one ceiling run at 256 first)
#   --only LIST   comma-separated subset of: ceiling,soldout,ratelimited,
#                 full,paced,sale,c10k
# paced: the full path (memory inventory, event park) at 256 connections that
# together offer a fixed rate (run.sh --pace: Poisson send times) instead of
# the closed loop of every other row, --runs times with a fresh gateway each;
# its target is the issue's "p99 <= 5 ms at 256 connections while serving
# >= 0.5 x ceiling" (the achieved req/s, not the offered one, must reach it).
# Before those runs, one run each at 0.2, 0.4, 0.6 and 0.8 x that rate (0.1 to
# 0.4 x ceiling): the latency curve, not judged, summed up under the table as
# the highest offered rate whose p99 stayed within 5 ms. Paced rows also give
# the gateway's own p99 (its histogram, request read to answer) and its CPU
# time a request, and how busy the machine's CPUs were. After them, two rows
# not judged, compared in footnote ²: loadtest/ceiling offered the same rate
# (reference), and the gateway offered it by repeat buyers (hand-off: the
# worker answers "already purchased", so no sale is recorded or fsynced).
# Prints a markdown table (also in loadtest/out/bench.md; SECKILL_BENCH_OUT
# names another directory for every file below), writes the flash
# sale's per-second samples to loadtest/out/sale.csv and plots them into
# loadtest/out/sale.png (gnuplot). Targets are reported, never enforced: the
# exit status is 0 unless a gateway cannot start (69) or an invariant breaks
# (1).
set -eu
# SECKILL_BENCH_OUT relative to where bench.sh was started, not to the cd below
case "${SECKILL_BENCH_OUT:-}" in
"" | /*) ;;
*) SECKILL_BENCH_OUT=$PWD/$SECKILL_BENCH_OUT ;;
esac
cd "$(dirname "$0")/.."

DURATION=10 RUNS=3 THREADS=$(nproc) C10K=0 ONLY="" PACE=""
while [ $# -gt 0 ]; do
    case "$1" in
    --duration|--runs|--threads|--pace|--only)
        [ $# -ge 2 ] || { echo "bench.sh: $1 needs a value" >&2; exit 64; } ;;
    esac
    case "$1" in
    --quick) DURATION=3; shift ;;
    --duration) DURATION=${2%s}; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --c10k) C10K=1; shift ;;
    --only) ONLY=$2; shift 2 ;;
    --pace) PACE=$2; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 64 ;;
    esac
done
case "$DURATION$RUNS$THREADS$PACE" in *[!0-9]*) echo "bench.sh: numbers expected" >&2; exit 64 ;; esac
case "$PACE" in 0*) echo "bench.sh: --pace: expected requests per second > 0 (no leading zeros)" >&2; exit 64 ;; esac
for o in $(printf '%s' "$ONLY" | tr ',' ' '); do
    case "$o" in
    ceiling|soldout|ratelimited|full|paced|sale|c10k) ;;
    *) echo "bench.sh: --only: unknown scenario '$o' (ceiling,soldout,ratelimited,full,paced,sale,c10k)" >&2
       exit 64 ;;
    esac
done
LONG=$((DURATION * 2))

want() {
    [ -z "$ONLY" ] && { [ "$1" != c10k ] || [ "$C10K" = 1 ]; } && return 0
    case ",$ONLY," in *",$1,"*) return 0 ;; esac
    return 1
}

command -v wrk >/dev/null || { echo "bench.sh: wrk is not installed (make deps)" >&2; exit 69; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10100 ] && want c10k; then
    echo "bench.sh: ulimit -n is $(ulimit -n); 10,000 connections need more (raise the hard limit)" >&2
fi

OUT=${SECKILL_BENCH_OUT:-loadtest/out}
mkdir -p "$OUT"
rows="$OUT/rows.tsv" log="$OUT/bench.log"
: > "$rows"
: > "$log"
status=0

# ---------------------------------------------------------------- ceiling ---
CEILING_BIN=${SECKILL_CEILING:-build/release/loadtest/ceiling}
if { want ceiling || { want paced && [ -z "$PACE" ]; }; } && [ ! -x "$CEILING_BIN" ]; then
    echo "bench.sh: building $CEILING_BIN" >&2
    { [ -f build/release/CMakeCache.txt ] || cmake --preset release >/dev/null; } &&
        cmake --build --preset release --target ceiling >/dev/null || true
fi

# row SCENARIO PARK CONNS RPS P50 P99 STATUSES INVARIANTS KIND INFO [GWP99 [CPU [BUSY]]]
#   KIND: ceiling, reject (>= 0.8 x ceiling), full (>= 0.5 x ceiling; its
#   p99 is shown, not judged: closed loop), paced (INFO = offered req/s;
#   >= 0.5 x ceiling achieved and p99 <= 5 ms), sweep (the same at a lower
#   offered rate, not judged), asyncflush (not judged),
#   redis (>= 0.3 x ceiling),
#   sale (INFO = sold/stock), c10k (INFO = RSS KiB; c10kbuy: the same, not
#   judged: it holds every order sold), timeout (INFO = worst
#   lateness ms), none.
#   GWP99: the gateway's own p99 in ms (run.sh's gw_p99_ms; shown for paced,
#   sweep and handoff). CPU: the server's CPU time a request in microseconds
#   (the gateway's for paced, sweep and handoff, run.sh's gw_cpu_us_per_req;
#   the ceiling's for reference rows). BUSY: per cent of the machine's CPUs
#   busy while wrk ran (run.sh's box_busy_pct; every process, wrk too).
#   reference: loadtest/ceiling offered the judged paced rate (INFO = offered
#   req/s), not judged: libmicrohttpd alone at that load. handoff: the
#   gateway at that rate with repeat buyers (INFO = offered req/s), not
#   judged: its path without a sale to record.
#   The ratio and the target verdict are worked out in the report, against
#   the best ceiling measured at the same number of connections.
row() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" \
        "$7" "$8" "$9" "${10}" "${11:--}" "${12:--}" "${13:--}" >> "$rows"
}

# field KEY LINE: the value of KEY=... in a space-separated summary line
field() {
    printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1
}

# statuses plus wrk's socket errors, when there are any
statuses() {
    st_s=$(field statuses "$1")
    for st_e in connect read timeout; do
        st_n=$(field "errors_$st_e" "$1")
        [ -n "$st_n" ] && [ "$st_n" != 0 ] && st_s="$st_s${st_s:+ }${st_e}_err=$st_n"
    done
    printf '%s' "${st_s:--}"
}

# run_ceiling CONNS SCENARIO [PACE]: loadtest/ceiling under wrk, closed loop;
# with PACE, wrk offers PACE req/s as run.sh --pace does, and the row is of
# kind reference
run_ceiling() {
    c_conns=$1 c_pace=${3:-0}
    c_tmp=$(mktemp -d /tmp/seckill-ceiling-XXXXXX)
    "$CEILING_BIN" --listen 127.0.0.1:0 > "$c_tmp/out" 2> "$c_tmp/err" &
    c_pid=$!
    c_port=""
    for _ in $(seq 100); do
        c_port=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\).*|\1|p' "$c_tmp/out")
        [ -n "$c_port" ] && break
        sleep 0.05
    done
    c_line="" c_cpu=- c_busy=-
    if [ -n "$c_port" ]; then
        c_t0=$(loadtest/sample.sh ticks "$c_pid" || true)
        c_cpu0=$(loadtest/sample.sh cpu)
        SECKILL_PACE=$c_pace SECKILL_THREADS=$THREADS \
            wrk -t"$THREADS" -c"$c_conns" -d"${DURATION}s" --latency -s loadtest/seckill.lua \
            "http://127.0.0.1:$c_port" > "$c_tmp/wrk" 2>&1 || true
        c_busy=$(loadtest/sample.sh busy "$c_cpu0")
        c_t1=$(loadtest/sample.sh ticks "$c_pid" || true)
        c_line=$(sed -n 's/^SUMMARY //p' "$c_tmp/wrk")
        c_req=$(field requests "$c_line")
        if [ -n "$c_t0" ] && [ -n "$c_t1" ] && [ "${c_req:-0}" -gt 0 ]; then
            c_cpu=$(awk -v t="$((c_t1 - c_t0))" -v hz="$(getconf CLK_TCK)" -v n="$c_req" \
                'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
        fi
    fi
    kill "$c_pid" 2>/dev/null && wait "$c_pid" 2>/dev/null || true
    echo "ceiling c=$c_conns pace=$c_pace cpu_us_per_req=$c_cpu box_busy_pct=$c_busy: ${c_line:-failed: $(cat "$c_tmp/err" "$c_tmp/wrk" 2>/dev/null | head -n 3)}" >> "$log"
    rm -rf "$c_tmp"
    c_kind=ceiling c_info=-
    [ "$c_pace" -gt 0 ] && c_kind=reference c_info=$c_pace
    if [ -z "$c_line" ]; then
        row "$2" event "$c_conns" - - - "did not run" - none -
        return
    fi
    row "$2" event "$c_conns" "$(field rps "$c_line")" "$(field p50_ms "$c_line")" \
        "$(field p99_ms "$c_line")" "$(statuses "$c_line")" - "$c_kind" "$c_info" - "$c_cpu" "$c_busy"
}

# -------------------------------------------------------------- gateway ---
# gw SCENARIO KIND PARK CONNS [run.sh options...]
LAST=""
gw() {
    g_scen=$1 g_kind=$2 g_park=$3 g_conns=$4
    shift 4
    set +e
    g_line=$(loadtest/run.sh --park "$g_park" --connections "$g_conns" --threads "$THREADS" "$@" 2>>"$log")
    g_rc=$?
    set -e
    LAST=$g_line
    echo "$g_scen park=$g_park c=$g_conns rc=$g_rc: $g_line" >> "$log"
    case $g_rc in
    0|1) ;;
    69) status=69
        row "$g_scen" "$g_park" "$g_conns" - - - "gateway did not start" FAILED none -
        return ;;
    *) row "$g_scen" "$g_park" "$g_conns" - - - "no wrk summary (rc=$g_rc)" - none -
        return ;;
    esac
    [ $g_rc -eq 1 ] && [ "$status" -eq 0 ] && status=1
    case $g_kind in
    sale) g_info="$(field sold "$g_line")/$(field stock "$g_line")" ;;
    c10k|c10kbuy) g_info=$(field rss_hwm_kib "$g_line") ;;
    paced|sweep|handoff) g_info=$(field offered_rps "$g_line") ;;
    timeout) g_info=$(field lateness_max_ms "$g_line") ;;
    *) g_info=- ;;
    esac
    g_inv=$(field invariants "$g_line")
    # a crash at SIGTERM, or what a sanitizer build found (run.sh's stderr is in the log)
    g_exit=$(field gw_exit "$g_line")
    [ -n "$g_exit" ] && [ "$g_exit" != 0 ] && g_inv="$g_inv; gateway exit $g_exit (see $log)"
    row "$g_scen" "$g_park" "$g_conns" "$(field rps "$g_line")" "$(field p50_ms "$g_line")" \
        "$(field p99_ms "$g_line")" "$(statuses "$g_line")" "$g_inv" \
        "$g_kind" "$g_info" "$(field gw_p99_ms "$g_line")" "$(field gw_cpu_us_per_req "$g_line")" \
        "$(field box_busy_pct "$g_line")"
}

# gw_both: RUNS times in event park mode (a fresh gateway each, "run i/N"),
# then once in thread park mode
gw_both() {
    b_scen=$1 b_kind=$2 b_conns=$3
    shift 3
    b_i=1
    while [ "$b_i" -le "$RUNS" ]; do
        b_lbl=$b_scen
        [ "$RUNS" -gt 1 ] && b_lbl="$b_scen, run $b_i/$RUNS"
        gw "$b_lbl" "$b_kind" event "$b_conns" "$@"
        b_i=$((b_i + 1))
    done
    gw "$b_scen" "$b_kind" thread "$b_conns" "$@"
}

D="--duration ${DURATION}s"
BIG=1000000000
# the ceiling is measured before and after the gateway scenarios; ratios use
# the best of them (other load on the machine only ever lowers it)
ceilings() {
    if [ -x "$CEILING_BIN" ]; then
        run_ceiling 256 "ceiling ($1)"
        run_ceiling 1000 "ceiling ($1)"
    else
        row "ceiling" event "256, 1000" - - - "not built ($CEILING_BIN)" - none -
    fi
}
want ceiling && ceilings "fixed 409, MHD only; before"
if want soldout; then
    for c in 256 1000; do
        # shellcheck disable=SC2086
        gw_both "rejection: sold out (409)" reject "$c" $D --stock 0
    done
fi
if want ratelimited; then
    for p in event thread; do
        # shellcheck disable=SC2086
        gw "rejection: token bucket empty (429)" reject "$p" 256 $D --rate 1 --burst 1 \
            --stock "$BIG" --users "$BIG"
    done
fi
if want full; then
    for c in 256 1000; do
        # shellcheck disable=SC2086
        gw_both "full path (memory inventory)" full "$c" $D --stock "$BIG" --users "$BIG"
    done
    # not the default: what the fsync before each answer costs
    # shellcheck disable=SC2086
    gw "full path, [queue] order_flush = async (not the default)" asyncflush event 256 $D \
        --order-flush async --stock "$BIG" --users "$BIG"
    # shellcheck disable=SC2086
    gw "full path (redis backend, separate worker process)" redis event 256 $D --redis \
        --workers 4 --stock "$BIG" --users "$BIG"
fi

if want paced; then
    # the full path at a fixed offered rate: latency at 0.5 x ceiling, which
    # the closed loop above cannot show (its mean latency is 256 / req/s)
    if [ -z "$PACE" ]; then
        # measured again right before the paced runs: this machine's ceiling
        # drifts by tens of percent over a bench, and pacing from one low
        # "before" run offered 0.40 x instead of 0.5 x
        if [ -x "$CEILING_BIN" ]; then
            run_ceiling 256 "ceiling (fixed 409, MHD only; for the pace)"
        fi
        # the best ceiling so far; 0.51: the pacing loses the requests in
        # flight when wrk stops, and the "after" ceiling may come out a little
        # higher than these
        PACE=$(awk -F'\t' '$9 == "ceiling" && $3 == 256 && $4 + 0 > b { b = $4 + 0 }
                          END { if (b > 0) printf "%.0f", b * 0.51 }' "$rows")
    fi
    if [ -z "$PACE" ]; then
        echo "bench.sh: paced: no ceiling at 256 connections to pace against; give --pace RPS" >&2
        row "full path (memory inventory), paced" event 256 - - - "no ceiling to pace against" - none -
    else
        # the latency curve below the judged rate, lowest first
        for f in 0.2 0.4 0.6 0.8; do
            s_rate=$(awk -v p="$PACE" -v f="$f" 'BEGIN { printf "%.0f", p * f }')
            [ "$s_rate" -ge 1 ] || continue # run.sh --pace 0 is the closed loop
            # shellcheck disable=SC2086
            gw "full path (memory inventory), paced at $s_rate req/s" sweep event 256 $D \
                --stock "$BIG" --users "$BIG" --pace "$s_rate"
        done
        p_i=1
        while [ "$p_i" -le "$RUNS" ]; do
            p_lbl="full path (memory inventory), paced at $PACE req/s"
            [ "$RUNS" -gt 1 ] && p_lbl="$p_lbl, run $p_i/$RUNS"
            # shellcheck disable=SC2086
            gw "$p_lbl" paced event 256 $D --stock "$BIG" --users "$BIG" --pace "$PACE"
            p_i=$((p_i + 1))
        done
        # the reference (footnote ²): libmicrohttpd alone at the same load
        if [ -x "$CEILING_BIN" ]; then
            run_ceiling 256 "reference: ceiling, paced at $PACE req/s" "$PACE"
        fi
        # the hand-off alone (footnote ²): the same gateway path, but 100
        # users buy once each and every later request is a repeat buyer the
        # worker answers "already purchased" (409): parse, token, queue,
        # worker, resume and answer, with no sale to record or fsync
        # shellcheck disable=SC2086
        gw "hand-off: repeat buyers (409 already purchased), paced at $PACE req/s" handoff event \
            256 $D --stock "$BIG" --users 100 --pace "$PACE"
    fi
fi

if want full; then
    # every request parks until its deadline (the worker is stopped): how late
    # the gateway answers a timeout, by its own clock
    for p in event thread; do
        gw "timeouts: 1,000 parked until their 1 s deadline" timeout "$p" 1000 --duration 2s \
            --redis --stall-worker --wait-timeout 1000 --stock 1000
    done
fi

SALE=""
if want sale; then
    gw "flash sale: stock 10k, 1M users, ${LONG}s" sale event 1000 --duration "${LONG}s" \
        --stock 10000 --users 1000000 --sample "$OUT/sale.csv"
    SALE=$LAST
    if [ -s "$OUT/sale.csv" ]; then
        if ! command -v gnuplot >/dev/null; then
            echo "bench.sh: gnuplot not installed (make deps); $OUT/sale.csv has the samples" >&2
        elif gnuplot -e "csv='$OUT/sale.csv'; png='$OUT/sale.png'; stock=10000; subtitle='whole sale as wrk saw it: $(field rps "$SALE") req/s, \
p99 $(field p99_ms "$SALE") ms; sold $(field sold "$SALE")/10000, invariants $(field invariants "$SALE")'" \
            loadtest/plot.gp 2>>"$log"; then
            :
        else
            rm -f "$OUT/sale.png"
            echo "bench.sh: gnuplot failed (see $log)" >&2
        fi
    fi
fi

C10K_LINE=""
if want c10k; then
    # 10,000 connections each parked until its 3 s deadline (the worker is
    # stopped): the issue's RSS scenario; RSS here is connections, not sales
    gw "10k connections parked until their 3 s deadline" c10k event 10000 --duration 4s \
        --redis --stall-worker --wait-timeout 3000 --stock 1000
    # and 10,000 connections buying for real: RSS also holds every order sold
    gw "10k connections (full path, wait 3 s)" c10kbuy event 10000 --duration "${LONG}s" \
        --wait-timeout 3000 --stock "$BIG" --users "$BIG" --sample "$OUT/c10k.csv"
    C10K_LINE=$LAST
fi

want ceiling && [ -x "$CEILING_BIN" ] && ceilings "after"

# ---------------------------------------------------------------- report ---
{
    echo "| scenario | park | conns | req/s | × ceiling | p50 ms | p99 ms | statuses | invariants | target |"
    echo "|---|---|--:|--:|--:|--:|--:|---|---|---|"
    awk -F'\t' '
        # paced, sweep, reference and hand-off rows: what else the row measured
        function load_notes(t, who) {
            # the server did not keep up with the offered rate
            if ($10 > 0 && $4 < 0.98 * $10)
                t = t sprintf("; achieved %.0f%% of offered", 100 * $4 / $10)
            if ($11 ~ /^[0-9.]+$/)
                t = t "; gateway'\''s own p99 " $11 " ms"
            if ($12 ~ /^[0-9.]+$/)
                t = t "; " who " CPU " $12 " µs a request"
            if ($13 ~ /^[0-9]+$/)
                t = t "; machine " $13 "% busy"
            return t
        }
        NR == FNR { if ($9 == "ceiling" && $4 + 0 > best[$3]) best[$3] = $4 + 0; next }
        {
            c = best[$3] ? best[$3] : best[1000] # 10k connections: against 1,000
            r = ($4 != "-" && c > 0) ? sprintf("%.2f", $4 / c) : "n/a"
            t = "-"
            if ($9 == "reject")
                t = r == "n/a" ? "≥0.8×: no ceiling" : (r + 0 >= 0.8 ? "≥0.8×: met" : "≥0.8×: missed")
            else if ($9 == "full")
                t = "≥0.5×: " (r == "n/a" ? "no ceiling" : (r + 0 >= 0.5 ? "met" : "missed")) \
                    " (closed loop: p99 not judged¹)"
            else if ($9 == "paced") {
                t = (c > 0 ? sprintf("offered %.2f×; ", $10 / c) : "") \
                    "≥0.5×: " (r == "n/a" ? "no ceiling" : (r + 0 >= 0.5 ? "met" : "missed")) \
                    ", p99≤5ms¹: " ($6 + 0 <= 5 ? "met" : "missed")
                t = load_notes(t, "gateway")
            }
            else if ($9 == "sweep" || $9 == "reference" || $9 == "handoff") {
                t = (c > 0 ? sprintf("offered %.2f×; ", $10 / c) : "") \
                    ($9 == "sweep" ? "latency curve" : ($9 == "reference" ? "reference²" : "hand-off²")) \
                    ", not judged: p99 " ($6 + 0 <= 5 ? "≤" : ">") " 5 ms"
                t = load_notes(t, $9 == "reference" ? "server" : "gateway")
            }
            else if ($9 == "asyncflush") # a machine crash may lose 100 ms of orders
                t = "for comparison: orders fsynced every 100 ms"
            else if ($9 == "redis")
                t = r == "n/a" ? "≥0.3×: no ceiling" : (r + 0 >= 0.3 ? "≥0.3×: met" : "≥0.3×: missed")
            else if ($9 == "sale") {
                split($10, ss, "/")
                t = ss[1] == ss[2] ? "sold = stock (" ss[1] ")" : "sold " ss[1] " of " ss[2] " (not sold out)"
            } else if ($9 == "c10k")
                t = sprintf("RSS %.0f MiB ≤256 MiB: %s", $10 / 1024, $10 / 1024 <= 256 ? "met" : "missed")
            else if ($9 == "c10kbuy") # every order sold stays in memory: not the RSS target
                t = sprintf("RSS %.0f MiB, with every order sold held in memory", $10 / 1024)
            else if ($9 == "timeout")
                t = sprintf("timeouts ≤10 ms late: %s (worst %.1f ms)", $10 + 0 <= 10 ? "met" : "missed", $10)
            # far below the ceiling: what a stall looks like
            paced = $9 == "paced" || $9 == "sweep" || $9 == "reference" || $9 == "handoff"
            if ($9 != "ceiling" && $9 != "c10k" && $9 != "c10kbuy" && $9 != "timeout" && !paced && r != "n/a" && r + 0 < 0.1)
                t = t "; STALL?"
            if (paced && $10 > 0 && $4 < 0.1 * $10)
                t = t "; STALL?"
            if ($9 == "ceiling" && r != "n/a")
                r = r == "1.00" ? "1.00 (best)" : r
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                   $1, $2, $3, $4, r, $5, $6, $7, $8, t
        }' "$rows" "$rows"
    echo
    echo "wrk on loopback, $THREADS threads, ${DURATION} s per scenario (sale and c10k ${LONG} s);" \
        "× ceiling = req/s over the best of loadtest/ceiling's runs at the same connections (before, after, and at 256 once more just before the paced rows; 10,000 against 1,000);" \
        "event-park rows repeat with a fresh gateway each run."
    if awk -F'\t' '$9 == "paced" || $9 == "sweep" { f = 1 } END { exit !f }' "$rows"; then
        echo
        # the latency curve (loadtest/curve.awk reads the rows twice: the
        # ceiling first)
        awk -F'\t' -f loadtest/curve.awk "$rows" "$rows"
    fi
    if awk -F'\t' '$9 == "full" || $9 == "paced" { f = 1 } END { exit !f }' "$rows"; then
        echo
        awk -F'\t' '$9 == "ceiling" && $3 == 256 && $4 + 0 > b { b = $4 + 0; p = $6 }
            END {
                printf "¹ p99 ≤ 5 ms is judged on the paced rows only (scenario paced). Every other row is" \
                       " closed loop: each connection sends its next request as soon as its answer arrives, so" \
                       " by Little'\''s law mean latency = connections / throughput"
                if (b > 0)
                    printf ": at 256 connections and 0.5 × ceiling (%.0f req/s) the mean alone is" \
                           " %.1f ms whatever the gateway does, and the ceiling itself has p99 %s ms there.",
                           b / 2, 256 * 1000 / (b / 2), p
                else
                    printf " (256 connections at 50,000 req/s: 5.1 ms)."
                printf " The paced rows offer a fixed rate instead (Poisson send times over the 256" \
                       " connections, run.sh --pace), so their latency is the response time at that load;" \
                       " their × ceiling is the achieved rate, \"offered\" the rate wrk offered.\n"
            }' "$rows"
    fi
    if awk -F'\t' '$9 == "reference" || $9 == "handoff" { f = 1 } END { exit !f }' "$rows"; then
        echo
        # the paced rows against libmicrohttpd alone at the same load
        awk -F'\t' '
            $9 == "paced" && $13 ~ /^[0-9]+$/ { n++; if (n == 1 || $13 < lo) lo = $13; if ($13 > hi) hi = $13
                                                g += $12 }
            $9 == "reference" { r = 1; rp = $6; rc = $12; rb = $13 }
            $9 == "handoff" { h = 1; hp = $6; hg = $11; hc = $12; hb = $13 }
            END {
                printf "²"
                if (r)
                    printf " reference row: loadtest/ceiling offered the paced rows'\'' rate by the same wrk:" \
                           " libmicrohttpd alone at that load, p99 %s ms, %s µs of CPU a request, the machine" \
                           " %s%% busy.", rp, rc, rb
                if (h)
                    printf " Hand-off row: the gateway at that rate with repeat buyers, whom the worker" \
                           " answers 409 already purchased with no sale to record or fsync: p99 %s ms" \
                           " (its own %s ms), %s µs of CPU a request, the machine %s%% busy.", hp, hg, hc, hb
                if (n > 0)
                    printf " The paced gateway rows: %.1f µs of CPU a request, the machine %s%s%% busy" \
                           " (wrk shares its CPUs).", g / n, lo, (hi != lo ? "-" hi : "")
                printf "\n"
            }' "$rows"
    fi
    if [ -n "$SALE" ]; then
        echo
        echo "flash sale: $(field rps "$SALE") req/s, p99 $(field p99_ms "$SALE") ms (wrk; the gateway's own" \
            "histogram: $(field gw_p99_ms "$SALE") ms)," \
            "sold $(field sold "$SALE") of $(field stock "$SALE"), invariants $(field invariants "$SALE");" \
            "per second: $OUT/sale.csv, plot: $OUT/sale.png"
    fi
    if [ -n "$C10K_LINE" ]; then
        l=$C10K_LINE
        echo
        echo "c10k: peak established connections $(field peak_established "$l")," \
            "parked requests (max over the scrapes that answered) $(field peak_parked "$l"), gateway RSS high-water" \
            "$(awk -v k="$(field rss_hwm_kib "$l")" 'BEGIN { printf "%.1f MiB", k / 1024 }') (with $(field sold "$l") orders sold, all held in memory)," \
            "p99 $(field p99_ms "$l") ms, p99.9 $(field p999_ms "$l") ms, max $(field max_ms "$l") ms;" \
            "statuses $(statuses "$l")."
        echo "c10k: the gateway's own p99 (its histogram, request read to answer): $(field gw_p99_ms "$l") ms;" \
            "wrk's latency also counts the time a request waits in the socket before the gateway reads it."
        n504=$(field statuses "$l" | tr ',' '\n' | sed -n 's/^504=//p')
        if [ -n "$n504" ]; then
            awk -v p="$(field p999_ms "$l")" -v m="$(field max_ms "$l")" -v n="$n504" 'BEGIN {
                printf "c10k: %d answers were 504 (wait_timeout_ms = 3000): p99.9 %.0f ms, worst %.0f ms, %.0f ms past the timeout as wrk saw it\n",
                       n, p, m, m - 3000 }'
        else
            echo "c10k: no 504: every request the gateway read was decided within wait_timeout_ms = 3000."
        fi
    fi
    echo
    echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
        "$(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)," \
        "Linux $(uname -r), $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)," \
        "libmicrohttpd $(pkg-config --modversion libmicrohttpd 2>/dev/null || echo '?')"
} > "$OUT/bench.md"
cat "$OUT/bench.md"
[ "$status" -eq 0 ] || echo "bench.sh: FAILED: $([ "$status" -eq 69 ] && echo 'a gateway did not start' || echo 'an invariant broke') (see $log)" >&2
exit "$status"
