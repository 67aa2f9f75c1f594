"""Restores through the streamed COPY path: a re-insert needing a unique value one of its
removals frees still applies (removals go first, one transaction), and texts COPY must
escape (tabs, newlines, backslashes, a literal \\N) arrive exactly."""

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
    assert "re-inserted 1, reverted 0, removed 1" in result.output
    with empty_db.connect() as conn:
        rows = conn.execute("SELECT id, name, raw::text FROM rel ORDER BY id").fetchall()
    assert rows == [(1, "x", "\\x00ff10"), (3, "z", None)]


def test_awkward_texts_survive_into_table_and_restore_exactly(empty_db: HeraDB,
                                                              tmp_path: Path) -> None:
    texts = ["tab\there", "new\nline", "cr\rreturn", "back\\slash", "\\N", "", "\\.",
             "quote\"'", "naïve ☃", "end\\"]
    h = History(types={"id": "integer", "t": "text"}, db=empty_db.name)
    h.snapshot([{"id": i, "t": t} for i, t in enumerate(texts)] + [{"id": 99, "t": None}])
    h.progress()
    root = write_archive(tmp_path / "a", h)
    with empty_db.connect() as conn:
        conn.execute("CREATE TABLE rel (id integer PRIMARY KEY, t text)")
    base = ["--archive", str(root), "--table", "public.rel", "--until",
            format_lsn(h.epoch_lsn), "--dsn", empty_db.dsn]
    copied = CliRunner().invoke(main, [*base, "--into-table", "public.copy"])
    assert copied.exit_code == 0, copied.output
    restored = CliRunner().invoke(main, [*base, "--restore"])
    assert restored.exit_code == 0, restored.output
    want = [(i, t) for i, t in enumerate(texts)] + [(99, None)]
    with empty_db.connect() as conn:
        for table in ("copy", "rel"):
            got = conn.execute(f"SELECT id, t FROM {table} ORDER BY id").fetchall()  # noqa: S608
            assert got == want, table
