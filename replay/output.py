"""Writing a rebuilt state: a file (.parquet, .csv, .jsonl by suffix) or a new table."""

from __future__ import annotations

from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from replay.errors import OutputError, TargetExists, UnknownTable
from replay.live import Conn, regclass, require_schema_create
from replay.tables import TableId, first
from replay.typed import typed_select

SUFFIXES = (".parquet", ".csv", ".jsonl")


def check_output_path(path: Path) -> None:
    if path.suffix.lower() not in SUFFIXES:
        raise OutputError(f"cannot tell the format of {path}: use a file ending in "
                          + ", ".join(SUFFIXES))
    if not path.parent.exists():
        raise OutputError(f"directory {path.parent} does not exist; create it first")


def write_file(conn: duckdb.DuckDBPyConnection, state: duckdb.DuckDBPyRelation,
               types: dict[str, str], path: Path) -> int:
    """Typed columns into ``path`` (written to a temp name, then renamed). Returns rows."""
    check_output_path(path)
    rel = typed_select(conn, state, types)
    tmp = path.with_name(f".{path.name}.partial")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            rel.write_parquet(str(tmp))
        elif suffix == ".csv":
            rel.write_csv(str(tmp), header=True)
        else:
            rel.create_view("_typed_out", replace=True)
            literal = "'" + str(tmp).replace("'", "''") + "'"
            conn.execute(f"COPY _typed_out TO {literal} (FORMAT json)")
        tmp.replace(path)
    except (OSError, duckdb.Error) as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {str(exc).splitlines()[0]}") from None
    row = first(conn.execute("SELECT count(*) FROM _typed_src"))
    return int(row[0]) if row else 0


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
        defs.append(sql.SQL("{} {}").format(sql.Identifier(col), sql.SQL(pg_type)))
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(ident, sql.SQL(", ").join(defs)))


def fill_table(conn: Conn, target: TableId, types: dict[str, str], rows: list[str]) -> int:
    """Insert rows (change-event JSON) through jsonb_populate_record: exact values."""
    ident = sql.Identifier(target.schema, target.name)
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _replay_rows (row jsonb) ON COMMIT DROP")
    conn.execute("TRUNCATE _replay_rows")
    with conn.cursor().copy("COPY _replay_rows (row) FROM STDIN") as copy:
        for r in rows:
            copy.write_row((r,))
    names = sql.SQL(", ").join(sql.Identifier(c) for c in types)
    return conn.execute(sql.SQL(
        "INSERT INTO {} ({}) SELECT r.* FROM _replay_rows o, "
        "jsonb_populate_record(NULL::{}, o.row) r").format(ident, names, ident)).rowcount
