"""capture's process-level GC tuning: a setting of the process (the CLI and the benchmarks
apply it once streaming starts), not of the library, which leaves the process alone."""

from __future__ import annotations

import gc

# Allocations between young-generation collections (CPython's default: 700). See tune_gc.
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for capture's allocation pattern (a process
    setting: the CLI passes it as ``open_capture(..., on_streaming=tune_gc)``).

    Every record in flight holds a few objects (the client's future, its callbacks, our
    delivery closure) until the broker acknowledges it, so they survive the young
    collections, reach the oldest generation and make CPython run full collections over the
    whole heap (modules, clients, pydantic) every few thousand records: measured, a third of
    kafka-python's producing time. What exists once streaming starts lives as long as the
    process: ``gc.freeze`` takes it out of every collection; the higher thresholds collect
    the (rare) cyclic garbage of the hot path in fewer, equally cheap passes. Reference
    counting still frees everything else at once, so memory stays as bounded as before.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
