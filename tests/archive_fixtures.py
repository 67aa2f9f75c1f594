"""Builders of change events for the archive's tests (no services needed)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from capture.event import (
    ChangeEvent,
    MarkerKind,
    Op,
    Source,
    StreamMarker,
    TableCount,
    TransactionBlock,
    TransactionEvent,
)
from tests.waiting import wait_until

BASE_US = 1_700_000_000_000_000  # a fixed commit time, µs since epoch


def change(commit_lsn: int, position: int, *, op: Op = Op.CREATE, table: str = "core_relationships",
           row_id: str | None = None, xid: int | None = None,
           row: dict[str, Any] | None = None, before: dict[str, Any] | None = None,
           ts_us: int | None = None) -> ChangeEvent:
    rid = row_id or str(uuid.UUID(int=commit_lsn * 100_000 + position))
    ts = ts_us if ts_us is not None else BASE_US + commit_lsn
    after_row = None if op in (Op.DELETE, Op.TRUNCATE) else (row or {"id": rid, "n": position})
    before_row = before if op in (Op.UPDATE, Op.DELETE) else None
    if op is Op.DELETE and before_row is None:
        before_row = {"id": rid}
    snapshot = op is Op.READ
    return ChangeEvent(
        op=op, ts_ms=ts // 1000 + 5,
        source=Source(name="hera", db="db", schema_="public", table=table,
                      txId=None if snapshot else (xid if xid is not None else commit_lsn),
                      lsn=commit_lsn, ts_ms=ts // 1000, ts_us=ts,
                      snapshot="true" if snapshot else "false"),
        transaction=None if snapshot else TransactionBlock(
            id=f"{xid or commit_lsn}:{commit_lsn}", total_order=position + 1,
            data_collection_order=position + 1),
        commit_lsn=commit_lsn, position=position,
        key=None if op is Op.TRUNCATE else {"id": rid},
        before=before_row, after=after_row,
        types=None if op is Op.TRUNCATE else {"id": "uuid", "n": "integer"},
    )


def end(commit_lsn: int, count: int, xid: int | None = None,
        table: str = "public.core_relationships") -> TransactionEvent:
    x = xid if xid is not None else commit_lsn
    return TransactionEvent(status="END", id=f"{x}:{commit_lsn}", xid=x, commit_lsn=commit_lsn,
                            ts_ms=(BASE_US + commit_lsn) // 1000, ts_us=BASE_US + commit_lsn,
                            event_count=count,
                            data_collections=(TableCount(data_collection=table,
                                                         event_count=count),))


def begin(commit_lsn: int, xid: int | None = None) -> TransactionEvent:
    x = xid if xid is not None else commit_lsn
    return TransactionEvent(status="BEGIN", id=f"{x}:{commit_lsn}", xid=x, commit_lsn=commit_lsn,
                            ts_ms=(BASE_US + commit_lsn) // 1000, ts_us=BASE_US + commit_lsn)


def marker(kind: MarkerKind, lsn: int, epoch_lsn: int = 1) -> StreamMarker:
    return StreamMarker(status=kind, slot="slot", db="db", epoch_lsn=epoch_lsn, lsn=lsn,
                        ts_ms=BASE_US // 1000, tables=("public.core_relationships",))


# --- integration helpers: a synthetic workload on the real broker, the archiver process ------

def workload(transactions: int, per_txn: int, first_lsn: int = 1_000) -> tuple[
        list[ChangeEvent], list[TransactionEvent]]:
    """``transactions`` transactions of ``per_txn`` changes over two tables, with END records."""
    changes: list[ChangeEvent] = []
    ends: list[TransactionEvent] = []
    for t in range(transactions):
        lsn = first_lsn + t * 100
        for p in range(per_txn):
            table = "core_relationships" if p % 2 == 0 else "core_dynamic_data"
            op = (Op.CREATE, Op.UPDATE, Op.DELETE)[(t + p) % 3]
            changes.append(change(lsn, p, op=op, table=table, xid=t + 10,
                                  before={"id": "x", "v": t} if op is Op.UPDATE else None))
        ends.append(end(lsn, per_txn, xid=t + 10))
    return changes, ends


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true (tests.waiting.wait_until under this area's name)."""
    wait_until(predicate, timeout, what, interval)


# --- an archive of the old format (manifest + Parquet segments), for `archive migrate` -----

def write_legacy_archive(root: Path, changes: list[ChangeEvent], ends: list[TransactionEvent],
                         markers: list[StreamMarker], offsets: dict[str, dict[str, int]],
                         dead_letters: int = 0, segments_per_kind: int = 2) -> Path:
    """What hera-guard wrote before the Delta table: archive.json, manifest.json listing the
    live segments and the offsets, segments/<kind>/*.parquet (markers without the identity
    columns). Spread over several segments, with one duplicate change, as real ones were."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from consumers.archive.segments import changes_rows, markers_table, transactions_table

    root.mkdir(parents=True)
    (root / "archive.json").write_text(json.dumps({"format": "hera-guard-archive",
                                                   "version": 1}))
    tables = {"changes": changes_rows([*changes, *changes[:1]]),
              "transactions": transactions_table(ends),
              "markers": markers_table(markers).drop_columns(
                  ["system_identifier", "plugin", "commit_ts"])}
    segments = []
    for kind, table in tables.items():
        step = max(1, -(-table.num_rows // segments_per_kind))
        for i, lo in enumerate(range(0, max(table.num_rows, 1), step)):
            part: pa.Table = table.slice(lo, step)
            rel = f"segments/{kind}/{i + 1:010d}-{uuid.uuid4().hex[:8]}.parquet"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, root / rel, compression="zstd")
            segments.append({"file": rel, "kind": kind, "rows": part.num_rows,
                             "bytes": (root / rel).stat().st_size})
    (root / "manifest.json").write_text(json.dumps({
        "version": 1, "generation": len(segments), "committed_at": "2025-01-01T00:00:00Z",
        "segments": segments, "retired": [], "offsets": offsets,
        "counters": {"dead_letters": dead_letters}}))
    return root
