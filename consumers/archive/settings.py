"""Settings of ``consumers archive``: every option is also an environment variable HERA_*;
the object store's credentials are the standard ``AWS_*`` variables (``StorageSettings``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hera_kit.kafka_settings import KafkaSettings


class ArchiveSettings(KafkaSettings):
    model_config = SettingsConfigDict(env_prefix="HERA_", frozen=True, extra="ignore")

    archive: str = Field(description="the archive: a directory or a URI such as "
                                     "s3://bucket/prefix (created if missing or empty)")
    topic_prefix: str = "hera"
    tables: tuple[str, ...] | None = None  # schema.table list; None: every table topic
    kafka_backend: Literal["kafka-python", "confluent"] = "kafka-python"
    batch_events: int = Field(50_000, gt=0)
    flush_interval_s: float = Field(1.0, gt=0)
    compact_interval_s: float = Field(60.0, gt=0)  # optimize + vacuum period
    # vacuum keeps unreferenced files this long: readers of older versions (--version,
    # --as-of) and queries running meanwhile need them; below an hour they would fail
    retention_hours: float = Field(168.0, ge=1)
    dedup_capacity: int = Field(1_000_000, gt=0)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in a container, for Prometheus
    new_archive_epoch: bool = False  # continue this archive with another stream

    @field_validator("tables", mode="before")
    @classmethod
    def _split_tables(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(t.strip() for t in v.split(",") if t.strip()) or None
        return v


class StorageSettings(BaseSettings):
    """The object store of an ``s3://`` archive, from the standard AWS variables (the same
    ones the AWS CLI and every S3 client read): AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL (S3-compatible stores: SeaweedFS,
    MinIO), AWS_ALLOW_HTTP (true for a plain-http endpoint). Unset ones are left to
    delta-rs' defaults (instance profile, ~/.aws). The secret is never logged."""

    model_config = SettingsConfigDict(env_prefix="AWS_", frozen=True, extra="ignore")

    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    region: str | None = None
    endpoint_url: str | None = None
    allow_http: bool | None = None

    def storage_options(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in ("access_key_id", "region", "endpoint_url"):
            value = getattr(self, name)
            if value is not None:
                out[f"AWS_{name.upper()}"] = value
        for name in ("secret_access_key", "session_token"):
            secret = getattr(self, name)
            if secret is not None:
                out[f"AWS_{name.upper()}"] = secret.get_secret_value()
        if self.allow_http is not None:
            out["AWS_ALLOW_HTTP"] = "true" if self.allow_http else "false"
        return out
