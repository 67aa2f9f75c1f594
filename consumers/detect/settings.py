"""Settings of ``consumers detect``: every option is also an environment variable HERA_*."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from capture.topics import DEFAULT_TABLES, TableList
from hera_kit.kafka_settings import KafkaSettings


class DetectSettings(KafkaSettings):
    model_config = SettingsConfigDict(env_prefix="HERA_", frozen=True, extra="forbid")

    topic_prefix: str = "hera"
    tables: TableList = DEFAULT_TABLES
    dsn: str | None = None  # where critical_system_alerts lives; also shown in replay commands
    rules: Path | None = None
    # Where the state lives: a directory the user names (never the working directory by
    # accident); --state names the file itself.
    state_dir: Path | None = None
    state: Path | None = None
    archive_dir: str = "./archive"
    poll_ms: int = Field(100, ge=1, le=10_000)
    kafka_backend: Literal["kafka-python", "confluent"] = "kafka-python"
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in a container, for Prometheus (as archive)
    webhook: str | None = Field(None, pattern=r"^https?://")
    webhook_secret: SecretStr | None = None
    webhook_format: Literal["json", "slack"] = "json"
    log_level: str = "INFO"

    def state_path(self) -> Path | None:
        if self.state is not None:
            return self.state
        if self.state_dir is not None:
            return self.state_dir / f"detect-{self.topic_prefix}.sqlite"
        return None
