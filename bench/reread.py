"""Online re-read of a table while other traffic streams (capture/reread.py).

One capture, one table of N rows (quick: 20k, else 200k; the target speaks of 1M, too long for
the shared 2-core machine): the initial snapshot's rate (capture start -> snapshot acknowledged,
rows/s), then a re-read of the same table requested while another captured table takes
~5k inserts/s: the re-read's rate as a ratio of the snapshot's, and capture's commit -> ack p99
of the live traffic during the re-read. Memory: capture holds one chunk; its largest chunk
in rows is reported (the process is the benchmark's own, so its RSS says nothing alone).
"""

from __future__ import annotations

import statistics
import threading
import time

import psycopg

from bench.common import BenchContext, Figure
from capture.reread import request_reread
from capture.runner import tune_gc
from capture.service import CaptureService
from capture.settings import CaptureSettings

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


def run(ctx: BenchContext) -> list[Figure]:
    rows = 20_000 if ctx.quick else 200_000
    chunk = 500  # Debezium defaults to 1024; smaller chunks hold the stream up for less
    dsn = ctx.new_database("bench_reread")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_DDL)
        conn.execute("INSERT INTO big SELECT g, gen_random_uuid(), 'K' || (g %% 7), "
                     "md5(g::text), g FROM generate_series(1, %s) g", (rows,))
        conn.execute("ANALYZE big")
    samples: list[tuple[float, float]] = []  # (when, commit -> ack seconds)
    settings = CaptureSettings(dsn=dsn, bootstrap_servers=ctx.broker.bootstrap_servers,
                               slot="bench_reread", topic_prefix="benchreread",
                               tables="public.big,public.other", reread_chunk_rows=chunk)
    svc = CaptureService(settings, on_streaming=tune_gc,
                         latency_observer=lambda s: samples.append((time.monotonic(), s)))
    stop = threading.Event()
    t0 = time.monotonic()
    thread = threading.Thread(target=svc.run, args=(stop,), name="capture")
    thread.start()
    largest = [0]
    try:
        with ctx.step("reread: snapshot, then re-read under traffic", 2) as done:
            if not svc.ready.wait(600):
                raise RuntimeError("capture did not finish its snapshot")
            snapshot_s = time.monotonic() - t0
            done()
            traffic_stop = threading.Event()
            traffic = threading.Thread(target=_traffic, args=(dsn, traffic_stop))
            traffic.start()
            time.sleep(1.0)  # traffic's latency settles before the re-read starts
            started = time.monotonic()
            request_reread(dsn, "public.big", "bench")
            while not any(s.finished for s in svc.rereads.states):
                if svc.rereads.chunk is not None:
                    largest[0] = max(largest[0], len(svc.rereads.chunk.rows))
                if time.monotonic() - started > 900:
                    raise RuntimeError("the re-read did not finish in 15 minutes")
                time.sleep(0.01)
            reread_s = time.monotonic() - started
            traffic_stop.set()
            traffic.join(30)
            done()
    finally:
        stop.set()
        thread.join(120)
    during = sorted(s * 1000 for when, s in samples if started <= when <= started + reread_s)
    p99 = during[min(len(during) - 1, int(len(during) * 0.99))] if during else float("nan")
    snap_rate, reread_rate = rows / snapshot_s, rows / reread_s
    ratio = reread_rate / snap_rate
    return [
        Figure("re-read throughput vs initial snapshot", ratio, "x", ">= 0.5x", ratio >= 0.5,
               f"one run, {rows:,} rows, chunks of {chunk}: re-read {reread_rate:,.0f} rows/s "
               f"under ~5k inserts/s of other traffic, snapshot {snap_rate:,.0f} rows/s "
               "(capture start -> snapshot acknowledged, slot creation included)"),
        Figure("capture latency p99 during a re-read", p99, "ms", "<= 500 ms", p99 <= 500,
               f"{len(during)} transactions of 100 rows at ~5k rows/s; p50 "
               f"{statistics.median(during) if during else float('nan'):.1f} ms"),
        Figure("re-read memory: largest chunk held", float(largest[0]), "rows",
               f"<= chunk ({chunk})", largest[0] <= chunk,
               "capture holds one chunk at a time, whatever the table's size"),
    ]
