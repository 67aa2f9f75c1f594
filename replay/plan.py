"""Planning a restore or a revert: a pure function of already-read inputs.

``plan_changes`` compares the wanted state of some keys with the live rows and returns
what to re-insert, revert (update back), and remove. With ``expected`` (a revert: the
state the transaction left) a key whose live row differs from what is expected is a
conflict instead. Nothing here touches PostgreSQL or the archive; DuckDB only computes.

Rows are compared column by column on their PostgreSQL text (the event encoding: see
replay/values.py): exact, whatever the member order or the JSON spelling of the row.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from replay.rebuild import pk_paths
from replay.tables import TableId
from replay.values import key_sql, literal, path

INSERT, UPDATE, DELETE, CONFLICT = "insert", "update", "delete", "conflict"


@dataclass(frozen=True)
class Plan:
    """One table's plan. ``ops`` columns: action, key, row (what to write, or for a delete
    and a conflict the live row), current (live row), expected (revert: what the
    transaction left)."""

    table: TableId
    ops: pa.Table
    pk: list[str]

    def count(self, action: str) -> int:
        return self.counts().get(action, 0)

    def counts(self) -> dict[str, int]:
        # value_counts in Arrow: a plan can hold 100k ops, counted many times.
        found = pc.value_counts(self.ops.column("action")).to_pylist()
        return {str(v["values"]): int(v["counts"]) for v in found}

    @property
    def changes(self) -> int:
        return sum(n for a, n in self.counts().items() if a != CONFLICT)

    def rows(self, action: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Ops of one kind as dicts with parsed JSON (for samples and tests)."""
        ops = self.ops.filter(pc.equal(self.ops.column("action"), action))
        if limit is not None:
            ops = ops.slice(0, limit)
        return [{k: json.loads(v) if k != "action" and v is not None else v
                 for k, v in op.items()} for op in ops.to_pylist()]

    def without(self, action: str) -> Plan:
        return Plan(self.table, self.ops.filter(pc.not_equal(self.ops.column("action"),
                                                             action)), self.pk)

    def without_conflicts(self) -> Plan:
        return Plan(self.table, self.ops.filter(pc.not_equal(self.ops.column("action"),
                                                             CONFLICT)), self.pk)


@dataclass(frozen=True)
class Scope:
    """Restrict a restore to rows matching column = value (e.g. organization_id) on either
    side: a row that was, or now is, in the scope."""

    equals: tuple[tuple[str, str], ...] = ()


def scope_sql(row: str, scope: Scope, params: dict[str, object]) -> str:
    """SQL true for a row (JSON ``row``) in ``scope``; binds its values into ``params``."""
    conds = []
    for i, (col, value) in enumerate(scope.equals):
        params[f"sc{i}"] = pk_paths([col])[0]
        params[f"sv{i}"] = value
        conds.append(f"json_extract_string({row}, $sc{i}) = $sv{i}")
    return " AND ".join(conds) if conds else "TRUE"


def _compat(row: str, columns: list[str], compat: tuple[str, ...]) -> str:
    """The columns' texts, json/jsonb of ``compat`` minified (schema_version 1 archives
    kept those re-serialised, so only their JSON, not their spelling, can be compared)."""
    parts = []
    for c in columns:
        text = f"json_extract_string({row}, {literal(path(c))})"
        parts.append(f"json({text})::VARCHAR" if c in compat else text)
    return f"list_value({', '.join(parts)})"


def _same(a: str, b: str, columns: list[str] | None = None,
          compat: tuple[str, ...] = ()) -> str:
    """Rows ``a`` and ``b`` of the join are both absent, or both present and equal: the
    same text, or every column's PostgreSQL text the same."""
    lenient = "" if not compat or columns is None else (
        f" OR {_compat(a + 'row', columns, compat)} IS NOT DISTINCT FROM "
        f"{_compat(b + 'row', columns, compat)}")
    return (f"(({a}k IS NULL AND {b}k IS NULL) OR ({a}k IS NOT NULL AND {b}k IS NOT NULL AND "
            f"({a}row = {b}row OR json_extract_string({a}row, $cols) IS NOT DISTINCT FROM "
            f"json_extract_string({b}row, $cols){lenient})))")


def plan_changes(conn: duckdb.DuckDBPyConnection, table: TableId, pk: list[str],
                 columns: list[str], wanted: pa.Table | duckdb.DuckDBPyRelation,
                 live: pa.Table, *, expected: pa.Table | duckdb.DuckDBPyRelation | None = None,
                 keys: pa.Table | duckdb.DuckDBPyRelation | None = None,
                 scope: Scope = Scope(), compat: tuple[str, ...] = ()) -> Plan:
    """The plan that turns ``live`` into ``wanted`` (on ``keys`` only, if given).

    ``wanted``/``expected``: relations with ``key`` and ``row``; ``live``: ``row`` only
    (its key is computed here the way the rebuild computes it); ``keys``: a ``key`` column.
    ``compat``: json/jsonb columns the archive holds as schema_version 1 re-serialisations
    (``State.v1_json``): compared as JSON, not as text.
    """
    for name, rel in (("_w", wanted), ("_l", live), ("_e", expected), ("_k", keys)):
        if isinstance(rel, duckdb.DuckDBPyRelation):
            rel.create_view(name, replace=True)
        elif rel is not None:
            conn.register(name, rel)
    params: dict[str, object] = {"pk": pk_paths(pk), "cols": pk_paths(columns)}
    only = "" if keys is None else "WHERE key IN (SELECT key FROM _k)"
    has_e = expected is not None
    conflict = f"NOT ({_same('e', 'l', columns, compat)})" if has_e else "FALSE"
    written = "wrow"
    if has_e:
        # A revert conflicts on a row only where a column the transaction changed has been
        # changed again since; the row it writes takes the transaction's columns back and
        # keeps the live value of every other column.
        def txt(row: str, col: str) -> str:
            text = f"json_extract_string({row}, {literal(path(col))})"
            return f"json({text})::VARCHAR" if col in compat else text

        changed = [f"({txt('wrow', c)} IS DISTINCT FROM {txt('erow', c)})" for c in columns]
        again = " OR ".join(f"({ch} AND {txt('lrow', c)} IS DISTINCT FROM {txt('erow', c)})"
                            for ch, c in zip(changed, columns, strict=True)) or "FALSE"
        conflict = (f"CASE WHEN wk IS NOT NULL AND ek IS NOT NULL AND lk IS NOT NULL "
                    f"THEN ({again}) ELSE {conflict} END")
        members = ", ".join(
            f"{literal(c)}, CASE WHEN {ch} THEN json_extract(wrow, {literal(path(c))}) "
            f"ELSE json_extract(lrow, {literal(path(c))}) END"
            for ch, c in zip(changed, columns, strict=True))
        written = (f"CASE WHEN ek IS NOT NULL AND lk IS NOT NULL AND wk IS NOT NULL "
                   f"THEN json_object({members})::VARCHAR ELSE wrow END")
    query = f"""
        WITH w AS (SELECT key, row::VARCHAR AS row FROM _w {only}),
        l AS (SELECT * FROM (SELECT {key_sql('row')} AS key, row::VARCHAR AS row
                             FROM _l) {only}),
        e AS ({"SELECT key, row::VARCHAR AS row FROM _e " + only if has_e else
               "SELECT NULL::VARCHAR AS key, NULL::VARCHAR AS row WHERE FALSE"}),
        j AS (
            SELECT coalesce(w.key, l.key, e.key) AS key, w.key AS wk, w.row AS wrow,
                   l.key AS lk, l.row AS lrow, e.key AS ek, e.row AS erow
            FROM w FULL JOIN l ON l.key = w.key
                   FULL JOIN e ON e.key = coalesce(w.key, l.key)
        ),
        d AS (
            SELECT *, CASE
                WHEN {_same('w', 'l', columns, compat)} THEN NULL
                WHEN {conflict} THEN 'conflict'
                WHEN lk IS NULL THEN 'insert'
                WHEN wk IS NULL THEN 'delete'
                ELSE 'update' END AS action
            FROM j
            WHERE ({scope_sql('wrow', scope, params)}) AND wk IS NOT NULL
               OR ({scope_sql('lrow', scope, params)}) AND lk IS NOT NULL
               OR ek IS NOT NULL
        )
        SELECT action, key,
               CASE WHEN action = 'delete' THEN lrow ELSE {written} END::VARCHAR AS row,
               lrow::VARCHAR AS current, erow::VARCHAR AS expected
        FROM d WHERE action IS NOT NULL
        ORDER BY key
    """  # noqa: S608 - fragments are ours; values are bound parameters
    ops = conn.sql(query, params=params).to_arrow_table()
    for name in ("_w", "_l", "_e", "_k"):
        conn.execute(f"DROP VIEW IF EXISTS {name}")
        with contextlib.suppress(duckdb.Error):
            conn.unregister(name)
    return Plan(table, ops, pk)
