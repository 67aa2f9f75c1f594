"""From the change-event encoding to typed columns (DuckDB) for file outputs.

``types`` (PostgreSQL ``format_type`` spellings) decides each column's type. Exact types
stay exact: ``numeric`` without precision stays text (DuckDB's DECIMAL tops out at 38
digits); ``numeric(p,s)`` with p <= 38 becomes DECIMAL(p,s). One-dimensional arrays
become lists; types DuckDB lacks (intervals, ranges, inet, ...) stay PostgreSQL text.
"""

from __future__ import annotations

import json
import re

import duckdb

_SIMPLE = {
    "boolean": "BOOLEAN", "smallint": "SMALLINT", "integer": "INTEGER", "bigint": "BIGINT",
    "real": "FLOAT", "double precision": "DOUBLE", "uuid": "UUID", "date": "DATE",
    "timestamp with time zone": "TIMESTAMPTZ", "timestamp without time zone": "TIMESTAMP",
    "time without time zone": "TIME", "text": "VARCHAR", "bytea": "VARCHAR",
}
_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
_PRECISION = re.compile(r"^(timestamp|time)\(\d\) (with|without) time zone$")


def duck_type(pg_type: str) -> str | None:
    """The DuckDB type for a PostgreSQL type, or None for "keep PostgreSQL's text"."""
    t = _PRECISION.sub(r"\1 \2 time zone", pg_type)
    if t in _SIMPLE:
        return _SIMPLE[t]
    if t.startswith(("character varying", "character(")) or t == "character":
        return "VARCHAR"
    m = _NUMERIC.match(t)
    if m and int(m.group(1)) <= 38:
        return f"DECIMAL({m.group(1)},{m.group(2)})"
    if t in ("json", "jsonb"):
        return "JSON"
    if t.endswith("[]") and not t.endswith("[][]"):
        inner = duck_type(t[:-2])
        if inner is None or inner == "JSON":
            return "VARCHAR[]"
        return inner + "[]"
    return None


# PostgreSQL's 1-D array text ({a,"b c",NULL,"x\"y"}) -> list, in SQL (Python UDFs would
# need numpy): quoted elements are unescaped, a bare NULL is NULL, "NULL" stays text.
PG_ARRAY_SQL = r"""CASE WHEN {x} IS NULL THEN NULL ELSE list_transform(
    regexp_extract_all({x}, '"(?:[^"\\]|\\.)*"|[^,{{}}"]+'),
    lambda e: CASE WHEN e[1] = '"' THEN regexp_replace(e[2:-2], '\\(.)', '\1', 'g')
                   WHEN e = 'NULL' THEN NULL ELSE e END) END"""


def typed_select(conn: duckdb.DuckDBPyConnection, rel: duckdb.DuckDBPyRelation,
                 types: dict[str, str]) -> duckdb.DuckDBPyRelation:
    """``rel`` (a ``row`` JSON column) as typed columns in ``types`` order.

    One parse per row (json_transform into a struct of text, JSON for json/jsonb), then
    casts: extracting column by column would parse every row once per column.
    """
    rel.create_view("_typed_src", replace=True)
    shape = json.dumps({c: "JSON" if duck_type(t) == "JSON" else "VARCHAR"
                        for c, t in types.items()}).replace("'", "''")
    exprs = []
    for col, pg_type in types.items():
        name = '"' + col.replace('"', '""') + '"'
        text = f"v.{name}"
        dt = duck_type(pg_type)
        if dt is None or dt == "JSON":
            exprs.append(f"{text} AS {name}")
        elif dt.endswith("[]"):
            exprs.append(f"CAST({PG_ARRAY_SQL.format(x=text)} AS {dt}) AS {name}")
        else:
            exprs.append(f"CAST({text} AS {dt}) AS {name}")
    return conn.sql(f"SELECT {', '.join(exprs)} FROM "  # noqa: S608 - names escaped
                    f"(SELECT json_transform(row, '{shape}') AS v FROM _typed_src)")
