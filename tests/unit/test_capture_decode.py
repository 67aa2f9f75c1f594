"""Decoding wal2json v2 messages: exact values, TOAST fill-in, truncate, refusals."""

from __future__ import annotations

import json

import pytest

from capture.errors import DecodeError
from capture.wal2json import Begin, Commit, RowChange, Truncate, convert_text, decode, ts_us


def _msg(**kw: object) -> bytes:
    return json.dumps(kw).encode()


def _col(name: str, type_: str, value: str) -> str:
    return f'{{"name":"{name}","type":"{type_}","value":{value}}}'


def test_numbers_keep_every_digit_and_bigints_survive() -> None:
    payload = (
        '{"action":"I","xid":7,"lsn":"0/10","schema":"public","table":"t","columns":['
        + _col("id", "integer", "1") + ","
        + _col("n", "numeric", "123456789012345678901234567890.123456789") + ","
        + _col("big", "bigint", "9007199254740993") + ","
        + _col("f", "double precision", "0.1") + ","
        + _col("j", "jsonb", json.dumps('{"a": [1, 2]}')) + ","
        + _col("b", "boolean", "true") + ","
        + _col("x", "text", "null")
        + '],"pk":[{"name":"id","type":"integer"}]}'
    )
    rec = decode(payload)
    assert isinstance(rec, RowChange)
    assert rec.after == {"id": 1, "n": "123456789012345678901234567890.123456789",
                         "big": "9007199254740993", "f": "0.1", "j": {"a": [1, 2]}, "b": True,
                         "x": None}
    assert rec.key == {"id": 1}
    assert rec.types["n"] == "numeric"


def test_update_fills_unchanged_toast_columns_from_the_old_row() -> None:
    payload = (
        '{"action":"U","xid":7,"lsn":"0/10","schema":"public","table":"t","columns":['
        + _col("id", "integer", "1") + "," + _col("flag", "boolean", "false")
        + '],"identity":['
        + _col("id", "integer", "1") + "," + _col("flag", "boolean", "true") + ","
        + _col("big_text", "text", '"' + "x" * 5000 + '"')
        + '],"pk":[{"name":"id","type":"integer"}]}'
    )
    rec = decode(payload)
    assert isinstance(rec, RowChange)
    assert rec.after is not None and rec.before is not None
    assert rec.after["big_text"] == "x" * 5000
    assert rec.after["flag"] is False and rec.before["flag"] is True


def test_begin_commit_and_truncate_carry_their_positions() -> None:
    ts = "2026-11-27 03:04:05.936768+00"
    b = decode(_msg(action="B", xid=9, timestamp=ts, lsn="0/15182C0", nextlsn="0/15182F0"))
    c = decode(_msg(action="C", xid=9, timestamp=ts, lsn="0/15182C0", nextlsn="0/15182F0"))
    t = decode(_msg(action="T", xid=9, timestamp=ts, lsn="0/1518100", schema="s", table="x"))
    assert b == Begin(9, 0x15182C0, ts_us(ts))
    assert c == Commit(9, 0x15182C0, 0x15182F0, ts_us(ts))
    assert t == Truncate("s", "x", 0x1518100)


def test_commit_timestamp_is_microseconds_since_epoch_utc() -> None:
    assert ts_us("1970-01-01 00:00:01.000002+00") == 1_000_002
    assert ts_us("1970-01-01 02:00:00+02") == 0


@pytest.mark.parametrize("payload", [b"{not json", b'{"action":"Z"}', b'{"action":"I"}'])
def test_unparseable_messages_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(payload)


def test_change_without_primary_key_is_refused() -> None:
    payload = ('{"action":"I","xid":7,"lsn":"0/10","schema":"public","table":"t","columns":['
               + _col("id", "integer", "1") + "]}")
    with pytest.raises(DecodeError, match="primary key"):
        decode(payload)


def test_snapshot_text_values_convert_like_stream_values() -> None:
    assert convert_text("boolean", "t") is True
    assert convert_text("boolean", "true") is True
    assert convert_text("boolean", "false") is False
    assert convert_text("integer", "42") == 42
    assert convert_text("jsonb", '{"a": 1}') == {"a": 1}
    assert convert_text("numeric", "NaN") == "NaN"
    assert convert_text("text[]", '{x,"y z"}') == '{x,"y z"}'
    assert convert_text("uuid", None) is None
