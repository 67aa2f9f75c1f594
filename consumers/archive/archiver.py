"""The archiver loop: Kafka records -> parsed events -> one atomic store commit per batch.

Each commit is one atomic Delta commit of the batch's rows, the consumed offsets and the
stream identity (store.py). The identity (topic prefix, Kafka cluster id, and from the markers
the PostgreSQL system identifier, database, slot and epoch) is checked against the one the
archive was built from at start (``identity.check_stream``), at every refresh, and at every
marker: a different stream stops the archiver with IdentityMismatchError before anything of
it is committed. A partition whose records go backwards (the broker was replaced by an empty
one and the client restarted from its beginning) stops it the same way.

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
import pyarrow.compute as pc
from pydantic import ValidationError

from capture.encoding import SCHEMA_VERSION
from capture.event import (
    ChangeEvent,
    SchemaChangeEvent,
    StreamMarker,
    TransactionEvent,
    parse_transaction_topic,
)
from capture.topics import transaction_topic
from consumers.archive.bulk_parse import BulkChangeParser
from consumers.archive.housekeeping import Housekeeping, housekeep
from consumers.archive.layout import IdentityMismatchError
from consumers.archive.store import ArchiveStore, Offsets
from consumers.epochs import EpochWatch
from consumers.kafka_source import Record, RecordSource
from hera_kit.identity import StreamIdentity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiverTuning:
    batch_events: int = 50_000
    flush_interval_s: float = 1.0
    refresh_interval_s: float = 5.0  # look for new table topics
    compact_interval_s: float = 60.0  # housekeeping (optimize, vacuum) period
    housekeeping: Housekeeping = field(default_factory=Housekeeping)


@dataclass
class ArchiverStats:
    records: int = 0
    changes_written: int = 0
    duplicates: int = 0
    transactions_written: int = 0
    markers_written: int = 0
    schema_changes_written: int = 0
    dead_letters: int = 0
    commits: int = 0
    newest_commit_us: int | None = None  # commit time of the newest archived change
    caught_up: bool = False  # the last poll returned nothing


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
    schema_changes: list[SchemaChangeEvent] = field(default_factory=list)
    dead_letters: int = 0


def _wait(commit: Future[None] | None) -> Future[None] | None:
    """Wait for the commit in flight (re-raising its error); there is none afterwards."""
    if commit is not None:
        commit.result()
    return None


def _went_back(rec: Record, expected: int) -> str:
    return (f"{rec.topic}[{rec.partition}] served offset {rec.offset} after {expected - 1} was "
            "archived: the broker lost its data (replaced or reset); archive the new stream "
            "into a new location, or pass --new-archive-epoch to continue this archive")


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


Event = ChangeEvent | TransactionEvent | StreamMarker | SchemaChangeEvent


def parse_record(record: Record, txn_topic: str) -> Event:
    """Raises ValueError with the reason for the dead-letter topic."""
    if record.value is None:
        raise ValueError("empty record value (tombstone)")
    try:
        if record.topic == txn_topic:
            event: Event = parse_transaction_topic(record.value)
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
                 on_commit: Callable[[ArchiverStats], None] | None = None,
                 identity: StreamIdentity | None = None,
                 check_stream: Callable[[Offsets], StreamIdentity | None] | None = None,
                 check_positions: Callable[[Offsets], None] | None = None) -> None:
        """``identity``: the stream as checked at start (None: the archive's own, or only
        the topic prefix); ``check_stream(offsets)``: re-checks the broker's side at every
        refresh (cluster id, partition ends/starts), raising IdentityMismatchError;
        ``check_positions(positions)``: after every poll, the positions against the ends
        the fetches reported (a partition that now ends before them was re-created)."""
        self.store = store
        self.identity = (identity or store.identity()
                         or StreamIdentity(topic_prefix=source.prefix))
        self._check_stream = check_stream
        self._check_positions = check_positions
        self.source = source
        self.tuning = tuning
        self.stats = ArchiverStats()
        self._monotonic = monotonic
        self._txn_topic = transaction_topic(source.prefix)
        self._on_commit = on_commit
        self._bulk = BulkChangeParser()
        self._epochs = EpochWatch(log, self.identity.epoch_lsn)

    def run(self, stop: threading.Event) -> ArchiverStats:
        """Poll until ``stop``; commit each batch on one committer thread meanwhile.

        Commits stay strictly sequential (at most one in flight, the next batch waits for
        it), so the manifest order, the offsets and the exactly-once argument are the same
        as with one thread; the main thread only keeps fetching while DuckDB, Arrow and the
        Parquet writer (which release the GIL) work on the previous batch. Refresh and
        compaction, rare, wait for the commit in flight first: they read the store.
        """
        self.source.assign(self.store.offsets())
        expected = self.store.offsets()  # next offset per partition: never goes backwards
        batch = _Batch()
        now = self._monotonic()
        last_commit = last_refresh = last_compact = now
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-commit") as pool:
            # leaving the block waits for the commit in flight, even after an error
            in_flight: Future[None] | None = None
            while not stop.is_set():
                records = self.source.poll(timeout_ms=100)
                self.stats.caught_up = not records
                if records:
                    batch.records += records
                    offsets = batch.offsets
                    for rec in records:  # records of a partition arrive in offset order
                        tp = (rec.topic, rec.partition)
                        if rec.offset < expected.get(tp, 0):
                            raise IdentityMismatchError(_went_back(rec, expected[tp]))
                        offsets[tp] = expected[tp] = rec.offset + 1
                if self._check_positions is not None:
                    # tansu answers a fetch past a partition's end with nothing, no error:
                    # only the reported end says the archiver sits beyond it
                    self._check_positions(expected)
                now = self._monotonic()
                due = now - last_commit >= self.tuning.flush_interval_s
                if len(batch.records) >= self.tuning.batch_events or (due and batch.records):
                    _wait(in_flight)  # re-raises a failed commit
                    in_flight = pool.submit(self._commit, batch)
                    batch = _Batch()
                    last_commit = now
                if now - last_refresh >= self.tuning.refresh_interval_s:
                    in_flight = _wait(in_flight)
                    self._refresh(self.store.offsets() | batch.offsets)
                    last_refresh = now
                if now - last_compact >= self.tuning.compact_interval_s:
                    in_flight = _wait(in_flight)
                    housekeep(self.store, self.tuning.housekeeping)
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
            elif isinstance(event, SchemaChangeEvent):
                p.schema_changes.append(event)
            else:
                p.markers.append(event)
        return p

    def _refresh(self, position: Offsets) -> None:
        """Re-check the stream and pick up new topics; a broker that does not answer is a
        passing fault (``check_stream`` returns None then): skipped, tried again later."""
        if self._check_stream is not None:
            seen = self._check_stream(position)
            if seen is None:
                return
            self._check(seen)
        try:
            self.source.refresh(position)
        except Exception as exc:  # the Kafka clients' errors: the broker went away meanwhile
            log.warning("topic refresh failed, retried later: %s", exc)

    def _check(self, seen: StreamIdentity) -> None:
        why = self.identity.mismatch(seen)
        if why is not None:
            raise IdentityMismatchError(
                f"the stream is not the one archived in {self.store.location}: {why}; archive "
                "it into a new location, or pass --new-archive-epoch to continue this archive "
                "with the new stream")
        known = self.identity.model_dump(exclude_none=True)
        self.identity = self.identity.model_copy(update={
            k: v for k, v in seen.model_dump(exclude_none=True).items() if k not in known
            or k == "epoch_lsn"})

    def _commit(self, batch: _Batch) -> None:
        p = self._parse(batch.records)
        for marker in sorted(p.markers, key=lambda m: m.lsn):
            # a marker of another database/slot: stop before committing anything of it
            self._check(self.identity.with_marker(marker))
            self._epochs.seen(marker)  # one line when a new epoch starts after a gap
        if p.dead_letters:
            self.source.flush()  # the dead letters are durable before their offsets move
        # the model-parsed changes go first: their relative order to the bulk-parsed ones
        # only matters for a key repeated inside one batch, where either copy is the event
        r = self.store.append(p.changes, p.transactions, p.markers, batch.offsets,
                              dead_letters=p.dead_letters, change_rows=p.change_rows,
                              schema_changes=p.schema_changes, identity=self.identity)
        s = self.stats
        s.records += len(batch.records)
        s.changes_written += r.changes_written
        s.duplicates += r.duplicates
        s.transactions_written += r.transactions_written
        s.markers_written += r.markers_written
        s.schema_changes_written += r.schema_changes_written
        s.dead_letters += p.dead_letters
        s.commits += 1
        if p.change_rows is not None and p.change_rows.num_rows:
            newest = pc.max(p.change_rows["commit_ts"]).cast(pa.int64()).as_py()
            s.newest_commit_us = max(s.newest_commit_us or 0, newest)
        if self._on_commit is not None:
            self._on_commit(s)


