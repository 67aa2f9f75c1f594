"""Archive benchmark: ingest events/s (store alone, and Kafka -> archive) on local disk and on
a real S3 server (SeaweedFS, started here), and the cost of the read views' dedup.

The archive is a Delta table now; the format it replaced (manifest + segments) is measured in
the same run by ``bench/previous.py`` (the previous release's own bench, from a worktree).

- **store ingest**: ChangeEvent JSON bytes -> bulk parse/validate (what the archiver does) ->
  one Delta commit (Parquet + log entry with offsets and app transaction) per 50k batch, no
  Kafka: the archive's own ceiling; on local disk and on S3.
- **archive ingest (Kafka -> archive)**: events already in the broker (4 partitions per table
  topic, tansu), the archiver consumes from offset 0 until every record is committed;
  events/s of the whole run, with ``--kafka-backend confluent`` (the fast path) and with
  kafka-python (the required client, the default).
- **view dedup cost**: ``count(*)``/full-column scans over ``changes`` (DISTINCT ON
  (commit_lsn, position)) versus the raw segments, same connection.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from bench.common import BenchContext, Figure, Pairs, Runs, alternate
from consumers.archive.archiver import Archiver, ArchiverTuning, tune_gc
from consumers.archive.bulk_parse import BulkChangeParser
from consumers.archive.reader import connect_history
from consumers.archive.store import ArchiveStore
from consumers.kafka_source import Backend, open_source
from hera_kit.kafka_config import KafkaConfig, plaintext

_SCANS = 9  # view-overhead pairs: a scan takes milliseconds

def _events(n: int) -> list[bytes]:
    from tests.archive_fixtures import workload

    changes, _ = workload(transactions=n // 10, per_txn=10)
    return [e.to_json() for e in changes]


def _store_ingest(payloads: list[bytes], root: Path | str,
                  options: dict[str, str] | None = None) -> tuple[float, int]:
    store = ArchiveStore.open_or_create(root, storage_options=options)
    parser = BulkChangeParser()
    t0 = time.perf_counter()
    for i in range(0, len(payloads), 50_000):
        rows, rejected = parser.parse(payloads[i:i + 50_000])
        assert not rejected, "the bench's events are canonical"
        store.append(change_rows=rows, offsets={("bench", 0): i + rows.num_rows})
    elapsed = time.perf_counter() - t0
    commits = store.state.batch
    store.close()
    return len(payloads) / elapsed, commits


def _kafka_ingest(ctx: BenchContext, payloads: list[bytes], root: Path | str,
                  backend: Backend, options: dict[str, str] | None = None,
                  kafka: KafkaConfig | None = None) -> float:
    from confluent_kafka import Producer

    prefix = f"bench_archive_{backend}_{time.time_ns()}"
    # clients through the one mapping (bench/tls.py passes a TLS connection)
    kafka = kafka or plaintext(ctx.broker.bootstrap_servers)
    producer = Producer(kafka.confluent({"linger.ms": 5}))
    topic = f"{prefix}.public.core_relationships"
    for i, p in enumerate(payloads):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=p)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    store = ArchiveStore.open_or_create(root, storage_options=options)
    source = open_source(kafka, prefix, None, backend)
    stop = threading.Event()
    done: list[float] = []

    def on_commit(stats: object) -> None:
        total = sum(o for (t, _), o in store.offsets().items() if t == topic)
        if total >= len(payloads) and not done:
            done.append(time.perf_counter())
            stop.set()

    archiver = Archiver(store, source, ArchiverTuning(batch_events=50_000), on_commit=on_commit)
    t0 = time.perf_counter()
    watchdog = threading.Timer(300, stop.set)
    watchdog.start()
    archiver.run(stop)
    watchdog.cancel()
    source.close()
    store.close()
    return len(payloads) / ((done[0] if done else time.perf_counter()) - t0)


def _dedup_cost(root: Path) -> tuple[Pairs, int]:
    """Scans of the raw files and of the deduplicated view, bracketed (raw, view, raw, …):
    one scan takes milliseconds, so a single pair moves with every hiccup of the host."""
    con = connect_history(root)
    rows = int(con.execute("SELECT count(*) FROM raw_changes").fetchall()[0][0])

    def ms(sql: str) -> float:
        t0 = time.perf_counter()
        con.execute(sql).fetchall()
        return (time.perf_counter() - t0) * 1000

    ms("SELECT count(*) FROM changes")  # warm the file cache
    pairs = alternate(_SCANS, lambda _i: ms("SELECT count(*), max(length(after)) FROM raw_changes"),
                      lambda _i: ms("SELECT count(*), max(length(CAST(after AS VARCHAR))) "
                                    "FROM changes"))
    return pairs, rows


def run(ctx: BenchContext) -> list[Figure]:
    from devstack.s3 import start_s3

    n = 50_000 if ctx.quick else 300_000
    k = ctx.pairs
    payloads = _events(n)
    tune_gc()  # what `consumers archive` does at start-up
    work = Path(tempfile.mkdtemp(prefix="bench-archive-", dir=ctx.workdir))
    # No ceiling to pair with: each figure is the median of k runs, the runs of the three
    # local figures interleaved so that a slow minute does not fall on one figure alone.
    store_runs: list[float] = []
    slow_runs: list[float] = []
    fast_runs: list[float] = []
    commits = 0
    with ctx.step(f"archive: ingest on local disk, {k} rounds", 3 * k) as done:
        for i in range(k):
            rate, commits = _store_ingest(payloads, work / f"store-{i}")
            store_runs.append(rate)
            done()
            slow_runs.append(_kafka_ingest(ctx, payloads, work / f"kafka-python-{i}",
                                           "kafka-python"))
            done()
            fast_runs.append(_kafka_ingest(ctx, payloads, work / f"confluent-{i}", "confluent"))
            done()
    store, slow, fast = Runs(tuple(store_runs)), Runs(tuple(slow_runs)), Runs(tuple(fast_runs))
    scans, rows = _dedup_cost(work / "store-0")
    s3 = start_s3("bench")
    try:
        opts = s3.storage_options()
        with ctx.step(f"archive: ingest on S3, {k} rounds", 2 * k) as done:
            s3_store_runs, s3_kafka_runs = [], []
            for i in range(k):
                s3_store_runs.append(_store_ingest(payloads, s3.uri(f"store-{i}"), opts)[0])
                done()
                s3_kafka_runs.append(_kafka_ingest(ctx, payloads, s3.uri(f"confluent-{i}"),
                                                   "confluent", opts))
                done()
    finally:
        s3.stop()
    s3_store, s3_kafka = Runs(tuple(s3_store_runs)), Runs(tuple(s3_kafka_runs))
    old = "the previous release's format: see its rows of this run (bench/previous.py)"
    per_s = "{:,.0f}"
    return [
        fast.figure("archive ingest (Kafka -> archive)", "events/s", ">= 50k events/s",
                    lambda v: v >= 50_000,
                    f"{n} events (~500 B) from tansu, --kafka-backend confluent, 50k-event "
                    f"Delta commits on local disk, median of {k}; kafka-python backend: "
                    f"{slow.text(per_s)} events/s; {old}"),
        slow.figure("archive ingest (Kafka -> archive, kafka-python)", "events/s",
                    ">= 50k events/s", lambda v: v >= 50_000,
                    f"the same runs with the default client (kafka-python + crc32c); "
                    f"confluent: {fast.text(per_s)} events/s"),
        s3_kafka.figure("archive ingest on S3 (Kafka -> archive)", "events/s",
                        "figure on S3", None,
                        f"the same {n} events, confluent, into a Delta table on SeaweedFS "
                        f"(local S3 server, plain http), median of {k}"),
        store.figure("archive store ingest (no Kafka)", "events/s", ">= 50k events/s",
                     lambda v: v >= 50_000,
                     f"bulk parse+validate+Delta commit, {commits} commits of 50k, local disk, "
                     f"median of {k}; on S3 (SeaweedFS): {s3_store.text(per_s)} events/s"),
        scans.ratios.figure(
            "archive view dedup overhead", "x", "informational", None,
            f"scans of {rows} rows, median ratio of {_SCANS} bracketed pairs: raw files "
            f"{scans.ceiling.text('{:.0f}')} ms, deduplicated view "
            f"{scans.product.text('{:.0f}')} ms"),
    ]
