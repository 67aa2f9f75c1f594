"""Stopping a child process of the local stack: SIGTERM, then SIGKILL if it does not go."""

from __future__ import annotations

import contextlib
import subprocess


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM and wait ``timeout`` s; SIGKILL after that. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode
