#!/usr/bin/env python3
"""The report of loadtest/bench.sh: bench.md from the rows of one bench run.

usage: bench_report.py --threads N --duration S --long S [--out FILE] ROWS
       bench_report.py --best-ceiling CONNS ROWS

ROWS is a TSV file (bench.sh's rows.tsv) or a CSV file whose first line names
the columns; every later line is one run. The report is a markdown table, one
line per row with its ratio to the best ceiling at the same connections and its
verdict against the target of its kind; a line on how it was measured; the
latency curve of the paced rows; footnotes ¹ (why only paced rows judge p99)
and ² (the reference and hand-off rows); notes on the flash sale and on 10,000
connections; the machine. A section none of whose rows is there is left out.
It goes to FILE (default: bench.md beside ROWS) and to stdout.
--threads, --duration and --long describe the run (wrk threads, seconds per
scenario, seconds of the sale and c10k scenarios).

--best-ceiling prints the best req/s of the ceiling rows at CONNS
connections, nothing when there is none: the rate bench.sh paces against.

Exit status: 0; 64 bad usage; 65 a malformed row (the message names its line
and what is wrong with it); 66 ROWS cannot be read.

Columns, by name in any order. The first nine are the table's and must be in
the header; any other may be left out. A value "-", "", "?" or "n/a" is absent.
  scenario          the row's label
  park              event or thread
  conns             connections wrk held open (the key of "× ceiling")
  kind              what the row is judged against: KINDS below
  rps               requests/s answered, as wrk saw them
  p50_ms, p99_ms    latency percentiles as wrk saw them
  statuses          HTTP statuses and wrk's socket errors
                    ("200=5,409=3 read_err=1"), or why the row did not run
  invariants        run.sh's verdict: OK, or what broke
  gw_exit           the gateway's status after the SIGTERM that ends a run;
                    non-zero is shown with the invariants
  offered_rps       paced, sweep, reference, handoff: the rate wrk offered
  sold, stock       sale and c10kbuy: orders sold, and the stock
  rss_hwm_kib       c10k and c10kbuy: the gateway's RSS high-water mark
  lateness_max_ms   timeout: the latest a deadline was answered
  gw_p99_ms         the gateway's own p99 (its histogram, request read to
                    answer); shown when it is a plain number
  cpu_us_per_req    the server's CPU time a request (the gateway's; for a
                    reference row, loadtest/ceiling's)
  box_busy_pct      how busy the machine's CPUs were while wrk ran, in whole
                    per cent (every process, wrk too)
  p999_ms, max_ms, peak_established, peak_parked
                    c10kbuy: the note on 10,000 connections
  redis_cpu_us_per_req, master_cpu_spread_pct
                    redis: Redis's CPU time a request (every node), and on
                    a cluster how far its masters' CPU spread ((max - min) /
                    mean, whole per cent)
"""
import argparse
import csv
import os
import re
import subprocess
import sys

# kind: the target the row is judged against, if any
KINDS = {
    "ceiling": "loadtest/ceiling, closed loop: what the ratios divide by",
    "reject": ">= 0.8 x ceiling",
    "admission": ">= 0.9 x the token ceiling: a rejection with signed tokens and per-client limits on",
    "tokenceiling": "loadtest/ceiling sent the admission rows' requests (a token each): what they divide by",
    "full": ">= 0.5 x ceiling; closed loop, so its p99 is shown, not judged",
    "paced": ">= 0.5 x ceiling achieved and p99 <= 5 ms, at a fixed offered rate",
    "sweep": "the paced path at a lower offered rate: the latency curve, not judged",
    "reference": "loadtest/ceiling at the judged paced rate, not judged (footnote ²)",
    "handoff": "the gateway at the judged paced rate with repeat buyers, not judged (footnote ²)",
    "asyncflush": "orders fsynced every 100 ms, for comparison, not judged",
    "redis": ">= 0.3 x ceiling",
    "sale": "sold = stock",
    "c10k": "RSS <= 256 MiB with 10,000 connections parked",
    "c10kbuy": "10,000 connections buying: RSS holds every order sold, not judged",
    "timeout": "timeouts answered <= 10 ms late",
    "none": "the run did not happen or failed; its statuses cell says why",
}
PACED = ("paced", "sweep", "reference", "handoff")
TABLE_COLUMNS = ("scenario", "park", "conns", "rps", "p50_ms", "p99_ms", "statuses", "invariants", "kind")
OTHER_COLUMNS = ("gw_exit", "offered_rps", "sold", "stock", "rss_hwm_kib", "lateness_max_ms", "gw_p99_ms",
                 "cpu_us_per_req", "box_busy_pct", "p999_ms", "max_ms", "peak_established", "peak_parked",
                 "redis_cpu_us_per_req", "master_cpu_spread_pct")
# the columns the report computes with: a number when present
NUMERIC_COLUMNS = ("rps", "p99_ms", "p999_ms", "max_ms", "offered_rps", "rss_hwm_kib", "lateness_max_ms",
                   "cpu_us_per_req", "box_busy_pct")
ABSENT = ("", "-", "?", "n/a")
NUMBER = re.compile(r"^[0-9]+(\.[0-9]*)?$|^\.[0-9]+$")
# a figure shown as measured: the gateway's p99 may also be ">2500" (beyond its histogram)
PLAIN = re.compile(r"^[0-9.]+$")
WHOLE = re.compile(r"^[0-9]+$")
P99_TARGET_MS = 5


class RowError(Exception):
    """A malformed ROWS file: the message names the file, the line and what is wrong."""


class Row:
    """One run: its cells by column name, as written (absent columns are "-")."""

    def __init__(self, cells, line):
        self.cells = cells
        self.line = line

    def __getitem__(self, name):
        return self.cells.get(name, "-")

    @property
    def kind(self):
        return self.cells["kind"]

    def num(self, name):
        """The column as a float, None when absent."""
        v = self.cells.get(name, "-")
        return None if v in ABSENT else float(v)

    def num0(self, name):
        """The column as a float, 0 when absent."""
        v = self.num(name)
        return 0.0 if v is None else v


def read_rows(path):
    """The rows of a TSV or CSV file with a header line; RowError if one is malformed."""
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    return parse_rows(text, path)


def parse_rows(text, name="rows"):
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise RowError(f"{name}: no header line naming the columns")
    if "\t" in lines[0]:
        records = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        records = csv.reader(lines)
    header = [h.strip() for h in next(records)]
    missing = [c for c in TABLE_COLUMNS if c not in header]
    if missing:
        raise RowError(f"{name}:1: the header lacks the column(s) {', '.join(missing)}")
    unknown = [c for c in header if c not in TABLE_COLUMNS + OTHER_COLUMNS]
    if unknown:
        raise RowError(f"{name}:1: unknown column(s) {', '.join(unknown)} in the header")
    if len(set(header)) != len(header):
        raise RowError(f"{name}:1: a column is named twice in the header")
    rows = []
    for lineno, fields in enumerate(records, start=2):
        if not fields or fields == [""]:
            continue
        where = f"{name}:{lineno}"
        if len(fields) != len(header):
            raise RowError(f"{where}: {len(fields)} fields, the header names {len(header)}: "
                           f"{'|'.join(fields)}")
        cells = dict(zip(header, (v.strip() for v in fields)))
        label = f"{where} ({cells['scenario']})"
        if cells["kind"] not in KINDS:
            raise RowError(f"{label}: unknown kind '{cells['kind']}' ({', '.join(KINDS)})")
        for c in NUMERIC_COLUMNS:
            v = cells.get(c, "-")
            if v not in ABSENT and not NUMBER.match(v):
                raise RowError(f"{label}: {c} '{v}' is not a number")
        rows.append(Row(cells, lineno))
    return rows


def short_number(x):
    """A p99 in the latency curve: whole numbers without a point (6.0 -> 6), others to 6 digits."""
    if x == int(x) and abs(x) < 1e15:
        return "%d" % x
    return "%.6g" % x


def best_ceilings(rows, kind="ceiling"):
    """The best req/s of the ceiling rows (of kind) by connections (other load only ever lowers it)."""
    best = {}
    for r in rows:
        if r.kind == kind:
            v = r.num0("rps")
            if v > best.get(r["conns"], 0):
                best[r["conns"]] = v
    return best


def best_ceiling_row(rows, conns):
    """The ceiling row with the best req/s at conns connections, or None."""
    top = None
    for r in rows:
        if r.kind == "ceiling" and r["conns"] == conns and r.num0("rps") > (top.num0("rps") if top else 0):
            top = r
    return top


def load_notes(r, who):
    """What else a paced, sweep, reference or hand-off row measured."""
    t = ""
    offered, rps = r.num0("offered_rps"), r.num0("rps")
    # the server did not keep up with the offered rate
    if offered > 0 and rps < 0.98 * offered:
        t += "; achieved %.0f%% of offered" % (100 * rps / offered)
    if PLAIN.match(r["gw_p99_ms"]):
        t += "; gateway's own p99 " + r["gw_p99_ms"] + " ms"
    if PLAIN.match(r["cpu_us_per_req"]):
        t += "; " + who + " CPU " + r["cpu_us_per_req"] + " µs a request"
    if WHOLE.match(r["box_busy_pct"]):
        t += "; machine " + r["box_busy_pct"] + "% busy"
    return t


def met(ok):
    return "met" if ok else "missed"


def target(r, ratio, c):
    """The target cell: the verdict against the row's kind, and what else it measured.
    ratio: req/s over the ceiling c as the table shows it (two decimals), None without a ceiling."""
    k = r.kind
    no_ceiling = "no ceiling" if ratio is None else None
    if k == "reject":
        return "≥0.8×: " + (no_ceiling or met(ratio >= 0.8))
    if k == "admission":
        return "≥0.9×: " + (no_ceiling or met(ratio >= 0.9))
    if k == "full":
        return "≥0.5×: " + (no_ceiling or met(ratio >= 0.5)) + " (closed loop: p99 not judged¹)"
    if k == "redis":
        t = "≥0.3×: " + (no_ceiling or met(ratio >= 0.3))
        if PLAIN.match(r["redis_cpu_us_per_req"]):
            t += "; Redis CPU " + r["redis_cpu_us_per_req"] + " µs a request"
        if WHOLE.match(r["master_cpu_spread_pct"]):
            t += ", masters within " + r["master_cpu_spread_pct"] + " %"
        return t
    if k in PACED:
        t = "offered %.2f×; " % (r.num0("offered_rps") / c) if c > 0 else ""
        p99_within = r.num0("p99_ms") <= P99_TARGET_MS
        if k == "paced":
            t += "≥0.5×: " + (no_ceiling or met(ratio >= 0.5)) + ", p99≤5ms¹: " + met(p99_within)
        else:
            t += {"sweep": "latency curve", "reference": "reference²", "handoff": "hand-off²"}[k]
            t += ", not judged: p99 " + ("≤" if p99_within else ">") + " 5 ms"
        return t + load_notes(r, "server" if k == "reference" else "gateway")
    if k == "asyncflush":  # a machine crash may lose 100 ms of orders
        return "for comparison: orders fsynced every 100 ms"
    if k == "sale":
        if r["sold"] == r["stock"]:
            return "sold = stock (" + r["sold"] + ")"
        return "sold " + r["sold"] + " of " + r["stock"] + " (not sold out)"
    if k in ("c10k", "c10kbuy"):
        kib = r.num("rss_hwm_kib")
        if kib is None:
            return "RSS not measured"
        if k == "c10k":
            return "RSS %.0f MiB ≤256 MiB: %s" % (kib / 1024, met(kib / 1024 <= 256))
        # every order sold stays in memory: not the RSS target
        return "RSS %.0f MiB, with every order sold held in memory" % (kib / 1024)
    if k == "timeout":
        late = r.num("lateness_max_ms")
        if late is None:
            return "timeouts ≤10 ms late: not measured"
        return "timeouts ≤10 ms late: %s (worst %.1f ms)" % (met(late <= 10), late)
    return "-"  # ceiling, none


def table(rows, log):
    best = best_ceilings(rows)
    # the admission rows and their own ceiling: against the ceiling that got
    # the same requests (a token each), when it ran; else the plain one
    best_tokens = best_ceilings(rows, "tokenceiling")
    out = ["| scenario | park | conns | req/s | × ceiling | p50 ms | p99 ms | statuses | invariants | target |",
           "|---|---|--:|--:|--:|--:|--:|---|---|---|"]
    for r in rows:
        c = best.get(r["conns"]) or best.get("1000", 0)  # 10,000 connections: against 1,000
        if r.kind in ("admission", "tokenceiling") and best_tokens.get(r["conns"]):
            c = best_tokens[r["conns"]]
        rps = r.num("rps")
        ratio = rps / c if rps is not None and c > 0 else None
        shown = "n/a" if ratio is None else "%.2f" % ratio
        t = target(r, None if ratio is None else float(shown), c)
        # far below the ceiling, or far below the offered rate: what a stall looks like
        if r.kind in PACED:
            if r.num0("offered_rps") > 0 and r.num0("rps") < 0.1 * r.num0("offered_rps"):
                t += "; STALL?"
        elif r.kind not in ("ceiling", "tokenceiling", "c10k", "c10kbuy", "timeout") and ratio is not None and float(shown) < 0.1:
            t += "; STALL?"
        if r.kind in ("ceiling", "tokenceiling") and shown == "1.00":
            shown = "1.00 (best)"
        inv = r["invariants"]
        # a crash at SIGTERM, or what a sanitizer build found (run.sh's stderr is in the log)
        if r["gw_exit"] not in ABSENT and r["gw_exit"] != "0":
            inv += "; gateway exit " + r["gw_exit"] + " (see " + log + ")"
        out.append("| " + " | ".join((r["scenario"], r["park"], r["conns"], r["rps"], shown, r["p50_ms"],
                                        r["p99_ms"], r["statuses"], inv, t)) + " |")
    return out


def latency_curve(rows):
    """Every paced row (kind paced or sweep) by offered rate, with p99 as wrk saw it, the
    gateway's own p99 and how busy the CPUs were (the worst run at each rate), then the
    highest offered rate up to which every rate, from the lowest one on, kept p99 within
    5 ms."""
    top = best_ceiling_row(rows, "256")
    b = top.num0("rps") if top else 0
    worst = {}  # offered rate -> the run with the highest p99
    for r in rows:
        if r.kind in ("paced", "sweep") and r.num("p99_ms") is not None:
            o = r.num0("offered_rps")
            if o not in worst or r.num("p99_ms") > worst[o].num("p99_ms"):
                worst[o] = r
    rates = sorted(worst)
    anybusy = any(WHOLE.match(worst[o]["box_busy_pct"]) for o in rates)
    parts, within = [], []
    upto, broken = 0, False
    for o in rates:
        r = worst[o]
        p99 = r.num("p99_ms")
        own, busy = r["gw_p99_ms"], r["box_busy_pct"]
        parts.append("%.0f" % o + (" (%.2f×)" % (o / b) if b > 0 else "") + ": " + short_number(p99)
                     + (" / " + own if PLAIN.match(own) else "") + " ms"
                     + (" at " + busy + "% CPU" if WHOLE.match(busy) else ""))
        if p99 <= P99_TARGET_MS:
            within.append("%.0f" % o)
        # "up to": every rate from the lowest one up to it kept p99 within 5 ms
        if not broken and p99 <= P99_TARGET_MS:
            upto = o
        else:
            broken = True
    line = ("latency curve, full path paced at 256 connections (offered req/s: p99 as wrk saw it / the "
            "gateway's own p99" + (", at the machine's CPUs busy" if anybusy else "") + "): "
            + ", ".join(parts) + ". ")
    if upto > 0:
        line += "p99 within 5 ms up to %.0f req/s offered%s." % (
            upto, " (%.2f × ceiling)" % (upto / b) if b > 0 else "")
    elif within:
        line += ("p99 above 5 ms already at the lowest paced rate (%.0f req/s offered); within 5 ms at %s req/s."
                 % (rates[0], ", ".join(within)))
    else:
        line += "p99 above 5 ms at every paced rate."
    return line


def footnote_closed_loop(rows):
    """¹: why p99 is judged on the paced rows only."""
    top = best_ceiling_row(rows, "256")
    t = ("¹ p99 ≤ 5 ms is judged on the paced rows only (scenario paced). Every other row is closed loop: each"
         " connection sends its next request as soon as its answer arrives, so by Little's law mean latency ="
         " connections / throughput")
    if top:
        b = top.num0("rps")
        t += (": at 256 connections and 0.5 × ceiling (%.0f req/s) the mean alone is %.1f ms whatever the gateway"
              " does, and the ceiling itself has p99 %s ms there." % (b / 2, 256 * 1000 / (b / 2), top["p99_ms"]))
    else:
        t += " (256 connections at 50,000 req/s: 5.1 ms)."
    return t + (" The paced rows offer a fixed rate instead (Poisson send times over the 256 connections, run.sh"
                " --pace), so their latency is the response time at that load; their × ceiling is the achieved"
                " rate, \"offered\" the rate wrk offered.")


def footnote_reference(rows):
    """²: the paced rows against libmicrohttpd alone and against the hand-off alone, at the same load."""
    ref = [r for r in rows if r.kind == "reference"]
    ho = [r for r in rows if r.kind == "handoff"]
    paced = [r for r in rows if r.kind == "paced" and WHOLE.match(r["box_busy_pct"])]
    t = "²"
    if ref:
        r = ref[-1]
        t += (" reference row: loadtest/ceiling offered the paced rows' rate by the same wrk: libmicrohttpd alone"
              " at that load, p99 %s ms, %s µs of CPU a request, the machine %s%% busy."
              % (r["p99_ms"], r["cpu_us_per_req"], r["box_busy_pct"]))
    if ho:
        r = ho[-1]
        t += (" Hand-off row: the gateway at that rate with repeat buyers, whom the worker answers 409 already"
              " purchased with no sale to record or fsync: p99 %s ms (its own %s ms), %s µs of CPU a request,"
              " the machine %s%% busy." % (r["p99_ms"], r["gw_p99_ms"], r["cpu_us_per_req"], r["box_busy_pct"]))
    if paced:
        cpu = sum(r.num0("cpu_us_per_req") for r in paced) / len(paced)
        lo = min(paced, key=lambda r: int(r["box_busy_pct"]))["box_busy_pct"]
        hi = max(paced, key=lambda r: int(r["box_busy_pct"]))["box_busy_pct"]
        t += (" The paced gateway rows: %.1f µs of CPU a request, the machine %s%s%% busy (wrk shares its CPUs)."
              % (cpu, lo, "" if int(hi) == int(lo) else "-" + hi))
    return t


def sale_note(r, outdir):
    return ("flash sale: %s req/s, p99 %s ms (wrk; the gateway's own histogram: %s ms), sold %s of %s,"
            " invariants %s; every 100 ms: %s, plot: %s"
            % (r["rps"], r["p99_ms"], r["gw_p99_ms"], r["sold"], r["stock"], r["invariants"],
               os.path.join(outdir, "sale.csv"), os.path.join(outdir, "sale.png")))


def c10k_notes(r):
    kib = r.num("rss_hwm_kib")
    out = ["c10k: peak established connections %s, parked requests (max over the scrapes that answered) %s,"
           " gateway RSS high-water %s (with %s orders sold, all held in memory), p99 %s ms, p99.9 %s ms,"
           " max %s ms; statuses %s."
           % (r["peak_established"], r["peak_parked"], "n/a" if kib is None else "%.1f MiB" % (kib / 1024),
              r["sold"], r["p99_ms"], r["p999_ms"], r["max_ms"], r["statuses"]),
           "c10k: the gateway's own p99 (its histogram, request read to answer): %s ms; wrk's latency also counts"
           " the time a request waits in the socket before the gateway reads it." % r["gw_p99_ms"]]
    # the HTTP statuses come before wrk's socket errors, separated by a space
    codes = dict(s.split("=", 1) for s in r["statuses"].split(" ")[0].split(",") if "=" in s)
    if "504" in codes:
        late = r.num0("max_ms")
        out.append("c10k: %s answers were 504 (wait_timeout_ms = 3000): p99.9 %.0f ms, worst %.0f ms, %.0f ms past"
                   " the timeout as wrk saw it" % (codes["504"], r.num0("p999_ms"), late, late - 3000))
    else:
        out.append("c10k: no 504: every request the gateway read was decided within wait_timeout_ms = 3000.")
    return out


def command_output(argv):
    """The first line a command prints (stdout and stderr), or None when it cannot run."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    except OSError:
        return None
    return p.stdout.splitlines()[0] if p.stdout else ""


def machine():
    """This machine, for the last line of the report."""
    model, mem = "", "? GiB RAM"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if re.match(r"model name\s*:", ln)), "")
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = next((int(ln.split()[1]) for ln in f if ln.startswith("MemTotal")), None)
            mem = "%.1f GiB RAM" % (kib / 1048576) if kib else mem
    except OSError:
        pass
    wrk = command_output(["wrk", "-v"])
    wrk = " ".join(wrk.split(" ")[:2]) if wrk else "wrk ?"
    mhd = command_output(["pkg-config", "--modversion", "libmicrohttpd"])
    return "machine: %d CPUs, %s, %s, Linux %s, %s, libmicrohttpd %s" % (
        len(os.sched_getaffinity(0)), model, mem, os.uname().release, wrk,
        mhd if mhd and re.match(r"^[0-9.]+$", mhd) else "?")


def report(rows, threads, duration, long, outdir, machine_line):
    """The text of bench.md. outdir: where bench.sh wrote its other files (named in the notes)."""
    kinds = {r.kind for r in rows}
    out = table(rows, os.path.join(outdir, "bench.log"))
    out += ["", "wrk on loopback, %s threads, %s s per scenario (sale and c10k %s s); × ceiling = req/s over the"
            " best of loadtest/ceiling's runs at the same connections (before, after, and at 256 once more just"
            " before the paced rows; 10,000 against 1,000); event-park rows repeat with a fresh gateway each run."
            % (threads, duration, long)]
    if kinds & {"paced", "sweep"}:
        out += ["", latency_curve(rows)]
    if kinds & {"full", "paced"}:
        out += ["", footnote_closed_loop(rows)]
    if kinds & {"reference", "handoff"}:
        out += ["", footnote_reference(rows)]
    sale = [r for r in rows if r.kind == "sale"]
    if sale:
        out += ["", sale_note(sale[-1], outdir)]
    c10k = [r for r in rows if r.kind == "c10kbuy"]
    if c10k:
        out += [""] + c10k_notes(c10k[-1])
    out += ["", machine_line]
    return "\n".join(out) + "\n"


class Usage(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"bench_report: {message}", file=sys.stderr)
        sys.exit(64)


def main(argv):
    ap = Usage(prog="bench_report.py", description="bench.md from the rows of loadtest/bench.sh")
    ap.add_argument("rows", metavar="ROWS", help="TSV or CSV file, its first line naming the columns")
    ap.add_argument("--threads", help="wrk threads")
    ap.add_argument("--duration", help="seconds per scenario")
    ap.add_argument("--long", help="seconds of the sale and c10k scenarios")
    ap.add_argument("--out", help="where to write the report (default: bench.md beside ROWS)")
    ap.add_argument("--best-ceiling", metavar="CONNS", help="print the best ceiling req/s at CONNS, nothing else")
    a = ap.parse_args(argv)
    if a.best_ceiling is None and None in (a.threads, a.duration, a.long):
        ap.error("--threads, --duration and --long are needed for the report")
    try:
        rows = read_rows(a.rows)
    except OSError as e:
        print(f"bench_report: {a.rows}: {e.strerror}", file=sys.stderr)
        return 66
    except RowError as e:
        print(f"bench_report: {e}", file=sys.stderr)
        return 65
    if a.best_ceiling is not None:
        top = best_ceiling_row(rows, a.best_ceiling)
        if top:
            print(top["rps"])
        return 0
    out = a.out or os.path.join(os.path.dirname(a.rows), "bench.md")
    text = report(rows, a.threads, a.duration, a.long, os.path.dirname(out), machine())
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    sys.stdout.buffer.write(text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
