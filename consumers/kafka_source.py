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
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from capture.topics import alerts_topic, deadletter_topic, table_topic, transaction_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
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
        )
        self._producer: KafkaProducer | None = None
        self._bootstrap = bootstrap_servers
        self._assigned: set[TopicPartition] = set()

    def wanted_topics(self) -> list[str]:
        existing = self._consumer.topics()
        if self.tables is None:
            wanted = {t for t in existing if is_table_topic(t, self.prefix)}
        else:
            wanted = {table_topic(self.prefix, *t.split(".", 1)) for t in self.tables}
            wanted &= existing
        if self.include_transactions and transaction_topic(self.prefix) in existing:
            wanted.add(transaction_topic(self.prefix))
        return sorted(wanted)

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

    def poll(self, timeout_ms: int = 200) -> list[Record]:
        if not self._assigned:
            return []
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        return [Record(r.topic, r.partition, r.offset, r.key, r.value)
                for recs in batches.values() for r in recs]

    def dead_letter(self, record: Record, reason: str) -> None:
        """Publish ``record`` with ``reason`` to ``<prefix>.deadletter`` (flush before commit)."""
        if self._producer is None:
            self._producer = KafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        body = {
            "reason": reason, "topic": record.topic, "partition": record.partition,
            "offset": record.offset,
            "key": None if record.key is None else record.key.decode("utf-8", "replace"),
            "value": None if record.value is None else record.value.decode("utf-8", "replace"),
        }
        self._producer.send(deadletter_topic(self.prefix), key=record.key,
                            value=json.dumps(body).encode())

    def flush(self) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=30)

    def close(self) -> None:
        self.flush()
        if self._producer is not None:
            self._producer.close(timeout=10)
        self._consumer.close()
