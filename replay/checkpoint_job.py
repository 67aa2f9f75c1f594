"""``replay checkpoint``: the job operators schedule (cron, a Kubernetes CronJob) next to the
archiver. For every archived table (or the ones named) it writes a checkpoint at the newest
point the archive answers exactly, when at least ``every_changes`` changes of the table were
archived since its newest checkpoint; then retention keeps the newest ``keep`` per table.

Why a scheduled job and not a thread of the archiver: the checkpoint is replay's own rebuild
(the rows replay gives, by construction), which lives in replay/ — the archiver stays free
of it (data flows archive -> replay, never back); the job has its own memory limit, can run
on another host than the archiver, and its commits go to the checkpoint table, never to the
archive's log, so ingestion never waits for it. Each checkpoint starts from the previous
one, so a run costs the changes since the last run, not the history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from capture.event import format_lsn
from consumers.archive import checkpoints as store
from consumers.archive.location import ArchiveLocation
from replay import checkpoint
from replay.coverage import Base, check_coverage, epochs
from replay.errors import NotCovered, ReplayError
from replay.memory import Memory
from replay.rebuild import raw_source
from replay.state import archived_tables, event_types_before, open_history, state_at
from replay.tables import TableId, first, quote_duck

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    """The default progress sink."""


@dataclass(frozen=True)
class Policy:
    every_changes: int = 1_000_000  # a table gets a new checkpoint after this many changes
    keep: int = 3  # checkpoints kept per table (>= 1): older ones go once a newer one exists
    retention_hours: float = 168.0  # vacuum: files of removed checkpoints stay this long


@dataclass(frozen=True)
class Outcome:
    table: TableId
    lsn: int | None  # the new checkpoint's LSN; None: none made
    rows: int
    reason: str


def make_checkpoints(loc: ArchiveLocation, tables: list[TableId] | None = None, *,
                     policy: Policy = Policy(), memory: Memory | None = None,
                     progress: Progress = _quiet) -> list[Outcome]:
    conn = open_history(loc, memory=memory)
    out = []
    for table in tables or archived_tables(conn):
        out.append(_one(conn, loc, table, policy, progress))
    removed = store.remove_older(loc, policy.keep, policy.retention_hours)
    for c in removed:
        progress(f"retention: removed the checkpoint of {c.table} at {format_lsn(c.lsn)} "
                 "(newer ones cover it)")
    return out


def _one(conn: duckdb.DuckDBPyConnection, loc: ArchiveLocation, table: TableId,
         policy: Policy, progress: Progress) -> Outcome:
    last = checkpoint.newest_lsn(conn, table)
    target = _target(conn, table, last)
    if target is None:
        return Outcome(table, None, 0, "the archive answers no point of it exactly yet")
    if last is not None and target <= last:
        return Outcome(table, None, 0, f"its newest checkpoint ({format_lsn(last)}) is current")
    pending = _changes_between(conn, table, last, target)
    if last is not None and pending < policy.every_changes:
        return Outcome(table, None, 0, f"{pending} changes since its newest checkpoint, "
                                       f"fewer than {policy.every_changes}")
    progress(f"checkpointing {table} at {format_lsn(target)}")
    rows = checkpoint_at(conn, loc, table, target, progress)
    return Outcome(table, target, rows, "made")


def checkpoint_at(conn: duckdb.DuckDBPyConnection, loc: ArchiveLocation, table: TableId,
                  lsn: int, progress: Progress = _quiet) -> int:
    """Write the checkpoint of ``table`` at ``lsn`` (from the newest earlier checkpoint
    ``conn`` knows, else from the snapshot); returns its row count. Refused (ReplayError) where
    replay refuses the point."""
    state = state_at(conn, table, lsn, progress=progress)
    prev = _previous(conn, table, lsn)
    floor = None if prev is None else (prev.lsn, prev.event_types)
    types = event_types_before(conn, table, (lsn + 1) * 4294967296, floor)
    return checkpoint.write(loc, conn, state, _epoch_of(conn, table, lsn), types)


def _previous(conn: duckdb.DuckDBPyConnection, table: TableId,
              upto: int) -> checkpoint.Found | None:
    epoch = _epoch_of(conn, table, upto)
    return checkpoint.nearest(conn, table, epoch, upto)


def _epoch_of(conn: duckdb.DuckDBPyConnection, table: TableId, lsn: int) -> int:
    usable = [e for e in epochs(conn) if e.snapshot_done and e.covers_table(table)
              and e.epoch_lsn <= lsn]
    if not usable:
        raise NotCovered(f"no finished snapshot of {table} at or before {format_lsn(lsn)}")
    return usable[-1].epoch_lsn


def _target(conn: duckdb.DuckDBPyConnection, table: TableId, last: int | None) -> int | None:
    """The newest LSN the archive answers exactly for ``table``: the newest epoch's reach,
    else one of the last commits before it (the archiver may be mid-transaction: its events
    and END records come from different topics)."""
    usable = [e for e in epochs(conn) if e.snapshot_done and e.covers_table(table)]
    if not usable:
        return None
    ep = usable[-1]
    recent = [int(r[0]) for r in conn.execute(
        "SELECT DISTINCT commit_lsn FROM transactions WHERE commit_lsn > $lo AND "
        "commit_lsn <= $hi ORDER BY 1 DESC LIMIT 8",
        {"lo": max(ep.epoch_lsn, last or 0), "hi": ep.reach_lsn}).fetchall()]
    for lsn in dict.fromkeys([ep.reach_lsn, *recent]):
        start = max(last or 0, ep.epoch_lsn)
        try:
            if last is not None and last >= ep.epoch_lsn:
                check_coverage(conn, lsn, table, Base(last))
            else:
                check_coverage(conn, lsn, table)
        except ReplayError:
            continue
        if lsn >= start:
            return lsn
    return None


def _changes_between(conn: duckdb.DuckDBPyConnection, table: TableId, after: int | None,
                     upto: int) -> int:
    src = quote_duck(raw_source(conn))
    found = first(conn.execute(
        f"SELECT count(*) FROM {src} WHERE table_schema = $s AND table_name = $t "  # noqa: S608
        "AND commit_lsn > $a AND commit_lsn <= $u",
        {"s": table.schema, "t": table.name, "a": after or 0, "u": upto}))
    return int(found[0]) if found else 0


@dataclass(frozen=True)
class Checked:
    table: TableId
    lsn: int
    rows: int
    differing: int


def verify_checkpoints(loc: ArchiveLocation, *, memory: Memory | None = None,
                       progress: Progress = _quiet) -> list[Checked]:
    """Every checkpoint against a rebuild from its epoch's snapshot (0 differing rows: the
    checkpoint holds exactly what replay from the beginning gives)."""
    conn = open_history(loc, memory=memory)
    out = []
    for ckpt in store.list_checkpoints(loc):
        table = TableId.parse(ckpt.table)
        progress(f"verifying the checkpoint of {table} at {format_lsn(ckpt.lsn)}")
        full = state_at(conn, table, ckpt.lsn, checkpoints=False)
        found = checkpoint.nearest(conn, table, int(ckpt.header["epoch_lsn"]), ckpt.lsn)
        assert found is not None and found.lsn == ckpt.lsn
        stored = conn.table(found.relation)
        out.append(Checked(table, ckpt.lsn, ckpt.rows,
                           checkpoint.differing_rows(conn, full.rel, stored)))
    return out
