#!/usr/bin/env python3
"""loadtest/bench_report.py on fixed rows: the table's verdicts, the paced
rows' CPU and busy per cent, the reference and hand-off rows with footnote ²,
the latency curve, sections left out when their rows are missing, and
malformed rows refused with the line named.

usage: python3 tests/unit/test_bench_report.py (or python3 -m unittest from tests/unit)
"""
import csv
import io
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "loadtest", "bench_report.py")
# importing the report must leave no __pycache__ in loadtest/
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "loadtest"))
import bench_report  # noqa: E402

COLUMNS = ("scenario", "park", "conns", "kind", "rps", "p50_ms", "p99_ms", "statuses", "invariants",
           "offered_rps", "gw_p99_ms", "cpu_us_per_req", "box_busy_pct")


def row(scenario, kind, rps, p99="5.0", conns="256", **more):
    """One row as bench.sh writes it, the columns not given absent."""
    r = dict(scenario=scenario, park="event", conns=conns, kind=kind, rps=str(rps), p50_ms="1.0",
             p99_ms=str(p99), statuses="200=1000", invariants="OK" if kind not in ("ceiling", "reference") else "-")
    r.update({k: str(v) for k, v in more.items()})
    return r


def tsv(rows):
    """rows as a TSV text whose header names every column any of them has."""
    cols = list(COLUMNS) + sorted({c for r in rows for c in r} - set(COLUMNS))
    return "\n".join(["\t".join(cols)] + ["\t".join(r.get(c, "-") for c in cols) for r in rows]) + "\n"


def render(rows):
    return bench_report.report(bench_report.parse_rows(tsv(rows)), threads=2, duration=10, long=20,
                               outdir="out", machine_line="machine: test")


def table_line(text, scenario):
    """The table line of scenario, split into its cells."""
    for ln in text.splitlines():
        if ln.startswith("| " + scenario + " |"):
            return [c.strip() for c in ln.strip("|").split(" | ")]
    raise AssertionError(f"no table line for {scenario!r} in:\n{text}")


def line_starting(text, prefix):
    lines = [ln for ln in text.splitlines() if ln.startswith(prefix)]
    return lines[0] if lines else None


CEILINGS = [row("ceiling 256", "ceiling", 80000, p99="7.5", cpu_us_per_req="12.0", box_busy_pct="60"),
            row("ceiling 256 again", "ceiling", 100000, p99="8.25"),
            row("ceiling 1000", "ceiling", 90000, conns="1000", p99="18")]
PACED = [row("sweep 10000", "sweep", 10000, p99="2.0", offered_rps="10000", gw_p99_ms="1.5",
             cpu_us_per_req="20.0", box_busy_pct="40"),
         row("sweep 30000", "sweep", 29900, p99="6.5", offered_rps="30000", gw_p99_ms=">2500",
             cpu_us_per_req="21.0", box_busy_pct="70"),
         row("paced run 1", "paced", 51000, p99="4.5", offered_rps="51000", gw_p99_ms="3.2",
             cpu_us_per_req="25.0", box_busy_pct="90"),
         row("paced run 2", "paced", 40000, p99="12.0", offered_rps="51000", gw_p99_ms="9.8",
             cpu_us_per_req="26.0", box_busy_pct="94")]
FOOTNOTED = [row("reference", "reference", 50900, p99="1.93", offered_rps="51000", cpu_us_per_req="13.6",
                 box_busy_pct="67", statuses="409=509000"),
             row("hand-off", "handoff", 50800, p99="6.72", offered_rps="51000", gw_p99_ms="4.36",
                 cpu_us_per_req="25.6", box_busy_pct="92", statuses="200=100,409=507900")]


class Verdicts(unittest.TestCase):
    """The target cell of each judged kind, against the best ceiling at the same connections."""

    def setUp(self):
        self.text = render(CEILINGS + [
            row("sold out fast", "reject", 85000),
            row("sold out slow", "reject", 79000),
            row("sold out 1000", "reject", 72000, conns="1000"),
            row("admission fast", "admission", 90000),
            row("admission slow", "admission", 89000),
            row("full fast", "full", 50000),
            row("full slow", "full", 49000),
            row("redis fast", "redis", 30000),
            row("redis slow", "redis", 29000),
            row("redis cluster", "redis", 30000, redis_cpu_us_per_req="9.5", master_cpu_spread_pct="4"),
            row("stalled", "reject", 9000),
            row("async", "asyncflush", 65000),
            row("sale sold out", "sale", 63000, conns="1000", sold="10000", stock="10000"),
            row("sale not sold out", "sale", 63000, conns="1000", sold="9000", stock="10000"),
            row("timeouts on time", "timeout", 990, conns="1000", lateness_max_ms="4.4"),
            row("timeouts late", "timeout", 990, conns="1000", lateness_max_ms="25.25"),
            row("c10k small", "c10k", 3000, conns="10000", rss_hwm_kib="89234"),
            row("c10k big", "c10k", 3000, conns="10000", rss_hwm_kib="270000"),
            row("broken", "full", 50000, invariants="OVERSOLD(sold=2>stock=1)", gw_exit="3"),
            row("no gateway", "none", "-", p99="-", statuses="gateway did not start", invariants="FAILED"),
        ])

    def cell(self, scenario, col=-1):
        return table_line(self.text, scenario)[col]

    def test_reject_is_judged_at_0_8(self):
        self.assertEqual(self.cell("sold out fast", 4), "0.85")
        self.assertEqual(self.cell("sold out fast"), "≥0.8×: met")
        self.assertEqual(self.cell("sold out slow"), "≥0.8×: missed")
        # against the best ceiling at 1,000 connections, not at 256
        self.assertEqual(self.cell("sold out 1000", 4), "0.80")
        self.assertEqual(self.cell("sold out 1000"), "≥0.8×: met")

    def test_admission_is_judged_at_0_9(self):
        # no token ceiling in these rows: against the plain one
        self.assertEqual(self.cell("admission fast", 4), "0.90")
        self.assertEqual(self.cell("admission fast"), "≥0.9×: met")
        self.assertEqual(self.cell("admission slow"), "≥0.9×: missed")

    def test_admission_against_the_token_ceiling(self):
        text = render(CEILINGS + [row("tokens", "tokenceiling", 80000), row("tokens again", "tokenceiling", 70000),
                                  row("admission", "admission", 72000),
                                  row("sold out", "reject", 72000)])
        self.assertEqual(table_line(text, "tokens")[4], "1.00 (best)")
        self.assertEqual(table_line(text, "tokens again")[4], "0.88")
        self.assertEqual(table_line(text, "admission")[4], "0.90")
        self.assertEqual(table_line(text, "admission")[-1], "≥0.9×: met")
        # every other row against the plain ceiling
        self.assertEqual(table_line(text, "sold out")[4], "0.72")

    def test_full_is_judged_at_0_5_without_p99(self):
        self.assertEqual(self.cell("full fast"), "≥0.5×: met (closed loop: p99 not judged¹)")
        self.assertEqual(self.cell("full slow"), "≥0.5×: missed (closed loop: p99 not judged¹)")

    def test_redis_is_judged_at_0_3(self):
        self.assertEqual(self.cell("redis fast"), "≥0.3×: met")
        self.assertEqual(self.cell("redis slow"), "≥0.3×: missed")

    def test_redis_shows_its_cpu_and_the_masters_spread(self):
        self.assertEqual(self.cell("redis cluster"),
                         "≥0.3×: met; Redis CPU 9.5 µs a request, masters within 4 %")

    def test_far_below_the_ceiling_is_a_stall(self):
        self.assertEqual(self.cell("stalled"), "≥0.8×: missed; STALL?")

    def test_best_ceiling_and_the_others(self):
        self.assertEqual(self.cell("ceiling 256 again", 4), "1.00 (best)")
        self.assertEqual(self.cell("ceiling 256", 4), "0.80")
        self.assertEqual(self.cell("ceiling 256"), "-")

    def test_rows_not_judged_by_ratio(self):
        self.assertEqual(self.cell("async"), "for comparison: orders fsynced every 100 ms")
        self.assertEqual(self.cell("sale sold out"), "sold = stock (10000)")
        self.assertEqual(self.cell("sale not sold out"), "sold 9000 of 10000 (not sold out)")
        self.assertEqual(self.cell("timeouts on time"), "timeouts ≤10 ms late: met (worst 4.4 ms)")
        self.assertEqual(self.cell("timeouts late"), "timeouts ≤10 ms late: missed (worst 25.2 ms)")
        self.assertEqual(self.cell("c10k small"), "RSS 87 MiB ≤256 MiB: met")
        self.assertEqual(self.cell("c10k big"), "RSS 264 MiB ≤256 MiB: missed")
        # 10,000 connections against the ceiling at 1,000
        self.assertEqual(self.cell("c10k small", 4), "0.03")

    def test_a_broken_run_shows_what_broke(self):
        self.assertEqual(self.cell("broken", 8), "OVERSOLD(sold=2>stock=1); gateway exit 3 (see out/bench.log)")
        self.assertEqual(self.cell("no gateway"), "-")
        self.assertEqual(self.cell("no gateway", 4), "n/a")
        self.assertEqual(self.cell("no gateway", 7), "gateway did not start")

    def test_the_table_keeps_its_header(self):
        lines = self.text.splitlines()
        self.assertEqual(lines[0], "| scenario | park | conns | req/s | × ceiling | p50 ms | p99 ms | statuses"
                                   " | invariants | target |")
        self.assertEqual(lines[1], "|---|---|--:|--:|--:|--:|--:|---|---|---|")
        self.assertEqual(lines[-1], "machine: test")
        self.assertIn("wrk on loopback, 2 threads, 10 s per scenario (sale and c10k 20 s);", self.text)

    def test_footnote_1_from_the_best_ceiling_at_256(self):
        self.assertIn("at 256 connections and 0.5 × ceiling (50000 req/s) the mean alone is 5.1 ms whatever"
                      " the gateway does, and the ceiling itself has p99 8.25 ms there.",
                      line_starting(self.text, "¹ "))


class Paced(unittest.TestCase):
    """Paced rows: both verdicts, the offered rate, CPU a request and busy per cent."""

    def setUp(self):
        self.text = render(CEILINGS + PACED + FOOTNOTED)

    def test_paced_verdicts(self):
        self.assertEqual(table_line(self.text, "paced run 1")[-1],
                         "offered 0.51×; ≥0.5×: met, p99≤5ms¹: met; gateway's own p99 3.2 ms;"
                         " gateway CPU 25.0 µs a request; machine 90% busy")
        self.assertEqual(table_line(self.text, "paced run 2")[-1],
                         "offered 0.51×; ≥0.5×: missed, p99≤5ms¹: missed; achieved 78% of offered;"
                         " gateway's own p99 9.8 ms; gateway CPU 26.0 µs a request; machine 94% busy")

    def test_sweep_rows_are_not_judged(self):
        # ">2500": beyond the gateway's histogram, not shown as its p99
        self.assertEqual(table_line(self.text, "sweep 30000")[-1],
                         "offered 0.30×; latency curve, not judged: p99 > 5 ms; gateway CPU 21.0 µs a request;"
                         " machine 70% busy")

    def test_reference_and_handoff_rows(self):
        self.assertEqual(table_line(self.text, "reference")[-1],
                         "offered 0.51×; reference², not judged: p99 ≤ 5 ms; server CPU 13.6 µs a request;"
                         " machine 67% busy")
        self.assertEqual(table_line(self.text, "hand-off")[-1],
                         "offered 0.51×; hand-off², not judged: p99 > 5 ms; gateway's own p99 4.36 ms;"
                         " gateway CPU 25.6 µs a request; machine 92% busy")

    def test_footnote_2(self):
        self.assertEqual(line_starting(self.text, "²"),
                         "² reference row: loadtest/ceiling offered the paced rows' rate by the same wrk:"
                         " libmicrohttpd alone at that load, p99 1.93 ms, 13.6 µs of CPU a request, the machine"
                         " 67% busy. Hand-off row: the gateway at that rate with repeat buyers, whom the worker"
                         " answers 409 already purchased with no sale to record or fsync: p99 6.72 ms (its own"
                         " 4.36 ms), 25.6 µs of CPU a request, the machine 92% busy. The paced gateway rows:"
                         " 25.5 µs of CPU a request, the machine 90-94% busy (wrk shares its CPUs).")

    def test_footnote_2_with_the_reference_alone(self):
        text = render(CEILINGS + PACED + FOOTNOTED[:1])
        note = line_starting(text, "²")
        self.assertIn("² reference row: ", note)
        self.assertNotIn("Hand-off row", note)

    def test_latency_curve(self):
        self.assertEqual(line_starting(self.text, "latency curve"),
                         "latency curve, full path paced at 256 connections (offered req/s: p99 as wrk saw it"
                         " / the gateway's own p99, at the machine's CPUs busy): 10000 (0.10×): 2 / 1.5 ms at"
                         " 40% CPU, 30000 (0.30×): 6.5 ms at 70% CPU, 51000 (0.51×): 12 / 9.8 ms at 94% CPU."
                         " p99 within 5 ms up to 10000 req/s offered (0.10 × ceiling).")

    def test_latency_curve_verdicts(self):
        def verdict(p99s):
            rows = [row("r%d" % i, "sweep", o, p99=p, offered_rps=o) for i, (o, p) in enumerate(p99s)]
            return line_starting(render(rows), "latency curve").split(". ", 1)[1]
        self.assertEqual(verdict([(20000, 4), (10000, 3), (30000, 5)]), "p99 within 5 ms up to 30000 req/s offered.")
        # a rate above 5 ms ends "up to", even when a higher one is within again
        self.assertEqual(verdict([(10000, 3), (20000, 6), (30000, 4)]), "p99 within 5 ms up to 10000 req/s offered.")
        self.assertEqual(verdict([(10000, 7), (20000, 3), (30000, 4)]),
                         "p99 above 5 ms already at the lowest paced rate (10000 req/s offered); within 5 ms at"
                         " 20000, 30000 req/s.")
        self.assertEqual(verdict([(10000, 5.5), (20000, 9)]), "p99 above 5 ms at every paced rate.")


class Sections(unittest.TestCase):
    """A section whose rows are missing is left out, and the rest still printed."""

    def test_without_paced_rows(self):
        text = render(CEILINGS + [row("full fast", "full", 50000)])
        self.assertIsNone(line_starting(text, "latency curve"))
        self.assertIsNone(line_starting(text, "²"))
        self.assertIsNotNone(line_starting(text, "¹ "))

    def test_without_full_or_paced_rows(self):
        text = render(CEILINGS + [row("sold out fast", "reject", 85000)])
        for prefix in ("latency curve", "¹ ", "²", "flash sale:", "c10k:"):
            self.assertIsNone(line_starting(text, prefix), prefix)
        self.assertEqual(table_line(text, "sold out fast")[-1], "≥0.8×: met")

    def test_without_a_ceiling(self):
        text = render([row("full fast", "full", 50000)] + PACED[2:3])
        self.assertEqual(table_line(text, "full fast")[4], "n/a")
        self.assertEqual(table_line(text, "full fast")[-1], "≥0.5×: no ceiling (closed loop: p99 not judged¹)")
        self.assertTrue(table_line(text, "paced run 1")[-1].startswith("≥0.5×: no ceiling, p99≤5ms¹: met"))
        self.assertIn("(256 connections at 50,000 req/s: 5.1 ms).", line_starting(text, "¹ "))
        self.assertTrue(line_starting(text, "latency curve").endswith(
            "51000: 4.5 / 3.2 ms at 90% CPU. p99 within 5 ms up to 51000 req/s offered."))

    def test_sale_and_c10k_notes(self):
        text = render(CEILINGS + [
            row("sale", "sale", 63759, p99="26.4", conns="1000", sold="10000", stock="10000", gw_p99_ms="12.5"),
            row("c10k buying", "c10kbuy", 40000, p99="3100", conns="10000", sold="800000", rss_hwm_kib="312000",
                p999_ms="3300.5", max_ms="3420.7", peak_established="10000", peak_parked="9876",
                gw_p99_ms="250.1", statuses="200=800000,504=12 read_err=4")])
        self.assertEqual(line_starting(text, "flash sale:"),
                         "flash sale: 63759 req/s, p99 26.4 ms (wrk; the gateway's own histogram: 12.5 ms), sold"
                         " 10000 of 10000, invariants OK; every 100 ms: out/sale.csv, plot: out/sale.png")
        self.assertIn("gateway RSS high-water 304.7 MiB (with 800000 orders sold", line_starting(text, "c10k: peak"))
        self.assertEqual(line_starting(text, "c10k: 12 answers"),
                         "c10k: 12 answers were 504 (wait_timeout_ms = 3000): p99.9 3300 ms, worst 3421 ms, 421 ms"
                         " past the timeout as wrk saw it")


class Input(unittest.TestCase):
    """The file: TSV or CSV with a header line; malformed rows refused, naming the row."""

    def run_script(self, text, name="rows.tsv", *args):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            argv = list(args) or ["--threads", "2", "--duration", "10", "--long", "20"]
            p = subprocess.run([sys.executable, SCRIPT] + argv + [path], capture_output=True, text=True,
                               encoding="utf-8", check=False)
            written = None
            if os.path.exists(os.path.join(d, "bench.md")):
                with open(os.path.join(d, "bench.md"), encoding="utf-8") as f:
                    written = f.read()
        return p, written

    def test_writes_bench_md_and_prints_it(self):
        p, written = self.run_script(tsv(CEILINGS + PACED))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, written)
        self.assertIn("| paced run 1 | event | 256 | 51000 | 0.51 |", written)
        self.assertTrue(written.splitlines()[-1].startswith("machine: "))

    def test_csv_reads_like_tsv(self):
        rows = CEILINGS + PACED + FOOTNOTED
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, restval="-", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        from_csv = bench_report.report(bench_report.parse_rows(buf.getvalue()), 2, 10, 20, "out", "m")
        self.assertEqual(from_csv, render(rows).replace("machine: test", "m"))
        self.assertIn("| hand-off | event | 256 | 50800 | 0.51 | 1.0 | 6.72 | 200=100,409=507900 | OK |", from_csv)

    def test_columns_in_any_order(self):
        text = tsv(CEILINGS + PACED)
        lines = [ln.split("\t") for ln in text.splitlines()]
        shuffled = "\n".join("\t".join(reversed(f)) for f in lines) + "\n"
        self.assertEqual(bench_report.report(bench_report.parse_rows(shuffled), 2, 10, 20, "out", "m"),
                         bench_report.report(bench_report.parse_rows(text), 2, 10, 20, "out", "m"))

    def test_a_row_with_a_field_missing(self):
        text = tsv(CEILINGS + PACED).splitlines()
        text[3] = text[3].rsplit("\t", 1)[0]
        p, written = self.run_script("\n".join(text) + "\n")
        self.assertEqual(p.returncode, 65)
        self.assertIn("rows.tsv:4: 12 fields, the header names 13", p.stderr)
        self.assertIn("ceiling 1000", p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertIsNone(written)

    def test_a_row_with_a_word_for_a_number(self):
        rows = CEILINGS + [row("full fast", "full", "fast")]
        p, _ = self.run_script(tsv(rows))
        self.assertEqual(p.returncode, 65)
        self.assertIn("rows.tsv:5 (full fast): rps 'fast' is not a number", p.stderr)

    def test_a_row_of_an_unknown_kind(self):
        with self.assertRaisesRegex(bench_report.RowError, r"^rows:3 \(odd\): unknown kind 'fast'"):
            bench_report.parse_rows(tsv([CEILINGS[0], row("odd", "fast", 1)]))

    def test_a_header_without_the_table_columns(self):
        with self.assertRaisesRegex(bench_report.RowError, r"^rows:1: the header lacks the column\(s\) kind"):
            bench_report.parse_rows("scenario,park,conns,rps,p50_ms,p99_ms,statuses,invariants\n")
        with self.assertRaisesRegex(bench_report.RowError, r"^rows:1: unknown column\(s\) speed"):
            bench_report.parse_rows(tsv(CEILINGS).replace("box_busy_pct", "speed"))

    def test_best_ceiling(self):
        p, _ = self.run_script(tsv(CEILINGS + PACED), "rows.tsv", "--best-ceiling", "256")
        self.assertEqual((p.returncode, p.stdout), (0, "100000\n"))
        p, _ = self.run_script(tsv(PACED), "rows.tsv", "--best-ceiling", "256")
        self.assertEqual((p.returncode, p.stdout), (0, ""))

    def test_usage(self):
        p, written = self.run_script(tsv(CEILINGS), "rows.tsv", "--threads", "2")
        self.assertEqual(p.returncode, 64)
        self.assertIsNone(written)


if __name__ == "__main__":
    unittest.main()
