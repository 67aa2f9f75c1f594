"""Base snapshots: the plan's ``emergency_relationships_backup_*`` tables as a starting state.

``system_backups`` (guard's SQL) records each backup's ``wal_lsn`` (pg_current_wal_lsn()
in the backup's transaction) and ``source_table``. A backup without a recorded LSN cannot
be placed in WAL order and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
import pyarrow as pa

from capture.event import parse_lsn
from replay.coverage import Base
from replay.errors import SnapshotError
from replay.live import Conn, columns, read_rows
from replay.tables import TableId


@dataclass(frozen=True)
class BaseSnapshot:
    name: TableId
    source: TableId
    lsn: int
    taken: datetime | None
    rows: pa.Table  # one ``row`` column, change-event encoding

    @property
    def base(self) -> Base:
        return Base(self.lsn, self.taken)


def load_base_snapshot(conn: Conn, name: str, table: TableId) -> BaseSnapshot:
    """Read a backup table and its recorded LSN; SnapshotError when it cannot be a base."""
    backup = TableId.parse(name, default_schema=table.schema)
    try:
        found = conn.execute(
            "SELECT wal_lsn::text, source_table, created_at FROM system_backups "
            "WHERE table_name IN (%s, %s) ORDER BY created_at DESC LIMIT 1",
            (backup.name, str(backup))).fetchone()
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        raise SnapshotError("the database has no system_backups table; install the guard's "
                            "SQL (guard install) before using --base-snapshot") from None
    except psycopg.errors.UndefinedColumn:
        conn.rollback()
        raise SnapshotError("system_backups has no wal_lsn/source_table columns; upgrade the "
                            "guard's SQL (guard install) so backups record their LSN") from None
    if found is None:
        raise SnapshotError(f"no backup named {name} in system_backups; pick one listed "
                            "there (table_name, with its wal_lsn)")
    lsn_text, source_text, taken = found
    if lsn_text is None or parse_lsn(str(lsn_text)) == 0:
        raise SnapshotError(f"backup {name} has no recorded LSN (taken before the guard "
                            "recorded wal_lsn, shown as 0/0); it cannot be placed in WAL "
                            "order - use a newer backup")
    source = TableId.parse(str(source_text or table), default_schema=table.schema)
    if source != table:
        raise SnapshotError(f"backup {name} is a copy of {source}, not of {table}; pick a "
                            f"backup of {table}")
    cols = columns(conn, backup)
    rows = read_rows(conn, backup, cols)
    return BaseSnapshot(backup, source, parse_lsn(str(lsn_text)),
                        taken if isinstance(taken, datetime) else None, rows)
