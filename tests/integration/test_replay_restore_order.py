"""A restore whose re-insert needs a unique value that one of its removals frees still
applies (the streamed re-inserts fall back to removals first), in one transaction."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from capture.event import format_lsn
from replay.cli import main
from tests.conftest import HeraDB
from tests.replay_fixtures import History, write_archive


def test_a_reinsert_colliding_with_a_row_the_restore_removes_still_restores(
        empty_db: HeraDB, tmp_path: Path) -> None:
    h = History(types={"id": "integer", "name": "text", "raw": "bytea"}, db=empty_db.name)
    h.snapshot([{"id": 1, "name": "x", "raw": "\\x00ff10"}, {"id": 3, "name": "z", "raw": None}])
    h.progress()
    root = write_archive(tmp_path / "a", h)
    with empty_db.connect() as conn:
        conn.execute("CREATE TABLE rel (id integer PRIMARY KEY, name text UNIQUE, raw bytea)")
        # id 1 was deleted and id 2 now holds its unique name; id 3 is unchanged
        conn.execute("INSERT INTO rel VALUES (2, 'x', NULL), (3, 'z', NULL)")
    result = CliRunner().invoke(main, ["--archive", str(root), "--table", "public.rel",
                                       "--until", format_lsn(h.epoch_lsn), "--restore",
                                       "--dsn", empty_db.dsn])
    assert result.exit_code == 0, result.output
    assert "applying in order instead" in result.output  # the fallback ran
    assert "re-inserted 1, reverted 0, removed 1" in result.output
    with empty_db.connect() as conn:
        rows = conn.execute("SELECT id, name, raw::text FROM rel ORDER BY id").fetchall()
    assert rows == [(1, "x", "\\x00ff10"), (3, "z", None)]
