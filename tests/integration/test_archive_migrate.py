"""`consumers archive migrate`: an archive of the old format becomes a Delta archive on either
backend, row for row, with its offsets and what is known of its identity, and the archiver
continues from those offsets without re-reading Kafka."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from capture.event import MarkerKind
from tests.archive_fixtures import marker, workload, write_legacy_archive
from tests.integration.archive_support import CONSUMERS
from tests.s3_fixtures import ArchiveTarget

OFFSETS = {"hera.public.core_relationships": {"0": 150}, "hera.public.core_dynamic_data":
           {"0": 150}, "hera.transaction": {"0": 60}}


def _migrate(old: Path, target: ArchiveTarget) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONSUMERS, "archive", "migrate", str(old), target.uri],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **target.env})


def test_an_old_archive_migrates_row_for_row_with_its_offsets(
        tmp_path: Path, archive_target: ArchiveTarget) -> None:
    changes, ends = workload(transactions=60, per_txn=5)
    marks = [marker(MarkerKind.SNAPSHOT_START, 900), marker(MarkerKind.PROGRESS, 7_000)]
    old = write_legacy_archive(tmp_path / "old", changes, ends, marks, OFFSETS, dead_letters=3)
    out = _migrate(old, archive_target)
    assert out.returncode == 0, out.stderr
    assert "300 changes, 60 transactions, 2 markers" in out.stdout
    assert "verified row for row" in out.stdout
    state = archive_target.state()
    assert state.offset_map() == {("hera.public.core_relationships", 0): 150,
                                  ("hera.public.core_dynamic_data", 0): 150,
                                  ("hera.transaction", 0): 60}
    assert state.dead_letters == 3
    assert state.identity is not None and state.identity.topic_prefix == "hera"
    assert (state.identity.slot, state.identity.db) == ("slot", "db")
    con = archive_target.connect()
    assert con.execute("SELECT count(*) FROM raw_changes").fetchall() == [(300,)]
    assert con.execute("SELECT count(*), count(system_identifier) FROM markers"
                       ).fetchall() == [(2, 0)]
    # the old archive is untouched, and a second migration into the same place is refused
    assert sorted(p.name for p in old.iterdir()) == ["archive.json", "manifest.json", "segments"]
    again = _migrate(old, archive_target)
    assert again.returncode == 2 and "already holds an archive" in again.stderr


def test_a_missing_segment_stops_the_migration_with_one_line(tmp_path: Path) -> None:
    changes, ends = workload(transactions=10, per_txn=2)
    old = write_legacy_archive(tmp_path / "old", changes, ends, [], OFFSETS)
    victim = next((old / "segments" / "changes").glob("*.parquet"))
    victim.unlink()
    out = _migrate(old, ArchiveTarget("local", str(tmp_path / "new"), {}))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"consumers: segment {victim} of the old archive is missing; restore the file before "
        "migrating"]
    assert not (tmp_path / "new").exists()
