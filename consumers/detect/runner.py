"""The poll loop: Kafka records -> transactions in commit order -> rules -> state + alerts.

Partitions are assigned by hand (no consumer group): the restart point of every partition
lives in the state file, written in the same SQLite transaction as the state and the alerts.
Per batch: poll, route each record (bad ones to the dead-letter topic), evaluate the
transactions that became complete, commit the batch, then deliver the outbox.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from capture.errors import BrokerError
from capture.event import (
    SCHEMA_VERSION,
    ChangeEvent,
    MarkerKind,
    StreamMarker,
    TransactionEvent,
    parse_transaction_topic,
)
from capture.kafka_admin import ensure_topics
from capture.topics import alerts_topic, deadletter_topic, table_topic, transaction_topic
from consumers.detect.alerts import Alert
from consumers.detect.assembler import Assembler, TopicPartitionKey
from consumers.detect.config import RulesConfig
from consumers.detect.errors import BrokerUnavailable, SinkError
from consumers.detect.memberships import MembershipIndex
from consumers.detect.rules import Detector
from consumers.detect.sinks import (
    AlertSink,
    DeadLetters,
    KafkaAlertSink,
    LogSink,
    PostgresAlertSink,
)
from consumers.detect.state import Batch, StateStore
from consumers.detect.window import RemovalWindow

log = logging.getLogger("hera.detect")

Clock = Callable[[], datetime]
_REFRESH_S = 2.0  # how often missing topics / new partitions are looked for


@dataclass(frozen=True)
class DetectOptions:
    bootstrap_servers: str
    topic_prefix: str
    tables: tuple[str, ...]
    state_path: Path
    rules: RulesConfig
    archive_dir: str
    dsn: str | None = None
    poll_ms: int = 100
    max_records: int = 5000


@dataclass
class DetectStats:
    records: int = 0
    transactions: int = 0
    alerts: int = 0
    deadletters: int = 0
    duplicates: int = 0
    undelivered: int = 0


@dataclass
class _Topics:
    by_name: dict[str, str | None] = field(default_factory=dict)  # topic -> table (None: tx)


class DetectorRunner:
    def __init__(self, options: DetectOptions, clock: Clock,
                 stop: threading.Event | None = None) -> None:
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.errors import KafkaError

        self.options = options
        self.clock = clock
        self.stop_event = stop or threading.Event()
        self.stats = DetectStats()
        prefix = options.topic_prefix
        self._topics: dict[str, str | None] = {transaction_topic(prefix): None}
        for table in options.tables:
            schema, _, name = table.partition(".")
            self._topics[table_topic(prefix, schema, name)] = table

        self.store = StateStore.open(options.state_path, prefix)
        loaded = self.store.load()
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

        self.sinks: list[AlertSink] = [LogSink()]
        if options.dsn:  # first: a missing critical_system_alerts table stops us right away
            self.sinks.append(PostgresAlertSink(options.dsn))
        try:
            # Fail fast on an unreachable broker, and create our output topics with one
            # partition (auto-created ones get the broker's default count: no order).
            ensure_topics(options.bootstrap_servers, [alerts_topic(prefix),
                                                      deadletter_topic(prefix)])
            self._producer = KafkaProducer(bootstrap_servers=options.bootstrap_servers,
                                           acks="all", linger_ms=0)
        except (KafkaError, BrokerError):
            for sink in self.sinks:
                sink.close()
            self.store.close()
            raise BrokerUnavailable(
                f"no Kafka broker answers at {options.bootstrap_servers}: check "
                "--bootstrap-servers and that the broker runs") from None
        self.sinks.append(KafkaAlertSink(self._producer, alerts_topic(prefix)))
        self.deadletters = DeadLetters(self._producer, deadletter_topic(prefix))
        self._consumer: Any = KafkaConsumer(
            bootstrap_servers=options.bootstrap_servers, group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50,
            # kafka-python checks CRC32C in pure Python: 70% of the detector's CPU when
            # profiled. TCP checksums the bytes and the broker validated each batch on write.
            check_crcs=False)
        self._assigned: set[TopicPartitionKey] = set()
        self._last_refresh = 0.0
        self._delivered: dict[str, set[str]] = {}
        # Snapshot rows of different partitions arrive in any order: no stream transaction
        # is judged until every row of a snapshot in flight has been read (see
        # _snapshot_barrier), else a user whose other membership is still unread would
        # look orphaned.
        self._open_epochs: set[int] = set()
        self._barrier: dict[TopicPartitionKey, int] = {}

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> DetectStats:
        """Run until the stop event is set; every batch is committed before the next poll."""
        try:
            self._deliver_outbox()  # alerts a crash left committed but undelivered
            while not self.stop_event.is_set():
                self.run_once()
        finally:
            self.close()
        return self.stats

    def run_once(self) -> None:
        self._refresh_assignment()
        if not self._assigned:
            self.stop_event.wait(self.options.poll_ms / 1000)
            return
        polled = self._consumer.poll(timeout_ms=self.options.poll_ms,
                                     max_records=self.options.max_records)
        records = 0
        for tp, batch in polled.items():
            for record in batch:
                self._route(tp.topic, tp.partition, record)
                self._next[(tp.topic, tp.partition)] = record.offset + 1
                records += 1
        self.stats.records += records
        alerts: list[Alert] = []
        for tx in () if self._snapshot_barrier() else self.assembler.ready():
            alerts.extend(self.detector.evaluate(tx))
            self.stats.transactions += 1
            self._latest_commit_us = tx.commit_us
        self.stats.duplicates = self.assembler.duplicates
        if records or alerts:
            self._commit(alerts)
        self._deliver_outbox()

    def close(self) -> None:
        for closer in (self._consumer.close, self._producer.close, self.store.close,
                       *(s.close for s in self.sinks)):
            try:
                closer()
            except Exception as exc:  # closing is best effort; the state is committed
                log.debug("close failed: %s", exc)

    # --- records --------------------------------------------------------------------------

    def _route(self, topic: str, partition: int, record: Any) -> None:
        table = self._topics.get(topic)
        try:
            if table is None:
                self._on_transaction_record(record.value, (topic, partition), record.offset)
            else:
                self._on_change(record.value, table, (topic, partition), record.offset)
        except (ValidationError, ValueError, TypeError) as exc:
            self._dead(f"not a valid record for {topic}: {_short(exc)}", topic, partition,
                       record)
        except _Rejected as exc:
            self._dead(str(exc), topic, partition, record)

    def _on_change(self, value: bytes | None, table: str, tp: TopicPartitionKey,
                   offset: int) -> None:
        if value is None:
            raise _Rejected("empty record (no value)")
        event = ChangeEvent.from_json(value)
        if event.schema_version > SCHEMA_VERSION:
            raise _Rejected(f"change event schema_version {event.schema_version} is newer "
                            f"than this detector's {SCHEMA_VERSION}")
        if event.table_id != table:
            raise _Rejected(f"event of table {event.table_id} on the topic of {table}")
        if event.op == "r":
            if event.commit_lsn >= self.assembler.released_lsn:  # older ones: already in state
                self.detector.apply_snapshot(event)
            return
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
        elif isinstance(item, StreamMarker) and item.status is MarkerKind.SNAPSHOT_START:
            self.detector.new_epoch(item.epoch_lsn)
            self._open_epochs.add(item.epoch_lsn)
        elif isinstance(item, StreamMarker) and item.status is MarkerKind.SNAPSHOT_END:
            self._open_epochs.discard(item.epoch_lsn)
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
        from kafka import TopicPartition

        tps = [TopicPartition(t, p) for t, p in self._assigned if self._topics.get(t)]
        ends = self._consumer.end_offsets(tps) if tps else {}
        return {(tp.topic, tp.partition): int(end) for tp, end in ends.items() if end}

    def _dead(self, reason: str, topic: str, partition: int, record: Any) -> None:
        log.warning("dead letter %s[%d]@%d: %s", topic, partition, record.offset, reason)
        self.deadletters.send(reason, topic, partition, record.offset, record.key,
                              record.value, self.clock())
        self._deadletter_total += 1
        self.stats.deadletters += 1

    # --- commit and delivery -------------------------------------------------------------

    def _commit(self, alerts: list[Alert]) -> None:
        if self.deadletters.sent:
            self.deadletters.flush()  # acknowledged before the offsets move past them
        low = self.assembler.low_water()
        offsets = {tp: min(nxt, low.get(tp, nxt)) for tp, nxt in self._next.items()}
        window = self.detector.window
        batch = Batch(
            released_lsn=self.assembler.released_lsn, deadletters=self._deadletter_total,
            offsets=offsets, memberships=self.detector.memberships.take_dirty(),
            window_added=window.added,
            window_cutoff_us=(None if self._latest_commit_us is None
                              else window.cutoff(self._latest_commit_us)),
            alerted=set(window.alerted) if window.changed else None, alerts=alerts)
        self.store.commit(batch)
        window.added = []
        window.changed = False
        self.stats.alerts += len(alerts)

    def _deliver_outbox(self) -> None:
        pending = self.store.outbox()
        if not pending:
            self.stats.undelivered = 0
            return
        done: list[str] = []
        for alert in pending:
            key = str(alert.id)
            took = self._delivered.setdefault(key, set())
            for sink in self.sinks:
                if sink.name in took:
                    continue
                try:
                    sink.deliver(alert)
                    took.add(sink.name)
                except SinkError as exc:
                    log.error("alert %s not delivered to %s (will retry): %s", key,
                              sink.name, exc)
            if len(took) == len(self.sinks):
                done.append(key)
        if done:
            self.store.delivered(done)
            for key in done:
                self._delivered.pop(key, None)
        self.stats.undelivered = len(pending) - len(done)
        if self.stats.undelivered:
            self.stop_event.wait(1.0)  # a sink is down: retry soon, without spinning

    # --- partitions ----------------------------------------------------------------------

    def _refresh_assignment(self) -> None:
        now = time.monotonic()
        if now - self._last_refresh < _REFRESH_S:
            return
        self._last_refresh = now
        wanted: set[TopicPartitionKey] = set()
        for topic in self._topics:
            partitions = self._consumer.partitions_for_topic(topic)
            for p in partitions or ():
                wanted.add((topic, p))
        if wanted == self._assigned:
            return
        from kafka import TopicPartition

        positions = {tp: self._position(tp) for tp in self._assigned}
        self._consumer.assign([TopicPartition(t, p) for t, p in sorted(wanted)])
        for t, p in sorted(wanted):
            nxt = positions.get((t, p), self._next.get((t, p)))
            if nxt is None:
                self._consumer.seek_to_beginning(TopicPartition(t, p))
            else:
                self._consumer.seek(TopicPartition(t, p), nxt)
        if self._assigned:
            log.info("partitions now %s", sorted(wanted))
        self._assigned = wanted

    def _position(self, tp: TopicPartitionKey) -> int | None:
        return self._next.get(tp)


class _Rejected(Exception):
    """A record that is well-formed JSON but not acceptable here (the dead-letter reason)."""


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."
