// browser_refusals.mjs -- what a page in headless Chromium sees when pgcdc
// refuses a WebSocket subscription (docs/protocol.md,
// Refusals for browsers): a page on
// pgcdc's own origin gets close 4000 + status with the one-line reason; a
// page on another origin is refused outright (the browser reports 1006 and
// the socket never opens).  Driven by browser.sh through the environment:
//   PGCDC_PORT   pgcdc's port; it runs with token = $TOKEN, max_clients = 1
//                and tables = public.$TABLE
//   TOKEN, TABLE
//   CHROMIUM     browser binary (default /usr/bin/chromium)
// Prints one "ok - ..." or "not ok - ...: why" line per check; exits 0 only
// when all passed.
import { chromium } from "playwright-core";
import http from "node:http";

const port = Number(process.env.PGCDC_PORT);
const token = process.env.TOKEN;
const table = process.env.TABLE;
const base = `ws://127.0.0.1:${port}/ws`;
let failures = 0;

function report(name, err) {
  if (err) {
    failures++;
    console.log(`not ok - ${name}: ${String(err.message || err).split("\n")[0]}`);
  } else {
    console.log(`ok - ${name}`);
  }
}

// Runs in the page: opens url, resolves with what the page could observe.
const probe = (url) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  let opened = false, errored = false;
  const timer = setTimeout(() => { ws.close(); resolve({ opened, errored, code: "timeout" }); }, 10000);
  ws.onopen = () => { opened = true; };
  ws.onerror = () => { errored = true; };
  ws.onclose = (e) => { clearTimeout(timer); resolve({ opened, errored, code: e.code, reason: e.reason }); };
});

// Runs in the page: opens url and keeps it open (window.held) once it opens.
const hold = (url) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url);
  ws.onopen = () => { window.held = ws; resolve(true); };
  ws.onclose = (e) => reject(new Error(`closed ${e.code} ${e.reason}`));
});

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    timeout: 30000,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync"],
  });
  // a page on another origin, served from a second local port
  const other = http.createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html" });
    res.end("<!doctype html><title>elsewhere</title><p>another site</p>");
  });
  await new Promise((r) => other.listen(0, "127.0.0.1", r));
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/ping`, { timeout: 15000 });
    const ok = `${base}?query=${encodeURIComponent("*:" + table)}&token=${encodeURIComponent(token)}`;
    const cases = [
      ["a bad query", `${base}?query=bogus&token=${encodeURIComponent(token)}`, 4400, "query"],
      ["a missing token", `${base}?query=${encodeURIComponent("*:" + table)}`, 4401, "token"],
      ["a table outside tables", `${base}?query=${encodeURIComponent("*:elsewhere")}&token=${encodeURIComponent(token)}`, 4403, "tables"],
      ["a since older than the history", `${ok}&since=${encodeURIComponent("0/1:0")}`, 4410, "reload"],
    ];
    for (const [what, url, code, frag] of cases) {
      const name = `Chromium on pgcdc's origin reads ${code} for ${what}`;
      try {
        const r = await page.evaluate(probe, url);
        if (r.code !== code) throw new Error(`got ${JSON.stringify(r)}`);
        if (!r.reason || !r.reason.toLowerCase().includes(frag)) throw new Error(`reason ${JSON.stringify(r.reason)} lacks "${frag}"`);
        report(name);
      } catch (e) { report(name, e); }
    }
    // capacity: the page holds the only place, a second socket reads 4503
    {
      const name = "Chromium on pgcdc's origin reads 4503 when pgcdc is full";
      try {
        await page.evaluate(hold, ok);
        const r = await page.evaluate(probe, ok);
        if (r.code !== 4503 || !/client/i.test(r.reason)) throw new Error(`got ${JSON.stringify(r)}`);
        await page.evaluate(() => new Promise((res) => { window.held.onclose = res; window.held.close(); }));
        report(name);
      } catch (e) { report(name, e); }
    }
    // the same page subscribes fine once there is room
    {
      const name = "Chromium on pgcdc's origin opens a valid subscription";
      try {
        let opened = false;
        for (let i = 0; i < 20 && !opened; i++) {
          opened = await page.evaluate(hold, ok).catch(() => false);
          if (!opened) await new Promise((r) => setTimeout(r, 250));
        }
        if (!opened) throw new Error("never opened");
        await page.evaluate(() => window.held.close());
        report(name);
      } catch (e) { report(name, e); }
    }
    // a page on another origin: refused before any upgrade
    {
      const name = "Chromium on another origin is refused (no upgrade, 1006)";
      try {
        const page2 = await browser.newPage();
        await page2.goto(`http://127.0.0.1:${other.address().port}/`, { timeout: 15000 });
        const r = await page2.evaluate(probe, ok);
        if (r.opened || r.code !== 1006) throw new Error(`got ${JSON.stringify(r)}`);
        report(name);
      } catch (e) { report(name, e); }
    }
  } finally {
    other.close();
    await browser.close().catch(() => {});
  }
}

const timer = setTimeout(() => {
  console.log("not ok - browser refusals: timed out");
  process.exit(1);
}, 120000);
try {
  await main();
} catch (e) {
  report("browser refusals", e);
}
clearTimeout(timer);
process.exit(failures ? 1 : 0);
