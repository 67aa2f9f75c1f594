"""The reader: table_as_of by replay's rules (no ghost row after a primary-key UPDATE), time
travel through ``connect_history(version=/as_of=)`` and ``consumers history``, and events of
schema_version 1 read as archived."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from capture.event import Op
from consumers.archive.layout import ArchiveError
from consumers.archive.reader import connect_history
from consumers.archive.store import ArchiveStore
from consumers.cli import main
from tests.archive_fixtures import change


def test_an_update_that_changes_the_primary_key_leaves_no_ghost_row(tmp_path: Path) -> None:
    with ArchiveStore.open_or_create(tmp_path / "a") as store:
        store.append(changes=[
            change(100, 0, row_id="old", row={"id": "old", "n": 1}),
            change(200, 0, op=Op.UPDATE, row_id="new", row={"id": "new", "n": 2},
                   before={"id": "old", "n": 1}),
            change(300, 0, op=Op.UPDATE, row_id="new", row={"id": "new", "n": 3},
                   before={"id": "new", "n": 2})])
    con = connect_history(tmp_path / "a")

    def rows(lsn: int) -> list[tuple[str, int]]:
        got = con.execute("SELECT key ->> 'id', (row ->> 'n')::INT FROM "
                          "table_as_of_lsn('core_relationships', ?) ORDER BY 1", [lsn]).fetchall()
        return [(str(k), int(n)) for k, n in got]

    assert rows(150) == [("old", 1)]
    assert rows(250) == [("new", 2)]  # the old key is gone, not left as a ghost
    assert rows(350) == [("new", 3)]
    ts = datetime.fromtimestamp((1_700_000_000_000_000 + 250) / 1e6, UTC)
    assert con.execute("SELECT count(*) FROM table_as_of('core_relationships', ?)",
                       [ts]).fetchall() == [(1,)]


def _cells(output: str) -> list[str]:
    """The data cells of the one-column table ``consumers history`` prints."""
    lines = [ln for ln in output.splitlines() if ln.startswith("│")]
    return [ln.strip("│ ") for ln in lines]


def test_an_older_table_version_is_read_by_version_and_by_time(tmp_path: Path) -> None:
    root = tmp_path / "a"
    with ArchiveStore.open_or_create(root) as store:
        store.append(changes=[change(100, 0)])
        first = store.version()
        # Delta stamps commits in milliseconds: the next commit must fall in a later one for
        # an --as-of time to tell the two apart.
        first_ms = max(int(c["timestamp"]) for c in DeltaTable(str(root)).history())
        while time.time_ns() // 1_000_000 <= first_ms:
            time.sleep(0.001)
        store.append(changes=[change(200, 0), change(200, 1)])
    assert connect_history(root, version=first).execute(
        "SELECT count(*) FROM changes").fetchall() == [(1,)]
    assert connect_history(root).execute("SELECT count(*) FROM changes").fetchall() == [(3,)]
    out = CliRunner().invoke(main, ["history", str(root), "--version", str(first),
                                    "SELECT count(*) AS n FROM changes"])
    assert out.exit_code == 0 and _cells(out.output) == ["1"]
    # --as-of the moment of that commit (Delta's commit timestamp) reads that version.
    stamps = {int(c["version"]): int(c["timestamp"]) for c in DeltaTable(str(root)).history()}
    at = datetime.fromtimestamp(stamps[first] / 1000, UTC)
    assert stamps[first + 1] > stamps[first]
    assert connect_history(root, as_of=at).execute(
        "SELECT count(*) FROM changes").fetchall() == [(1,)]
    later = CliRunner().invoke(main, ["history", str(root), "--as-of",
                                      at.isoformat().replace("+00:00", "Z"),
                                      "SELECT count(*) FROM changes"])
    assert later.exit_code == 0 and _cells(later.output) == ["1"], later.output
    none = CliRunner().invoke(main, ["history", str(root), "--version", "99"])
    assert none.exit_code == 2 and "has no version 99" in none.output
    assert len(none.output.strip().splitlines()) == 1


def test_events_of_schema_version_1_are_archived_and_read_as_they_were(tmp_path: Path) -> None:
    raw = json.loads(change(100, 0, row={"id": "a", "doc": {"k": 1.50}}).to_json())
    raw["schema_version"] = 1  # json values were parsed JSON then
    from capture.event import ChangeEvent

    v1 = ChangeEvent.model_validate(raw)
    with ArchiveStore.open_or_create(tmp_path / "a") as store:
        store.append(changes=[v1, change(200, 0)])
    rows = connect_history(tmp_path / "a").execute(
        "SELECT schema_version, after ->> 'doc' FROM changes ORDER BY commit_lsn").fetchall()
    assert rows[0] == (1, '{"k":1.5}') and rows[1][0] == 2


def test_an_as_of_time_the_table_cannot_place_is_refused_not_answered(tmp_path: Path) -> None:
    root = tmp_path / "a"
    with ArchiveStore.open_or_create(root) as store:
        store.append(changes=[change(100, 0)])
    created = datetime.fromtimestamp(
        min(int(c["timestamp"]) for c in DeltaTable(str(root)).history()) / 1000, UTC)
    with pytest.raises(ArchiveError, match=r"did not hold anything at .* oldest kept commit"):
        connect_history(root, as_of=created - timedelta(seconds=1))
    now = created + timedelta(minutes=5)
    with pytest.raises(ArchiveError, match="is in the future"):
        connect_history(root, as_of=now + timedelta(seconds=1), clock=lambda: now)
    assert connect_history(root, as_of=now, clock=lambda: now).execute(
        "SELECT count(*) FROM changes").fetchall() == [(1,)]
    before = CliRunner().invoke(main, ["history", str(root), "--as-of",
                                       "2001-01-01T00:00:00+0000", "SELECT count(*) FROM changes"])
    assert before.exit_code == 2 and "did not hold anything" in before.output
    assert len(before.output.strip().splitlines()) == 1
    future = CliRunner().invoke(main, ["history", str(root), "--as-of",
                                       "2999-01-01T00:00:00+0000", "SELECT 1"])
    assert future.exit_code == 2 and "is in the future" in future.output


def test_files_written_before_the_added_columns_read_null_in_them(tmp_path: Path) -> None:
    """An archive from before ``reread``/``author``/``rereads`` existed: every file lacks
    them. Replay's tail relation and the reader bind them as NULL instead of failing."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from consumers.archive.segments import ADDED_COLUMNS, SCHEMAS
    from consumers.archive.views import define_raw, parquet_source

    old = pa.schema([f for f in SCHEMAS["changes"] if f.name not in ADDED_COLUMNS])
    pq.write_table(old.empty_table(), tmp_path / "old.parquet")
    con = duckdb.connect()
    define_raw(con, "raw_changes", "changes", parquet_source([str(tmp_path / "old.parquet")]))
    assert "reread" not in old.names
    assert con.execute("SELECT count(*), count(reread) FROM raw_changes").fetchall() == [(0, 0)]
    assert ("reread", "VARCHAR") in [(r[0], r[1]) for r in
                                     con.execute("DESCRIBE raw_changes").fetchall()]
