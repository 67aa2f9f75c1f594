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

import json
from dataclasses import dataclass

import duckdb
import psycopg
import pyarrow as pa
from psycopg import sql

from replay.errors import GuardianRefused
from replay.live import Column, Conn
from replay.plan import DELETE, INSERT, UPDATE, Plan
from replay.tables import quote_duck

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


def _csv_field(expr: str) -> str:
    """COPY CSV: every value quoted (quotes doubled), NULL as an empty unquoted field."""
    quoted = f"""'"' || replace({expr}, '"', '""') || '"'"""
    return f"CASE WHEN ({expr}) IS NULL THEN '' ELSE {quoted} END"


def copy_lines(rows: list[str], cols: list[Column]) -> list[str]:
    """Rows (change-event JSON) as COPY CSV lines for ``cols`` - built by DuckDB.

    Values are PostgreSQL's own text (or JSON for json/jsonb, true/false, integers), so the
    type input functions restore them exactly, like jsonb_populate_record would.
    """
    duck = duckdb.connect()
    duck.register("_rows", pa.table({"row": pa.array(rows, type=pa.string())}))
    # One parse per row: json_transform into a struct of text (JSON for json/jsonb).
    shape = json.dumps({c.name: "JSON" if c.type in ("json", "jsonb") else "VARCHAR"
                        for c in cols})
    fields = []
    for col in cols:
        value = f"r.v.{quote_duck(col.name)}"
        if col.type in ("json", "jsonb"):
            value = f"nullif({value}::VARCHAR, 'null')"
        fields.append(_csv_field(value))
    line = " || ',' || ".join(fields)
    query = (f"SELECT {line} FROM (SELECT json_transform(row, $shape) AS v FROM _rows) r")  # noqa: S608
    return [str(r[0]) for r in duck.execute(query, {"shape": shape}).fetchall()]


def copy_in(conn: Conn, target: sql.Composable, cols: list[Column], rows: list[str]) -> int:
    """Insert rows with COPY (PostgreSQL's fastest path; INSERT triggers still fire)."""
    if not rows:
        return 0
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in cols)
    lines = copy_lines(rows, cols)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(target, names)
    with conn.cursor().copy(statement) as copy:
        for i in range(0, len(lines), 10_000):
            copy.write("\n".join(lines[i:i + 10_000]) + "\n")
    return len(lines)


def apply_plan(conn: Conn, plan: Plan, cols: list[Column]) -> Applied:
    """Apply one table's plan inside the caller's open transaction."""
    target = sql.Identifier(plan.table.schema, plan.table.name)
    ops = plan.ops
    staged = [(a, r) for a, r in zip(ops.column("action").to_pylist(),
                                      ops.column("row").to_pylist(), strict=True)
              if a in (INSERT, UPDATE, DELETE)]
    if not staged:
        return Applied(str(plan.table), 0, 0, 0)
    writable = [c for c in cols if not c.generated]
    inserts = [r for a, r in staged if a == INSERT]
    staged = [(a, r) for a, r in staged if a != INSERT]
    load_rows(conn, staged)
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
        inserted = copy_in(conn, target, writable, inserts)
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
