"""The change-event model: the envelope and the LSN helpers."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from capture.event import ChangeEvent, Op, Source, encode_key, format_lsn, parse_lsn


def _event(**kw: object) -> ChangeEvent:
    base: dict[str, object] = {
        "op": Op.DELETE,
        "ts_ms": 1,
        "before": {"id": "a", "n": "1.50"},
        "source": Source(name="hera", db="d", schema_="public", table="core_relationships",
                         ts_ms=1, ts_us=1000),
        "commit_lsn": 0x16B3748,
        "position": 3,
        "key": {"id": "a"},
    }
    base.update(kw)
    return ChangeEvent.model_validate(base)


def test_lsn_text_round_trips() -> None:
    assert format_lsn(parse_lsn("0/16B3748")) == "0/16B3748"
    assert parse_lsn("1/0") == 1 << 32


@pytest.mark.parametrize("bad", ["16B3748", "x/1", ""])
def test_lsn_parse_refuses_garbage_with_the_expected_form(bad: str) -> None:
    with pytest.raises(ValueError, match="0/16B3748"):
        parse_lsn(bad)


def test_event_json_round_trips_with_debezium_field_names() -> None:
    ev = _event()
    raw = ev.to_json()
    assert b'"schema":"public"' in raw
    assert ChangeEvent.from_json(raw) == ev


def test_event_is_frozen() -> None:
    ev = _event()
    with pytest.raises(ValidationError):
        ev.position = 4  # type: ignore[misc]


def test_kafka_key_is_canonical_primary_key_json() -> None:
    assert encode_key({"b": 1, "a": "x"}, "public.t") == b'{"a":"x","b":1}'
    assert encode_key(None, "public.t") == b'{"__table__": "public.t"}'


def test_fast_event_json_equals_the_models_json() -> None:
    from capture.event import TransactionBlock, change_event_json

    every_ascii = "".join(chr(i) for i in range(0x80))
    before: dict[str, object] = {
        "id": "a", "n": "1.50", "j": '{"x": [1, null, "é"], "x": 1e-400}', "b": True,
        "t": None, "i": -2147483648, "big": "9223372036854775807"}
    after = {**before, "b": False, "s": 'q"\\ü' + every_ascii + "\u2028\U0001f600\ufeff"}
    fast = change_event_json(
        before=before, after=after, op=Op.UPDATE, ts_ms=5, name="hera", db="d",
        schema="public", table="core_relationships", tx_id=77, lsn=10, commit_ts_us=1234567,
        snapshot="false", commit_lsn=20, position=3, table_order=2, key={"id": "a"},
        types={"id": "uuid"})
    model = ChangeEvent(
        before=before, after=after, op=Op.UPDATE, ts_ms=5,
        source=Source(name="hera", db="d", schema_="public", table="core_relationships",
                      txId=77, lsn=10, ts_ms=1234, ts_us=1234567),
        transaction=TransactionBlock(id="77:20", total_order=4, data_collection_order=2),
        commit_lsn=20, position=3, key={"id": "a"}, types={"id": "uuid"})
    assert ChangeEvent.from_json(fast) == model
    assert fast == model.to_json()
    assert model.schema_version == 2


def test_kafka_key_of_a_truncate_is_the_table() -> None:
    assert encode_key(None, "public.t") == b'{"__table__": "public.t"}'
    assert encode_key({"k": "é", "a": -1}, "public.t") == '{"a":-1,"k":"é"}'.encode()


def test_the_hot_paths_document_has_the_models_members_in_the_models_order_at_every_level(
) -> None:
    from capture.event import (
        OPTIONAL_MEMBERS,
        Source,
        TransactionBlock,
        change_event_json,
        document_members,
        nullable_members,
    )

    doc = json.loads(change_event_json(
        before=None, after={"id": "a"}, op=Op.CREATE, ts_ms=5, name="hera", db="d",
        schema="public", table="t", tx_id=None, lsn=None, commit_ts_us=1, snapshot="false",
        commit_lsn=20, position=0, table_order=1, key={"id": "a"}, types={"id": "uuid"}))
    assert list(doc) == document_members(ChangeEvent)
    assert list(doc["source"]) == document_members(Source)
    # the author is written only when the transaction has one (tests/unit/test_author.py)
    assert list(doc["transaction"]) == [m for m in document_members(TransactionBlock)
                                        if m not in OPTIONAL_MEMBERS]
    nulls = {k for k, v in doc.items() if v is None} | {
        k for k, v in doc["source"].items() if v is None}
    assert nulls <= nullable_members(ChangeEvent, Source, TransactionBlock)
