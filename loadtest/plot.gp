# Plot a flash sale from loadtest/sample.sh's CSV:
#   second,rps,p99_ms,parked,established,rss_mib,sold
# usage: gnuplot -e "csv='loadtest/out/sale.csv'; png='loadtest/out/sale.png'; subtitle='...'; stock=10000" loadtest/plot.gp
# With stock set, a dashed line marks the first second the sale was sold out.
if (!exists("csv")) csv = 'loadtest/out/sale.csv'
if (!exists("png")) png = 'loadtest/out/sale.png'
if (!exists("subtitle")) subtitle = ''
if (!exists("stock")) stock = 0

set datafile separator ','
set terminal pngcairo size 1100,560 font 'DejaVu Sans,11' noenhanced
set output png

set title "Flash sale through seckill-gateway, per second (from /metrics)\n" . subtitle
set xlabel 'time since the sale opened (s)'
set ylabel 'answers per second (req/s)' textcolor rgb '#1f77b4'
set y2label 'gateway p99 latency (ms, log scale; from the histogram)' textcolor rgb '#d62728'
set ytics nomirror textcolor rgb '#1f77b4'
set y2tics nomirror textcolor rgb '#d62728'
set logscale y2
set xrange [0:*]
set yrange [0:*]
set y2range [0.1:*]
set format y '%.0f'
set xtics nomirror
set grid xtics ytics lc rgb '#dddddd'
set key top right box opaque
set border 11

soldout = -1
if (stock > 0) {
    # the first second whose sold count reached the stock
    stats csv using ($7 >= stock ? $1 : 1e9) skip 1 nooutput
    if (STATS_min < 1e9) {
        soldout = STATS_min
    }
}
if (soldout >= 0) {
    set arrow 1 from soldout, graph 0 to soldout, graph 1 nohead dt 2 lw 1.5 lc rgb '#555555'
    set label 1 sprintf(' sold out (%d) by %.1f s', stock, soldout) at soldout, graph 0.95 left textcolor rgb '#555555'
}

plot csv using 1:2 skip 1 axes x1y1 with linespoints lw 2 pt 7 ps 0.6 lc rgb '#1f77b4' title 'requests/s', \
     csv using 1:3 skip 1 axes x1y2 with linespoints lw 2 pt 5 ps 0.6 lc rgb '#d62728' title 'gateway p99 (ms)'
