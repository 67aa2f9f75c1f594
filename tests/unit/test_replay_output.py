"""Files written by ``replay --output``: typed columns from the archive's ``types``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from capture.event import format_lsn
from replay.cli import main
from replay.typed import PG_ARRAY_SQL, duck_type
from tests.replay_fixtures import REL_TYPES, History, write_archive


def row(i: int, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "id": f"00000000-0000-0000-0000-{i:012d}", "org": "10000000-0000-0000-0000-000000000001",
        "kind": "USER_MEMBER_OF_ORG", "is_active": True, "n": i, "big": "9223372036854775807",
        "amount": "12345678901234567890.000001", "data": '{"role": "staff"}',
        "tags": '{auth,"a b",NULL}', "at": "2025-03-01 12:00:00.123456+00"}
    r.update(over)
    return r


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, History, int]:
    h = History()
    h.snapshot([row(1), row(2)])
    _, lsn, _ = h.commit([("u", row(1), row(1, is_active=False)), ("c", None, row(3))])
    h.commit([("d", row(2), None)])
    h.progress()
    return write_archive(tmp_path / "archive", h), h, lsn


def run(archive: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--archive", str(archive), "--table", "public.rel", *args])


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_output_files_hold_the_state_at_the_point_with_typed_columns(
        archive: tuple[Path, History, int], tmp_path: Path, suffix: str) -> None:
    root, _, lsn = archive
    out = tmp_path / f"state{suffix}"
    result = run(root, "--until", format_lsn(lsn), "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote 3 rows" in result.output
    conn = duckdb.connect()
    got = conn.execute(f"SELECT * FROM '{out}' ORDER BY n").fetchall()  # noqa: S608
    assert [r[4] for r in got] == [1, 2, 3]
    if suffix == ".parquet":
        types = dict(conn.execute(f"DESCRIBE SELECT * FROM '{out}'").fetchall()[i][:2]  # noqa: S608
                     for i in range(10))
        assert types["is_active"] == "BOOLEAN" and types["big"] == "BIGINT"
        assert types["at"] == "TIMESTAMP WITH TIME ZONE" and types["tags"] == "VARCHAR[]"
        assert types["amount"] == "VARCHAR"  # unconstrained numeric stays exact text
        assert got[0][3] is False and got[0][8] == ["auth", "a b", None]
    if suffix == ".jsonl":
        first = min((json.loads(line) for line in out.read_text().splitlines()),
                    key=lambda r: r["n"])
        assert first == row(1, is_active=False)  # the event encoding, json as its text
        assert list(first) == list(REL_TYPES)


def test_csv_output_is_postgresql_copy_text(tmp_path: Path) -> None:
    h = History()
    h.snapshot([row(1, at="infinity", tags='{"q\\"t","a,b",NULL}', data='{"a":  1.50}'),
                row(2, kind="", amount=None, at="-infinity")])
    h.progress()
    out = tmp_path / "state.csv"
    result = run(write_archive(tmp_path / "a", h), "--until", format_lsn(h.epoch_lsn),
                 "--output", str(out))
    assert result.exit_code == 0, result.output
    lines = sorted(out.read_text().splitlines())
    assert lines[-1] == ",".join(f'"{c}"' for c in REL_TYPES)  # the header
    assert lines[0] == ('"00000000-0000-0000-0000-000000000001","10000000-0000-0000-0000-'
                        '000000000001","USER_MEMBER_OF_ORG","true","1","9223372036854775807",'
                        '"12345678901234567890.000001","{""a"":  1.50}",'
                        '"{""q\\""t"",""a,b"",NULL}","infinity"')
    # an empty string is quoted, NULL is an empty unquoted field (as COPY CSV writes them)
    assert ',"",' in lines[1] and '"true","2","9223372036854775807",,' in lines[1]


def test_parquet_keeps_what_arrow_cannot_hold_as_text_and_says_so(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    types = {**REL_TYPES, "raw": "bytea", "f": "double precision", "dec": "numeric(5,2)"}
    h = History(types=types)
    h.snapshot([row(1, at="infinity", raw="\\x00ff10", f="NaN", dec="NaN"),
                row(2, raw="\\x", f="-0", dec="1.50")])
    h.progress()
    out = tmp_path / "state.parquet"
    result = run(write_archive(tmp_path / "a", h), "--until", format_lsn(h.epoch_lsn),
                 "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "kept as PostgreSQL text in state.parquet: amount (numeric: no exact Arrow type)" \
        in result.output
    table = pq.read_table(out).sort_by("n")
    text_cols = json.loads(pq.read_metadata(out).metadata[b"hera_guard.text_columns"])
    assert set(text_cols) == {"amount", "data", "at", "dec"}
    assert "at (timestamp with time zone: 1 values TIMESTAMPTZ cannot hold exactly" \
        in result.output
    assert table.column("at").to_pylist() == ["infinity", "2025-03-01 12:00:00.123456+00"]
    assert table.column("raw").to_pylist() == [b"\x00\xff\x10", b""]
    f = table.column("f").to_pylist()
    assert f[0] != f[0] and str(f[1]) == "-0.0"
    assert table.column("dec").to_pylist() == ["NaN", "1.50"]


def test_an_unknown_suffix_is_refused_before_any_work(archive: tuple[Path, History, int],
                                                      tmp_path: Path) -> None:
    root, _, lsn = archive
    result = run(root, "--until", format_lsn(lsn), "--output", str(tmp_path / "x.xlsx"))
    assert result.exit_code == 1
    assert "replay: error: cannot tell the format" in result.output


def test_a_time_without_zone_is_refused_with_one_line(archive: tuple[Path, History, int],
                                                      tmp_path: Path) -> None:
    result = run(archive[0], "--until", "2025-03-01 12:00:00", "--output",
                 str(tmp_path / "x.csv"))
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "has no zone" in result.output


def test_an_unknown_table_is_refused_naming_the_archived_ones(
        archive: tuple[Path, History, int], tmp_path: Path) -> None:
    root, _, lsn = archive
    result = CliRunner().invoke(main, ["--archive", str(root), "--table", "public.nope",
                                       "--until", format_lsn(lsn), "--output",
                                       str(tmp_path / "x.csv")])
    assert result.exit_code == 1
    assert "not in the archive (archived tables: public.rel)" in result.output


def test_a_point_before_the_oldest_snapshot_is_refused(archive: tuple[Path, History, int],
                                                       tmp_path: Path) -> None:
    result = run(archive[0], "--until", "0/10", "--output", str(tmp_path / "x.csv"))
    assert result.exit_code == 1
    assert "before the oldest snapshot at 0/1000" in result.output
    assert not (tmp_path / "x.csv").exists()


def test_a_point_beyond_the_archive_says_what_it_covers(archive: tuple[Path, History, int],
                                                        tmp_path: Path) -> None:
    result = run(archive[0], "--until", "0/FFFFFF", "--output", str(tmp_path / "x.csv"))
    assert result.exit_code == 1
    assert "the archive is behind: archived up to 0/2200" in result.output


def test_before_xid_excludes_that_transaction(archive: tuple[Path, History, int],
                                              tmp_path: Path) -> None:
    root, h, _ = archive
    out = tmp_path / "x.csv"
    result = run(root, "--before-xid", str(h.ends[-1].xid), "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote 3 rows" in result.output  # the delete of row 2 is not applied


def test_pg_types_map_to_exact_duckdb_types() -> None:
    assert duck_type("numeric(5,4)") == "DECIMAL(5,4)"
    assert duck_type("numeric") is None
    assert duck_type("timestamp(3) with time zone") == "TIMESTAMPTZ"
    assert duck_type("character varying(20)") == "VARCHAR"
    assert duck_type("integer[]") == "INTEGER[]"
    assert duck_type("interval") is None and duck_type("bytea") == "BLOB"
    got = duckdb.connect().execute("SELECT " + PG_ARRAY_SQL.format(x="$v"),
                                   {"v": '{"x\\"y","NULL",NULL,"c\\\\d",b}'}).fetchall()
    assert got == [(['x"y', "NULL", None, "c\\d", "b"],)]
