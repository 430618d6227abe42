// pgcdc_node.mjs -- drives web/pgcdc.js in Node for tests/suite_sse.py.
//
//   node --experimental-websocket tests/pgcdc_node.mjs subscribe|live URL OPTIONS_JSON
//
// Prints one JSON object per line on stdout: {"status": s, "info": {...}}
// for every status callback, {"change": message} for every message
// (subscribe) or {"rows": n, "action": a} after every change (live).
// Commands on stdin, one a line: "dump" prints {"dump": {"rows": [[key,
// row], ...], "pos": p, "key": k, "status": s}}; "close" calls close() and
// exits once "closed" was reported.
import { subscribe, live } from "../web/pgcdc.js";
import { createInterface } from "node:readline";

const [mode, url, json] = process.argv.slice(2);
const opts = JSON.parse(json || "{}");
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
let closing = false;

opts.onStatus = (status, info) => {
  out({ status, info });
  if (status === "closed" && closing) process.exit(0);
};
let h;
if (mode === "live") {
  opts.onRows = (rows, change) => out({ rows: rows.size, action: change.action });
  h = live(url, opts);
} else {
  opts.onChange = (change) => out({ change });
  h = subscribe(url, opts);
}

createInterface({ input: process.stdin }).on("line", (line) => {
  line = line.trim();
  if (line === "dump") {
    out({ dump: { rows: h.rows ? [...h.rows.entries()] : null, pos: h.pos, key: h.key || null, status: h.status } });
  } else if (line === "close") {
    closing = true;
    if (h.status === "closed") process.exit(0);   // ended already (a refusal)
    h.close();
  }
}).on("close", () => { closing = true; h.close(); setTimeout(() => process.exit(0), 100); });
