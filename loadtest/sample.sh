#!/bin/sh
# Sample a gateway once per second while a load test runs, then turn the
# samples into a per-second CSV.
#
# usage: loadtest/sample.sh run BASE_URL PID PORT RAWFILE
#          appends one line per second to RAWFILE until killed:
#          epoch_ns answers_total bucket_cumulative_counts(comma-separated)
#          parked_requests rss_kib established_connections sold_total
#          (answers, buckets, parked and sold are "-" when /metrics did not
#          answer within 0.9 s)
#        loadtest/sample.sh once BASE_URL PID PORT RAWFILE
#          appends one such line now (run.sh: before and after wrk, so that
#          "peak" gives the gateway's own p99 without a scrape every second:
#          on this VM the per-second scrape's processes cost the measured
#          gateway milliseconds of p99)
#        loadtest/sample.sh csv RAWFILE > CSV
#          columns: second,rps,p99_ms,parked,established,rss_mib,sold
#          (idle seconds after the load ended are left out)
#          rps    = delta of the answers (seckill_requests_total summed over
#                   results) divided by the time between samples;
#          p99_ms = 99th percentile of the answers in that second, from the
#                   deltas of the seckill_request_duration_seconds buckets,
#                   interpolated linearly inside the bucket it falls in
#                   (answers past the last finite bound count as that bound).
#        loadtest/sample.sh peak RAWFILE
#          prints "peak_established=N peak_parked=N peak_rss_kib=N
#          gw_p99_ms=X": X is the gateway's own p99 over the whole run (first
#          to last answered scrape), time from request to answer inside it
#        loadtest/sample.sh ticks PID
#          prints the user + system clock ticks process PID has used so far;
#          exits 1 (printing nothing) when there is no such process
#        loadtest/sample.sh cpu
#          prints "BUSY TOTAL": clock ticks of all CPUs together so far, busy
#          (user, nice, system, irq, softirq, steal) and in all (/proc/stat)
#        loadtest/sample.sh busy "BUSY TOTAL"
#          prints the per cent of all CPUs busy since that `cpu` output:
#          every process on the machine, the load generator too
set -eu

# cpu_now: "BUSY TOTAL" clock ticks from /proc/stat's all-CPU line
cpu_now() {
    awk '$1 == "cpu" { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6; exit }' /proc/stat
}

# scrape BASE_URL PID PORT RAWFILE: append one raw line
scrape() {
    now=$(date +%s%N)
    rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$2/status" 2>/dev/null || true)
    est=$(ss -Htn state established "( sport = :$3 )" 2>/dev/null | wc -l)
    m=$(curl -fs --max-time 0.9 "$1/metrics" 2>/dev/null || true)
    # a scrape that gets no answer in time (10,000 busy connections) still
    # records the connections and RSS; its answer columns are "-"
    printf '%s\n' "$m" | awk -v t="$now" -v rss="${rss:-0}" -v est="$est" '
        /^seckill_requests_total\{/ { total += $2; ok = 1 }
        /^seckill_request_duration_seconds_bucket\{/ { b = b (b == "" ? "" : ",") $2 }
        $1 == "seckill_parked_requests" { parked = $2 }
        /^seckill_sold_total\{/ { sold += $2 }
        END {
            if (ok) print t, total + 0, b, parked + 0, rss, est, sold + 0
            else print t, "-", "-", "-", rss, est, "-"
        }' >> "$4"
}

mode=${1:-}
case "$mode" in
once | run)
    command -v ss >/dev/null ||
        echo "sample.sh: ss is not installed (iproute2, make deps): established connections read 0" >&2
    ;;
esac
case "$mode" in
once)
    [ $# -eq 5 ] || { echo "usage: sample.sh once BASE_URL PID PORT RAWFILE" >&2; exit 64; }
    scrape "$2" "$3" "$4" "$5"
    ;;
run)
    [ $# -eq 5 ] || { echo "usage: sample.sh run BASE_URL PID PORT RAWFILE" >&2; exit 64; }
    base=$2 pid=$3 port=$4 raw=$5
    next=$(date +%s%N)
    while kill -0 "$pid" 2>/dev/null; do
        scrape "$base" "$pid" "$port" "$raw"
        next=$((next + 1000000000))
        wait_ns=$((next - $(date +%s%N)))
        if [ "$wait_ns" -gt 0 ]; then
            sleep "$(awk -v n="$wait_ns" 'BEGIN { printf "%.3f", n / 1e9 }')"
        else
            next=$(date +%s%N) # fell behind (a slow scrape): restart the beat
        fi
    done
    ;;
csv)
    [ $# -eq 2 ] || { echo "usage: sample.sh csv RAWFILE" >&2; exit 64; }
    # bucket upper bounds in seconds, as the gateway exports them (+Inf last)
    awk -v bounds="0.00025,0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5" '
        BEGIN {
            nb = split(bounds, ub, ",")
            print "second,rps,p99_ms,parked,established,rss_mib,sold"
        }
        NR == 1 { t0 = $1 }
        {
            t = $1
            sec = (t - t0) / 1e9
            if ($2 == "-") { # no scrape: connections and RSS only
                if (NR > 1)
                    printf "%.1f,,,,%d,%.1f,\n", sec, $6, $5 / 1024
                next
            }
            total = $2; n = split($3, cum, ",")
            if (have && t > pt) {
                dt = (t - pt) / 1e9
                d = total - ptotal
                p99 = ""
                dn = cum[n] - pcum[n]
                if (dn > 0) {
                    rank = 0.99 * dn
                    for (i = 1; i <= n; i++) {
                        c = cum[i] - pcum[i]
                        if (c >= rank) break
                    }
                    if (i > nb) {
                        p99 = ub[nb] # past the last finite bound
                    } else {
                        lo = i > 1 ? ub[i - 1] : 0
                        cprev = i > 1 ? cum[i - 1] - pcum[i - 1] : 0
                        inb = c - cprev
                        p99 = lo + (ub[i] - lo) * (inb > 0 ? (rank - cprev) / inb : 1)
                    }
                    p99 = sprintf("%.3f", p99 * 1000)
                }
                if (d > 0 || $6 > 0) # leave out idle seconds after the load
                    printf "%.1f,%.0f,%s,%d,%d,%.1f,%d\n", sec, d / dt, p99, $4, $6, $5 / 1024, $7
            }
            have = 1; pt = t; ptotal = total
            for (i = 1; i <= n; i++) pcum[i] = cum[i]
        }' "$2"
    ;;
ticks)
    [ $# -eq 2 ] || { echo "usage: sample.sh ticks PID" >&2; exit 64; }
    awk '{ print $14 + $15 }' "/proc/$2/stat" 2>/dev/null || exit 1
    ;;
cpu)
    cpu_now
    ;;
busy)
    [ $# -eq 2 ] || { echo "usage: sample.sh busy \"BUSY TOTAL\"" >&2; exit 64; }
    cpu_now | awk -v since="$2" '{
        split(since, s, " ")
        if ($2 > s[2]) printf "%.0f\n", 100 * ($1 - s[1]) / ($2 - s[2])
        else print "n/a" }'
    ;;
peak)
    [ $# -eq 2 ] || { echo "usage: sample.sh peak RAWFILE" >&2; exit 64; }
    awk -v bounds="0.00025,0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5" '
        BEGIN { nb = split(bounds, ub, ",") }
        {
            if ($6 > e) e = $6
            if ($5 > r) r = $5
            if ($2 == "-") next
            if ($4 > p) p = $4
            n = split($3, cum, ",")
            if (!first) { first = 1; for (i = 1; i <= n; i++) c0[i] = cum[i] }
            for (i = 1; i <= n; i++) c1[i] = cum[i]
        }
        END {
            q = "n/a"
            dn = c1[n] - c0[n]
            if (dn > 0) {
                rank = 0.99 * dn
                for (i = 1; i <= n; i++) if (c1[i] - c0[i] >= rank) break
                if (i > nb) q = sprintf(">%.0f", ub[nb] * 1000)
                else {
                    lo = i > 1 ? ub[i - 1] : 0
                    cp = i > 1 ? c1[i - 1] - c0[i - 1] : 0
                    inb = c1[i] - c0[i] - cp
                    q = sprintf("%.2f", (lo + (ub[i] - lo) * (inb > 0 ? (rank - cp) / inb : 1)) * 1000)
                }
            }
            printf "peak_established=%d peak_parked=%d peak_rss_kib=%d gw_p99_ms=%s\n", e, p, r, q
        }' "$2"
    ;;
*)
    sed -n '2,/^[^#]/{/^#/p}' "$0" >&2
    exit 64
    ;;
esac
