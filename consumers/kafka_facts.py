"""What the broker itself says about the stream, for the consumers' identity checks: the
cluster id, each topic's id (new when a topic is re-created) and each partition's true start
and end. Each question uses a short-lived client of its own, so a caller's consumer and its
positions are untouched."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal

from capture.errors import BrokerError
from hera_kit.kafka_config import KafkaConfig, as_config

TopicPartitionKey = tuple[str, int]


def fetch_watermarks(bootstrap_servers: KafkaConfig | str,
                     partitions: Iterable[TopicPartitionKey],
                     timeout_s: float = 15.0) -> dict[TopicPartitionKey, tuple[int, int]]:
    """(low, high) of each partition, high as a fetch reports it (the true end on tansu,
    whose ListOffsets answers the base offset of the last batch + 1).

    A side consumer of its own, so the caller's positions are untouched; it seeks one
    record before the reported end and reads the high watermark of that fetch.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    tps = [TopicPartition(t, p) for t, p in sorted(set(partitions))]
    if not tps:
        return {}
    try:
        consumer = KafkaConsumer(**as_config(bootstrap_servers).kafka_python(),
                                 group_id=None, enable_auto_commit=False,
                                 fetch_max_wait_ms=10, max_partition_fetch_bytes=1024,
                                 request_timeout_ms=int(timeout_s * 1000) + 1000,
                                 bootstrap_timeout_ms=int(timeout_s * 1000),
                                 client_id="hera-guard-watermarks",
                                 # a partition deleted meanwhile must stay gone, not come
                                 # back empty with the broker's defaults
                                 allow_auto_create_topics=False)
    except KafkaError as exc:
        raise BrokerError.unreachable(bootstrap_servers, exc) from exc
    try:
        lows = list_offsets(consumer, tps, "beginning")
        reported = list_offsets(consumer, [tp for tp in tps if tp in lows], "end")
        tps = [tp for tp in tps if tp in reported]  # gone meanwhile: left out, as unknown
        if not tps:
            return {}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(0, reported[tp] - 1))
        deadline = time.monotonic() + timeout_s
        highs: dict[Any, int] = {}
        while len(highs) < len(tps):
            consumer.poll(timeout_ms=100, max_records=len(tps))
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is not None:
                    highs[tp] = max(int(hw), reported[tp])
            if time.monotonic() > deadline:
                # a partition deleted since its end was listed never answers a fetch: left
                # out like the others that vanished; one still on the broker is a timeout
                known = {(tp.topic, p) for tp in tps
                         for p in consumer.partitions_for_topic(tp.topic) or ()}
                if all(tp in highs or (tp.topic, tp.partition) not in known for tp in tps):
                    break
                raise BrokerError(f"timed out reading the end of {tps[0].topic} from "
                                  f"{bootstrap_servers}")
        return {(tp.topic, tp.partition): (lows[tp], highs[tp]) for tp in tps if tp in highs}
    except KafkaError as exc:
        raise BrokerError.unreachable(bootstrap_servers, exc) from exc
    finally:
        consumer.close()


def list_offsets(consumer: Any, tps: list[Any], which: Literal["beginning", "end"],
                 ) -> dict[Any, int]:
    """kafka-python's ``beginning_offsets``/``end_offsets`` for the partitions still on the
    broker. kafka-python (3.0) drops from its ListOffsets request a partition whose topic
    was deleted since its metadata named it (no leader any more) and then raises
    ``KeyError(TopicPartition)`` for it: that partition is left out of the answer, as one
    the broker does not have (the caller's stream check says what that means)."""
    ask = list(tps)
    while ask:
        try:
            got = (consumer.beginning_offsets if which == "beginning"
                   else consumer.end_offsets)(ask)
        except KeyError as exc:
            gone = exc.args[0] if exc.args else None
            if gone not in ask:
                raise
            ask.remove(gone)
            continue
        return {tp: int(o) for tp, o in got.items() if o is not None}
    return {}


def _admin(bootstrap_servers: KafkaConfig | str, timeout_s: float) -> Any:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        return KafkaAdminClient(**as_config(bootstrap_servers).kafka_python(),
                                client_id="hera-guard-identity",
                                request_timeout_ms=int(timeout_s * 1000),
                                bootstrap_timeout_ms=int(timeout_s * 1000))
    except KafkaError as exc:
        raise BrokerError.unreachable(bootstrap_servers, exc) from exc


_NO_TOPIC_ID = "00000000-0000-0000-0000-000000000000"


def kafka_topic_ids(bootstrap_servers: KafkaConfig | str, topics: Iterable[str],
                    timeout_s: float = 15.0) -> dict[str, str]:
    """topic -> its topic id (KIP-516; changes when a topic is deleted and re-created, and
    on tansu when the broker restarts empty). Topics the broker does not know, or gives no
    id for, are left out. Name only topics that exist: a metadata request may auto-create.
    """
    from kafka.errors import KafkaError

    names = sorted(set(topics))
    if not names:
        return {}
    admin = _admin(bootstrap_servers, timeout_s)
    try:
        described = admin.describe_topics(names)
    except KafkaError as exc:
        raise BrokerError.unreachable(bootstrap_servers, exc) from exc
    finally:
        admin.close()
    out: dict[str, str] = {}
    for t in described:
        tid = str(t.get("topic_id") or "")
        if t.get("error_code", 0) == 0 and tid and tid != _NO_TOPIC_ID:
            out[str(t["name"])] = tid
    return out


def kafka_cluster_id(bootstrap_servers: KafkaConfig | str, timeout_s: float = 15.0) -> str | None:
    """The cluster id the broker reports (DescribeCluster / Metadata), None if it has none."""
    from kafka.errors import KafkaError

    admin = _admin(bootstrap_servers, timeout_s)
    try:
        cid = admin.describe_cluster().get("cluster_id")
    except KafkaError as exc:
        raise BrokerError.unreachable(bootstrap_servers, exc) from exc
    finally:
        admin.close()
    return str(cid) if cid else None
