"""suite_accept.py -- end-to-end checks of docs/protocol.md items found
missing or wrong when the whole server was exercised as a user would.

Run by test.sh with /usr/bin/python3 (PGHOST/PGPORT/PGUSER name the
database, PGCDC the binary).  Arguments, if any, select the tests whose
name contains one of them.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Pgcdc, run_selected, wait_until  # noqa: E402


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


TESTS = [
    ("accept: a temporary slot held by another instance is named in one log line", t_temporary_slot_in_use),
]

if __name__ == "__main__":
    run_selected(TESTS)
