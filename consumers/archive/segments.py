"""The archive's rows: one Arrow schema per kind, event -> column conversion, and the one
Delta table schema they are all stored in.

The Delta table holds every kind (``changes``, ``transactions``, ``markers``,
``schema_changes``) in one table partitioned by ``kind``: the columns of the table are the
union of the kinds' columns (a row of one kind leaves the others' columns NULL, which Parquet
stores for almost nothing). One table means one atomic Delta commit per archiver batch with
every kind of row, the Kafka offsets and the stream identity in it: no protocol across tables.
The ``kind`` partition puts each kind in its own directory, so a reader of one kind (``WHERE
kind = 'changes'``) lists and reads only its files.

Delta has no unsigned integers: LSNs are stored as ``long`` (int64; PostgreSQL LSNs stay far
below 2**63) and the reader's views cast them back to UBIGINT. JSON documents are UTF-8
strings, exactly the bytes capture wrote; timestamps are UTC microseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic_core import to_json

from capture.event import ChangeEvent, SchemaChangeEvent, StreamMarker, TransactionEvent

UTC_US = pa.timestamp("us", tz="UTC")

# What the archiver's parsers produce for changes (bulk_parse and the model path).
CHANGES_SCHEMA = pa.schema([
    ("table_schema", pa.string()),
    ("table_name", pa.string()),
    ("op", pa.string()),
    ("commit_lsn", pa.uint64()),
    ("position", pa.int32()),
    ("xid", pa.int64()),
    ("commit_ts", UTC_US),
    ("key", pa.string()),
    ("before", pa.string()),
    ("after", pa.string()),
    ("types", pa.string()),
    ("snapshot", pa.bool_()),
    ("event_ts", UTC_US),
    ("schema_version", pa.int32()),
    ("reread", pa.string()),  # an online re-read's row: why the table was re-read; else NULL
])

TRANSACTIONS_SCHEMA = pa.schema([
    ("xid", pa.int64()),
    ("commit_lsn", pa.uint64()),
    ("commit_ts", UTC_US),
    ("event_count", pa.int64()),
    ("data_collections", pa.string()),
    ("author", pa.string()),  # capture.event.Author as JSON; NULL: no author (or older rows)
])

MARKERS_SCHEMA = pa.schema([
    ("status", pa.string()),
    ("slot", pa.string()),
    ("db", pa.string()),
    ("epoch_lsn", pa.uint64()),
    ("lsn", pa.uint64()),
    ("ts", UTC_US),
    ("tables", pa.list_(pa.string())),
    ("system_identifier", pa.string()),
    ("plugin", pa.string()),
    ("definitions", pa.string()),  # SNAPSHOT_START: the tables' definitions (JSON)
    # PostgreSQL's time (capture.event.StreamMarker.commit_ts_us): PROGRESS, the newest
    # commit's at or before lsn; SNAPSHOT_START, after the slot was created (NULL in markers
    # written before capture recorded it)
    ("commit_ts", UTC_US),
    # The online re-reads as of the marker's LSN (JSON list of capture.reread.RereadState;
    # a REREAD_END marker's holds the one that ended, with where it was requested).
    ("rereads", pa.string()),
])

SCHEMA_CHANGES_SCHEMA = pa.schema([
    ("table_schema", pa.string()),
    ("table_name", pa.string()),
    ("commit_lsn", pa.uint64()),
    ("position", pa.int32()),
    ("xid", pa.int64()),
    ("commit_ts", UTC_US),
    ("lsn", pa.uint64()),
    ("columns", pa.string()),
    ("command_tag", pa.string()),
    ("ddl", pa.string()),
    ("recorded", pa.bool_()),
    ("schema_version", pa.int32()),
])

SCHEMAS = {"changes": CHANGES_SCHEMA, "transactions": TRANSACTIONS_SCHEMA,
           "markers": MARKERS_SCHEMA, "schema_changes": SCHEMA_CHANGES_SCHEMA}
KINDS = tuple(SCHEMAS)


def _delta_type(t: pa.DataType) -> pa.DataType:
    return pa.int64() if t == pa.uint64() else t


def _table_schema() -> pa.Schema:
    fields: dict[str, pa.DataType] = {"kind": pa.string()}
    for schema in SCHEMAS.values():
        for f in schema:
            t = _delta_type(f.type)
            if fields.setdefault(f.name, t) != t:
                raise AssertionError(f"column {f.name} has two types")  # caught at import
    return pa.schema(list(fields.items()))


TABLE_SCHEMA = _table_schema()
# Columns added after archives were first written: a writer adds them to an older table
# (``table.add_missing_columns``), a reader of files without them reads NULL.
ADDED_COLUMNS = ("author", "reread", "rereads")


def to_table_rows(kind: str, rows: pa.Table) -> pa.Table:
    """``rows`` of one kind (its ``SCHEMAS[kind]``) as rows of the Delta table."""
    n = rows.num_rows
    cols = []
    for f in TABLE_SCHEMA:
        if f.name == "kind":
            cols.append(pa.array([kind] * n, pa.string()))
        elif f.name in rows.column_names:
            cols.append(rows[f.name].cast(f.type))
        else:
            cols.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(cols, schema=TABLE_SCHEMA)


def _json(value: Any) -> str | None:
    return None if value is None else to_json(value).decode()


def changes_table(events: Iterable[ChangeEvent]) -> pa.Table:
    return sort_changes(changes_rows(events))


def changes_rows(events: Iterable[ChangeEvent]) -> pa.Table:
    """The events as ``CHANGES_SCHEMA`` rows, in their order (``sort_changes`` before writing)."""
    cols: dict[str, list[Any]] = {name: [] for name in CHANGES_SCHEMA.names}
    for e in events:
        s = e.source
        cols["table_schema"].append(s.schema_)
        cols["table_name"].append(s.table)
        cols["op"].append(e.op.value)
        cols["commit_lsn"].append(e.commit_lsn)
        cols["position"].append(e.position)
        cols["xid"].append(s.txId)
        cols["commit_ts"].append(s.ts_us)
        cols["key"].append(_json(e.key))
        cols["before"].append(_json(e.before))
        cols["after"].append(_json(e.after))
        cols["types"].append(_json(e.types))
        cols["snapshot"].append(s.snapshot != "false")
        cols["event_ts"].append(e.ts_ms * 1000)
        cols["schema_version"].append(e.schema_version)
        cols["reread"].append(e.reread)
    return pa.Table.from_pydict(cols, schema=CHANGES_SCHEMA)


def sort_changes(table: pa.Table) -> pa.Table:
    return _sorted(table, ["table_schema", "table_name", "commit_lsn", "position"])


def transactions_table(events: Iterable[TransactionEvent]) -> pa.Table:
    """Only END records are archived: BEGIN carries nothing END does not."""
    cols: dict[str, list[Any]] = {name: [] for name in TRANSACTIONS_SCHEMA.names}
    for t in events:
        if t.status != "END":
            continue
        cols["xid"].append(t.xid)
        cols["commit_lsn"].append(t.commit_lsn)
        cols["commit_ts"].append(t.ts_us)
        cols["event_count"].append(t.event_count)
        cols["data_collections"].append(
            None if t.data_collections is None
            else _json([d.model_dump() for d in t.data_collections]))
        cols["author"].append(None if t.author is None else t.author.model_dump_json())
    return _sorted(pa.Table.from_pydict(cols, schema=TRANSACTIONS_SCHEMA), ["commit_lsn"])


def markers_table(markers: Iterable[StreamMarker]) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in MARKERS_SCHEMA.names}
    for m in markers:
        cols["status"].append(m.status.value)
        cols["slot"].append(m.slot)
        cols["db"].append(m.db)
        cols["epoch_lsn"].append(m.epoch_lsn)
        cols["lsn"].append(m.lsn)
        cols["ts"].append(m.ts_ms * 1000)
        cols["tables"].append(list(m.tables))
        cols["system_identifier"].append(m.system_identifier)
        cols["plugin"].append(m.plugin)
        cols["definitions"].append(None if m.definitions is None else _json(
            {t: [c.model_dump() for c in d] for t, d in m.definitions.items()}))
        cols["commit_ts"].append(m.commit_ts_us)
        cols["rereads"].append(None if m.rereads is None else _json(list(m.rereads)))
    return _sorted(pa.Table.from_pydict(cols, schema=MARKERS_SCHEMA), ["lsn"])


def schema_changes_table(events: Iterable[SchemaChangeEvent]) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in SCHEMA_CHANGES_SCHEMA.names}
    for e in events:
        cols["table_schema"].append(e.schema_)
        cols["table_name"].append(e.table)
        cols["commit_lsn"].append(e.commit_lsn)
        cols["position"].append(e.position)
        cols["xid"].append(e.xid)
        cols["commit_ts"].append(e.ts_us)
        cols["lsn"].append(e.lsn)
        cols["columns"].append(_json([c.model_dump() for c in e.columns]))
        cols["command_tag"].append(e.command_tag)
        cols["ddl"].append(e.ddl)
        cols["recorded"].append(e.recorded)
        cols["schema_version"].append(e.schema_version)
    return _sorted(pa.Table.from_pydict(cols, schema=SCHEMA_CHANGES_SCHEMA),
                   ["commit_lsn", "position"])


def _sorted(table: pa.Table, by: list[str]) -> pa.Table:
    if table.num_rows <= 1:
        return table
    return table.sort_by([(c, "ascending") for c in by])


def lsn_range(table: pa.Table, column: str) -> tuple[int | None, int | None]:
    if not table.num_rows:
        return None, None
    mm = pc.min_max(table[column])
    return mm["min"].as_py(), mm["max"].as_py()
