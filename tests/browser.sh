#!/bin/sh
# browser.sh -- end-to-end checks in a real browser (headless Chromium).
# Against the cluster named by PGHOST/PGPORT/PGUSER (as test.sh leaves
# them): the demo page at / with nothing typed shows the orders table (a
# scratch database made like web/demo.sh's) equal to the database, over
# WebSocket and over SSE, after changes made with psql (screenshots saved);
# demo_page = false turns GET / into a 404; browser_live.mjs checks a page's
# own EventSource across a pgcdc restart and pgcdc.js live() against
# SELECT.  Installs Chromium (apt) and playwright-core (npm, into
# tests/node_modules) when they are missing.
# Env: PGCDC (default ./pgcdc), ARTIFACTS_DIR (default /tmp/pgcdc-artifacts;
# the screenshots go to demo-ws.png and demo-sse.png there).  Prints TAP-like
# ok / not ok lines and a "N passed, N failed" summary; exits non-zero on
# any failure.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
PGCDC=${PGCDC:-$root/pgcdc}
case $PGCDC in /*) ;; *) PGCDC=$root/${PGCDC#./} ;; esac
: "${PGHOST:?PGHOST must name the test cluster}" "${PGPORT:?}" "${PGUSER:=postgres}"
: "${PGDATABASE:=postgres}"
export PGHOST PGPORT PGUSER PGDATABASE
ARTIFACTS_DIR=${ARTIFACTS_DIR:-/tmp/pgcdc-artifacts}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export CHROMIUM

passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
notok() { echo "not ok - $1: $2"; failed=$((failed + 1)); }
finish() {
	echo "browser.sh: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit $?
}

# ---- tools ------------------------------------------------------------------
need_apt() {
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 ||
	{ apt-get update -q >/dev/null 2>&1 &&
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; }
}
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || need_apt nodejs npm
[ -x "$CHROMIUM" ] || need_apt chromium
command -v curl >/dev/null 2>&1 || need_apt curl
if [ ! -d "$here/node_modules/playwright-core" ]; then
	(cd "$here" && npm install --no-audit --no-fund --no-package-lock --silent >/dev/null 2>&1)
fi
for t in node psql curl "$CHROMIUM" "$PGCDC"; do
	if ! command -v "$t" >/dev/null 2>&1; then
		notok "demo page shows a live insert in Chromium" "$t is missing"
		finish
	fi
done
if [ ! -d "$here/node_modules/playwright-core" ]; then
	notok "demo page shows a live insert in Chromium" "npm install of playwright-core failed"
	finish
fi

# ---- pgcdc ------------------------------------------------------------------
tmp=$(mktemp -d /tmp/pgcdc-browser-XXXXXX)
table=demo_browser_$$
demodb=browser_demo_$$
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	for p in $pids; do
		i=0
		while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		kill -9 "$p" 2>/dev/null
	done
	psql -X -q -c "DROP TABLE IF EXISTS $table" >/dev/null 2>&1
	psql -X -q -c "DROP DATABASE IF EXISTS $demodb" >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_pgcdc NAME EXTRA_SERVER_LINES [DATABASE] -> sets $port, appends to $pids
start_pgcdc() {
	port=$(free_port)
	cat >"$tmp/$1.config" <<CFG
[postgres]
conninfo = host=$PGHOST port=$PGPORT user=$PGUSER dbname=${3:-$PGDATABASE}
slot = browser_$$_$1
status_interval = 1
reconnect_max = 2
[server]
listen = 127.0.0.1:$port
$2
CFG
	"$PGCDC" -c "$tmp/$1.config" -v >"$tmp/$1.log" 2>&1 &
	pids="$pids $!"
	pid=$!
	i=0
	while [ $i -lt 200 ]; do
		kill -0 "$pid" 2>/dev/null || return 1
		curl -s -m 2 "http://127.0.0.1:$port/health" 2>/dev/null |
			grep -q '"replication" *: *"streaming"' && return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
logtail() { tail -n 5 "$tmp/$1.log" 2>/dev/null | tr '\n' '|'; }

mkdir -p "$ARTIFACTS_DIR"
# README's first line: web/demo.sh, then open http://127.0.0.1:8080/.  The
# same here: a database with demo.sh's orders table and a few rows, and the
# page at / with nothing typed must show exactly the table's rows, live.
demodb=browser_demo_$$
if ! { psql -X -q -v ON_ERROR_STOP=1 -c "CREATE TABLE $table (id int PRIMARY KEY, name text)" &&
       psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $demodb" &&
       psql -X -q -v ON_ERROR_STOP=1 -d "$demodb" -c "
	CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL,
	                     status text NOT NULL DEFAULT 'new', total numeric(10,2) NOT NULL,
	                     created_at timestamptz NOT NULL DEFAULT now());
	ALTER TABLE orders REPLICA IDENTITY FULL;
	INSERT INTO orders (customer, total) VALUES ('ada', 12.5), ('grace', 7), ('linus', 300.25);
	UPDATE orders SET status = 'paid' WHERE customer = 'grace'"; } >"$tmp/psql.out" 2>&1; then
	notok "demo page at / shows the orders table live in Chromium" "could not create it: $(head -c 300 "$tmp/psql.out")"
	finish
fi

if ! start_pgcdc on "" "$demodb"; then
	notok "demo page at / shows the orders table live in Chromium" "pgcdc did not start streaming: $(logtail on)"
else
	# GET / serves the page itself, as HTML.
	code=$(curl -s -m 5 -o "$tmp/page.html" -w '%{http_code} %{content_type}' "http://127.0.0.1:$port/")
	case $code in
	"200 text/html"*)
		if grep -q 'id="state"' "$tmp/page.html"; then ok "GET / serves the demo page (demo_page = true)"
		else notok "GET / serves the demo page (demo_page = true)" "body is not the demo page"; fi ;;
	*) notok "GET / serves the demo page (demo_page = true)" "got '$code'" ;;
	esac

	value="hello from psql $$"
	for transport in ws sse; do
		url="http://127.0.0.1:$port/"
		# the rows there are come from the snapshot; then changes (over SSE
		# a truncate first)
		change="INSERT INTO orders (customer, total) VALUES ('$value $transport', 1.5);
		        UPDATE orders SET status = 'paid' WHERE customer = 'ada'; DELETE FROM orders WHERE customer = 'linus'"
		if [ $transport = sse ]; then
			url="$url?transport=sse"
			change="TRUNCATE orders; INSERT INTO orders (customer, total) VALUES ('ada', 1), ('linus', 2); $change"
		fi
		out=$(cd "$here" && DEMO_URL="$url" DEMO_DB="$demodb" DEMO_TRANSPORT=$transport \
			DEMO_NAME="demo page at / shows the orders table live in Chromium ($transport)" \
			DEMO_SQL="$change" \
			DEMO_EXPECT="$value $transport" DEMO_SHOT="$ARTIFACTS_DIR/demo-$transport.png" \
			DEMO_CHECK="SELECT id, customer, status, total::float8 FROM orders ORDER BY id" \
			timeout -k 5 100 node browser.mjs 2>&1)
		rc=$?
		line=$(printf '%s\n' "$out" | grep -E '^(not )?ok - ' | head -n 1)
		if [ $rc -eq 0 ] && [ "${line#ok - }" != "$line" ]; then
			ok "${line#ok - }"
		elif [ -n "$line" ]; then
			line=${line#not ok - }
			notok "${line%%: *}" "${line#*: } (pgcdc log: $(logtail on))"
			printf '%s\n' "$out" | grep '^#'
		else
			notok "demo page at / shows the orders table live in Chromium ($transport)" \
				"browser.mjs exited $rc: $(printf '%s' "$out" | tail -n 3 | tr '\n' '|')"
		fi
	done
fi

# SSE and pgcdc.js in Chromium: browser_live.mjs starts its own pgcdc.
for scenario in eventsource refusals live-ws live-sse; do
	out=$(cd "$here" && TMPDIR=$tmp timeout -k 5 170 node browser_live.mjs $scenario 2>&1)
	rc=$?
	line=$(printf '%s\n' "$out" | grep -E '^(not )?ok - ' | head -n 1)
	if [ $rc -eq 0 ] && [ "${line#ok - }" != "$line" ]; then
		ok "${line#ok - }"
	elif [ -n "$line" ]; then
		line=${line#not ok - }
		notok "${line%%: *}" "${line#*: }"
	else
		notok "browser_live.mjs $scenario" "exited $rc: $(printf '%s' "$out" | tail -n 3 | tr '\n' '|')"
	fi
done

if ! start_pgcdc off "demo_page = false"; then
	notok "GET / is 404 when demo_page = false" "pgcdc did not start: $(logtail off)"
else
	code=$(curl -s -m 5 -o "$tmp/off.txt" -w '%{http_code}' "http://127.0.0.1:$port/")
	ping=$(curl -s -m 5 "http://127.0.0.1:$port/ping")
	if [ "$code" = 404 ] && [ "$ping" = pong ]; then
		ok "GET / is 404 when demo_page = false"
	else
		notok "GET / is 404 when demo_page = false" "GET / gave $code, /ping gave '$ping'"
	fi
fi

# Refusals a page can read: close 4000 + status on pgcdc's own origin, a
# plain refusal for a page on another origin.
rtoken="browser-token-$$-0123456789"
if ! start_pgcdc refusals "token = $rtoken
max_clients = 1
[postgres]
tables = public.$table"; then
	notok "Chromium reads refusals as close 4000 + status" "pgcdc did not start: $(logtail refusals)"
else
	out=$(cd "$here" && PGCDC_PORT=$port TOKEN=$rtoken TABLE=$table \
		timeout -k 5 130 node browser_refusals.mjs 2>&1)
	rc=$?
	n=0
	while IFS= read -r line; do
		case $line in
		"ok - "*) ok "${line#ok - }"; n=$((n + 1)) ;;
		"not ok - "*) line=${line#not ok - }; notok "${line%%: *}" "${line#*: } (pgcdc log: $(logtail refusals))"; n=$((n + 1)) ;;
		esac
	done <<EOF
$out
EOF
	if [ $n = 0 ]; then
		notok "Chromium reads refusals as close 4000 + status" \
			"browser_refusals.mjs exited $rc: $(printf '%s' "$out" | tail -n 3 | tr '\n' '|')"
	fi
fi
finish
