"""The guard's database operations: thin Python over the SQL functions of sql/.

Every function opens its own connection (the session's search_path pinned to the HERA schema)
and turns database errors into the named errors of guard.errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from guard.db import Connection, connect, translated
from guard.install import use_schema


@contextmanager
def session(dsn: str, schema: str = "public") -> Iterator[Connection]:
    conn = connect(dsn)
    with conn, translated():
        use_schema(conn, schema)
        yield conn


@dataclass(frozen=True)
class BackupTable:
    table_name: str
    source_table: str
    record_count: int
    wal_lsn: str


@dataclass(frozen=True)
class BackupResult:
    message: str
    tables: tuple[BackupTable, ...]


def take_backup(conn: Connection) -> BackupResult:
    """Run emergency_relationship_backup() in READ COMMITTED (it locks before it reads)."""
    row = conn.execute("SELECT emergency_relationship_backup()").fetchone()
    message = str(row[0]) if row else ""
    found = re.search(r"created: (\S+) ", message)
    rows = conn.execute(
        "SELECT table_name, source_table, record_count, wal_lsn::text FROM system_backups "
        "WHERE backup_group = (SELECT backup_group FROM system_backups WHERE table_name = %s) "
        "ORDER BY source_table DESC", (found.group(1) if found else "",)).fetchall()
    return BackupResult(message, tuple(
        BackupTable(str(r[0]), str(r[1]), int(str(r[2])), str(r[3])) for r in rows))


def backup(dsn: str, schema: str = "public") -> BackupResult:
    with session(dsn, schema) as conn:
        return take_backup(conn)


@dataclass(frozen=True)
class HealthCheck:
    check_name: str
    status: str
    severity: str
    details: str
    affected_count: int
    resolution_action: str


def read_health(conn: Connection) -> list[HealthCheck]:
    rows = conn.execute("SELECT check_name, status, severity, details, affected_count, "
                        "resolution_action FROM check_authentication_system_health()").fetchall()
    return [HealthCheck(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(str(r[4])), str(r[5]))
            for r in rows]


def health(dsn: str, schema: str = "public", *, record: bool = False) -> list[HealthCheck]:
    with session(dsn, schema) as conn:
        if record:
            conn.execute("SELECT record_authentication_health()")
        return read_health(conn)


def is_critical(checks: list[HealthCheck]) -> bool:
    return any(c.status == "CRITICAL" or c.severity in ("CRITICAL", "EMERGENCY")
               for c in checks)


@dataclass(frozen=True)
class RecoveryResult:
    recovery_status: str
    relationship_id: str
    dynamic_data_created: int
    message: str


def recover(dsn: str, user_id: str, org_id: str, role: str = "owner",
            schema: str = "public") -> RecoveryResult:
    with session(dsn, schema) as conn:
        row = conn.execute("SELECT * FROM emergency_auth_recovery(%s, %s::uuid, %s)",
                           (user_id, org_id, role)).fetchone()
    assert row is not None
    return RecoveryResult(str(row[0]), str(row[1]), int(str(row[2])), str(row[3]))


@dataclass(frozen=True)
class RestoreResult:
    restoration_status: str
    relationships_restored: int
    auth_relationships_restored: int
    errors_encountered: int
    already_present: int


def restore_backup(dsn: str, backup_table: str, schema: str = "public") -> RestoreResult:
    with session(dsn, schema) as conn:
        row = conn.execute("SELECT * FROM restore_relationships_from_backup(%s)",
                           (backup_table,)).fetchone()
    assert row is not None
    return RestoreResult(str(row[0]), *(int(str(v)) for v in row[1:5]))


@dataclass(frozen=True)
class ConstraintImpact:
    impact_level: str
    affected_relationships: int
    affected_auth_relationships: int
    sample_violations: tuple[str, ...]
    risk_assessment: str
    recommendation: str


def constraint_impact(conn: Connection, expression: str) -> ConstraintImpact:
    """The validator's verdict; raises InvalidConstraint for anything but a CHECK expression."""
    with translated():
        row = conn.execute("SELECT * FROM validate_smart_code_constraint_impact(%s)",
                           (expression,)).fetchone()
    assert row is not None
    samples = row[3] if isinstance(row[3], list) else []
    return ConstraintImpact(str(row[0]), int(str(row[1])), int(str(row[2])),
                            tuple(str(s) for s in samples), str(row[4]), str(row[5]))
