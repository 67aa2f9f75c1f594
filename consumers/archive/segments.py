"""Parquet segments: the Arrow schemas, event -> column conversion, and crash-safe writes.

Columns are plain Parquet types (JSON documents as UTF-8 strings, timestamps as UTC
microseconds/milliseconds with ``isAdjustedToUTC``) so DuckDB, Spark and Trino read them as-is.
Rows of a segment are sorted by (table, commit_lsn, position): row-group statistics then
let readers skip whole row groups when they filter on one table or an LSN range.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic_core import to_json

from capture.event import ChangeEvent, StreamMarker, TransactionEvent
from consumers.archive.layout import fsync_dir

UTC_US = pa.timestamp("us", tz="UTC")

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
])

TRANSACTIONS_SCHEMA = pa.schema([
    ("xid", pa.int64()),
    ("commit_lsn", pa.uint64()),
    ("commit_ts", UTC_US),
    ("event_count", pa.int64()),
    ("data_collections", pa.string()),
])

MARKERS_SCHEMA = pa.schema([
    ("status", pa.string()),
    ("slot", pa.string()),
    ("db", pa.string()),
    ("epoch_lsn", pa.uint64()),
    ("lsn", pa.uint64()),
    ("ts", UTC_US),
    ("tables", pa.list_(pa.string())),
])

SCHEMAS = {"changes": CHANGES_SCHEMA, "transactions": TRANSACTIONS_SCHEMA,
           "markers": MARKERS_SCHEMA}


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
    return _sorted(pa.Table.from_pydict(cols, schema=MARKERS_SCHEMA), ["lsn"])


def _sorted(table: pa.Table, by: list[str]) -> pa.Table:
    if table.num_rows <= 1:
        return table
    return table.sort_by([(c, "ascending") for c in by])


def write_segment(table: pa.Table, path: Path) -> int:
    """Write ``table`` to ``path`` crash-safely (tmp + fsync + rename); returns its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        pq.write_table(table, f, compression="zstd", row_group_size=128 * 1024)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path.stat().st_size
