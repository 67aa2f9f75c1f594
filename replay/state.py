"""Rebuilding a table's state at a user's point: archive (+ optional base snapshot).

Glue between the pure pieces: resolve the point, check coverage, choose the window, run
the rebuild. Reads only the DuckDB history connection (and the base snapshot's rows the
caller already loaded).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb

from capture.event import format_lsn
from consumers.archive.layout import ArchiveError
from consumers.archive.location import ArchiveLocation, archive_location
from hera_kit.text import first_line
from replay.coverage import check_coverage, resolve_point
from replay.errors import NotCovered, ReplayError, UnknownTable
from replay.point import Point
from replay.rebuild import (
    Window,
    primary_key_columns,
    raw_source,
    rebuild,
    window_v1_columns,
    window_where,
)
from replay.rereads import check_joined, end_after, reread_ends, reread_started
from replay.schema import (
    Col,
    SchemaChangeRefused,
    Step,
    apply_steps,
    definition_before,
    load_schema_changes,
    step_for,
    unknown_rows,
    unrecorded_step,
)
from replay.snapshot import BaseSnapshot
from replay.tables import TableId, first, quote_duck

Progress = Callable[[str], None]
Rel = duckdb.DuckDBPyRelation


def quiet(_: str) -> None:
    """The default progress sink."""


@dataclass(frozen=True)
class State:
    table: TableId
    upto_lsn: int
    rel: duckdb.DuckDBPyRelation  # key VARCHAR, row VARCHAR (JSON), ord HUGEINT
    pk: list[str]
    types: dict[str, str]
    steps: list[tuple[Step, list[Col]]] = field(default_factory=list)  # DDLs applied
    # json/jsonb columns some rows hold as a schema_version 1 re-serialisation (compared as
    # JSON by the planner; empty for archives written in version 2).
    v1_json: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.table} at {format_lsn(self.upto_lsn)}"


def open_history(archive: str | Path | ArchiveLocation,
                 storage_options: Mapping[str, str] | None = None) -> duckdb.DuckDBPyConnection:
    """The archive's views; ReplayError (one line) when it is not a readable archive.

    ``archive``: a path, a URI, or an ArchiveLocation carrying its storage options (the CLI
    builds those from the AWS_* variables; nothing here reads the environment)."""
    from consumers.archive.reader import connect_history

    try:
        loc = archive_location(archive, storage_options)
    except ArchiveError as exc:
        raise ReplayError(f"cannot read the archive {archive}: {exc}") from None
    try:
        loc.check_readable()
    except ArchiveError as exc:
        raise NotCovered(str(exc)) from None
    try:
        return connect_history(loc)
    except ArchiveError as exc:
        raise ReplayError(f"cannot read the archive {loc}: {exc}") from None
    except duckdb.Error as exc:
        raise ReplayError(f"cannot read the archive {loc}: {first_line(exc, '')}; "
                          "restore the file from a backup or re-archive from Kafka") from None


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


def event_types_before(conn: duckdb.DuckDBPyConnection, table: TableId,
                       before_ord: int) -> tuple[int, dict[str, str]] | None:
    """(order, types) of the last event of ``table`` with ``types`` before ``before_ord``."""
    src = quote_duck(raw_source(conn))
    row = first(conn.execute(
        f"SELECT commit_lsn::HUGEINT * 4294967296 + position, types FROM {src} "  # noqa: S608
        "WHERE table_schema = $s AND table_name = $t AND types IS NOT NULL "
        "AND commit_lsn::HUGEINT * 4294967296 + position < $o "
        "ORDER BY commit_lsn DESC, position DESC LIMIT 1",
        {"s": table.schema, "t": table.name, "o": before_ord}))
    return None if row is None else (int(row[0]), dict(json.loads(row[1])))


def archived_types(conn: duckdb.DuckDBPyConnection, table: TableId,
                   upto: int) -> dict[str, str] | None:
    """The column types the archive recorded last at or before ``upto``."""
    found = event_types_before(conn, table, (upto + 1) * 4294967296)
    if found is None:
        src = quote_duck(raw_source(conn))
        row = first(conn.execute(
            f"SELECT types FROM {src} WHERE table_schema = $s AND table_name = $t "  # noqa: S608
            "AND types IS NOT NULL ORDER BY commit_lsn, position LIMIT 1",
            {"s": table.schema, "t": table.name}))
        return None if row is None else dict(json.loads(row[0]))
    return found[1]


def _no_silent_column_change(conn: duckdb.DuckDBPyConnection, table: TableId,
                             window: Window) -> None:
    """An archive with no schema changes recorded (written before the schema log) whose
    events show other columns at the end of the window than at its start: a DDL happened
    that replay cannot apply, so the state would be wrong. Refused, naming where."""
    src = quote_duck(raw_source(conn))
    where, params = window_where(table, window)
    ends = conn.execute(
        f"(SELECT types::VARCHAR FROM {src} WHERE {where} AND types IS NOT NULL "  # noqa: S608
        "ORDER BY commit_lsn, position LIMIT 1) UNION ALL "
        f"(SELECT types::VARCHAR FROM {src} WHERE {where} AND types IS NOT NULL "
        "ORDER BY commit_lsn DESC, position DESC LIMIT 1)", params).fetchall()
    if len(ends) < 2:
        return
    start, end = (list(json.loads(str(t[0]))) for t in ends)
    if set(start) == set(end):  # the same columns (capture lists them in attnum order)
        return
    found = first(conn.execute(
        f"SELECT min(commit_lsn) FROM {src} WHERE {where} AND types IS NOT NULL "  # noqa: S608
        "AND types::VARCHAR <> $first", {**params, "first": str(ends[0][0])}))
    at = format_lsn(int(found[0])) if found and found[0] is not None else "?"
    raise SchemaChangeRefused(
        f"the columns of {table} changed at {at} (from {', '.join(start)} to "
        f"{', '.join(end)}) and the archive records no schema change there (written "
        "before the schema log, sql/08_schema_log.sql); replay cannot rebuild points "
        f"after it exactly - pick a point before {at}")


def _with_schema_changes(conn: duckdb.DuckDBPyConnection, table: TableId, rel: Rel,
                         types: dict[str, str], after_lsn: int, upto: int, forward: bool,
                         strict: bool) -> tuple[Rel, dict[str, str], list[tuple[Step, list[Col]]]]:
    """Apply the DDLs after ``after_lsn`` up to ``upto`` (and beyond, ``forward``: to the
    archive's latest definition, as rows untouched since the point look today)."""
    changes = load_schema_changes(conn, table, with_baselines=True)
    todo = [(i, c) for i, c in enumerate(changes) if c.commit_lsn > after_lsn
            and (forward or c.commit_lsn <= upto) and not c.baseline]
    if not todo:
        return rel, types, []
    ends = reread_ends(conn, table)
    for _, c in todo:
        if not c.recorded and end_after(ends, c.commit_lsn) is None:
            where = ("after the point: rows cannot be brought to today's columns"
                     if c.commit_lsn > upto else f"before {format_lsn(upto)}")
            raise SchemaChangeRefused(
                f"{table} had {c.describe()} {where}; replay refuses points after an "
                "unrecorded schema change - install the schema log (guard install, "
                "sql/08_schema_log.sql) and start a new capture epoch, or pick a point "
                f"before {format_lsn(c.commit_lsn)}")
    steps: list[tuple[Step, list[Col]]] = []
    for i, c in todo:
        prev = definition_before(i, changes, event_types_before(conn, table, c.ord))
        # After an unrecorded change only a re-read (checked above) makes rows known again.
        step = step_for(len(steps), prev, c) if c.recorded else unrecorded_step(len(steps), prev, c)
        end = end_after(ends, c.commit_lsn)
        step = replace(step, exact_from=end,
                       reread=end is not None or reread_started(conn, table, c.commit_lsn))
        steps.append((step, prev))
    out = apply_steps(conn, rel, steps)
    if strict:
        unknown_rows(conn, out, steps)
    last = todo[-1][1]
    later = event_types_before(conn, table, (upto + 1) * 4294967296)
    if forward or later is None or later[0] < last.ord:
        types = {c.name: c.type for c in last.columns}
    return out, types, steps


def state_at(conn: duckdb.DuckDBPyConnection, table: TableId, point: Point | int, *,
             base: BaseSnapshot | None = None, live_pk: list[str] | None = None,
             live_types: dict[str, str] | None = None,
             progress: Progress = quiet, forward: bool = False, strict: bool = True) -> State:
    """The table's rows at ``point`` (a Point, or an LSN already resolved).

    ``forward``: the rows as they would read today if untouched since the point (every
    later schema change applied; for restores and reverts into today's table). ``strict``:
    refuse a state holding values a schema change made unknowable (a revert checks only
    the keys it touches, with ``State.steps``)."""
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
        check_joined(conn, table, resolved.epoch.slot, resolved.epoch.epoch_lsn)
        window = Window(upto_lsn=upto, after_lsn=resolved.epoch.epoch_lsn,
                        snapshot_lsn=resolved.epoch.epoch_lsn)
        rel = rebuild(conn, table, window, pk)
    rel, types, steps = _with_schema_changes(conn, table, rel, types, window.after_lsn, upto,
                                             forward, strict)
    if not steps and not load_schema_changes(conn, table):
        _no_silent_column_change(conn, table, window)
    v1 = window_v1_columns(conn, table, window)
    progress(f"rebuilding {table} at {format_lsn(upto)}"
             + (f" across {len(steps)} schema changes" if steps else ""))
    return State(table, upto, rel, pk, types, steps, tuple(v1[0]) if v1 else ())


def materialize(conn: duckdb.DuckDBPyConnection, state: State, name: str) -> State:
    """Compute the state once into a temp table (planners and writers reuse it)."""
    conn.execute(f"DROP TABLE IF EXISTS {quote_duck(name)}")
    state.rel.to_table(name)
    return replace(state, rel=conn.table(name))
