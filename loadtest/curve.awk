# Latency curve of loadtest/bench.sh: every paced row (kind paced or sweep)
# by offered rate, with p99 as wrk saw it and the gateway's own p99 (the
# worst of the runs at one rate) and how busy the machine's CPUs were in that
# run, then a verdict: the highest offered rate up to which every rate, from
# the lowest one on, kept p99 within 5 ms.
# usage: awk -F'\t' -f loadtest/curve.awk ROWS ROWS
#   (the rows file twice: the best ceiling at 256 connections first)
# ROWS columns (bench.sh's row()): 3 connections, 4 req/s, 6 p99 ms,
#   9 kind, 10 offered req/s, 11 the gateway's own p99 ms, 13 per cent of
#   the CPUs busy (absent or "-": not shown)
NR == FNR { if ($9 == "ceiling" && $3 == 256 && $4 + 0 > b) b = $4 + 0; next }
($9 == "paced" || $9 == "sweep") && $6 != "-" {
    o = $10 + 0
    if (!(o in p99)) { n++; rate[n] = o; p99[o] = $6 + 0; own[o] = $11; busy[o] = $13 }
    else if ($6 + 0 > p99[o]) { p99[o] = $6 + 0; own[o] = $11; busy[o] = $13 }
}
END {
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && rate[j] < rate[j - 1]; j--) { x = rate[j]; rate[j] = rate[j - 1]; rate[j - 1] = x }
    line = ""; within = ""
    upto = 0; broken = 0
    for (i = 1; i <= n; i++) if (busy[rate[i]] ~ /^[0-9]+$/) anybusy = 1
    for (i = 1; i <= n; i++) {
        o = rate[i]
        line = line (i > 1 ? ", " : "") sprintf("%.0f", o) (b > 0 ? sprintf(" (%.2f×)", o / b) : "") \
            ": " p99[o] (own[o] ~ /^[0-9.]+$/ ? " / " own[o] : "") " ms" \
            (busy[o] ~ /^[0-9]+$/ ? " at " busy[o] "% CPU" : "")
        if (p99[o] <= 5) within = within (within == "" ? "" : ", ") sprintf("%.0f", o)
        if (!broken && p99[o] <= 5) upto = o; else broken = 1
    }
    printf "latency curve, full path paced at 256 connections (offered req/s: p99 as wrk saw it / the gateway's own p99%s): %s. ", (anybusy ? ", at the machine's CPUs busy" : ""), line
    # "up to": every rate from the lowest one up to it kept p99
    # within 5 ms
    if (upto > 0)
        printf "p99 within 5 ms up to %.0f req/s offered%s.\n", upto, (b > 0 ? sprintf(" (%.2f × ceiling)", upto / b) : "")
    else if (within != "")
        printf "p99 above 5 ms already at the lowest paced rate (%.0f req/s offered); within 5 ms at %s req/s.\n", rate[1], within
    else
        printf "p99 above 5 ms at every paced rate.\n"
}
