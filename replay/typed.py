"""From the change-event encoding to typed columns (DuckDB) for Parquet output.

``types`` (PostgreSQL ``format_type`` spellings) proposes each column's type; the data
decides whether Arrow can hold it exactly. A column stays PostgreSQL text when its type has
no exact Arrow equivalent (``numeric`` without precision: DuckDB's DECIMAL tops out at 38
digits; intervals, ranges, inet, json, ...) or when one of its values does not fit (numeric
``NaN`` in a DECIMAL column, timestamptz ``infinity``, which Parquet would store as int64
max, years BC, multi-dimensional arrays). Which columns and why: ``TypedOutput``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from replay.tables import first, quote_duck
from replay.values import texts_struct_sql

_SIMPLE = {
    "boolean": "BOOLEAN", "smallint": "SMALLINT", "integer": "INTEGER", "bigint": "BIGINT",
    "real": "FLOAT", "double precision": "DOUBLE", "uuid": "UUID", "date": "DATE",
    "timestamp with time zone": "TIMESTAMPTZ", "timestamp without time zone": "TIMESTAMP",
    "time without time zone": "TIME", "text": "VARCHAR", "bytea": "BLOB",
}
_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
_PRECISION = re.compile(r"^(timestamp|time)\(\d\) (with|without) time zone$")
_INFINITE = ("DATE", "TIMESTAMPTZ", "TIMESTAMP")


def _is_text(pg_type: str) -> bool:
    return pg_type in ("text", "name", "character", '"char"') or pg_type.startswith(
        ("character varying", "character("))


def duck_type(pg_type: str) -> str | None:
    """The DuckDB type for a PostgreSQL type, or None for "keep PostgreSQL's text"."""
    t = _PRECISION.sub(r"\1 \2 time zone", pg_type)
    if t in _SIMPLE:
        return _SIMPLE[t]
    if _is_text(t):
        return "VARCHAR"
    m = _NUMERIC.match(t)
    if m and int(m.group(1)) <= 38:
        return f"DECIMAL({m.group(1)},{m.group(2)})"
    if t.endswith("[]") and not t.endswith("[][]"):
        inner = duck_type(t[:-2])
        if inner is None or inner == "BLOB":
            return None
        return inner + "[]"
    return None


# PostgreSQL's 1-D array text ({a,"b c",NULL,"x\"y"}) -> list, in SQL (Python UDFs would
# need numpy): quoted elements are unescaped, a bare NULL is NULL, "NULL" stays text.
PG_ARRAY_SQL = r"""CASE WHEN {x} IS NULL THEN NULL ELSE list_transform(
    regexp_extract_all({x}, '"(?:[^"\\]|\\.)*"|[^,{{}}"]+'),
    lambda e: CASE WHEN e[1] = '"' THEN regexp_replace(e[2:-2], '\\(.)', '\1', 'g')
                   WHEN e = 'NULL' THEN NULL ELSE e END) END"""


def _typed_sql(text: str, dt: str, try_: bool) -> str:
    cast = "TRY_CAST" if try_ else "CAST"
    if dt.endswith("[]"):
        return f"{cast}({PG_ARRAY_SQL.format(x=text)} AS {dt})"
    if dt == "BLOB":
        return f"from_hex(substr({text}, 3))"
    return f"{cast}({text} AS {dt})"


def _misfit_sql(text: str, dt: str) -> str:
    """SQL true for a non-NULL text the typed column cannot hold exactly."""
    if dt == "VARCHAR":
        return "FALSE"
    if dt == "BLOB":
        return f"NOT starts_with({text}, '\\x')"
    typed = _typed_sql(text, dt, try_=True)
    if dt.endswith("[]"):
        shape = f"(starts_with({text}, '[') OR starts_with({text}, '{{{{'))"
        if dt == "VARCHAR[]":  # every element is text: only the array's shape can misfit
            return shape
        return (f"({shape} OR "
                f"list_count({typed}) <> list_count({PG_ARRAY_SQL.format(x=text)}))")
    if dt in _INFINITE:
        return f"({typed} IS NULL OR isinf({typed}))"
    return f"{typed} IS NULL"


@dataclass(frozen=True)
class TypedOutput:
    rel: duckdb.DuckDBPyRelation
    rows: int
    text_columns: dict[str, str]  # column -> why it is PostgreSQL text

    @property
    def text_notes(self) -> list[str]:
        return [f"{c} ({why})" for c, why in self.text_columns.items()]


def typed_select(conn: duckdb.DuckDBPyConnection, rel: duckdb.DuckDBPyRelation,
                 types: dict[str, str]) -> TypedOutput:
    """``rel`` (a ``row`` JSON column) as typed columns in ``types`` order.

    One parse per row (json_transform into a struct of text) into a temp table, one pass
    over it to find the values a typed column could not hold, then the casts.
    """
    names = list(types)
    rel.create_view("_typed_src", replace=True)
    cols = ", ".join(f"v.{quote_duck(n)} AS {quote_duck(n)}" for n in names)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _typed_text AS SELECT {cols} FROM "  # noqa: S608 - names quoted
                 f"(SELECT {texts_struct_sql('row', names)} AS v FROM _typed_src)")
    proposed = {c: duck_type(t) for c, t in types.items()}
    checks = [(c, dt) for c, dt in proposed.items()
              if dt is not None and dt not in ("VARCHAR", "UUID", "BOOLEAN")]
    filters = "".join(f", count(*) FILTER (WHERE {quote_duck(c)} IS NOT NULL AND "
                      f"{_misfit_sql(quote_duck(c), dt)})" for c, dt in checks)
    counts = first(conn.execute(f"SELECT count(*){filters} FROM _typed_text"))  # noqa: S608
    rows = int(counts[0]) if counts else 0
    misfits = {c: int(n) for (c, _), n in zip(checks, (counts or [0])[1:], strict=True)}
    text_columns: dict[str, str] = {}
    exprs = []
    for col, pg_type in types.items():
        name = quote_duck(col)
        dt = proposed[col]
        if dt is None:
            if not _is_text(pg_type):
                text_columns[col] = f"{pg_type}: no exact Arrow type"
            exprs.append(f"{name} AS {name}")
        elif misfits.get(col):
            text_columns[col] = (f"{pg_type}: {misfits[col]} values {dt} cannot hold exactly"
                                 + (" (e.g. infinity)" if dt in _INFINITE else ""))
            exprs.append(f"{name} AS {name}")
        else:
            exprs.append(f"{_typed_sql(name, dt, try_=False)} AS {name}")
    return TypedOutput(conn.sql(f"SELECT {', '.join(exprs)} FROM _typed_text"),  # noqa: S608
                       rows, text_columns)
