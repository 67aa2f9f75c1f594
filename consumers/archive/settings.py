"""Settings of ``consumers archive``: every option is also an environment variable HERA_*."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ArchiveSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERA_", frozen=True, extra="ignore")

    bootstrap_servers: str = Field(description="Kafka bootstrap servers, HOST:PORT[,...]")
    archive: Path = Field(description="the archive directory (created if missing or empty)")
    topic_prefix: str = "hera"
    tables: tuple[str, ...] | None = None  # schema.table list; None: every table topic
    kafka_backend: Literal["kafka-python", "confluent"] = "kafka-python"
    batch_events: int = Field(50_000, gt=0)
    flush_interval_s: float = Field(1.0, gt=0)
    compact_interval_s: float = Field(30.0, gt=0)
    grace_s: float = Field(600.0, ge=0)  # compacted-away segments stay this long
    dedup_capacity: int = Field(1_000_000, gt=0)

    @field_validator("tables", mode="before")
    @classmethod
    def _split_tables(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(t.strip() for t in v.split(",") if t.strip()) or None
        return v
