"""The archiver loop: Kafka records -> parsed events -> one atomic store commit per batch.

A batch is committed when it holds ``batch_events`` records or ``flush_interval_s`` has
passed since the last commit. Records are parsed at the commit, all at once: change events
in bulk by DuckDB straight into Arrow columns (``bulk_parse``), and whatever the bulk check
does not accept, plus the ``<prefix>.transaction`` records, one by one with the models.
Records that do not parse (bad JSON, unknown fields, a newer
``schema_version``, an empty value) go to ``<prefix>.deadletter`` with the reason; the
dead-letter producer is flushed before the commit that moves the offsets past them, so a
crash re-sends them rather than losing them. ``stop`` (set by SIGTERM/SIGINT) ends the loop
after a final commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
from pydantic import ValidationError

from capture.event import (
    SCHEMA_VERSION,
    ChangeEvent,
    StreamMarker,
    TransactionEvent,
    parse_transaction_topic,
)
from capture.topics import transaction_topic
from consumers.archive.bulk_parse import BulkChangeParser
from consumers.archive.compaction import CompactionPolicy, compact
from consumers.archive.store import ArchiveStore, Offsets
from consumers.kafka_source import Record, RecordSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiverTuning:
    batch_events: int = 50_000
    flush_interval_s: float = 1.0
    refresh_interval_s: float = 5.0  # look for new table topics
    compact_interval_s: float = 30.0
    compaction: CompactionPolicy = field(default_factory=CompactionPolicy)


@dataclass
class ArchiverStats:
    records: int = 0
    changes_written: int = 0
    duplicates: int = 0
    transactions_written: int = 0
    markers_written: int = 0
    dead_letters: int = 0
    commits: int = 0


@dataclass
class _Batch:
    records: list[Record] = field(default_factory=list)
    offsets: Offsets = field(default_factory=dict)


@dataclass
class _Parsed:
    change_rows: pa.Table | None = None
    changes: list[ChangeEvent] = field(default_factory=list)
    transactions: list[TransactionEvent] = field(default_factory=list)
    markers: list[StreamMarker] = field(default_factory=list)
    dead_letters: int = 0


def _wait(commit: Future[None] | None) -> Future[None] | None:
    """Wait for the commit in flight (re-raising its error); there is none afterwards."""
    if commit is not None:
        commit.result()
    return None


def tune_gc() -> None:
    """Process-level GC tuning for the archiver process (called by the CLI, not the library).

    A batch allocates ~10 objects per event (models, dicts) that all die at the commit; with
    the default thresholds the collector runs thousands of times per batch and re-scans the
    survivors, which measured 3x slower parsing (bench/archive.py). Nothing here builds
    reference cycles, so rarer collections cost no memory; freezing moves start-up objects
    (modules, dedup keys loaded at open) out of the collector's way.
    """
    import gc

    gc.freeze()
    gc.set_threshold(200_000, 50, 100)


def parse_record(record: Record, txn_topic: str) -> ChangeEvent | TransactionEvent | StreamMarker:
    """Raises ValueError with the reason for the dead-letter topic."""
    if record.value is None:
        raise ValueError("empty record value (tombstone)")
    try:
        if record.topic == txn_topic:
            event: ChangeEvent | TransactionEvent | StreamMarker = (
                parse_transaction_topic(record.value))
        else:
            event = ChangeEvent.model_validate_json(record.value)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise ValueError(f"not valid JSON: {first['msg']}") from None
        loc = ".".join(str(p) for p in first["loc"]) or "record"
        raise ValueError(f"not a valid event: {loc}: {first['msg']}"
                         f" ({exc.error_count()} error(s))") from None
    except ValueError as exc:  # json.JSONDecodeError from parse_transaction_topic
        raise ValueError(f"not valid JSON: {exc}") from None
    if event.schema_version > SCHEMA_VERSION:
        raise ValueError(f"unknown schema_version {event.schema_version} "
                         f"(this archiver reads up to {SCHEMA_VERSION})")
    return event


class Archiver:
    def __init__(self, store: ArchiveStore, source: RecordSource, tuning: ArchiverTuning,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_commit: Callable[[ArchiverStats], None] | None = None) -> None:
        self.store = store
        self.source = source
        self.tuning = tuning
        self.stats = ArchiverStats()
        self._monotonic = monotonic
        self._txn_topic = transaction_topic(source.prefix)
        self._on_commit = on_commit
        self._bulk = BulkChangeParser()

    def run(self, stop: threading.Event) -> ArchiverStats:
        """Poll until ``stop``; commit each batch on one committer thread meanwhile.

        Commits stay strictly sequential (at most one in flight, the next batch waits for
        it), so the manifest order, the offsets and the exactly-once argument are the same
        as with one thread; the main thread only keeps fetching while DuckDB, Arrow and the
        Parquet writer (which release the GIL) work on the previous batch. Refresh and
        compaction, rare, wait for the commit in flight first: they read the store.
        """
        self.source.assign(self.store.offsets())
        batch = _Batch()
        now = self._monotonic()
        last_commit = last_refresh = last_compact = now
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-commit") as pool:
            # leaving the block waits for the commit in flight, even after an error
            in_flight: Future[None] | None = None
            while not stop.is_set():
                records = self.source.poll(timeout_ms=100)
                if records:
                    batch.records += records
                    offsets = batch.offsets
                    for rec in records:  # records of a partition arrive in offset order
                        offsets[(rec.topic, rec.partition)] = rec.offset + 1
                now = self._monotonic()
                due = now - last_commit >= self.tuning.flush_interval_s
                if len(batch.records) >= self.tuning.batch_events or (due and batch.records):
                    _wait(in_flight)  # re-raises a failed commit
                    in_flight = pool.submit(self._commit, batch)
                    batch = _Batch()
                    last_commit = now
                if now - last_refresh >= self.tuning.refresh_interval_s:
                    in_flight = _wait(in_flight)
                    self.source.refresh(self.store.offsets() | batch.offsets)
                    last_refresh = now
                if now - last_compact >= self.tuning.compact_interval_s:
                    in_flight = _wait(in_flight)
                    compact(self.store, self.tuning.compaction)
                    self.store.delete_expired()
                    last_compact = now
            _wait(in_flight)
        if batch.records:
            self._commit(batch)
        log.info("archiver stopped: %s", self.stats)
        return self.stats

    def _parse(self, records: list[Record]) -> _Parsed:
        p = _Parsed()
        table_recs = [r for r in records if r.topic != self._txn_topic]
        p.change_rows, fallback = self._bulk.parse([r.value for r in table_recs])
        one_by_one = [table_recs[i] for i in fallback]
        if len(table_recs) < len(records):
            one_by_one += [r for r in records if r.topic == self._txn_topic]
        for rec in one_by_one:
            try:
                event = parse_record(rec, self._txn_topic)
            except ValueError as exc:
                log.warning("dead letter %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset,
                            exc)
                self.source.dead_letter(rec, str(exc))
                p.dead_letters += 1
                continue
            if isinstance(event, ChangeEvent):
                p.changes.append(event)
            elif isinstance(event, TransactionEvent):
                p.transactions.append(event)
            else:
                p.markers.append(event)
        return p

    def _commit(self, batch: _Batch) -> None:
        p = self._parse(batch.records)
        if p.dead_letters:
            self.source.flush()  # the dead letters are durable before their offsets move
        # the model-parsed changes go first: their relative order to the bulk-parsed ones
        # only matters for a key repeated inside one batch, where either copy is the event
        r = self.store.append(p.changes, p.transactions, p.markers, batch.offsets,
                              dead_letters=p.dead_letters, change_rows=p.change_rows)
        s = self.stats
        s.records += len(batch.records)
        s.changes_written += r.changes_written
        s.duplicates += r.duplicates
        s.transactions_written += r.transactions_written
        s.markers_written += r.markers_written
        s.dead_letters += p.dead_letters
        s.commits += 1
        if self._on_commit is not None:
            self._on_commit(s)


