"""suite_accept.py -- end-to-end checks of docs/protocol.md items found
missing or wrong when the whole server was exercised as a user would.

Run by test.sh with /usr/bin/python3 (PGHOST/PGPORT/PGUSER name the
database, PGCDC the binary).  Arguments, if any, select the tests whose
name contains one of them.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import PGCDC, Pgcdc, run_selected, wait_until  # noqa: E402


def check_config(body):
    """Runs pgcdc -t on a configuration; returns (exit status, stderr)."""
    with tempfile.NamedTemporaryFile("w", suffix=".config", delete=False) as f:
        f.write("[postgres]\nconninfo = dbname=postgres\n" + body)
    try:
        p = subprocess.run([PGCDC, "-c", f.name, "-t"], capture_output=True, text=True, timeout=10)
        return p.returncode, p.stderr, f.name
    finally:
        os.unlink(f.name)


def t_temporary_slot_in_use():
    """Two instances with the same temporary slot: the second one says in
    one log line that the slot is held by another connection, and keeps
    retrying (the first keeps streaming)."""
    with Pgcdc() as first:
        second = Pgcdc(slot=first.slot)
        second.start(wait_streaming=False)
        try:
            wait_until(lambda: "in use by another connection" in second.logtext(), 15,
                       "no log line saying the slot is in use")
            line = [ln for ln in second.logtext().splitlines() if "in use by another connection" in ln][0]
            assert " error " in line and first.slot in line, line
            assert second.proc.poll() is None, "the second instance exited"
        finally:
            second.stop()


def t_list_values_checked():
    """allowed_origins and trusted_proxies are checked like every other
    value: an origin with a path, or a proxy that is not an IP address as
    the peer address is written, would never match, so it is a
    configuration error naming file, line and key."""
    for line, word in (("allowed_origins = https://app.example/", "https://app.example/"),
                       ("allowed_origins = app.example", "app.example"),
                       ("trusted_proxies = proxy.internal", "proxy.internal"),
                       ("trusted_proxies = 10.0.0.0/8", "10.0.0.0/8"),
                       ("trusted_proxies = ::0001", "::0001")):
        rc, err, name = check_config("[server]\n" + line + "\n")
        key = line.split()[0]
        assert rc == 1, "%s: exit %d, %r" % (line, rc, err)
        assert "%s:4:" % name in err and ('"%s"' % key) in err and word in err, "%s: %r" % (line, err)
    for line in ("allowed_origins = https://app.example:8443, null, http://[::1]:8080, *",
                 "trusted_proxies = 127.0.0.1, ::1, 10.1.2.3"):
        rc, err, _ = check_config("[server]\n" + line + "\n")
        assert rc == 0, "%s: exit %d, %r" % (line, rc, err)


TESTS = [
    ("accept: a temporary slot held by another instance is named in one log line", t_temporary_slot_in_use),
    ("accept: allowed_origins and trusted_proxies values are checked (file:line:key)", t_list_values_checked),
]

if __name__ == "__main__":
    run_selected(TESTS)
