"""What the capture service needs of its settings, as one frozen value: settings -> options,
the same first step as ``detect_options`` and ``archive_options``.

The service, its stream runner and its position read these fields and nothing else: the
settings object (pydantic, the environment, the CLI's flags) stays at the edge, so library
code and tests can build a service without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from capture.settings import CaptureSettings, Compression
    from hera_kit.kafka_config import KafkaConfig


@dataclass(frozen=True)
class CaptureOptions:
    """One capture's wiring: where it reads and writes, and its bounds (see CaptureSettings
    for each field's meaning and default)."""

    dsn: str
    kafka: KafkaConfig  # the broker connection: servers, TLS/SASL
    slot: str
    topic_prefix: str
    tables: tuple[str, ...]
    topic_partitions: int
    topic_replication_factor: int
    kafka_backend: Literal["kafka-python", "confluent"]
    plugin: Literal["auto", "wal2json", "pgoutput"]
    heartbeat_interval_s: float
    confirm_interval_s: float
    new_snapshot: bool
    snapshot_batch_rows: int
    reread_chunk_rows: int
    max_in_flight: int
    max_in_flight_bytes: int
    max_backoff_s: float
    stop_timeout_s: float
    ready_ack_timeout_s: float
    max_message_bytes: int
    compression: Compression


def capture_options(s: CaptureSettings) -> CaptureOptions:
    """settings -> options (the one place ``capture run``'s settings are read)."""
    return CaptureOptions(
        dsn=s.dsn, kafka=s.kafka, slot=s.slot, topic_prefix=s.topic_prefix,
        tables=tuple(s.tables), topic_partitions=s.topic_partitions,
        topic_replication_factor=s.topic_replication_factor, kafka_backend=s.kafka_backend,
        plugin=s.plugin, heartbeat_interval_s=s.heartbeat_interval_s,
        confirm_interval_s=s.confirm_interval_s, new_snapshot=s.new_snapshot,
        snapshot_batch_rows=s.snapshot_batch_rows, reread_chunk_rows=s.reread_chunk_rows,
        max_in_flight=s.max_in_flight, max_in_flight_bytes=s.max_in_flight_bytes,
        max_backoff_s=s.max_backoff_s, stop_timeout_s=s.stop_timeout_s,
        ready_ack_timeout_s=s.ready_ack_timeout_s, max_message_bytes=s.max_message_bytes,
        compression=s.compression)
