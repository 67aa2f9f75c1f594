"""The demo's stack and the small reads its steps check against: what ``devstack.demo``
runs on, and PostgreSQL's and the archive's answers (split from demo.py, which tells the
story)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from devstack.demo_support import Children, Traffic, wait_until


@dataclass
class Stack:
    """What the demo runs on; built by :func:`main`, torn down in its ``finally``."""

    workdir: Path
    dsn: str = ""
    bootstrap: str = ""
    archive: Path = field(default_factory=Path)
    children: Children | None = None
    traffic: Traffic | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def one_value(conn: psycopg.Connection[tuple[Any, ...]], query: str,
         params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return row[0]


def rows_json(conn: psycopg.Connection[tuple[Any, ...]], query: str,
               params: tuple[Any, ...] = ()) -> set[str]:
    """Rows as canonical JSON text, to compare row contents exactly."""
    return {str(r[0]) for r in conn.execute(query.encode(), params)}


def connect_db(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(dsn, autocommit=True)


def archive_reach(archive: Path) -> int:
    """The highest commit or progress LSN the archive holds (0 before its first write)."""
    from consumers.archive.reader import connect_history

    try:
        con = connect_history(archive)
    except Exception:  # the archiver has not written its first segment yet
        return 0
    try:
        row = con.execute("SELECT greatest((SELECT coalesce(max(commit_lsn), 0) FROM "
                          "transactions), (SELECT coalesce(max(lsn), 0) FROM markers))"
                          ).fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


def wal_now(dsn: str) -> int:
    from capture.event import parse_lsn

    with connect_db(dsn) as conn:
        return parse_lsn(str(one_value(conn, "SELECT pg_current_wal_lsn()::text")))


def wait_archived(stack: Stack, lsn: int, what: str, timeout: float = 30.0) -> float:
    return wait_until(lambda: archive_reach(stack.archive) >= lsn, timeout, what, 0.1)


def alerts(dsn: str, since_id: set[str]) -> list[dict[str, Any]]:
    """The detector's alerts in critical_system_alerts (its PostgreSQL sink), new ones only."""
    with connect_db(dsn) as conn:
        rows = conn.execute(
            "SELECT id::text, metadata FROM critical_system_alerts "
            "WHERE metadata ? 'replay_command' ORDER BY created_at").fetchall()
    return [dict(m) for i, m in rows if i not in since_id]
