"""Compaction: merge small segments into larger ones, safely while readers run.

The merged segment is written (tmp + fsync + rename), then one manifest replace swaps it in
for its sources. Sources are retired, not deleted: they stay on disk for the store's grace
period so queries that listed them keep working; glob-based views see both meanwhile and
deduplicate. The merge itself deduplicates, so compaction also removes any duplicate the
writer let through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from consumers.archive.layout import KINDS
from consumers.archive.store import ArchiveStore

log = logging.getLogger(__name__)

_ORDER = {
    "changes": ("commit_lsn, position", "table_schema, table_name, commit_lsn, position"),
    "transactions": ("commit_lsn", "commit_lsn"),
    "markers": ("status, slot, db, epoch_lsn, lsn, ts, tables", "lsn"),
}


@dataclass(frozen=True)
class CompactionPolicy:
    small_rows: int = 250_000  # segments below this many rows are candidates
    target_rows: int = 2_000_000  # stop adding sources once the merge reaches this
    min_segments: int = 8  # merge only when at least this many small segments exist


def compact(store: ArchiveStore, policy: CompactionPolicy = CompactionPolicy()) -> int:
    """One compaction pass over every kind; returns the number of segments merged away."""
    merged = 0
    for kind in KINDS:
        small = [s for s in store.manifest.of_kind(kind) if s.rows < policy.small_rows]
        if len(small) < policy.min_segments:
            continue
        chosen, rows = [], 0
        for s in small:  # manifest order = commit order: merge the oldest first
            chosen.append(s)
            rows += s.rows
            if rows >= policy.target_rows:
                break
        if len(chosen) < 2:
            continue
        table = _merge(kind, [pq.read_table(store.root / s.file) for s in chosen])
        new = store.replace_segments(chosen, table, kind)
        log.info("compacted %d %s segments (%d rows) into %s (%d rows)",
                 len(chosen), kind, rows, new.file, new.rows)
        merged += len(chosen)
    return merged


def _merge(kind: str, tables: list[pa.Table]) -> pa.Table:
    combined = pa.concat_tables(tables)
    key, order = _ORDER[kind]
    con = duckdb.connect(":memory:")
    try:
        con.register("src", combined)
        out = con.sql(
            f"SELECT DISTINCT ON ({key}) * FROM src ORDER BY {order}"  # noqa: S608 - constants
        ).to_arrow_table()
    finally:
        con.close()
    return out.cast(combined.schema)
