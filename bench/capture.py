"""Capture figures, measured in one run on one workload:

- pg_recvlogical decoding throughput (the ceilings: wal2json and pgoutput output to /dev/null,
  with the options capture gives each) and capture's end-to-end throughput (commit -> every
  event acknowledged by the broker -> confirmed) with each plugin x each client (kafka-python,
  the optional confluent-kafka backend), as ratios to pg_recvlogical+wal2json;
- capture latency commit -> acknowledged at a steady 5k changes/s (p50/p99);
- capture's peak memory while one large transaction streams through it (does it grow?).

Throughput is catch-up throughput: the workload's WAL is written first, then each reader is
timed from the moment it streams until it has confirmed the workload's end LSN. Every reader
of a plugin decodes the same WAL with the same options.
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

from bench.common import BenchContext, Figure, Runs, bracket, ratio_runs, release_frozen, repeat
from capture.decoding import make_decoder
from capture.decoding.catalog import SideCatalog
from capture.decoding.choice import wal2json_exact
from capture.event import format_lsn, parse_lsn
from capture.gc_tuning import tune_gc
from capture.options import capture_options
from capture.service import open_capture
from capture.settings import CaptureSettings
from capture.slot import TableInfo

TXN_ROWS = 1000


def _lsn(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(str(row[0]))


def _confirmed(dsn: str, slot: str, conn: psycopg.Connection[tuple[object, ...]] | None = None
               ) -> int:
    if conn is None:
        with psycopg.connect(dsn, autocommit=True) as own:
            return _confirmed(dsn, slot, own)
    row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                       "WHERE slot_name = %s", (slot,)).fetchone()
    return parse_lsn(str(row[0])) if row and row[0] else 0


def _wait_confirmed(dsn: str, slot: str, lsn: int, timeout: float) -> None:
    # One connection for the whole wait: a new one per poll costs capture CPU it is being
    # timed on (measured: ~10% of a core at 50 polls/s).
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while _confirmed(dsn, slot, conn) < lsn:
            if time.monotonic() > deadline:
                raise TimeoutError(f"slot {slot} did not reach {format_lsn(lsn)} in {timeout} s")
            time.sleep(0.02)


_TABLES = "public.core_relationships,public.core_dynamic_data"
PLUGINS = ("wal2json", "pgoutput")
BACKENDS = ("kafka-python", "confluent")


def _settings(ctx: BenchContext, dsn: str, slot: str, prefix: str, backend: str,
              tables: str = _TABLES, plugin: str = "auto",
              kafka_config: Path | None = None) -> CaptureSettings:
    """``kafka_config``: a properties file (bench/tls.py) instead of the plaintext broker."""
    servers = None if kafka_config else ctx.broker.bootstrap_servers
    return CaptureSettings(dsn=dsn, bootstrap_servers=servers, kafka_config=kafka_config,
                           slot=slot, topic_prefix=prefix, kafka_backend=backend,
                           tables=tables, plugin=plugin)


def _prime(ctx: BenchContext, dsn: str, slot: str, prefix: str, backend: str,
           plugin: str, kafka_config: Path | None = None) -> None:
    """Create capture's slot (empty snapshot), then stop, so the workload waits in the WAL."""
    svc = open_capture(capture_options(_settings(ctx, dsn, slot, prefix, backend,
                                                 plugin=plugin, kafka_config=kafka_config)),
                       on_streaming=tune_gc)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,))
    t.start()
    if not svc.ready.wait(60):
        stop.set()
        raise RuntimeError("capture did not start")
    stop.set()
    t.join(60)
    release_frozen()


def _timed_capture(ctx: BenchContext, dsn: str, slot: str, prefix: str, backend: str,
                   end: int, plugin: str, kafka_config: Path | None = None
                   ) -> tuple[float, float]:
    """Seconds from streaming to the workload's end confirmed, and the process CPU seconds
    spent meanwhile (capture's threads and its Kafka client's; the waiting loop here polls one
    connection 50 times a second, a negligible share)."""
    svc = open_capture(capture_options(_settings(ctx, dsn, slot, prefix, backend,
                                                 plugin=plugin, kafka_config=kafka_config)),
                       on_streaming=tune_gc)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,))
    t.start()
    try:
        if not svc.ready.wait(60):
            raise RuntimeError("capture did not start")
        t0, cpu0 = time.perf_counter(), time.process_time()
        _wait_confirmed(dsn, slot, end, 600)
        return time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        stop.set()
        t.join(120)
        release_frozen()


def _recv_options(dsn: str, plugin: str, slot: str) -> dict[str, str]:
    """The START_REPLICATION options capture itself would give this plugin."""
    tables = [TableInfo(t.split(".")[0], t.split(".")[1], (), ()) for t in _TABLES.split(",")]
    decoder = make_decoder(plugin, tables, SideCatalog(dsn), slot)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if plugin == "wal2json" and not wal2json_exact(conn)[0]:
            decoder.adapt("numeric-data-types-as-string")
        if decoder.caps.needs_publication:
            decoder.prepare(conn, tables, slot)
    return decoder.start_options()


def _recvlogical(ctx: BenchContext, dsn: str, slot: str, end: int,
                 options: dict[str, str]) -> float:
    args = [str(ctx.cluster.bindir / "pg_recvlogical"), "-d", dsn, "--slot", slot, "--start",
            "-f", "/dev/null", "-E", format_lsn(end), "--no-loop"]
    for k, v in options.items():
        args += ["-o", f"{k}={v}"]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t0


def _slot(plugin: str, backend: str, i: int) -> str:
    return f"tp_{plugin}_{backend.replace('-', '_')}_{i}"


def _prefix(plugin: str, backend: str, i: int) -> str:
    return f"benchtp.{plugin}.{backend}.{i}"


CONFIGS = [(p, b) for p in PLUGINS for b in BACKENDS]


def throughput(ctx: BenchContext) -> list[Figure]:
    """Capture runs bracketed by pg_recvlogical+wal2json runs (the ceiling): ceiling, capture,
    ceiling, capture, … ceiling, ``pairs`` rounds over the four capture configurations (each
    round starting one configuration further, so none always follows the same run); each
    capture run's ratio is taken against the geometric mean of the ceiling runs around it.
    Every reader has a slot of its own created before the workload, so every run decodes the
    same WAL from the start. Many short runs rather than a few long ones: the host's speed
    shifts within tens of seconds, and a ratio holds when both of its sides see the same."""
    n = 30_000 if ctx.quick else 100_000
    pairs = ctx.pairs if ctx.quick else 6
    dsn = ctx.new_database("bench_capture_tp")
    rounds = [[CONFIGS[(i + k) % len(CONFIGS)] for k in range(len(CONFIGS))]
              for i in range(pairs)]
    with ctx.step("capture: priming slots", pairs * len(CONFIGS)) as done:
        for i in range(pairs):
            for plugin, b in CONFIGS:
                _prime(ctx, dsn, _slot(plugin, b, i), _prefix(plugin, b, i), b, plugin)
                done()
    recv_options = {plugin: _recv_options(dsn, plugin, f"recv_{plugin}") for plugin in PLUGINS}
    with psycopg.connect(dsn, autocommit=True) as conn:
        # one template slot per plugin, never read: each ceiling run reads a copy of it made
        # right before the run (the cluster's 40 slots would not hold one per run)
        for plugin in PLUGINS:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, %s)",
                         (f"recv_{plugin}_template", plugin))
        for i in range(n // TXN_ROWS):
            conn.execute(
                "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id,"
                " relationship_type, smart_code, relationship_data) SELECT gen_random_uuid(),"
                " 'bench-' || %s || '-' || g, 'org', 'BENCH_LINK', 'HERA.BENCH.LINK.v1',"
                " jsonb_build_object('g', g) FROM generate_series(1, %s) g", (i, TXN_ROWS))
    end = _lsn(dsn)
    wal2json: list[float] = []  # every ceiling run, in order

    def recv(plugin: str) -> float:
        """One ceiling run: pg_recvlogical on a fresh copy of the plugin's template slot."""
        slot = f"recv_{plugin}_run"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)",
                         (f"recv_{plugin}_template", slot))
        try:
            return n / _recvlogical(ctx, dsn, slot, end, recv_options[plugin])
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))

    def ceiling() -> None:
        wal2json.append(recv("wal2json"))

    # per configuration, per round: the rate, the CPU, the ratio to the bracketing ceiling
    rate: dict[tuple[str, str], list[float]] = {c: [] for c in CONFIGS}
    cpu: dict[tuple[str, str], list[float]] = {c: [] for c in CONFIGS}
    share: dict[tuple[str, str], list[float]] = {c: [] for c in CONFIGS}
    recv_pgo: list[float] = []
    with ctx.step(f"capture: throughput, {pairs} rounds of capture runs between ceiling runs",
                  pairs * (2 * len(CONFIGS) + 1) + 1) as done:
        ceiling()
        done()
        for i, configs in enumerate(rounds):
            recv_pgo.append(recv("pgoutput"))
            done()
            for plugin, b in configs:
                secs, cpu_s = _timed_capture(ctx, dsn, _slot(plugin, b, i),
                                             _prefix(plugin, b, i), b, end, plugin)
                done()
                ceiling()
                done()
                rate[(plugin, b)].append(n / secs)
                cpu[(plugin, b)].append(cpu_s / n * 1e6)
                share[(plugin, b)].append(n / secs / bracket(wal2json[-2], wal2json[-1]))
    all_ceil = Runs(tuple(wal2json))
    pgo = Runs(tuple(recv_pgo))
    figs = [
        all_ceil.figure("pg_recvlogical decoding, wal2json (ceiling)", "changes/s",
                        "the ceiling", None,
                        f"{n} changes to /dev/null with capture's options; median of "
                        f"{len(all_ceil.values)} runs, one before and after each capture run"),
        pgo.figure("pg_recvlogical decoding, pgoutput (ceiling)", "changes/s", "the ceiling",
                   None, f"{n} changes to /dev/null with capture's options; "
                   f"median of {len(pgo.values)} runs"),
    ]
    for plugin, b in CONFIGS:
        want = 0.5 if b == "confluent" else 0.25
        ratios = Runs(tuple(share[(plugin, b)]))
        rates, cpus = Runs(tuple(rate[(plugin, b)])), Runs(tuple(cpu[(plugin, b)]))
        same = ("" if plugin == "wal2json" else
                f"; {ratio_runs(rate[(plugin, b)], recv_pgo).text('{:.0%}')} of "
                "pg_recvlogical+pgoutput")
        figs.append(Figure(
            f"capture throughput ({plugin}, {b})", rates.median, "changes/s",
            f">= {want:.0%} of pg_recvlogical+wal2json", ratios.median >= want,
            f"{ratios.text('{:.0%}')} of pg_recvlogical+wal2json (ratio per run){same}; "
            f"capture CPU {cpus.text('{:.1f}')} µs/change; {n} changes, commit -> broker ack "
            "-> confirmed", rates.low, rates.high, len(rates.values)))
        figs.append(ratios.figure(
            f"capture / pg_recvlogical+wal2json ({plugin}, {b})", "x",
            f">= {want:g}", (lambda r: r >= 0.5) if b == "confluent" else (lambda r: r >= 0.25),
            f"median ratio of {pairs} runs, each to the geometric mean of the ceiling runs "
            "right before and right after it"))
        figs.append(cpus.figure(
            f"capture CPU per change ({plugin}, {b})", "µs", "informational (the cost the "
            "code controls, whatever the host)", None,
            "process CPU seconds / changes while streaming the workload"))
    for b in BACKENDS:
        # each side as its share of its own bracketing ceiling: the two runs of a round are
        # minutes apart, and the host's speed is not the same in both
        ratios = ratio_runs(share[("pgoutput", b)], share[("wal2json", b)])
        figs.append(ratios.figure(
            f"capture pgoutput / wal2json ({b})", "x", ">= 1.0 (pgoutput at least as fast)",
            lambda r: r >= 1.0, f"same workload, same client, per round of {pairs}; each "
            "side's share of the ceiling runs around it"))
    return figs


def _latency_run(ctx: BenchContext, backend: str, i: int) -> tuple[float, float, int]:
    """p50 and p99 (ms) of commit -> every event acknowledged at a steady 5k changes/s, and
    the number of transactions measured."""
    seconds = 5.0 if ctx.quick else 15.0
    rate = 5000
    tick = 0.02
    tag = f"{backend.replace('-', '_')}_{i}"
    dsn = ctx.new_database(f"bench_capture_lat_{tag}")
    samples: list[float] = []
    slot = f"lat_{tag}"
    svc = open_capture(capture_options(_settings(ctx, dsn, slot, f"benchlat.{backend}.{i}",
                                                 backend)),
                       latency_observer=samples.append, on_streaming=tune_gc)
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
            k = 0
            while time.monotonic() < deadline:
                conn.execute(
                    "INSERT INTO core_relationships (organization_id, from_entity_id, "
                    "to_entity_id, relationship_type) SELECT gen_random_uuid(), 'lat-' || %s "
                    "|| '-' || g, 'org', 'BENCH_LINK' FROM generate_series(1, %s) g",
                    (k, per_tick))
                k += 1
                next_t += tick
                time.sleep(max(0.0, next_t - time.monotonic()))
        _wait_confirmed(dsn, slot, _lsn(dsn), 120)
    finally:
        stop.set()
        t.join(120)
    ms = sorted(s * 1000 for s in samples)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))], len(ms)


def latency(ctx: BenchContext, backend: str = "kafka-python") -> list[Figure]:
    runs: list[tuple[float, float, int]] = []
    with ctx.step(f"capture: latency at 5k changes/s ({backend})", ctx.pairs) as done:
        def one(i: int) -> float:
            runs.append(_latency_run(ctx, backend, i))
            return runs[-1][1]

        p99 = repeat(ctx.pairs, one, done)
    p50 = Runs(tuple(r[0] for r in runs))
    return [p99.figure(f"capture latency p99 at 5k changes/s ({backend})", "ms",
                       "p99 <= 250 ms", lambda v: v <= 250,
                       f"median of {len(runs)} runs of {runs[0][2]} transactions of 100 rows "
                       f"each; p50 {p50.text('{:.1f}')} ms; commit -> every event acked")]


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
