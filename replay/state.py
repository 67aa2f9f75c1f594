"""Rebuilding a table's state at a user's point: archive (+ optional base snapshot).

Glue between the pure pieces: resolve the point, check coverage, choose the window, run
the rebuild. Reads only the DuckDB history connection (and the base snapshot's rows the
caller already loaded).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb

from capture.event import format_lsn
from replay.coverage import check_coverage, resolve_point
from replay.errors import NotCovered, ReplayError, UnknownTable
from replay.point import Point
from replay.rebuild import Window, primary_key_columns, raw_source, rebuild
from replay.snapshot import BaseSnapshot
from replay.tables import TableId, first, quote_duck

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """The default progress sink."""


@dataclass(frozen=True)
class State:
    table: TableId
    upto_lsn: int
    rel: duckdb.DuckDBPyRelation  # key VARCHAR, row JSON
    pk: list[str]
    types: dict[str, str]

    def describe(self) -> str:
        return f"{self.table} at {format_lsn(self.upto_lsn)}"


def open_history(archive: Path) -> duckdb.DuckDBPyConnection:
    """The archive's views; ReplayError when the directory is not a readable archive."""
    from consumers.archive.layout import ArchiveError
    from consumers.archive.reader import connect_history

    if not archive.is_dir():
        raise NotCovered(f"archive directory {archive} does not exist; pass the directory "
                         "`consumers archive --archive` writes")
    try:
        return connect_history(archive)
    except ArchiveError as exc:
        raise ReplayError(f"cannot read the archive {archive}: {exc}") from None


def archived_tables(conn: duckdb.DuckDBPyConnection) -> list[TableId]:
    rows = conn.execute(
        f"SELECT DISTINCT table_schema, table_name FROM {quote_duck(raw_source(conn))} "  # noqa: S608
        "UNION SELECT DISTINCT split_part(t, '.', 1), split_part(t, '.', 2) "
        "FROM (SELECT unnest(tables) AS t FROM markers) ORDER BY 1, 2").fetchall()
    return [TableId(str(s), str(n)) for s, n in rows]


def require_archived(conn: duckdb.DuckDBPyConnection, table: TableId) -> None:
    known = archived_tables(conn)
    if table not in known:
        names = ", ".join(map(str, known)) or "none"
        raise UnknownTable(f"table {table} is not in the archive (archived tables: {names}); "
                           "check --table")


def archived_types(conn: duckdb.DuckDBPyConnection, table: TableId,
                   upto: int) -> dict[str, str] | None:
    """The column types the archive recorded last at or before ``upto``."""
    src = quote_duck(raw_source(conn))
    row = first(conn.execute(
        f"SELECT types FROM {src} WHERE table_schema = $s AND table_name = $t "  # noqa: S608
        "AND types IS NOT NULL AND commit_lsn <= $u "
        "ORDER BY commit_lsn DESC, position DESC LIMIT 1",
        {"s": table.schema, "t": table.name, "u": upto}))
    if row is None:
        row = first(conn.execute(
            f"SELECT types FROM {src} WHERE table_schema = $s AND table_name = $t "  # noqa: S608
            "AND types IS NOT NULL ORDER BY commit_lsn, position LIMIT 1",
            {"s": table.schema, "t": table.name}))
    return None if row is None else dict(json.loads(row[0]))


def state_at(conn: duckdb.DuckDBPyConnection, table: TableId, point: Point | int, *,
             base: BaseSnapshot | None = None, live_pk: list[str] | None = None,
             live_types: dict[str, str] | None = None,
             progress: Progress = quiet) -> State:
    """The table's rows at ``point`` (a Point, or an LSN already resolved)."""
    if base is None:
        require_archived(conn, table)
    upto = point if isinstance(point, int) else resolve_point(
        conn, point, table, base.base if base else None)
    progress(f"checking the archive covers {table} at {format_lsn(upto)}")
    resolved = check_coverage(conn, upto, table, base.base if base else None)
    pk = primary_key_columns(conn, table) or live_pk or ["id"]
    types = archived_types(conn, table, upto) or live_types
    if types is None:
        raise UnknownTable(f"the archive records no columns for {table} and the database "
                           "was not consulted; pass --dsn")
    if base is not None:
        conn.register("_base_rows", base.rows)
        window = Window(upto_lsn=upto, after_lsn=base.lsn)
        rel = rebuild(conn, table, window, pk, base="_base_rows")
    else:
        assert resolved.epoch is not None
        window = Window(upto_lsn=upto, after_lsn=resolved.epoch.epoch_lsn,
                        snapshot_lsn=resolved.epoch.epoch_lsn)
        rel = rebuild(conn, table, window, pk)
    progress(f"rebuilding {table} at {format_lsn(upto)}")
    return State(table, upto, rel, pk, types)


def materialize(conn: duckdb.DuckDBPyConnection, state: State, name: str) -> State:
    """Compute the state once into a temp table (planners and writers reuse it)."""
    conn.execute(f"DROP TABLE IF EXISTS {quote_duck(name)}")
    state.rel.to_table(name)
    return replace(state, rel=conn.table(name))
