"""A damaged archive is refused in one line that names the file and the way to recover, by
the writer, by ``connect_history`` (replay's entry point) and by ``consumers history``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from consumers.archive.layout import DamagedArchiveError
from consumers.archive.reader import connect_history
from consumers.archive.store import ArchiveStore
from consumers.cli import main
from tests.archive_fixtures import change


def _archive(root: Path) -> Path:
    with ArchiveStore.open_or_create(root) as store:
        store.append(changes=[change(100, 0), change(100, 1)], offsets={("t", 0): 2})
        store.append(changes=[change(200, 0)], offsets={("t", 0): 3})
    return next((root / "kind=changes").glob("*.parquet"))


@pytest.mark.parametrize("damage", ["missing", "truncated", "overwritten"])
def test_a_damaged_data_file_is_named_by_every_reader_and_the_writer(
        tmp_path: Path, damage: str) -> None:
    root = tmp_path / "a"
    victim = _archive(root)
    data = victim.read_bytes()
    if damage == "missing":
        victim.unlink()
    elif damage == "truncated":
        victim.write_bytes(data[: len(data) // 2])
    else:
        victim.write_bytes(b"x" * len(data))
    for open_it in (lambda: connect_history(root), lambda: ArchiveStore.open_or_create(root)):
        with pytest.raises(DamagedArchiveError, match="restore the file from a backup, or "
                                                      "re-archive from Kafka") as err:
            open_it()
        assert str(victim) in str(err.value)
    result = CliRunner().invoke(main, ["history", str(root), "SELECT count(*) FROM changes"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"consumers: {err.value}"]


def test_a_corrupt_delta_log_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "a"
    _archive(root)
    newest = sorted((root / "_delta_log").glob("*.json"))[-1]
    newest.write_text("{ this is not a commit")
    with pytest.raises(DamagedArchiveError, match="Delta log"):
        connect_history(root)
    with pytest.raises(DamagedArchiveError, match="Delta log"):
        ArchiveStore.open_or_create(root)
    result = CliRunner().invoke(main, ["history", str(root)])
    assert result.exit_code == 2 and "Delta log" in result.output
    assert len(result.output.strip().splitlines()) == 1
