#!/bin/sh
# The operator's load-test tools end to end, with a real gateway and real wrk
# on loopback: loadtest/run.sh (paced, a sale that sells out; the per-second
# sampler) and the paced part of loadtest/bench.sh with its latency curve.
# It checks what the tools report, never how fast anything was.
#
# usage: loadtest_smoke.sh GATEWAY_BINARY
set -eu
[ $# -eq 1 ] || { echo "usage: loadtest_smoke.sh GATEWAY_BINARY" >&2; exit 64; }
gw=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
fail() { echo "loadtest_smoke: FAIL: $*" >&2; exit 1; }
command -v wrk >/dev/null || fail "wrk is not installed (make deps)"
tmp=$(mktemp -d /tmp/seckill-smoke-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
export SECKILL_GATEWAY="$gw"

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
case "$(field statuses "$line")" in *200=100*409=*) ;; *) fail "statuses=$(field statuses "$line"): expected 100 x 200 and some 409" ;; esac

echo "== run.sh --sample"
line=$("$root/loadtest/run.sh" --duration 3s --connections 16 --stock 1000000 --users 1000000 --sample "$tmp/s.csv") ||
    fail "run.sh --sample exited $?"
echo "$line"
[ "$(field invariants "$line")" = OK ] || fail "invariants=$(field invariants "$line")"
[ "$(field peak_established "$line")" = 16 ] || fail "peak_established=$(field peak_established "$line"), expected 16"
[ "$(head -n 1 "$tmp/s.csv")" = "second,rps,p99_ms,parked,established,rss_mib,sold" ] || fail "sample CSV header: $(head -n 1 "$tmp/s.csv")"
busy=$(awk -F, 'NR > 1 && $2 > 0 { n++ } END { print n + 0 }' "$tmp/s.csv")
[ "$busy" -ge 2 ] || fail "sample CSV has $busy seconds with answers, expected at least 2: $(cat "$tmp/s.csv")"

echo "== run.sh rejects a bad option value and starts nothing"
set +e
err=$("$root/loadtest/run.sh" --io bogus 2>&1 >/dev/null)
rc=$?
set -e
[ "$rc" = 64 ] || fail "run.sh --io bogus exited $rc, expected 64"
case "$err" in *"--io: expected poll or epoll"*) ;; *) fail "run.sh --io bogus said: $err" ;; esac

echo "== bench.sh --only paced: the latency curve"
out_before=$(stat -c %Y "$root/loadtest/out/bench.md" 2>/dev/null || echo none)
SECKILL_BENCH_OUT="$tmp/bench" "$root/loadtest/bench.sh" --only paced --duration 1 --runs 1 --pace 400 \
    > "$tmp/bench.txt" 2>&1 || { cat "$tmp/bench.txt" >&2; fail "bench.sh exited non-zero"; }
cat "$tmp/bench.txt"
rows=$(grep -c '^| full path (memory inventory), paced at' "$tmp/bench/bench.md" || true)
[ "$rows" = 5 ] || fail "$rows paced rows in bench.md, expected 5 (4 of the curve, 1 judged)"
curve=$(grep '^latency curve' "$tmp/bench/bench.md") || fail "no latency curve line in bench.md"
for r in 80 160 240 320 400; do
    case "$curve" in *"): $r: "* | *", $r: "*) ;; *) fail "latency curve lacks rate $r: $curve" ;; esac
done
case "$curve" in *"p99 within 5 ms up to "*" req/s offered."* | *"p99 above 5 ms at every paced rate."*) ;;
*) fail "latency curve has no verdict: $curve" ;;
esac
[ "$(stat -c %Y "$root/loadtest/out/bench.md" 2>/dev/null || echo none)" = "$out_before" ] ||
    fail "bench.sh wrote loadtest/out/bench.md despite SECKILL_BENCH_OUT"
echo "loadtest_smoke: OK"
