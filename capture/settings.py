"""Capture settings: every option of ``capture run`` is also an environment variable HERA_*."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from capture.topics import DEFAULT_TABLES, TableList

_SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")


class CaptureSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERA_", frozen=True, extra="forbid")

    dsn: str = Field(description="libpq connection string of the captured database")
    bootstrap_servers: str = Field(description="Kafka bootstrap servers, HOST:PORT[,HOST:PORT]")
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
    heartbeat_interval_s: float = 10.0
    confirm_interval_s: float = 0.5
    status_interval_s: float = 5.0
    new_snapshot: bool = False
    snapshot_batch_rows: int = 5000
    max_in_flight: int = Field(20_000, ge=100)  # records sent but not yet acknowledged
    max_in_flight_bytes: int = Field(32 * 1024 * 1024, ge=1024 * 1024)
    max_backoff_s: float = 30.0

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
