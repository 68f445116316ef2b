#!/bin/sh
# Load test: start a gateway with a chosen stock and rate, drive it with wrk,
# then check the gateway's own view of the sale and print one summary line.
# It is a benchmark: it reports speed and the invariant verdict; it fails only
# when an invariant is broken or the gateway cannot be started.
#
# usage: loadtest/run.sh [--stock N] [--rate R] [--burst B] [--users U]
#          [--duration 10s] [--connections 256] [--threads 2] [--workers 0]
#          [--park thread|event] [--io poll|epoll] [--pool N] [--wait-timeout MS]
#          [--pace RPS] [--sample CSV] [--sample-ms MS] [--order-flush sync|async]
#          [--redis [--stall-worker]] [--redis-cluster K] [--admission]
#          [--linger US] [--gateways N]
#   --rate R          [token_bucket] rate of the gateway (0: unlimited); not
#                     how fast wrk sends: that is --pace
#   --workers N       [worker] threads (0: the default, 1 with the memory
#                     inventory, 2 with redis)
#   --order-flush M   [queue] order_flush, sync (default) or async
#   --gateways N      with --redis or --redis-cluster: N gateways (each its own
#                     data_dir) served by the one worker process, and one wrk
#                     per gateway with its share of the connections and
#                     threads; the summary adds them up (rps, requests,
#                     statuses, CPU) and gives the worst of their latencies;
#                     rss_hwm_kib and gw_p99_ms are the first gateway's
#   --redis-stats F   with --redis or --redis-cluster: write Redis's INFO
#                     commandstats after the run to F (every master's, one
#                     after the other): which commands the sale cost
#   --linger US       [worker] linger_us (default 0): a worker thread's pause
#                     after a short batch, so store calls decide more at once
#   --pace RPS        wrk offers RPS requests/s over all connections together
#                     (Poisson send times, loadtest/seckill.lua) instead of the
#                     default closed loop (next request as soon as the answer
#                     arrives); the summary then has offered_rps= next to the
#                     achieved rps=, which stays below it when the gateway
#                     cannot keep up
#   --pool N          [gateway] pool_threads for park = event (0: one per CPU)
#   --io poll|epoll   [gateway] http_io for park = event (default poll)
#   --wait-timeout MS [gateway] wait_timeout_ms (default 2000); wrk waits
#                     2 s longer than this before it calls a request timed out
#   --redis           stock in a redis-server started for the run, decided by one
#                     separate seckill-worker process (--workers threads) that
#                     consumes the gateway over rpc/
#   --redis-cluster K the same on a Redis Cluster of K masters (K >= 3) and K
#                     replicas started for the run, the stock in K buckets; the
#                     summary adds each master's CPU per request
#                     (redis_cpu_us_per_req_by_master=a/b/c), per unit it sold
#                     (redis_cpu_us_per_sale_by_master, the buckets holding equal
#                     shares) and their spread (master_cpu_spread_pct:
#                     (max - min) / mean)
#   --admission       the admission stage on: [admission] require_token with a
#                     bench key, every user's token issued before the run
#                     (docs/issue_token.py; --users at most 100000) and sent by
#                     wrk as Authorization: Bearer; [limits] per-user buckets
#                     (1,000/s, never the binding limit at bench rates) and a
#                     per-address bucket (every wrk connection is 127.0.0.1:
#                     one bucket, 10^8/s, checked, never binding)
#   --stall-worker    with --redis: SIGSTOP the worker once the gateway is ready,
#                     so every request parks until its deadline and gets 504:
#                     latency - wait timeout is how late timeouts are answered
#   --sample CSV      sample /metrics, RSS and open connections once a second
#                     during the run (loadtest/sample.sh) and write CSV
#   --sample-ms MS    with --sample: sample every MS milliseconds instead
#                     (100: the first seconds of a flash sale, sell-out included)
# The summary also gives gw_cpu_us_per_req: the gateway's CPU time (user +
# system) while wrk ran, per request (with --redis: the worker's and Redis's
# too), and box_busy_pct: how busy all CPUs of the machine were while wrk ran,
# in per cent (every process: wrk's share of a loopback test shows there).
# The summary line also has gw_exit (the gateway's exit status after the
# SIGTERM that ends the run: 0 unless it crashed or a
# sanitizer build found something), rss_hwm_kib (gateway VmHWM after the run),
# gw_p99_ms (the gateway's own p99 over the run, request read to answer, from
# its histogram: one /metrics scrape before wrk and one after, or the
# per-second ones of --sample) and, with --sample, the peak established
# connections and parked requests. The per-second scrape costs the gateway's
# p99 a few ms on a 2-CPU machine (its curl, ss and awk processes); the paced
# figures are measured without it.
# Exit status: 0, 1 invariant broken, 69 gateway did not start, 70 no wrk
# summary.
set -eu
cd "$(dirname "$0")/.."

STOCK=10000 RATE=0 BURST=10000 USERS=1000000 DURATION=10s CONNS=256 THREADS=2 WORKERS=0 PARK=event IO=poll
POOL=0 WAIT_MS=2000 SAMPLE="" SAMPLE_MS=1000 REDIS=0 STALL=0 PACE=0 FLUSH=sync RCLUSTER=0
ADMISSION=0 LINGER=0 GATEWAYS=1 RSTATS=""
BIN=${SECKILL_GATEWAY:-build/release/gateway/seckill-gateway}
WORKER_BIN=${SECKILL_WORKER:-build/release/seckill-worker/seckill-worker}
while [ $# -gt 0 ]; do
    case "$1" in
    --stock|--rate|--burst|--users|--duration|--connections|--threads|--workers|--park|--io|--pool|\
    --wait-timeout|--pace|--sample|--sample-ms|--order-flush|--redis-cluster|--linger|--gateways|--redis-stats)
        [ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 64; } ;;
    esac
    case "$1" in
    --stock) STOCK=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --burst) BURST=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --park) PARK=$2; shift 2 ;;
    --io) IO=$2; shift 2 ;;
    --pool) POOL=$2; shift 2 ;;
    --wait-timeout) WAIT_MS=$2; shift 2 ;;
    --pace) PACE=$2; shift 2 ;;
    --sample) SAMPLE=$2; shift 2 ;;
    --sample-ms) SAMPLE_MS=$2; shift 2 ;;
    --order-flush) FLUSH=$2; shift 2 ;;
    --redis) REDIS=1; shift ;;
    --redis-cluster) REDIS=1; RCLUSTER=$2; shift 2 ;;
    --stall-worker) STALL=1; shift ;;
    --admission) ADMISSION=1; shift ;;
    --linger) LINGER=$2; shift 2 ;;
    --gateways) GATEWAYS=$2; shift 2 ;;
    --redis-stats) RSTATS=$2; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 64 ;;
    esac
done
case "$IO" in
poll|epoll) ;;
*) echo "run.sh: --io: expected poll or epoll, got '$IO'" >&2; exit 64 ;;
esac
case "$FLUSH" in
sync|async) ;;
*) echo "run.sh: --order-flush: expected sync or async, got '$FLUSH'" >&2; exit 64 ;;
esac
# whole OPTION VALUE WHAT: exit 64 unless VALUE is a whole number
whole() {
    case "$2" in
    ''|*[!0-9]*) echo "run.sh: $1: expected $3, got '$2'" >&2; exit 64 ;;
    esac
}
whole --redis-cluster "$RCLUSTER" "a number of masters"
[ "$RCLUSTER" = 0 ] || [ "$RCLUSTER" -ge 3 ] ||
    { echo "run.sh: --redis-cluster: a Redis Cluster needs at least 3 masters" >&2; exit 64; }
whole --gateways "$GATEWAYS" "a number of gateways from 1"
[ "$GATEWAYS" -ge 1 ] || { echo "run.sh: --gateways: expected a number of gateways from 1, got 0" >&2; exit 64; }
[ "$GATEWAYS" = 1 ] || [ "$REDIS" = 1 ] ||
    { echo "run.sh: --gateways: more than one gateway needs --redis or --redis-cluster (a shared store)" >&2; exit 64; }
[ "$GATEWAYS" -le "$CONNS" ] || { echo "run.sh: --gateways: more gateways than connections" >&2; exit 64; }
whole --linger "$LINGER" "microseconds (a whole number)"
whole --users "$USERS" "a whole number"
[ "$ADMISSION" = 0 ] || [ "$USERS" -le 100000 ] ||
    { echo "run.sh: --admission issues a token per user: --users at most 100000" >&2; exit 64; }
case "$PACE" in
''|*[!0-9]*) echo "run.sh: --pace: expected requests per second (a whole number), got '$PACE'" >&2; exit 64 ;;
esac
case "$SAMPLE_MS" in
''|*[!0-9]*|0|0*) echo "run.sh: --sample-ms: expected milliseconds (a whole number from 1), got '$SAMPLE_MS'" >&2; exit 64 ;;
esac

command -v wrk >/dev/null || { echo "run.sh: wrk is not installed (make deps)" >&2; exit 69; }
# the binary may be missing for a moment while someone rebuilds it
for _ in $(seq 120); do
    [ -x "$BIN" ] && break
    sleep 1
done
[ -x "$BIN" ] || { echo "run.sh: $BIN not built (make build)" >&2; exit 69; }
# wrk needs one descriptor per connection; the gateway raises its own limit
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d /tmp/seckill-load-XXXXXX)
gw_pid="" sampler_pid="" worker_pid="" redis_pid="" cluster_pids="" masters="" more_pids=""
cleanup() {
    [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null
    for p in $more_pids; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null
    [ -n "$worker_pid" ] && kill -CONT "$worker_pid" 2>/dev/null && kill "$worker_pid" 2>/dev/null &&
        wait "$worker_pid" 2>/dev/null
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    for p in $cluster_pids; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# every wrk connection comes from 127.0.0.1: no per-address cap
cat > "$work/gw.ini" <<INI
[gateway]
wait_timeout_ms = $WAIT_MS
drain_delay_ms = 0
park = $PARK
http_io = $IO
pool_threads = $POOL
max_connections = 20000
max_connections_per_ip = 0
[token_bucket]
rate = $RATE
burst = $BURST
[queue]
max_backlog = 65536
data_dir = $work/data
order_flush = $FLUSH
[worker]
threads = $WORKERS
batch = 128
linger_us = $LINGER
[item.demo]
stock = $STOCK
per_user_limit = 1
INI
tokens=""
if [ "$ADMISSION" = 1 ]; then
    key=${SECKILL_ADMISSION_KEY:-seckill-bench-admission-key}
    cat >> "$work/gw.ini" <<INI
[admission]
require_token = true
key = $key
[limits]
per_user_rate = 1000
per_user_burst = 1000
per_ip_rate = 100000000
per_ip_burst = 100000000
INI
    tokens=$work/tokens
    loadtest/issue_tokens.py "$key" "$USERS" "$tokens"
fi

if [ "$REDIS" = 1 ]; then
    command -v redis-server >/dev/null || { echo "run.sh: redis-server is not installed (make deps)" >&2; exit 69; }
    freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
    # AOF, fsynced every second; no AOF rewrite during the sale (its fork
    # would take a CPU from the sale: schedule BGREWRITEAOF after it)
    # exec: $! is then redis-server itself, whose CPU time is measured
    redis() {
        exec redis-server --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
            --auto-aof-rewrite-min-size 8gb "$@"
    }
    if [ "$RCLUSTER" = 0 ]; then
        rport=$(freeport)
        redis --port "$rport" --dir "$work" > "$work/redis.log" 2>&1 &
        redis_pid=$!
        for _ in $(seq 100); do
            redis-cli -p "$rport" ping >/dev/null 2>&1 && break
            sleep 0.05
        done
        redis_ini="port = $rport"
    else
        # 2K nodes; redis-cli makes the first K the masters
        nodes="" addrs=""
        for i in $(seq $((2 * RCLUSTER))); do
            p=$(freeport) b=$(freeport)
            mkdir -p "$work/node$i"
            redis --port "$p" --dir "$work/node$i" --cluster-enabled yes \
                --cluster-port "$b" --cluster-node-timeout 2000 \
                --cluster-require-full-coverage no > "$work/node$i/redis.log" 2>&1 &
            cluster_pids="$cluster_pids $!"
            [ "$i" -le "$RCLUSTER" ] && masters="$masters $p:$!"
            nodes="$nodes${nodes:+, }127.0.0.1:$p" addrs="$addrs 127.0.0.1:$p"
            for _ in $(seq 100); do
                redis-cli -p "$p" ping >/dev/null 2>&1 && break
                sleep 0.05
            done
        done
        # shellcheck disable=SC2086
        redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes > "$work/create.log" 2>&1 ||
            { echo "run.sh: redis-cli --cluster create failed:" >&2; cat "$work/create.log" >&2; exit 69; }
        for m in $masters; do # each master's replica in sync
            for _ in $(seq 600); do
                redis-cli -p "${m%%:*}" info replication | grep -q state=online && break
                sleep 0.1
            done
        done
        redis_ini="cluster = true
nodes = $nodes"
    fi
    # a stalled worker keeps its lease for the whole run
    [ "$STALL" = 1 ] && sed -i 's/^max_backlog = .*/max_backlog = 1000000\nlease_timeout_ms = 3600000\nack_timeout_ms = 3600000/' "$work/gw.ini"
    cat >> "$work/gw.ini" <<INI
[rpc]
listen = tcp:127.0.0.1:0
secret = loadtest-secret
[redis]
$redis_ini
INI
    sed -i 's/^threads = .*/threads = '"$WORKERS"'\nembedded = false\ninventory = redis/' "$work/gw.ini"
fi

# http_port OUT PID: the port a gateway's banner in OUT names, waiting up
# to 5 s while PID runs; empty when it does not say
http_port() {
    for _ in $(seq 100); do
        hp=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\).*|\1|p' "$1")
        [ -n "$hp" ] && break
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    printf '%s' "$hp"
}
# rpc_addr OUT: the rpc address a gateway's banner in OUT names
rpc_addr() { sed -n 's|.* rpc=\(tcp:[^ ]*\).*|\1|p' "$1"; }

# a few attempts: a binary caught mid-link fails to start once
port=""
for _ in 1 2 3; do
    "$BIN" -c "$work/gw.ini" --listen 127.0.0.1:0 > "$work/gw.out" 2> "$work/gw.err" &
    gw_pid=$!
    port=$(http_port "$work/gw.out" "$gw_pid")
    [ -n "$port" ] && break
    kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null || true
    gw_pid=""
    grep -q "configuration\|\.ini:" "$work/gw.err" && break # a config error stays one
    sleep 2
done
[ -n "$port" ] || { echo "run.sh: gateway did not start:" >&2; cat "$work/gw.err" >&2; exit 69; }
base="http://127.0.0.1:$port"
# gateways 2..N: the same configuration with a data_dir each
more_ports="" rpcs=""
for i in $(seq 2 "$GATEWAYS"); do
    sed "s|^data_dir = .*|data_dir = $work/data$i|" "$work/gw.ini" > "$work/gw$i.ini"
    "$BIN" -c "$work/gw$i.ini" --listen 127.0.0.1:0 > "$work/gw$i.out" 2> "$work/gw$i.err" &
    more_pids="$more_pids $!"
    p=$(http_port "$work/gw$i.out" "$!")
    [ -n "$p" ] || { echo "run.sh: gateway $i did not start:" >&2; cat "$work/gw$i.err" >&2; exit 69; }
    more_ports="$more_ports $p"
    rpcs="$rpcs, $(rpc_addr "$work/gw$i.out")"
done
if [ "$REDIS" = 1 ]; then
    rpc=$(rpc_addr "$work/gw.out")$rpcs
    # a section appears once: the gateways go into the gateway's [rpc]
    awk -v gws="$rpc" '{ print } /^\[rpc\]$/ { print "gateways = " gws; done = 1 }
        END { if (!done) printf "[rpc]\ngateways = %s\n", gws }' "$work/gw.ini" > "$work/worker.ini"
    "$WORKER_BIN" -c "$work/worker.ini" --id bench-w1 > "$work/worker.out" 2> "$work/worker.err" &
    worker_pid=$!
fi
for _ in $(seq 100); do
    curl -fs "$base/readyz" >/dev/null && break
    sleep 0.05
done

if [ "$STALL" = 1 ] && [ -n "$worker_pid" ]; then
    kill -STOP "$worker_pid"
fi
if [ -n "$SAMPLE" ]; then
    SAMPLE_MS=$SAMPLE_MS loadtest/sample.sh run "$base" "$gw_pid" "$port" "$work/samples" &
    sampler_pid=$!
    # the first sample before the first request: the sale's opening is seen
    for _ in $(seq 100); do
        [ -s "$work/samples" ] && break
        sleep 0.02
    done
else
    # the gateway's own p99 over the run from two scrapes, one on each side
    loadtest/sample.sh once "$base" "$gw_pid" "$port" "$work/edges" || true
fi
wrk_timeout=$(( (WAIT_MS + 999) / 1000 + 2 ))s
# CPU time (user + system, clock ticks) of a process so far
ticks() { loadtest/sample.sh ticks "$1" || echo 0; }
gw_t0=$(ticks "$gw_pid")
wk_t0=0 rd_t0=0
[ -n "$worker_pid" ] && wk_t0=$(ticks "$worker_pid")
[ -n "$redis_pid" ] && rd_t0=$(ticks "$redis_pid")
for p in $cluster_pids; do rd_t0=$((rd_t0 + $(ticks "$p"))); done
m_t0=""
for m in $masters; do m_t0="$m_t0 $(ticks "${m#*:}")"; done
cpu0=$(loadtest/sample.sh cpu)
for p in $more_pids; do gw_t0=$((gw_t0 + $(ticks "$p"))); done
# one wrk per gateway, each with its share of the connections, threads and pace
wt=$((THREADS / GATEWAYS)) wc=$((CONNS / GATEWAYS)) wp=$((PACE / GATEWAYS))
[ "$wt" -ge 1 ] || wt=1
i=1 wrk_pids=""
for p in "$port" $more_ports; do
    SECKILL_TOKENS=$tokens SECKILL_USERS=$USERS SECKILL_ITEM=demo SECKILL_PACE=$wp SECKILL_THREADS=$wt \
        wrk -t"$wt" -c"$wc" -d"$DURATION" --latency --timeout "$wrk_timeout" -s loadtest/seckill.lua \
        "http://127.0.0.1:$p" > "$work/wrk$i.out" 2>&1 &
    wrk_pids="$wrk_pids $!"
    i=$((i + 1))
done
for p in $wrk_pids; do wait "$p" || true; done
# one summary: sums, and the worst latency of any wrk
cat "$work"/wrk[0-9]*.out > "$work/wrk.all"
awk '$1 == "SUMMARY" { n++
        for (f = 2; f <= NF; f++) { split($f, kv, "="); k = kv[1]; v = substr($f, length(k) + 2)
            if (k == "statuses") { m = split(v, st, ",")
                for (j = 1; j <= m; j++) { split(st[j], cs, "="); if (!(cs[1] in sc)) order[++no] = cs[1]; sc[cs[1]] += cs[2] } }
            else if (k ~ /_ms$/) { if (v + 0 > lat[k] + 0) lat[k] = v; if (!(k in seen)) { seen[k] = 1; keys[++nk] = k } }
            else { sum[k] += v; if (!(k in seen)) { seen[k] = 1; keys[++nk] = k } } } }
    END { if (!n) exit
        line = "SUMMARY"
        for (i = 1; i <= nk; i++) { k = keys[i]; line = line " " k "=" ((k in lat) ? lat[k] : sum[k]) }
        for (i = 1; i <= no; i++) for (j = i + 1; j <= no; j++) if (order[j] + 0 < order[i] + 0) { t = order[i]; order[i] = order[j]; order[j] = t }
        s = ""; for (i = 1; i <= no; i++) s = s (i > 1 ? "," : "") order[i] "=" sc[order[i]]
        print line " statuses=" s }' "$work/wrk.all" > "$work/wrk.out"
[ -s "$work/wrk.out" ] || cat "$work/wrk.all" > "$work/wrk.out"
busy=$(loadtest/sample.sh busy "$cpu0")
gw_t1=$(ticks "$gw_pid")
for p in $more_pids; do gw_t1=$((gw_t1 + $(ticks "$p"))); done
wk_t1=0 rd_t1=0
[ -n "$worker_pid" ] && wk_t1=$(ticks "$worker_pid")
[ -n "$redis_pid" ] && rd_t1=$(ticks "$redis_pid")
for p in $cluster_pids; do rd_t1=$((rd_t1 + $(ticks "$p"))); done
m_t1=""
for m in $masters; do m_t1="$m_t1 $(ticks "${m#*:}")"; done
extra=""
if [ -n "$sampler_pid" ]; then
    sleep 1 # one more sample: the answers of the last second
    kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=""
    touch "$work/samples"
    loadtest/sample.sh csv "$work/samples" > "$SAMPLE"
    extra=" $(loadtest/sample.sh peak "$work/samples")"
else
    loadtest/sample.sh once "$base" "$gw_pid" "$port" "$work/edges" || true
    # a tooling failure here is not an invariant: gw_p99_ms=n/a, and go on
    q=$(loadtest/sample.sh peak "$work/edges" 2>/dev/null | tr ' ' '\n' | sed -n 's/^gw_p99_ms=//p') || q=""
    extra=" gw_p99_ms=${q:-n/a}"
fi
summary=$(grep '^SUMMARY' "$work/wrk.out" || true)
[ -n "$summary" ] || { echo "run.sh: wrk printed no summary:" >&2; cat "$work/wrk.out" >&2; exit 70; }
hwm=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$gw_pid/status" 2>/dev/null || true)
extra=" rss_hwm_kib=${hwm:-?}$extra box_busy_pct=${busy:-n/a}"
# CPU per request while wrk ran: gateway, and with --redis the worker and Redis
nreq=$(printf '%s\n' "$summary" | sed -n 's/.* requests=\([0-9]*\).*/\1/p')
extra="$extra $(awk -v r="${nreq:-0}" -v hz="$(getconf CLK_TCK)" -v g=$((gw_t1 - gw_t0)) \
    -v w=$((wk_t1 - wk_t0)) -v d=$((rd_t1 - rd_t0)) -v redis="$REDIS" 'BEGIN {
    u = r > 0 ? 1e6 / hz / r : 0
    printf "gw_cpu_us_per_req=%.1f", g * u
    if (redis == 1) printf " worker_cpu_us_per_req=%.1f redis_cpu_us_per_req=%.1f", w * u, d * u }')"
if [ "$STALL" = 1 ]; then
    # the gateway's own measure: deadline -> waiter woken, per timed-out request
    lm=$(curl -fs "$base/metrics" | awk '
        $1 == "seckill_timeout_lateness_seconds_sum" { s = $2 }
        $1 == "seckill_timeout_lateness_seconds_count" { n = $2 }
        $1 == "seckill_timeout_lateness_max_seconds" { m = $2 }
        END { printf "timeouts=%d lateness_mean_ms=%.3f lateness_max_ms=%.3f", n, n ? s * 1000 / n : 0, m * 1000 }')
    extra="$extra $lm"
fi

metrics=$(curl -fs "$base/metrics")
if [ -n "$RSTATS" ] && [ "$REDIS" = 1 ]; then
    for mp in ${rport:-} $(for m in $masters; do printf '%s ' "${m%%:*}"; done); do
        echo "# redis 127.0.0.1:$mp"
        redis-cli -p "$mp" info commandstats
    done > "$RSTATS"
fi
metric() { printf '%s\n' "$metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
if [ -n "$masters" ]; then
    # the authoritative view is the cluster itself: every bucket on every
    # master, with the units of unfinished transfers
    left=0 buyers=0
    for m in $masters; do
        mp=${m%%:*}
        for k in $(redis-cli -p "$mp" --scan --pattern 'sk:{demo/*}:stock'); do
            left=$((left + $(redis-cli -p "$mp" GET "$k")))
        done
        for k in $(redis-cli -p "$mp" --scan --pattern 'sk:{demo/*}:xout'); do
            left=$((left + $(redis-cli -p "$mp" HVALS "$k" | awk -F'|' '{ s += $2 } END { print s + 0 }')))
        done
        for k in $(redis-cli -p "$mp" --scan --pattern 'sk:{demo/*}:users'); do
            buyers=$((buyers + $(redis-cli -p "$mp" HLEN "$k")))
        done
    done
    sold=$((STOCK - left))
elif [ "$REDIS" = 1 ]; then
    # the authoritative view is Redis itself
    left=$(redis-cli -p "$rport" GET 'sk:{demo}:stock')
    sold=$((STOCK - left))
    buyers=$(redis-cli -p "$rport" HLEN 'sk:{demo}:users')
else
    # sold: orders reserved less those cancelled unpaid (counters that only go up)
    sold=$(( $(metric 'seckill_orders_reserved_total{item="demo"}') - \
             $(metric 'seckill_orders_cancelled_total{item="demo"}') ))
    buyers=$(metric 'seckill_buyers{item="demo"}')
    left=$(metric 'seckill_stock_left{item="demo"}')
fi
if [ -n "$masters" ]; then
    # each master's CPU per request and per unit it sold (the buckets hold
    # equal shares), and how evenly the shards share the work
    extra="$extra $(awk -v r="${nreq:-0}" -v sold="$sold" -v hz="$(getconf CLK_TCK)" -v a="$m_t0" \
        -v b="$m_t1" 'BEGIN {
        n = split(a, x, " "); split(b, y, " "); u = r > 0 ? 1e6 / hz / r : 0
        v = sold > 0 ? 1e6 / hz / (sold / n) : 0
        for (i = 1; i <= n; i++) { t = y[i] - x[i]; sep = i > 1 ? "/" : ""
            s = s sep sprintf("%.1f", t * u); p = p sep sprintf("%.1f", t * v)
            sum += t; if (i == 1 || t > hi) hi = t; if (i == 1 || t < lo) lo = t }
        spread = sum > 0 ? (hi - lo) * 100 / (sum / n) : 0
        printf "redis_cpu_us_per_req_by_master=%s redis_cpu_us_per_sale_by_master=%s", s, p
        printf " master_cpu_spread_pct=%.0f", spread }')"
fi
ok200=$(printf '%s\n' "$summary" | sed -n 's/.*statuses=.*\b200=\([0-9]*\).*/\1/p')
ok200=${ok200:-0}

verdict=OK
[ "$sold" -le "$STOCK" ] || verdict="OVERSOLD(sold=$sold>stock=$STOCK)"
[ "$((sold + left))" -eq "$STOCK" ] || verdict="STOCK_MISMATCH(sold=$sold+left=$left!=$STOCK)"
[ "$buyers" -eq "$sold" ] || verdict="DUPLICATE_WINNER(buyers=$buyers!=sold=$sold)"
# Every 200 the app saw is a sale; a sale may lack a 200 only when its answer
# timed out (504) or was cut off by wrk's end.
[ "$ok200" -le "$sold" ] || verdict="PHANTOM_SUCCESS(200s=$ok200>sold=$sold)"

# stop the gateway as an operator would: SIGTERM must end it with status 0
# (a sanitizer build exits non-zero when it found a leak or a race)
kill "$gw_pid" $more_pids 2>/dev/null || true
gw_rc=0
wait "$gw_pid" 2>/dev/null || gw_rc=$?
for p in $more_pids; do
    wait "$p" 2>/dev/null || gw_rc=$?
done
gw_pid="" more_pids=""
extra="$extra gw_exit=$gw_rc"
if [ "$gw_rc" != 0 ]; then
    echo "run.sh: the gateway exited with status $gw_rc after SIGTERM; the end of its stderr:" >&2
    tail -n 20 "$work/gw.err" >&2
fi

[ "$IO" = epoll ] && extra="$extra http_io=epoll"
echo "$summary" | sed 's/^SUMMARY //' | awk -v s="$STOCK" -v sold="$sold" -v v="$verdict" \
    -v c="$CONNS" -v pk="$PARK" -v x="$extra" \
    '{ print "loadtest: park=" pk " conns=" c " stock=" s " sold=" sold " " $0 " invariants=" v x }'
[ "$verdict" = OK ]
