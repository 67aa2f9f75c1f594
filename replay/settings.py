"""Settings of the replay CLI: every option also reads ``HERA_<NAME>`` from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.archive.settings import StorageSettings


class ReplaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERA_", extra="ignore")

    archive: str | None = None  # a directory or a URI (s3://bucket/prefix)
    # the object store's credentials: the standard AWS_* variables (not HERA_*), read when
    # the CLI builds the settings and handed to the archive readers explicitly
    _storage: StorageSettings = PrivateAttr(default_factory=StorageSettings)
    table: str = "public.core_relationships"
    until: str | None = None
    before_xid: int | None = None
    base_snapshot: str | None = None
    output: Path | None = None
    into_table: str | None = None
    replace: bool = False
    restore: bool = False
    revert_xid: list[int] | None = None  # repeatable; HERA_REVERT_XID=845 or [845, 846]
    revert_actor: str | None = None
    since: str | None = None  # --revert-actor: from this time (with zone)
    dsn: SecretStr | None = None  # never logged
    dry_run: bool = False
    force: bool = False
    skip_conflicts: bool = False
    allow_orphaning: bool = False
    allow_other_database: bool = False
    org: str | None = None
    relationship_type: str | None = None
    # DuckDB's memory bound for rebuilds ("2GB"); spilled beyond it into spill_dir
    memory_limit: str | None = None
    spill_dir: Path | None = None
    # replay checkpoint (see its --help)
    tables: str | None = Field(None, description="replay checkpoint: comma-separated "
                               "schema.table list (default: every archived table)")
    every_changes: int = Field(1_000_000, ge=1, description="replay checkpoint: checkpoint a "
                               "table after this many new changes")
    keep: int = Field(3, ge=1, description="replay checkpoint: checkpoints kept per table")
    retention_hours: float = Field(168.0, ge=0, description="replay checkpoint: files of "
                                   "removed checkpoints stay this long for running readers")
    verify: bool = Field(False, description="replay checkpoint: check every checkpoint "
                         "against a rebuild from the beginning")
    threads: int = Field(1, ge=1, description="replay checkpoint: DuckDB threads (1 leaves "
                         "the other cores to the archiver and capture)")

    def storage_options(self) -> dict[str, str]:
        return self._storage.storage_options()

    @field_validator("revert_xid", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, int | str) and not isinstance(value, bool):
            return [value]
        return value or None
