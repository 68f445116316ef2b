#!/bin/sh
# The operator's load-test tools end to end, with a real gateway and real wrk
# on loopback: loadtest/run.sh (paced, a sale that sells out; the sampler,
# per second and every 100 ms with answers by status, and the plot of it) and the paced part of loadtest/bench.sh with its latency curve
# (loadtest/bench_report.py builds it; tests/unit/test_bench_report.py checks
# the rest of the report on fixed rows).
# It checks what the tools report, never how fast anything was.
#
# usage: loadtest_smoke.sh GATEWAY_BINARY CEILING_BINARY WORKER_BINARY
set -eu
[ $# -eq 3 ] || { echo "usage: loadtest_smoke.sh GATEWAY_BINARY CEILING_BINARY WORKER_BINARY" >&2; exit 64; }
gw=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
fail() { echo "loadtest_smoke: FAIL: $*" >&2; exit 1; }
command -v wrk >/dev/null || fail "wrk is not installed (make deps)"
tmp=$(mktemp -d /tmp/seckill-smoke-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
export SECKILL_GATEWAY="$gw" SECKILL_CEILING="$2" SECKILL_WORKER="$3"

# field KEY LINE: the value of KEY=... in a space-separated summary line
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1; }
number() { case "$1" in '' | *[!0-9.]* | .*) return 1 ;; esac; }

echo "== run.sh, paced, stock 100 sells out"
line=$("$root/loadtest/run.sh" --duration 2s --connections 16 --stock 100 --users 1000 --pace 400) ||
    fail "run.sh exited $?"
echo "$line"
[ "$(field invariants "$line")" = OK ] || fail "invariants=$(field invariants "$line")"
[ "$(field sold "$line")" = 100 ] || fail "sold=$(field sold "$line"), expected 100 of stock 100"
[ "$(field offered_rps "$line")" = 400 ] || fail "offered_rps=$(field offered_rps "$line"), expected 400"
number "$(field gw_p99_ms "$line")" || fail "gw_p99_ms='$(field gw_p99_ms "$line")': no p99 from the gateway's histogram"
case "$(field statuses "$line")" in *200=100,409=*) ;; *) fail "statuses=$(field statuses "$line"): expected 100 x 200 and some 409" ;; esac
[ "$(field gw_exit "$line")" = 0 ] || fail "gw_exit=$(field gw_exit "$line"): the gateway did not exit 0 on SIGTERM"
b=$(field box_busy_pct "$line")
case "$b" in '' | *[!0-9]*) fail "box_busy_pct='$b': expected a whole per cent" ;; esac
[ "$b" -le 100 ] || fail "box_busy_pct=$b: over 100 %"

echo "== run.sh --redis --gateways 2 --admission: two gateways, one worker, a signed token each"
line=$("$root/loadtest/run.sh" --redis --gateways 2 --admission --duration 2s --connections 8 \
    --stock 50 --users 1000 --redis-stats "$tmp/rstats") || fail "run.sh --gateways 2 exited $?"
echo "$line"
[ "$(field invariants "$line")" = OK ] || fail "invariants=$(field invariants "$line")"
[ "$(field sold "$line")" = 50 ] || fail "sold=$(field sold "$line"), expected 50"
# every token accepted (no 403), both gateways' answers summed: 50 sales
case "$(field statuses "$line")" in *403=*) fail "statuses=$(field statuses "$line"): a token was refused" ;; esac
case "$(field statuses "$line")" in 200=50,409=*) ;; *) fail "statuses=$(field statuses "$line"): expected 50 x 200, then 409" ;; esac
[ "$(field gw_exit "$line")" = 0 ] || fail "gw_exit=$(field gw_exit "$line")"
grep -q '^cmdstat_evalsha:' "$tmp/rstats" || fail "--redis-stats: no script calls in $(head -c 300 "$tmp/rstats")"

echo "== run.sh reports a gateway that does not exit 0 on SIGTERM"
# the real gateway behind a wrapper that exits 3 once it has stopped it
cat > "$tmp/gw-exit3" <<WRAPPER
#!/bin/sh
"$gw" "\$@" &
pid=\$!
trap 'kill \$pid; wait \$pid; exit 3' TERM
wait \$pid
WRAPPER
chmod +x "$tmp/gw-exit3"
line=$(SECKILL_GATEWAY="$tmp/gw-exit3" "$root/loadtest/run.sh" --duration 1s --connections 4 --stock 10 \
    2>"$tmp/exit3.err") || fail "run.sh exited $? with the wrapped gateway"
[ "$(field gw_exit "$line")" = 3 ] || fail "gw_exit=$(field gw_exit "$line"), expected 3: $line"
grep -q "exited with status 3 after SIGTERM" "$tmp/exit3.err" || fail "no message on stderr: $(cat "$tmp/exit3.err")"

echo "== run.sh --sample"
line=$("$root/loadtest/run.sh" --duration 3s --connections 16 --stock 1000000 --users 1000000 --sample "$tmp/s.csv") ||
    fail "run.sh --sample exited $?"
echo "$line"
[ "$(field invariants "$line")" = OK ] || fail "invariants=$(field invariants "$line")"
[ "$(field peak_established "$line")" = 16 ] || fail "peak_established=$(field peak_established "$line"), expected 16"
header="second,rps,p99_ms,parked,established,rss_mib,sold,s200,s409,s429,s503,s504,sother"
[ "$(head -n 1 "$tmp/s.csv")" = "$header" ] || fail "sample CSV header: $(head -n 1 "$tmp/s.csv")"
busy=$(awk -F, 'NR > 1 && $2 > 0 { n++ } END { print n + 0 }' "$tmp/s.csv")
[ "$busy" -ge 2 ] || fail "sample CSV has $busy seconds with answers, expected at least 2: $(cat "$tmp/s.csv")"

echo "== run.sh --sample-ms 100: a sale that sells out, answers by status, and its plot"
line=$("$root/loadtest/run.sh" --duration 3s --connections 16 --stock 2000 --users 1000000 \
    --sample "$tmp/sale.csv" --sample-ms 100) || fail "run.sh --sample-ms 100 exited $?"
echo "$line"
[ "$(field invariants "$line")" = OK ] || fail "invariants=$(field invariants "$line")"
[ "$(field sold "$line")" = 2000 ] || fail "sold=$(field sold "$line"), expected 2000"
# samples every ~100 ms: at least 10 with answers (3 s of load; a loaded
# machine may stretch a beat, never to a second)
n=$(awk -F, 'NR > 1 && $2 > 0 { n++ } END { print n + 0 }' "$tmp/sale.csv")
[ "$n" -ge 10 ] || fail "$n samples with answers in 3 s at --sample-ms 100: $(cat "$tmp/sale.csv")"
# the statuses add up to the answers, and both sides of the sell-out are there:
# samples with 200s, and a later one whose answers are all 409 with sold = stock
awk -F, 'NR > 1 && $2 != "" {
        s = $8 + $9 + $10 + $11 + $12 + $13
        if (s - $2 > 1 || $2 - s > 1) { printf "second %s: statuses add up to %d, rps %d\n", $1, s, $2; bad = 1 }
        if ($8 > 0) ok200++
        if ($7 == 2000 && $8 == 0 && $9 > 0) after++
    }
    END { if (bad || !ok200 || !after) { printf "200 samples %d, sold-out samples %d\n", ok200, after; exit 1 } }' \
    "$tmp/sale.csv" || fail "sale CSV by status: $(cat "$tmp/sale.csv")"
command -v gnuplot >/dev/null || fail "gnuplot is not installed (make deps)"
gnuplot -e "csv='$tmp/sale.csv'; png='$tmp/sale.png'; stock=2000; subtitle='smoke'" "$root/loadtest/plot.gp" ||
    fail "plot.gp failed on the sale CSV"
[ "$(head -c 8 "$tmp/sale.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "plot.gp wrote no PNG"

echo "== run.sh rejects a bad option value and starts nothing"
set +e
err=$("$root/loadtest/run.sh" --io bogus 2>&1 >/dev/null)
rc=$?
set -e
[ "$rc" = 64 ] || fail "run.sh --io bogus exited $rc, expected 64"
case "$err" in *"--io: expected poll or epoll"*) ;; *) fail "run.sh --io bogus said: $err" ;; esac

echo "== sample.sh: how busy the CPUs were"
c0=$("$root/loadtest/sample.sh" cpu)
case "$c0" in *[!0-9\ ]* | '') fail "sample.sh cpu printed '$c0', expected BUSY TOTAL" ;; esac
# one CPU kept busy for 0.5 s between the two readings: never 0 % busy
c0=$("$root/loadtest/sample.sh" cpu)
timeout 0.5 sh -c 'while :; do :; done' || true
b=$("$root/loadtest/sample.sh" busy "$c0")
case "$b" in '' | *[!0-9]*) fail "sample.sh busy printed '$b'" ;; esac
[ "$b" -ge 20 ] && [ "$b" -le 100 ] || fail "sample.sh busy: $b % with a CPU spinning, expected 20-100"
set +e
"$root/loadtest/sample.sh" busy 2>/dev/null
rc=$?
set -e
[ "$rc" = 64 ] || fail "sample.sh busy without a reading exited $rc, expected 64"

echo "== bench_report.py: the latency curve on fixed rows"
fixrow() { (IFS=$(printf '\t'); printf '%s\n' "$*"); }
# the columns of the fixed rows below, named in each file's first line
head11="scenario park conns rps p50_ms p99_ms statuses invariants kind offered_rps gw_p99_ms"
curve() {
    "$root/loadtest/bench_report.py" --threads 2 --duration 1 --long 2 --out "$tmp/curve.md" "$1" >/dev/null ||
        fail "bench_report.py exited $? on $1"
    grep '^latency curve' "$tmp/curve.md"
}
expect() { # expect FILE TEXT: the curve of FILE contains TEXT
    got=$(curve "$1")
    case "$got" in *"$2"*) ;; *) fail "latency curve: expected '$2' in: $got" ;; esac
}
{
    # shellcheck disable=SC2086
    fixrow $head11
    fixrow ceiling event 256 100000 2 8 - - ceiling - -
    fixrow ceiling event 1000 90000 9 20 - - ceiling - -
    fixrow p event 256 29000 1 6.0 - OK sweep 30000 5.5
    fixrow p event 256 10000 1 2.0 - OK sweep 10000 1.5
    fixrow p event 256 20000 1 4.9 - OK sweep 20000 4.0
    fixrow p event 256 - - - - - sweep 40000 -
    fixrow p event 256 50000 3 4.0 - OK paced 50000 3.1
    fixrow p event 256 48000 3 12.0 - OK paced 50000 9.8
    fixrow p event 256 60000 3 1.0 - OK full - -
} > "$tmp/a.tsv"
expect "$tmp/a.tsv" "own p99): 10000 (0.10×): 2 / 1.5 ms, 20000 (0.20×): 4.9 / 4.0 ms, 30000 (0.30×): 6 / 5.5 ms, 50000 (0.50×): 12 / 9.8 ms. "
expect "$tmp/a.tsv" "p99 within 5 ms up to 20000 req/s offered (0.20 × ceiling)."
{
    # shellcheck disable=SC2086
    fixrow $head11
    fixrow p event 256 10000 1 7 - OK sweep 10000 n/a
    fixrow p event 256 30000 1 4 - OK paced 30000 3
    fixrow p event 256 20000 1 3 - OK sweep 20000 2
} > "$tmp/b.tsv"
expect "$tmp/b.tsv" "own p99): 10000: 7 ms, 20000: 3 / 2 ms, 30000: 4 / 3 ms. "
expect "$tmp/b.tsv" "p99 above 5 ms already at the lowest paced rate (10000 req/s offered); within 5 ms at 20000, 30000 req/s."
{
    # shellcheck disable=SC2086
    fixrow $head11
    fixrow p event 256 10000 1 5.5 - OK sweep 10000 5
    fixrow p event 256 20000 1 9 - OK paced 20000 8
} > "$tmp/c.tsv"
expect "$tmp/c.tsv" "p99 above 5 ms at every paced rate."
# with the machine's busy per cent: the worst run's, per rate
{
    # shellcheck disable=SC2086
    fixrow $head11 cpu_us_per_req box_busy_pct
    fixrow p event 256 10000 1 2 - OK sweep 10000 1.5 40 55
    fixrow p event 256 20000 1 4 - OK paced 20000 3 30 70
    fixrow p event 256 20000 1 6 - OK paced 20000 5 30 90
} > "$tmp/d.tsv"
expect "$tmp/d.tsv" "own p99, at the machine's CPUs busy): 10000: 2 / 1.5 ms at 55% CPU, 20000: 6 / 5 ms at 90% CPU. "

echo "== bench.sh --only paced: the latency curve"
out_before=$(stat -c %Y "$root/loadtest/out/bench.md" 2>/dev/null || echo none)
SECKILL_BENCH_OUT="$tmp/bench" "$root/loadtest/bench.sh" --only paced --duration 1 --runs 1 --pace 400 \
    > "$tmp/bench.txt" 2>&1 || { cat "$tmp/bench.txt" >&2; fail "bench.sh exited non-zero"; }
cat "$tmp/bench.txt"
rows=$(grep -c '^| full path (memory inventory), paced at' "$tmp/bench/bench.md" || true)
[ "$rows" = 5 ] || fail "$rows paced rows in bench.md, expected 5 (4 of the curve, 1 judged)"
grep '^| full path (memory inventory), paced at 400 req/s ' "$tmp/bench/bench.md" |
    grep -Eq 'gateway CPU [0-9.]+ µs a request; machine [0-9]+% busy' ||
    fail "the judged paced row lacks the gateway's CPU a request or the machine's busy per cent"
# libmicrohttpd alone at the paced rate, and the footnote that compares
ref=$(grep '^| reference: ceiling, paced at 400 req/s |' "$tmp/bench/bench.md") ||
    fail "no reference row (loadtest/ceiling at the paced rate) in bench.md"
case "$ref" in *"| 409="*"reference², not judged: p99 "*"server CPU "*" µs a request; machine "*"% busy |") ;;
*) fail "reference row: $ref" ;; esac
# the gateway's path without a sale to record, at the same rate: 100 users
# buy once (200), every later request is a repeat buyer (409)
ho=$(grep '^| hand-off: repeat buyers (409 already purchased), paced at 400 req/s |' "$tmp/bench/bench.md") ||
    fail "no hand-off row (repeat buyers at the paced rate) in bench.md"
case "$ho" in *"| 200="*",409="*" | OK | "*"hand-off², not judged: p99 "*"gateway CPU "*" µs a request; machine "*"% busy |") ;;
*) fail "hand-off row: $ho" ;; esac
# named KINDS COLUMN...: those columns of the rows of KINDS (a|b) in bench.sh's
# rows.tsv, whose first line names its columns
named() {
    awk -F'\t' -v kinds="^($1)\$" -v want="$(shift; echo "$@")" '
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; n = split(want, w, " "); next }
        $col["kind"] ~ kinds { for (i = 1; i <= n; i++) printf "%s%s", $col[w[i]], i < n ? " " : "\n" }' \
        "$tmp/bench/rows.tsv"
}
n200=$(named handoff statuses | tr ',' '\n' | sed -n 's/^200=//p')
[ -n "$n200" ] && [ "$n200" -le 100 ] || fail "hand-off row: $n200 successes from 100 users, at most 100 expected"
grep -Eq '^² reference row: .* p99 [0-9.]+ ms, [0-9.]+ µs of CPU a request, the machine [0-9]+% busy\. Hand-off row: .* p99 [0-9.]+ ms \(its own [0-9.]+ ms\), [0-9.]+ µs of CPU a request, the machine [0-9]+% busy\. The paced gateway rows: [0-9.]+ µs of CPU a request, the machine [0-9]+% busy' \
    "$tmp/bench/bench.md" || fail "footnote ² missing or incomplete: $(grep '^²' "$tmp/bench/bench.md")"
curve=$(grep '^latency curve' "$tmp/bench/bench.md") || fail "no latency curve line in bench.md"
# every rate with p99 as wrk saw it and the gateway's own: "R: P / Q ms"
for r in 80 160 240 320 400; do
    printf '%s\n' "$curve" | grep -Eq "(\): |, )$r: [0-9.]+ / [0-9.]+ ms" ||
        fail "latency curve lacks rate $r with both p99s: $curve"
done
# the verdict, worked out here from the rows (offered rate, p99) on their own
want=$(named 'paced|sweep' offered_rps p99_ms | awk '$2 != "-"' | sort -n | awk '
    { if (!broken && $2 <= 5) upto = $1; else broken = 1; if ($2 <= 5) any = 1 }
    END {
        if (upto) print "p99 within 5 ms up to " upto " req/s offered."
        else if (any) print "p99 above 5 ms already at the lowest paced rate"
        else print "p99 above 5 ms at every paced rate."
    }')
case "$curve" in *"$want"*) ;; *) fail "latency curve verdict: expected '$want' in: $curve" ;; esac
[ "$(stat -c %Y "$root/loadtest/out/bench.md" 2>/dev/null || echo none)" = "$out_before" ] ||
    fail "bench.sh wrote loadtest/out/bench.md despite SECKILL_BENCH_OUT"
echo "loadtest_smoke: OK"
