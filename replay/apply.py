"""Applying plans to PostgreSQL: one transaction, counts reported, nothing on failure.

Rows travel as each column's PostgreSQL text (the event encoding, replay/values.py) in COPY
CSV and reach their types through the types' input functions (COPY, ``text::type``), so
every value is restored exactly as PostgreSQL printed it: bytea, NaN, infinity, json text.
Order inside the transaction: removals, reverts, re-inserts (a removed row can free a unique
value a re-inserted row needs).

The deletion guardian (sql/ and guard/): inserts and re-activations pass it as they are.
Removals and reverts announce themselves with ``SET LOCAL hera_guard.allow_mass_change``
(the guardian logs the reason); orphaning users needs ``hera_guard.allow_orphaning``, set
only when the user asked for it. The guardian is never disabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from hera_kit.text import first_line
from replay.errors import GuardianRefused
from replay.live import Column, Conn
from replay.plan import DELETE, INSERT, UPDATE, Plan
from replay.stream import copy_rows
from replay.tables import quote_duck
from replay.values import literal, texts_struct_sql

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


def write_texts_csv(duck: duckdb.DuckDBPyConnection, source: str, names: list[str],
                    path: Path, where: str = "TRUE") -> int:
    """The rows (JSON, event encoding) of relation ``source`` as PostgreSQL COPY CSV of
    each column's input text, in ``names`` order: every value quoted, NULL an empty
    unquoted field (DuckDB's writer with FORCE_QUOTE does exactly that). One JSON parse per
    row, no Python object per row. Returns the row count."""
    fields = ", ".join(f"v.{quote_duck(n)}" for n in names)
    query = (f"SELECT {fields} FROM (SELECT {texts_struct_sql('row', names)} AS v "  # noqa: S608 - names quoted
             f"FROM {quote_duck(source)} WHERE {where})")
    found = duck.execute(f"COPY ({query}) TO {literal(str(path))} "
                         "(FORMAT csv, HEADER false, FORCE_QUOTE *)").fetchall()
    return int(found[0][0]) if found and found[0] else 0


def _staging(conn: Conn, name: str, n: int) -> sql.Composable:
    """A transaction-local table of ``n`` text columns c0..c{n-1}."""
    ident = sql.Identifier(name)
    cols = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(f"c{i}"))
                              for i in range(n))
    conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DROP").format(
        ident, cols))
    conn.execute(sql.SQL("TRUNCATE {}").format(ident))
    return ident


def _load(conn: Conn, duck: duckdb.DuckDBPyConnection, name: str, names: list[str],
          action: str) -> tuple[sql.Composable, int]:
    """The plan's ``action`` rows into staging table ``name`` (texts of ``names``)."""
    ident = _staging(conn, name, len(names))
    n = copy_rows(conn, duck, "_ops", names,
                  sql.SQL("COPY {} FROM STDIN").format(ident),
                  f"action = {literal(action)}")
    return ident, n


def copy_in(conn: Conn, duck: duckdb.DuckDBPyConnection, target: sql.Composable,
            cols: list[Column]) -> int:
    """Insert the plan's re-inserts (``_ops``) with COPY: PostgreSQL's fastest path (INSERT
    triggers still fire). Each value is its PostgreSQL text, so the type input functions
    restore it exactly; DuckDB makes the lines while PostgreSQL takes them."""
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in cols)
    return copy_rows(conn, duck, "_ops", [c.name for c in cols],
                     sql.SQL("COPY {} ({}) FROM STDIN").format(target, names),
                     f"action = {literal(INSERT)}")


def _cast(i: int, col: Column) -> sql.Composable:
    # The type text is format_type's spelling from the live catalog (quoted where needed).
    return sql.SQL("s.{}::{}").format(sql.Identifier(f"c{i}"), sql.SQL(col.type))


def apply_plan(conn: Conn, plan: Plan, cols: list[Column]) -> Applied:
    """Apply one table's plan inside the caller's open transaction."""
    target = sql.Identifier(plan.table.schema, plan.table.name)
    counts = plan.counts()
    if not any(counts.get(a) for a in (INSERT, UPDATE, DELETE)):
        return Applied(str(plan.table), 0, 0, 0)
    writable = [c for c in cols if not c.generated]
    # One DuckDB thread makes the COPY lines: the cores are for PostgreSQL taking them.
    duck = duckdb.connect(config={"threads": 1})
    try:
        duck.register("_ops", plan.ops)
        return _apply(conn, duck, plan, target, writable)
    finally:
        duck.close()


def _apply(conn: Conn, duck: duckdb.DuckDBPyConnection, plan: Plan, target: sql.Composable,
           writable: list[Column]) -> Applied:
    by_name = {c.name: c for c in writable}
    keys = [by_name[k] for k in plan.pk]
    match = sql.SQL(" AND ").join(
        sql.SQL("t.{} = {}").format(sql.Identifier(k.name), _cast(i, k))
        for i, k in enumerate(keys))
    try:
        deleted = updated = 0
        if plan.count(DELETE):
            gone, _ = _load(conn, duck, "_replay_del", plan.pk, DELETE)
            deleted = conn.execute(sql.SQL("DELETE FROM {} t USING {} s WHERE {}").format(
                target, gone, match)).rowcount
        if plan.count(UPDATE):
            names = [k.name for k in keys] + [c.name for c in writable if c.name not in plan.pk]
            cols = [by_name[n] for n in names]
            staged, _ = _load(conn, duck, "_replay_upd", names, UPDATE)
            updated = conn.execute(sql.SQL("UPDATE {} t SET ({}) = ROW({}) FROM {} s WHERE {}"
                                           ).format(
                target, sql.SQL(", ").join(sql.Identifier(n) for n in names),
                sql.SQL(", ").join(_cast(i, c) for i, c in enumerate(cols)), staged, match)
            ).rowcount
        inserted = copy_in(conn, duck, target, writable)
    except psycopg.Error as exc:
        # The guardian's refusals: HG001 mass change, HG002 orphaning, HG003 truncate.
        if exc.sqlstate not in _GUARDIAN_CODES:
            raise
        text = first_line(exc)
        hint = (" (rerun with --allow-orphaning if leaving users without an organization "
                "is really intended)") if exc.sqlstate == "HG002" else ""
        raise GuardianRefused(f"the guardian refused the restore of {plan.table}: "
                              f"{text}{hint}; nothing was changed") from None
    return Applied(str(plan.table), inserted, updated, deleted)
