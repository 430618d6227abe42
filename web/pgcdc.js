// pgcdc.js -- a dependency-free client for pgcdc, for browsers and Node >= 20.
//
//   import { subscribe, live } from "http://127.0.0.1:8080/pgcdc.js";  // or a copy
//
//   const sub = subscribe("http://127.0.0.1:8080/", {
//     query: "insert,update:orders", filter: "status.eq.paid",
//     onChange: (msg) => console.log(msg.pos, msg.action, msg.columns),
//     onStatus: (status, info) => console.log(status, info.reason || ""),
//   });
//   sub.close();
//
//   const view = live("http://127.0.0.1:8080/", {
//     table: "orders", onRows: (rows, change) => render([...rows.values()]),
//   });
//
// subscribe() keeps one subscription alive over WebSocket (transport "ws",
// the default) or Server-Sent Events ("sse"): it reconnects with capped
// exponential back-off and jitter, resuming with since=<the last pos seen>
// so nothing is missed or repeated.  live() asks for a snapshot first
// (snapshot=1) and keeps a Map of the table's matching rows by key.  The
// message formats and close codes are described in docs/protocol.md.
//
// In Node 20, WebSocket needs `node --experimental-websocket` (Node 22 has
// it); SSE uses fetch() there.  Browsers use WebSocket and EventSource.

// never retried: the request itself is wrong (404: not a pgcdc address)
const FATAL = new Set([400, 401, 403, 404]);
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30000;

// The endpoint URL ("ws" or "sse" next to the server's base address) with
// the subscription's parameters.  url may be the base ("http://h:8080/"),
// or a /ws or /sse address; relative URLs resolve against the page.
function endpoint(url, path, params, ws) {
  const base = typeof location !== "undefined" ? location.href : undefined;
  const u = new URL(url, base);
  u.pathname = u.pathname.replace(/\/(ws|sse|pgcdc\.js)?$/, "/") + path;
  u.search = "";
  u.hash = "";
  if (ws) u.protocol = u.protocol === "https:" || u.protocol === "wss:" ? "wss:" : "ws:";
  else if (u.protocol === "ws:") u.protocol = "http:";
  else if (u.protocol === "wss:") u.protocol = "https:";
  const q = [];
  for (const [k, v] of params) {
    if (v === undefined || v === null || v === "" || v === false) continue;
    for (const one of Array.isArray(v) ? v : [v]) q.push(k + "=" + encodeURIComponent(String(one)));
  }
  return u.href + (q.length ? "?" + q.join("&") : "");
}

function list(v) {
  if (v === undefined || v === null || v === "") return [];
  return Array.isArray(v) ? v.filter((x) => x !== "" && x != null) : [v];
}

// Server-Sent Events over fetch() (Node, or a browser without EventSource):
// calls onEvent({id, event, data}) per event; resolves when the body ends.
async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = "", data = [], id = null, event = "", sawData = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      if (buf[nl] === "\r" && nl === buf.length - 1) break;   // maybe \r\n split across reads
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
      if (line === "") {
        if (sawData) onEvent({ id, event: event || "message", data: data.join("\n") });
        data = []; id = null; event = ""; sawData = false;
        continue;
      }
      if (line[0] === ":") continue;   // a comment (": ping")
      const c = line.indexOf(":");
      const field = c < 0 ? line : line.slice(0, c);
      let val = c < 0 ? "" : line.slice(c + 1);
      if (val[0] === " ") val = val.slice(1);
      if (field === "data") { data.push(val); sawData = true; }
      else if (field === "id") id = val;
      else if (field === "event") event = val;
    }
  }
}

// Asks the server why a connection was refused: WebSocket and EventSource
// hide the HTTP status from scripts, so the same subscription is requested
// once more as a plain GET of /sse.  Resolves {status, reason}; status 0
// when the server could not be reached, 200 when it would accept now.
async function diagnose(sseUrl) {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 10000);
  try {
    const r = await fetch(sseUrl, { signal: ac.signal, cache: "no-store", headers: { Accept: "text/event-stream" } });
    if (r.status === 200) { ac.abort(); return { status: 200, reason: "" }; }
    return { status: r.status, reason: (await r.text()).trim() };
  } catch (e) {
    return { status: 0, reason: String(e && e.message || e) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * subscribe(url, options) -> { close(), get pos(), get status() }
 *
 * options:
 *   query      "types:table[:filter]" (docs/protocol.md, Subscriptions)
 *   filter     a filter or an array of them, AND-ed with the query's
 *   columns    a column name or an array of them (only these are sent)
 *   since      a pos to resume after (the last one a previous run saw)
 *   snapshot   true: first the matching rows the table holds (S messages,
 *              then an E marker), then the changes after them
 *   transport  "ws" (default) or "sse"
 *   token      the server's token or a JWT; or a function returning one
 *              (called at every connection, so a fresh token can be used)
 *   grant      a signed grant; or a function returning one
 *   onChange   (message) => void, for every message, in order
 *   onStatus   (status, info) => void; status is "connecting", "snapshot"
 *              (rows are arriving), "live", "reconnecting" (info.delay ms)
 *              or "closed"; info.reason is the server's reason when there
 *              is one, info.code the WebSocket close code or HTTP status
 *   onGone     () => boolean: the resume position is older than the
 *              server's history (410).  Return true to go on (the
 *              subscription reconnects without since, as a fresh one);
 *              otherwise the subscription is closed with status "closed".
 *   minDelay, maxDelay   back-off bounds in ms (default 500 and 30000)
 *
 * It never retries a refusal that cannot succeed (400, 401, 403, 404, or a
 * URL that does not parse): it calls onStatus("closed", {code, reason})
 * with the server's reason instead.
 */
export function subscribe(url, options = {}) {
  const o = options;
  const transport = o.transport === "sse" ? "sse" : "ws";
  const minDelay = o.minDelay > 0 ? o.minDelay : RETRY_MIN_MS;
  const maxDelay = o.maxDelay > 0 ? o.maxDelay : RETRY_MAX_MS;
  let since = o.since || "";
  let snapshot = !!o.snapshot && !since;
  let attempt = 0, timer = 0, conn = null, stopped = false, status = "", gen = 0, openedAt = 0;

  const report = (st, info = {}) => {
    status = st;
    if (o.onStatus) {
      try { o.onStatus(st, info); } catch (e) { setTimeout(() => { throw e; }); }
    }
  };

  async function params() {
    const val = async (v) => (typeof v === "function" ? await v() : v);
    return [
      ["query", o.query],
      ["filter", list(o.filter)],
      ["columns", list(o.columns).join(",")],
      ["snapshot", snapshot ? "1" : ""],
      ["since", snapshot ? "" : since],
      ["token", await val(o.token)],
      ["grant", await val(o.grant)],
    ];
  }

  // The server accepted the subscription.
  function accepted(g) {
    if (g !== gen || status !== "connecting") return;   // messages may have said so already
    openedAt = Date.now();
    report(snapshot ? "snapshot" : "live", {});
  }

  function deliver(text) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    if (!msg || typeof msg !== "object") return;
    attempt = 0;
    if (msg.action === "S" && status !== "snapshot") report("snapshot", {});
    if (typeof msg.pos === "string") {
      since = msg.pos;
      if (snapshot && msg.action === "E") snapshot = false;   // a reconnect resumes after it
    }
    if (o.onChange) {
      try { o.onChange(msg); } catch (e) { setTimeout(() => { throw e; }); }
    }
    if (status !== "live" && msg.action !== "S") report("live", {});
  }

  // One connection ended.  code: WebSocket close code or HTTP status;
  // opened: whether it was accepted at all.
  async function ended(g, code, reason, opened, sseUrl) {
    if (g !== gen || stopped) return;
    conn = null;
    if (opened && Date.now() - openedAt > 5000) attempt = 0;   // it worked for a while
    if (!opened && (code === 1006 || code === 0) && sseUrl) {
      // refused before the stream: find out why
      const d = await diagnose(sseUrl);
      if (g !== gen || stopped) return;
      if (d.status && d.status !== 200) { code = d.status; reason = d.reason; }
    }
    const http = code >= 4000 && code < 5000 ? code - 4000 : code;
    if (FATAL.has(http)) {
      stopped = true;
      report("closed", { code, reason: reason || "refused (" + http + ")" });
      return;
    }
    if (http === 410) {
      const go = o.onGone ? !!o.onGone() : false;
      if (!go) {
        stopped = true;
        report("closed", { code, reason: reason || "position too old (410)" });
        return;
      }
      since = "";
      snapshot = !!o.snapshot;
      attempt = 0;
      retry(code, reason || "position too old (410)", 0);
      return;
    }
    retry(code, reason || (opened ? "connection closed" : "connection failed"));
  }

  function retry(code, reason, delay) {
    if (stopped) return;
    if (delay === undefined) {
      const cap = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 20));
      delay = Math.round(cap / 2 + Math.random() * cap / 2);   // jitter: half to all of it
      attempt++;
    }
    report("reconnecting", { code, reason, delay, attempt });
    timer = setTimeout(connect, delay);
  }

  async function connect() {
    timer = 0;
    if (stopped) return;
    const g = ++gen;
    report("connecting", { since: snapshot ? "" : since, snapshot });
    let p;
    try { p = await params(); } catch (e) {
      if (g === gen) retry(0, "token: " + (e && e.message || e));
      return;
    }
    if (g !== gen || stopped) return;
    let sseUrl, wsUrl;
    try {
      sseUrl = endpoint(url, "sse", p, false);
      wsUrl = endpoint(url, "ws", p, true);
    } catch (e) {
      stopped = true;
      report("closed", { code: 0, reason: "bad URL " + JSON.stringify(String(url)) + ": " + (e && e.message || e) });
      return;
    }
    if (transport === "ws") {
      if (typeof WebSocket !== "function") {
        stopped = true;
        report("closed", { code: 0, reason: "WebSocket is not available here (Node 20: node --experimental-websocket)" });
        return;
      }
      let ws, opened = false, done = false;
      try { ws = new WebSocket(wsUrl); } catch (e) {
        stopped = true;
        report("closed", { code: 0, reason: String(e && e.message || e) });
        return;
      }
      const finish = (code, reason) => {
        if (done) return;
        done = true;
        ended(g, code, reason, opened, sseUrl);
      };
      conn = { close: () => { done = true; try { ws.close(1000); } catch (e) { /* closing anyway */ } } };
      // A browser's refusal comes as an accepted upgrade closed at once
      // with 4400..4503 (docs/protocol.md, Refusals for browsers): say
      // "live" only once the connection has stayed open a moment.
      ws.onopen = () => { opened = true; openedAt = Date.now(); setTimeout(() => { if (!done) accepted(g); }, 150); };
      ws.onmessage = (ev) => { if (g === gen && !done) deliver(ev.data); };
      ws.onclose = (ev) => finish(ev.code, ev.reason);
      // Node 20 reports a refused handshake as an error without a close
      ws.onerror = () => { if (!opened) setTimeout(() => finish(1006, ""), 50); };
      return;
    }
    if (typeof EventSource === "function" && !o.fetchSSE) {
      const es = new EventSource(sseUrl);
      let opened = false, done = false;
      const finish = (code, reason) => {
        if (done) return;
        done = true;
        es.close();
        ended(g, code, reason, opened, sseUrl);
      };
      conn = { close: () => { done = true; es.close(); } };
      es.onopen = () => { opened = true; accepted(g); };
      es.onmessage = (ev) => { if (g === gen && !done) deliver(ev.data); };
      // the server says why it ends the stream (slow consumer, expiry, shutdown)
      es.addEventListener("close", (ev) => finish(1000, ev.data));
      es.onerror = () => finish(opened ? 1006 : 0, "");
      return;
    }
    const ac = new AbortController();
    conn = { close: () => ac.abort() };
    let res;
    try {
      res = await fetch(sseUrl, { signal: ac.signal, cache: "no-store", headers: { Accept: "text/event-stream" } });
    } catch (e) {
      if (g === gen) ended(g, 1006, String(e && e.message || e), false, null);
      return;
    }
    if (res.status !== 200) {
      const reason = (await res.text().catch(() => "")).trim();
      ended(g, res.status, reason, false, null);
      return;
    }
    accepted(g);
    let closeReason = "";
    try {
      await readEvents(res.body, (ev) => {
        if (g !== gen) return;
        if (ev.event === "close") closeReason = ev.data;
        else if (ev.event === "message") deliver(ev.data);
      });
    } catch (e) {
      closeReason = closeReason || String(e && e.message || e);
    }
    ended(g, 1006, closeReason || "stream ended", true, null);
  }

  connect();
  return {
    close() {
      if (stopped) return;
      stopped = true;
      gen++;
      clearTimeout(timer);
      if (conn) conn.close();
      conn = null;
      report("closed", { code: 1000, reason: "closed by the client" });
    },
    get pos() { return since; },
    get status() { return status; },
  };
}

// The key of a row under the E marker's key columns: the value itself for
// a one-column key, else the JSON of the values (and of the whole row when
// the table has no key).
function keyOf(key, cols) {
  if (!key) return JSON.stringify(Object.keys(cols).sort().map((k) => [k, cols[k]]));
  if (key.length === 1) return cols[key[0]];
  return JSON.stringify(key.map((k) => cols[k]));
}

function rowOf(cols) {
  const r = {};
  if (Array.isArray(cols)) for (const c of cols) r[c.name] = c.value;
  return r;
}

/**
 * live(url, options) -> { rows, close(), get pos(), get key() }
 *
 * Keeps rows, a Map of the matching rows of one table, equal to the
 * database: a snapshot first, then every change (docs/protocol.md,
 * Snapshots).  Map keys are the value of the primary key (or replica
 * identity) column, or the JSON array of the values for a key of several
 * columns; values are plain objects {column: value}.
 *
 * options: table ("name" or "schema.name"), filter, columns, token, grant,
 * transport, onStatus (as subscribe), and
 *   onRows  (rows, change) => void after every change: change is
 *           {action: "snapshot"|"I"|"U"|"D"|"T", key, row, old} where row
 *           is the new row and old the row it replaced (U) or removed (D).
 *
 * An update merges its columns into the row, so a column the database left
 * out (an unchanged TOAST value) keeps its value; an update that changes the
 * key moves the row.  After a disconnect it resumes with since; when the
 * server cannot resume (410) it takes a fresh snapshot and replaces the map.
 * With a filter, an update that takes a row out of the filter is not sent
 * (pgcdc filters on the new values), so that row stays as it was.
 */
export function live(url, options = {}) {
  const o = options;
  const rows = new Map();
  let key = null, staging = null;
  const notify = (change) => {
    if (o.onRows) {
      try { o.onRows(rows, change); } catch (e) { setTimeout(() => { throw e; }); }
    }
  };
  function apply(m) {
    switch (m.action) {
    case "S": {
      if (!staging) staging = [];
      staging.push(rowOf(m.columns));
      return;
    }
    case "E": {
      key = Array.isArray(m.key) && m.key.length ? m.key : null;
      rows.clear();
      for (const r of staging || []) rows.set(keyOf(key, r), r);
      staging = null;
      notify({ action: "snapshot", key: null, row: null, old: null });
      return;
    }
    case "I": {
      const row = rowOf(m.columns);
      const k = keyOf(key, row);
      const old = rows.get(k);
      rows.set(k, row);
      notify({ action: "I", key: k, row, old: old || null });
      return;
    }
    case "U": {
      const cols = rowOf(m.columns);
      const ident = Array.isArray(m.identity) ? rowOf(m.identity) : null;
      // the old key: from identity when the key changed (or under REPLICA
      // IDENTITY FULL), else the key columns are among the new values
      let oldKey;
      if (!key) oldKey = ident ? keyOf(null, ident) : undefined;
      else if (ident && key.every((c) => c in ident)) oldKey = keyOf(key, ident);
      else oldKey = keyOf(key, cols);
      const old = oldKey !== undefined ? rows.get(oldKey) : undefined;
      const row = Object.assign({}, old || ident || {}, cols);
      const k = keyOf(key, row);
      if (oldKey !== undefined && old !== undefined && oldKey !== k) rows.delete(oldKey);
      rows.set(k, row);
      notify({ action: "U", key: k, row, old: old || null });
      return;
    }
    case "D": {
      const ident = rowOf(m.identity);
      const k = keyOf(key, ident);
      const old = rows.get(k);
      if (old !== undefined) rows.delete(k);
      notify({ action: "D", key: k, row: null, old: old || null });
      return;
    }
    case "T":
      rows.clear();
      notify({ action: "T", key: null, row: null, old: null });
      return;
    }
  }
  const table = String(o.table || "");
  const sub = subscribe(url, {
    query: "*:" + table,
    filter: o.filter,
    columns: o.columns,
    token: o.token,
    grant: o.grant,
    transport: o.transport,
    minDelay: o.minDelay,
    maxDelay: o.maxDelay,
    fetchSSE: o.fetchSSE,
    snapshot: true,
    onGone: () => true,   // 410: take a fresh snapshot
    onChange: apply,
    onStatus: (st, info) => {
      if (st === "connecting") staging = null;   // a snapshot cut short starts over
      if (o.onStatus) o.onStatus(st, info);
    },
  });
  return {
    rows,
    close: () => sub.close(),
    get pos() { return sub.pos; },
    get key() { return key; },
    get status() { return sub.status; },
  };
}
