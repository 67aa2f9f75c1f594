"""Settings of ``consumers detect``: every option is also an environment variable HERA_*."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from capture.topics import DEFAULT_TABLES

_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")


class DetectSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERA_", frozen=True, extra="forbid")

    bootstrap_servers: str = Field(description="Kafka bootstrap servers, HOST:PORT[,HOST:PORT]")
    topic_prefix: str = "hera"
    tables: tuple[str, ...] = DEFAULT_TABLES
    dsn: str | None = None  # where critical_system_alerts lives; also shown in replay commands
    rules: Path | None = None
    state: Path = Path("detect-state.sqlite")
    archive_dir: str = "./archive"
    poll_ms: int = Field(100, ge=1, le=10_000)

    @field_validator("tables", mode="before")
    @classmethod
    def _split_tables(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(t.strip() for t in v.split(",") if t.strip())
        return v

    @field_validator("tables")
    @classmethod
    def _table_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one table to watch")
        for t in v:
            if not _TABLE_RE.match(t):
                raise ValueError(
                    f"{t!r} is not a schema-qualified name like public.core_relationships")
        return v
