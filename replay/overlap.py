"""A restore whose re-inserts stream into PostgreSQL while the live rows are still being
read and compared.

A restore's time is dominated by the COPY of its re-inserts; reading the live rows and
planning the removals and reverts need about half as long again. Re-inserts only depend on
which keys are live, so after taking the lock: the live keys are read (narrow, fast), the
re-inserts (wanted keys not live, in scope: the same rows the full plan marks ``insert``)
are copied in, and meanwhile a second connection reads the live rows for the full plan.
That connection sees the table as committed before the restore (the lock stops every other
writer; it does not see this transaction's inserts), so the full plan is the one a
sequential restore makes; its re-inserts must be exactly the ones already copied, or the
restore fails and nothing is changed. The plan stays pure (DuckDB only) and is shown before
anything commits. A re-insert that collides with a unique value a removal would have freed
rolls back to a savepoint and the restore applies in the safe order (removals first).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from replay.apply import Applied, announce, apply_plan, lock
from replay.errors import ReplayError
from replay.live import Column, Conn, read_rows
from replay.plan import INSERT, Plan, Scope, plan_changes, scope_sql
from replay.state import Progress, State, materialize
from replay.tables import TableId


def read_keys(pg: Conn, table: TableId, pk: list[str]) -> pa.Table:
    """The live keys in the rebuild's key form (JSON array of the key columns' texts)."""
    query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv)").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in pk),
        sql.Identifier(table.schema, table.name))
    buf = io.BytesIO()
    with pg.cursor().copy(query) as copy:
        for chunk in copy:
            buf.write(chunk)
    names = [f"k{i}" for i in range(len(pk))]
    if buf.tell() == 0:
        return pa.table({"key": pa.array([], type=pa.string())})
    buf.seek(0)
    text = pa_csv.read_csv(buf, read_options=pa_csv.ReadOptions(column_names=names),
                           convert_options=pa_csv.ConvertOptions(
                               column_types={n: pa.string() for n in names}))
    duck = duckdb.connect()
    try:
        duck.register("_keys", text)
        return duck.sql(f"SELECT to_json(list_value({', '.join(names)}))::VARCHAR AS key "  # noqa: S608 - our names
                        "FROM _keys").to_arrow_table()
    finally:
        duck.close()


def insert_plan(duck: duckdb.DuckDBPyConnection, state: State, keys: pa.Table,
                scope: Scope) -> Plan:
    """The re-inserts of a restore: wanted rows (in scope) whose key is not live."""
    duck.register("_live_keys", keys)
    state.rel.create_view("_ins_wanted", replace=True)
    params: dict[str, object] = {}
    where = scope_sql("w.row", scope, params)
    ops = duck.sql(
        f"SELECT 'insert' AS action, w.key, w.row::VARCHAR AS row, NULL::VARCHAR AS current, "  # noqa: S608 - ours
        f"NULL::VARCHAR AS expected FROM _ins_wanted w ANTI JOIN _live_keys k ON k.key = w.key "
        f"WHERE {where} ORDER BY w.key", params=params).to_arrow_table()
    duck.unregister("_live_keys")
    return Plan(state.table, ops, state.pk)


def restore_overlapped(duck: duckdb.DuckDBPyConnection, pg: Conn, reader: Conn, state: State,
                       cols: list[Column], scope: Scope, what: str, allow_orphaning: bool,
                       show: Callable[[list[Plan]], None],
                       progress: Progress) -> tuple[Plan, list[Applied]]:
    """The restore of ``restore.restore`` (not a dry run), re-inserts streamed early."""
    table = state.table
    with ThreadPoolExecutor(max_workers=2) as pool, pg.transaction():
        rebuilt = pool.submit(materialize, duck, state, "_wanted")
        progress(f"locking {table} (writers wait until the restore commits)")
        lock(pg, [sql.Identifier(table.schema, table.name)])
        keys = read_keys(pg, table, state.pk)  # narrow: before the wide read competes
        progress(f"reading live rows of {table} (second connection) while re-inserting")
        live_f = pool.submit(read_rows, reader, table, cols)
        state = rebuilt.result()
        early = insert_plan(duck, state, keys, scope)
        wanted = state

        def full_plan() -> Plan:
            # DuckDB plans (on ``duck``, which nothing else uses meanwhile) while
            # PostgreSQL takes the re-inserts.
            return plan_changes(duck, table, wanted.pk, list(wanted.types), wanted.rel,
                                live_f.result(), scope=scope, compat=wanted.v1_json)

        plan_f = pool.submit(full_plan)
        progress(f"re-inserting {early.count(INSERT)} rows")
        inserted: int | None = None
        try:
            with pg.transaction():  # a savepoint: a unique collision falls back below
                inserted = apply_plan(pg, early, cols).inserted
        except psycopg.errors.UniqueViolation:
            progress("a re-insert needs a value a removal frees: applying in order instead")
        progress("planning the rest")
        plan = plan_f.result()
        show([plan])
        reason = (f"replay {what} ({table}: +{plan.count(INSERT)} ~{plan.count('update')} "
                  f"-{plan.count('delete')})")
        if plan.count("delete") or plan.count("update") or allow_orphaning:
            announce(pg, reason, allow_orphaning)
        if inserted is None:
            return plan, [apply_plan(pg, plan, cols)]
        if inserted != plan.count(INSERT) or early.count(INSERT) != inserted:
            raise ReplayError(f"the restore of {table} changed while it ran ({inserted} rows "
                              f"re-inserted, the plan has {plan.count(INSERT)}); nothing "
                              "was changed - run it again")
        rest = apply_plan(pg, plan.without(INSERT), cols)
        return plan, [Applied(str(table), inserted, rest.updated, rest.deleted)]
