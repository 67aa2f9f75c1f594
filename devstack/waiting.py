"""Waiting on a condition instead of sleeping: the one helper of the local stack, the demo
and the tests (each names the error a timeout raises)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float = 30.0,
               what: str = "condition", interval: float = 0.05,
               error: Callable[[str], Exception] = TimeoutError) -> float:
    """Poll ``condition`` until it is true and return the seconds it took; ``error(message)``
    naming ``what`` is raised after ``timeout`` s."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - t0
