#!/bin/sh
# live_burst.sh TABLE PHASE -- changes to TABLE (id int PRIMARY KEY, v text,
# n int, big text with STORAGE EXTERNAL) for the live() tests in
# suite_sse.py and browser_live.mjs, from several psql sessions at once
# (on disjoint rows, so they never deadlock).
#   setup: (re)creates the table with 40 rows, each with a TOASTed big value
#   burst: concurrent inserts, updates that leave big unchanged (so wal2json
#          leaves it out), key changes, deletes; then waits for all of them
#   truncate: a truncate and a few rows after it in one transaction
# Uses PGHOST/PGPORT/PGUSER/PGDATABASE.  Exits non-zero when psql fails.
set -eu
t=$1
q() { psql -X -q -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" -c "$1" >/dev/null; }
big="(SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 100) g)"
case $2 in
setup)
	q "DROP TABLE IF EXISTS $t; CREATE TABLE $t (id int PRIMARY KEY, v text, n int, big text);
	   ALTER TABLE $t ALTER COLUMN big SET STORAGE EXTERNAL;
	   INSERT INTO $t SELECT i, 'row ' || i, 0, $big || i FROM generate_series(1, 40) i" ;;
burst)
	pids=""
	q "INSERT INTO $t SELECT i, 'new ' || i, 0, $big || i FROM generate_series(41, 60) i" & pids="$pids $!"
	for k in 1 2 3; do
		q "UPDATE $t SET n = n + $k, v = v || '+' WHERE id % 3 = $((k - 1)) AND id BETWEEN 10 AND 29" &
		pids="$pids $!"
	done
	q "BEGIN; UPDATE $t SET id = id + 1000 WHERE id BETWEEN 5 AND 9; UPDATE $t SET n = -1 WHERE id = 1005; COMMIT" &
	pids="$pids $!"
	q "DELETE FROM $t WHERE id IN (2, 3, 4)" & pids="$pids $!"
	q "UPDATE $t SET big = 'small now' WHERE id = 30" & pids="$pids $!"
	rc=0
	for p in $pids; do wait "$p" || rc=1; done
	exit $rc ;;
truncate)
	q "BEGIN; TRUNCATE $t; INSERT INTO $t SELECT i, 'again ' || i, 7, $big FROM generate_series(1, 5) i;
	   UPDATE $t SET n = 8 WHERE id = 3; COMMIT" ;;
*)
	echo "live_burst.sh: unknown phase $2" >&2; exit 2 ;;
esac
