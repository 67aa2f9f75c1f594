"""Files a rebuild reads from object storage are copied to local disk (replay/staging.py):
byte for byte, once per connection, under the spill directory, removed with the connection.
The store here is deltalake's own file:// object store (the S3 case runs against SeaweedFS
in tests/integration/test_replay_object_store.py)."""

from __future__ import annotations

import gc
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from consumers.archive.location import ArchiveLocation
from replay import staging
from replay.errors import ReplayError


def _store(tmp_path: Path) -> tuple[ArchiveLocation, str, Path]:
    root = tmp_path / "store"
    (root / "kind=changes").mkdir(parents=True)
    source = root / "kind=changes" / "part-0.parquet"
    pq.write_table(pa.table({"n": list(range(1000))}), source)
    loc = ArchiveLocation(f"file://{root}")
    return loc, f"{loc.uri}/kind=changes/part-0.parquet", source


def test_a_remote_file_is_copied_byte_for_byte_and_read_by_duckdb(tmp_path: Path) -> None:
    loc, uri, source = _store(tmp_path)
    conn = duckdb.connect()
    staging.remember(conn, tmp_path / "spill")
    (copy,) = staging.local_copies(conn, loc, [uri])
    assert Path(copy).read_bytes() == source.read_bytes()
    assert Path(copy).is_relative_to(tmp_path / "spill")
    assert conn.execute("SELECT sum(n) FROM read_parquet($f)", {"f": copy}).fetchone() == \
        (499500,)
    assert staging.local_copies(conn, loc, [uri]) == [copy]  # once per connection


def test_the_copies_go_when_their_connection_goes(tmp_path: Path) -> None:
    loc, uri, _ = _store(tmp_path)
    conn = duckdb.connect()
    staging.remember(conn, tmp_path / "spill")
    (copy,) = staging.local_copies(conn, loc, [uri])
    directory = Path(copy).parent.parent
    conn.close()
    del conn
    gc.collect()
    assert not directory.exists()


def test_a_file_outside_the_archive_is_refused(tmp_path: Path) -> None:
    loc, _, _ = _store(tmp_path)
    with pytest.raises(ReplayError, match="is not under"):
        staging.local_copies(duckdb.connect(), loc, ["file:///etc/passwd"])


def test_a_missing_object_is_named_as_a_missing_data_file(tmp_path: Path) -> None:
    loc, _, _ = _store(tmp_path)
    with pytest.raises(ReplayError, match=r"gone\.parquet of the archive .* is missing"):
        staging.local_copies(duckdb.connect(), loc, [f"{loc.uri}/kind=changes/gone.parquet"])


def test_a_local_disk_that_cannot_take_the_copy_is_one_line_naming_the_spill_dir(
        tmp_path: Path) -> None:
    loc, uri, _ = _store(tmp_path)
    conn = duckdb.connect()
    staging.remember(conn, tmp_path / "spill")
    (copy,) = staging.local_copies(conn, loc, [uri])
    Path(copy).unlink()
    Path(copy + ".part").mkdir()  # the copy cannot be written where it goes
    with pytest.raises(ReplayError, match=r"to local disk .*--spill-dir.*nothing was changed"):
        staging.local_copies(conn, loc, [uri])


def test_a_spill_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    loc, uri, _ = _store(tmp_path)
    (tmp_path / "a-file").write_text("")
    conn = duckdb.connect()
    staging.remember(conn, tmp_path / "a-file" / "spill")
    with pytest.raises(ReplayError, match=r"cannot make a directory for local copies"):
        staging.local_copies(conn, loc, [uri])
