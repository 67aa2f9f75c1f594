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

Two backends behind the same interface (``open_source(..., backend=)``): ``kafka-python``
(the required client, the default) and ``confluent`` (the ``fast`` extra; ~20x the fetch
rate of kafka-python here, measured in bench/archive.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal, NamedTuple, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from capture.kafka_admin import ensure_topics
from capture.topics import alerts_topic, deadletter_topic, table_topic, transaction_topic

log = logging.getLogger(__name__)


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
    def cluster_id(self) -> str | None: ...
    def partitions(self) -> set[tuple[str, int]]: ...
    def start_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]: ...
    def end_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]: ...
    # the high watermark each assigned partition's last fetch reported (lag metrics)
    def fetched_ends(self) -> dict[tuple[str, int], int]: ...


def select_topics(existing: set[str], prefix: str, tables: tuple[str, ...] | None,
                  include_transactions: bool) -> list[str]:
    if tables is None:
        wanted = {t for t in existing if is_table_topic(t, prefix)}
    else:
        wanted = {table_topic(prefix, *t.split(".", 1)) for t in tables} & existing
    if include_transactions and transaction_topic(prefix) in existing:
        wanted.add(transaction_topic(prefix))
    return sorted(wanted)


def dead_letter_value(record: Record, reason: str) -> bytes:
    return json.dumps({
        "reason": reason, "topic": record.topic, "partition": record.partition,
        "offset": record.offset,
        "key": None if record.key is None else record.key.decode("utf-8", "replace"),
        "value": None if record.value is None else record.value.decode("utf-8", "replace"),
    }).encode()


def open_source(bootstrap_servers: str, prefix: str, tables: tuple[str, ...] | None,
                backend: Backend = "kafka-python") -> RecordSource:
    if backend == "confluent":
        return ConfluentSource(bootstrap_servers, prefix, tables)
    return KafkaSource(bootstrap_servers, prefix, tables)


class KafkaSource:
    def __init__(self, bootstrap_servers: str, prefix: str, tables: tuple[str, ...] | None,
                 *, include_transactions: bool = True, max_poll_records: int = 20_000) -> None:
        self.prefix = prefix
        self.tables = tables  # "schema.table" names, or None for every table topic
        self.include_transactions = include_transactions
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=max_poll_records,
            fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_wait_ms=100,
            # a consumer never creates topics: after the broker lost its data, its metadata
            # requests must not bring the topics back empty (the archiver would then fetch
            # past their end instead of seeing that they are gone)
            allow_auto_create_topics=False,
        )
        self._producer: KafkaProducer | None = None
        self._bootstrap = bootstrap_servers
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

    def cluster_id(self) -> str | None:
        self._consumer.topics()  # a metadata request: the broker answers (or raises)
        cid = self._consumer._client.cluster.cluster_id
        return None if cid is None else str(cid)

    def partitions(self) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        for topic in self._consumer.topics():
            out.update((topic, p) for p in self._consumer.partitions_for_topic(topic) or ())
        return out

    def start_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        got = self._consumer.beginning_offsets([TopicPartition(t, p) for t, p in tps])
        return {(tp.topic, tp.partition): int(o) for tp, o in got.items()}

    def end_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        got = self._consumer.end_offsets([TopicPartition(t, p) for t, p in tps])
        return {(tp.topic, tp.partition): int(o) for tp, o in got.items()}

    def fetched_ends(self) -> dict[tuple[str, int], int]:
        out = {}
        for tp in self._assigned:
            hw = self._consumer.highwater(tp)
            if hw is not None:
                out[(tp.topic, tp.partition)] = int(hw)
        return out

    def poll(self, timeout_ms: int = 200) -> list[Record]:
        if not self._assigned:
            return []
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        return [Record(r.topic, r.partition, r.offset, r.key, r.value)
                for recs in batches.values() for r in recs]

    def dead_letter(self, record: Record, reason: str) -> None:
        """Publish ``record`` with ``reason`` to ``<prefix>.deadletter`` (flush before commit)."""
        if self._producer is None:
            ensure_topics(self._bootstrap, [deadletter_topic(self.prefix)])
            self._producer = KafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        self._producer.send(deadletter_topic(self.prefix), key=record.key,
                            value=dead_letter_value(record, reason))

    def flush(self) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=30)

    def close(self) -> None:
        self.flush()
        if self._producer is not None:
            self._producer.close(timeout=10)
        self._consumer.close()


class ConfluentSource:
    """The same interface over confluent-kafka (librdkafka). No group is joined: ``assign``
    with explicit offsets; the ``group.id`` librdkafka insists on is never used."""

    def __init__(self, bootstrap_servers: str, prefix: str, tables: tuple[str, ...] | None,
                 *, include_transactions: bool = True, max_poll_records: int = 20_000) -> None:
        from confluent_kafka import Consumer

        self.prefix = prefix
        self.tables = tables
        self.include_transactions = include_transactions
        self._max = max_poll_records
        self._bootstrap = bootstrap_servers
        self._consumer: Any = Consumer({
            "bootstrap.servers": bootstrap_servers, "group.id": f"unused-{prefix}",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "enable.partition.eof": False, "fetch.wait.max.ms": 100,
        })
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

    def cluster_id(self) -> str | None:
        cid = self._consumer.list_topics(timeout=10).cluster_id
        return None if cid is None else str(cid)

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
        from confluent_kafka import KafkaException

        if not self._assigned:
            return []
        out: list[Record] = []
        for m in self._consumer.consume(self._max, timeout_ms / 1000):
            if m.error() is not None:
                raise KafkaException(m.error())
            out.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value()))
        return out

    def dead_letter(self, record: Record, reason: str) -> None:
        from confluent_kafka import Producer

        if self._producer is None:
            ensure_topics(self._bootstrap, [deadletter_topic(self.prefix)])
            self._producer = Producer({"bootstrap.servers": self._bootstrap, "acks": "all"})
        self._producer.produce(deadletter_topic(self.prefix), key=record.key,
                               value=dead_letter_value(record, reason))

    def flush(self) -> None:
        if self._producer is not None and self._producer.flush(30) != 0:
            raise RuntimeError("dead-letter records not acknowledged within 30 s")

    def close(self) -> None:
        self.flush()
        self._consumer.close()
