#!/usr/bin/env python3
"""The scrapes of loadtest/sample.sh: one process for the whole run, so that a
sample every 100 ms costs the measured machine little (a shell scrape forks a
handful of processes each time). Python 3, standard library only.

usage: sample_loop.py BASE_URL PID PORT RAWFILE [INTERVAL_MS]
  appends one line to RAWFILE every INTERVAL_MS (default: once, then exit)
  while process PID lives; the line is sample.sh's raw format:
  epoch_ns answers_total buckets parked rss_kib established sold statuses
"""
import os
import sys
import threading
import time
import urllib.request

# seckill_requests_total's results by HTTP status, in the raw line's order:
# 200, 409, 429, 503, 504, other
MAX_INFLIGHT = 16

STATUS = {"success": 0, "sold_out": 1, "already_purchased": 1, "not_started": 1, "ended": 1,
          "rate_limited": 2, "overloaded": 3, "timeout": 4}


def metrics_fields(text):
    """[answers_total, buckets, parked, sold, statuses] from a /metrics text,
    and the gateway's clock when it rendered them (ns; None when absent)."""
    total, parked, sold, ok, at = 0, 0, 0, False, None
    buckets, by = [], [0] * 6
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("seckill_requests_total{"):
            ok = True
            v = int(float(value))
            total += v
            result = name.split('result="', 1)[1].split('"', 1)[0]
            by[STATUS.get(result, 5)] += v
        elif name.startswith("seckill_request_duration_seconds_bucket{"):
            buckets.append(str(int(float(value))))
        elif name == "seckill_time_seconds":
            sec, _, frac = value.partition(".")
            at = int(sec) * 1000000000 + int((frac + "000000000")[:9])
        elif name == "seckill_parked_requests":
            parked = int(float(value))
        elif name.startswith("seckill_orders_reserved_total{"):
            sold += int(float(value))
        elif name.startswith("seckill_orders_cancelled_total{"):
            sold -= int(float(value))
    if not ok:
        return None, None
    return [str(total), ",".join(buckets), str(parked), str(sold), ",".join(map(str, by))], at


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def established(port):
    """Connections to local port `port` in state ESTABLISHED (01)."""
    want, n = "%04X" % port, 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    w = line.split()
                    if w[3] == "01" and w[1].endswith(":" + want):
                        n += 1
        except OSError:
            pass
    return n


def scrape(base, pid, port, timeout):
    fields, at = None, None
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=timeout) as r:
            fields, at = metrics_fields(r.read().decode("utf-8", "replace"))
    except Exception:  # no answer in time: connections and RSS only
        pass
    # the time the gateway read its counters, which a busy gateway may
    # answer hundreds of ms later; else when the answer came
    now = at or time.time_ns()
    rss, est = rss_kib(pid), established(port)
    if fields is None:  # answers, buckets, parked, sold and statuses are "-"
        return "%d - - - %d %d - -" % (now, rss, est)
    total, buckets, parked, sold, statuses = fields
    return "%d %s %s %s %d %d %s %s" % (now, total, buckets or "-", parked, rss, est, sold,
                                        statuses)


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def main(argv):
    if len(argv) not in (5, 6):
        sys.stderr.write(__doc__)
        return 64
    base, pid, port, raw = argv[1], int(argv[2]), int(argv[3]), argv[4]
    step = int(argv[5]) * 1000000 if len(argv) == 6 else 0
    with open(raw, "a") as out:
        if not step:
            out.write(scrape(base, pid, port, 0.9) + "\n")
            return 0
        # A scrape of a gateway with a thousand busy connections may take
        # longer than the beat: each one runs on its own thread (at most
        # MAX_INFLIGHT at once), so the beat holds; lines may land out of
        # order, and sample.sh csv sorts them by time.
        lock = threading.Lock()
        inflight = threading.BoundedSemaphore(MAX_INFLIGHT)

        def one():
            try:
                # a scrape may wait long in a busy gateway: its counters
                # carry the time they were read, and the beat goes on
                line = scrape(base, pid, port, 5)
                with lock:
                    out.write(line + "\n")
                    out.flush()
            finally:
                inflight.release()

        nxt = time.monotonic_ns()
        while alive(pid):
            if inflight.acquire(blocking=False):  # else skip this beat
                threading.Thread(target=one, daemon=True).start()
            nxt += step
            wait = nxt - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            else:
                nxt = time.monotonic_ns()  # fell behind: restart the beat
        for _ in range(MAX_INFLIGHT):  # let the last scrapes write their lines
            inflight.acquire(timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
