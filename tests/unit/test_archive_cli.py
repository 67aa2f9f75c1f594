"""Bad input: records that go to the dead-letter topic, directories the CLI refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from capture.encoding import SCHEMA_VERSION
from consumers.archive.archiver import parse_record
from consumers.archive.segments import TABLE_SCHEMA
from consumers.cli import main
from consumers.kafka_source import Record, is_table_topic
from tests.archive_fixtures import change, end


def _rec(topic: str, value: bytes | None) -> Record:
    return Record(topic, 0, 7, b"k", value)


@pytest.mark.parametrize(("value", "reason"), [
    (b"{not json", "not valid JSON"),
    (b'{"op": "c"}', "not a valid event"),
    (None, "empty record value"),
])
def test_malformed_change_records_are_rejected_with_a_reason(value: bytes | None,
                                                             reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_record(_rec("p.public.t", value), "p.transaction")


def test_a_change_of_a_newer_schema_version_is_rejected() -> None:
    raw = json.loads(change(100, 0).to_json())
    raw["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match=f"unknown schema_version {SCHEMA_VERSION + 1}"):
        parse_record(_rec("p.public.t", json.dumps(raw).encode()), "p.transaction")


def test_transaction_topic_records_parse_as_transaction_events() -> None:
    event = parse_record(_rec("p.transaction", end(100, 2).to_json()), "p.transaction")
    assert event == end(100, 2)
    with pytest.raises(ValueError, match="not a valid event"):
        parse_record(_rec("p.transaction", b'{"status": "MAYBE"}'), "p.transaction")


def test_only_schema_dot_table_topics_of_the_prefix_are_table_topics() -> None:
    assert is_table_topic("p.public.core_relationships", "p")
    assert not any(is_table_topic(t, "p") for t in
                   ["p.transaction", "p.deadletter", "p.alerts", "q.public.t", "p.a.b.c"])


def test_cli_refuses_a_directory_that_is_not_an_archive_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("x")
    result = CliRunner().invoke(main, ["archive", "--bootstrap-servers", "127.0.0.1:1",
                                       "--archive", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a hera-guard archive" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["data.csv"]


def test_cli_refuses_an_archive_written_by_a_newer_version(tmp_path: Path) -> None:
    DeltaTable.create(str(tmp_path), TABLE_SCHEMA, partition_by=["kind"],
                      name="hera-guard-archive", description="format 99: from the future")
    result = CliRunner().invoke(main, ["history", str(tmp_path), "SELECT 1"])
    assert result.exit_code == 2
    assert "newer hera-guard" in result.output


def test_cli_names_the_missing_setting_and_its_variable() -> None:
    result = CliRunner().invoke(main, ["archive", "--archive", "/nonexistent"], env={})
    assert result.exit_code == 2
    assert "HERA_BOOTSTRAP_SERVERS" in result.output


@pytest.mark.parametrize("args", [
    ["archive", "--bootstrap-servers", "127.0.0.1:1", "--archive", "s4://bucket/archive"],
    ["history", "s4://bucket/archive", "SELECT 1"],
    ["archive", "migrate", "old", "s4://bucket/archive"],
])
def test_an_unknown_uri_scheme_is_refused_in_one_line_and_creates_no_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old").mkdir()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "unknown archive URI scheme 's4'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # no ./s4:/bucket/archive


@pytest.mark.parametrize("args", [
    ["archive", "--bootstrap-servers", "127.0.0.1:1", "--archive", "afile"],
    ["history", "afile", "SELECT 1"],
])
def test_a_file_given_as_the_archive_is_named_a_file_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "afile is a file" in lines[0], lines
    assert (tmp_path / "afile").read_text() == "x"
