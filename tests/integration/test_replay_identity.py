"""Replay writes only into the database the archive was captured from: another database or
another cluster is refused with one line unless --allow-other-database says so; a corrupt
segment is one line too. (Issue 10.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capture.event import format_lsn
from replay.cli import main
from replay.identity import WrongDatabase, check_target
from replay.live import connect
from tests.conftest import HeraDB
from tests.replay_fixtures import History, memory_history, write_archive

ROW = {"id": "00000000-0000-0000-0000-000000000001", "n": 1}


def history(db: str, system_identifier: str | None = None) -> History:
    h = History(types={"id": "uuid", "n": "integer"}, db=db,
                system_identifier=system_identifier)
    h.snapshot([ROW])
    h.progress()
    return h


def into_table(root: Path, dsn: str, *extra: str) -> Result:
    return CliRunner().invoke(main, ["--archive", str(root), "--table", "public.rel",
                                     "--until", format_lsn(0x1000), "--into-table",
                                     "public.copy", "--dsn", dsn, *extra])


def one_line_error(result: Result, text: str) -> None:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("replay: error")]
    assert len(errors) == 1 and text in errors[0], result.output


def sysid(db: HeraDB) -> str:
    with db.connect() as conn:
        row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    assert row is not None
    return str(row[0])


def test_into_table_of_another_database_is_refused_unless_allowed(
        empty_db: HeraDB, tmp_path: Path) -> None:
    root = write_archive(tmp_path / "a", history("some_other_db"))
    refused = into_table(root, empty_db.dsn)
    one_line_error(refused, "the archive was captured from database some_other_db")
    assert f"the target is database {empty_db.name}" in refused.output
    assert "--allow-other-database" in refused.output
    with empty_db.connect() as conn:
        assert conn.execute("SELECT to_regclass('public.copy')").fetchone() == (None,)
    allowed = into_table(root, empty_db.dsn, "--allow-other-database")
    assert allowed.exit_code == 0, allowed.output
    assert "not the archive's" in allowed.output


def test_an_archive_without_a_cluster_identity_is_checked_by_name_and_says_so(
        empty_db: HeraDB, tmp_path: Path) -> None:
    root = write_archive(tmp_path / "a", history(empty_db.name))
    result = into_table(root, empty_db.dsn)
    assert result.exit_code == 0, result.output
    assert "identity is unverified" in result.output


def test_another_cluster_with_the_same_database_name_is_refused(empty_db: HeraDB) -> None:
    pg = connect(empty_db.dsn)
    try:
        same = memory_history(history(empty_db.name, sysid(empty_db)))
        warned: list[str] = []
        check_target(same, pg, "--restore", False, warned.append)
        assert warned == []
        other = memory_history(history(empty_db.name, "7000000000000000001"))
        with pytest.raises(WrongDatabase, match="cluster 7000000000000000001"):
            check_target(other, pg, "--restore", False, warned.append)
    finally:
        pg.close()


def test_a_corrupt_segment_is_one_line_naming_the_way_out(empty_db: HeraDB,
                                                          tmp_path: Path) -> None:
    root = write_archive(tmp_path / "a", history(empty_db.name))
    for seg in root.rglob("*.parquet"):  # whatever the layout: every data file
        seg.write_bytes(b"PAR1 not really parquet")
    result = into_table(root, empty_db.dsn)
    one_line_error(result, "cannot read the archive")
    assert "re-archive from Kafka" in result.output
    assert "Traceback" not in result.output


def test_a_missing_segment_is_one_line_naming_the_way_out(empty_db: HeraDB,
                                                          tmp_path: Path) -> None:
    root = write_archive(tmp_path / "a", history(empty_db.name))
    files = sorted(root.rglob("*.parquet"))
    assert files
    for f in files:
        f.unlink()
    result = into_table(root, empty_db.dsn)
    one_line_error(result, "cannot read the archive")
    assert "Traceback" not in result.output
