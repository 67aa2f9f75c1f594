"""Checkpoints: a table's rebuilt state written into the archive, so replay applies only the
tail after it (litestream's and pgBackRest's snapshot + log, per table).

- ``make_checkpoint``: the state replay rebuilds at an LSN (itself from the previous
  checkpoint + its tail, so each checkpoint costs the changes since the last one), streamed
  into the archive's checkpoint table (consumers/archive/checkpoints.py) in one commit;
- ``attach``: at ``open_history``, the archive's checkpoints as relations of the DuckDB
  connection (read lazily: nothing but the Delta log and the headers is read up front);
- ``nearest``: the newest checkpoint of a table at or before a point, in the point's epoch;
- ``verify_checkpoint``: a checkpoint against a rebuild from the beginning of its epoch.

The header records what the rows cannot say: the column types at the LSN (``types``), the
last event's types and order (``event_types``: the schema-change steps after the checkpoint
start from them), the primary key, the epoch, the row count, the schema changes applied up
to it, and the json columns written in schema_version 1.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import Any

import duckdb

from capture.event import format_lsn
from consumers.archive import checkpoints as store
from consumers.archive.location import ArchiveLocation
from consumers.archive.views import parquet_source
from replay import staging
from replay.tables import TableId, first

INDEX = "_hera_checkpoint_index"
_NO_ROWS = "(SELECT NULL::VARCHAR AS key, NULL::VARCHAR AS row WHERE false)"
# Checkpoints on object storage not yet copied locally: view name -> (location, files).
_REMOTE: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection,
                                   dict[str, tuple[ArchiveLocation, tuple[str, ...]]]] = \
    weakref.WeakKeyDictionary()
BATCH_ROWS = 50_000  # rows per streamed batch: the writer holds one batch at a time


@dataclass(frozen=True)
class Found:
    table: TableId
    lsn: int
    relation: str  # a relation of the connection with ``key``, ``row``
    header: dict[str, Any]

    @property
    def pk(self) -> list[str]:
        return list(self.header["pk"])

    @property
    def event_types(self) -> tuple[int, dict[str, str]] | None:
        found = self.header.get("event_types")
        return None if found is None else (int(found[0]), dict(found[1]))


def attach(conn: duckdb.DuckDBPyConnection, loc: ArchiveLocation) -> int:
    """Register the archive's checkpoints in ``conn``; returns how many."""
    found = store.list_checkpoints(loc)
    conn.execute(f"CREATE OR REPLACE TABLE {INDEX} (table_schema VARCHAR, table_name VARCHAR, "
                 "lsn UBIGINT, epoch_lsn UBIGINT, relation VARCHAR, header VARCHAR)")
    for i, ckpt in enumerate(found):
        name = f"_hera_checkpoint_{i}"
        if loc.is_local:
            source = parquet_source(list(ckpt.files)) or _NO_ROWS
            conn.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT key, row "  # noqa: S608
                         f"FROM {source}")
        else:  # copied to local disk when chosen (``nearest``): see replay/staging.py
            _REMOTE.setdefault(conn, {})[name] = (store.location(loc), ckpt.files)
            conn.register(f"{name}_ds", store.rows_dataset(loc, ckpt))
            conn.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT key, row "  # noqa: S608
                         f"FROM {name}_ds")
        schema, _, table = ckpt.table.partition(".")
        conn.execute(f"INSERT INTO {INDEX} VALUES ($s, $t, $l, $e, $r, $h)",  # noqa: S608
                     {"s": schema, "t": table, "l": ckpt.lsn,
                      "e": int(ckpt.header["epoch_lsn"]), "r": name,
                      "h": json.dumps(ckpt.header)})
    return len(found)


def nearest(conn: duckdb.DuckDBPyConnection, table: TableId, epoch_lsn: int,
            upto: int) -> Found | None:
    """The newest checkpoint of ``table`` made in the epoch starting at ``epoch_lsn``, at or
    before ``upto`` (None: replay from the epoch's snapshot)."""
    if not _has_index(conn):
        return None
    row = first(conn.execute(
        f"SELECT lsn, relation, header FROM {INDEX} WHERE table_schema = $s "  # noqa: S608
        "AND table_name = $t AND epoch_lsn = $e AND lsn <= $u ORDER BY lsn DESC LIMIT 1",
        {"s": table.schema, "t": table.name, "e": epoch_lsn, "u": upto}))
    if row is None:
        return None
    _localize(conn, str(row[1]))
    return Found(table, int(row[0]), str(row[1]), json.loads(str(row[2])))


def _localize(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """A checkpoint on object storage about to be read: its view switched from the lazy
    pyarrow dataset to DuckDB's Parquet reader over local copies (once)."""
    remote = _REMOTE.get(conn, {}).pop(name, None)
    if remote is None:
        return
    source = parquet_source(staging.local_copies(conn, remote[0], remote[1])) or _NO_ROWS
    conn.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT key, row "  # noqa: S608
                 f"FROM {source}")
    conn.unregister(f"{name}_ds")


def has_any(conn: duckdb.DuckDBPyConnection, table: TableId) -> bool:
    """Whether a checkpoint of ``table`` exists (then the table is archived, no scan needed)."""
    if not _has_index(conn):
        return False
    return first(conn.execute(
        f"SELECT 1 FROM {INDEX} WHERE table_schema = $s AND table_name = $t LIMIT 1",  # noqa: S608
        {"s": table.schema, "t": table.name})) is not None


def newest_lsn(conn: duckdb.DuckDBPyConnection, table: TableId) -> int | None:
    if not _has_index(conn):
        return None
    row = first(conn.execute(
        f"SELECT max(lsn) FROM {INDEX} WHERE table_schema = $s AND table_name = $t",  # noqa: S608
        {"s": table.schema, "t": table.name}))
    return None if row is None or row[0] is None else int(row[0])


def _has_index(conn: duckdb.DuckDBPyConnection) -> bool:
    found = first(conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = $n",
                               {"n": INDEX}))
    return bool(found and found[0])


def header_of(state: Any, epoch_lsn: int, event_types: tuple[int, dict[str, str]] | None,
              rows: int) -> dict[str, Any]:
    """The header of a checkpoint of ``state`` (a replay.state.State)."""
    return {"table": str(state.table), "lsn": state.upto_lsn, "epoch_lsn": epoch_lsn,
            "rows": rows, "pk": list(state.pk), "types": dict(state.types),
            "event_types": None if event_types is None else [event_types[0],
                                                             event_types[1]],
            "schema_changes": len(state.steps), "v1_json": list(state.v1_json),
            "lsn_text": format_lsn(state.upto_lsn)}


def write(loc: ArchiveLocation, conn: duckdb.DuckDBPyConnection, state: Any,
          epoch_lsn: int, event_types: tuple[int, dict[str, str]] | None) -> int:
    """Stream ``state`` (DuckDB runs the rebuild within its memory limit, spilling) into the
    archive in batches, nothing materialised; returns the row count."""
    reader = state.rel.project("key, row::VARCHAR AS row").to_arrow_reader(BATCH_ROWS)
    return store.write_checkpoint(loc, header_of(state, epoch_lsn, event_types, 0),
                                  iter(reader))


def differing_rows(conn: duckdb.DuckDBPyConnection, a: duckdb.DuckDBPyRelation,
                   b: duckdb.DuckDBPyRelation) -> int:
    """Rows (key, row) in one relation and not in the other (0: the same state)."""
    # DuckDB tables, not Arrow: they stay within the memory limit (spilled when needed)
    a.project("key, row::VARCHAR AS row").create("_hera_cmp_a")
    b.project("key, row::VARCHAR AS row").create("_hera_cmp_b")
    found = first(conn.execute(
        "SELECT (SELECT count(*) FROM (SELECT * FROM _hera_cmp_a EXCEPT ALL "
        "SELECT * FROM _hera_cmp_b)) + (SELECT count(*) FROM (SELECT * FROM _hera_cmp_b "
        "EXCEPT ALL SELECT * FROM _hera_cmp_a))"))
    conn.execute("DROP TABLE _hera_cmp_a; DROP TABLE _hera_cmp_b")
    return int(found[0]) if found else 0


__all__ = ["Found", "attach", "differing_rows", "has_any", "nearest", "newest_lsn", "write"]
