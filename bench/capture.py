"""Capture figures, measured in one run on one workload:

- pg_recvlogical decoding throughput (the ceiling: wal2json output to /dev/null) and capture's
  end-to-end throughput (commit -> every event acknowledged by the broker -> confirmed), with the
  kafka-python client and with the optional confluent-kafka backend, each as a ratio;
- capture latency commit -> acknowledged at a steady 5k changes/s (p50/p99);
- capture's peak memory while one large transaction streams through it (does it grow?).

Throughput is catch-up throughput: the workload's WAL is written first, then each reader is
timed from the moment it streams until it has confirmed the workload's end LSN. Every reader
decodes the same WAL with the same wal2json options.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from bench.common import BenchContext, Figure
from capture.event import format_lsn, parse_lsn
from capture.service import CaptureService
from capture.settings import CaptureSettings
from capture.wal2json import WAL2JSON_OPTIONS

TXN_ROWS = 1000


def _lsn(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(str(row[0]))


def _confirmed(dsn: str, slot: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                           "WHERE slot_name = %s", (slot,)).fetchone()
    return parse_lsn(str(row[0])) if row and row[0] else 0


def _wait_confirmed(dsn: str, slot: str, lsn: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _confirmed(dsn, slot) < lsn:
        if time.monotonic() > deadline:
            raise TimeoutError(f"slot {slot} did not reach {format_lsn(lsn)} in {timeout} s")
        time.sleep(0.02)


def _settings(ctx: BenchContext, dsn: str, slot: str, prefix: str, backend: str,
              tables: str = "public.core_relationships,public.core_dynamic_data"
              ) -> CaptureSettings:
    return CaptureSettings(dsn=dsn, bootstrap_servers=ctx.broker.bootstrap_servers, slot=slot,
                           topic_prefix=prefix, kafka_backend=backend, tables=tables)


def _prime(ctx: BenchContext, dsn: str, slot: str, prefix: str, backend: str) -> None:
    """Create capture's slot (empty snapshot), then stop, so the workload waits in the WAL."""
    svc = CaptureService(_settings(ctx, dsn, slot, prefix, backend))
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,))
    t.start()
    if not svc.ready.wait(60):
        stop.set()
        raise RuntimeError("capture did not start")
    stop.set()
    t.join(60)


def _timed_capture(ctx: BenchContext, dsn: str, slot: str, prefix: str, backend: str,
                   end: int) -> float:
    svc = CaptureService(_settings(ctx, dsn, slot, prefix, backend))
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,))
    t.start()
    try:
        if not svc.ready.wait(60):
            raise RuntimeError("capture did not start")
        t0 = time.perf_counter()
        _wait_confirmed(dsn, slot, end, 600)
        return time.perf_counter() - t0
    finally:
        stop.set()
        t.join(120)


def _recvlogical(ctx: BenchContext, dsn: str, slot: str, end: int) -> float:
    args = [str(ctx.cluster.bindir / "pg_recvlogical"), "-d", dsn, "--slot", slot, "--start",
            "-f", "/dev/null", "-E", format_lsn(end), "--no-loop"]
    for k, v in WAL2JSON_OPTIONS.items():
        args += ["-o", f"{k}={v}"]
    args += ["-o", "add-tables=public.core_relationships,public.core_dynamic_data"]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t0


def throughput(ctx: BenchContext) -> list[Figure]:
    n = 50_000 if ctx.quick else 300_000
    dsn = ctx.new_database("bench_capture_tp")
    backends = ["kafka-python", "confluent"]
    for b in backends:
        _prime(ctx, dsn, f"tp_{b.replace('-', '_')}", f"benchtp.{b}", b)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('tp_recv', 'wal2json')")
        for i in range(n // TXN_ROWS):
            conn.execute(
                "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id,"
                " relationship_type, smart_code, relationship_data) SELECT gen_random_uuid(),"
                " 'bench-' || %s || '-' || g, 'org', 'BENCH_LINK', 'HERA.BENCH.LINK.v1',"
                " jsonb_build_object('g', g) FROM generate_series(1, %s) g", (i, TXN_ROWS))
    end = _lsn(dsn)
    recv_s = _recvlogical(ctx, dsn, "tp_recv", end)
    recv_rate = n / recv_s
    figs = [Figure("pg_recvlogical decoding (baseline)", round(recv_rate), "changes/s",
                   "the ceiling", None, f"{n} changes in {recv_s:.2f} s, wal2json to /dev/null")]
    for b in backends:
        secs = _timed_capture(ctx, dsn, f"tp_{b.replace('-', '_')}", f"benchtp.{b}", b, end)
        rate = n / secs
        ratio = rate / recv_rate
        figs.append(Figure(f"capture throughput ({b})", round(rate), "changes/s",
                           ">= 50% of pg_recvlogical", ratio >= 0.5,
                           f"{ratio:.0%} of pg_recvlogical; {n} changes in {secs:.2f} s, "
                           "commit -> broker ack -> confirmed"))
    return figs


def latency(ctx: BenchContext, backend: str = "kafka-python") -> list[Figure]:
    seconds = 5.0 if ctx.quick else 15.0
    rate = 5000
    tick = 0.02
    dsn = ctx.new_database(f"bench_capture_lat_{backend.replace('-', '_')}")
    samples: list[float] = []
    slot = f"lat_{backend.replace('-', '_')}"
    svc = CaptureService(_settings(ctx, dsn, slot, f"benchlat.{backend}", backend),
                         latency_observer=samples.append)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,))
    t.start()
    try:
        if not svc.ready.wait(60):
            raise RuntimeError("capture did not start")
        per_tick = int(rate * tick)
        with psycopg.connect(dsn, autocommit=True) as conn:
            next_t = time.monotonic()
            deadline = next_t + seconds
            i = 0
            while time.monotonic() < deadline:
                conn.execute(
                    "INSERT INTO core_relationships (organization_id, from_entity_id, "
                    "to_entity_id, relationship_type) SELECT gen_random_uuid(), 'lat-' || %s "
                    "|| '-' || g, 'org', 'BENCH_LINK' FROM generate_series(1, %s) g",
                    (i, per_tick))
                i += 1
                next_t += tick
                time.sleep(max(0.0, next_t - time.monotonic()))
        _wait_confirmed(dsn, slot, _lsn(dsn), 120)
    finally:
        stop.set()
        t.join(120)
    ms = sorted(s * 1000 for s in samples)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return [Figure(f"capture latency p99 at 5k changes/s ({backend})", round(p99, 1), "ms",
                   "p99 <= 250 ms", p99 <= 250,
                   f"p50 {p50:.1f} ms over {len(ms)} transactions of {int(rate * tick)} rows, "
                   "commit -> every event acked")]


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def memory(ctx: BenchContext) -> list[Figure]:
    big = 200_000 if ctx.quick else 1_000_000
    dsn = ctx.new_database("bench_capture_mem")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE mem_probe (id bigint PRIMARY KEY, payload text NOT NULL)")
    log = ctx.workdir / "capture-mem.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "capture", "run", "--dsn", dsn, "--bootstrap-servers",
         ctx.broker.bootstrap_servers, "--slot", "mem", "--topic-prefix", "benchmem",
         "--tables", "public.mem_probe"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ})
    try:
        deadline = time.monotonic() + 60
        while _confirmed(dsn, "mem") == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"capture did not start: {log.read_text()[-1000:]}")
            time.sleep(0.05)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO mem_probe SELECT g, repeat('x', 100) "
                         "FROM generate_series(1, 10000) g")
        _wait_confirmed(dsn, "mem", _lsn(dsn), 300)
        small_kb = _vm_hwm_kb(proc.pid)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO mem_probe SELECT g, repeat('x', 100) "
                         "FROM generate_series(100001, 100000 + %s) g", (big,))
        _wait_confirmed(dsn, "mem", _lsn(dsn), 900)
        big_kb = _vm_hwm_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    growth_mb = (big_kb - small_kb) / 1024
    return [Figure(f"capture peak memory, one {big:,}-row transaction", round(big_kb / 1024, 1),
                   "MiB", "bounded (no growth with the transaction)", growth_mb < 64,
                   f"peak after a 10k-row transaction {small_kb / 1024:.1f} MiB, "
                   f"growth {growth_mb:+.1f} MiB for {big:,} rows")]


def run(ctx: BenchContext) -> list[Figure]:
    return (throughput(ctx) + latency(ctx, "kafka-python") + latency(ctx, "confluent")
            + memory(ctx))
