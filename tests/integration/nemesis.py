#!/usr/bin/env python3
"""nemesis.py - a flash sale under a random fault schedule drawn from a seed.

The cluster, all real processes on free loopback ports: a redis-server with
AOF (appendonly yes, appendfsync always), 2 seckill-gateway processes
(embedded = false, inventory = redis, [rpc] listen), 3 seckill-worker
purchase workers that find the gateways in the Redis registry, and the order
sink (seckill-worker --role orders). Client threads buy a few items through
both gateways (per_user_limit 1, demand far above stock, some users retry,
most pay their orders and the others' stock is sold again) while the
schedule SIGKILLs and restarts workers, SIGSTOPs and SIGCONTs them (one at a
time, and for most seeds all at once for longer than a request waits),
SIGKILLs Redis and restarts it on its AOF, SIGKILLs and restarts a gateway
(the new process has a fresh gateway id, or for half the seeds the
configured one), and for some seeds SIGKILLs the order sink, SIGSTOPs Redis
(calls time out on the workers' side and may still run) or SIGSTOPs a
gateway. Every answer a client saw is recorded, a connection that ended
without an answer as "no answer".

Then everything is healed, in-flight work settles (every admitted request
is past its deadline, every order paid or cancelled, the sink has caught
up), and a checker holds the recorded answers and the final state (Redis
keys, the sink's file) to the sale's invariants:
  - sold <= stock and sold + left = stock, per item (a reserved or paid
    order is sold; a cancelled one gave its unit back);
  - at most per_user_limit orders per user per item, at most one per request;
  - every 200's order exists in Redis with that request, user and item, and
    is in the sink's file exactly once as a reserved event (the file holds
    no order Redis does not have, and no event twice);
  - a 409 already_purchased names an order the user holds;
  - payments (most buyers pay, some after the short pay timeout): a pay
    answered 200 ends paid, one answered 409 ends cancelled; an order is
    paid only when somebody paid it, cancelled only unpaid and not before
    its deadline, and each transition is in the sink's file once;
  - no order for a request answered 409/429/503/403/400;
  - a 504's request, asked again (GET /seckill/result) on the gateway that
    issued it (a process with that gateway id, the same one or, when ids are
    configured, its restart), is unknown or a decided outcome that Redis
    agrees with, as is each stored decision with the answer it gave;
  - every request sent to a gateway that was not killed meanwhile got an
    answer, and at the end no gateway holds a parked request;
  - every process that was not killed on purpose is still running, and each
    exits 0 on SIGTERM at the end (no sanitizer report).

usage: nemesis.py --gateway BIN --worker BIN [--seed N] [--duration S]
       nemesis.py --self-test   (the checker on made-up states, nothing started)
The seed comes from --seed, else from NEMESIS_SEED, else is drawn; it is
printed first. A seed replays the fault schedule and the clients' choices
(users, items, gateways, pauses); thread timing still differs between runs.
NEMESIS_KEEP=1 keeps the run directory (configs, logs, the sink's file).
Exit status: 0 all checks hold, 1 a violation, 2 the cluster did not start.
"""

import argparse
import collections
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

SECRET = "nemesis-secret-0123456789"
ITEMS = {"nem-a": 120, "nem-b": 100, "nem-c": 80}  # 300 units in all
PER_USER_LIMIT = 1
USERS = 3000
BLOCKED = ["u%d" % i for i in range(0, USERS, 100)]  # 30 users: 403 from the workers
CLIENTS = 16
WAIT_TIMEOUT_MS = 2000
LEASE_MS = 1000
REGISTRY_TTL_MS = 1500
REDIS_TIMEOUT_MS = 500
# short enough that unpaid orders are cancelled and their stock sold again
# during the run; PAY_SHARE of the buyers pay, some of them too late
PAY_TIMEOUT_MS = 5000
PAY_SHARE = 0.85
# paced admission (per gateway), so the stock lasts through most of the
# schedule instead of selling out in the first seconds
TB_RATE, TB_BURST = 10, 10
HTTP_TIMEOUT_S = 10.0  # a parked request is answered within WAIT_TIMEOUT_MS
START_S = 2.0  # faults start this long into the sale


def log(msg):
    print(msg, flush=True)


def now_ms():
    return int(time.time() * 1000)


# ---- Redis over raw RESP ----

class RedisError(Exception):
    pass


class Redis:
    def __init__(self, port, timeout=2.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def close(self):
        self.f.close()
        self.sock.close()

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("redis: connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ConnectionError("redis: unexpected reply %r" % line)


def redis_ping(port):
    try:
        r = Redis(port, timeout=0.3)
        try:
            return r.call("PING") == "PONG"
        finally:
            r.close()
    except (OSError, RedisError, ConnectionError):
        return False


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- processes ----

class Proc:
    """One program of the cluster across its restarts. Spawned only from the
    main thread: setpriv --pdeathsig ties each child to the thread that
    forked it, so nothing outlives the test."""

    def __init__(self, name, argv, logpath, banner):
        self.name, self.argv, self.logpath, self.banner = name, argv, logpath, banner
        self.p = None
        self.want_up = False  # False while killed on purpose
        self.paused = False
        self.ready = threading.Event()
        self.info = {}
        self.incarnation = 0
        self.spawns = 0
        self.respawn_at = None
        self.crashes = []  # (incarnation, status): exits nobody asked for
        self.kills = []  # wall-clock times of the SIGKILLs sent on purpose

    def spawn(self):
        self.ready.clear()
        self.info = {}
        with open(self.logpath, "ab") as logf:
            logf.write(b"---- %s start %d ----\n" % (self.name.encode(), self.spawns + 1))
            logf.flush()
            # a session of its own: a SIGSTOPped child in the test's process
            # group would get SIGHUP from the kernel when that group is
            # orphaned (the shell that started the test exits), and die
            self.p = subprocess.Popen(["setpriv", "--pdeathsig", "KILL"] + self.argv,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=logf, start_new_session=True)
        self.spawns += 1
        self.incarnation += 1
        self.want_up = True
        self.paused = False
        self.respawn_at = None
        if self.banner:
            threading.Thread(target=self._read_stdout, args=(self.p, self.incarnation),
                             daemon=True).start()

    def _read_stdout(self, p, inc):
        for raw in p.stdout:
            line = raw.decode(errors="replace")
            if self.banner in line and inc == self.incarnation and not self.ready.is_set():
                self.info = parse_banner(line)
                self.ready.set()
        p.stdout.close()

    def signal(self, sig):
        if self.p and self.p.poll() is None:
            self.p.send_signal(sig)

    def kill(self):
        self.want_up = False
        self.paused = False
        self.kills.append(time.time())
        if self.p:
            self.signal(signal.SIGKILL)
            self.p.wait()
        self.ready.clear()

    def running(self):
        return self.p is not None and self.p.poll() is None

    def stop(self):
        """SIGTERM and wait: the exit status (negative: a signal), None when
        it had to be SIGKILLed after 30 s."""
        if not self.p:
            return 0
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None


def exit_text(rc):
    if rc is None:
        return "still running 30 s after SIGTERM, SIGKILLed"
    if rc < 0:
        try:
            return "killed by %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "status %s" % rc


def parse_banner(line):
    info = {}
    for word in line.split():
        if word.startswith("http://127.0.0.1:"):
            info["port"] = int(word.rsplit(":", 1)[1])
        elif "=" in word:
            k, v = word.split("=", 1)
            info[k] = v
    return info


# ---- the cluster ----

class Cluster:
    def __init__(self, args, run_dir, gateway_ids):
        self.dir = run_dir
        self.redis_port = free_port()
        self.redis = Proc("redis", ["redis-server", "--port", str(self.redis_port),
                                    "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                                    "--appendfsync", "always", "--auto-aof-rewrite-percentage",
                                    "0", "--dir", run_dir, "--daemonize", "no"],
                          os.path.join(run_dir, "redis.log"), None)
        self.gws = []
        for i in range(2):
            ini = self.write_ini("gw%d.ini" % i, os.path.join(run_dir, "gw%d-data" % i),
                                 gateway_ids[i] if gateway_ids else None)
            self.gws.append(Proc("gw%d" % i, [args.gateway, "-c", ini, "--listen",
                                              "127.0.0.1:0"],
                                 os.path.join(run_dir, "gw%d.log" % i), "listening on"))
        wini = self.write_ini("worker.ini", None)
        self.workers = [Proc("w%d" % i, [args.worker, "-c", wini, "--id", "w%d" % i],
                             os.path.join(run_dir, "w%d.log" % i), "role=seckill")
                        for i in range(3)]
        self.sink_file = os.path.join(run_dir, "orders.jsonl")
        self.sink = Proc("sink", [args.worker, "-c", wini, "--role", "orders", "--id", "sink",
                                  "--out", self.sink_file],
                         os.path.join(run_dir, "sink.log"), "role=orders")
        self.procs = [self.redis] + self.gws + self.workers + [self.sink]

    def write_ini(self, name, data_dir, gateway_id=None):
        items = "".join("[item.%s]\nstock = %d\nper_user_limit = %d\n" % (i, s, PER_USER_LIMIT)
                        for i, s in ITEMS.items())
        text = ("[gateway]\n%swait_timeout_ms = %d\npark = event\ndrain_delay_ms = 0\n"
                "[token_bucket]\nrate = %d\nburst = %d\n"
                "[queue]\nack_timeout_ms = 1000\nlease_timeout_ms = %d\n%s"
                "[worker]\nembedded = false\ninventory = redis\nthreads = 2\nbatch = 32\n"
                "pay_timeout_ms = %d\n"
                "[rpc]\nlisten = tcp:127.0.0.1:0\nsecret = %s\nregistry_ttl_ms = %d\n"
                "[redis]\nport = %d\ntimeout_ms = %d\n"
                "[risk]\nblocklist = %s\n%s"
                % ("gateway_id = %s\n" % gateway_id if gateway_id else "",
                   WAIT_TIMEOUT_MS, TB_RATE, TB_BURST, LEASE_MS,
                   "data_dir = %s\n" % data_dir if data_dir else "", PAY_TIMEOUT_MS, SECRET,
                   REGISTRY_TTL_MS,
                   self.redis_port, REDIS_TIMEOUT_MS, " ".join(BLOCKED), items))
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def is_ready(self, p):
        if not p.running():
            return False
        if p is self.redis and not p.ready.is_set() and redis_ping(self.redis_port):
            p.ready.set()  # from now on an exit nobody asked for is a crash
        return p.ready.is_set()

    def supervise(self, t):
        """One round of keeping the wanted processes up: a start that failed
        (e.g. Redis was down and the program gave up) is tried again; a
        process that was up and exited by itself is a crash, recorded."""
        if self.redis.want_up and not self.redis.ready.is_set():
            self.is_ready(self.redis)
        for p in self.procs:
            if not p.want_up or p.p is None or p.p.poll() is None:
                continue
            if p.respawn_at is None:
                rc = p.p.returncode
                if p.ready.is_set():
                    p.crashes.append((p.incarnation, exit_text(rc)))
                    log("%7.2f  %s exited by itself: %s" % (t, p.name, exit_text(rc)))
                p.ready.clear()
                p.respawn_at = time.monotonic() + 0.3
            elif time.monotonic() >= p.respawn_at:
                if p.spawns > 40:
                    continue
                p.spawn()

    def wait_all_ready(self, timeout):
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            self.supervise(-1)
            if all(self.is_ready(p) for p in self.procs) and all(
                    gw_readyz(g.info["port"]) for g in self.gws):
                return True
            time.sleep(0.05)
        return False


def gw_readyz(port):
    st, _, _, _ = http_call(port, "GET", "/readyz", None, 2.0)
    return st == 200


# ---- HTTP ----

def http_call(port, method, path, body, timeout):
    """(status, body, X-Request-Id, error): status None when no answer came
    (error: refused, reset, timeout)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body, headers)
        r = conn.getresponse()
        data = r.read().decode(errors="replace")
        return r.status, data, r.getheader("X-Request-Id"), None
    except ConnectionRefusedError:
        return None, "", None, "refused"
    except socket.timeout:
        return None, "", None, "timeout"
    except (OSError, http.client.HTTPException):
        return None, "", None, "reset"
    finally:
        conn.close()


class Answer:
    __slots__ = ("t0", "t1", "gw", "inc", "gw_id", "user", "item", "status", "body", "rid",
                 "err", "bad")


class Pay:
    __slots__ = ("oid", "t0", "t1", "gw", "inc", "status", "body", "err")


class Clients:
    def __init__(self, cluster, seed):
        self.cl = cluster
        self.seed = seed
        self.stop = threading.Event()
        self.records = [[] for _ in range(CLIENTS)]
        self.pays = [[] for _ in range(CLIENTS)]
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True)
                        for k in range(CLIENTS)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self, timeout):
        until = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, until - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def pick_gateway(self, rng):
        up = [i for i, g in enumerate(self.cl.gws) if g.want_up and g.ready.is_set()]
        if not up:
            return None
        i = rng.choice(up)
        g = self.cl.gws[i]
        info = g.info  # a restart replaces info (after counting the start), never edits it
        inc = g.incarnation
        if "port" not in info:
            return None
        return i, inc, info["port"], info.get("gateway_id")

    def attempt(self, k, rng, user, item, bad):
        a = Answer()
        a.user, a.item, a.bad = user, item, bad
        pick = self.pick_gateway(rng)
        a.t0 = time.time()
        if pick is None:
            a.gw, a.inc, a.gw_id = None, 0, None
            a.status, a.body, a.rid, a.err = None, "", None, "no gateway up"
        else:
            a.gw, a.inc, port, a.gw_id = pick
            body = (json.dumps({"user_id": user}) if bad
                    else json.dumps({"user_id": user, "item_id": item}))
            a.status, a.body, a.rid, a.err = http_call(port, "POST", "/seckill", body,
                                                       HTTP_TIMEOUT_S)
        a.t1 = time.time()
        self.records[k].append(a)
        return a

    def pay(self, k, rng, oid):
        p = Pay()
        p.oid = oid
        pick = self.pick_gateway(rng)
        p.t0 = time.time()
        if pick is None:
            p.gw, p.inc, p.status, p.body, p.err = None, 0, None, "", "no gateway up"
        else:
            p.gw, p.inc, port, _ = pick
            p.status, p.body, _, p.err = http_call(port, "POST", "/orders/%s/pay" % oid, None,
                                                   HTTP_TIMEOUT_S)
        p.t1 = time.time()
        self.pays[k].append(p)
        return p

    def run(self, k):
        rng = random.Random(self.seed * 1009 + k)
        names = sorted(ITEMS)
        due = []  # (when, order id): payments this client still has to make
        while not self.stop.is_set():
            now = time.time()
            for when, oid in [d for d in due if d[0] <= now]:
                due.remove((when, oid))
                if self.pay(k, rng, oid).status in (None, 503):
                    self.pay(k, rng, oid)  # once more: paying is idempotent
            user = "u%d" % rng.randrange(USERS)
            item = rng.choice(names)
            bad = rng.random() < 0.01
            retries = rng.choice([0, 0, 1, 2, 3])  # some users insist
            for n in range(retries + 1):
                a = self.attempt(k, rng, user, item, bad)
                if a.status == 200 and rng.random() < PAY_SHARE:
                    oid = json.loads(a.body).get("order_id")
                    due.append((time.time() + rng.uniform(0, 1.2 * PAY_TIMEOUT_MS / 1000.0),
                                oid))
                if a.status not in (None, 429, 503, 504) or self.stop.is_set():
                    break
                if n < retries:
                    time.sleep(rng.uniform(0.05, 0.5))
            time.sleep(rng.uniform(0.0, 0.05))

    def all(self):
        return [a for rs in self.records for a in rs]

    def all_pays(self):
        return [p for ps in self.pays for p in ps]


# ---- the fault schedule ----

def make_schedule(seed, duration):
    """[(start_s, kind, target, length_s)]: per target, faults never overlap;
    the two gateways count as one target (never both down at once). Kinds:
    kill (SIGKILL, restart after length_s), stop (SIGSTOP, SIGCONT after
    length_s; a worker, Redis, a gateway), stop-all (every worker at once,
    for longer than a request waits: parked requests time out)."""
    rng = random.Random(seed)
    faults, busy = [], collections.defaultdict(list)
    end = duration - 1.5

    def add(kind, target, lo, hi, lanes):
        for _ in range(100):
            length = round(rng.uniform(lo, hi), 2)
            start = round(rng.uniform(START_S, end - length), 2)
            if all(start + length + 0.5 < s or e + 0.5 < start
                   for lane in lanes for s, e in busy[lane]):
                for lane in lanes:
                    busy[lane].append((start, start + length))
                faults.append((start, kind, target, length))
                return

    workers = ["w0", "w1", "w2"]
    if rng.random() < 0.7:
        add("stop-all", "workers", WAIT_TIMEOUT_MS / 1000.0 + 0.5, 4.0, workers)
    w = rng.choice(workers)  # one of each kind at least
    add("kill", w, 0.5, 3.0, [w])
    w = rng.choice(workers)
    add("stop", w, 0.5, 4.0, [w])
    for _ in range(rng.randint(2, 5)):
        w = rng.choice(workers)
        if rng.random() < 0.5:
            add("kill", w, 0.5, 3.0, [w])
        else:
            add("stop", w, 0.5, 4.0, [w])
    for _ in range(rng.randint(1, 3)):
        add("kill", "redis", 0.3, 2.0, ["redis"])
    for _ in range(rng.randint(1, 2)):
        add("kill", "gw%d" % rng.randrange(2), 0.5, 2.0, ["gw"])
    if rng.random() < 0.5:
        add("kill", "sink", 0.3, 2.0, ["sink"])
    # drawn last, so the faults above stay what they were for a seed
    if rng.random() < 0.6:  # a Redis that stops answering: calls time out, may still run
        add("stop", "redis", 0.3, 2.5, ["redis"])
    if rng.random() < 0.4:  # a gateway that stops: its parked requests outlive their deadline
        add("stop", "gw%d" % rng.randrange(2), 0.5, 3.0, ["gw"])
    faults.sort()
    return faults


# ---- the checker ----

class Checker:
    def __init__(self):
        self.violations = collections.defaultdict(list)

    def fail(self, kind, msg):
        self.violations[kind].append(msg)

    def report(self):
        for kind, msgs in sorted(self.violations.items()):
            log("VIOLATION %s: %d case%s" % (kind, len(msgs), "" if len(msgs) == 1 else "s"))
            for m in msgs[:15]:
                log("    " + m)
            if len(msgs) > 15:
                log("    ... %d more" % (len(msgs) - 15))
        return not self.violations


def read_state(port):
    r = Redis(port, timeout=5.0)
    state = {}
    for item in ITEMS:
        left = r.call("GET", "sk:{%s}:stock" % item)
        raw = r.call("HGETALL", "sk:{%s}:orders" % item) or []
        orders = {}
        for oid, rec in zip(raw[0::2], raw[1::2]):
            # state|user|request|created|deadline, then the order's sale epoch
            st, user, rid, created, deadline = rec.split("|")[:5]
            orders[oid] = {"state": st, "user": user, "rid": rid, "item": item,
                           "created": int(created), "deadline": int(deadline)}
        raw = r.call("HGETALL", "sk:{%s}:users" % item) or []
        users = {u: v for u, v in zip(raw[0::2], raw[1::2])}
        state[item] = {"left": None if left is None else int(left), "orders": orders,
                       "users": users}
    r.close()
    return state


def decisions(port, rids_by_item):
    """{rid: stored decision "result|order"} for the given request ids: a
    success is its order, whose id is the request id; a refusal has a key."""
    r = Redis(port, timeout=5.0)
    out = {}
    for item, rids in rids_by_item.items():
        rids = list(rids)
        for i in range(0, len(rids), 200):
            chunk = rids[i:i + 200]
            recs = r.call("HMGET", "sk:{%s}:orders" % item, *chunk)
            out.update({rid: "0|" + rid for rid, v in zip(chunk, recs) if v is not None})
            vals = r.call("MGET", *["sk:{%s}:req:%s" % (item, rid) for rid in chunk])
            out.update({rid: v for rid, v in zip(chunk, vals)
                        if v is not None and rid not in out})
    r.close()
    return out


def read_sink(path):
    events = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    events.append(json.loads(line))
    except FileNotFoundError:
        pass
    return events


def result_of(body):
    try:
        return json.loads(body).get("result")
    except ValueError:
        return None


def unexcused(gws, gw, t0, t1):
    """A request sent to gateway gw got no answer, and nobody killed it
    meanwhile: a gateway answers every request it read."""
    return gw is not None and not any(t0 - 0.5 <= k <= t1 + 0.1 for k in gws[gw].kills)


def check(answers, pays, state, sink_events, lookups, evidence, decided, gws, chk):
    orders = {oid: o for st in state.values() for oid, o in st["orders"].items()}
    by_rid = collections.defaultdict(list)
    for oid, o in orders.items():
        by_rid[o["rid"]].append(oid)

    # stock: sold <= stock, sold + left = stock
    for item, stock in ITEMS.items():
        st = state[item]
        sold = sum(1 for o in st["orders"].values() if o["state"] in ("reserved", "paid"))
        if st["left"] is None:
            chk.fail("stock", "%s: no stock key in Redis" % item)
            continue
        if sold > stock or st["left"] < 0:
            chk.fail("oversell", "%s: sold %d of %d, left %d" % (item, sold, stock, st["left"]))
        if sold + st["left"] != stock:
            chk.fail("stock", "%s: sold %d + left %d != stock %d" % (item, sold, st["left"],
                                                                   stock))

    # per user, per request
    per_user = collections.Counter((o["item"], o["user"]) for o in orders.values()
                                   if o["state"] != "cancelled")
    for (item, user), n in per_user.items():
        if n > PER_USER_LIMIT:
            chk.fail("per_user_limit", "%s holds %d orders of %s: %s" % (
                user, n, item, sorted(oid for oid, o in orders.items()
                                      if o["user"] == user and o["item"] == item)))
        if user in BLOCKED:
            chk.fail("blocked_bought", "blocked user %s holds an order of %s" % (user, item))
    for item in ITEMS:  # the per-user counts the limit is enforced with
        for user, v in state[item]["users"].items():
            if int(v.split("|", 1)[0]) != per_user.get((item, user), 0):
                chk.fail("user_count", "%s/%s: users hash says %s, orders say %d" % (
                    user, item, v, per_user.get((item, user), 0)))
        for (i, user), n in per_user.items():
            if i == item and user not in state[item]["users"]:
                chk.fail("user_count", "%s/%s: %d orders, no users entry" % (user, item, n))
    # payments: paid only when asked, cancelled only unpaid and after the deadline
    asked = collections.defaultdict(list)
    for p in pays:
        asked[p.oid].append(p)
    events = {(e["order_id"], e.get("type")): e for e in sink_events}
    for oid, o in orders.items():
        tries = ", ".join("%s %s" % (p.status, p.body or p.err) for p in asked[oid]) or "none"
        if o["state"] == "reserved" and o["deadline"] < now_ms() - 3000:
            chk.fail("not_reaped", "order %s still reserved %.1f s after its pay deadline" % (
                oid, (now_ms() - o["deadline"]) / 1000.0))
        if o["state"] == "paid" and not asked[oid]:
            chk.fail("paid_unasked", "order %s is paid; nobody paid it" % oid)
        if o["state"] == "cancelled" and any(p.status == 200 for p in asked[oid]):
            chk.fail("paid_then_cancelled", "order %s is cancelled; payments: %s" % (oid, tries))
        ev = events.get((oid, "cancelled"))
        if ev and ev.get("at_ms", 0) < o["deadline"]:
            chk.fail("cancelled_early", "order %s cancelled at %d, its pay deadline %d" % (
                oid, ev["at_ms"], o["deadline"]))
        if o["state"] in ("paid", "cancelled") and (oid, o["state"]) not in events:
            chk.fail("sink_missing", "order %s is %s; the sink has no such event" % (
                oid, o["state"]))
        other = {"paid": "cancelled", "cancelled": "paid"}.get(o["state"])
        if other and (oid, other) in events:
            chk.fail("sink_differs", "order %s is %s; the sink has a %s event" % (
                oid, o["state"], other))
    for p in pays:
        o = orders.get(p.oid)
        if p.status is None:
            if unexcused(gws, p.gw, p.t0, p.t1):
                chk.fail("no_answer", "pay %s on gw%d#%d at %.3f: %s after %.1f s, the gateway "
                         "was not killed" % (p.oid, p.gw, p.inc, p.t0, p.err, p.t1 - p.t0))
            continue
        if p.status == 200 and (o is None or o["state"] != "paid"):
            chk.fail("pay_untrue", "pay %s answered 200 %s; Redis: %s" % (p.oid, p.body, o))
        elif p.status == 409 and (o is None or o["state"] != "cancelled"):
            chk.fail("pay_untrue", "pay %s answered 409 %s; Redis: %s" % (p.oid, p.body, o))
        elif p.status not in (200, 409, 503):
            chk.fail("pay_untrue", "pay %s (an order answered 200) answered %d %s" % (
                p.oid, p.status, p.body))
    for rid, oids in by_rid.items():
        if len(oids) > 1:
            chk.fail("decided_twice", "request %s has %d orders: %s" % (rid, len(oids), oids))

    # the sink's file: each Redis order once as reserved, nothing else twice
    reserved = collections.Counter(e["order_id"] for e in sink_events
                                   if e.get("type") == "reserved")
    pairs = collections.Counter((e["order_id"], e.get("type")) for e in sink_events)
    for (oid, typ), n in pairs.items():
        if n > 1:
            chk.fail("sink_duplicate", "order %s event %s stored %d times" % (oid, typ, n))
    for oid in orders:
        if reserved[oid] == 0:
            chk.fail("sink_missing", "order %s (request %s) not in the sink's file" % (
                oid, orders[oid]["rid"]))
    for e in sink_events:
        o = orders.get(e["order_id"])
        if o is None:
            chk.fail("sink_phantom", "sink has order %s that Redis does not" % e["order_id"])
        elif (e.get("request_id"), e.get("user_id"), e.get("item_id")) != (
                o["rid"], o["user"], o["item"]):
            chk.fail("sink_differs", "sink event %s; Redis order %s" % (e, o))

    # every answer true
    seen_200 = {}
    for a in answers:
        if a.status is None:
            if unexcused(gws, a.gw, a.t0, a.t1):
                chk.fail("no_answer", "%s/%s on gw%d#%d at %.3f: %s after %.1f s, the gateway "
                         "was not killed" % (a.user, a.item, a.gw, a.inc, a.t0, a.err,
                                             a.t1 - a.t0))
            continue
        res = result_of(a.body)
        if a.status == 200:
            try:
                body = json.loads(a.body)
            except ValueError:
                chk.fail("answer", "200 with an unreadable body: %r" % a.body)
                continue
            oid, rid = body.get("order_id"), body.get("request_id")
            o = orders.get(oid)
            if rid != a.rid:
                chk.fail("answer", "200 body request_id %s != X-Request-Id %s" % (rid, a.rid))
            if o is None:
                chk.fail("success_without_order",
                         "200 for %s/%s (request %s, gw%s) names order %s: not in Redis" % (
                             a.user, a.item, a.rid, a.gw, oid))
            elif (o["rid"], o["user"], o["item"]) != (a.rid, a.user, a.item):
                chk.fail("success_wrong_order", "200 for %s/%s request %s: order %s is %s" % (
                    a.user, a.item, a.rid, oid, o))
            elif reserved[oid] != 1:
                chk.fail("success_not_in_sink", "200's order %s is in the sink %d times" % (
                    oid, reserved[oid]))
            if oid in seen_200:
                chk.fail("success_twice", "order %s answered 200 to requests %s and %s" % (
                    oid, seen_200[oid], a.rid))
            seen_200[oid] = a.rid
        elif a.status == 409 and res == "already_purchased":
            oid = json.loads(a.body).get("order_id")
            o = orders.get(oid)
            if o is None or o["user"] != a.user or o["item"] != a.item:
                chk.fail("already_purchased_wrong",
                         "409 already_purchased for %s/%s (request %s) names order %s: %s" % (
                             a.user, a.item, a.rid, oid, o))
        if a.status in (409, 429, 503, 403, 400) and a.rid and by_rid.get(a.rid):
            oid = by_rid[a.rid][0]
            chk.fail("order_for_%d" % a.status,
                     "%s/%s request %s answered %d %s on gw%d#%d at %.3f; Redis has order %s "
                     "created at %.3f%s" % (
                         a.user, a.item, a.rid, a.status, a.body, a.gw, a.inc, a.t1, oid,
                         orders[oid]["created"] / 1000.0, evidence.get(a.rid, "")))
        # a worker's stored decision agrees with the answer it gave
        d = decided.get(a.rid) if a.rid else None
        if d is not None and a.status in (200, 409, 403):
            code, oid = d.split("|", 1)
            want = {"success": "0", "sold_out": "1", "already_purchased": "2"}.get(res)
            if want is not None and code != want:
                chk.fail("decision_differs", "request %s answered %d %s; Redis decided %s" % (
                    a.rid, a.status, a.body, d))

    # 504s asked again where they were issued
    for rid, (status, body, _) in lookups.items():
        res = result_of(body)
        has = bool(by_rid.get(rid))
        if status == 200 and not has:
            chk.fail("result_success_without_order", "GET result %s: %s; no order" % (rid, body))
        if status == 200 and has and json.loads(body).get("order_id") != by_rid[rid][0]:
            chk.fail("result_wrong_order", "GET result %s: %s; Redis order %s" % (
                rid, body, by_rid[rid][0]))
        if status in (409, 403, 503, 504) and has:
            chk.fail("result_%d_with_order" % status, "GET result %s: %d %s; Redis order %s" % (
                rid, status, body, by_rid[rid][0]))
        if status not in (200, 409, 403, 503, 504, 202, 404):
            chk.fail("result_unexpected", "GET result %s: %s %s" % (rid, status, body))
        if res == "pending" and status != 202:
            chk.fail("result_unexpected", "GET result %s: %s %s" % (rid, status, body))


# ---- the checker, checked ----

def self_test():
    """Each rule of check() fires on a state made to break it, and none on a
    sound one: a checker that cannot fail proves nothing."""
    import copy
    import types

    def answer(status, body, rid, user="u1", item="nem-a", gw=0, err=None):
        a = Answer()
        a.t0, a.t1, a.gw, a.inc, a.gw_id = 100.0, 100.5, gw, 1, "g0"
        a.user, a.item, a.status, a.body, a.rid, a.err, a.bad = (
            user, item, status, body, rid, err, False)
        return a

    def pay(oid, status, body):
        p = Pay()
        p.oid, p.t0, p.t1, p.gw, p.inc, p.status, p.body, p.err = (
            oid, 101.0, 101.1, 0, 1, status, body, None)
        return p

    t = now_ms() - 60000
    state = {i: {"left": n, "orders": {}, "users": {}} for i, n in ITEMS.items()}
    state["nem-a"]["left"] = ITEMS["nem-a"] - 1
    state["nem-a"]["orders"]["o1"] = {"state": "paid", "user": "u1", "rid": "r1",
                                      "item": "nem-a", "created": t, "deadline": t + 5000}
    state["nem-a"]["users"]["u1"] = "1|o1"
    sink = [{"order_id": "o1", "type": "reserved", "item_id": "nem-a", "user_id": "u1",
             "request_id": "r1", "at_ms": t},
            {"order_id": "o1", "type": "paid", "item_id": "nem-a", "user_id": "u1",
             "request_id": "r1", "at_ms": t + 100}]
    answers = [answer(200, json.dumps({"result": "success", "request_id": "r1",
                                       "order_id": "o1", "item_id": "nem-a"}), "r1"),
               answer(503, '{"result":"overloaded"}', "r2", user="u2"),
               answer(504, '{"result":"timeout","request_id":"r3"}', "r3", user="u3")]
    pays = [pay("o1", 200, '{"state":"paid"}')]
    base = {"answers": answers, "pays": pays, "state": state, "sink": sink,
            "lookups": {"r3": (404, '{"result":"not_found"}', True)},
            "decided": {"r1": "0|o1"}, "gws": [types.SimpleNamespace(kills=[])]}

    def run(case):
        chk = Checker()
        check(case["answers"], case["pays"], case["state"], case["sink"], case["lookups"], {},
              case["decided"], case["gws"], chk)
        return set(chk.violations)

    def order(case, oid, user, rid, st="reserved"):
        case["state"]["nem-a"]["orders"][oid] = {"state": st, "user": user, "rid": rid,
                                                 "item": "nem-a", "created": t,
                                                 "deadline": t + 5000}

    def oversold(c):
        c["state"]["nem-a"]["left"] = -1

    def lost_unit(c):
        c["state"]["nem-a"]["left"] = ITEMS["nem-a"]

    def order_for_503(c):
        order(c, "o2", "u2", "r2", "cancelled")

    def second_order(c):
        order(c, "o2", "u1", "r9", "cancelled")
        c["state"]["nem-a"]["orders"]["o2"]["state"] = "paid"
        c["pays"].append(pay("o2", 200, "{}"))

    def sink_lost(c):
        del c["sink"][0]

    def sink_twice(c):
        c["sink"].append(dict(c["sink"][0]))

    def success_lost(c):
        del c["state"]["nem-a"]["orders"]["o1"]

    def result_lies(c):
        c["lookups"]["r3"] = (200, json.dumps({"result": "success", "order_id": "o9"}), True)

    def silent(c):
        c["answers"].append(answer(None, "", None, err="reset"))

    def silent_killed(c):
        c["answers"].append(answer(None, "", None, err="reset"))
        c["gws"][0].kills.append(100.2)

    def paid_then_cancelled(c):
        c["state"]["nem-a"]["orders"]["o1"]["state"] = "cancelled"

    def decided_otherwise(c):
        c["decided"]["r1"] = "1|"

    cases = [(oversold, "oversell"), (lost_unit, "stock"), (order_for_503, "order_for_503"),
             (second_order, "per_user_limit"), (sink_lost, "sink_missing"),
             (sink_twice, "sink_duplicate"), (success_lost, "success_without_order"),
             (result_lies, "result_success_without_order"), (silent, "no_answer"),
             (silent_killed, None), (paid_then_cancelled, "paid_then_cancelled"),
             (decided_otherwise, "decision_differs")]
    failed = 0
    found = run(copy.deepcopy(base))
    if found:
        log("self-test: a sound state gives %s" % sorted(found))
        failed += 1
    for breaker, want in cases:
        case = copy.deepcopy(base)
        breaker(case)
        found = run(case)
        if (want is None and found) or (want is not None and want not in found):
            log("self-test: %s gives %s, wants %s" % (breaker.__name__, sorted(found), want))
            failed += 1
    log("self-test: %d of %d cases right" % (len(cases) + 1 - failed, len(cases) + 1))
    return 1 if failed else 0


# ---- the run ----

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateway")
    ap.add_argument("--worker")
    ap.add_argument("--self-test", action="store_true",
                    help="check the checker on made-up states, start nothing")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--duration", type=float, default=30.0)
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not args.gateway or not args.worker:
        ap.error("--gateway and --worker are required")
    seed = args.seed
    if seed is None and os.environ.get("NEMESIS_SEED"):
        seed = int(os.environ["NEMESIS_SEED"])
    if seed is None:
        seed = random.SystemRandom().randrange(1, 2 ** 31)
    log("nemesis: seed %d (replay: NEMESIS_SEED=%d)" % (seed, seed))
    for b in (args.gateway, args.worker):
        if not os.access(b, os.X_OK):
            log("nemesis: %s is not an executable" % b)
            return 2
    if not shutil.which("redis-server") or not shutil.which("setpriv"):
        log("nemesis: needs redis-server and setpriv (scripts/install-deps.sh)")
        return 2
    schedule = make_schedule(seed, args.duration)
    log("nemesis: %d faults over %.0f s:" % (len(schedule), args.duration))
    for start, kind, target, length in schedule:
        log("    at %5.2f s  %-4s %-5s for %.2f s" % (start, kind, target, length))

    # half the seeds configure each gateway's id, so that a restarted gateway
    # is the same gateway to the workers (their late RESULTs are its own) and
    # answers GET /seckill/result for what reached it after the restart
    ids_rng = random.Random("gateway-ids-%d" % seed)
    gateway_ids = None
    if ids_rng.random() < 0.5:
        gateway_ids = [str(uuid.UUID(int=ids_rng.getrandbits(128), version=4)) for _ in range(2)]
    log("nemesis: gateway ids %s" % ("configured: " + ", ".join(gateway_ids) if gateway_ids
                                     else "fresh at every start"))
    run_dir = tempfile.mkdtemp(prefix="seckill-nemesis-")
    cl = Cluster(args, run_dir, gateway_ids)
    chk = Checker()
    status = 1
    try:
        status = run(args, seed, schedule, cl, chk)
    finally:
        for p in reversed(cl.procs):
            if p.running():
                p.signal(signal.SIGCONT)
                p.signal(signal.SIGKILL)
                p.p.wait()
        if status == 0 and not os.environ.get("NEMESIS_KEEP"):
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            log("nemesis: run directory kept: %s" % run_dir)
    return status


def run(args, seed, schedule, cl, chk):
    t_setup = time.monotonic()
    cl.redis.spawn()
    for _ in range(250):
        if redis_ping(cl.redis_port):
            break
        time.sleep(0.02)
    for p in cl.gws + cl.workers + [cl.sink]:
        p.spawn()
    if not cl.wait_all_ready(30):
        for p in cl.procs:
            log("nemesis: %s ready=%s running=%s" % (p.name, cl.is_ready(p), p.running()))
        log("nemesis: the cluster did not start; logs in %s" % cl.dir)
        return 2
    log("nemesis: cluster up in %.1f s: redis :%d, gateways %s" % (
        time.monotonic() - t_setup, cl.redis_port,
        ", ".join(":%d (%s)" % (g.info["port"], g.info["gateway_id"]) for g in cl.gws)))

    names = {p.name: p for p in cl.procs}
    actions = []  # (t, seq, what, target)
    for n, (start, kind, target, length) in enumerate(schedule):
        actions.append((start, n, kind, target))
        actions.append((start + length, n, "restart" if kind == "kill" else "cont", target))
    actions.sort()
    injected = collections.Counter()

    clients = Clients(cl, seed)
    t0 = time.monotonic()
    t_sale = time.time()
    clients.start()
    ai = 0
    while True:
        t = time.monotonic() - t0
        if t >= args.duration:
            break
        while ai < len(actions) and actions[ai][0] <= t:
            _, _, what, target = actions[ai]
            p = names.get(target)
            ai += 1
            if target == "workers":
                for w in cl.workers:
                    w.signal(signal.SIGSTOP if what == "stop-all" else signal.SIGCONT)
                    w.paused = what == "stop-all"
                if what == "stop-all":
                    injected["SIGSTOP all workers"] += 1
            elif what == "kill":
                p.kill()
                injected["SIGKILL " + ("worker" if target[0] == "w" else target.rstrip("01"))] += 1
            elif what == "stop":
                p.signal(signal.SIGSTOP)
                p.paused = True
                injected["SIGSTOP " + ("worker" if target[0] == "w" else target.rstrip("01"))] += 1
            elif what == "cont":
                p.signal(signal.SIGCONT)
                p.paused = False
            elif what == "restart":
                p.spawn()
            log("%7.2f  %-7s %s" % (t, what, target))
        cl.supervise(t)
        time.sleep(0.02)

    # heal: no new requests; every process running and ready
    clients.stop.set()
    for p in cl.procs:
        if p.paused:
            p.signal(signal.SIGCONT)
            p.paused = False
        if not p.want_up:
            p.spawn()
    healed = cl.wait_all_ready(40)
    log("%7.2f  healed%s" % (time.monotonic() - t0, "" if healed else ": NOT everything is up"))
    if not clients.join(HTTP_TIMEOUT_S + 5):
        chk.fail("clients", "client threads still waiting %.0f s after the schedule" % (
            HTTP_TIMEOUT_S + 5))
    if not healed:
        chk.fail("heal", "not every process was ready within 40 s: " + ", ".join(
            p.name for p in cl.procs if not cl.is_ready(p)))
    answers = clients.all()

    # settle: every admitted request past its deadline (nothing can buy after
    # that), then the sink catches up with Redis's orders
    last = max([a.t0 for a in answers] + [time.time()])
    settle_until = last + (WAIT_TIMEOUT_MS + LEASE_MS) / 1000.0 + 1.5
    while time.time() < settle_until:
        cl.supervise(-1)
        time.sleep(0.05)
    # every order paid or past its pay deadline and cancelled by a reaper
    # (which runs every second): then nothing changes any more
    for _ in range(100):  # 20 s
        state = read_state(cl.redis_port)
        reserved = [o for st in state.values() for o in st["orders"].values()
                    if o["state"] == "reserved"]
        if not reserved or min(o["deadline"] for o in reserved) > now_ms() + 3000:
            break
        cl.supervise(-1)
        time.sleep(0.2)
    want = {(oid, t) for st in state.values() for oid, o in st["orders"].items()
            for t in ("reserved", o["state"])}
    sink_events = []
    for _ in range(400):  # 20 s
        sink_events = read_sink(cl.sink_file)
        if want <= {(e["order_id"], e.get("type")) for e in sink_events}:
            break
        cl.supervise(-1)
        time.sleep(0.05)
    log("%7.2f  settled: %d orders in Redis, %d events in the sink's file" % (
        time.monotonic() - t0, sum(len(st["orders"]) for st in state.values()),
        len(sink_events)))

    # every parked request answered; what the gateways still hold
    gauges = []
    for i, g in enumerate(cl.gws):
        st, body, _, _ = http_call(g.info["port"], "GET", "/metrics", None, 5.0)
        m = {}
        for line in body.splitlines():
            if line and not line.startswith("#") and " " in line:
                k, v = line.rsplit(" ", 1)
                m[k] = v
        parked = m.get("seckill_parked_requests")
        gauges.append("gw%d: parked %s, queue depth %s, late outcomes %s" % (
            i, parked, m.get("seckill_queue_depth"), m.get("seckill_late_outcomes_total")))
        if parked != "0":
            chk.fail("parked_left", "gw%d: seckill_parked_requests %s after every request's "
                     "deadline and every client's answer" % (i, parked))

    # ask again: 504s on the gateway that issued them (a running process with
    # that gateway id); and, for the evidence, every 503 Redis has an order for
    lookups, evidence = {}, {}
    order_rids = {o["rid"] for st in state.values() for o in st["orders"].values()}
    unknown_504 = 0
    for a in answers:
        g = cl.gws[a.gw] if a.gw is not None else None
        ask = a.rid and (a.status == 504 or (a.status == 503 and a.rid in order_rids))
        if not ask:
            continue
        if g is None or g.info.get("gateway_id") != a.gw_id or not g.running():
            if a.status == 504:
                unknown_504 += 1
            continue
        st, body, _, err = http_call(g.info["port"], "GET", "/seckill/result/" + a.rid, None, 5.0)
        if a.status == 504:
            lookups[a.rid] = (st, body, g.incarnation == a.inc)
        else:
            evidence[a.rid] = "; asked again%s: %s %s" % (
                "" if g.incarnation == a.inc else " (its gateway restarted)", st, body)
    decided = decisions(cl.redis_port, {
        item: {a.rid for a in answers if a.rid and a.item == item} for item in ITEMS})

    pays = clients.all_pays()
    check(answers, pays, state, sink_events, lookups, evidence, decided, cl.gws, chk)

    # crashes, then a clean stop of everything: exit 0 means no sanitizer report
    for p in cl.procs:
        for inc, rc in p.crashes:
            chk.fail("crash", "%s (start %d) exited by itself (%s); see %s" % (
                p.name, inc, rc, p.logpath))
    for p in cl.gws + cl.workers + [cl.sink]:
        rc = p.stop()
        if rc != 0:
            chk.fail("exit_status", "%s: %s on SIGTERM; see %s" % (p.name, exit_text(rc),
                                                                   p.logpath))
    cl.redis.stop()

    # summary
    by_status, with_rid = collections.Counter(), collections.Counter()
    for a in answers:
        if a.status is None:
            key = "no answer (%s)" % a.err
        elif a.status == 409:
            key = "409 %s" % result_of(a.body)
        else:
            key = str(a.status)
        by_status[key] += 1
        with_rid[key] += a.rid is not None
    log("nemesis: seed %d, %d requests from %d users in %.0f s" % (
        seed, len(answers), len({a.user for a in answers}), args.duration))
    log("  answers (of them with a request id, i.e. queued): " + ", ".join(
        "%s: %d (%d)" % (k, n, with_rid[k]) for k, n in sorted(by_status.items())))
    answered = [a.t1 - a.t0 for a in answers if a.status is not None]
    if answered:
        log("  slowest answer: %.2f s (wait_timeout_ms %d)" % (max(answered), WAIT_TIMEOUT_MS))
    for item, stock in ITEMS.items():
        st = state[item]
        sold = sum(1 for o in st["orders"].values() if o["state"] in ("reserved", "paid"))
        log("  %s: stock %d, sold %d, left %s, cancelled %d" % (
            item, stock, sold, st["left"],
            sum(1 for o in st["orders"].values() if o["state"] == "cancelled")))
    ok_rids = {a.rid for a in answers if a.status == 200}
    rids_504 = {a.rid for a in answers if a.status == 504}
    seen_rids = {a.rid for a in answers if a.rid}
    log("  orders: %d; answered 200: %d, answered 504: %d, request never answered: %d" % (
        len(order_rids), len(order_rids & ok_rids), len(order_rids & rids_504),
        len(order_rids - seen_rids)))
    res = collections.Counter()
    for rid, (st, body, same) in lookups.items():
        res["%s%s %s" % ("" if same else "restarted issuer: ", st, result_of(body))] += 1
    log("  504s asked again: " + (", ".join("%s: %d" % kv for kv in sorted(res.items()))
                                 or "none") + "; issuer gone: %d" % unknown_504)
    for item in ITEMS:
        created = sorted(o["created"] / 1000.0 - t_sale for o in state[item]["orders"].values())
        if created:
            log("  %s: first order at %.1f s, half at %.1f s, last at %.1f s" % (
                item, created[0], created[len(created) // 2], created[-1]))
    log("  orders by state: " + ", ".join("%s: %d" % kv for kv in sorted(collections.Counter(
        o["state"] for st in state.values() for o in st["orders"].values()).items())))
    log("  payments: " + ", ".join("%s: %d" % kv for kv in sorted(collections.Counter(
        "%s %s" % (p.status, result_of(p.body) or p.err or "")
        if p.status != 200 else "200" for p in pays).items())))
    log("  gateways after the sale: " + "; ".join(gauges))
    log("  faults: " + ", ".join("%s x%d" % kv for kv in sorted(injected.items())))
    log("  process starts: " + ", ".join("%s %d" % (p.name, p.spawns) for p in cl.procs))
    if chk.report():
        log("nemesis: PASS (seed %d)" % seed)
        return 0
    log("nemesis: FAIL (seed %d; replay with NEMESIS_SEED=%d)" % (seed, seed))
    return 1


if __name__ == "__main__":
    sys.exit(main())
