#!/bin/sh
# Sample a gateway while a load test runs (once a second, or every
# SAMPLE_MS milliseconds), then turn the samples into a CSV.
#
# usage: loadtest/sample.sh run BASE_URL PID PORT RAWFILE
#          appends one line per sample to RAWFILE until killed (every
#          SAMPLE_MS ms, default 1000; the flash sale of bench.sh: 100):
#          epoch_ns answers_total bucket_cumulative_counts(comma-separated)
#          parked_requests rss_kib established_connections sold
#          answers_by_status(comma-separated: 200,409,429,503,504,other)
#          (epoch_ns: the gateway's seckill_time_seconds, when it read the
#          counters; answers, buckets, parked, sold and statuses are "-" when
#          /metrics did not answer within 5 s, 0.9 s for "once"); sold =
#          orders reserved less orders cancelled (the embedded inventory's
#          counters). Scrapes overlap when the gateway is slow to answer
#          (up to 16 at once): lines may land out of time order
#        loadtest/sample.sh once BASE_URL PID PORT RAWFILE
#          appends one such line now (run.sh: before and after wrk, so that
#          "peak" gives the gateway's own p99 without a scrape every second:
#          on this VM the per-second scrape's processes cost the measured
#          gateway milliseconds of p99)
#        loadtest/sample.sh csv RAWFILE > CSV
#          columns: second,rps,p99_ms,parked,established,rss_mib,sold,
#                   s200,s409,s429,s503,s504,sother
#          (idle samples after the load ended are left out)
#          second = time of the sample since the first one (0.01 s): the
#                   gateway's clock when it rendered the scrape
#                   (seckill_time_seconds), so scrapes that waited in a busy
#                   gateway are placed when they were read; of samples read
#                   within 50 ms of each other only the first is kept;
#          rps    = delta of the answers (seckill_requests_total summed over
#                   results) divided by the time between samples;
#          p99_ms = 99th percentile of the answers since the previous sample,
#                   from the deltas of the seckill_request_duration_seconds
#                   buckets, interpolated linearly inside the bucket it falls
#                   in (answers past the last finite bound count as that
#                   bound);
#          s200 .. sother = answers per second since the previous sample by
#                   HTTP status (409: sold_out, already_purchased,
#                   not_started, ended; other: 400, 403, 404, 405, 413, 415),
#                   which add up to rps
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

# The scrapes themselves: loadtest/sample_loop.py, one Python process for
# the whole run (a scrape every 100 ms from the shell would fork a handful
# of processes each time, and cost the measured machine a CPU share).
loop="$(dirname "$0")/sample_loop.py"

mode=${1:-}
case "$mode" in
once)
    [ $# -eq 5 ] || { echo "usage: sample.sh once BASE_URL PID PORT RAWFILE" >&2; exit 64; }
    python3 "$loop" "$2" "$3" "$4" "$5"
    ;;
run)
    [ $# -eq 5 ] || { echo "usage: sample.sh run BASE_URL PID PORT RAWFILE" >&2; exit 64; }
    exec python3 "$loop" "$2" "$3" "$4" "$5" "${SAMPLE_MS:-1000}"
    ;;
csv)
    [ $# -eq 2 ] || { echo "usage: sample.sh csv RAWFILE" >&2; exit 64; }
    # scrapes that overlapped may have written their lines out of order
    sort -n -k1,1 "$2" |
    # bucket upper bounds in seconds, as the gateway exports them (+Inf last)
    awk -v bounds="0.000001,0.0000025,0.000005,0.00001,0.000025,0.00005,0.0001,0.00025,0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5" '
        BEGIN {
            nb = split(bounds, ub, ",")
            print "second,rps,p99_ms,parked,established,rss_mib,sold,s200,s409,s429,s503,s504,sother"
        }
        NR == 1 { t0 = $1 }
        {
            t = $1
            sec = (t - t0) / 1e9
            if ($2 == "-") { # no scrape: connections and RSS only
                if (NR > 1)
                    printf "%.2f,,,,%d,%.1f,,,,,,,\n", sec, $6, $5 / 1024
                next
            }
            total = $2; n = split($3, cum, ","); split($8, bys, ",")
            # scrapes a busy gateway answered together: one sample per 50 ms
            if (have && t - pt < 50000000) next
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
                if (d > 0 || $6 > 0) { # leave out idle samples after the load
                    printf "%.2f,%.0f,%s,%d,%d,%.1f,%d", sec, d / dt, p99, $4, $6, $5 / 1024, $7
                    for (i = 1; i <= 6; i++) printf ",%.0f", (bys[i] - pby[i]) / dt
                    printf "\n"
                }
            }
            have = 1; pt = t; ptotal = total
            for (i = 1; i <= n; i++) pcum[i] = cum[i]
            for (i = 1; i <= 6; i++) pby[i] = bys[i]
        }'
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
    sort -n -k1,1 "$2" | awk -v bounds="0.000001,0.0000025,0.000005,0.00001,0.000025,0.00005,0.0001,0.00025,0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5" '
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
        }'
    ;;
*)
    sed -n '2,/^[^#]/{/^#/p}' "$0" >&2
    exit 64
    ;;
esac
