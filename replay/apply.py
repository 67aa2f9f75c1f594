"""Applying plans to PostgreSQL: one transaction, counts reported, nothing on failure.

Rows travel as JSON in the change-event encoding and are turned back into typed rows by
``jsonb_populate_record(NULL::table, row)``, so every value is restored exactly as
PostgreSQL printed it. Order inside the transaction: removals, reverts, re-inserts (a
removed row can free a unique value a re-inserted row needs).

The deletion guardian (sql/ and guard/): inserts and re-activations pass it as they are.
Removals and reverts announce themselves with ``SET LOCAL hera_guard.allow_mass_change``
(the guardian logs the reason); orphaning users needs ``hera_guard.allow_orphaning``, set
only when the user asked for it. The guardian is never disabled.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from replay.errors import GuardianRefused
from replay.live import Column, Conn
from replay.plan import DELETE, INSERT, UPDATE, Plan

_GUARDIAN_CODES = {"HG001", "HG002", "HG003"}


@dataclass(frozen=True)
class Applied:
    table: str
    inserted: int
    updated: int
    deleted: int


def announce(conn: Conn, reason: str, allow_orphaning: bool) -> None:
    """Tell the guardian why this transaction removes or changes rows (transaction-local)."""
    conn.execute("SELECT set_config('hera_guard.allow_mass_change', %s, true)", (reason,))
    if allow_orphaning:
        conn.execute("SELECT set_config('hera_guard.allow_orphaning', %s, true)", (reason,))


def lock(conn: Conn, plans_tables: list[sql.Composable]) -> None:
    """Writers wait while we read, plan and apply: the plan stays true until commit."""
    for ident in plans_tables:
        conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(ident))


def load_rows(conn: Conn, rows: list[tuple[str, str]]) -> None:
    """(action, row json) into a transaction-local staging table."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _replay_ops (action text, row jsonb) "
                 "ON COMMIT DROP")
    conn.execute("TRUNCATE _replay_ops")
    with conn.cursor().copy("COPY _replay_ops (action, row) FROM STDIN") as copy:
        for r in rows:
            copy.write_row(r)


def apply_plan(conn: Conn, plan: Plan, cols: list[Column]) -> Applied:
    """Apply one table's plan inside the caller's open transaction."""
    target = sql.Identifier(plan.table.schema, plan.table.name)
    ops = plan.ops
    staged = [(a, r) for a, r in zip(ops.column("action").to_pylist(),
                                      ops.column("row").to_pylist(), strict=True)
              if a in (INSERT, UPDATE, DELETE)]
    if not staged:
        return Applied(str(plan.table), 0, 0, 0)
    load_rows(conn, staged)
    writable = [c for c in cols if not c.generated]
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in writable)
    values = sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c.name)) for c in writable)
    match = sql.SQL(" AND ").join(
        sql.SQL("t.{0} = r.{0}").format(sql.Identifier(k)) for k in plan.pk)
    rec = sql.SQL("jsonb_populate_record(NULL::{}, o.row) r").format(target)
    try:
        deleted = conn.execute(sql.SQL(
            "DELETE FROM {} t USING _replay_ops o, {} WHERE o.action = 'delete' AND {}"
        ).format(target, rec, match)).rowcount
        updated = conn.execute(sql.SQL(
            "UPDATE {} t SET ({}) = ROW({}) FROM _replay_ops o, {} "
            "WHERE o.action = 'update' AND {}").format(target, names, values, rec, match)
        ).rowcount
        inserted = conn.execute(sql.SQL(
            "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM _replay_ops o, {} "
            "WHERE o.action = 'insert'").format(target, names, values, rec)).rowcount
    except psycopg.Error as exc:
        # The guardian's refusals: HG001 mass change, HG002 orphaning, HG003 truncate.
        if exc.sqlstate not in _GUARDIAN_CODES:
            raise
        text = str(exc).splitlines()[0]
        hint = (" (rerun with --allow-orphaning if leaving users without an organization "
                "is really intended)") if exc.sqlstate == "HG002" else ""
        raise GuardianRefused(f"the guardian refused the restore of {plan.table}: "
                              f"{text}{hint}; nothing was changed") from None
    return Applied(str(plan.table), inserted, updated, deleted)
