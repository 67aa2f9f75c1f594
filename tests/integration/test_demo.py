"""The demo is the acceptance test of the whole product: `make demo` end to end.

It starts its own throw-away PostgreSQL and broker (not the session fixtures): what is under
test is exactly what a new user runs, including that it leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# A loaded CI machine may be slower than the demo's one-second promise to a person.
DEMO = [sys.executable, "-m", "devstack.demo", "--max-alert-latency", "5"]


def _demo_workdir(output: str) -> Path:
    m = re.search(r"work dir\s+(\S+)", output)
    assert m is not None, output[-2000:]
    return Path(m.group(1))


def _stack_ports(output: str) -> list[int]:
    """The ports of the demo's PostgreSQL and broker, as it printed them."""
    pg = re.search(r"postgresql://\S+@127\.0\.0\.1:(\d+)/", output)
    broker = re.search(r"broker (?:\S+ )?127\.0\.0\.1:(\d+)", output)
    assert pg is not None and broker is not None, output[:2000]
    return [int(pg.group(1)), int(broker.group(1))]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _left_behind(output: str) -> list[str]:
    left = [f"port {p} still listening" for p in _stack_ports(output) if _listening(p)]
    if _demo_workdir(output).exists():
        left.append(f"{_demo_workdir(output)} still exists")
    return left


def test_the_demo_verifies_every_step_and_leaves_nothing_behind() -> None:
    res = subprocess.run(DEMO, capture_output=True, text=True, timeout=170,
                         env={**os.environ, "COLUMNS": "150"}, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "all 6 steps verified" in out
    for claim in ("blocked (HG002)", "blocked (HG003)", "MASS_RELATIONSHIP_DELETION",
                  "USER_ORPHANED", "TABLE_TRUNCATED", "guard health: HEALTHY",
                  "re-inserted by replay",
                  # the local stack gives guard install what production gets: pg_cron jobs
                  "scheduled with pg_cron in database postgres"):
        assert claim in out, claim
    assert not _left_behind(out)


def test_the_demo_cleans_up_when_interrupted() -> None:
    proc = subprocess.Popen(DEMO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "150"})
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 120
    # Interrupt once capture, archive and detect are running (the most to clean up).
    while "capture took its snapshot" not in seen:
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, seen[-3000:]
        seen += line
    children = _children(proc.pid)
    assert children, "the demo runs its commands as child processes"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    seen += rest
    assert proc.returncode != 0
    assert "interrupted: cleaning up" in seen
    assert not _left_behind(seen)
    assert not [pid for pid in children if _alive(pid)], seen[-3000:]
