"""What the ``replay`` CLI does, as library functions over settings (the CLI only parses)."""

from __future__ import annotations

from contextlib import closing
from datetime import datetime

import duckdb
import psycopg
from rich.console import Console

from capture.author import printable
from capture.event import format_lsn
from consumers.archive.layout import ArchiveError
from consumers.archive.location import ArchiveLocation, archive_location
from hera_kit.text import first_line
from hera_kit.times import parse_zoned_time
from replay.apply import Applied
from replay.checkpoint_job import Policy, make_checkpoints, verify_checkpoints
from replay.errors import BadPoint, ReplayError
from replay.filters import refuse_outside_restore, requested, typed_scope
from replay.identity import check_target
from replay.live import Conn, columns, connect, primary_key, require_privileges
from replay.memory import Memory
from replay.output import check_output_path, create_table, fill_table, write_file
from replay.point import choose_point
from replay.render import show_applied, show_checks, show_plans
from replay.restore import restore, revert
from replay.revert_many import (
    Step,
    actor_transactions,
    revert_transactions,
    xid_transactions,
)
from replay.settings import ReplaySettings
from replay.snapshot import load_base_snapshot
from replay.state import Progress, State, materialize, open_history, state_at
from replay.tables import TableId
from replay.verify import verify


def _dsn(s: ReplaySettings, what: str) -> str:
    if s.dsn is None:
        raise BadPoint(f"{what} needs --dsn (or HERA_DSN)")
    return s.dsn.get_secret_value()


def _archive(s: ReplaySettings) -> ArchiveLocation:
    """The archive with its object store's options, from the standard AWS_* variables (the
    same ones ``consumers archive`` reads), passed explicitly to every reader."""
    if s.archive is None:
        raise BadPoint("--archive DIR|URI (or HERA_ARCHIVE) is required")
    try:
        return archive_location(s.archive, s.storage_options())
    except ArchiveError as exc:
        raise ReplayError(f"cannot read the archive {s.archive}: {exc}") from None


def open_pg(dsn: str) -> Conn:
    try:
        return connect(dsn)
    except psycopg.OperationalError as exc:
        first = first_line(exc, "connection failed")
        raise ReplayError(f"cannot connect to the database: {first}") from None


def run_replay(s: ReplaySettings, out: Console, err: Console) -> int:
    """The main command: rebuild/output/restore, or revert one transaction."""
    def progress(msg: str) -> None:
        err.print(f"[dim]replay:[/dim] {msg}", highlight=False, soft_wrap=True)

    modes = [m for m, on in (("--output", s.output), ("--into-table", s.into_table),
                             ("--restore", s.restore), ("--revert-xid", s.revert_xid),
                             ("--revert-actor", s.revert_actor))
             if on]
    if len(modes) != 1:
        raise BadPoint("choose exactly one of --output FILE, --into-table SCHEMA.TABLE, "
                       "--restore, --revert-xid N or --revert-actor NAME")
    filters = requested(s)
    if not s.restore:
        refuse_outside_restore(filters, modes[0])
    if s.since is not None and s.revert_actor is None:
        raise BadPoint("--since only goes with --revert-actor")
    if s.revert_actor is not None or (s.revert_xid is not None and len(s.revert_xid) > 1):
        return run_revert_many(s, out, progress)
    duck = open_history(_archive(s), memory=memory(s))
    if s.revert_xid is not None:
        with closing(open_pg(_dsn(s, "--revert-xid"))) as conn:
            check_target(duck, conn, "--revert-xid", s.allow_other_database, progress)
            outcome = revert(duck, conn, s.revert_xid[0], dry_run=s.dry_run, force=s.force,
                             skip_conflicts=s.skip_conflicts,
                             allow_orphaning=s.allow_orphaning,
                             show=lambda plans: show_plans(out, plans), progress=progress)
            _finish(out, outcome.dry_run, outcome.applied)
        return 0

    table = TableId.parse(s.table)
    point = choose_point(s.until, s.before_xid)
    if s.output is not None:
        check_output_path(s.output)
    pg: Conn | None = None
    try:
        if s.dsn is not None or s.base_snapshot is not None:
            pg = open_pg(_dsn(s, "--base-snapshot" if s.base_snapshot else "this mode"))
        base = None
        live_pk = live_types = None
        scope = None
        if pg is not None and (s.restore or s.base_snapshot):
            cols = columns(pg, table)
            live_pk, live_types = primary_key(pg, table), {c.name: c.type for c in cols}
            if s.restore:  # a value of the wrong type is refused before the rebuild
                scope = typed_scope(pg, table, cols, filters)
        if s.base_snapshot is not None:
            assert pg is not None
            progress(f"reading base snapshot {s.base_snapshot}")
            base = load_base_snapshot(pg, s.base_snapshot, table)
        # A restore writes into today's table: rows as they would read today (later schema
        # changes applied); a file or a new table holds the point's own columns.
        state = state_at(duck, table, point, base=base, live_pk=live_pk,
                         live_types=live_types, progress=progress, forward=bool(s.restore))
        progress(f"point: {point.describe()} = LSN {format_lsn(state.upto_lsn)}")
        if s.output is not None:
            n, kept = write_file(duck, state.rel, state.types, s.output)
            if kept:
                progress(f"kept as PostgreSQL text in {s.output.name}: {', '.join(kept)}")
            out.print(f"wrote {n} rows of {state.describe()} to {s.output}")
            return 0
        pg = pg or open_pg(_dsn(s, "--into-table / --restore"))
        check_target(duck, pg, "--into-table" if s.into_table else "--restore",
                     s.allow_other_database, progress)
        if s.into_table is not None:
            return _into_table(s, duck, pg, state, out)
        outcome = restore(duck, pg, state, scope=scope, dry_run=s.dry_run,
                          allow_orphaning=s.allow_orphaning,
                          show=lambda plans: show_plans(out, plans), progress=progress)
        _finish(out, outcome.dry_run, outcome.applied)
        return 0
    finally:
        if pg is not None:
            pg.close()


def run_revert_many(s: ReplaySettings, out: Console, progress: Progress) -> int:
    """``--revert-actor NAME`` or several ``--revert-xid``: replay/revert_many.py."""
    duck = open_history(_archive(s), memory=memory(s))
    if s.revert_actor is not None:
        if s.before_xid is not None:
            raise BadPoint("--revert-actor takes --since/--until times, not --before-xid")
        since = _time("--since", s.since)
        until = _time("--until", s.until)
        mode = "--revert-actor"
        txns = actor_transactions(duck, s.revert_actor, since, until)
        what = f"revert of actor {printable(s.revert_actor)}"
    else:
        assert s.revert_xid is not None
        mode = "--revert-xid"
        txns = xid_transactions(duck, s.revert_xid)
        what = f"revert of transactions {', '.join(str(t.xid) for t in txns)}"
    with closing(open_pg(_dsn(s, mode))) as conn:
        check_target(duck, conn, mode, s.allow_other_database, progress)
        outcome = revert_transactions(
            duck, conn, txns, what=what, dry_run=s.dry_run, force=s.force,
            skip_conflicts=s.skip_conflicts, allow_orphaning=s.allow_orphaning,
            show=lambda steps: show_steps(out, steps), progress=progress)
    _finish(out, outcome.dry_run, outcome.applied)
    return 0


def _time(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_zoned_time(text)
    except ValueError as exc:
        raise BadPoint(f"{option}: {exc}") from None


def show_steps(out: Console, steps: list[Step]) -> None:
    """Each transaction (newest first: the order of the undo), its author, its plans."""
    out.print(f"{len(steps)} transaction(s) to undo, newest first:", highlight=False)
    for step in steps:
        out.print(step.txn.describe(), markup=False, highlight=False, soft_wrap=True)
    for step in steps:
        out.print(f"\n== {step.txn.describe()}", markup=False, highlight=False,
                  soft_wrap=True)
        show_plans(out, step.plans)


def _into_table(s: ReplaySettings, duck: duckdb.DuckDBPyConnection, pg: Conn, state: State,
                out: Console) -> int:
    assert s.into_table is not None
    target = TableId.parse(s.into_table)
    state = materialize(duck, state, "_into")
    with pg.transaction():
        create_table(pg, target, state.types, s.replace)
        n = fill_table(pg, duck, target, state.types, state.rel)
    out.print(f"created {target} with {n} rows: {state.describe()}")
    return 0


def _finish(out: Console, dry_run: bool, applied: list[Applied]) -> None:
    if dry_run:
        out.print("dry run: nothing changed")
        return
    show_applied(out, applied)


def memory(s: ReplaySettings) -> Memory:
    return Memory(s.memory_limit, s.spill_dir)


def run_checkpoint(s: ReplaySettings, out: Console, err: Console) -> int:
    """``replay checkpoint``: make the checkpoints that are due (or ``--verify`` them)."""
    def progress(msg: str) -> None:
        err.print(f"[dim]replay checkpoint:[/dim] {msg}", highlight=False, soft_wrap=True)

    loc = _archive(s)
    bound = Memory(s.memory_limit, s.spill_dir, s.threads)
    if s.verify:
        checked = verify_checkpoints(loc, memory=bound, progress=progress)
        for c in checked:
            verdict = "ok" if c.differing == 0 else f"DIFFERS in {c.differing} rows"
            out.print(f"{c.table} at {format_lsn(c.lsn)}: {c.rows} rows, {verdict}",
                      highlight=False)
        if not checked:
            out.print("no checkpoints in the archive")
        return 0 if all(c.differing == 0 for c in checked) else 1
    tables = [TableId.parse(t.strip()) for t in (s.tables or "").split(",") if t.strip()]
    policy = Policy(every_changes=s.every_changes, keep=s.keep,
                    retention_hours=s.retention_hours)
    for o in make_checkpoints(loc, tables or None, policy=policy, memory=bound,
                              progress=progress):
        what = (f"checkpoint at {format_lsn(o.lsn)}, {o.rows} rows" if o.lsn is not None
                else f"no checkpoint: {o.reason}")
        out.print(f"{o.table}: {what}", highlight=False)
    return 0


def run_verify(s: ReplaySettings, out: Console, err: Console) -> int:
    duck = open_history(_archive(s), memory=memory(s))
    with closing(open_pg(_dsn(s, "verify"))) as pg:
        tables = [TableId.parse(s.table)] if "table" in s.model_fields_set else None
        if tables:
            require_privileges(pg, tables[0], ("SELECT",))
        checks, live_lsn = verify(duck, pg, tables,
                                  progress=lambda m: err.print(f"replay: {m}", highlight=False))
    show_checks(out, checks, live_lsn)
    return 0 if all(c.ok for c in checks) else 1

