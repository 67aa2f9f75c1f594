"""Migration writes the old archive's rows and their offsets in one Delta commit: killed at
any moment it leaves either nothing or everything, and a rerun after a kill starts over."""

from __future__ import annotations

import json
from pathlib import Path

from deltalake import DeltaTable

from capture.event import MarkerKind
from consumers.archive.location import archive_location
from consumers.archive.migrate import migrate
from consumers.archive.store import ArchiveStore
from tests.archive_fixtures import marker, workload, write_legacy_archive

OFFSETS = {"hera.public.core_relationships": {"0": 20}, "hera.transaction": {"0": 10}}


def _old(tmp_path: Path) -> Path:
    changes, ends = workload(transactions=10, per_txn=2)
    return write_legacy_archive(tmp_path / "old", changes, ends,
                                [marker(MarkerKind.SNAPSHOT_START, 900)], OFFSETS)


def test_the_rows_and_their_offsets_arrive_in_one_commit(tmp_path: Path) -> None:
    result = migrate(_old(tmp_path), archive_location(tmp_path / "new"))
    history = DeltaTable(str(tmp_path / "new")).history()
    assert sorted(int(c["version"]) for c in history) == [0, 1] and result.version == 1
    data = next(c for c in history if int(c["version"]) == 1)
    assert data["operationMetrics"]["num_added_rows"] == 20 + 10 + 1
    assert json.loads(data["hera-guard"])["offsets"] == OFFSETS


def test_a_rerun_after_a_migration_killed_before_its_commit_starts_over(tmp_path: Path) -> None:
    # What a kill leaves before the one commit: the created, empty table.
    ArchiveStore.open_or_create(tmp_path / "new").close()
    result = migrate(_old(tmp_path), archive_location(tmp_path / "new"))
    assert result.rows == {"changes": 20, "transactions": 10, "markers": 1}
    assert result.offsets == 2
