"""Settings of the `guard` commands: every option is also an environment variable HERA_*."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from capture.topics import DEFAULT_TABLES, TableList

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_DURATION_RE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '1h', '1h30m', '2d' -> timedelta (ValueError otherwise)."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION_RE.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration like 30m, 1h, 1h30m or 2d")
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNITS[unit]: int(number)})
    if total <= timedelta():
        raise ValueError("the duration must be positive")
    return total


class GuardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERA_", frozen=True, extra="forbid")

    dsn: str = Field(description="libpq connection string of the HERA database")
    db_schema: str = Field("public", description="schema holding the HERA tables")

    @field_validator("db_schema")
    @classmethod
    def _schema_name(cls, v: str) -> str:
        if not _SCHEMA_RE.match(v):
            raise ValueError("a schema name is a plain identifier like public")
        return v


class InstallSettings(GuardSettings):
    initial_backup: bool = True
    schedule: bool = True
    # --roles: the services' least-privilege login roles (guard.roles), for these captured
    # tables and the publication of this slot
    roles: bool = False
    tables: TableList = DEFAULT_TABLES
    slot: str = "hera_guard"


class HealthSettings(GuardSettings):
    json_output: bool = False
    record: bool = False


class RecoverSettings(GuardSettings):
    user: str
    org: str
    role: str = "owner"

    @field_validator("user", "role")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @field_validator("org")
    @classmethod
    def _org_uuid(cls, v: str) -> str:
        try:
            return str(uuid.UUID(v.strip()))
        except ValueError:
            raise ValueError(f"{v!r} is not an organization id (a UUID)") from None


class RestoreSettings(GuardSettings):
    backup_table: str

    @field_validator("backup_table")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()


class PredeploySettings(GuardSettings):
    staging_dsn: str | None = None
    deployment_script: Path | None = None
    new_constraint: str | None = None
    report_dir: Path = Path(".")

    @field_validator("deployment_script")
    @classmethod
    def _readable(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{v} is not a readable file")
        return v


class PostdeploySettings(GuardSettings):
    since: timedelta = timedelta(hours=1)

    @field_validator("since", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return parse_duration(v) if isinstance(v, str) else v
