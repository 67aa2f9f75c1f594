"""Running the archiver as a real process against the real broker, for the archive's tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from capture.event import ChangeEvent, TransactionEvent
from capture.topics import table_topic, transaction_topic
from consumers.archive.archiver import Archiver, ArchiverTuning
from consumers.archive.layout import ArchiveError
from consumers.archive.store import ArchiveStore
from consumers.kafka_source import Backend, open_source
from tests.s3_fixtures import ArchiveTarget

CONSUMERS = str(Path(sys.executable).parent / "consumers")


def publish(bootstrap: str, prefix: str, changes: Iterable[ChangeEvent],
            transactions: Iterable[TransactionEvent]) -> None:
    """Publish with confluent-kafka (a dev dependency): the test's producer is not under test,
    and kafka-python's producer (~6k msg/s here) would dominate the test's run time."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1})
    for e in changes:
        _produce(producer, table_topic(prefix, e.source.schema_, e.source.table),
                 e.kafka_key(), e.to_json())
    for t in transactions:
        _produce(producer, transaction_topic(prefix), str(t.xid).encode(), t.to_json())
    assert producer.flush(60) == 0


def _produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            return
        except BufferError:  # local queue full: let it drain
            producer.poll(0.05)


def consumed_per_topic(target: ArchiveTarget) -> dict[str, int]:
    """Records consumed per topic according to the archive's commit state (offsets start at
    0 and are contiguous, so the sum of next offsets is the count). The broker's end offsets
    are not used: tansu reports a wrong high watermark for batched records."""
    totals: dict[str, int] = {}
    for (topic, _), offset in committed(target).items():
        totals[topic] = totals.get(topic, 0) + offset
    return totals


def committed(target: ArchiveTarget) -> dict[tuple[str, int], int]:
    return target.state().offset_map()


def generation(target: ArchiveTarget) -> int:
    """The archiver's batch number (its app-transaction version); -1 before the table."""
    try:
        return target.state().batch
    except ArchiveError:
        return -1


def data_files(target: ArchiveTarget) -> list[str]:
    """Every Parquet file under the table's root, referenced or not (a store listing)."""
    if target.backend == "local":
        return [str(p) for p in Path(target.uri).glob("kind=*/*.parquet")]
    import pyarrow.fs as pafs

    env = target.env
    fs = pafs.S3FileSystem(access_key=env["AWS_ACCESS_KEY_ID"],
                           secret_key=env["AWS_SECRET_ACCESS_KEY"],
                           endpoint_override=env["AWS_ENDPOINT_URL"], scheme="http",
                           region=env["AWS_REGION"])
    base = target.uri.removeprefix("s3://")
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except (FileNotFoundError, OSError):
        return []
    return [i.path for i in infos if i.path.endswith(".parquet") and "/kind=" in i.path]


def start_archiver(bootstrap: str, prefix: str, target: ArchiveTarget | Path, log: Path,
                   log_level: str = "WARNING", *extra: str) -> subprocess.Popen[bytes]:
    if isinstance(target, Path):  # other areas' fixtures pass a local directory
        target = ArchiveTarget("local", str(target), {})
    return subprocess.Popen(
        [CONSUMERS, "archive", "--bootstrap-servers", bootstrap, "--archive", target.uri,
         "--topic-prefix", prefix, "--flush-interval-s", "0.2", "--batch-events", "20000",
         "--log-level", log_level, *extra],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **target.env})


@contextlib.contextmanager
def archiver_thread(bootstrap: str, prefix: str, target: ArchiveTarget,
                    backend: Backend = "kafka-python", **tuning: Any) -> Iterator[ArchiveStore]:
    """The archiver in-process (a thread) until the block ends, then a clean stop."""
    store = ArchiveStore.open_or_create(target.location())
    source = open_source(bootstrap, prefix, None, backend)
    stop = threading.Event()
    errors: list[BaseException] = []

    def body() -> None:
        try:
            Archiver(store, source, ArchiverTuning(**{"flush_interval_s": 0.1,
                                                      "refresh_interval_s": 0.5,
                                                      **tuning})).run(stop)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=body, name="archiver", daemon=True)
    thread.start()
    try:
        yield store
    finally:
        stop.set()
        thread.join(30)
        source.close()
        store.close()
        if errors:
            raise errors[0]
