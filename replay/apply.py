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
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg
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


def _stream_file(conn: Conn, statement: sql.Composed | sql.SQL, path: Path) -> None:
    with conn.cursor().copy(statement) as copy, path.open("rb") as f:
        while block := f.read(1 << 20):
            copy.write(block)


def _literal(text: str) -> str:
    """A DuckDB string literal (COPY takes no bound parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _write_csv(duck: duckdb.DuckDBPyConnection, query: str, path: Path) -> int:
    """``query``'s rows as PostgreSQL COPY CSV: every value quoted, NULL an empty unquoted
    field (DuckDB's writer with FORCE_QUOTE does exactly that). Returns the row count."""
    found = duck.execute(f"COPY ({query}) TO {_literal(str(path))} "
                         "(FORMAT csv, HEADER false, FORCE_QUOTE *)").fetchall()
    return int(found[0][0]) if found and found[0] else 0


def load_rows(conn: Conn, duck: duckdb.DuckDBPyConnection, workdir: Path) -> int:
    """The plan's deletes and updates (``_ops``) into a transaction-local staging table."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _replay_ops (action text, row jsonb) "
                 "ON COMMIT DROP")
    conn.execute("TRUNCATE _replay_ops")
    path = workdir / "ops.csv"
    n = _write_csv(duck, "SELECT action, row FROM _ops WHERE action IN ('update', 'delete')",
                   path)  # UPDATE, DELETE
    if n:
        _stream_file(conn, sql.SQL("COPY _replay_ops (action, row) FROM STDIN (FORMAT csv)"),
                     path)
    return n


def copy_in(conn: Conn, duck: duckdb.DuckDBPyConnection, target: sql.Composable,
            cols: list[Column], workdir: Path) -> int:
    """Insert the plan's re-inserts (``_ops``) with COPY: PostgreSQL's fastest path (INSERT
    triggers still fire).

    DuckDB turns each row (change-event JSON, one parse: json_transform into a struct of
    text) into its columns' PostgreSQL text (JSON for json/jsonb, true/false, integers), so
    the type input functions restore the values exactly, like jsonb_populate_record would;
    its CSV writer makes the file and it is streamed as is: no Python object per row.
    """
    shape = json.dumps({c.name: "JSON" if c.type in ("json", "jsonb") else "VARCHAR"
                        for c in cols})
    fields = []
    for col in cols:
        value = f"r.v.{quote_duck(col.name)}"
        if col.type in ("json", "jsonb"):
            value = f"nullif({value}::VARCHAR, 'null')"
        fields.append(value)
    path = workdir / "inserts.csv"
    n = _write_csv(duck, f"SELECT {', '.join(fields)} FROM (SELECT json_transform(row, "  # noqa: S608 - names quoted
                   f"{_literal(shape)}) AS v FROM _ops WHERE action = {_literal(INSERT)}) r",
                   path)
    if n:
        names = sql.SQL(", ").join(sql.Identifier(c.name) for c in cols)
        _stream_file(conn, sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(target, names),
                     path)
    return n


def apply_plan(conn: Conn, plan: Plan, cols: list[Column]) -> Applied:
    """Apply one table's plan inside the caller's open transaction."""
    target = sql.Identifier(plan.table.schema, plan.table.name)
    counts = plan.counts()
    if not any(counts.get(a) for a in (INSERT, UPDATE, DELETE)):
        return Applied(str(plan.table), 0, 0, 0)
    writable = [c for c in cols if not c.generated]
    duck = duckdb.connect()
    duck.register("_ops", plan.ops)
    with tempfile.TemporaryDirectory(prefix="hera-replay-") as tmp:
        return _apply(conn, duck, plan, target, writable, Path(tmp))


def _apply(conn: Conn, duck: duckdb.DuckDBPyConnection, plan: Plan, target: sql.Composable,
           writable: list[Column], workdir: Path) -> Applied:
    load_rows(conn, duck, workdir)
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
        inserted = copy_in(conn, duck, target, writable, workdir)
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
