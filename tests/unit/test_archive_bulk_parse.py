"""The archiver's bulk parse gives the model's columns and never accepts what the model rejects."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from capture.encoding import SCHEMA_VERSION
from capture.event import ChangeEvent, Op, change_event_json
from consumers.archive.bulk_parse import BulkChangeParser
from consumers.archive.segments import changes_rows
from tests.archive_fixtures import change


def _canonical(doc: dict[str, Any]) -> bytes:
    """How capture writes JSON (capture.event._dumps): minified, UTF-8, keys in order."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _events() -> list[ChangeEvent]:
    return [
        change(10, 0),
        change(10, 1, op=Op.UPDATE, before={"id": "a", "n": 1}),
        change(11, 0, op=Op.DELETE, table="core_entities"),
        change(12, 0, op=Op.TRUNCATE),
        change(13, 0, op=Op.READ),
        change(14, 3, row={"id": "é \"quoted\" \\ \n ü", "big": 123456789012345678901234567890,
                           "doc": {"nested": [1, 2.5, None, True, {"x": "y"}]}}),
    ]


def test_bulk_parse_gives_exactly_the_columns_of_the_model_path() -> None:
    events = _events()
    table, rejected = BulkChangeParser().parse([e.to_json() for e in events])
    assert rejected == []
    assert table.equals(changes_rows(events))


def test_bulk_parse_keeps_the_batch_order_and_returns_the_others_by_index() -> None:
    good = [e.to_json() for e in _events()]
    values: list[bytes | None] = [good[0], b"not json", good[1], None, b"\xff\xfe", good[2]]
    table, rejected = BulkChangeParser().parse(values)
    assert rejected == [1, 3, 4]
    assert table["commit_lsn"].to_pylist() == [10, 10, 11]
    assert table["position"].to_pylist() == [0, 1, 0]


Mutation = Callable[[dict[str, Any]], object]

MUTATIONS: dict[str, Mutation] = {
    "unknown key": lambda d: d.update(extra=1),
    "unknown source key": lambda d: d["source"].update(extra=1),
    "unknown transaction key": lambda d: d["transaction"].update(extra=1),
    "missing op": lambda d: d.pop("op"),
    "missing source db": lambda d: d["source"].pop("db"),
    "missing optional schema_version": lambda d: d.pop("schema_version"),
    "missing optional source version": lambda d: d["source"].pop("version"),
    "newer schema_version": lambda d: d.update(schema_version=SCHEMA_VERSION + 1),
    "null schema_version": lambda d: d.update(schema_version=None),
    "unknown op": lambda d: d.update(op="z"),
    "negative commit_lsn": lambda d: d.update(commit_lsn=-1),
    "float commit_lsn": lambda d: d.update(commit_lsn=1.0),
    "string position": lambda d: d.update(position="3"),
    "position beyond int32": lambda d: d.update(position=2**40),
    "huge ts_ms": lambda d: d.update(ts_ms=10**17),
    "string txId": lambda d: d["source"].update(txId="5"),
    "integer table name": lambda d: d["source"].update(table=5),
    "escaped table name": lambda d: d["source"].update(table="a\"b"),
    "null snapshot": lambda d: d["source"].update(snapshot=None),
    "source not an object": lambda d: d.update(source="abc"),
    "transaction not an object": lambda d: d.update(transaction=[1]),
    "incomplete transaction": lambda d: d.update(transaction={"id": "a"}),
    "non-string type": lambda d: d.update(types={"id": 1}),
    "before not an object": lambda d: d.update(before=[]),
    "key not an object": lambda d: d.update(key="k"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_bulk_parse_leaves_every_non_canonical_value_to_the_model(name: str) -> None:
    doc = json.loads(change(10, 1, op=Op.UPDATE, before={"id": "a"}).to_json())
    MUTATIONS[name](doc)
    value = _canonical(doc)
    table, rejected = BulkChangeParser().parse([value])
    assert (table.num_rows, rejected) == (0, [0])


@pytest.mark.parametrize("value", [
    b'{"schema_version":1,"schema_version":1}',
    b' {"op":"c"}',
    b"[]",
    b"1",
    b"",
])
def test_bulk_parse_rejects_what_is_not_an_event(value: bytes) -> None:
    with pytest.raises(ValidationError):
        ChangeEvent.model_validate_json(value)
    assert BulkChangeParser().parse([value])[1] == [0]


def test_a_duplicated_key_or_other_spacing_is_left_to_the_model() -> None:
    good = change(10, 0).to_json().decode()
    spaced = json.dumps(json.loads(good)).encode()  # ", " and ": " separators
    duplicated = good.replace('"op":"c"', '"op":"c","op":"c"').encode()
    assert BulkChangeParser().parse([spaced, duplicated])[1] == [0, 1]


def _capture_json(row: dict[str, Any]) -> bytes:
    return change_event_json(
        before=None, after=row, op=Op.CREATE, ts_ms=1_700_000_000_123, name="hera", db="db",
        schema="public", table="core_entities", tx_id=7, lsn=100,
        commit_ts_us=1_700_000_000_000_001, snapshot="false", commit_lsn=100, position=0,
        table_order=1, key={"id": "r1"}, types={"id": "text", "doc": "jsonb"})


def test_capture_s_own_encoding_of_json_values_takes_the_bulk_path() -> None:
    row = {"id": "r1", "doc": {"f": 2.5, "big": 12345678901234567890, "neg": -0.0,
                               "s": "ü € 😀 \"q\" \\ / \t", "l": [True, None, -3, 0.1]}}
    value = _capture_json(row)
    table, rejected = BulkChangeParser().parse([value])
    assert rejected == []
    assert table.equals(changes_rows([ChangeEvent.model_validate_json(value)]))


def test_a_float_in_another_spelling_is_left_to_the_model() -> None:
    # A writer that spells 1e-7 as 1e-07 (Python's json does; DuckDB re-renders 1e-7): not
    # byte-equal to its minified form, so the (slower) model path stores it, unchanged.
    value = _capture_json({"id": "r1", "doc": {"x": 1e-7}}).replace(b"1e-7", b"1e-07")
    assert b"1e-07" in value
    assert BulkChangeParser().parse([value])[1] == [0]
