"""Helpers for the guard's integration tests: install the SQL layer into a test database,
read alerts, and small data builders. Plain functions (not fixtures) so test modules can
wrap them in their own fixtures without import tricks."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from guard.install import InstallReport, install
from tests.conftest import HeraDB
from tests.waiting import wait_until as _wait_until


def install_guard(db: HeraDB, *, initial_backup: bool = False,
                  schedule: bool = False) -> InstallReport:
    return install(db.dsn, initial_backup=initial_backup, schedule=schedule)


def alerts(conn: psycopg.Connection[Any], alert_type: str | None = None
           ) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(alert_type, severity, message, metadata) in creation order."""
    rows = conn.execute(
        "SELECT alert_type, severity, message, metadata FROM critical_system_alerts "
        "WHERE %(t)s::text IS NULL OR alert_type = %(t)s ORDER BY created_at, id",
        {"t": alert_type}).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def count(conn: psycopg.Connection[Any], query: str, *params: object) -> int:
    row = conn.execute(query.encode(), params or None).fetchone()
    assert row is not None
    return int(row[0])


def user_with_memberships(conn: psycopg.Connection[Any], n: int) -> str:
    """A new user with ``n`` active memberships (one per organization); returns its id."""
    (user_id,) = conn.execute(
        "INSERT INTO app_users (email) VALUES (%s) RETURNING id::text",
        (f"{uuid.uuid4().hex[:8]}@example.com",)).fetchone() or ("",)
    conn.execute(
        "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
        " relationship_type, smart_code) "
        "SELECT id, %s, id::text, 'USER_MEMBER_OF_ORG', 'HERA.AUTH.USER.MEMBERSHIP.v1' "
        "FROM (SELECT id FROM core_organizations ORDER BY organization_code LIMIT %s) o",
        (user_id, n))
    return str(user_id)


def add_links(conn: psycopg.Connection[Any], n: int, rel_type: str = "BULK_LINK") -> None:
    conn.execute(
        "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
        " relationship_type, smart_code) "
        "SELECT (SELECT id FROM core_organizations LIMIT 1), 'bulk-' || g, 'bulk-' || g + 1, "
        " %s, 'HERA.SALON.BULK.LINK.v1' FROM generate_series(1, %s) g", (rel_type, n))


def wait_until(condition: Callable[[], bool], timeout: float = 10.0,
               what: str = "condition") -> None:
    """Poll ``condition`` until it holds (tests.waiting.wait_until with this area's default)."""
    _wait_until(condition, timeout, what, 0.02)


def waiting_on_lock(conn: psycopg.Connection[Any], pid: int) -> bool:
    row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                       (pid,)).fetchone()
    return row is not None and row[0] == "Lock"
