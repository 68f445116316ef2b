# Plot a flash sale from loadtest/sample.sh's CSV:
#   second,rps,p99_ms,parked,established,rss_mib,sold,s200,s409,s429,s503,s504,sother
# usage: gnuplot -e "csv='loadtest/out/sale.csv'; png='loadtest/out/sale.png'; subtitle='...'; stock=10000" loadtest/plot.gp
# The answers per second are stacked by HTTP status (the sell-out is where
# the 200s give way to 409s), the gateway's p99 is a line on the right axis.
# With stock set, a dashed line marks the first sample at which the sale was
# sold out; with seconds set, only the first that many seconds are drawn.
if (!exists("csv")) csv = 'loadtest/out/sale.csv'
if (!exists("png")) png = 'loadtest/out/sale.png'
if (!exists("subtitle")) subtitle = ''
if (!exists("stock")) stock = 0
if (!exists("seconds")) seconds = 0

set datafile separator ','
set datafile missing ''
set terminal pngcairo size 1100,620 font 'DejaVu Sans,11' noenhanced
set output png

set title "Flash sale through seckill-gateway, answers by status per sample (from /metrics)\n" . subtitle
set xlabel 'time since the sale opened (s)' offset 0,0.4
set ylabel 'answers per second, stacked by status' textcolor rgb '#333333'
set y2label 'gateway p99 latency (ms, log scale; from the histogram)' textcolor rgb '#d62728'
set ytics nomirror
set y2tics nomirror textcolor rgb '#d62728'
set logscale y2
if (seconds > 0) { set xrange [0:seconds] } else { set xrange [0:*] }
set yrange [0:*]
set y2range [0.0005:*]
set format y '%.0f'
set xtics nomirror
set grid xtics ytics lc rgb '#dddddd'
set key outside below center horizontal maxrows 2 box opaque
set border 11
set style fill solid 0.85 noborder

soldout = -1
if (stock > 0) {
    # the first sample whose sold count reached the stock
    stats csv using ($7 >= stock ? $1 : 1e9) skip 1 nooutput
    if (STATS_min < 1e9) {
        soldout = STATS_min
    }
}
if (soldout >= 0) {
    set arrow 1 from soldout, graph 0 to soldout, graph 1 nohead dt 2 lw 1.5 lc rgb '#555555' front
    set label 1 sprintf(' sold out (%d) at %.1f s', stock, soldout) at soldout, graph 0.95 left textcolor rgb '#555555' front
}

# each band is drawn from 0 to the sum of it and the bands below it
s1(c) = column(8)
s2(c) = s1(c) + column(9)
s3(c) = s2(c) + column(10)
s4(c) = s3(c) + column(11)
s5(c) = s4(c) + column(12)
s6(c) = s5(c) + column(13)
plot csv using 1:(s6(0)) skip 1 axes x1y1 with filledcurves x1 lc rgb '#7f7f7f' title 'other (400, 403, 404, ...)', \
     csv using 1:(s5(0)) skip 1 axes x1y1 with filledcurves x1 lc rgb '#9467bd' title '504 timeout', \
     csv using 1:(s4(0)) skip 1 axes x1y1 with filledcurves x1 lc rgb '#d62728' title '503 overloaded', \
     csv using 1:(s3(0)) skip 1 axes x1y1 with filledcurves x1 lc rgb '#ff7f0e' title '429 rate_limited', \
     csv using 1:(s2(0)) skip 1 axes x1y1 with filledcurves x1 lc rgb '#1f77b4' title '409 sold_out and others', \
     csv using 1:(s1(0)) skip 1 axes x1y1 with filledcurves x1 lc rgb '#2ca02c' title '200 success', \
     csv using 1:3 skip 1 axes x1y2 with linespoints lw 2 pt 5 ps 0.4 lc rgb '#000000' title 'gateway p99 (ms)'
