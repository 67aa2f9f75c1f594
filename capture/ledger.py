"""What capture itself published last about a slot: the newest StreamMarker in Kafka.

capture publishes a PROGRESS marker *before* it confirms that LSN to PostgreSQL, so for a slot
that only capture moved, ``confirmed_flush_lsn <= last marker lsn`` always holds. A slot that
is further than anything capture published was advanced, or dropped and re-created, behind its
back: changes in between may be missing, and capture refuses to guess.
"""

from __future__ import annotations

import json

from capture.errors import BrokerError
from capture.event import StreamMarker, parse_transaction_topic
from capture.topics import transaction_topic
from hera_kit.kafka_config import KafkaConfig, as_config

_CHUNK = 20_000


def last_marker(bootstrap_servers: KafkaConfig | str, prefix: str, slot: str, db: str,
                timeout_s: float = 15.0, at_most_lsn: int | None = None) -> StreamMarker | None:
    """Scan ``<prefix>.transaction`` backwards in chunks for the newest marker of this slot
    (with ``at_most_lsn``: the newest whose ``lsn`` is not past it)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    topic = transaction_topic(prefix)
    try:
        consumer = KafkaConsumer(
            **as_config(bootstrap_servers).kafka_python(),
            enable_auto_commit=False,
            request_timeout_ms=int(timeout_s * 1000) + 1000,
            client_id="hera-guard-capture-ledger",
        )
    except KafkaError as exc:
        raise BrokerError.unreachable(bootstrap_servers, exc) from exc
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        best: StreamMarker | None = None
        for p in sorted(partitions):
            tp = TopicPartition(topic, p)
            consumer.assign([tp])
            begin = consumer.beginning_offsets([tp])[tp]
            hi = _true_end(consumer, tp, consumer.end_offsets([tp])[tp], timeout_s)
            while hi > begin:
                lo = max(begin, hi - _CHUNK)
                found = _scan(consumer, tp, lo, hi, slot, db, timeout_s, at_most_lsn)
                if found is not None:
                    if best is None or found.lsn > best.lsn:
                        best = found
                    break
                hi = lo
        return best
    finally:
        consumer.close()


def _true_end(consumer: object, tp: object, reported: int, timeout_s: float) -> int:
    """The partition's real end: tansu's ListOffsets under-reports it (last batch base + 1),
    the high watermark of a fetch does not."""
    import time

    c = consumer  # kafka-python is untyped
    c.seek(tp, max(0, reported - 1))  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout_s
    while True:
        c.poll(timeout_ms=200, max_records=1)  # type: ignore[attr-defined]
        hw = c.highwater(tp)  # type: ignore[attr-defined]
        if hw is not None:
            return max(int(hw), reported)
        if time.monotonic() > deadline:
            raise BrokerError(f"timed out reading {tp} from the broker")


def _scan(consumer: object, tp: object, lo: int, hi: int, slot: str, db: str,
          timeout_s: float, at_most_lsn: int | None = None) -> StreamMarker | None:
    import time

    c = consumer  # kafka-python is untyped
    c.seek(tp, lo)  # type: ignore[attr-defined]
    newest: StreamMarker | None = None
    pos = lo
    deadline = time.monotonic() + timeout_s
    while pos < hi:
        batch = c.poll(timeout_ms=1000, max_records=5000)  # type: ignore[attr-defined]
        for records in batch.values():
            for rec in records:
                pos = rec.offset + 1
                if rec.offset >= hi:
                    break
                try:
                    item = parse_transaction_topic(rec.value)
                except (ValueError, json.JSONDecodeError):
                    continue
                if (isinstance(item, StreamMarker) and item.slot == slot and item.db == db
                        and (at_most_lsn is None or item.lsn <= at_most_lsn)):
                    newest = item
        if not batch and time.monotonic() > deadline:
            raise BrokerError(f"timed out reading {tp} from the broker")
    return newest
