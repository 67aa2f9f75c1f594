"""Reading the change topics with manual partition assignment, offsets kept by the caller.

Shared consumer plumbing (the archiver uses it; ``consumers detect`` may too): no consumer
group (tansu's group joins are slow, and a group's committed offsets could not be stored
atomically with our own state anyway). The caller passes the next offset per
(topic, partition) it has durably stored; partitions it has never seen start at the
beginning. New topics matching the selection are picked up by ``refresh()``.

    src = KafkaSource(bootstrap, prefix="hera", tables=None)   # None: every table topic
    src.assign(stored_offsets)                                 # {(topic, partition): next}
    for rec in src.poll(timeout_ms=200): ...                   # Record(topic, ..., value)
    src.refresh(stored_offsets)                                # pick up new table topics
    src.dead_letter(rec, "reason"); src.flush()                # <prefix>.deadletter
    src.cluster_id()                                           # the Kafka cluster's id
    src.watermarks()                                           # {(topic, p): (low, high)}
    src.highwaters()                                           # cached, from the last fetches
    src.topic_ids()                                            # {topic: id}, new if re-created

Identity checks (capture/identity.py): ``cluster_id()`` names the cluster (tansu answers a
constant ``tansu_cluster``, so a broker restarted empty is told by its offsets, not its id);
``watermarks()`` gives each assigned partition's start and end, the end being the high
watermark of a fetch (tansu's ListOffsets under-reports it, see capture/ledger.py): stored
offsets beyond the end, or a start past them, mean the stream the caller knew is gone.
``topic_ids()`` tells a re-created topic even when its new end is past the stored offsets.
``highwaters()`` costs nothing (what the consumer's fetches last said): a poll loop can
compare it with its positions after every poll. Fetching beyond the end of a partition is no
error on tansu (an empty answer), so nothing else would say so.

Two backends behind the same interface (``open_source(..., backend=)``): ``kafka-python``
(the required client, the default) and ``confluent`` (the ``fast`` extra; ~20x the fetch
rate of kafka-python here, measured in bench/archive.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from capture.errors import BrokerError
from capture.kafka_admin import ensure_topics
from capture.topics import alerts_topic, deadletter_topic, table_topic, transaction_topic
from consumers.deadletter import DeadLetter
from consumers.kafka_facts import (
    TopicPartitionKey,
    fetch_watermarks,
    kafka_cluster_id,
    kafka_topic_ids,
    list_offsets,
)
from hera_kit.kafka_config import KafkaConfig, as_config

log = logging.getLogger("hera.consumers.kafka_source")  # under "hera": the JSON log


class Record(NamedTuple):
    """One Kafka record. A tuple, not a frozen dataclass: built once per record on the
    archiver's hot path, where the dataclass's ``__init__`` measured 3x the cost."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def is_table_topic(topic: str, prefix: str) -> bool:
    """``<prefix>.<schema>.<table>``: exactly two name parts after the prefix."""
    if not topic.startswith(prefix + "."):
        return False
    rest = topic[len(prefix) + 1:]
    special = {transaction_topic(prefix), deadletter_topic(prefix), alerts_topic(prefix)}
    return rest.count(".") == 1 and topic not in special


Backend = Literal["kafka-python", "confluent"]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class OffsetOutOfRange(Exception):
    """A position the broker no longer has (start moved past it, or end before it), raised
    by ``poll`` of a source opened with ``offset_reset="none"`` instead of silently jumping
    to another offset."""

    def __init__(self, partitions: set[TopicPartitionKey]) -> None:
        super().__init__(", ".join(f"{t}[{p}]" for t, p in sorted(partitions)))
        self.partitions = partitions


class RecordSource(Protocol):
    prefix: str

    def assign(self, offsets: dict[tuple[str, int], int]) -> None: ...
    def refresh(self, offsets: dict[tuple[str, int], int]) -> None: ...
    def poll(self, timeout_ms: int = 200) -> list[Record]: ...
    def dead_letter(self, record: Record, reason: str) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    # stream identity (the archiver's checks): the cluster id the broker reports (None if
    # none), the partitions of the existing topics, and each partition's first offset
    def cluster_id(self, timeout_s: float = 15.0) -> str | None: ...
    def partitions(self) -> set[tuple[str, int]]: ...
    def start_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]: ...
    def end_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]: ...
    # the high watermark each assigned partition's last fetch reported (lag metrics)
    def fetched_ends(self) -> dict[tuple[str, int], int]: ...


class CheckedSource(RecordSource, Protocol):
    """A RecordSource that can also answer identity checks (both backends are one; kept
    apart so fakes of the plain RecordSource in tests stay valid)."""

    def assigned(self) -> set[TopicPartitionKey]: ...
    def cluster_id(self, timeout_s: float = 15.0) -> str | None: ...
    def topic_ids(self, topics: Iterable[str] | None = None,
                  timeout_s: float = 15.0) -> dict[str, str]: ...
    def watermarks(self, partitions: Iterable[TopicPartitionKey] | None = None,
                   ) -> dict[TopicPartitionKey, tuple[int, int]]: ...
    def highwaters(self) -> dict[TopicPartitionKey, int]: ...


def select_topics(existing: set[str], prefix: str, tables: tuple[str, ...] | None,
                  include_transactions: bool) -> list[str]:
    if tables is None:
        wanted = {t for t in existing if is_table_topic(t, prefix)}
    else:
        wanted = {table_topic(prefix, *t.split(".", 1)) for t in tables} & existing
    if include_transactions and transaction_topic(prefix) in existing:
        wanted.add(transaction_topic(prefix))
    return sorted(wanted)


def dead_letter_value(record: Record, reason: str, consumer: str = "archive",
                      now: datetime | None = None) -> bytes:
    """The dead-letter record's value: ``consumers.deadletter.DeadLetter`` as JSON."""
    return DeadLetter.of(record, reason, consumer, now or utc_now()).to_json()


def dead_letter_record(record: Record, reason: str, consumer: str,
                       now: datetime) -> tuple[bytes | None, bytes]:
    """Key and value of the dead-letter record: the whole record, or a bounded reference to
    one too large to keep (consumers.deadletter), so publishing it never fails on size."""
    letter = DeadLetter.of(record, reason, consumer, now)
    if letter.is_reference:
        log.warning("dead letter %s[%d]@%d is a reference: the record is too large to copy",
                    record.topic, record.partition, record.offset)
    return letter.kafka_key(record.key), letter.to_json()


def open_source(bootstrap_servers: KafkaConfig | str, prefix: str, tables: tuple[str, ...] | None,
                backend: Backend = "kafka-python", **options: Any) -> CheckedSource:
    """``options``: include_transactions, max_poll_records, fetch_max_wait_ms, consumer
    (the name in dead letters), clock, check_crcs, offset_reset ("none": poll raises
    OffsetOutOfRange instead of jumping to the start); return_early (confluent only: a poll
    returns once anything arrived, not at the timeout; kafka-python always does)."""
    if backend == "confluent":
        return ConfluentSource(bootstrap_servers, prefix, tables, **options)
    options.pop("return_early", None)
    return KafkaSource(bootstrap_servers, prefix, tables, **options)


class _BrokerFacts:
    """Identity questions both backends answer the same way, through kafka-python side
    clients (one spelling of topic ids; the fetch high watermark, which tansu's ListOffsets
    under-reports and librdkafka's get_watermark_offsets would ask)."""

    _bootstrap: KafkaConfig

    def assigned(self) -> set[TopicPartitionKey]:
        raise NotImplementedError

    def topic_ids(self, topics: Iterable[str] | None = None,
                  timeout_s: float = 15.0) -> dict[str, str]:
        wanted = {t for t, _ in self.assigned()} if topics is None else topics
        return kafka_topic_ids(self._bootstrap, wanted, timeout_s)

    def watermarks(self, partitions: Iterable[TopicPartitionKey] | None = None,
                   ) -> dict[TopicPartitionKey, tuple[int, int]]:
        return fetch_watermarks(self._bootstrap,
                                self.assigned() if partitions is None else partitions)


class KafkaSource(_BrokerFacts):
    def __init__(self, bootstrap_servers: KafkaConfig | str, prefix: str,
                 tables: tuple[str, ...] | None,
                 *, include_transactions: bool = True, max_poll_records: int = 20_000,
                 fetch_max_wait_ms: int = 100, consumer: str = "archive",
                 clock: Clock = utc_now, check_crcs: bool = True,
                 offset_reset: Literal["earliest", "none"] = "earliest") -> None:
        self.prefix = prefix
        self.tables = tables  # "schema.table" names, or None for every table topic
        self.include_transactions = include_transactions
        self.consumer_name = consumer
        self._clock = clock
        self._bootstrap = as_config(bootstrap_servers)
        self._consumer = KafkaConsumer(
            **self._bootstrap.kafka_python(), group_id=None, enable_auto_commit=False,
            auto_offset_reset=offset_reset, max_poll_records=max_poll_records,
            fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_wait_ms=fetch_max_wait_ms,
            # kafka-python checks CRC32C in pure Python: 70% of the detector's CPU when
            # profiled; the detector turns it off (TCP checksums the bytes and the broker
            # validated each batch on write), the archiver keeps it.
            check_crcs=check_crcs,
            # a consumer never creates topics: after the broker lost its data, its metadata
            # requests must not bring the topics back empty (the archiver would then fetch
            # past their end instead of seeing that they are gone)
            allow_auto_create_topics=False,
        )
        self._producer: KafkaProducer | None = None
        self._assigned: set[TopicPartition] = set()

    def wanted_topics(self) -> list[str]:
        return select_topics(set(self._consumer.topics()), self.prefix, self.tables,
                             self.include_transactions)

    def assign(self, offsets: dict[tuple[str, int], int]) -> None:
        """Assign every partition of the wanted topics; seek to the stored offsets."""
        tps: set[TopicPartition] = set()
        for topic in self.wanted_topics():
            parts = self._consumer.partitions_for_topic(topic) or set()
            tps.update(TopicPartition(topic, p) for p in parts)
        if tps == self._assigned:
            return
        new = tps - self._assigned
        self._consumer.assign(sorted(tps))
        # kafka-python forgets positions on re-assign: seek every partition again
        for tp in sorted(tps):
            stored = offsets.get((tp.topic, tp.partition))
            if stored is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, stored)
        if new:
            log.info("consuming %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(new)))
        self._assigned = tps

    refresh = assign

    def partitions(self) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        for topic in self._consumer.topics():
            out.update((topic, p) for p in self._consumer.partitions_for_topic(topic) or ())
        return out

    def start_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        got = list_offsets(self._consumer, [TopicPartition(t, p) for t, p in tps], "beginning")
        return {(tp.topic, tp.partition): o for tp, o in got.items()}

    def end_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        got = list_offsets(self._consumer, [TopicPartition(t, p) for t, p in tps], "end")
        return {(tp.topic, tp.partition): o for tp, o in got.items()}

    def fetched_ends(self) -> dict[tuple[str, int], int]:
        out = {}
        for tp in self._assigned:
            hw = self._consumer.highwater(tp)
            if hw is not None:
                out[(tp.topic, tp.partition)] = int(hw)
        return out

    def poll(self, timeout_ms: int = 200) -> list[Record]:
        from kafka.errors import OffsetOutOfRangeError

        if not self._assigned:
            return []
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms)
        except OffsetOutOfRangeError as exc:
            raise OffsetOutOfRange({(tp.topic, tp.partition) for tp in exc.args[0]}) from None
        return [Record(r.topic, r.partition, r.offset, r.key, r.value)
                for recs in batches.values() for r in recs]

    def dead_letter(self, record: Record, reason: str) -> None:
        """Publish ``record`` with ``reason`` to ``<prefix>.deadletter`` (flush before commit)."""
        if self._producer is None:
            ensure_topics(self._bootstrap, [deadletter_topic(self.prefix)])
            self._producer = KafkaProducer(**self._bootstrap.kafka_python(), acks="all")
        key, value = dead_letter_record(record, reason, self.consumer_name, self._clock())
        self._producer.send(deadletter_topic(self.prefix), key=key, value=value)

    def flush(self) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=30)

    def assigned(self) -> set[TopicPartitionKey]:
        return {(tp.topic, tp.partition) for tp in self._assigned}

    def cluster_id(self, timeout_s: float = 15.0) -> str | None:
        return kafka_cluster_id(self._bootstrap, timeout_s)

    def highwaters(self) -> dict[TopicPartitionKey, int]:
        out: dict[TopicPartitionKey, int] = {}
        for tp in self._assigned:
            hw = self._consumer.highwater(tp)
            if hw is not None:
                out[(tp.topic, tp.partition)] = int(hw)
        return out

    def close(self) -> None:
        self.flush()
        if self._producer is not None:
            self._producer.close(timeout=10)
        self._consumer.close()


class ConfluentSource(_BrokerFacts):
    """The same interface over confluent-kafka (librdkafka). No group is joined: ``assign``
    with explicit offsets; the ``group.id`` librdkafka insists on is never used."""

    def __init__(self, bootstrap_servers: KafkaConfig | str, prefix: str,
                 tables: tuple[str, ...] | None,
                 *, include_transactions: bool = True, max_poll_records: int = 20_000,
                 fetch_max_wait_ms: int = 100, consumer: str = "archive",
                 clock: Clock = utc_now, check_crcs: bool = True,
                 return_early: bool = False,
                 offset_reset: Literal["earliest", "none"] = "earliest") -> None:
        from confluent_kafka import Consumer

        # librdkafka's consume(n, timeout) waits the whole timeout unless n records came:
        # fine for the archiver's batches, ~100 ms added to every alert for the detector,
        # which asks to return as soon as anything is there (``return_early``).
        self._return_early = return_early
        self.prefix = prefix
        self.tables = tables
        self.include_transactions = include_transactions
        self.consumer_name = consumer
        self._clock = clock
        self._max = max_poll_records
        self._bootstrap = as_config(bootstrap_servers)
        self._consumer: Any = Consumer(self._bootstrap.confluent({
            "group.id": f"unused-{prefix}",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "enable.partition.eof": False, "fetch.wait.max.ms": fetch_max_wait_ms,
            "log_level": 3, "check.crcs": check_crcs,
            # librdkafka's default is "largest": a lost position would silently skip to the
            # end. "earliest" as kafka-python's source; "error" raises OffsetOutOfRange.
            "auto.offset.reset": "error" if offset_reset == "none" else "earliest",
        }))
        self._producer: Any = None
        self._assigned: set[tuple[str, int]] = set()

    def assign(self, offsets: dict[tuple[str, int], int]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        meta = self._consumer.list_topics(timeout=10)
        wanted = select_topics(set(meta.topics), self.prefix, self.tables,
                               self.include_transactions)
        tps = {(t, p) for t in wanted for p in meta.topics[t].partitions}
        new = tps - self._assigned
        if not new:
            return
        self._consumer.incremental_assign([
            TopicPartition(t, p, offsets.get((t, p), OFFSET_BEGINNING)) for t, p in sorted(new)])
        log.info("consuming %s", ", ".join(f"{t}[{p}]" for t, p in sorted(new)))
        self._assigned |= new

    refresh = assign

    def partitions(self) -> set[tuple[str, int]]:
        meta = self._consumer.list_topics(timeout=10)
        return {(t, p) for t, m in meta.topics.items() for p in m.partitions}

    def start_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        from confluent_kafka import TopicPartition

        return {(t, p): int(self._consumer.get_watermark_offsets(
            TopicPartition(t, p), timeout=10)[0]) for t, p in tps}

    def end_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        from confluent_kafka import TopicPartition

        return {(t, p): int(self._consumer.get_watermark_offsets(
            TopicPartition(t, p), timeout=10)[1]) for t, p in tps}

    def fetched_ends(self) -> dict[tuple[str, int], int]:
        from confluent_kafka import TopicPartition

        out = {}
        for t, p in self._assigned:
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
            if high is not None and high >= 0:
                out[(t, p)] = int(high)
        return out

    def poll(self, timeout_ms: int = 200) -> list[Record]:
        from confluent_kafka import KafkaError, KafkaException

        if not self._assigned:
            return []
        out: list[Record] = []
        if self._return_early:
            msgs = self._consumer.consume(1, timeout_ms / 1000)
            if msgs:
                msgs += self._consumer.consume(self._max - 1, 0)
        else:
            msgs = self._consumer.consume(self._max, timeout_ms / 1000)
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() in (KafkaError._AUTO_OFFSET_RESET,
                                  KafkaError.OFFSET_OUT_OF_RANGE):
                    raise OffsetOutOfRange({(m.topic(), m.partition())})
                raise KafkaException(err)
            out.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value()))
        return out

    def dead_letter(self, record: Record, reason: str) -> None:
        from confluent_kafka import Producer

        if self._producer is None:
            ensure_topics(self._bootstrap, [deadletter_topic(self.prefix)])
            self._producer = Producer(self._bootstrap.confluent({"acks": "all"}))
        key, value = dead_letter_record(record, reason, self.consumer_name, self._clock())
        self._producer.produce(deadletter_topic(self.prefix), key=key, value=value)

    def flush(self) -> None:
        if self._producer is not None and self._producer.flush(30) != 0:
            raise RuntimeError("dead-letter records not acknowledged within 30 s")

    def assigned(self) -> set[TopicPartitionKey]:
        return set(self._assigned)

    def cluster_id(self, timeout_s: float = 15.0) -> str | None:
        from confluent_kafka import KafkaException

        try:
            cid = self._consumer.list_topics(timeout=timeout_s).cluster_id
        except KafkaException as exc:
            raise BrokerError.unreachable(self._bootstrap, exc) from exc
        return str(cid) if cid else None

    def highwaters(self) -> dict[TopicPartitionKey, int]:
        from confluent_kafka import TopicPartition

        out: dict[TopicPartitionKey, int] = {}
        for t, p in self._assigned:
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(t, p),
                                                              cached=True)
            if high is not None and high >= 0:
                out[(t, p)] = int(high)
        return out

    def close(self) -> None:
        self.flush()
        if self._producer is not None and hasattr(self._producer, "close"):
            self._producer.close()  # older confluent-kafka: freed with the object
        self._consumer.close()
