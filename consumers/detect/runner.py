"""The poll loop: Kafka records -> transactions in commit order -> rules -> state + alerts.

Records come through ``consumers.kafka_source`` (the archiver's RecordSource; the
kafka-python or the confluent backend), partitions assigned by hand (no consumer group):
the restart point of every partition lives in the state file, written in the same SQLite
transaction as the state, the stream's identity and the alerts. Per batch: poll, check the
stream is still the one the state knows, route each record (bad ones to the dead-letter
topic), evaluate the transactions that became complete, commit the batch, then deliver the
outbox. A stream that is not the state's, or a table capture does not stream, stops the
loop before anything is committed (``StreamMismatch``, ``ConfigError``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from capture.encoding import SCHEMA_VERSION
from capture.event import (
    ChangeEvent,
    MarkerKind,
    StreamMarker,
    TransactionEvent,
    parse_transaction_topic,
)
from capture.topics import transaction_topic
from consumers.detect.alerts import Alert
from consumers.detect.assembler import Assembler, TopicPartitionKey
from consumers.detect.config import RulesConfig, named_tables
from consumers.detect.errors import DetectError, StreamMismatch
from consumers.detect.memberships import MembershipIndex
from consumers.detect.metrics import DetectMetrics
from consumers.detect.outbox import Outbox
from consumers.detect.probe import Probe
from consumers.detect.rules import Detector
from consumers.detect.sinks import AlertSink
from consumers.detect.state import Batch, LoadedState, StateStore
from consumers.detect.stream_check import check_tables
from consumers.detect.webhook import WebhookFormat
from consumers.detect.window import RemovalWindow
from consumers.epochs import EpochWatch
from consumers.kafka_source import (
    Backend,
    CheckedSource,
    OffsetOutOfRange,
    Record,
)
from consumers.stream_check import StreamCheck
from hera_kit.kafka_config import KafkaConfig
from hera_kit.kafka_probe import KafkaSecurityError, KafkaUnreachable, check_reachable
from hera_kit.service import Health

log = logging.getLogger("hera.detect")

Clock = Callable[[], datetime]
_REFRESH_S = 2.0  # how often missing topics / new partitions are looked for


@dataclass(frozen=True)
class DetectOptions:
    bootstrap_servers: KafkaConfig | str
    topic_prefix: str
    tables: tuple[str, ...]
    state_path: Path
    rules: RulesConfig
    archive_dir: str
    dsn: str | None = None
    poll_ms: int = 100
    max_records: int = 5000
    kafka_backend: Backend = "kafka-python"
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_format: WebhookFormat = "json"
    reset_state: bool = False


@dataclass
class DetectStats:
    records: int = 0
    transactions: int = 0
    alerts: int = 0
    deadletters: int = 0
    duplicates: int = 0
    undelivered: int = 0


@dataclass
class DetectorParts:
    """What ``consumers.detect.service.open_detector`` opened for a runner: the state file
    (locked) and what it held, the stream check already applied at start, the source
    assigned at the stored offsets, the alert producer and the sinks."""

    store: StateStore
    loaded: LoadedState
    check: StreamCheck
    source: CheckedSource
    producer: Any
    sinks: list[AlertSink]


class DetectorRunner:
    """The poll loop over opened parts; no I/O here (``open_detector`` does it)."""

    def __init__(self, options: DetectOptions, clock: Clock, stop: threading.Event,
                 metrics: DetectMetrics, health: Health, parts: DetectorParts) -> None:
        self.options = options
        self.clock = clock
        self.stop_event = stop
        self.stats = DetectStats()
        self.metrics = metrics
        self.health = health
        self._txn_topic = transaction_topic(options.topic_prefix)
        self.store = parts.store
        loaded = parts.loaded
        rules: RulesConfig = options.rules
        window = RemovalWindow(int(rules.mass_deletion.window_seconds * 1_000_000))
        window.load(loaded.window, loaded.alerted)
        self.detector = Detector(rules, MembershipIndex.load(loaded.memberships), window,
                                 options.archive_dir, options.dsn, clock)
        self.assembler = Assembler(frozenset(options.tables), loaded.released_lsn,
                                   self.detector.keeps)
        self._next: dict[TopicPartitionKey, int] = dict(loaded.offsets)
        self._deadletter_total = loaded.deadletters
        self._latest_commit_us: int | None = None
        self.check = parts.check
        self._epochs = EpochWatch(log, loaded.identity.epoch_lsn if loaded.identity else None)
        self._named = named_tables(rules) | {t: "--tables" for t in options.tables}
        self._captured = loaded.captured_tables
        self._captured_changed = False
        self._source: CheckedSource | None = parts.source
        self._producer = parts.producer
        self.sinks = parts.sinks
        self.outbox = Outbox(self.store, self.sinks, self.metrics,
                             lambda: self.clock().isoformat())
        self._probe = Probe(options.bootstrap_servers, parts.source, self.stop_event,
                            self.health, self.metrics)
        self._probe.topics = frozenset(t for t, _ in parts.source.assigned())
        self._probe_seen = 0
        self._last_refresh = time.monotonic()
        self.metrics.broker_up.set(1)
        self.health.ready()
        # Snapshot rows of different partitions arrive in any order: no stream transaction
        # is judged until every row of a snapshot in flight has been read (see
        # _snapshot_barrier), else a user whose other membership is still unread would
        # look orphaned.
        self._open_epochs: set[int] = set()
        self._barrier: dict[TopicPartitionKey, int] = {}

    @property
    def source(self) -> CheckedSource:
        assert self._source is not None
        return self._source

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> DetectStats:
        """Run until the stop event is set; every batch is committed before the next poll."""
        try:
            self._probe.start()
            self._deliver_outbox()  # alerts a crash left committed but undelivered
            while not self.stop_event.is_set():
                self.run_once()
        except DetectError as exc:
            if isinstance(exc, StreamMismatch):
                self.metrics.identity_failed.inc()
            self.health.not_ready(str(exc))
            raise
        finally:
            self.close()
        return self.stats

    def run_once(self) -> None:
        self._refresh_assignment()
        self._check_probe()
        if not self.source.assigned():
            self.stop_event.wait(self.options.poll_ms / 1000)
            return
        try:
            polled = self.source.poll(timeout_ms=self.options.poll_ms)
        except OffsetOutOfRange as exc:  # records it never read were deleted, or more
            raise self.check.out_of_range(exc.partitions, self._next) from None
        self.check.positions(self._next, self.source.highwaters())
        for record in polled:
            self._route(record)
            self._next[(record.topic, record.partition)] = record.offset + 1
        self.stats.records += len(polled)
        self.metrics.records.inc(len(polled))
        alerts: list[Alert] = []
        for tx in () if self._snapshot_barrier() else self.assembler.ready():
            alerts.extend(self.detector.evaluate(tx))
            self.stats.transactions += 1
            self.metrics.transactions.inc()
            self._latest_commit_us = tx.commit_us
        self.stats.duplicates = self.assembler.duplicates
        if (polled or alerts or self.check.changed or self.check.topics_changed
                or self._captured_changed):
            self._commit(alerts)
        self._observe_lag()
        self._deliver_outbox()

    def close(self) -> None:
        self._close_all(self.sinks)

    def _close_all(self, sinks: list[AlertSink]) -> None:
        close_all(self._source, self._producer, self.store, sinks)

    def _check_probe(self) -> None:
        probe = self._probe
        if probe.error is not None:
            self.metrics.broker_up.set(0)
            self.health.not_ready(probe.error)
            return
        if probe.answers != self._probe_seen:
            self._probe_seen = probe.answers
            self.check.cluster(probe.cluster_id)
            self.check.topics(probe.topic_ids)
            self.metrics.broker_up.set(1)
            self.health.ready()

    # --- records --------------------------------------------------------------------------

    def _route(self, record: Record) -> None:
        topic = record.topic
        tp = (topic, record.partition)
        try:
            if topic == self._txn_topic:
                self._on_transaction_record(record.value, tp, record.offset)
            else:
                self._on_change(record.value, topic, tp, record.offset)
        except (ValidationError, ValueError, TypeError) as exc:
            self._dead(f"not a valid record for {topic}: {_short(exc)}", record)
        except _Rejected as exc:
            self._dead(str(exc), record)

    def _on_change(self, value: bytes | None, topic: str, tp: TopicPartitionKey,
                   offset: int) -> None:
        if value is None:
            raise _Rejected("empty record (no value)")
        event = ChangeEvent.from_json(value)
        if event.schema_version > SCHEMA_VERSION:
            raise _Rejected(f"change event schema_version {event.schema_version} is newer "
                            f"than this detector's {SCHEMA_VERSION}")
        expected = topic[len(self.options.topic_prefix) + 1:]
        if event.table_id != expected:
            raise _Rejected(f"event of table {event.table_id} on the topic of {expected}")
        # The initial snapshot (source.snapshot "true"/"last"), not an online re-read's row
        # ("incremental"), which its transaction's END counts.
        if event.op == "r" and event.source.snapshot != "incremental":
            if event.commit_lsn >= self.assembler.released_lsn:  # older ones: already in state
                self.detector.apply_snapshot(event)
            return
        # Everything else, an online re-read's rows (op r inside a transaction) included: its
        # transaction's END counts them, and they set state in WAL order (never alert).
        self.assembler.add_event(event, tp, offset)

    def _on_transaction_record(self, value: bytes | None, tp: TopicPartitionKey,
                               offset: int) -> None:
        if value is None:
            raise _Rejected("empty record (no value)")
        item = parse_transaction_topic(value)
        if item.schema_version > SCHEMA_VERSION:
            raise _Rejected(f"transaction record schema_version {item.schema_version} is "
                            f"newer than this detector's {SCHEMA_VERSION}")
        if isinstance(item, TransactionEvent):
            self.assembler.add_end(item, tp, offset)
        elif isinstance(item, StreamMarker):
            self._on_marker(item)
        # a SchemaChangeEvent changes no row: nothing for the rules (END does not count it)

    def _on_marker(self, marker: StreamMarker) -> None:
        self.check.marker(marker)
        self._epochs.seen(marker)  # one line when a new epoch starts after a gap
        if marker.tables and tuple(marker.tables) != self._captured:
            check_tables(self._named, tuple(marker.tables))
            self._captured, self._captured_changed = tuple(marker.tables), True
        if marker.status is MarkerKind.SNAPSHOT_START:
            self.detector.new_epoch(marker.epoch_lsn)
            self._open_epochs.add(marker.epoch_lsn)
        elif marker.status is MarkerKind.SNAPSHOT_END:
            self._open_epochs.discard(marker.epoch_lsn)
            self._barrier = self._table_end_offsets()

    def _snapshot_barrier(self) -> bool:
        """True while a snapshot is being read: its START came, its END or rows did not."""
        if self._open_epochs:
            return True
        self._barrier = {tp: end for tp, end in self._barrier.items()
                         if self._next.get(tp, 0) < end}
        return bool(self._barrier)

    def _table_end_offsets(self) -> dict[TopicPartitionKey, int]:
        """Where the table partitions end now: capture flushed the snapshot rows before
        SNAPSHOT_END, so every one of them is below these offsets."""
        tps = [tp for tp in self.source.assigned() if tp[0] != self._txn_topic]
        return {tp: high for tp, (_low, high) in self.source.watermarks(tps).items() if high}

    def _dead(self, reason: str, record: Record) -> None:
        log.warning("dead letter %s[%d]@%d: %s", record.topic, record.partition,
                    record.offset, reason)
        self.source.dead_letter(record, reason)
        self._deadletter_total += 1
        self._dead_in_batch = True
        self.stats.deadletters += 1
        self.metrics.dead_letters.inc()

    _dead_in_batch = False

    # --- commit and delivery -------------------------------------------------------------

    def _commit(self, alerts: list[Alert]) -> None:
        if self._dead_in_batch:
            self.source.flush()  # acknowledged before the offsets move past them
            self._dead_in_batch = False
        low = self.assembler.low_water()
        offsets = {tp: min(nxt, low.get(tp, nxt)) for tp, nxt in self._next.items()}
        window = self.detector.window
        batch = Batch(
            released_lsn=self.assembler.released_lsn, deadletters=self._deadletter_total,
            offsets=offsets, memberships=self.detector.memberships.take_dirty(),
            window_added=window.added,
            window_cutoff_us=(None if self._latest_commit_us is None
                              else window.cutoff(self._latest_commit_us)),
            alerted=set(window.alerted) if window.changed else None, alerts=alerts,
            identity=self.check.identity if self.check.changed else None,
            captured_tables=self._captured if self._captured_changed else None,
            topic_ids=dict(self.check.topic_ids) if self.check.topics_changed else None)
        self.store.commit(batch)
        self.check.changed = self.check.topics_changed = self._captured_changed = False
        window.added = []
        window.changed = False
        self.stats.alerts += len(alerts)
        self.metrics.batches.inc()
        for alert in alerts:
            self.metrics.alerts.labels(alert.rule.value, alert.severity.value).inc()
        for (topic, part), off in offsets.items():
            self.metrics.committed_offset.labels(topic, str(part)).set(off)

    def _observe_lag(self) -> None:
        behind = 0
        for (topic, part), high in self.source.highwaters().items():
            lag = max(0, high - self._next.get((topic, part), 0))
            behind += lag
            self.metrics.lag_records.labels(topic, str(part)).set(lag)
        if behind and self._latest_commit_us is not None:
            now_us = self.clock().timestamp() * 1_000_000
            self.metrics.lag_seconds.set(max(0.0, (now_us - self._latest_commit_us) / 1e6))
        else:
            self.metrics.lag_seconds.set(0)

    def _deliver_outbox(self) -> None:
        self.stats.undelivered = self.outbox.deliver()

    # --- partitions ----------------------------------------------------------------------

    def _refresh_assignment(self) -> None:
        now = time.monotonic()
        if now - self._last_refresh < _REFRESH_S:
            return
        self._last_refresh = now
        try:  # kafka-python's metadata call waits, without a timeout, for a broker to answer
            check_reachable(self.options.bootstrap_servers, timeout_s=1.0)
        except (KafkaUnreachable, KafkaSecurityError):
            return  # the broker is down (the probe says so): look again later
        before = self.source.assigned()
        try:
            self.source.refresh(self._next)
        except Exception as exc:  # the broker is down: the probe says so; retry later
            log.debug("refresh failed: %s", exc)
            return
        after = self.source.assigned()
        self._probe.topics = frozenset(t for t, _ in after)
        self.check.vanished({tp: n for tp, n in self._next.items() if tp in before}, after)
        if after != before and before:
            log.info("partitions now %s", sorted(after))


def close_all(source: CheckedSource | None, producer: Any, store: StateStore,
              sinks: list[AlertSink]) -> None:
    """Close what a detector opened, best effort: the state is committed already."""
    closers: list[Callable[[], object]] = []
    if source is not None:
        closers.append(source.close)
    if producer is not None:
        closers.append(producer.close)
    closers += [store.close, *(s.close for s in sinks)]
    for closer in closers:
        try:
            closer()
        except Exception as exc:
            log.debug("close failed: %s", exc)


class _Rejected(Exception):
    """A record that is well-formed JSON but not acceptable here (the dead-letter reason)."""


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."
