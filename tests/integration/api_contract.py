#!/usr/bin/env python3
"""The HTTP API against its contract, docs/openapi.yaml.

Real gateways answer real requests for every endpoint and every kind of
answer; each answer's status, content type, required headers and body are
validated against the operation the spec gives for its path and method
(JSON Schema 2020-12 with jsonschema). At the end every documented
(path, method, status) must have been seen at least once, so the spec and
the gateway cannot drift apart in either direction.

Two gateways:
  1. embedded workers, memory inventory, event park on epoll loops,
     [http] cors_origins: the purchase answers, items, orders and payment,
     health, /metrics, /stats, /dashboard, framing refusals, CORS
     preflights and headers for listed and other origins;
  2. inventory = redis with one seckill-worker over rpc, thread park,
     cors_origins = *: 503 before any worker, then a 504 while the worker is
     stopped (SIGSTOP) and GET /seckill/result answering 202 pending while
     the request is still queued, 503 while Redis is stopped, and the
     request's late outcome once the worker runs again.

    api_contract.py --gateway BIN --worker BIN [--spec docs/openapi.yaml]
    api_contract.py --self-test    (the checker refuses made-up wrong answers)
Python 3 with jsonschema and yaml (Debian python3-jsonschema, python3-yaml).
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import jsonschema
import yaml

from nemesis import free_port, redis_ping  # the nemesis test's helpers, beside this file

HERE = os.path.dirname(os.path.abspath(__file__))
ORIGIN = "https://shop.example"
OTHER_ORIGIN = "https://evil.example"
DEADLINE_S = 120


class ContractError(AssertionError):
    pass


class Contract:
    """docs/openapi.yaml: which answers an operation may give, and checks."""

    def __init__(self, path):
        with open(path) as f:
            self.spec = yaml.safe_load(f)
        self.paths = []
        for template, item in self.spec["paths"].items():
            rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            self.paths.append((template, re.compile(rx), item))
        # literal paths before templates, so /seckill is not /seckill/result/{id}
        self.paths.sort(key=lambda p: "{" in p[0])
        self.seen = set()
        self.checked = 0

    def ref(self, node):
        """node with its $refs resolved (a $ref beside other keys: both apply)."""
        if isinstance(node, list):
            return [self.ref(x) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = self.spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            resolved = self.ref(target)
            rest = {k: self.ref(v) for k, v in node.items() if k != "$ref"}
            return {"allOf": [resolved, rest]} if rest else resolved
        return {k: self.ref(v) for k, v in node.items()}

    def operation(self, method, path):
        path = path.split("?", 1)[0]
        for template, rx, item in self.paths:
            if rx.match(path):
                op = item.get("get" if method == "HEAD" else method.lower())
                if op is None:
                    raise ContractError("%s %s: no such operation in the spec" % (method, template))
                return template, self.ref(op)
        raise ContractError("%s %s: no path of the spec matches" % (method, path))

    def check(self, method, path, r):
        template, op = self.operation(method, path)
        status = str(r.status)
        what = "%s %s -> %s %s" % (method, path[:80], status, r.body[:200])
        resp = op["responses"].get(status)
        if resp is None:
            raise ContractError("%s: status %s not in the spec (%s)"
                                % (what, status, ", ".join(op["responses"])))
        for name, h in resp.get("headers", {}).items():
            value = r.header(name)
            if h.get("required") and value is None:
                raise ContractError("%s: required header %s missing" % (what, name))
            if value is not None:
                validate(h["schema"], value, "%s: header %s" % (what, name))
        content = resp.get("content")
        if content:
            ctype = (r.header("Content-Type") or "").split(";")[0].strip()
            if ctype not in content:
                raise ContractError("%s: Content-Type %r, spec has %s" % (what, ctype, list(content)))
            schema = content[ctype]["schema"]
            if method == "HEAD":
                if r.body:
                    raise ContractError("%s: a body in an answer to HEAD" % what)
            elif ctype == "application/json":
                try:
                    body = json.loads(r.body)
                except ValueError as e:
                    raise ContractError("%s: not JSON: %s" % (what, e))
                validate(schema, body, what)
            else:
                validate(schema, r.body, what)
        elif r.body:
            raise ContractError("%s: a body where the spec has none" % what)
        self.seen.add((template, method.lower() if method != "HEAD" else "get", status))
        self.checked += 1

    def unseen(self):
        want = set()
        for template, item in self.spec["paths"].items():
            for method, op in item.items():
                if method in ("get", "post", "put", "delete", "patch", "options", "head"):
                    for status in op["responses"]:
                        want.add((template, method, status))
        return sorted(want - self.seen)


def validate(schema, value, what):
    v = jsonschema.Draft202012Validator(schema)
    errors = sorted(v.iter_errors(value), key=lambda e: list(e.path))
    if errors:
        raise ContractError("%s: %s" % (what, "; ".join(e.message for e in errors[:3])))


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


class Gateway:
    """A seckill-gateway process on a free port, ended with the test."""

    def __init__(self, binary, ini_text, workdir, name):
        self.ini = os.path.join(workdir, name + ".ini")
        with open(self.ini, "w") as f:
            f.write(ini_text)
        self.log = open(os.path.join(workdir, name + ".log"), "wb")
        self.p = subprocess.Popen([binary, "-c", self.ini, "--listen", "127.0.0.1:0"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=self.log)
        self.port = None
        line = b""
        t = threading.Timer(60, self.p.kill)  # a gateway that never starts
        t.start()
        for line in self.p.stdout:
            m = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        t.cancel()
        if self.port is None:
            raise ContractError("%s did not start: %r (log %s)" % (name, line, self.log.name))
        threading.Thread(target=self.p.stdout.read, daemon=True).start()

    def stop(self, check=True):
        """SIGTERM; with check, a ContractError unless it exits 0 (a
        sanitizer's report makes it exit otherwise)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGCONT)
            self.p.terminate()
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        if check and self.p.returncode != 0:
            raise ContractError("%s exited with %s (log %s)" % (self.ini, self.p.returncode,
                                                                  self.log.name))


class Client:
    def __init__(self, contract, port, origin=None, allowed=None):
        """allowed: the Access-Control-Allow-Origin every answer must carry
        (None: no CORS header at all)."""
        self.contract, self.port, self.origin, self.allowed = contract, port, origin, allowed

    def raw(self, method, path, body=None, headers=(), check=True):
        """One request on a fresh connection; headers as (name, value) pairs,
        sent as given (repeats included)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.putrequest(method, path, skip_accept_encoding=True)
            sent = {k.lower() for k, _ in headers}
            for k, v in headers:
                c.putheader(k, v)
            if self.origin and "origin" not in sent:
                c.putheader("Origin", self.origin)
            if body is not None and "content-length" not in sent and "transfer-encoding" not in sent:
                c.putheader("Content-Length", str(len(body)))
            c.endheaders(body.encode() if isinstance(body, str) else body)
            r = c.getresponse()
            resp = Resp(r.status, r.getheaders(), r.read().decode(errors="replace"))
        finally:
            c.close()
        if check:
            self.contract.check(method, path, resp)
            self.check_cors(method, path, resp)
        return resp

    def check_cors(self, method, path, r):
        acao = r.header("Access-Control-Allow-Origin")
        if self.allowed:
            if acao != self.allowed or r.header("Vary") != "Origin":
                raise ContractError("%s %s from %s: Access-Control-Allow-Origin %r, Vary %r"
                                    % (method, path, self.origin, acao, r.header("Vary")))
        elif any(k.lower().startswith("access-control-") for k, _ in r.headers):
            raise ContractError("%s %s from %r: CORS headers %s" % (method, path, self.origin,
                                                                    r.headers))

    def get(self, path, **kw):
        return self.raw("GET", path, **kw)

    def buy(self, user, item, headers=(), **kw):
        return self.raw("POST", "/seckill", json.dumps({"user_id": user, "item_id": item}),
                        [("Content-Type", "application/json")] + list(headers), **kw)


def expect(r, status, result=None, key="result"):
    if r.status != status or (result is not None and r.json().get(key) != result):
        raise ContractError("want %s %s, got %s %s" % (status, result or "", r.status, r.body))
    return r


def all_stopped(pid):
    """True when every thread of pid is stopped (SIGSTOP has taken effect:
    kill() returns before the target's threads stop, and on a loaded VM a
    thread may run on for a moment)."""
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
        for t in tasks:
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                    return False
        return True
    except OSError:
        return False


def wait_until(what, fn, timeout=30):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise ContractError("timed out waiting for " + what)
        time.sleep(0.05)


# ---- gateway 1: embedded workers ----

def embedded_sale(contract, gateway_bin, workdir):
    now = int(time.time())
    # event park on epoll here, thread park for the Redis gateway: CORS in both
    ini = ("[gateway]\nwait_timeout_ms = 5000\nbody_limit = 1024\nhttp_io = epoll\n"
           "[http]\ncors_origins = %s, http://127.0.0.1:3000\n"
           "[token_bucket]\nrate = 1\nburst = 40\n"
           "[queue]\ndata_dir = %s\n"
           "[worker]\npay_timeout_ms = 1000\n"
           "[risk]\nblocklist = bot-1\n"
           "[item.phone]\nstock = 100\n"
           "[item.last]\nstock = 1\n"
           "[item.later]\nstock = 5\nstarts_at = %d\n"
           "[item.over]\nstock = 5\nstarts_at = 1\nends_at = 2\n"
           % (ORIGIN, os.path.join(workdir, "data"), now + 86400))
    gw = Gateway(gateway_bin, ini, workdir, "embedded")
    ok = False
    try:
        c = Client(contract, gw.port)
        web = Client(contract, gw.port, ORIGIN, ORIGIN)
        other = Client(contract, gw.port, OTHER_ORIGIN)
        wait_until("a live worker", lambda: c.get("/readyz", check=False).status == 200)

        # the purchase answers
        ok = expect(c.buy("u-1", "phone"), 200, "success").json()
        again = expect(c.buy("u-1", "phone"), 409, "already_purchased")
        expect(web.buy("u-2", "last"), 200, "success")
        expect(c.buy("u-3", "last"), 409, "sold_out")
        expect(c.buy("u-3", "later"), 409, "not_started")
        expect(c.buy("u-3", "over"), 409, "ended")
        blocked = expect(c.buy("bot-1", "phone"), 403, "blocked")
        expect(c.buy("u-3", "nothing-here"), 404, "unknown_item")
        expect(c.raw("POST", "/seckill", '{"user_id":"u-3",', [("Content-Type", "application/json")]),
               400, "bad_request")
        expect(c.raw("POST", "/seckill", '{"user_id":"u 3","item_id":"phone"}',
                     [("Content-Type", "application/json")]), 400, "bad_request")
        expect(c.raw("POST", "/seckill", "x" * 2000, [("Content-Type", "application/json")]),
               413, "payload_too_large")
        expect(c.raw("POST", "/seckill", "user=u-3", [("Content-Type", "text/plain")]),
               415, "unsupported_media_type")
        expect(c.get("/seckill"), 405, "method_not_allowed")
        # framing refusals (any path; here where the spec lists them)
        expect(c.raw("POST", "/seckill", "{}", [("Content-Type", "application/json"),
                                               ("Content-Length", "2"), ("Content-Length", "3")]),
               400, "bad_request")
        expect(c.raw("POST", "/seckill?" + "q" * 2100, "{}",
                     [("Content-Type", "application/json")]), 414, "uri_too_long")
        expect(c.raw("POST", "/seckill", "{}", [("Content-Type", "application/json")] +
                     [("X-Filler-%d" % i, "f" * 200) for i in range(50)]), 431, "headers_too_large")
        expect(c.raw("POST", "/seckill", b"2\r\n{}\r\n0\r\n\r\n",
                     [("Content-Type", "application/json"),
                      ("Transfer-Encoding", "gzip, chunked")]), 501, "not_implemented")

        # results: decided ones as POST answered them, unknown, not a UUID
        expect(c.get("/seckill/result/" + ok["request_id"]), 200, "success")
        expect(c.get("/seckill/result/" + again.header("X-Request-Id")), 409, "already_purchased")
        expect(c.get("/seckill/result/" + blocked.header("X-Request-Id")), 403, "blocked")
        expect(c.get("/seckill/result/" + str(uuid.uuid4())), 404, "not_found")
        expect(c.get("/seckill/result/not-a-uuid"), 400, "bad_request")
        expect(c.raw("POST", "/seckill/result/" + ok["request_id"], ""), 405)

        # items
        item = expect(c.get("/items/phone"), 200).json()
        if item["stock_left"] != 99 or item["status"] != "on_sale":
            raise ContractError("/items/phone: %s" % item)
        # Idempotency-Key: a retry answers the first outcome; another body 422
        key = [("Idempotency-Key", "contract-key-1")]
        keyed = expect(c.buy("u-4", "phone", headers=key), 200, "success").json()
        retry = expect(c.buy("u-4", "phone", headers=key), 200, "success").json()
        if retry["order_id"] != keyed["order_id"]:
            raise ContractError("a retry with its Idempotency-Key bought again: %s" % retry)
        expect(c.buy("u-5", "phone", headers=key), 422, "idempotency_key_reused")
        expect(c.get("/items/later"), 200, "upcoming", key="status")
        expect(c.get("/items/last"), 200, "sold_out", key="status")
        expect(c.get("/items/nothing-here"), 404, "unknown_item")
        expect(c.raw("POST", "/items/phone", ""), 405)

        # orders: pay within pay_timeout_ms (1 s; a loaded machine may miss
        # it, so up to 5 fresh orders), then one paid too late
        paid = None
        for i in range(5):
            o = expect(c.buy("payer-%d" % i, "phone"), 200).json()
            r = c.raw("POST", "/orders/%s/pay" % o["order_id"], "")
            if r.status == 200:
                paid = r.json()
                break
        if not paid or paid["state"] != "paid":
            raise ContractError("no order could be paid within 1 s: %s" % (paid,))
        expect(c.raw("POST", "/orders/%s/pay" % paid["order_id"], ""), 200, "paid", key="state")
        expect(c.get("/orders/" + paid["order_id"]), 200, "paid", key="state")
        late = expect(c.buy("late-payer", "phone"), 200).json()
        wait_until("the pay deadline", lambda: time.time() * 1000 >
                   expect(c.get("/orders/" + late["order_id"]), 200).json()["pay_deadline_ms"] + 100)
        r = expect(c.raw("POST", "/orders/%s/pay" % late["order_id"], ""), 409)
        if r.json()["result"] not in ("pay_timeout", "cancelled"):
            raise ContractError("late pay: " + r.body)
        expect(c.get("/orders/" + str(uuid.uuid4())), 404, "not_found")
        expect(c.raw("POST", "/orders/%s/pay" % uuid.uuid4(), ""), 404, "not_found")
        expect(c.get("/orders/12345"), 400, "bad_request")
        expect(c.raw("POST", "/orders/12345/pay", ""), 400, "bad_request")
        expect(c.raw("POST", "/orders/" + paid["order_id"], ""), 405)
        expect(c.get("/orders/%s/pay" % paid["order_id"]), 405)

        # health, metrics, stats, dashboard: GET, HEAD, and another method
        expect(c.get("/livez"), 200, "ok", key="status")
        expect(c.get("/readyz"), 200, "ready", key="status")
        expect(c.get("/metrics"), 200)
        stats = expect(c.get("/stats"), 200).json()
        phone = [i for i in stats["items"] if i["item_id"] == "phone"][0]
        # unpaid orders are cancelled after 1 s and their stock comes back
        if (stats["answers"]["success"] < 4 or stats["workers_live"] < 1 or
                phone["stock_left"] != phone["stock_total"] - phone["sold"]):
            raise ContractError("/stats: %s" % stats)
        page = expect(c.get("/dashboard"), 200)
        if "/stats" not in page.body and '"stats"' not in page.body:
            raise ContractError("/dashboard does not read /stats")
        for path in ("/livez", "/readyz", "/metrics", "/stats", "/dashboard"):
            expect(c.raw("HEAD", path), 200)
            expect(c.raw("POST", path, ""), 405)
        expect(c.get("/nothing-here", check=False), 404, "not_found")

        # CORS: a listed origin's preflight on every path, and its answers;
        # an unlisted origin gets no CORS headers, its OPTIONS what any other
        # method gets
        for path in ("/seckill", "/seckill/result/" + ok["request_id"], "/items/phone",
                     "/orders/" + paid["order_id"], "/orders/%s/pay" % paid["order_id"],
                     "/livez", "/readyz", "/metrics", "/stats", "/dashboard"):
            r = expect(web.raw("OPTIONS", path, headers=[
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type")]), 204)
            if int(r.header("Access-Control-Max-Age")) <= 0:
                raise ContractError("Access-Control-Max-Age: " + r.header("Access-Control-Max-Age"))
        expect(web.get("/items/phone"), 200)
        expect(web.get("/stats"), 200)
        expect(web.get("/metrics"), 200)
        expect(web.buy(paid["user_id"], "phone"), 409, "already_purchased")
        expect(web.get("/orders/12345"), 400)
        r = other.raw("OPTIONS", "/seckill", headers=[("Access-Control-Request-Method", "POST")],
                      check=False)
        other.check_cors("OPTIONS", "/seckill", r)
        expect(r, 405)
        expect(other.buy(paid["user_id"], "phone"), 409, "already_purchased")
        expect(other.get("/items/phone"), 200)

        # last: empty the token bucket (1 token a second, burst 40)
        for i in range(200):
            r = c.buy("rush-%d" % i, "phone")
            if r.status == 429:
                break
            expect(r, 200)
        expect(r, 429, "rate_limited")
        print("embedded gateway: %d answers checked" % contract.checked)
        ok = True
    finally:
        gw.stop(check=ok)


# ---- gateway 2: Redis, one worker process ----

def redis_sale(contract, gateway_bin, worker_bin, workdir):
    rport = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", workdir],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    gw = worker = None
    ok = False
    try:
        wait_until("redis-server", lambda: redis_ping(rport))
        ini = ("[gateway]\nwait_timeout_ms = 500\npark = thread\n[token_bucket]\nrate = 0\n"
               "[queue]\nlease_timeout_ms = 60000\ndata_dir = %s\n"
               "[worker]\nembedded = false\ninventory = redis\nthreads = 1\n"
               "[http]\ncors_origins = *\n"
               "[rpc]\nlisten = tcp:127.0.0.1:0\nsecret = contract-secret\n"
               "[redis]\nport = %d\ntimeout_ms = 200\n"
               "[item.phone]\nstock = 10\n" % (os.path.join(workdir, "data-redis"), rport))
        gw = Gateway(gateway_bin, ini, workdir, "redis-gateway")
        c = Client(contract, gw.port)
        # cors_origins = *: any origin, answered "*"
        anyone = Client(contract, gw.port, "http://any.example:8000", "*")
        expect(anyone.raw("OPTIONS", "/seckill", headers=[("Access-Control-Request-Method", "POST")]),
               204)
        expect(anyone.get("/items/phone"), 200)

        # no worker yet: not ready, and a purchase is refused at the door
        expect(c.get("/readyz"), 503, "no_worker", key="status")
        expect(c.buy("r-0", "phone"), 503, "overloaded")

        wlog = open(os.path.join(workdir, "worker.log"), "wb")
        worker = subprocess.Popen([worker_bin, "-c", gw.ini, "--id", "w1"],
                                  stdin=subprocess.DEVNULL, stdout=wlog, stderr=wlog)
        wait_until("the worker", lambda: c.get("/readyz", check=False).status == 200)
        ok = expect(c.buy("r-1", "phone"), 200, "success").json()

        # the worker stops (still live for the lease): 504, then 202 pending
        # while the request waits in the queue
        worker.send_signal(signal.SIGSTOP)
        wait_until("the worker stopped", lambda: all_stopped(worker.pid), timeout=10)
        to = expect(c.buy("r-2", "phone"), 504, "timeout").json()
        expect(c.get("/seckill/result/" + to["request_id"]), 202, "pending")
        time.sleep(0.3)
        expect(c.get("/seckill/result/" + to["request_id"]), 202, "pending")

        # Redis stops answering: not ready, orders unavailable (nothing changed)
        redis.send_signal(signal.SIGSTOP)
        wait_until("redis stopped", lambda: all_stopped(redis.pid), timeout=10)
        try:
            expect(c.get("/readyz"), 503, "redis_unreachable", key="status")
            expect(c.get("/orders/" + ok["order_id"]), 503, "overloaded")
            expect(c.raw("POST", "/orders/%s/pay" % ok["order_id"], ""), 503, "overloaded")
        finally:
            redis.send_signal(signal.SIGCONT)
        expect(c.get("/orders/" + ok["order_id"]), 200, "reserved", key="state")

        # the worker runs again: the queued request is past its deadline, so
        # it is decided expired (nothing bought) and the result says so
        worker.send_signal(signal.SIGCONT)
        r = wait_until("the late outcome", lambda: (
            lambda r: r if r.status != 202 else None)(c.get("/seckill/result/" + to["request_id"])))
        expect(r, 504, "timeout")
        stock = expect(c.get("/items/phone"), 200).json()["stock_left"]
        if stock != 9:
            raise ContractError("stock left %d after one sale and one expired request" % stock)
        print("redis gateway: 504, then 202 pending x2, then 504 expired; %d answers checked in all"
              % contract.checked)
        ok = True
    finally:
        try:
            if worker:
                worker.send_signal(signal.SIGCONT)
                worker.terminate()
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
                if ok and worker.returncode != 0:
                    raise ContractError("seckill-worker exited with %s" % worker.returncode)
            if gw:
                gw.stop(check=ok)
        finally:
            redis.send_signal(signal.SIGCONT)
            redis.terminate()
            redis.wait()


def self_test(spec):
    """The checker on made-up answers, each wrong in one way: it can fail."""
    c = Contract(spec)
    js = [("Content-Type", "application/json")]
    rid = str(uuid.uuid4())
    good = [("POST", "/seckill", Resp(409, js, '{"result":"sold_out"}')),
            ("GET", "/seckill/result/" + rid,
             Resp(202, js + [("X-Request-Id", rid)], '{"result":"pending","request_id":"%s"}' % rid))]
    bad = [("POST", "/seckill", Resp(409, js, '{"result":"sold_out","extra":1}')),
           ("POST", "/seckill", Resp(418, js, '{"result":"teapot"}')),
           ("POST", "/seckill", Resp(200, js, '{"result":"success","request_id":"%s",'
                                              '"order_id":"%s","item_id":"a"}' % (rid, rid))),
           ("POST", "/seckill", Resp(429, js, '{"result":"rate_limited"}')),
           ("GET", "/seckill/result/" + rid, Resp(202, js + [("X-Request-Id", rid)],
                                                  '{"result":"pending","request_id":"nope"}')),
           ("GET", "/items/a", Resp(200, [("Content-Type", "text/plain")], "a")),
           ("OPTIONS", "/stats", Resp(204, [("Vary", "Origin")], "")),
           ("DELETE", "/stats", Resp(405, js, '{"result":"method_not_allowed"}')),
           ("GET", "/nowhere", Resp(404, js, '{"result":"not_found"}'))]
    for method, path, r in good:
        c.check(method, path, r)
    for method, path, r in bad:
        try:
            c.check(method, path, r)
        except ContractError:
            continue
        print("FAIL: the checker took %s %s -> %s %s" % (method, path, r.status, r.body))
        print("0 passed, 1 failed")
        return 1
    cl = Client(c, 0, ORIGIN, ORIGIN)
    try:
        cl.check_cors("GET", "/stats", Resp(200, js, "{}"))
        print("FAIL: the checker took an answer to a listed origin without CORS headers")
        return 1
    except ContractError:
        pass
    print("%d good answers taken, %d wrong ones refused" % (len(good), len(bad) + 1))
    print("1 passed, 0 failed")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateway")
    ap.add_argument("--worker")
    ap.add_argument("--spec", default=os.path.join(HERE, "..", "..", "docs", "openapi.yaml"))
    ap.add_argument("--self-test", action="store_true", help="check the checker, no gateway")
    args = ap.parse_args()
    if args.self_test:
        return self_test(args.spec)
    if not args.gateway or not args.worker:
        ap.error("--gateway and --worker are required")
    signal.signal(signal.SIGALRM, lambda *_: sys.exit("api_contract: over %d s" % DEADLINE_S))
    signal.alarm(DEADLINE_S)
    contract = Contract(args.spec)
    workdir = tempfile.mkdtemp(prefix="seckill-contract-")
    try:
        embedded_sale(contract, args.gateway, workdir)
        redis_sale(contract, args.gateway, args.worker, workdir)
        missing = contract.unseen()
        if missing:
            raise ContractError("documented but never answered:\n  " +
                                "\n  ".join("%s %s %s" % (m.upper(), p, s) for p, m, s in missing))
    except ContractError as e:
        print("FAIL: %s (logs in %s)" % (e, workdir))
        print("0 passed, 1 failed")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    print("every documented answer seen and valid: %d (path, method, status)" % len(contract.seen))
    print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
