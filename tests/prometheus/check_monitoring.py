#!/usr/bin/env python3
"""The monitoring files against the gateway they watch.

- docs/prometheus/alerts.yml passes `promtool check rules`, and its unit
  tests (alerts_test.yml beside this file) pass `promtool test rules`;
- every query of docs/grafana/seckill.json is valid PromQL (promtool checks
  them as recording rules, Grafana's variables filled in);
- every seckill_* metric those files name is served by a real gateway's
  GET /metrics, so a renamed metric cannot leave a panel or an alert blind.

    check_monitoring.py --gateway BIN
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from api_contract import Gateway  # noqa: E402  (a gateway process on a free port)

ALERTS = os.path.join(ROOT, "docs", "prometheus", "alerts.yml")
ALERTS_TEST = os.path.join(HERE, "alerts_test.yml")
GRAFANA = os.path.join(ROOT, "docs", "grafana", "seckill.json")


def promtool(*args):
    r = subprocess.run(["promtool"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    print("promtool %s: %s" % (" ".join(args[:2]), "ok" if r.returncode == 0 else "FAILED"))
    if r.returncode:
        print(r.stdout)
    return r.returncode == 0


def grafana_queries(dash):
    """(panel title, expr) of every panel, Grafana's variables filled in."""
    out = []
    ids = set()
    for p in dash["panels"]:
        if p["id"] in ids:
            raise SystemExit("grafana: panel id %d twice" % p["id"])
        ids.add(p["id"])
        for t in p.get("targets", []):
            expr = (t["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*"))
            out.append((p["title"], expr))
    return out


def served_families(gateway_bin, workdir):
    ini = ("[gateway]\nwait_timeout_ms = 5000\n[queue]\ndata_dir = %s\n[item.demo]\nstock = 5\n"
           % os.path.join(workdir, "data"))
    gw = Gateway(gateway_bin, ini, workdir, "monitoring")
    ok = False
    try:
        base = "http://127.0.0.1:%d" % gw.port
        req = urllib.request.Request(base + "/seckill", method="POST",
                                     data=b'{"user_id":"u1","item_id":"demo"}',
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
        text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
        ok = True
    finally:
        gw.stop(check=ok)
    families = {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            families[m.group(1)] = m.group(2)
    return families


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateway", required=True)
    args = ap.parse_args()
    ok = promtool("check", "rules", ALERTS)
    ok &= promtool("test", "rules", ALERTS_TEST)

    with open(GRAFANA) as f:
        dash = json.load(f)
    queries = grafana_queries(dash)
    with open(ALERTS) as f:
        alerts = yaml.safe_load(f)
    exprs = [("alert " + r["alert"], r["expr"]) for g in alerts["groups"] for r in g["rules"]]
    exprs += [("panel " + t, e) for t, e in queries]

    workdir = tempfile.mkdtemp(prefix="seckill-monitoring-")
    try:
        rules = os.path.join(workdir, "grafana_rules.yml")
        with open(rules, "w") as f:
            yaml.safe_dump({"groups": [{"name": "grafana", "rules": [
                {"record": "grafana:query_%d" % i, "expr": e}
                for i, (_, e) in enumerate(queries)]}]}, f)
        ok &= promtool("check", "rules", rules)
        families = served_families(args.gateway, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    missing = []
    for where, expr in exprs:
        for name in set(re.findall(r"\bseckill_[a-z0-9_]+", expr)):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in families and families.get(base) not in ("histogram", "summary"):
                missing.append("%s: %s" % (where, name))
    print("%d queries (%d panels, %d alerts) over %d metric families served"
          % (len(exprs), len(dash["panels"]), len(exprs) - len(queries), len(families)))
    if missing:
        print("not served by GET /metrics:\n  " + "\n  ".join(sorted(missing)))
        ok = False
    print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
