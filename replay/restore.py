"""Restore a live table to a rebuilt state, or undo one transaction: plan, show, apply.

Flow (litestream's shape): read inputs -> ``plan_changes`` (pure) -> render -> apply in one
transaction. For a real run the tables are locked (EXCLUSIVE: reads go on, writes wait)
before the live rows are read, so the plan is still true when it is applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import duckdb
import psycopg
import pyarrow as pa
from psycopg import sql

from capture.event import format_lsn
from replay.apply import Applied, announce, apply_plan, lock
from replay.coverage import check_coverage, commit_of
from replay.errors import ConflictsFound, UnknownTable
from replay.live import Column, Conn, columns, primary_key, read_rows, require_privileges
from replay.plan import CONFLICT, DELETE, UPDATE, Plan, Scope, plan_changes
from replay.rebuild import pk_paths
from replay.revert_reread import heal
from replay.schema import SchemaChangeRefused, same_type, unknown_rows
from replay.state import Progress, State, materialize, quiet, state_at
from replay.tables import TableId, first
from replay.values import key_sql

WRITE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


@dataclass(frozen=True)
class Outcome:
    plans: list[Plan]
    applied: list[Applied]  # empty for a dry run
    dry_run: bool


Show = Callable[[list[Plan]], None]


def _no_show(_: list[Plan]) -> None:
    """Default: show nothing."""


def _reason(what: str, plans: list[Plan]) -> str:
    parts = [f"{p.table}: +{p.count('insert')} ~{p.count(UPDATE)} -{p.count(DELETE)}"
             for p in plans]
    return f"replay {what} ({'; '.join(parts)})"


def _apply_all(pg: Conn, plans: list[Plan], what: str, allow_orphaning: bool) -> list[Applied]:
    if any(p.count(DELETE) or p.count(UPDATE) for p in plans):
        announce(pg, _reason(what, plans), allow_orphaning)
    elif allow_orphaning:
        announce(pg, _reason(what, plans), True)
    out = []
    for p in plans:
        out.append(apply_plan(pg, p, columns(pg, p.table)))
    return out


def restore(duck: duckdb.DuckDBPyConnection, pg: Conn, state: State, *,
            scope: Scope | None = None, dry_run: bool = False, allow_orphaning: bool = False,
            show: Show = _no_show, progress: Progress = quiet) -> Outcome:
    """Put the live table back to ``state`` (within ``scope``); one transaction."""
    table = state.table
    scope = scope or Scope()
    cols = columns(pg, table)
    require_privileges(pg, table, ("SELECT",) if dry_run else WRITE_PRIVILEGES)
    _check_scope_columns(scope, cols, table)
    check_columns(state, cols)
    applied: list[Applied] = []
    # The rebuild (DuckDB) runs while PostgreSQL sends the live rows: the two use different
    # processes and cores; the rebuild does not depend on the lock.
    with ThreadPoolExecutor(max_workers=1) as pool, pg.transaction() as tx:
        rebuilt = pool.submit(materialize, duck, state, "_wanted")
        if not dry_run:
            progress(f"locking {table} (writers wait until the restore commits)")
            lock(pg, [sql.Identifier(table.schema, table.name)])
        progress(f"reading live rows of {table}")
        live = read_rows(pg, table, cols)
        state = rebuilt.result()
        progress(f"planning: {state.rel.shape[0]} wanted rows vs {live.num_rows} live rows")
        plan = plan_changes(duck, table, state.pk, list(state.types), state.rel, live,
                            scope=scope, compat=state.v1_json)
        show([plan])
        if dry_run:
            raise psycopg.Rollback(tx)
        progress(f"applying {plan.changes} changes in one transaction")
        applied = _apply_all(pg, [plan], f"restore {table} to {format_lsn(state.upto_lsn)}",
                             allow_orphaning)
    return Outcome([plan], applied, dry_run)


def check_columns(state: State, cols: list[Column]) -> None:
    """The rebuilt rows must have the live table's columns (names and types): otherwise the
    archive and the table disagree on the schema and nothing can be written exactly."""
    live = {c.name: c.type for c in cols if not c.generated}
    archived = {n: t for n, t in state.types.items() if n in live or n not in
                {c.name for c in cols}}
    if archived.keys() != live.keys() or not all(
            same_type(t, live[n]) for n, t in archived.items()):
        diff = sorted(set(archived.items()) ^ set(live.items()))
        shown = ", ".join(f"{n} {t}" for n, t in diff[:6])
        raise SchemaChangeRefused(
            f"the columns of {state.table} differ between the archive ({len(archived)} "
            f"columns) and the live table ({len(live)}): {shown}; a schema change the "
            "archive does not hold yet (wait for the archiver to catch up), or one it "
            "could not record (install the schema log, sql/08_schema_log.sql)")


def _check_scope_columns(scope: Scope, cols: list[Column], table: TableId) -> None:
    names = {c.name for c in cols}
    for col, _ in scope.equals:
        if col not in names:
            raise UnknownTable(f"{table} has no column {col}; --org/--relationship-type "
                               "only apply to tables that have organization_id / "
                               "relationship_type")


def touched_keys(duck: duckdb.DuckDBPyConnection, table: TableId, commit_lsn: int,
                 pk: list[str], before: State) -> duckdb.DuckDBPyRelation:
    """Keys transaction at ``commit_lsn`` changed in ``table`` (all keys on a TRUNCATE)."""
    truncated = first(duck.execute(
        "SELECT count(*) FROM changes WHERE table_schema = $s AND table_name = $t "
        "AND commit_lsn = $c AND op = 't'",
        {"s": table.schema, "t": table.name, "c": commit_lsn}))
    params = {"s": table.schema, "t": table.name, "c": commit_lsn, "pk": pk_paths(pk)}
    keys = duck.sql(
        f"""
        SELECT {key_sql('after')} AS key FROM changes
        WHERE table_schema = $s AND table_name = $t AND commit_lsn = $c AND after IS NOT NULL
        UNION SELECT {key_sql('coalesce(before, key)')} FROM changes
        WHERE table_schema = $s AND table_name = $t AND commit_lsn = $c
          AND op IN ('u', 'd') AND coalesce(before, key) IS NOT NULL
        """, params=params)  # noqa: S608 - our own SQL
    if truncated and truncated[0]:
        keys = keys.union(before.rel.project("key"))
    return keys


def plan_undo(duck: duckdb.DuckDBPyConnection, t: TableId, commit: int, cols: list[Column],
              pk: list[str], live: pa.Table, tag: str) -> Plan:
    """What makes the rows of ``t`` that the transaction committed at ``commit`` touched what
    they were before it, against ``live``: the plan of --revert-xid and of every undo of
    --revert-actor. Both states are brought to today's columns (every later schema change
    applied, as an untouched row reads today); only the touched keys must be knowable."""
    types = {c.name: c.type for c in cols}
    before = materialize(duck, state_at(duck, t, commit - 1, live_pk=pk, live_types=types,
                                        forward=True, strict=False), f"_before{tag}")
    after = materialize(duck, state_at(duck, t, commit, live_pk=pk, live_types=types,
                                       forward=True, strict=False), f"_after{tag}")
    check_columns(before, cols)
    name = f"_touched{tag}"
    duck.execute(f"DROP TABLE IF EXISTS {name}")
    touched_keys(duck, t, commit, before.pk, before).distinct().to_table(name)
    keys = duck.table(name)
    generated = frozenset(c.name for c in cols if c.generated)
    try:
        for st in (before, after):
            unknown_rows(duck, st.rel, st.steps, keys=name, ignore=generated)
    except SchemaChangeRefused as refused:
        # A DDL after the transaction rewrote values: exact again once its re-read ended.
        before, after = heal(duck, t, commit, types, before, after, name, generated,
                             refused, tag)
        for st in (before, after):
            unknown_rows(duck, st.rel, st.steps, keys=name, ignore=generated)
    return plan_changes(duck, t, before.pk, list(before.types), before.rel, live,
                        expected=after.rel, keys=keys,
                        compat=tuple({*before.v1_json, *after.v1_json}))


def revert(duck: duckdb.DuckDBPyConnection, pg: Conn, xid: int, *, dry_run: bool = False,
           force: bool = False, skip_conflicts: bool = False, allow_orphaning: bool = False,
           show: Show = _no_show, progress: Progress = quiet) -> Outcome:
    """Undo transaction ``xid`` where rows still equal what it left; conflicts otherwise."""
    commit = commit_of(duck, xid)
    tables = [TableId(str(s), str(n)) for s, n in duck.execute(
        "SELECT DISTINCT table_schema, table_name FROM changes WHERE commit_lsn = $c "
        "ORDER BY 1, 2", {"c": commit}).fetchall()]
    if not tables:
        raise UnknownTable(f"transaction {xid} changed no captured table; nothing to revert")
    for t in tables:
        check_coverage(duck, commit, t)
        require_privileges(pg, t, ("SELECT",) if dry_run else WRITE_PRIVILEGES)
    applied: list[Applied] = []
    with pg.transaction() as tx:
        if not dry_run:
            lock(pg, [sql.Identifier(t.schema, t.name) for t in tables])
        plans = []
        for i, t in enumerate(tables):
            cols = columns(pg, t)
            progress(f"reading live rows of {t}")
            live = read_rows(pg, t, cols)
            plans.append(plan_undo(duck, t, commit, cols, primary_key(pg, t), live, str(i)))
        show(plans)
        conflicts = sum(p.count(CONFLICT) for p in plans)
        if dry_run:
            raise psycopg.Rollback(tx)
        if conflicts and not (force or skip_conflicts):
            raise ConflictsFound(
                f"{conflicts} rows changed after transaction {xid} (listed above); nothing "
                "applied - rerun with --skip-conflicts to revert the others, or --force")
        # --force: conflicting rows too become what they were before the transaction.
        plans = [_force(p) if force else p.without_conflicts() for p in plans]
        applied = _apply_all(pg, plans, f"revert of transaction {xid}", allow_orphaning)
    return Outcome(plans, applied, dry_run)


def _force(plan: Plan) -> Plan:
    """Conflicts become the action that makes the row what it was before the transaction.

    A row the transaction updated and someone changed again gets back only the columns the
    transaction changed; the other columns keep their live values."""
    ops = plan.ops.to_pylist()
    for op in ops:
        if op["action"] != CONFLICT:
            continue
        if op["row"] is None:
            op["action"], op["row"] = (DELETE, op["current"]) if op["current"] else (None, None)
        elif op["current"] is not None:
            op["action"] = UPDATE
            if op["expected"] is not None:
                before, after, now = (json.loads(op[k]) for k in ("row", "expected", "current"))
                merged = {c: before.get(c) if before.get(c) != after.get(c) else now.get(c)
                          for c in now}
                op["row"] = json.dumps(merged, ensure_ascii=False)
        else:
            op["action"] = "insert"
    kept = [o for o in ops if o["action"] is not None]
    return Plan(plan.table, pa.Table.from_pylist(kept, schema=plan.ops.schema), plan.pk)
