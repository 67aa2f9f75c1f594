"""Per-table state checkpoints: a second Delta table inside the archive (``_hera_checkpoints``
under its root, on local disk or object storage alike), written by ``replay checkpoint``.

One checkpoint = the exact rows replay rebuilds for one table at one LSN (``key``, ``row``
in the change-event encoding) plus a header (types, primary key, schema version, row count,
epoch), all in ONE Delta commit: a reader sees the whole checkpoint or none of it. Each
checkpoint is its own two partitions (``part`` = ``<table hex>_<lsn hex>_rows`` / ``_head``),
so finding one reads only the Delta log, and reading one reads only its own files.

Why a separate table: the archive's own table is append-only (``delta.appendOnly``) and has
exactly one writer (the archiver, its app transaction); checkpoints are written by another
process and are deleted by retention. A commit here never touches the archive's log, so a
checkpoint never blocks or conflicts with ingestion. The ``_`` prefix keeps the archive's
vacuum and Delta readers of the archive away from it.

Retention deletes a checkpoint only when a newer one of the same table exists (the newest
``keep`` stay); vacuum then removes the files after ``retention_hours`` (readers that
started before keep working that long).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import DeltaError

from consumers.archive.layout import ArchiveError, DamagedArchiveError
from consumers.archive.location import ArchiveLocation, store_error

DIRECTORY = "_hera_checkpoints"
SCHEMA = pa.schema([("part", pa.string()), ("key", pa.string()), ("row", pa.string())])
FORMAT = 1  # the header's "format"; a newer one is ignored by this version (replays from 0)


@dataclass(frozen=True)
class Checkpoint:
    table: str  # schema.table
    lsn: int
    header: dict[str, Any]  # types, pk, epoch_lsn, rows, schema (see replay/checkpoint.py)
    files: tuple[str, ...]  # the rows' data files (absolute paths or URIs)
    rows_part: str

    @property
    def rows(self) -> int:
        return int(self.header["rows"])


def location(archive: ArchiveLocation) -> ArchiveLocation:
    return ArchiveLocation(f"{archive.uri}/{DIRECTORY}", archive.storage_options)


def part_name(table: str, lsn: int, what: str) -> str:
    """A partition value of safe characters only (hex), sortable by LSN within a table."""
    return f"{table.encode().hex()}_{lsn:016x}_{what}"


def _table(loc: ArchiveLocation) -> DeltaTable | None:
    try:
        if not DeltaTable.is_deltatable(loc.uri, storage_options=loc.options()):
            return None
        return DeltaTable(loc.uri, storage_options=loc.options())
    except (DeltaError, OSError) as exc:
        raise ArchiveError(f"cannot read the checkpoints at {loc}: {store_error(exc)}") from None


def list_checkpoints(archive: ArchiveLocation) -> list[Checkpoint]:
    """Every complete checkpoint, oldest first per table. Reads the Delta log and the tiny
    header files only. A checkpoint whose row files do not hold the header's row count (two
    jobs wrote the same one at once) is left out: replay then uses an older one or none."""
    loc = location(archive)
    dt = _table(loc)
    if dt is None:
        return []
    actions = pa.table(dt.get_add_actions(flatten=True))
    if not actions.num_rows:
        return []
    files: dict[str, list[tuple[str, int]]] = {}
    for path, part, n in zip(actions["path"].to_pylist(), actions["partition.part"].to_pylist(),
                             actions["num_records"].to_pylist(), strict=True):
        files.setdefault(str(part), []).append((_uri(loc, str(path)), int(n or 0)))
    heads = [p for p in files if p.endswith("_head")]
    if not heads:
        return []
    try:
        head_rows = dt.to_pyarrow_dataset(
            file_pruning_predicate=[("part", "in", heads)]).to_table(columns=["row"])
    except (DeltaError, OSError, pa.ArrowException) as exc:
        raise DamagedArchiveError(f"the checkpoints at {loc} cannot be read "
                                  f"({store_error(exc)}); delete {DIRECTORY} (replay then "
                                  "starts from the beginning) and make new ones") from None
    out = []
    for text in head_rows["row"].to_pylist():
        header = json.loads(text)
        if int(header.get("format", 0)) > FORMAT:
            continue
        rows_part = part_name(header["table"], int(header["lsn"]), "rows")
        listed = files.get(rows_part, [])
        if sum(n for _, n in listed) != int(header["rows"]):
            continue
        out.append(Checkpoint(header["table"], int(header["lsn"]), header,
                              tuple(f for f, _ in listed), rows_part))
    return sorted(out, key=lambda c: (c.table, c.lsn))


def _uri(loc: ArchiveLocation, path: str) -> str:
    return path if "://" in path else f"{loc.uri}/{path}"


def rows_dataset(archive: ArchiveLocation, ckpt: Checkpoint) -> Any:
    """The checkpoint's rows (``key``, ``row``) as a lazily read pyarrow dataset (object
    storage: deltalake's filesystem; only this checkpoint's files)."""
    dt = _table(location(archive))
    assert dt is not None
    return dt.to_pyarrow_dataset(file_pruning_predicate=[("part", "=", ckpt.rows_part)])


# Files of at most this size: the writer buffers one file's rows in memory, so this (not
# the state's size) bounds the writer's share of a checkpoint's memory.
TARGET_FILE_BYTES = 64 * 1024 * 1024
ROW_GROUP_ROWS = 64 * 1024


def write_checkpoint(archive: ArchiveLocation, header: dict[str, Any],
                     batches: Iterator[pa.RecordBatch]) -> int:
    """Write one checkpoint (``batches``: ``key``, ``row`` columns, streamed: memory stays
    at a few batches and one file's buffer) and its header, counted as the rows pass, in
    ONE commit; returns the row count."""
    table, lsn = str(header["table"]), int(header["lsn"])
    head_part, rows_part = part_name(table, lsn, "head"), part_name(table, lsn, "rows")
    count = 0

    def stream() -> Iterator[pa.RecordBatch]:
        nonlocal count
        for batch in batches:
            count += batch.num_rows
            yield pa.record_batch([pa.array([rows_part] * batch.num_rows, pa.string()),
                                   batch.column("key").cast(pa.string()),
                                   batch.column("row").cast(pa.string())], schema=SCHEMA)
        head = json.dumps({**header, "rows": count, "format": FORMAT}, separators=(",", ":"))
        yield pa.record_batch([pa.array([head_part]), pa.array([None], pa.string()),
                               pa.array([head])], schema=SCHEMA)

    loc = location(archive)
    reader = pa.RecordBatchReader.from_batches(SCHEMA, stream())
    try:
        write_deltalake(loc.uri, reader, mode="append", partition_by=["part"],
                        storage_options=loc.options(), target_file_size=TARGET_FILE_BYTES,
                        writer_properties=WriterProperties(
                            compression="ZSTD", max_row_group_size=ROW_GROUP_ROWS),
                        name="hera-guard-checkpoints",
                        description="per-table state checkpoints of the archive")
    except (DeltaError, OSError) as exc:
        raise ArchiveError(f"cannot write a checkpoint to {loc}: {store_error(exc)}; the "
                           "archive is unchanged, run the checkpoint again") from None
    return count


def remove_older(archive: ArchiveLocation, keep: int, retention_hours: float) -> list[Checkpoint]:
    """Delete every checkpoint of a table but its newest ``keep`` (>= 1: a checkpoint goes
    only when a newer one covers its table), then vacuum files past ``retention_hours``."""
    keep = max(keep, 1)
    by_table: dict[str, list[Checkpoint]] = {}
    for c in list_checkpoints(archive):
        by_table.setdefault(c.table, []).append(c)
    gone = [c for cs in by_table.values() for c in cs[:-keep]]
    loc = location(archive)
    dt = _table(loc)
    if dt is None:
        return []
    try:
        if gone:
            parts = [p for c in gone for p in (c.rows_part, part_name(c.table, c.lsn, "head"))]
            # partition values are hex digits and '_' only: nothing to quote
            dt.delete("part IN (" + ", ".join(f"'{p}'" for p in parts) + ")")
        dt.vacuum(retention_hours=int(retention_hours), dry_run=False,
                  enforce_retention_duration=False)
    except (DeltaError, OSError) as exc:
        raise ArchiveError(f"cannot remove old checkpoints at {loc}: {store_error(exc)}") from None
    return gone
