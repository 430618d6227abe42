// browser_live.mjs -- Server-Sent Events and web/pgcdc.js in headless
// Chromium, against pgcdc processes this script starts and restarts.
//
//   node browser_live.mjs eventsource|live-ws|live-sse
//
//   eventsource  a page's own EventSource on /sse receives rows; its
//                connection is cut (a forwarder in between), then pgcdc is
//                stopped (rows are inserted meanwhile) and started again
//                with its persistent slot; the browser reconnects by itself
//                with Last-Event-ID, and the page has every row exactly
//                once, in order
//   live-*       live() from /pgcdc.js over WebSocket or SSE equals the
//                table (SELECT) after tests/live_burst.sh's burst, after a
//                restart (resumed), after a 410 (a fresh snapshot) and a
//                truncate
//
// Env: PGCDC (binary), PGHOST/PGPORT/PGUSER/PGDATABASE, CHROMIUM, TMPDIR.
// Prints "ok - ..." or "not ok - ...: why" lines; exits 0 or 1.
import { chromium } from "playwright-core";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const mode = process.argv[2];
const dir = mkdtempSync(join(process.env.TMPDIR || tmpdir(), "pgcdc-blive-"));
const table = "blive_" + mode.replace("-", "_") + "_" + process.pid;
const slot = table;
let browser = null, proc = null, step = "starting";

function psql(sql) {
  return execFileSync("psql", ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 30000 }).trim();
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn, ms = 30000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last && last.ok !== false) return last;
    if (Date.now() > end) throw new Error("timed out waiting for " + what + (last && last.why ? ": " + last.why : ""));
    await sleep(200);
  }
}
function freePort() {
  return new Promise((res) => {
    const s = createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => res(p)); });
  });
}

let port = 0;
// status_interval = 15 in the config: an idle database lets pgcdc confirm
// the server's WAL end after status_interval (docs/protocol.md,
// Replication), which after a restart makes the last position seen a 410;
// these scenarios restart within seconds of their last change.

// A TCP forwarder to pgcdc whose connections cut() breaks, so the page's
// connection can be cut with pgcdc running.
const cutter = { socks: new Set(), port: 0 };
function startCutter() {
  const srv = createServer((a) => {
    const b = connect(port, "127.0.0.1");
    for (const [x, y] of [[a, b], [b, a]]) {
      cutter.socks.add(x);
      x.on("data", (d) => y.write(d));
      x.on("close", () => { cutter.socks.delete(x); y.destroy(); });
      x.on("error", () => y.destroy());
    }
  });
  return new Promise((res) => srv.listen(0, "127.0.0.1", () => { cutter.port = srv.address().port; cutter.srv = srv; res(); }));
}
function cut() {
  for (const x of cutter.socks) x.destroy();
}
async function startPgcdc(temporary) {
  const conf = join(dir, "pgcdc.config");
  writeFileSync(conf, `[postgres]
conninfo = host=${process.env.PGHOST} port=${process.env.PGPORT} user=${process.env.PGUSER || "postgres"} dbname=${process.env.PGDATABASE || "postgres"}
slot = ${temporary ? slot + "_tmp" : slot}
temporary_slot = ${temporary ? "true" : "false"}
status_interval = 15
reconnect_max = 2
[server]
listen = 127.0.0.1:${port}
ping_interval = 2
`);
  proc = spawn(process.env.PGCDC, ["-c", conf, "-v"], { stdio: ["ignore", "ignore", "ignore"] });
  await until("pgcdc streaming", async () => {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/health`);
      return (await r.json()).replication === "streaming";
    } catch (e) { return false; }
  }, 20000);
}
async function stopPgcdc() {
  if (!proc) return;
  const p = proc;
  proc = null;
  const done = new Promise((r) => p.on("exit", r));
  p.kill("SIGTERM");
  await done;
}

async function eventsource(page) {
  psql(`DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (id int PRIMARY KEY)`);
  step = "opening an EventSource";
  await page.evaluate((url) => {
    window.got = [];
    window.opens = 0;
    const es = new EventSource(url);
    es.onopen = () => { window.opens++; };
    es.onmessage = (ev) => window.got.push([ev.lastEventId, JSON.parse(ev.data).columns[0].value]);
  }, `/sse?query=insert:${table}`);
  await until("the stream open", () => page.evaluate(() => window.opens === 1));
  const ins = (a, b) => psql(`INSERT INTO ${table} SELECT generate_series(${a}, ${b})`);
  for (let i = 1; i <= 5; i++) ins(i, i);
  await until("rows 1..5", () => page.evaluate(() => window.got.length >= 5));
  step = "cutting the connection";
  cut();
  ins(6, 8);
  await until("the browser to reconnect by itself after the cut", () => page.evaluate(() => window.opens >= 2));
  await until("rows 1..8", () => page.evaluate(() => window.got.length >= 8));
  step = "restarting pgcdc";
  await stopPgcdc();
  ins(9, 10);
  await startPgcdc(false);
  ins(11, 15);
  step = "waiting for the browser to reconnect and catch up";
  await until("rows 1..15", async () => {
    const g = await page.evaluate(() => window.got);
    return g.length >= 15 ? g : { ok: false, why: JSON.stringify(g.map((x) => x[1])) };
  });
  await sleep(1000);   // anything extra (a duplicate) would arrive now
  const all = await page.evaluate(() => window.got);
  const ids = all.map((x) => x[1]);
  if (JSON.stringify(ids) !== JSON.stringify([...Array(15).keys()].map((i) => i + 1)))
    throw new Error("rows " + JSON.stringify(ids));
  if (all.some(([id, v], k) => !id || (k && id === all[k - 1][0])))
    throw new Error("ids: " + JSON.stringify(all.map((x) => x[0])));
  if (await page.evaluate(() => window.opens) < 3) throw new Error("fewer than three opens");
}

async function refusals(page) {
  psql(`DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (id int PRIMARY KEY)`);
  for (const transport of ["ws", "sse"]) {
    for (const [query, code, word] of [["bogus:" + table, 400, "bogus"], ["*:no_such_table_here", 400, "no_such_table_here"]]) {
      step = `subscribe(${query}) over ${transport}`;
      const got = await page.evaluate(async ([query, transport]) => {
        const { subscribe } = await import("/pgcdc.js");
        const seen = [];
        await new Promise((resolve) => {
          subscribe("/", { query, transport, minDelay: 100, onStatus: (s, info) => {
            seen.push([s, info]);
            if (s === "closed") setTimeout(resolve, 1500);   // a retry would show up here
          } });
          setTimeout(resolve, 20000);
        });
        return seen;
      }, [query, transport]);
      const closed = got.filter(([s]) => s === "closed");
      const want = transport === "ws" ? 4000 + code : code;
      if (closed.length !== 1 || closed[0][1].code !== want || !String(closed[0][1].reason).includes(word))
        throw new Error(`${transport} ${query}: ${JSON.stringify(got)}`);
      if (got.filter(([s]) => s === "connecting").length !== 1 || got.some(([s]) => s === "reconnecting"))
        throw new Error(`${transport} ${query}: retried: ${JSON.stringify(got)}`);
    }
  }
}

async function live(page, transport) {
  const burst = (phase) => execFileSync("sh", [join(here, "live_burst.sh"), table, phase],
                                        { stdio: ["ignore", "ignore", "pipe"], timeout: 60000 });
  burst("setup");
  step = "starting live()";
  await page.evaluate(async ([t, transport]) => {
    const { live } = await import("/pgcdc.js");
    window.statuses = [];
    window.view = live("/", { table: t, transport, minDelay: 100, maxDelay: 400,
                              onStatus: (s) => window.statuses.push(s) });
  }, [table, transport]);
  const equal = async (what) => {
    step = "waiting for live() to equal the table " + what;
    await until("equality " + what, async () => {
      const want = JSON.parse(psql(`SELECT coalesce(json_agg(json_build_object('id', id, 'v', v, 'n', n, 'big', big)
                                    ORDER BY id), '[]') FROM ${table}`));
      const got = await page.evaluate(() => ({
        key: window.view.key,
        rows: [...window.view.rows.entries()].sort((a, b) => a[0] - b[0]),
      }));
      const ok = JSON.stringify(got.key) === '["id"]' &&
        JSON.stringify(got.rows.map((e) => e[1])) === JSON.stringify(want) &&
        got.rows.every(([k, r]) => k === r.id);
      return ok || { ok: false, why: `map ${got.rows.length} rows, table ${want.length}` };
    });
  };
  const statuses = () => page.evaluate(() => window.statuses.slice());
  await equal("after the snapshot");
  burst("burst");
  await equal("after the burst");
  let n = (await statuses()).length;
  await stopPgcdc();
  psql(`UPDATE ${table} SET n = n + 100 WHERE id > 40; UPDATE ${table} SET id = 2 WHERE id = 1`);
  await startPgcdc(false);
  await equal("after a restart");
  if ((await statuses()).slice(n).includes("snapshot")) throw new Error("re-snapshotted after a resumable restart");
  n = (await statuses()).length;
  await stopPgcdc();
  psql(`DELETE FROM ${table} WHERE id > 50`);
  await startPgcdc(true);   // a temporary slot: the old position is gone (410)
  await until("a fresh snapshot", async () => (await statuses()).slice(n).includes("snapshot"));
  await equal("after the 410");
  burst("truncate");
  await equal("after the truncate");
}

const NAMES = {
  "refusals": "pgcdc.js in Chromium reports 4400 (WebSocket) and 400 (SSE) with the server's reason and does not retry",
  "eventsource": "EventSource in Chromium reconnects by itself after a cut connection and a pgcdc restart, every row once, in order",
  "live-ws": "pgcdc.js live() over WebSocket in Chromium equals the table (burst, restart, 410, truncate)",
  "live-sse": "pgcdc.js live() over SSE (EventSource) in Chromium equals the table (burst, restart, 410, truncate)",
};
let ok = false;
const timer = setTimeout(() => { console.log(`not ok - ${NAMES[mode]}: timed out while ${step}`); process.exit(1); },
                         150000);
try {
  port = await freePort();
  await startPgcdc(false);
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
                                    args: ["--no-sandbox", "--disable-gpu", "--no-first-run"] });
  const page = await browser.newPage();
  await startCutter();
  // the page (and so its EventSource) goes through the forwarder
  await page.goto(`http://127.0.0.1:${mode === "eventsource" ? cutter.port : port}/ping`);
  if (mode === "eventsource") await eventsource(page);
  else if (mode === "refusals") await refusals(page);
  else await live(page, mode === "live-sse" ? "sse" : "ws");
  ok = true;
  console.log("ok - " + NAMES[mode]);
} catch (e) {
  console.log(`not ok - ${NAMES[mode]}: ${step}: ${String(e && e.message || e).split("\n")[0]}`);
} finally {
  clearTimeout(timer);
  if (browser) await browser.close().catch(() => {});
  cut();
  if (cutter.srv) cutter.srv.close();
  await stopPgcdc();
  try { psql(`DROP TABLE IF EXISTS ${table}`); } catch (e) { /* best effort */ }
  try { psql(`SELECT pg_drop_replication_slot('${slot}')`); } catch (e) { /* best effort */ }
  rmSync(dir, { recursive: true, force: true });
}
process.exit(ok ? 0 : 1);
