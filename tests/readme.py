"""readme.py -- README.md is used as written, so it cannot drift from pgcdc
(and docs/protocol.md is held to the program the same way).

Takes README's configuration blocks, example URLs, messages and deployment
files literally and checks each against the program and the repository:

- the postgresql.conf block alone (tests/pg.sh with PG_BARE=1) starts a
  stock PostgreSQL 15 on which pgcdc streams; test.sh also starts its shared
  cluster with it (`readme.py --pgconf` prints the block);
- every pgcdc configuration block passes `pgcdc -t`;
- the example messages have exactly the members, in the order and with the
  values, that pgcdc sends for the same statements (positions, xids, LSNs
  and times aside), and the JavaScript that handles them keeps the right
  rows when run in Node against a real pgcdc;
- every example URL is sent exactly as printed and must be accepted (101
  for /ws, 200 for /sse), against tables created from the names it uses;
  each readable form decodes to the same parameters as its encoded form;
- the role and GRANT, run as written, let pgcdc stream, and take snapshots
  of exactly the tables that existed when the GRANT ran;
- every JavaScript, Python and shell block parses;
- the nginx block is dist/nginx.conf byte for byte (the file
  tests/proxy.sh runs), the grant and JWT minting snippets are the code of
  tests/grant_mint.* and tests/jwt_mint.*, and the systemd install steps
  are the unit's own;
- the metrics tables of README and docs/protocol.md list exactly the
  metrics /metrics serves, with their types, and their configuration
  tables (and pgcdc.example.config) exactly the keys pgcdc knows;
- every citation of docs/protocol.md in the sources names one of its
  sections, and docs/protocol.md's example messages are README's.

README_MD=FILE checks another copy of README (to see that a check can fail).
Run by test.sh as an optional stage, with the environment it sets (PGCDC,
TMPDIR).  Arguments select tests by name, as in the suites.
"""
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROTOCOL = os.path.join(ROOT, "docs", "protocol.md")
README = os.environ.get("README_MD", os.path.join(ROOT, "README.md"))   # another copy, to check that the checks can fail


# ---- reading the README ------------------------------------------------------

def readme_text():
    with open(README, encoding="utf-8") as f:
        return f.read()


def blocks(text=None):
    """Fenced code blocks as (section heading, language, code, text before
    the block since the previous block or heading)."""
    text = readme_text() if text is None else text
    out, section, before = [], "", []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(`{3,})\s*([\w.+-]*)\s*$", line)
        if m:
            fence, lang, body = m.group(1), m.group(2), []
            i += 1
            while i < len(lines) and not lines[i].startswith(fence):
                body.append(lines[i])
                i += 1
            out.append((section, lang, "\n".join(body) + "\n", "\n".join(before)))
            before = []
        elif line.startswith("#") and re.match(r"^#{1,6} ", line):
            section = line.lstrip("#").strip()
            before = []
        else:
            before.append(line)
        i += 1
    return out


def pgconf_block():
    """The postgresql.conf block: the one ini block that sets wal_level."""
    found = [code for _, lang, code, _ in blocks() if lang == "ini" and re.search(r"^\s*wal_level\s*=", code, re.M)]
    if len(found) != 1:
        raise AssertionError("README has %d postgresql.conf blocks (ini blocks setting wal_level), want 1"
                             % len(found))
    return found[0]


def inline_urls(text):
    """Inline code spans that are request paths: /ws?... or /sse?..."""
    spans = re.findall(r"`([^`\n]+)`", strip_fences(text))
    return [s for s in spans if re.match(r"^/(ws|sse)\?", s)]


def strip_fences(text):
    return re.sub(r"^(`{3,}).*?^\1[ \t]*$", "", text, flags=re.M | re.S)


def placeholder(url):
    return any(t in url for t in ("<", ">", "${", "...", "[", "]"))


def sendable(url):
    """No byte a client could not put into a request line as it is."""
    return all(0x21 <= ord(c) < 0x7f and c not in '"<>\\^`{|}' for c in url)


def example_rows(text):
    """Rows of README's examples table: (readable, as sent) pairs of URLs."""
    rows = []
    for line in strip_fences(text).split("\n"):
        if not line.startswith("|"):
            continue
        urls = [u for u in inline_urls(line)]
        if len(urls) == 2 and not placeholder(urls[0]):
            rows.append((urls[0], urls[1]))
    return rows


# ---- pgcdc and the database ----------------------------------------------------

def start_cluster(conf_text, tmp):
    """A bare throwaway cluster configured by conf_text alone; returns its
    (environment, base directory)."""
    conf = os.path.join(tmp, "readme-postgresql.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    os.chmod(tmp, 0o755)
    os.chmod(conf, 0o644)
    env = dict(os.environ, PG_BARE="1", PG_EXTRA_CONF=conf, TMPDIR=tmp)
    p = subprocess.run(["bash", os.path.join(HERE, "pg.sh"), "start"], capture_output=True, text=True,
                       env=env, timeout=120)
    if p.returncode != 0:
        raise AssertionError("PostgreSQL did not start with README's postgresql.conf block: %s"
                             % (p.stderr.strip()[-1500:] or p.stdout.strip()[-500:]))
    out = {}
    base = None
    for line in p.stdout.split("\n"):
        if line.startswith("export "):
            for kv in line[len("export "):].split():
                k, _, v = kv.partition("=")
                out[k] = v
        m = re.search(r"stop with: .* stop (\S+)", line)
        if m:
            base = m.group(1)
    return out, base


def stop_cluster(base):
    if base:
        subprocess.run(["bash", os.path.join(HERE, "pg.sh"), "stop", base], capture_output=True, timeout=60)


def has_plugin_setting():
    bindir = "/usr/lib/postgresql/15/bin"
    exe = os.path.join(bindir, "postgres") if os.path.exists(os.path.join(bindir, "postgres")) else "postgres"
    p = subprocess.run([exe, "--describe-config"], capture_output=True, text=True)
    return any(line.startswith("output_plugin_libraries") for line in p.stdout.split("\n"))


# ---- the tests ---------------------------------------------------------------------

def t_nginx_is_dist():
    code = [c for _, lang, c, _ in blocks() if lang == "nginx"]
    with open(os.path.join(ROOT, "dist", "nginx.conf"), encoding="utf-8") as f:
        dist = f.read()
    assert code, "README has no nginx block"
    for c in code:
        if c != dist:
            a, b = c.split("\n"), dist.split("\n")
            n = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
            raise AssertionError("README's nginx block differs from dist/nginx.conf at line %d: %r vs %r"
                                 % (n + 1, a[n] if n < len(a) else None, b[n] if n < len(b) else None))


SNIPPET_FILES = (   # README section (lower case contains) -> the files its snippets are
    ("grant", {"sh": "grant_mint.sh", "python": "grant_mint.py", "js": "grant_mint.js"}),
    ("login tokens", {"python": "jwt_mint.py", "js": "jwt_mint.js"}),
)


def t_mint_snippets():
    """Every paragraph of a minting snippet is code of the file the tests
    run, except paragraphs of imports alone (a file may import more) and
    one-line usage examples."""
    for key, files in SNIPPET_FILES:
        seen = set()
        for section, lang, code, _ in blocks():
            if key not in section.lower() or lang not in files:
                continue
            with open(os.path.join(HERE, files[lang]), encoding="utf-8") as f:
                src = f.read()
            for chunk in re.split(r"\n\s*\n", code.strip("\n")):
                lines = chunk.split("\n")
                if len(lines) == 1 or all(re.match(r"^(import|from) ", ln) for ln in lines):
                    continue
                assert chunk in src, "README's %s snippet is not in tests/%s:\n%s" % (lang, files[lang], chunk)
                seen.add(lang)
        assert seen == set(files), "%s snippets found for %s only, want %s" % (key, sorted(seen), sorted(files))


def t_snippets_parse():
    """Every JavaScript, Python and shell block of README parses."""
    checks = {"js": (".mjs", ["node", "--check"]), "python": (".py", ["/usr/bin/python3", "-m", "py_compile"]),
              "sh": (".sh", ["bash", "-n"])}
    tmp = tempfile.mkdtemp(prefix="readme-parse-")
    bad, n = [], 0
    try:
        for i, (section, lang, code, _) in enumerate(blocks()):
            if lang not in checks or (lang == "js" and not shutil.which("node")):
                continue
            ext, cmd = checks[lang]
            path = os.path.join(tmp, "b%d%s" % (i, ext))
            with open(path, "w") as f:
                f.write(code)
            p = subprocess.run(cmd + [path], capture_output=True, text=True, timeout=30,
                               env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
            n += 1
            if p.returncode != 0:
                bad.append("%s block in %r: %s" % (lang, section, (p.stderr or p.stdout).strip()[-300:]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert n, "no code blocks found"
    assert not bad, "README code that does not parse:\n  " + "\n  ".join(bad)


def t_systemd_steps():
    with open(os.path.join(ROOT, "dist", "pgcdc.service"), encoding="utf-8") as f:
        unit = f.read()
    comment = "\n".join(line[1:].strip() for line in unit.split("\n") if line.startswith("#"))
    steps = [line.strip() for _, lang, c, _ in blocks() if lang == "sh" and "/etc/pgcdc" in c
             for line in c.split("\n") if line.strip().startswith(("install -d", "install -m"))]
    assert steps, "README shows no install steps for /etc/pgcdc"
    for s in steps:
        cmd = s.split("#")[0].strip()
        assert cmd in comment, "README's step %r is not the one dist/pgcdc.service describes" % cmd


def t_config_blocks(pgcdc):
    n = 0
    tmp = tempfile.mkdtemp(prefix="readme-cfg-")
    try:
        for section, lang, code, _ in blocks():
            if lang != "ini" or not re.search(r"^\s*\[(postgres|server|rules)\]", code, re.M):
                continue
            text = code
            if not re.search(r"^\s*\[postgres\]", code, re.M):
                text = "[postgres]\nconninfo = dbname=app\n" + code
            path = os.path.join(tmp, "c%d.config" % n)
            with open(path, "w") as f:
                f.write(text)
            p = subprocess.run([pgcdc, "-t", "-c", path], capture_output=True, text=True, timeout=10)
            assert p.returncode == 0 and "configuration ok" in p.stdout, \
                "README's configuration block in %r is refused: %s" % (section, (p.stderr or p.stdout).strip())
            n += 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert n, "README has no pgcdc configuration block"


VOLATILE = ("pos", "xid", "lsn", "timestamp")


def masked(frame):
    return [(k, "*" if k in VOLATILE else v) for k, v in frame.items()]


def message_examples():
    """README's example messages and the statements it says made them."""
    for section, lang, code, before in blocks():
        if section == "Messages" and lang == "json":
            frames = [json.loads(line, object_pairs_hook=dict) for line in code.split("\n") if line.strip()]
            m = re.search(r"\(`(CREATE TABLE [^`]+)`\)", before.replace("\n", " "))
            assert m, "the text before README's messages does not give the CREATE TABLE"
            return frames, re.sub(r"\s+", " ", m.group(1))
    raise AssertionError("README's Messages section has no json block")


async def t_messages(h, pc):
    import websockets
    frames, create = message_examples()
    assert [f.get("action") for f in frames] == ["I", "U", "D", "T"], [f.get("action") for f in frames]
    table = frames[0]["table"]
    h.sql("DROP TABLE IF EXISTS %s; %s; ALTER TABLE %s REPLICA IDENTITY FULL" % (table, create, table))
    row = {c["name"]: c["value"] for c in frames[0]["columns"]}
    new = {c["name"]: c["value"] for c in frames[1]["columns"]}
    changed = [k for k in new if new[k] != row[k]]
    stmts = [
        "INSERT INTO %s VALUES (%s)" % (table, ", ".join(literal(row[c["name"]]) for c in frames[0]["columns"])),
        "UPDATE %s SET %s" % (table, ", ".join("%s = %s" % (k, literal(new[k])) for k in changed)),
        "DELETE FROM %s" % table,
        "TRUNCATE %s" % table,
    ]
    async with websockets.connect(pc.url("/ws?query=*:%s" % table)) as ws:
        got = []
        for s in stmts:
            h.sql(s)
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 15), object_pairs_hook=dict))
    for want, real in zip(frames, got):
        assert masked(want) == masked(real), "README shows\n  %s\npgcdc sends\n  %s" % (
            json.dumps(want), json.dumps(real))
        assert list(real)[0] == "pos", "pos is not first: %s" % list(real)


def literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'%s'" % str(v).replace("'", "''")


async def t_messages_js(h, pc):
    """README's JavaScript that keeps rows by id, run in Node against pgcdc."""
    js = [c for section, lang, c, _ in blocks() if section == "Messages" and lang == "js"]
    assert len(js) == 1, "README's Messages section has %d js blocks, want 1" % len(js)
    frames, create = message_examples()
    table = frames[0]["table"]
    h.sql("DROP TABLE IF EXISTS %s; %s; ALTER TABLE %s REPLICA IDENTITY FULL" % (table, create, table))
    prog = ("const ws = new WebSocket(%s);\n%s\n"
            "const handle = ws.onmessage;\n"
            "ws.onmessage = (e) => { handle(e); console.log(JSON.stringify([...rows.values()])); };\n"
            "ws.onopen = () => console.log('open');\n"
            % (json.dumps(pc.url("/ws?query=*:%s" % table)), js[0]))
    d = tempfile.mkdtemp(prefix="readme-js-")
    path = os.path.join(d, "rows.mjs")
    with open(path, "w") as f:
        f.write(prog)
    proc = await asyncio.create_subprocess_exec(
        "node", "--no-warnings", "--experimental-websocket", path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async def line():
            b = await asyncio.wait_for(proc.stdout.readline(), 15)
            if not b:
                err = (await proc.stderr.read()).decode(errors="replace")
                raise AssertionError("node ended: %s" % err.strip()[-800:])
            return b.decode().strip()
        assert await line() == "open"
        steps = [
            ("INSERT INTO %s VALUES (1, 'new', 25.00), (2, 'new', 5.00)" % table, None),
            ("UPDATE %s SET status = 'paid' WHERE id = 1" % table, None),
            ("UPDATE %s SET id = 3 WHERE id = 2" % table, None),
            ("DELETE FROM %s WHERE id = 1" % table, None),
        ]
        for s, _ in steps:
            h.sql(s)
        seen = None
        for _ in range(5):   # two inserts, two updates, one delete
            seen = json.loads(await line())
        want = [{"id": 3, "status": "new", "total": 5.0}]
        assert seen == want, "after I, U, U (key change), D the rows are %s, want %s" % (seen, want)
        h.sql("TRUNCATE %s" % table)
        seen = json.loads(await line())
        assert seen == [], "after T the rows are %s" % seen
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        shutil.rmtree(d, ignore_errors=True)


async def t_role_sql(h):
    """README's role and GRANT, run as written: pgcdc logged in as that role
    streams, takes snapshots of the tables the GRANT covered, and refuses
    (403, before the upgrade) a snapshot of a table created after it, while
    still streaming that table's changes."""
    import websockets
    code = [c for section, lang, c, _ in blocks() if section == "Setting up PostgreSQL" and lang == "sql"]
    assert len(code) == 1, "README's PostgreSQL set-up has %d sql blocks, want 1" % len(code)
    m = re.search(r"CREATE ROLE (\w+) .*?PASSWORD '([^']*)'", code[0])
    assert m, "README's sql block creates no role with a password"
    role, password = m.group(1), m.group(2)
    h.sql("DROP TABLE IF EXISTS granted_t, later_t; CREATE TABLE granted_t (id int PRIMARY KEY, v text); "
          "INSERT INTO granted_t VALUES (1, 'a'), (2, 'b')")
    h.sql(code[0])
    h.sql("CREATE TABLE later_t (id int PRIMARY KEY, v text)")
    pc = h.Pgcdc({"postgres": {"conninfo": "host=%s port=%s user=%s password=%s dbname=%s" % (
        h.PGHOST, h.PGPORT, role, password, h.PGDATABASE)}})
    try:
        pc.start()
        async with websockets.connect(pc.url("/ws?query=*:granted_t&snapshot=1")) as ws:
            got = [json.loads(await asyncio.wait_for(ws.recv(), 15)) for _ in range(3)]
        assert [m["action"] for m in got] == ["S", "S", "E"], got
        st, head = request(pc.port, "/ws?query=*:later_t&snapshot=1")
        assert st == 403, "a snapshot of a table created after the GRANT: %d %s" % (st, head[-200:])
        async with websockets.connect(pc.url("/ws?query=*:later_t")) as ws:
            h.sql("INSERT INTO later_t VALUES (7, 'x')")
            m = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert m["action"] == "I" and m["columns"][0]["value"] == 7, m
    finally:
        pc.stop()


def ident(name):
    return '"%s"' % name.replace('"', '""')


def read_name(s, stop):
    """A possibly double-quoted name up to stop: (name, rest)."""
    if s.startswith('"'):
        i, out = 1, ""
        while i < len(s):
            if s[i] == '"':
                if s[i + 1:i + 2] == '"':
                    out += '"'
                    i += 2
                    continue
                return out, s[i + 1:]
            out += s[i]
            i += 1
        raise AssertionError("unterminated quote in %r" % s)
    k = s.find(stop) if stop else -1
    return (s, "") if k < 0 else (s[:k], s[k:])


def tables_of(url):
    """(schema, table, columns) an example URL needs, parsed as pgcdc does
    (docs/protocol.md, Subscriptions): columns from its filters and its
    columns= list."""
    params = urllib.parse.parse_qsl(url.split("?", 1)[1], keep_blank_values=True)
    query = next((v for k, v in params if k == "query"), None)
    assert query is not None and ":" in query, "%s has no query" % url
    rest = query.split(":", 1)[1]
    tstr, colon, filt = rest.partition(":")
    first, after = read_name(tstr, ".")
    if after.startswith("."):
        schema, (table, _) = first, read_name(after[1:], None)
    else:
        schema, table = "public", first
    filters = ([filt] if colon else []) + [v for k, v in params if k == "filter"]
    cols = {read_name(f, ".")[0] for f in filters}
    for k, v in params:
        if k == "columns":
            cols.update(c for c in v.split(",") if c)
    cols.discard("id")
    return schema, table, sorted(cols)


def request(port, path):
    """(status, head) of the answer to path: a WebSocket upgrade for /ws, a
    plain GET for /sse (the stream's first bytes)."""
    import socket
    req = "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (path, port)
    if path.startswith("/ws"):
        req += ("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall((req + "\r\n").encode("latin-1"))
    data = b""
    deadline = time.time() + 10
    try:
        while b"\r\n\r\n" not in data and time.time() < deadline:
            b = s.recv(4096)
            if not b:
                break
            data += b
        if not data.startswith(b"HTTP/1.1 101") and not data.startswith(b"HTTP/1.1 200"):
            s.settimeout(2)
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
    except OSError:
        pass
    s.close()
    head = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = head.split(" ")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), data.decode("latin-1")[:400]


def t_example_pairs():
    rows = example_rows(readme_text())
    assert rows, "README has no table of readable and encoded example URLs"
    for readable, sent in rows:
        assert sendable(sent), "the encoded form %s still holds a byte that must be percent-encoded" % sent
        dec = urllib.parse.parse_qsl(sent.split("?", 1)[1], keep_blank_values=True)
        raw = [tuple(p.split("=", 1)) for p in readable.split("?", 1)[1].split("&")]
        assert readable.split("?")[0] == sent.split("?")[0] and dec == raw, \
            "%s decodes to %s, not to the readable %s" % (sent, dec, raw)


def t_example_urls(h, pc):
    urls = []
    for u in inline_urls(readme_text()):
        if not placeholder(u) and sendable(u) and u not in urls:
            urls.append(u)
    assert len(urls) >= 5, "only %d example URLs found in README" % len(urls)
    made = set()
    for u in urls:
        schema, table, cols = tables_of(u)
        if (schema, table) not in made:
            h.sql("CREATE SCHEMA IF NOT EXISTS %s; DROP TABLE IF EXISTS %s.%s; CREATE TABLE %s.%s (id int PRIMARY KEY)"
                  % (ident(schema), ident(schema), ident(table), ident(schema), ident(table)))
            made.add((schema, table))
        for c in cols:
            h.sql("ALTER TABLE %s.%s ADD COLUMN IF NOT EXISTS %s text" % (ident(schema), ident(table), ident(c)))
    bad = []
    for u in urls:
        st, head = request(pc.port, u)
        want = 101 if u.startswith("/ws") else 200
        if st != want:
            bad.append("%s -> %d %s" % (u, st, head.split("\r\n\r\n", 1)[-1].strip()[:200]))
    assert not bad, "README's example URLs refused:\n  " + "\n  ".join(bad)
    print("# %d example URLs accepted" % len(urls))


def table_rows(text, heading_re):
    """First cells and second cells of the markdown table rows in the
    sections whose heading matches heading_re."""
    rows, on = [], False
    for line in strip_fences(text).split("\n"):
        if re.match(r"^#{1,6} ", line):
            on = bool(re.match(heading_re, line.lstrip("#").strip()))
            continue
        if on and line.startswith("|") and not re.match(r"^\|[-| :]+\|$", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            rows.append(cells)
    return rows


def documented_metrics(path, heading_re):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = {}
    for cells in table_rows(text, heading_re):
        m = re.match(r"^`(pgcdc_\w+)", cells[0])
        if m and len(cells) >= 3:
            out[m.group(1)] = cells[1]
    return out


def t_metrics_documented(h, pc):
    st, body = h.http_get(pc.port, "/metrics")
    assert st == 200, st
    real = dict(re.findall(r"^# TYPE (\w+) (\w+)$", body, re.M))
    assert real, "no # TYPE lines in /metrics"
    for path, heading in ((PROTOCOL, r"^Metrics$"), (README, r"^HTTP endpoints")):
        doc = documented_metrics(path, heading)
        name = os.path.relpath(path, ROOT)
        missing = sorted(set(real) - set(doc))
        extra = sorted(set(doc) - set(real))
        wrong = sorted(m for m in set(real) & set(doc) if real[m] != doc[m])
        assert not missing and not extra and not wrong, \
            "%s's metrics table: not documented %s; documented but not served %s; wrong type %s" % (
                name, missing, extra, ["%s is a %s" % (m, real[m]) for m in wrong])


def code_keys():
    """(section, key) pairs of the configuration tables in the C sources."""
    keys = set()
    for f in os.listdir(ROOT):
        if f.endswith(".c"):
            with open(os.path.join(ROOT, f), encoding="utf-8", errors="replace") as fh:
                keys.update(re.findall(r'\{\s*"(postgres|server)",\s*"(\w+)"', fh.read()))
    return keys


def t_config_keys_documented(pgcdc):
    with open(PROTOCOL, encoding="utf-8") as f:
        text = f.read()
    doc = set()
    for sec in ("postgres", "server"):
        for cells in table_rows(text, r"^\[%s\]$" % sec):
            for k in re.findall(r"`(\w+)`", cells[0]):
                doc.add((sec, k))
    code = code_keys()
    assert code, "no configuration table found in the sources"
    missing = sorted("[%s] %s" % k for k in code - doc)
    assert not missing, "docs/protocol.md, Configuration does not document %s" % missing
    # README's table (section, key, default, meaning) and the example file
    readme = set()
    for cells in table_rows(readme_text(), r"^Configuration$"):
        if len(cells) >= 4 and cells[0] in ("postgres", "server"):
            readme.update((cells[0], k) for k in re.findall(r"`(\w+)`", cells[1]))
    missing = sorted("[%s] %s" % k for k in code - readme)
    assert not missing, "README's configuration table does not list %s" % missing
    example, sec = set(), None
    with open(os.path.join(ROOT, "pgcdc.example.config"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^\[(\w+)\]", line)
            if m:
                sec = m.group(1)
            m = re.match(r"^[;#]?\s*(\w+)\s*=", line)
            if m and sec:
                example.add((sec, m.group(1)))
    missing = sorted("[%s] %s" % k for k in code - example)
    assert not missing, "pgcdc.example.config does not show %s" % missing
    # and every documented key is one pgcdc knows
    tmp = tempfile.mkdtemp(prefix="readme-keys-")
    try:
        unknown = []
        for sec, key in sorted(doc):
            path = os.path.join(tmp, "k.config")
            with open(path, "w") as f:
                f.write("[postgres]\nconninfo = dbname=app\n" if sec != "postgres" or key != "conninfo" else "")
                f.write("[%s]\n%s = ?\n" % (sec, key))
            p = subprocess.run([pgcdc, "-t", "-c", path], capture_output=True, text=True, timeout=10)
            if "unknown key" in p.stderr + p.stdout:
                unknown.append("[%s] %s" % (sec, key))
        assert not unknown, "docs/protocol.md documents keys pgcdc does not know: %s" % unknown
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def t_protocol_examples():
    """docs/protocol.md shows the same example messages as README."""
    readme, _ = message_examples()
    with open(PROTOCOL, encoding="utf-8") as f:
        text = f.read()
    theirs = [json.loads(line, object_pairs_hook=dict) for section, lang, code, _ in blocks(text)
              if section == "Examples" and lang == "json" for line in code.split("\n") if line.strip()]
    assert theirs == readme, "docs/protocol.md, Examples differs from README's messages"


def protocol_headings():
    with open(PROTOCOL, encoding="utf-8") as f:
        return [line.lstrip("#").strip() for line in strip_fences(f.read()).split("\n")
                if re.match(r"^#{1,6} ", line)]


def cited_names(text):
    """The section names a source file cites as "docs/protocol.md, Name",
    "docs/protocol.md (Name, ...)" or "docs/protocol.md's Name", with
    comment continuations joined."""
    text = re.sub(r"\n[ \t]*(?:\*(?!/)|//|#)?[ \t]*", " ", text)
    out = []
    for m in re.finditer(r"docs/protocol\.md(,| \(|'s) *([^)\n]{0,80})", text):
        kind, rest = m.group(1), m.group(2)
        items = [rest] if kind in (",", "'s") else rest.split(",")
        if kind == ",":
            rest = re.split(r"[;:.)]", rest)[0]
            items = [rest]
        for it in items[:1] if kind in (",", "'s") else items:
            it = it.strip().strip('"').strip()
            if it:
                out.append(it)
    return out


def anchors(text):
    """GitHub's anchors for the headings of a markdown text."""
    out = set()
    for line in strip_fences(text).split("\n"):
        if re.match(r"^#{1,6} ", line):
            h = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower())
            out.add(h.replace(" ", "-"))
    return out


def t_links():
    """Links inside README and docs/protocol.md, and between them, lead to a
    heading that exists; links to repository files lead to a file."""
    with open(PROTOCOL, encoding="utf-8") as f:
        proto = f.read()
    readme = readme_text()
    bad = []
    for name, text, here, own in (("README.md", readme, ROOT, anchors(readme)),
                                  ("docs/protocol.md", proto, os.path.dirname(PROTOCOL), anchors(proto))):
        for target in re.findall(r"\]\(([^)\s]+)\)", strip_fences(text)):
            if re.match(r"^[a-z]+:", target):
                continue   # http:, https:, mailto:
            path, _, frag = target.partition("#")
            if not path:
                ok = frag in own
            else:
                full = os.path.normpath(os.path.join(here, path))
                ok = os.path.exists(full)
                if ok and frag:
                    with open(full, encoding="utf-8") as f:
                        ok = frag in anchors(f.read())
            if not ok:
                bad.append("%s: %s" % (name, target))
    assert not bad, "links that lead nowhere:\n  " + "\n  ".join(bad)


def t_citations():
    """Every citation of docs/protocol.md in the sources names one of its
    sections (sections are named, never numbered), and nothing cites the
    contract under any other name."""
    heads = [h.lower() for h in protocol_headings()]
    files = subprocess.run(["git", "-C", ROOT, "ls-files"], capture_output=True, text=True).stdout.split()
    bad = []
    other = re.compile("SPEC" + r"(\.md| section| §)")
    for f in files:
        if f.startswith("docs/") or f == "tests/readme.py" or not f.endswith((".c", ".h", ".py", ".sh", ".js", ".mjs", ".html", "Makefile")):
            continue
        try:
            with open(os.path.join(ROOT, f), encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError):
            continue
        if other.search(text):
            bad.append("%s cites the contract by another name" % f)
        for name in cited_names(text):
            low = name.lower()
            if not any(low == h or (low.startswith(h) and not low[len(h)].isalnum()) for h in heads):
                bad.append("%s: %r" % (f, name[:50]))
    assert not bad, "citations that name no section of docs/protocol.md:\n  " + "\n  ".join(bad)


# ---- main -----------------------------------------------------------------------

def main():
    if "--pgconf" in sys.argv[1:]:
        sys.stdout.write(pgconf_block())
        return
    only = [a for a in sys.argv[1:] if not a.startswith("-")]
    sys.path.insert(0, HERE)
    pgcdc = os.environ.get("PGCDC", os.path.join(ROOT, "pgcdc"))

    def want(name):
        return not only or any(a in name for a in only)

    # Tests of the text alone, reported through the harness's counters.
    import harness
    for name, fn in (
            ("readme: the nginx block is dist/nginx.conf", t_nginx_is_dist),
            ("readme: the grant and JWT minting snippets are tests/grant_mint.*, tests/jwt_mint.*", t_mint_snippets),
            ("readme: the systemd steps are dist/pgcdc.service's", t_systemd_steps),
            ("readme: every JavaScript, Python and shell block parses", t_snippets_parse),
            ("readme: each readable example URL decodes like its encoded form", t_example_pairs),
            ("readme: every configuration block passes pgcdc -t", lambda: t_config_blocks(pgcdc)),
            ("readme, protocol: every configuration key is in both tables and the example file, and known", lambda: t_config_keys_documented(pgcdc)),
            ("protocol: its example messages are README's", t_protocol_examples),
            ("protocol: every citation of it in the sources names one of its sections", t_citations),
            ("readme, protocol: every link leads to a heading or file that exists", t_links)):
        if want(name):
            harness.run_test(name, fn)

    # A cluster from README's postgresql.conf block alone, pgcdc on it.
    tmp = tempfile.mkdtemp(prefix="readme-", dir=os.environ.get("TMPDIR"))
    base = pc = None
    name = "readme: the postgresql.conf block starts PostgreSQL and pgcdc streams from it"
    try:
        conf = pgconf_block()
        if has_plugin_setting():   # as README says: uncomment the line in such builds
            conf = re.sub(r"^#\s*(output_plugin_libraries\s*=)", r"\1", conf, flags=re.M)
        env, base = start_cluster(conf, tmp)
        os.environ.update(env)
        for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
            setattr(harness, k, env[k])
        pc = harness.Pgcdc({"postgres": {"conninfo": harness.conninfo()}})
        pc.start()
        harness.report(name, True)
    except Exception as e:  # noqa: BLE001
        harness.report(name, False, "%s: %s" % (type(e).__name__, e))
        if pc:
            pc.stop()
        stop_cluster(base)
        shutil.rmtree(tmp, ignore_errors=True)
        harness.finish()
    try:
        h = harness
        for tname, fn in (
                ("readme: the example messages are what pgcdc sends", lambda: t_messages(h, pc)),
                ("readme: the JavaScript for I, U, D and T keeps the right rows", lambda: t_messages_js(h, pc)),
                ("readme: every example URL is accepted as printed", lambda: t_example_urls(h, pc)),
                ("readme: the role and GRANT stream, and snapshot exactly the tables granted",
                 lambda: t_role_sql(h)),
                ("readme, protocol: the metrics tables list exactly the metrics served, with their types",
                 lambda: t_metrics_documented(h, pc))):
            if not want(tname):
                continue
            if "JavaScript" in tname and not shutil.which("node"):
                harness.report(tname, False, "node is not installed")
                continue
            harness.run_test(tname, fn)
    finally:
        pc.stop()
        stop_cluster(base)
        shutil.rmtree(tmp, ignore_errors=True)
    harness.finish()


if __name__ == "__main__":
    main()
