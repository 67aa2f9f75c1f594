"""Compaction and the analysts' history.duckdb: correct while readers run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from consumers.archive.compaction import CompactionPolicy, compact
from consumers.archive.history_db import write_history_db
from consumers.archive.reader import connect_history
from consumers.archive.store import ArchiveStore
from tests.archive_fixtures import change, end


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0])


def test_compaction_merges_small_segments_and_keeps_sources_for_the_grace_period(
        tmp_path: Path) -> None:
    clock = FakeClock()
    root = tmp_path / "a"
    store = ArchiveStore.open_or_create(root, clock=clock, grace=timedelta(minutes=10))
    for lsn in range(100, 112):
        store.append(changes=[change(lsn, 0), change(lsn, 1)], transactions=[end(lsn, 2)])
    reader_before = connect_history(root)  # lists the small segments
    merged = compact(store, CompactionPolicy(small_rows=100, target_rows=1000, min_segments=4))
    assert merged == 26  # 12 change + 12 transaction segments + the two empty initial ones
    assert len(store.manifest.of_kind("changes")) == 1
    retired = [root / r.file for r in store.manifest.retired]
    assert retired and all(p.exists() for p in retired)
    assert _count(reader_before, "SELECT count(*) FROM changes") == 24  # old files still there
    assert _count(connect_history(root), "SELECT count(*) FROM changes") == 24
    clock.now += timedelta(minutes=11)
    store.delete_expired()
    assert not any(p.exists() for p in retired)
    assert _count(connect_history(root), "SELECT count(*) FROM raw_changes") == 24
    store.close()


def test_history_db_sees_segments_committed_after_it_was_opened(tmp_path: Path) -> None:
    root = tmp_path / "a"
    store = ArchiveStore.open_or_create(root)
    store.append(changes=[change(100, 0)])
    db = write_history_db(root)
    analyst = duckdb.connect(str(db), read_only=True)
    assert _count(analyst, "SELECT count(*) FROM changes") == 1
    store.append(changes=[change(200, 0), change(200, 1)])
    compact(store, CompactionPolicy(small_rows=100, target_rows=1000, min_segments=2))
    assert _count(analyst, "SELECT count(*) FROM changes") == 3  # glob + dedup over retired
    assert _count(analyst, "SELECT count(*) FROM transaction_summary") == 2
    write_history_db(root)  # re-created while the analyst keeps the old file open
    assert _count(analyst, "SELECT count(*) FROM change_log") == 3
    analyst.close()
    store.close()
