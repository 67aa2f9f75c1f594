"""The archive store: atomic commits of events + offsets, dedup, refusals, crash leftovers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deltalake import DeltaTable

from capture.event import MarkerKind, Op
from consumers.archive.dedup import RecentKeys
from consumers.archive.layout import (
    NewerArchiveError,
    NotAnArchiveError,
    UnsupportedLocationError,
)
from consumers.archive.location import archive_location, store_failure_passes
from consumers.archive.reader import connect_history
from consumers.archive.segments import TABLE_SCHEMA
from consumers.archive.store import ArchiveLockedError, ArchiveStore, open_table, utc_now
from tests.archive_fixtures import begin, change, end, marker


def _keys(root: Path) -> list[tuple[int, int]]:
    con = connect_history(root)
    return [(int(a), int(b)) for a, b in
            con.sql("SELECT commit_lsn, position FROM changes ORDER BY ALL").fetchall()]


def test_appended_events_and_offsets_survive_a_reopen(tmp_path: Path) -> None:
    root = tmp_path / "a"
    with ArchiveStore.open_or_create(root) as store:
        store.append(changes=[change(100, 0), change(100, 1)],
                     transactions=[begin(100), end(100, 2)],
                     markers=[marker(MarkerKind.SNAPSHOT_END, 50)],
                     offsets={("p.public.t", 0): 2, ("p.transaction", 0): 3})
    with ArchiveStore.open_or_create(root) as store:
        assert store.offsets() == {("p.public.t", 0): 2, ("p.transaction", 0): 3}
    con = connect_history(root)
    assert _keys(root) == [(100, 0), (100, 1)]
    assert con.sql("SELECT xid, commit_lsn, event_count FROM transactions").fetchall() == [
        (100, 100, 2)]
    assert con.sql("SELECT status, lsn FROM markers").fetchall() == [("SNAPSHOT_END", 50)]


def test_duplicates_resent_by_capture_are_stored_once(tmp_path: Path) -> None:
    with ArchiveStore.open_or_create(tmp_path / "a") as store:
        first = store.append(changes=[change(100, 0), change(100, 1), change(100, 1)])
        again = store.append(changes=[change(100, 1), change(200, 0)],
                             transactions=[end(100, 2), end(100, 2)])
    with ArchiveStore.open_or_create(tmp_path / "a") as store:
        after_restart = store.append(changes=[change(100, 0), change(200, 0), change(300, 0)])
    assert (first.changes_written, first.duplicates) == (2, 1)
    assert (again.changes_written, again.duplicates, again.transactions_written) == (1, 1, 1)
    assert (after_restart.changes_written, after_restart.duplicates) == (1, 2)
    con = connect_history(tmp_path / "a")
    assert con.execute("SELECT count(*) FROM raw_changes").fetchall() == [(4,)]


def test_duplicates_older_than_the_memory_window_are_found_on_disk(tmp_path: Path) -> None:
    with ArchiveStore.open_or_create(tmp_path / "a", dedup_capacity=2) as store:
        for lsn in range(100, 110):
            store.append(changes=[change(lsn, 0), change(lsn, 1)])
        late = store.append(changes=[change(101, 1), change(101, 2)])
    assert (late.changes_written, late.duplicates) == (1, 1)
    assert len(_keys(tmp_path / "a")) == 21


def test_a_non_empty_directory_without_marker_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(NotAnArchiveError, match="not a hera-guard archive"):
        ArchiveStore.open_or_create(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_an_archive_of_a_newer_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    DeltaTable.create(str(tmp_path), TABLE_SCHEMA, partition_by=["kind"],
                      name="hera-guard-archive", description="format 99: from the future")
    before = sorted(p.name for p in (tmp_path / "_delta_log").iterdir())
    with pytest.raises(NewerArchiveError, match="newer hera-guard"):
        ArchiveStore.open_or_create(tmp_path)
    assert sorted(p.name for p in (tmp_path / "_delta_log").iterdir()) == before
    with pytest.raises(NewerArchiveError):
        connect_history(tmp_path)


def test_a_foreign_delta_table_and_an_old_format_archive_are_refused(tmp_path: Path) -> None:
    DeltaTable.create(str(tmp_path / "other"), TABLE_SCHEMA, name="sales")
    with pytest.raises(NotAnArchiveError, match="not a hera-guard archive"):
        ArchiveStore.open_or_create(tmp_path / "other")
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    with pytest.raises(NotAnArchiveError, match="consumers archive migrate"):
        ArchiveStore.open_or_create(old)


def test_files_of_an_interrupted_commit_are_never_read(tmp_path: Path) -> None:
    root = tmp_path / "a"
    with ArchiveStore.open_or_create(root) as store:
        store.append(changes=[change(100, 0)], offsets={("t", 0): 1})
    live = next((root / "kind=changes").glob("*.parquet"))
    # what a SIGKILL between writing the data file and the log entry leaves behind
    (root / "kind=changes" / "part-00000-killed.zstd.parquet").write_bytes(live.read_bytes())
    with ArchiveStore.open_or_create(root) as store:
        assert store.offsets() == {("t", 0): 1}
    assert _keys(root) == [(100, 0)]


def test_a_second_writer_that_commits_behind_the_first_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "a"
    with ArchiveStore.open_or_create(root) as first:
        first.append(changes=[change(100, 0)], offsets={("t", 0): 1})
        loc = archive_location(root)
        second = ArchiveStore(loc, open_table(loc), None, utc_now, 100)  # no flock: as on S3
        first.append(changes=[change(101, 0)], offsets={("t", 0): 2})
        with pytest.raises(ArchiveLockedError, match="another archiver committed"):
            second.append(changes=[change(102, 0)], offsets={("t", 0): 3})
    with ArchiveStore.open_or_create(root) as store:
        assert store.offsets() == {("t", 0): 2}
    assert _keys(root) == [(100, 0), (101, 0)]


def test_a_second_writer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with ArchiveStore.open_or_create(tmp_path / "a"), pytest.raises(ArchiveLockedError):
        ArchiveStore.open_or_create(tmp_path / "a")


def test_a_truncate_and_deletes_shape_the_state_as_of_an_lsn(tmp_path: Path) -> None:
    a, b = change(100, 0), change(100, 1)
    rid = str((a.key or {})["id"])
    with ArchiveStore.open_or_create(tmp_path / "a") as store:
        store.append(changes=[a, b, change(200, 0, op=Op.DELETE, row_id=rid),
                              change(300, 0, op=Op.TRUNCATE), change(400, 0)])
    con = connect_history(tmp_path / "a")

    def state(lsn: int) -> int:
        rows = con.execute("SELECT count(*) FROM table_as_of_lsn('core_relationships', ?)",
                           [lsn]).fetchall()
        return int(rows[0][0])

    assert [state(150), state(250), state(350), state(450)] == [2, 1, 0, 1]
    ops = con.sql("SELECT op FROM relationship_timeline($id)", params={"id": rid}).fetchall()
    assert ops == [("c",), ("d",), ("t",)]
    summary = con.sql("SELECT xid, changes, inserts, deletes, truncates, per_table "
                      "FROM transaction_summary ORDER BY commit_lsn").fetchall()
    assert summary[0][:5] == (100, 2, 2, 0, 0)
    assert json.loads(summary[0][5]) == {"public.core_relationships": {"c": 2}}
    assert summary[2][:5] == (300, 1, 0, 0, 1)


def test_a_transaction_split_over_batches_is_stored_whole_and_its_repeats_once(
        tmp_path: Path) -> None:
    with ArchiveStore.open_or_create(tmp_path / "a") as store:
        first = store.append(changes=[change(100, 0), change(100, 2), change(101, 0)])
        second = store.append(changes=[change(100, 1), change(100, 3)])
        repeat = store.append(changes=[change(100, 4), change(100, 2)])
    assert [r.changes_written for r in (first, second, repeat)] == [3, 2, 1]
    assert repeat.duplicates == 1
    assert _keys(tmp_path / "a") == [(100, p) for p in range(5)] + [(101, 0)]


def test_the_one_pass_dedup_accepts_only_batches_of_wholly_new_keys() -> None:
    keys = RecentKeys(10, lambda _: set())
    assert keys.add_if_all_new([(100, [0, 2]), (101, [0])])
    assert keys.add_if_all_new([(100, [1])])  # the rest of a transaction seen before
    assert not keys.add_if_all_new([(102, [0]), (100, [2])])  # (100, 2) is a repeat
    assert not keys.add_if_all_new([(103, [0, 0])])  # repeated inside the batch
    assert len(keys) == 4  # a refused batch adds nothing


@pytest.mark.parametrize("uri", ["s3://bucket/prefix/", "gs://b/p", "az://c/p", "hdfs://nn/p",
                                 "lakefs://repo/branch/p"])
def test_object_store_uris_stay_uris(uri: str) -> None:
    loc = archive_location(uri)
    assert not loc.is_local and loc.uri == uri.rstrip("/")


@pytest.mark.parametrize("uri", ["s4://bucket/p", "https://host/p", "S3://bucket/p"])
def test_a_uri_of_no_object_store_is_refused_not_taken_for_a_local_path(uri: str) -> None:
    with pytest.raises(UnsupportedLocationError, match="unknown archive URI scheme"):
        archive_location(uri)


def test_a_file_uri_and_a_relative_path_are_local_absolute_paths(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    monkeypatch.chdir(tmp_path)
    assert archive_location(f"file://{tmp_path}/a").uri == str(tmp_path / "a")
    assert archive_location("rel/a").uri == str(tmp_path / "rel" / "a")


@pytest.mark.parametrize(("text", "passes"), [
    ("Generic S3 error: Error performing PUT http://h:1/x - Connection refused", True),
    ("Server returned non-2xx status code: 503 Service Unavailable <Code>SlowDown</Code>", True),
    ("<Error><Code>InternalError</Code><Message>please try again</Message></Error>", True),
    ("<Error><Code>SignatureDoesNotMatch</Code></Error>", False),
    ("<Error><Code>NoSuchBucket</Code></Error>", False),
    ("Kernel error -> The operation lacked the necessary privileges to complete", False),
])
def test_a_store_failure_is_waited_out_only_when_waiting_can_help(text: str,
                                                                  passes: bool) -> None:
    assert store_failure_passes(OSError(text)) is passes


def test_a_permission_error_on_a_local_archive_does_not_pass() -> None:
    assert not store_failure_passes(PermissionError(13, "Permission denied"))
