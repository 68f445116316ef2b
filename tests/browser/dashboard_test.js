// The live dashboard in a real browser: headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core) loads GET /dashboard from a
// real gateway while this test runs a sale against it, checks that the page's
// numbers move during the sale and, once it is over, equal /metrics, and saves
// screenshots in OUT_DIR.
//
//   node dashboard_test.js GATEWAY_BINARY OUT_DIR
"use strict";
const { chromium } = require("playwright-core");
const { spawn } = require("child_process");
const fs = require("fs");
const http = require("http");
const os = require("os");
const path = require("path");

const [gatewayBin, outDir] = process.argv.slice(2);
if (!gatewayBin || !outDir) {
  console.error("usage: node dashboard_test.js GATEWAY_BINARY OUT_DIR");
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ITEMS = { phone: 400, laptop: 150 };
const BUYERS = 1200; // each buys once: sells out both items, then sold_out answers
const CLIENTS = 8;
const PACE_MS = 25; // per client between requests: at most 320 a second, so the sale takes seconds
const DEADLINE_MS = 90000;

const started = Date.now();
const deadline = () => Date.now() - started > DEADLINE_MS;
const sleep = ms => new Promise(r => setTimeout(r, ms));
const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS + 4 });

function request(port, method, urlPath, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path: urlPath, agent,
                               headers: body ? { "Content-Type": "application/json" } : {} },
      res => {
        let data = "";
        res.setEncoding("utf8");
        res.on("data", c => (data += c));
        res.on("end", () => resolve({ status: res.statusCode, body: data }));
      });
    req.setTimeout(10000, () => req.destroy(new Error(method + " " + urlPath + ": no answer in 10 s")));
    req.on("error", reject);
    req.end(body);
  });
}

// name{label="value"} number lines of the Prometheus text
function parseMetrics(text) {
  const m = new Map();
  for (const line of text.split("\n")) {
    const r = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (r) m.set(r[1] + (r[2] || ""), Number(r[3]));
  }
  return m;
}

function startGateway(dir) {
  const ini = path.join(dir, "seckill.ini");
  let text = "[gateway]\nlisten = 127.0.0.1:0\n[token_bucket]\nrate = 0\n" +
             `[queue]\ndata_dir = ${path.join(dir, "data")}\n`;
  for (const [id, stock] of Object.entries(ITEMS)) text += `[item.${id}]\nstock = ${stock}\n`;
  // one not on sale yet, so the page shows every kind of status
  text += `[item.tablet]\nstock = 50\nstarts_at = ${Math.floor(Date.now() / 1000) + 86400}\n`;
  fs.writeFileSync(ini, text);
  const p = spawn(gatewayBin, ["-c", ini], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    let out = "";
    const t = setTimeout(() => reject(new Error("gateway did not start in 30 s")), 30000);
    p.on("exit", code => reject(new Error("gateway exited with " + code)));
    p.stdout.on("data", c => {
      out += c;
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve({ proc: p, port: Number(m[1]) });
      }
    });
  });
}

// what the page shows, read from its DOM as numbers
async function shown(page) {
  return page.evaluate(() => {
    const num = s => (s === "–" ? null : Number(s.replace(/,/g, "")));
    const items = {};
    for (const tr of document.querySelectorAll("#items tbody tr"))
      items[tr.dataset.item] = { left: num(tr.querySelector(".left").textContent),
                                 sold: num(tr.querySelector(".sold").textContent),
                                 status: tr.querySelector(".badge").className.split(" ")[1] };
    const totals = {};
    for (const tr of document.querySelectorAll("#answers tbody tr"))
      totals[tr.dataset.result] = num(tr.querySelector(".total").textContent);
    const text = id => document.getElementById(id).textContent;
    return { updates: Number(document.body.dataset.updates || 0), items, totals,
             successRate: num(text("rate-success")), p50: text("p50"), p99: text("p99"),
             workers: num(text("workers")), parked: num(text("parked")), queue: num(text("queue")) };
  });
}

async function waitFor(what, fn) {
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (deadline()) throw new Error("timed out waiting for " + what);
    await sleep(100);
  }
}

async function sale(port, counts) {
  let next = 0;
  const client = async () => {
    while (next < BUYERS && !deadline()) {
      const i = next++;
      const item = i % 3 === 2 ? "laptop" : "phone";
      const r = await request(port, "POST", "/seckill", JSON.stringify({ user_id: "u-" + i, item_id: item }));
      counts[r.status] = (counts[r.status] || 0) + 1;
      await sleep(PACE_MS);
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, client));
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "seckill-dashboard-"));
  const gw = await startGateway(dir);
  const problems = [];
  let browser;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("pageerror", e => problems.push("page error: " + e.message));
    page.on("console", m => m.type() === "error" && problems.push("console: " + m.text()));
    page.on("requestfailed", r => problems.push("request failed: " + r.url()));
    const res = await page.goto(`http://127.0.0.1:${gw.port}/dashboard`);
    if (res.status() !== 200) throw new Error("GET /dashboard: " + res.status());
    await waitFor("two updates of the page", async () => (await shown(page)).updates >= 2);
    const before = await shown(page);
    if (before.items.phone.sold !== 0 || before.items.phone.left !== ITEMS.phone)
      throw new Error("before the sale: " + JSON.stringify(before.items));
    if (before.items.tablet.status !== "upcoming") throw new Error("tablet: " + before.items.tablet.status);

    // the sale, with the page read every 200 ms while it runs
    const counts = {};
    const samples = [];
    let done = false;
    const selling = sale(gw.port, counts).finally(() => (done = true));
    while (!done) {
      samples.push(await shown(page));
      if (samples.length === 8) await page.screenshot({ path: path.join(outDir, "dashboard-sale.png") });
      await sleep(200);
    }
    await selling;
    console.log("answers:", JSON.stringify(counts), "in", samples.length, "page reads");
    if ((counts[200] || 0) !== ITEMS.phone + ITEMS.laptop)
      throw new Error("sold " + counts[200] + ", want " + (ITEMS.phone + ITEMS.laptop));

    // it moved: sold went through values between none and all, and the
    // page showed successes per second and a latency while selling
    const phoneSold = [...new Set(samples.map(s => s.items.phone.sold))];
    const between = phoneSold.filter(v => v > 0 && v < ITEMS.phone);
    const increasing = phoneSold.every((v, i) => i === 0 || v >= phoneSold[i - 1]);
    console.log("phone sold as shown:", phoneSold.join(" "));
    if (between.length < 2 || !increasing)
      throw new Error("the page's sold count did not move through the sale: " + phoneSold.join(" "));
    if (!samples.some(s => s.successRate > 0)) throw new Error("never showed successes per second");
    if (!samples.some(s => s.p99 !== "–" && Number(s.p99) > 0)) throw new Error("never showed a p99");

    // over: the page settles on exactly what /metrics says
    let metrics, last;
    await waitFor("the page to match /metrics", async () => {
      metrics = parseMetrics((await request(gw.port, "GET", "/metrics")).body);
      last = await shown(page);
      const mismatch = [];
      for (const id of Object.keys(ITEMS)) {
        if (last.items[id].left !== metrics.get(`seckill_stock_left{item="${id}"}`)) mismatch.push(id + " left");
        if (last.items[id].sold !== metrics.get(`seckill_sold_total{item="${id}"}`)) mismatch.push(id + " sold");
      }
      for (const [result, n] of Object.entries(last.totals))
        if (n !== metrics.get(`seckill_requests_total{result="${result}"}`)) mismatch.push(result);
      if (last.workers !== metrics.get("seckill_workers_live")) mismatch.push("workers");
      if (last.parked !== metrics.get("seckill_parked_requests")) mismatch.push("parked");
      if (last.queue !== metrics.get("seckill_queue_depth")) mismatch.push("queue");
      return mismatch.length === 0 && last.successRate === 0;
    });
    console.log("page at the end:", JSON.stringify(last.items), JSON.stringify(last.totals));
    if (last.items.phone.left !== 0 || last.items.phone.sold !== ITEMS.phone ||
        last.items.phone.status !== "sold_out")
      throw new Error("phone at the end: " + JSON.stringify(last.items.phone));
    if (last.totals.success !== ITEMS.phone + ITEMS.laptop || last.totals.sold_out !== BUYERS - counts[200])
      throw new Error("totals at the end: " + JSON.stringify(last.totals));
    await page.screenshot({ path: path.join(outDir, "dashboard.png"), fullPage: true });
    if (problems.length) throw new Error(problems.join("\n"));
    console.log("screenshots:", path.join(outDir, "dashboard-sale.png"), path.join(outDir, "dashboard.png"));
  } finally {
    if (browser) await browser.close();
    agent.destroy();
    gw.proc.removeAllListeners("exit");
    gw.proc.kill("SIGTERM");
    const code = await new Promise(r =>
      gw.proc.exitCode !== null ? r(gw.proc.exitCode) : gw.proc.on("exit", c => r(c)));
    fs.rmSync(dir, { recursive: true, force: true });
    // 0 after SIGTERM; a sanitizer's report makes it exit otherwise
    if (code !== 0) throw new Error("the gateway exited with " + code);
  }
  console.log("1 passed, 0 failed");
}

main().catch(e => {
  console.error("FAIL:", e.stack || e);
  console.log("0 passed, 1 failed");
  process.exit(1);
});
