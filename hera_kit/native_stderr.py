"""Native libraries' writes to stderr, as the service's own JSON log lines.

Rust code (delta-rs, its object store) writes panics straight to file descriptor 2, several
lines each with a backtrace: on a full disk the archiver's log showed "thread
'tokio-rt-worker' panicked at .../buffered.rs:369:41: / Already shut down / stack
backtrace: / note: ...", interleaved with the JSON lines a log collector parses. Here fd 2
becomes a pipe that a thread reads: a panic becomes one warning line (where, and its
message), any other native line one warning line each. Python's own output (logging, the
CLI's one-line errors) keeps the original stderr, so nothing of ours waits on the thread,
not even at a hard exit.
"""

from __future__ import annotations

import logging
import os
import re
import select
import sys
import threading

_PANIC = re.compile(r"^thread '([^']*)'(?: \(\d+\))? panicked at (.*?):?$")
_NOISE = re.compile(r"^(stack backtrace:|note: |\s+\d+: |\s+at )")


def route_native_stderr(log: logging.Logger) -> bool:
    """Send fd 2's native writes through ``log``; False (nothing changed) when stderr is not
    the process's fd 2 (a test runner's capture)."""
    try:
        if sys.stderr is None or sys.stderr.fileno() != 2:
            return False
    except (AttributeError, OSError, ValueError):
        return False
    sys.stderr.flush()
    saved = os.dup(2)
    sys.stderr = open(saved, "w", buffering=1, encoding="utf-8",  # noqa: SIM115 - lives on
                      errors="backslashreplace", closefd=True)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    threading.Thread(target=_pump, args=(read_end, log), name="native-stderr",
                     daemon=True).start()
    return True


class _Panic:
    def __init__(self, thread: str, where: str) -> None:
        self.thread, self.where, self.message = thread, where, ""


def _emit(log: logging.Logger, panic: _Panic) -> None:
    log.warning("native code panicked (thread %s at %s): %s", panic.thread, panic.where,
                panic.message or "no message")


def _pump(fd: int, log: logging.Logger) -> None:
    panic: _Panic | None = None
    pending = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:  # quiet: a panic whose note never came is complete
            if panic is not None:
                _emit(log, panic)
                panic = None
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            panic = _line(log, panic, raw.decode("utf-8", "backslashreplace").rstrip())
    if panic is not None:
        _emit(log, panic)


def _line(log: logging.Logger, panic: _Panic | None, line: str) -> _Panic | None:
    """One native line: the panic in progress after it (None when none is)."""
    started = _PANIC.match(line)
    if started:
        if panic is not None:
            _emit(log, panic)
        return _Panic(started.group(1), started.group(2))
    if panic is not None and line.startswith("note: "):
        _emit(log, panic)
        return None
    if not line.strip() or _NOISE.match(line):
        return panic
    if panic is not None and not panic.message:
        panic.message = line.strip()
    else:
        log.warning("native library: %s", line.strip())
    return panic
