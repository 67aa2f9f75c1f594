"""Writing a rebuilt state: a file (.parquet, .csv, .jsonl by suffix) or a new table.

- ``.csv``: PostgreSQL's COPY CSV text with a header (every value its PostgreSQL text, NULL
  an empty unquoted field), so ``COPY t FROM 'f.csv' (FORMAT csv, HEADER)`` loads it back
  exactly: arrays in PostgreSQL's syntax, infinity, bytea hex, json text.
- ``.parquet``: typed columns where Arrow holds the values exactly (replay/typed.py); the
  others are PostgreSQL text, named on stderr and in the file's key-value metadata
  (``hera_guard.text_columns``).
- ``.jsonl``: one row per line in the change-event encoding (capture/encoding.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from hera_kit.text import first_line
from replay.apply import write_texts_csv
from replay.errors import OutputError, TargetExists, UnknownTable
from replay.live import Conn, regclass, require_schema_create
from replay.stream import copy_rows
from replay.tables import TableId, quote_duck
from replay.typed import TypedOutput, typed_select
from replay.values import literal, path

SUFFIXES = (".parquet", ".csv", ".jsonl")
TEXT_COLUMNS_KEY = "hera_guard.text_columns"


def check_output_path(path: Path) -> None:
    if path.suffix.lower() not in SUFFIXES:
        raise OutputError(f"cannot tell the format of {path}: use a file ending in "
                          + ", ".join(SUFFIXES))
    if not path.parent.exists():
        raise OutputError(f"directory {path.parent} does not exist; create it first")


def _csv(conn: duckdb.DuckDBPyConnection, types: dict[str, str], tmp: Path) -> int:
    header = ",".join('"' + c.replace('"', '""') + '"' for c in types)
    body = tmp.with_name(tmp.name + ".body")
    try:
        n = write_texts_csv(conn, "_out_src", list(types), body)
        with tmp.open("wb") as out, body.open("rb") as f:
            out.write(header.encode() + b"\n")
            while block := f.read(1 << 20):
                out.write(block)
    finally:
        body.unlink(missing_ok=True)
    return n


def _jsonl(conn: duckdb.DuckDBPyConnection, types: dict[str, str], tmp: Path) -> int:
    # The row as the event encodes it, members in the table's column order.
    members = ", ".join(f"{literal(c)}, json_extract(row, {literal(path(c))})" for c in types)
    found = conn.execute(
        f"COPY (SELECT json_object({members})::VARCHAR AS line FROM _out_src) "  # noqa: S608 - names quoted
        f"TO {literal(str(tmp))} (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', "
        "DELIMITER '\x01')").fetchall()
    return int(found[0][0]) if found and found[0] else 0


def write_file(conn: duckdb.DuckDBPyConnection, state: duckdb.DuckDBPyRelation,
               types: dict[str, str], path: Path) -> tuple[int, list[str]]:
    """The state into ``path`` (written to a temp name, then renamed). Returns the row
    count and, for Parquet, the columns kept as PostgreSQL text (with why)."""
    check_output_path(path)
    tmp = path.with_name(f".{path.name}.partial")
    suffix = path.suffix.lower()
    state.create_view("_out_src", replace=True)
    kept: list[str] = []
    try:
        if suffix == ".parquet":
            typed: TypedOutput = typed_select(conn, conn.table("_out_src"), types)
            kept = typed.text_notes
            meta = json.dumps(typed.text_columns).replace("'", "''")
            typed.rel.create_view("_typed_out", replace=True)
            conn.execute(f"COPY _typed_out TO {literal(str(tmp))} (FORMAT parquet, "
                         f"KV_METADATA {{{literal(TEXT_COLUMNS_KEY)}: '{meta}'}})")
            n = typed.rows
        elif suffix == ".csv":
            n = _csv(conn, types, tmp)
        else:
            n = _jsonl(conn, types, tmp)
        tmp.replace(path)
    except (OSError, duckdb.Error) as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {first_line(exc)}") from None
    return n, kept


def create_table(conn: Conn, target: TableId, types: dict[str, str], replace: bool) -> None:
    """A new table with the source's columns and types (inside the caller's transaction)."""
    require_schema_create(conn, target.schema)
    ident = sql.Identifier(target.schema, target.name)
    if regclass(conn, target) is not None:
        if not replace:
            raise TargetExists(f"table {target} already exists; choose another name or add "
                               "--replace to overwrite it")
        conn.execute(sql.SQL("DROP TABLE {}").format(ident))
    defs = []
    for col, pg_type in types.items():
        try:
            # The type text comes from the archive; PostgreSQL parses it as a type name
            # (regtype) before it is placed into DDL.
            conn.execute("SELECT %s::regtype", (pg_type,))
        except psycopg.errors.DataError as exc:
            raise UnknownTable(f"column {col} has a type PostgreSQL does not know here "
                               f"({pg_type}): {exc}") from None
        except psycopg.errors.UndefinedObject as exc:
            raise UnknownTable(f"column {col} has a type PostgreSQL does not know here "
                               f"({pg_type}): {first_line(exc)}; create the type "
                               "first") from None
        defs.append(sql.SQL("{} {}").format(sql.Identifier(col), sql.SQL(pg_type)))
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(ident, sql.SQL(", ").join(defs)))


def fill_table(conn: Conn, duck: duckdb.DuckDBPyConnection, target: TableId,
               types: dict[str, str], state: duckdb.DuckDBPyRelation) -> int:
    """COPY the state's rows into ``target``: each value its PostgreSQL text, so the types'
    input functions store exactly the archived values."""
    ident = sql.Identifier(target.schema, target.name)
    state.create_view("_fill_src", replace=True)
    names = sql.SQL(", ").join(sql.Identifier(c) for c in types)
    return copy_rows(conn, duck, "_fill_src", list(types),
                     sql.SQL("COPY {} ({}) FROM STDIN").format(ident, names))


__all__ = ["SUFFIXES", "TEXT_COLUMNS_KEY", "check_output_path", "create_table", "fill_table",
           "quote_duck", "write_file"]
