"""The alert: one per incident, frozen, with what an operator needs to act on it."""

from __future__ import annotations

import shlex
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import BaseModel, ConfigDict

from capture.event import Author, format_lsn

# Alert ids are uuid5 of (rule, commit LSN, scope): a re-delivered alert keeps its id, so
# the PostgreSQL sink's ON CONFLICT and Kafka readers can drop the duplicate.
_ALERT_NAMESPACE = uuid.UUID("6f1c2b0e-8a57-4e0b-9a43-3c1d8f5e7a21")

DSN_PLACEHOLDER = "<DSN>"


class Severity(StrEnum):
    """The plan's levels (critical_system_alerts.severity CHECK)."""

    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    EMERGENCY = "EMERGENCY"


class Rule(StrEnum):
    MASS_DELETION = "MASS_RELATIONSHIP_DELETION"
    TRUNCATE = "TABLE_TRUNCATED"
    ORPHANED_USER = "USER_ORPHANED"
    ROLE_REMOVED = "ROLE_DATA_REMOVED"
    SMART_CODE = "NON_COMPLIANT_SMART_CODE"


class TransactionRef(BaseModel):
    """The offending transaction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    xid: int
    commit_lsn: str  # PostgreSQL's spelling, 0/16B3748
    commit_time: datetime  # UTC


class Alert(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID
    severity: Severity
    rule: Rule
    organization: str | None  # None when the incident spans several organizations
    message: str
    counts: dict[str, int]
    by_organization: dict[str, int]
    transaction: TransactionRef
    samples: tuple[dict[str, Any], ...]
    replay_command: str
    detected_at: datetime  # UTC, from the detector's clock
    # Who wrote the transaction (capture.event.Author; None: no hera.author message), and the
    # command that undoes everything its actor did (None without an actor).
    author: Author | None = None
    actor_replay_command: str | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def alert_id(rule: Rule, commit_lsn: int, scope: str) -> uuid.UUID:
    return uuid.uuid5(_ALERT_NAMESPACE, f"{rule.value}|{format_lsn(commit_lsn)}|{scope}")


def redact_dsn(dsn: str | None) -> str:
    """The DSN without its password (never print secrets), or the placeholder."""
    if not dsn:
        return DSN_PLACEHOLDER
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # an unparsable DSN is printed as the placeholder, never raw
        return DSN_PLACEHOLDER
    params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def actor_replay_command(archive_dir: str, actor: str | None, dsn: str | None) -> str | None:
    """The command that undoes everything ``actor`` did (as a dry run first)."""
    if not actor:
        return None
    return shlex.join(["replay", "--archive", archive_dir, "--revert-actor", actor, "--dsn",
                       redact_dsn(dsn), "--dry-run"])


def replay_command(archive_dir: str, xid: int, dsn: str | None) -> str:
    """The exact command that undoes transaction ``xid`` (as a dry run first)."""
    return shlex.join(
        ["replay", "--archive", archive_dir, "--revert-xid", str(xid), "--dsn",
         redact_dsn(dsn), "--dry-run"]
    )
