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
from replay import checkpoint, tail
from replay.coverage import Base, check_coverage, epochs, resolve_point
from replay.errors import NotCovered, ReplayError, UnknownTable
from replay.memory import Memory
from replay.point import Point
from replay.rebuild import (
    Window,
    primary_key_columns,
    raw_source,
    rebuild,
    window_v1_columns,
    window_where,
)
from replay.rereads import end_after, joined_start, reread_ends, reread_started
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
                 storage_options: Mapping[str, str] | None = None,
                 memory: Memory | None = None) -> duckdb.DuckDBPyConnection:
    """The archive's views and its checkpoints; ReplayError (one line) when it is not a
    readable archive.

    ``archive``: a path, a URI, or an ArchiveLocation carrying its storage options (the CLI
    builds those from the AWS_* variables; nothing here reads the environment).
    ``memory``: DuckDB's memory limit and spill directory (default: DuckDB's own)."""
    from consumers.archive.reader import connect_history
    from consumers.archive.table import open_table

    try:
        loc = archive_location(archive, storage_options)
    except ArchiveError as exc:
        raise ReplayError(f"cannot read the archive {archive}: {exc}") from None
    try:
        loc.check_readable()
    except ArchiveError as exc:
        raise NotCovered(str(exc)) from None
    try:
        table = open_table(loc)
        conn = connect_history(loc, table=table)
        (memory or Memory()).apply(conn)
        checkpoint.attach(conn, loc)
        tail.remember(conn, loc, table)
        return conn
    except ArchiveError as exc:
        raise ReplayError(f"cannot read the archive {loc}: {exc}") from None
    except duckdb.OutOfMemoryException:
        raise  # the CLI says it in one line, naming the memory limit
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


EventTypes = tuple[int, dict[str, str]]


def event_types_before(conn: duckdb.DuckDBPyConnection, table: TableId,
                       before_ord: int, floor: tuple[int, EventTypes | None] | None = None,
                       changes: str = "changes") -> EventTypes | None:
    """(order, types) of the last event of ``table`` with ``types`` before ``before_ord``.

    ``floor``: (LSN, the answer at that LSN) from a checkpoint: only events after the LSN
    are scanned (the tail, not the whole history; ``changes``: a relation of it), the
    checkpoint's answer otherwise."""
    src = quote_duck(raw_source(conn, changes))
    params: dict[str, object] = {"s": table.schema, "t": table.name, "o": before_ord}
    if floor is not None:
        params["f"] = floor[0]
    row = first(conn.execute(
        f"SELECT commit_lsn::HUGEINT * 4294967296 + position, types FROM {src} "  # noqa: S608
        "WHERE table_schema = $s AND table_name = $t AND types IS NOT NULL "
        "AND commit_lsn::HUGEINT * 4294967296 + position < $o "
        + ("" if floor is None else "AND commit_lsn > $f ")
        + "ORDER BY commit_lsn DESC, position DESC LIMIT 1", params))
    if row is None:
        return None if floor is None else floor[1]
    return int(row[0]), dict(json.loads(row[1]))


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
                             window: Window, start_columns: list[str] | None = None,
                             changes: str = "changes") -> None:
    """An archive with no schema changes recorded (written before the schema log) whose
    events show other columns at the end of the window than at its start: a DDL happened
    that replay cannot apply, so the state would be wrong. Refused, naming where.
    ``start_columns``: the columns at the window's start (a checkpoint's), else the first
    event's."""
    src = quote_duck(raw_source(conn, changes))
    where, params = window_where(table, window)
    ends = [str(t[0]) for t in conn.execute(
        f"(SELECT types::VARCHAR FROM {src} WHERE {where} AND types IS NOT NULL "  # noqa: S608
        "ORDER BY commit_lsn, position LIMIT 1) UNION ALL "
        f"(SELECT types::VARCHAR FROM {src} WHERE {where} AND types IS NOT NULL "
        "ORDER BY commit_lsn DESC, position DESC LIMIT 1)", params).fetchall()]
    if start_columns is not None and ends:
        ends = [json.dumps(dict.fromkeys(start_columns)), ends[-1]]
    if len(ends) < 2:
        return
    start, end = (list(json.loads(t)) for t in ends)
    if set(start) == set(end):  # the same columns (capture lists them in attnum order)
        return
    found = first(conn.execute(
        f"SELECT min(commit_lsn) FROM {src} WHERE {where} AND types IS NOT NULL "  # noqa: S608
        "AND list_sort(json_keys(types)) <> $first", {**params, "first": sorted(start)}))
    at = format_lsn(int(found[0])) if found and found[0] is not None else "?"
    raise SchemaChangeRefused(
        f"the columns of {table} changed at {at} (from {', '.join(start)} to "
        f"{', '.join(end)}) and the archive records no schema change there (written "
        "before the schema log, sql/08_schema_log.sql); replay cannot rebuild points "
        f"after it exactly - pick a point before {at}")


def _with_schema_changes(conn: duckdb.DuckDBPyConnection, table: TableId, rel: Rel,
                         types: dict[str, str], after_lsn: int, upto: int, forward: bool,
                         strict: bool, floor: tuple[int, EventTypes | None] | None = None,
                         changes: str = "changes"
                         ) -> tuple[Rel, dict[str, str], list[tuple[Step, list[Col]]]]:
    """Apply the DDLs after ``after_lsn`` up to ``upto`` (and beyond, ``forward``: to the
    archive's latest definition, as rows untouched since the point look today)."""
    ddls = load_schema_changes(conn, table, with_baselines=True)
    todo = [(i, c) for i, c in enumerate(ddls) if c.commit_lsn > after_lsn
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
        prev = definition_before(i, ddls, event_types_before(conn, table, c.ord, floor,
                                                             changes))
        # After an unrecorded change only a re-read (checked above) makes rows known again.
        step = (step_for(len(steps), prev, c) if c.recorded
                else unrecorded_step(len(steps), prev, c))
        end = end_after(ends, c.commit_lsn)
        step = replace(step, exact_from=end,
                       reread=end is not None or reread_started(conn, table, c.commit_lsn))
        steps.append((step, prev))
    out = apply_steps(conn, rel, steps)
    if strict:
        unknown_rows(conn, out, steps)
    last = todo[-1][1]
    later = event_types_before(conn, table, (upto + 1) * 4294967296, floor, changes)
    if forward or later is None or later[0] < last.ord:
        types = {c.name: c.type for c in last.columns}
    return out, types, steps


def state_at(conn: duckdb.DuckDBPyConnection, table: TableId, point: Point | int, *,
             base: BaseSnapshot | None = None, live_pk: list[str] | None = None,
             live_types: dict[str, str] | None = None,
             progress: Progress = quiet, forward: bool = False, strict: bool = True,
             checkpoints: bool = True) -> State:
    """The table's rows at ``point`` (a Point, or an LSN already resolved).

    ``forward``: the rows as they would read today if untouched since the point (every
    later schema change applied; for restores and reverts into today's table). ``strict``:
    refuse a state holding values a schema change made unknowable (a revert checks only
    the keys it touches, with ``State.steps``). ``checkpoints``: start from the newest
    checkpoint at or before the point when the archive has one (the same rows as from the
    beginning; False rebuilds from the epoch's snapshot, to verify a checkpoint)."""
    if base is not None or not (checkpoints and has_checkpoint(conn, table)):
        tail.localize_history(conn)  # from the beginning: on S3, read from local copies
    if base is None and not (checkpoints and has_checkpoint(conn, table)):
        require_archived(conn, table)
    upto = point if isinstance(point, int) else resolve_point(
        conn, point, table, base.base if base else None)
    if base is None and checkpoints:
        found = _checkpoint_for(conn, table, upto)
        if found is not None:
            return _from_checkpoint(conn, table, upto, found, progress, forward, strict)
        tail.localize_history(conn)
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
        ep = resolved.epoch
        # A table added to --tables later starts empty where its re-read was requested.
        joined = joined_start(conn, table, ep.slot, ep.epoch_lsn, upto)
        window = (Window(upto_lsn=upto, after_lsn=ep.epoch_lsn, snapshot_lsn=ep.epoch_lsn)
                  if joined is None else Window(upto_lsn=upto, after_lsn=joined))
        rel = rebuild(conn, table, window, pk)
    rel, types, steps = _with_schema_changes(conn, table, rel, types, window.after_lsn, upto,
                                             forward, strict)
    if not steps and not load_schema_changes(conn, table):
        _no_silent_column_change(conn, table, window)
    v1 = window_v1_columns(conn, table, window)
    progress(f"rebuilding {table} at {format_lsn(upto)}"
             + (f" across {len(steps)} schema changes" if steps else ""))
    return State(table, upto, rel, pk, types, steps, tuple(v1[0]) if v1 else ())


def _checkpoint_for(conn: duckdb.DuckDBPyConnection, table: TableId,
                    upto: int) -> checkpoint.Found | None:
    """The newest checkpoint of ``table`` at or before ``upto`` in the epoch that answers
    ``upto`` (a checkpoint of an older epoch cannot start a later one's state)."""
    if not has_checkpoint(conn, table):
        return None
    usable = [e for e in epochs(conn) if e.snapshot_done and e.covers_table(table)
              and e.epoch_lsn <= upto]
    if not usable:
        return None
    return checkpoint.nearest(conn, table, usable[-1].epoch_lsn, upto)


def _from_checkpoint(conn: duckdb.DuckDBPyConnection, table: TableId, upto: int,
                     found: checkpoint.Found, progress: Progress, forward: bool,
                     strict: bool) -> State:
    """``state_at`` from a checkpoint: its rows are the state at its LSN, so only the tail
    after it is read (coverage checked from there: the checkpoint was checked when made)."""
    progress(f"checking the archive covers {table} at {format_lsn(upto)} from the "
             f"checkpoint at {format_lsn(found.lsn)}")
    src = tail.relation(conn, found.lsn)  # only the files that can hold the tail
    check_coverage(conn, upto, table, Base(found.lsn), src)
    floor = (found.lsn, found.event_types)
    later = event_types_before(conn, table, (upto + 1) * 4294967296, floor, src)
    types = dict(later[1]) if later is not None and later[0] > found.lsn * 4294967296 \
        else dict(found.header["types"])
    window = Window(upto_lsn=upto, after_lsn=found.lsn)
    rel = rebuild(conn, table, window, found.pk, changes=src, base=found.relation,
                  base_keyed=True)
    rel, types, steps = _with_schema_changes(conn, table, rel, types, found.lsn, upto,
                                             forward, strict, floor, src)
    if not steps and not load_schema_changes(conn, table):
        _no_silent_column_change(conn, table, window, list(found.header["types"]), src)
    v1 = window_v1_columns(conn, table, window, src)
    v1_json = tuple(dict.fromkeys([*found.header.get("v1_json", []), *(v1[0] if v1 else [])]))
    progress(f"rebuilding {table} at {format_lsn(upto)} from the checkpoint at "
             f"{format_lsn(found.lsn)}"
             + (f" across {len(steps)} schema changes" if steps else ""))
    return State(table, upto, rel, found.pk, types, steps, v1_json)


def has_checkpoint(conn: duckdb.DuckDBPyConnection, table: TableId) -> bool:
    return checkpoint.has_any(conn, table)


def materialize(conn: duckdb.DuckDBPyConnection, state: State, name: str) -> State:
    """Compute the state once into a temp table (planners and writers reuse it)."""
    conn.execute(f"DROP TABLE IF EXISTS {quote_duck(name)}")
    state.rel.to_table(name)
    return replace(state, rel=conn.table(name))
