"""pgoutput's publication: exactly the captured tables, kept in step idempotently."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from capture.errors import PreflightError
from hera_kit.text import first_line

if TYPE_CHECKING:
    from capture.decoding.base import Conn
    from capture.slot import TableInfo


def _table_list(tables: Sequence[TableInfo]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(t.schema),
                                                      sql.Identifier(t.table)) for t in tables)


def ensure_publication(conn: Conn, name: str, tables: Sequence[TableInfo]) -> str:
    """Create the publication, or set its tables when they differ. Returns what it did:
    "created", "altered" or "unchanged"."""
    wanted = {(t.schema, t.table) for t in tables}
    row = conn.execute("SELECT puballtables, pubinsert AND pubupdate AND pubdelete AND "
                       "pubtruncate FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
    try:
        if row is None:
            conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(name), _table_list(tables)))
            return "created"
        if row[0]:
            raise PreflightError(
                f"publication {name} publishes ALL TABLES, capture needs exactly the captured "
                f"ones: DROP PUBLICATION {name} (capture re-creates it), or use another --slot")
        have = {(str(s), str(t)) for s, t in conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
            (name,)).fetchall()}
        changed = False
        if have != wanted:
            conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(
                sql.Identifier(name), _table_list(tables)))
            changed = True
        if not row[1]:
            conn.execute(sql.SQL("ALTER PUBLICATION {} SET (publish = "
                                 "'insert, update, delete, truncate')").format(
                sql.Identifier(name)))
            changed = True
        return "altered" if changed else "unchanged"
    except psycopg.errors.InsufficientPrivilege as exc:
        first = first_line(exc)
        raise PreflightError(
            f"capture with pgoutput needs publication {name} for the captured tables and this "
            f"role may not create or change it ({first}): run, as the tables' owner, "
            f"CREATE PUBLICATION {name} FOR TABLE "
            f"{', '.join(t.qualified for t in tables)}; or grant this role ownership of them"
        ) from exc
