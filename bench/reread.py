"""Online re-read of a table while other traffic streams (capture/reread.py).

One table of 250k rows (--quick: 20k), captured ``_PAIRS + 1`` times one after the other, each
time with its own slot: the initial snapshot of the table (capture start -> snapshot
acknowledged, rows/s: the ceiling), then, but for the last, a re-read of the same table
requested while another captured table takes ~5k inserts/s (the product). So each re-read is
bracketed by the snapshot right before it and the one right after it (bench.common.bracketed):
with one snapshot per re-read, the snapshots of one run moved 9k–21k rows/s while the re-reads
held 7.5k–8.3k, and 3 pairs of 1M rows did not hold between two runs (0.80, 0.64).
Figures are medians over the pairs with their
spread: the re-read's rate as a ratio of its bracketing snapshots' rate, capture's commit -> ack
p99 of the live traffic during the re-read, and capture's memory during the re-read: the
largest chunk it held (rows) and the growth of the process's resident set from the re-read's
start to its peak (capture runs in this process; the traffic thread holds one connection, so
the growth is capture's: bounded by the chunk, not the table).
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from bench.common import BenchContext, Figure, Runs, paired
from capture.gc_tuning import tune_gc
from capture.options import capture_options
from capture.reread import request_reread
from capture.service import open_capture
from capture.settings import CaptureSettings

# One 500-row chunk is ~100 kB of rows; the rest is the producer's in-flight bound
# (--max-in-flight-bytes) and allocator slack: far below the 250k-row table's ~50 MB (the
# growth measured is under 1 MB).
_RSS_BOUND_MB = 16
_PAIRS = 5
_DDL = """
CREATE TABLE big (id bigint PRIMARY KEY, org uuid, kind text, note text, n integer);
CREATE TABLE other (id bigserial PRIMARY KEY, v integer);
"""


def _traffic(dsn: str, stop: threading.Event, rate: int = 5000, tick: float = 0.02) -> None:
    per_tick = int(rate * tick)
    with psycopg.connect(dsn, autocommit=True) as conn:
        next_t = time.monotonic()
        while not stop.is_set():
            conn.execute("INSERT INTO other (v) SELECT g FROM generate_series(1, %s) g",
                         (per_tick,))
            next_t += tick
            time.sleep(max(0.0, next_t - time.monotonic()))


def _rss_mb() -> float:
    """This process's resident set (Linux /proc), MB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class _Pair:
    snapshot_rate: float  # rows/s
    reread_rate: float  # rows/s; nan when the run took only the snapshot
    p99_ms: float
    p50_ms: float
    transactions: int
    largest_chunk: int
    rss_growth_mb: float


def _pair(ctx: BenchContext, dsn: str, rows: int, chunk: int, i: int,
          done: Callable[[], None], reread: bool = True) -> _Pair:
    samples: list[tuple[float, float]] = []  # (when, commit -> ack seconds)
    slot = f"bench_reread_{i}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Capture's snapshot copies both tables: the earlier runs' traffic (~5k rows/s) would
        # make each snapshot longer than the one before (3 pairs of 1M rows: 21k rows/s for
        # the first, 9k for the next ones).
        conn.execute("TRUNCATE other")
    settings = CaptureSettings(dsn=dsn, bootstrap_servers=ctx.broker.bootstrap_servers,
                               slot=slot, topic_prefix=f"benchreread{i}",
                               tables="public.big,public.other", reread_chunk_rows=chunk)
    svc = open_capture(capture_options(settings), on_streaming=tune_gc,
                       latency_observer=lambda s: samples.append((time.monotonic(), s)))
    stop = threading.Event()
    t0 = time.monotonic()
    thread = threading.Thread(target=svc.run, args=(stop,), name="capture")
    thread.start()
    largest, peak = 0, 0.0
    try:
        if not svc.ready.wait(1800):
            raise RuntimeError("capture did not finish its snapshot in 30 minutes")
        snapshot_s = time.monotonic() - t0
        done()
        if not reread:
            return _Pair(rows / snapshot_s, float("nan"), float("nan"), float("nan"), 0, 0, 0.0)
        traffic_stop = threading.Event()
        traffic = threading.Thread(target=_traffic, args=(dsn, traffic_stop))
        traffic.start()
        try:
            time.sleep(1.0)  # traffic's latency settles before the re-read starts
            gc.collect()
            base = peak = _rss_mb()
            started = time.monotonic()
            request_reread(dsn, "public.big", "bench")
            while not any(s.finished for s in svc.rereads.states):
                if svc.rereads.chunk is not None:
                    largest = max(largest, len(svc.rereads.chunk.rows))
                peak = max(peak, _rss_mb())
                if time.monotonic() - started > 1800:
                    raise RuntimeError("the re-read did not finish in 30 minutes")
                time.sleep(0.01)
            reread_s = time.monotonic() - started
        finally:
            traffic_stop.set()
            traffic.join(30)
        done()
    finally:
        stop.set()
        thread.join(120)
        with psycopg.connect(dsn, autocommit=True) as conn:  # the next pair has its own slot
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s", (slot,))
    during = sorted(s * 1000 for when, s in samples if started <= when <= started + reread_s)
    p99 = during[min(len(during) - 1, int(len(during) * 0.99))] if during else float("nan")
    return _Pair(rows / snapshot_s, rows / reread_s, p99,
                 statistics.median(during) if during else float("nan"), len(during), largest,
                 peak - base)


def run(ctx: BenchContext) -> list[Figure]:
    rows = 20_000 if ctx.quick else 250_000
    count = 3 if ctx.quick else _PAIRS
    chunk = 500  # Debezium defaults to 1024; smaller chunks hold the stream up for less
    dsn = ctx.new_database("bench_reread")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_DDL)
        conn.execute("INSERT INTO big SELECT g, gen_random_uuid(), 'K' || (g %% 7), "
                     "md5(g::text), g FROM generate_series(1, %s) g", (rows,))
        conn.execute("ANALYZE big")
    runs: list[_Pair] = []
    with ctx.step(f"reread: {count} x (snapshot, re-read under traffic), snapshot, of "
                  f"{rows:,} rows", 2 * count + 1) as done:
        for i in range(count + 1):
            runs.append(_pair(ctx, dsn, rows, chunk, i, done, reread=i < count))
    pairs = runs[:-1]
    rates = paired([p.snapshot_rate for p in runs], [p.reread_rate for p in pairs])
    snap, reread, ratio = rates.ceiling, rates.product, rates.ratios
    p99 = Runs(tuple(p.p99_ms for p in pairs))
    growth = Runs(tuple(p.rss_growth_mb for p in pairs))
    largest = max(p.largest_chunk for p in pairs)
    how = (f"{len(pairs)} re-reads, each between two snapshots, {rows:,} rows, chunks of "
           f"{chunk}")
    return [
        ratio.figure("re-read throughput vs initial snapshot", "x", ">= 0.5x",
                     lambda v: v >= 0.5,
                     f"{how}: re-read {reread.text('{:,.0f}')} rows/s under ~5k inserts/s of "
                     f"other traffic, snapshot {snap.text('{:,.0f}')} rows/s (capture start -> "
                     "snapshot acknowledged, slot creation included)"),
        p99.figure("capture latency p99 during a re-read", "ms", "<= 500 ms",
                   lambda v: v <= 500,
                   f"{how}: transactions of 100 rows at ~5k rows/s "
                   f"({', '.join(str(p.transactions) for p in pairs)} per re-read); p50 "
                   f"{Runs(tuple(p.p50_ms for p in pairs)).text('{:.1f}')} ms"),
        Figure("re-read memory: largest chunk held", float(largest), "rows",
               f"<= chunk ({chunk})", largest <= chunk,
               f"{how}: capture holds one chunk at a time, whatever the table's size"),
        growth.figure("re-read memory: capture RSS growth", "MB",
                      f"<= {_RSS_BOUND_MB} MB, flat in the table's size",
                      lambda v: v <= _RSS_BOUND_MB,
                      f"{how}: the process's resident set from the re-read's start to its peak "
                      "(capture runs in it; a re-read holding the table would grow with it)"),
    ]
