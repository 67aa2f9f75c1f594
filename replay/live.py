"""Reading PostgreSQL: a table's columns, primary key, privileges, and rows in the
change-event encoding (so they compare with, and restore like, archived rows).

The session uses capture's settings (``capture.encoding.SESSION_OPTIONS``: UTC, ISO dates,
postgres intervals, extra_float_digits=1, hex bytea): a value's text is then exactly what
capture archived for it, and the row is built with capture's encoding rule (text as a JSON
string; booleans and int2/int4 native), so live and archived rows compare exactly.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from capture.encoding import NATIVE_TYPES, SESSION_OPTIONS, canonical_type_path
from replay.errors import PrivilegeError, ReplayError, UnknownTable
from replay.tables import TableId
from replay.values import encode_text_sql

# json_build_object takes at most 100 arguments: 50 columns per call, merged beyond that.
_MAX_PAIRS = 50

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type under capture.encoding.TYPE_SEARCH_PATH, as capture's ``types``
    generated: bool = False


def connect(dsn: str) -> Conn:
    """Autocommit: every change replay makes is inside an explicit ``transaction()``."""
    return psycopg.connect(dsn, options=SESSION_OPTIONS, autocommit=True)


def regclass(conn: Conn, table: TableId) -> int | None:
    row = conn.execute("SELECT to_regclass(%s)::oid",
                       (sql.Identifier(table.schema, table.name).as_string(conn),)).fetchone()
    return None if row is None or row[0] is None else int(str(row[0]))


def columns(conn: Conn, table: TableId) -> list[Column]:
    """The table's columns in attnum order; UnknownTable if it does not exist."""
    oid = regclass(conn, table)
    if oid is None:
        raise UnknownTable(f"table {table} does not exist in the database; check --table "
                           "and the DSN's database")
    # Capture's spelling (public.mood, never mood): the session's search_path must not make
    # the same enum or domain look like a schema difference.
    with canonical_type_path(conn):
        rows = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attgenerated <> '' "
            "FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum", (oid,)).fetchall()
    return [Column(str(n), str(t), bool(g)) for n, t, g in rows]


def primary_key(conn: Conn, table: TableId) -> list[str]:
    oid = regclass(conn, table)
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i "
        "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.n", (oid,)).fetchall()
    if not rows:
        raise UnknownTable(f"table {table} has no primary key; replay restores rows by key")
    return [str(r[0]) for r in rows]


def require_privileges(conn: Conn, table: TableId, privileges: Iterable[str]) -> None:
    """PrivilegeError naming the first missing privilege (checked before any change)."""
    name = sql.Identifier(table.schema, table.name).as_string(conn)
    for priv in privileges:
        row = conn.execute("SELECT has_table_privilege(%s, %s)", (name, priv)).fetchone()
        if not (row and row[0]):
            who = conn.execute("SELECT current_user").fetchone()
            raise PrivilegeError(
                f"role {who[0] if who else '?'} lacks {priv} on {table}; grant it "
                f"(GRANT {priv} ON {table} TO ...) or use a DSN with that privilege")


def require_schema_create(conn: Conn, schema: str) -> None:
    exists = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (schema,)).fetchone()
    if not (exists and exists[0]):
        raise ReplayError(f"schema {schema} does not exist in the target database: create it "
                          f"(CREATE SCHEMA {schema}) or name an existing schema in --into-table")
    row = conn.execute("SELECT has_schema_privilege(%s, 'CREATE')", (schema,)).fetchone()
    if not (row and row[0]):
        who = conn.execute("SELECT current_user").fetchone()
        raise PrivilegeError(f"role {who[0] if who else '?'} cannot create tables in schema "
                             f"{schema}; grant CREATE on it or use another DSN")


def output_text_sql(expr: sql.Composable) -> sql.Composable:
    """SQL giving ``expr``'s text exactly as its type's output function prints it (what
    capture archives and COPY sends), NULL for NULL. Not ``expr::text``: a cast to text can
    be a function of its own (inet's adds the netmask, bpchar's drops trailing spaces);
    concat() always calls the output function. No ``%`` in it: callers pass parameters."""
    return sql.SQL("CASE WHEN {e} IS NULL THEN NULL ELSE concat({e}) END").format(e=expr)


def _encoded(col: Column) -> sql.Composable:
    ident = sql.Identifier(col.name)
    if col.type in NATIVE_TYPES:
        return ident
    return output_text_sql(ident)


def row_json_sql(cols: list[Column]) -> sql.Composable:
    """An expression building the row as JSON text in the change-event encoding."""
    parts: list[sql.Composable] = []
    for i in range(0, len(cols), _MAX_PAIRS):
        pairs = sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(c.name), _encoded(c))
            for c in cols[i:i + _MAX_PAIRS])
        parts.append(sql.SQL("json_build_object({})").format(pairs))
    if len(parts) == 1:
        return sql.SQL("{}::text").format(parts[0])
    return sql.SQL("({})::text").format(
        sql.SQL(" || ").join(sql.SQL("{}::jsonb").format(p) for p in parts))


def rows_as_json(text: pa.Table, cols: list[Column]) -> pa.Table:
    """Columns of PostgreSQL text (``c0``..) -> one ``row`` column in the change-event
    encoding, the same values ``row_json_sql`` builds."""
    # One concat() call: chained || builds an intermediate string per operator (4x slower).
    parts = ["'{'"]
    for i, col in enumerate(cols):
        ref = f"c{i}"
        key = json.dumps(col.name) + ":"
        parts += ["'" + ("," if i else "") + key.replace("'", "''") + "'",
                  encode_text_sql(col.type, ref)]
    parts.append("'}'")
    duck = duckdb.connect()
    try:
        duck.register("_text", text)
        return duck.sql(f"SELECT concat({', '.join(parts)}) AS row FROM _text"  # noqa: S608 - names quoted
                        ).to_arrow_table()
    finally:
        duck.close()


def read_rows(conn: Conn, table: TableId, cols: list[Column],
              where: sql.Composable | None = None, params: tuple[object, ...] = ()) -> pa.Table:
    """All rows of ``table`` (optionally filtered) as an Arrow table with one ``row`` column.

    PostgreSQL sends each column's plain text (COPY CSV: no JSON built server-side, which
    costs it several times the copy itself); Arrow's C++ reader parses it and DuckDB turns
    it into the change-event JSON. No Python object per row.
    """
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in cols),
        sql.Identifier(table.schema, table.name))
    if where is not None:
        query = sql.SQL("{} WHERE {}").format(query, where)
    buf = io.BytesIO()
    with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query),
                            params or None) as copy:
        for chunk in copy:
            buf.write(chunk)
    if buf.tell() == 0:
        return pa.table({"row": pa.array([], type=pa.string())})
    buf.seek(0)
    names = [f"c{i}" for i in range(len(cols))]
    # COPY CSV: NULL is an empty unquoted field, an empty string is "".
    text = pa_csv.read_csv(
        buf, read_options=pa_csv.ReadOptions(column_names=names),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={n: pa.string() for n in names}, null_values=[""],
            strings_can_be_null=True, quoted_strings_can_be_null=False))
    return rows_as_json(text, cols)
