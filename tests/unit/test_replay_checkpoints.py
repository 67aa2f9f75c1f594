"""Checkpoints in the archive: replay from the nearest checkpoint gives exactly the rows (and
types) replay from the beginning gives, at every point, across schema changes and TRUNCATE;
retention keeps the newest; a checkpoint verifies against a rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capture.event import ColumnDef
from consumers.archive import checkpoints as store
from consumers.archive.location import archive_location
from replay.checkpoint_job import Policy, checkpoint_at, make_checkpoints, verify_checkpoints
from replay.state import open_history, state_at
from replay.tables import TableId
from tests.replay_fixtures import History, write_archive

TABLE = TableId("public", "rel")
TYPES = {"id": "uuid", "n": "integer", "kind": "text"}
BASE = [ColumnDef(attnum=1, name="id", type="uuid"), ColumnDef(attnum=2, name="n", type="integer"),
        ColumnDef(attnum=3, name="kind", type="text")]


def row(i: int, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"id": f"00000000-0000-0000-0000-{i:012d}", "n": i, "kind": "k"}
    r.update(over)
    return {k: v for k, v in r.items() if v != "-"}


def eventful_history() -> tuple[History, list[int]]:
    """Inserts, updates, deletes, a primary-key change, ADD COLUMN with a default, a
    TRUNCATE, a RENAME and DROP COLUMN; returns the history and every commit LSN."""
    h = History(types=dict(TYPES))
    h.snapshot([row(i) for i in range(1, 7)])
    lsns = [h.epoch_lsn]
    lsns.append(h.commit([("u", row(1), row(1, n=10)), ("d", row(2), None)])[1])
    lsns.append(h.commit([("c", None, row(7)), ("u", row(3), row(30, n=3))])[1])
    x = ColumnDef(attnum=4, name="x", type="text", default="'a'::text", missing="a",
                  has_missing=True)
    lsns.append(h.alter("ALTER TABLE rel ADD COLUMN x text DEFAULT 'a'", [*BASE, x],
                        [("u", row(4, x="a"), row(4, x="b"))])[1])
    lsns.append(h.commit([("c", None, row(8, x="c")), ("d", row(5, x="a"), None)])[1])
    lsns.append(h.commit([("c", None, row(9, x="d")), ("t", None, None),
                          ("c", None, row(10, x="e"))])[1])
    lsns.append(h.commit([("u", row(10, x="e"), row(10, n=100, x="e"))])[1])
    renamed = [BASE[0], ColumnDef(attnum=2, name="num", type="integer"), BASE[2], x]
    lsns.append(h.alter("ALTER TABLE rel RENAME n TO num", renamed,
                        [("c", None, {"id": row(11)["id"], "num": 11, "kind": "k", "x": "f"})])[1])
    lsns.append(h.alter("ALTER TABLE rel DROP COLUMN kind", [renamed[0], renamed[1], x])[1])
    lsns.append(h.commit([("c", None, {"id": row(12)["id"], "num": 12, "x": "g"}),
                          ("u", {"id": row(10)["id"], "num": 100, "x": "e"},
                           {"id": row(10)["id"], "num": 101, "x": "e"})])[1])
    h.progress()
    return h, lsns


def rows_of(conn: Any, lsn: int, **kw: Any) -> tuple[list[tuple[str, str]], dict[str, str]]:
    state = state_at(conn, TABLE, lsn, **kw)
    return sorted(state.rel.project("key, row::VARCHAR").fetchall()), state.types


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    h, lsns = eventful_history()
    root = write_archive(tmp_path_factory.mktemp("ckpt") / "archive", h)
    loc = archive_location(root)
    for lsn in (lsns[1], lsns[4], lsns[6], lsns[8]):  # before and after each kind of event
        checkpoint_at(open_history(loc), loc, TABLE, lsn)
    return root, lsns


def test_every_point_from_a_checkpoint_equals_the_replay_from_the_beginning(
        archive: tuple[Path, list[int]]) -> None:
    root, lsns = archive
    conn = open_history(root)
    points = sorted({*lsns, *(lsn + 1 for lsn in lsns), lsns[-1] + 0x100})
    used = 0
    for lsn in points:
        said: list[str] = []
        assert rows_of(conn, lsn, progress=said.append) == rows_of(conn, lsn, checkpoints=False)
        used += any("from the checkpoint" in m for m in said)
    assert used >= len(points) - 3  # every point at or after the first checkpoint used one


def test_restores_into_todays_columns_are_the_same_from_a_checkpoint(
        archive: tuple[Path, list[int]]) -> None:
    root, lsns = archive
    conn = open_history(root)
    for lsn in lsns:
        assert rows_of(conn, lsn, forward=True, strict=False) == rows_of(
            conn, lsn, forward=True, strict=False, checkpoints=False)


def test_a_point_before_the_oldest_checkpoint_replays_from_the_snapshot(
        archive: tuple[Path, list[int]]) -> None:
    root, lsns = archive
    said: list[str] = []
    state_at(open_history(root), TABLE, lsns[0], progress=said.append)
    assert said and not any("checkpoint" in m for m in said)


def test_checkpoints_verify_against_a_rebuild_from_the_beginning(
        archive: tuple[Path, list[int]]) -> None:
    root, _ = archive
    checked = verify_checkpoints(archive_location(root))
    assert len(checked) == 4 and all(c.differing == 0 for c in checked)
    assert [c.rows for c in checked][:2] == [5, 6]


def test_the_job_checkpoints_the_newest_point_and_retention_keeps_the_newest(
        tmp_path: Path) -> None:
    h, lsns = eventful_history()
    loc = archive_location(write_archive(tmp_path / "a", h))
    checkpoint_at(open_history(loc), loc, TABLE, lsns[2])
    made = make_checkpoints(loc, policy=Policy(every_changes=1, keep=1, retention_hours=0))
    assert [(o.table, o.lsn) for o in made] == [(TABLE, lsns[-1] + 0x100)]
    kept = store.list_checkpoints(loc)
    assert [(c.table, c.lsn) for c in kept] == [(str(TABLE), lsns[-1] + 0x100)]
    again = make_checkpoints(loc, policy=Policy(every_changes=1, keep=1))
    assert again[0].lsn is None and "is current" in again[0].reason


def test_too_few_new_changes_make_no_checkpoint(tmp_path: Path) -> None:
    h, lsns = eventful_history()
    loc = archive_location(write_archive(tmp_path / "a", h))
    checkpoint_at(open_history(loc), loc, TABLE, lsns[-2])
    made = make_checkpoints(loc, policy=Policy(every_changes=1000))
    assert made[0].lsn is None and "fewer than 1000" in made[0].reason


def test_a_rebuild_that_does_not_fit_the_memory_limit_says_so_in_one_line(
        archive: tuple[Path, list[int]], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from replay.cli import main

    root, lsns = archive
    result = CliRunner().invoke(main, [
        "--archive", str(root), "--table", "public.rel", "--until", hex(lsns[-1]),
        "--output", str(tmp_path / "out.jsonl"), "--memory-limit", "100KB"])
    lines = [ln for ln in result.output.splitlines() if ln.startswith("replay: error")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "does not fit in the memory limit (100KB)" in lines[0]
    assert not (tmp_path / "out.jsonl").exists()


def test_the_checkpoint_command_makes_then_verifies_checkpoints(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from replay.cli import main

    h, _ = eventful_history()
    root = write_archive(tmp_path / "a", h)
    made = CliRunner().invoke(main, ["checkpoint", "--archive", str(root)])
    assert made.exit_code == 0 and "public.rel: checkpoint at 0/2900, 3 rows" in made.output
    checked = CliRunner().invoke(main, ["checkpoint", "--archive", str(root), "--verify"])
    assert checked.exit_code == 0 and "public.rel at 0/2900: 3 rows, ok" in checked.output


def test_the_tail_after_a_checkpoint_is_read_from_its_own_files_only(tmp_path: Path) -> None:
    from bench.replay import EPOCH, build_archive
    from replay import tail

    table = TableId("public", "core_relationships")
    loc = archive_location(tmp_path / "a")
    head = build_archive(loc, 300, 2_000, steady=True, chunk=400)
    checkpoint_at(open_history(loc), loc, table, head)
    last = build_archive(loc, 300, 1_000, steady=True, start=2_000, chunk=400)
    conn = open_history(loc)
    assert tail.files(conn, head) == (3, 9)  # of 1 snapshot file + 5 + 3 change files
    said: list[str] = []
    fast = state_at(conn, table, last, progress=said.append)
    slow = state_at(conn, table, last, checkpoints=False)
    assert any("from the checkpoint" in m for m in said)
    assert sorted(fast.rel.fetchall()) != [] and fast.rel.shape[0] == 300
    assert sorted(fast.rel.project("key, row").fetchall()) == sorted(
        slow.rel.project("key, row").fetchall())
    assert last == EPOCH + 4096 * 30


def test_the_archivers_housekeeping_leaves_the_checkpoints_alone(tmp_path: Path) -> None:
    from datetime import timedelta

    from consumers.archive.housekeeping import Housekeeping, housekeep
    from consumers.archive.store import ArchiveStore

    h, lsns = eventful_history()
    loc = archive_location(write_archive(tmp_path / "a", h))
    checkpoint_at(open_history(loc), loc, TABLE, lsns[-1])
    with ArchiveStore.open_or_create(loc, create=False) as archive:
        housekeep(archive, Housekeeping(min_small_files=1, retention=timedelta(0)))
    (kept,) = store.list_checkpoints(loc)
    assert all(Path(f).exists() for f in kept.files)
    assert verify_checkpoints(loc)[0].differing == 0


def test_a_transaction_missing_events_in_the_tail_after_a_checkpoint_is_a_gap(
        tmp_path: Path) -> None:
    from replay.errors import NotCovered

    h = History(types=dict(TYPES))
    h.snapshot([row(i) for i in range(1, 4)])
    first = h.commit([("c", None, row(4))])[1]
    h.commit([("c", None, row(5)), ("c", None, row(6))])
    h.events.pop()  # one archived event of the transaction lost (the tail's only file)
    later = h.commit([("c", None, row(7))])[1]
    h.progress()
    loc = archive_location(write_archive(tmp_path / "a", h))
    checkpoint_at(open_history(loc), loc, TABLE, first)
    said: list[str] = []
    with pytest.raises(NotCovered, match=r"has 1 of 2 events"):
        state_at(open_history(loc), TABLE, later, progress=said.append)
    assert any("from the checkpoint" in m for m in said)
