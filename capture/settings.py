"""Capture settings: every option of ``capture run`` is also an environment variable HERA_*."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from capture.topics import DEFAULT_TABLES, TableList
from hera_kit.kafka_settings import KafkaSettings

_SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")
MIB = 1024 * 1024
# librdkafka's ceiling for message.max.bytes; kafka-python has none, the broker has its own
# (socket.request.max.bytes, checked at start by capture.kafka_admin).
MAX_MESSAGE_BYTES_CEILING = 1_000_000_000
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


class CaptureSettings(KafkaSettings):
    model_config = SettingsConfigDict(env_prefix="HERA_", frozen=True, extra="forbid")

    dsn: str = Field(description="libpq connection string of the captured database")
    slot: str = "hera_guard"
    topic_prefix: str = "hera"
    tables: TableList = DEFAULT_TABLES
    topic_partitions: int = Field(1, ge=1)
    topic_replication_factor: int = Field(1, ge=1)
    kafka_backend: Literal["kafka-python", "confluent"] = "kafka-python"
    # The output plugin of a new slot (an existing slot keeps its own); auto: wal2json when
    # the server's is exact (>= 2.6), else pgoutput.
    plugin: Literal["auto", "wal2json", "pgoutput"] = "auto"
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    heartbeat_interval_s: float = Field(10.0, gt=0)
    confirm_interval_s: float = Field(0.5, gt=0)
    status_interval_s: float = Field(5.0, gt=0)
    new_snapshot: bool = False
    snapshot_batch_rows: int = Field(5000, ge=1)
    # Rows per chunk of an online re-read (capture/reread.py): capture holds one chunk.
    reread_chunk_rows: int = Field(500, ge=1)
    max_in_flight: int = Field(20_000, ge=100)  # records sent but not yet acknowledged
    max_in_flight_bytes: int = Field(32 * MIB, ge=MIB)
    max_backoff_s: float = Field(30.0, gt=0)
    # How long a stop (SIGTERM) waits for the broker to acknowledge what is in flight before
    # it leaves the rest unconfirmed (re-sent by the next start); the process is gone within
    # a few seconds more in every phase.
    stop_timeout_s: float = Field(3.0, gt=0, description=(
        "how long a stop (SIGTERM) waits for the broker's acknowledgements; what is not "
        "acknowledged by then is re-sent by the next start"))
    # Not ready (/readyz 503, hera_capture_ready 0) while records have waited this long for
    # the broker's acknowledgement and none arrived meanwhile (a hung broker).
    ready_ack_timeout_s: float = Field(5.0, gt=0, description=(
        "not ready while records have waited this long for the broker and none was "
        "acknowledged meanwhile (a hung broker)"))
    # The largest event (key + value) capture may publish: the topics' max.message.bytes and
    # the producers' request size. With REPLICA IDENTITY FULL an UPDATE carries the old and the
    # new row, so a 1 MB value makes a 2 MB event; 16 MiB leaves HERA rows room.
    max_message_bytes: int = Field(16 * MIB, ge=MIB, le=MAX_MESSAGE_BYTES_CEILING)
    # lz4: the cheapest codec for both clients (measured here, capture catching up: +40-60%
    # over gzip with kafka-python, +30-60% with confluent; fewer bytes for the broker than
    # none). kafka-python reads and writes it through the ``lz4`` package, a dependency of
    # hera-guard, so every reader installed with it decodes it; confluent has it built in.
    # gzip needs no package at all (for readers installed otherwise).
    compression: Compression = "lz4"

    @field_validator("slot")
    @classmethod
    def _slot_name(cls, v: str) -> str:
        if not _SLOT_RE.match(v):
            raise ValueError("slot names are 1-63 characters of a-z, 0-9 and _")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9._-]{1,100}$", v):
            raise ValueError("topic prefixes are made of letters, digits, '.', '_' and '-'")
        return v


class StatusSettings(BaseSettings):
    """``capture status``: the same HERA_DSN / HERA_SLOT as ``capture run``."""

    model_config = SettingsConfigDict(env_prefix="HERA_", frozen=True, extra="ignore")

    dsn: str = Field(min_length=1,
                     description="libpq connection string of the captured database")
    slot: str = "hera_guard"
    # Optional: with the broker, status also lists the online re-reads (from the newest
    # PROGRESS marker on <prefix>.transaction).
    bootstrap_servers: str | None = None
    topic_prefix: str = "hera"
