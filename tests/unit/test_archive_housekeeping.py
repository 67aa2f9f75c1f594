"""Housekeeping by Delta: optimize compacts small files, vacuum honours the retention, the
position survives both, and a reader of an older version keeps working within it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from consumers.archive.housekeeping import Housekeeping, housekeep
from consumers.archive.reader import connect_history
from consumers.archive.store import ArchiveStore
from tests.archive_fixtures import change


def _count(root: Path, sql: str, version: int | None = None) -> int:
    row = connect_history(root, version=version).execute(sql).fetchone()
    return int(row[0]) if row else -1


def test_small_files_are_compacted_and_the_position_survives(tmp_path: Path) -> None:
    root = tmp_path / "a"
    with ArchiveStore.open_or_create(root) as store:
        for lsn in range(100, 112):
            store.append(changes=[change(lsn, 0), change(lsn, 1)], offsets={("t", 0): lsn})
        before = store.version()
        done = housekeep(store, Housekeeping(min_small_files=4, retention=timedelta(days=7)))
    assert done["compacted_files"] == 12
    assert len(list((root / "kind=changes").glob("*.parquet"))) == 13  # kept for time travel
    assert _count(root, "SELECT count(*) FROM raw_changes") == 24
    assert _count(root, "SELECT count(*) FROM raw_changes", version=before) == 24
    with ArchiveStore.open_or_create(root) as store:
        assert store.offsets() == {("t", 0): 111}
        assert len(store.table.file_uris()) == 1


def _compacted(root: Path) -> ArchiveStore:
    """An archive of 6 small commits compacted into one file: 6 files unreferenced now."""
    store = ArchiveStore.open_or_create(root)
    for lsn in range(100, 106):
        store.append(changes=[change(lsn, 0)], offsets={("t", 0): lsn})
    housekeep(store, Housekeeping(min_small_files=2, retention=timedelta(days=7)))
    assert len(list((root / "kind=changes").glob("*.parquet"))) == 7
    return store


def test_vacuum_deletes_unreferenced_files_only_after_the_retention(tmp_path: Path) -> None:
    root = tmp_path / "a"
    with _compacted(root) as store:
        done = housekeep(store, Housekeeping(min_small_files=2, retention=timedelta(0)))
        assert done["vacuumed_files"] == 6
        assert store.offsets() == {("t", 0): 105}
    assert _count(root, "SELECT count(*) FROM changes") == 6


def test_a_retention_of_part_of_an_hour_keeps_files_at_least_that_long(tmp_path: Path) -> None:
    root = tmp_path / "a"
    with _compacted(root) as store:
        # delta-rs takes whole hours: 30 minutes must not become 0 (delete at once)
        done = housekeep(store, Housekeeping(min_small_files=2, retention=timedelta(minutes=30)))
        assert done["vacuumed_files"] == 0
    assert len(list((root / "kind=changes").glob("*.parquet"))) == 7
