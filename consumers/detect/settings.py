"""Settings of ``consumers detect``: every option is also an environment variable HERA_*."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from capture.topics import DEFAULT_TABLES, TableList


class DetectSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERA_", frozen=True, extra="forbid")

    bootstrap_servers: str = Field(description="Kafka bootstrap servers, HOST:PORT[,HOST:PORT]")
    topic_prefix: str = "hera"
    tables: TableList = DEFAULT_TABLES
    dsn: str | None = None  # where critical_system_alerts lives; also shown in replay commands
    rules: Path | None = None
    state: Path = Path("detect-state.sqlite")
    archive_dir: str = "./archive"
    poll_ms: int = Field(100, ge=1, le=10_000)
