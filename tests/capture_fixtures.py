"""Running the capture service in tests, and reading what it published.

``running_capture`` runs it in-process (a thread; fast, for most tests); ``CaptureProcess``
runs the real CLI as a subprocess (for SIGKILL/SIGTERM tests and for other areas' end-to-end
tests). Both wait until the slot is being streamed before returning.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from capture.event import ChangeEvent
from capture.options import capture_options
from capture.service import CaptureService, open_capture
from capture.settings import CaptureSettings
from capture.topics import DEFAULT_TABLES, table_topic
from tests.waiting import wait_until

# Tests whose behaviour is the same for both output plugins run once per plugin.
PLUGINS = ("wal2json", "pgoutput")


def slot_active(dsn: str, slot: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                           (slot,)).fetchone()
    return bool(row and row[0])


def confirmed_lsn(dsn: str, slot: str) -> int:
    from capture.event import parse_lsn

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                           "WHERE slot_name = %s", (slot,)).fetchone()
    return parse_lsn(str(row[0])) if row and row[0] else 0


@contextlib.contextmanager
def running_capture(dsn: str, bootstrap_servers: str, prefix: str, slot: str,
                    **overrides: Any) -> Iterator[CaptureService]:
    """Capture in a background thread until the block ends (clean stop). ``overrides``: its
    settings, and ``clock`` the service's clock (one that runs ahead stands for a capture
    that lags)."""
    clock: Callable[[], float] = overrides.pop("clock", time.time)
    settings = CaptureSettings(dsn=dsn, bootstrap_servers=bootstrap_servers, slot=slot,
                               topic_prefix=prefix, **overrides)
    stop = threading.Event()
    svc = open_capture(capture_options(settings), clock, stop)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            svc.run(stop)
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, name="capture", daemon=True)
    thread.start()
    wait_until(lambda: svc.ready.is_set() or bool(errors), 60, "capture to start streaming")
    if errors:
        raise errors[0]
    try:
        yield svc
    finally:
        stop.set()
        thread.join(60)
        if errors:
            raise errors[0]


@dataclass
class CaptureProcess:
    """``python -m capture run ...`` as a child process."""

    dsn: str
    bootstrap_servers: str
    prefix: str
    slot: str
    extra_args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        return [sys.executable, "-m", "capture", "run", "--dsn", self.dsn,
                "--bootstrap-servers", self.bootstrap_servers, "--slot", self.slot,
                "--topic-prefix", self.prefix, *self.extra_args]

    def start(self, wait: bool = True) -> None:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.args(), stdout=out, stderr=out,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if wait:
            self.wait_streaming()

    def wait_streaming(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"capture exited with {self.proc.returncode}: {self.log()}")
            return slot_active(self.dsn, self.slot)

        wait_until(ready, timeout, "capture to stream")

    def log(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path and self.log_path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        # PostgreSQL notices the dead walsender peer a moment later; the slot must be free
        # before a restart can take it.
        wait_until(lambda: not slot_active(self.dsn, self.slot), 30, "slot to be released")

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


# --- reading topics ----------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def read_topic(bootstrap_servers: str, topic: str, timeout: float = 120.0) -> list[Record]:
    """Every record currently in ``topic`` (all partitions).

    Read with confluent-kafka for speed (the reader is not what is under test). The end is the
    high watermark of fetch responses: tansu's ListOffsets under-reports it.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "hera-tests",
                         "enable.auto.commit": False, "log_level": 3,
                         "fetch.max.bytes": 64 * 1024 * 1024})
    try:
        md = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            return []
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(md.partitions)]
        consumer.assign(tps)
        out: list[Record] = []
        next_offset = {tp.partition: 0 for tp in tps}
        deadline = time.monotonic() + timeout

        def done() -> bool:
            for tp in tps:
                _lo, hi = consumer.get_watermark_offsets(tp, cached=True)
                if hi < 0 or next_offset[tp.partition] < hi:
                    return False
            return True

        while True:
            for m in consumer.consume(num_messages=10000, timeout=0.2):
                if m.error() is not None:
                    continue
                part, off = int(m.partition() or 0), int(m.offset() or 0)
                out.append(Record(str(m.topic()), part, off, m.key(), m.value() or b""))
                next_offset[part] = off + 1
            if done():
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out reading {topic}")
    finally:
        consumer.close()


def read_events(bootstrap_servers: str, prefix: str, table: str = "core_relationships",
                schema: str = "public") -> list[ChangeEvent]:
    recs = read_topic(bootstrap_servers, table_topic(prefix, schema, table))
    return sorted((ChangeEvent.from_json(r.value) for r in recs), key=lambda e: e.order_key)


def wait_for_events(bootstrap_servers: str, prefix: str,
                    predicate: Callable[[list[ChangeEvent]], bool],
                    table: str = "core_relationships", timeout: float = 60) -> list[ChangeEvent]:
    found: list[ChangeEvent] = []

    def check() -> bool:
        nonlocal found
        found = read_events(bootstrap_servers, prefix, table)
        return predicate(found)

    wait_until(check, timeout, f"events on {prefix}.{table}", interval=0.2)
    return found


__all__ = ["DEFAULT_TABLES", "PLUGINS", "CaptureProcess", "confirmed_lsn", "read_events",
           "read_topic", "running_capture", "slot_active", "wait_for_events", "wait_until"]


def scrape(url: str, name: str) -> float:
    """A sample's value as ``/metrics`` at ``url`` serves it (the text an operator scrapes)."""
    import urllib.request

    body = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}")
