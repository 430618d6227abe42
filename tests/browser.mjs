// browser.mjs -- opens pgcdc's demo page in headless Chromium and checks that
// a change shows up in its table.  Driven by browser.sh through the
// environment:
//   DEMO_URL     page to open (a link that auto-connects: /?table=...)
//   DEMO_SQL     optional: run with psql once the page says "live"
//   DEMO_EXPECT  text that must then appear in the rows (#rows)
//   DEMO_SHOT    where to save a screenshot
//   DEMO_DB      database for psql (default PGDATABASE)
//   DEMO_CHECK   optional: a SELECT whose rows (psql -At) the page's table
//                (#rows, one cell per column) must then show, in order
//   CHROMIUM     browser binary (default /usr/bin/chromium)
// Prints one "ok - ..." or "not ok - ...: why" line; exits 0 or 1.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";

const NAME = process.env.DEMO_NAME || "demo page shows a live insert in Chromium";
const url = process.env.DEMO_URL;
const expect = process.env.DEMO_EXPECT || "";
const shot = process.env.DEMO_SHOT || "";
let browser = null, page = null;
let step = "launching Chromium";
const logs = [];

function psql(sqlText) {
  try {
    return execFileSync("psql", ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sqlText,
                                 ...(process.env.DEMO_DB ? ["-d", process.env.DEMO_DB] : [])],
                        { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 20000 });
  } catch (e) {
    throw new Error("psql failed: " + String(e.stderr || e.message).trim().replace(/\n/g, " | "));
  }
}

async function main() {
  // launch() gives the browser a fresh temporary profile of its own and
  // removes it on close.
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    timeout: 30000,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update",
           "--disable-sync"],
  });
  page = await browser.newPage({ viewport: { width: 1200, height: 640 } });
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") logs.push("console." + m.type() + ": " + m.text());
  });
  page.on("pageerror", (e) => logs.push("page error: " + e.message));

  step = "loading " + url;
  await page.goto(url, { timeout: 15000 });
  step = "waiting for the page to be subscribed";
  await page.waitForSelector('#state[data-state="live"], #state[data-state="snapshot"], #state[data-state="closed"]',
                             { timeout: 15000 });
  if (await page.getAttribute("#state", "data-state") === "closed") throw new Error("the server refused the subscription");
  if (process.env.DEMO_CHECK) {
    step = "waiting for the snapshot to fill the page";
    await page.waitForSelector('#state[data-state="live"]', { timeout: 15000 });
    const want = psql(process.env.DEMO_CHECK).trim();
    const got = await page.evaluate(() => [...document.querySelectorAll("#rows tr")]
      .map((tr) => [...tr.cells].slice(0, 4).map((td) => td.textContent).join("|")).join("\n"));
    if (got !== want) throw new Error("after the snapshot the page shows " + JSON.stringify(got) + ", the table holds " + JSON.stringify(want));
  }
  if (process.env.DEMO_SQL) {
    step = "running DEMO_SQL";
    psql(process.env.DEMO_SQL);
  }
  step = "waiting for " + JSON.stringify(expect) + " in #rows";
  await page.waitForFunction((t) => {
    const rows = document.querySelector("#rows");
    return rows && rows.rows.length > 0 && rows.textContent.includes(t);
  }, expect, { timeout: 15000 });
  const count = await page.textContent("#count");
  if (!(Number(count) >= 1)) throw new Error("#count shows " + JSON.stringify(count));
  const state = await page.getAttribute("#state", "data-state");
  if (state !== "live") throw new Error("state is " + state + " after the change arrived");
  if (process.env.DEMO_CHECK) {
    step = "comparing the page's table with " + process.env.DEMO_CHECK;
    let want = "", got = "";
    const end = Date.now() + 15000;
    do {
      want = psql(process.env.DEMO_CHECK).trim();
      got = await page.evaluate(() => [...document.querySelectorAll("#rows tr")]
        .map((tr) => [...tr.cells].slice(0, 4).map((td) => td.textContent).join("|")).join("\n"));
      if (got === want) break;
      await page.waitForTimeout(200);
    } while (Date.now() < end);
    if (got !== want) throw new Error("the page shows " + JSON.stringify(got) + ", the table holds " + JSON.stringify(want));
    const transport = await page.evaluate(() => document.querySelector("input[name=transport]:checked").value);
    if (process.env.DEMO_TRANSPORT && transport !== process.env.DEMO_TRANSPORT)
      throw new Error("the page uses " + transport);
  }
  if (shot) {
    step = "saving the screenshot";
    await page.screenshot({ path: shot, fullPage: false });
  }
}

// A hung step must not hang the suite; closing the browser removes its
// temporary profile, so give that a moment before leaving.
const timer = setTimeout(() => {
  console.log("not ok - " + NAME + ": timed out while " + step);
  const bye = () => process.exit(1);
  setTimeout(bye, 5000);
  if (browser) browser.close().then(bye, bye); else bye();
}, 90000);
let ok = false;
try {
  await main();
  ok = true;
  console.log("ok - " + NAME);
} catch (e) {
  let first = String(e && e.message || e).split("\n")[0];
  if (page) {
    const seen = await page.evaluate(() => {
      const t = (id) => (document.getElementById(id) || {}).textContent;
      return "page state: " + t("state") + (t("notice") ? "; notice: " + t("notice") : "");
    }).catch(() => "");
    if (seen) first += " (" + seen + ")";
  }
  console.log("not ok - " + NAME + ": " + step + ": " + first);
  for (const l of logs.slice(-10)) console.log("# " + l);
} finally {
  clearTimeout(timer);
  if (browser) await browser.close().catch(() => {});
}
process.exit(ok ? 0 : 1);
