"""Decoding wal2json v2 messages: exact values (raw JSON text), TOAST fill-in, refusals."""

from __future__ import annotations

import json

import pytest

from capture.decoding import Begin, Commit, Message, RowChange, Truncate
from capture.decoding.wal2json import Wal2JsonDecoder, json_value, ts_us
from capture.encoding import from_pg_text
from capture.errors import DecodeError


def _decode(payload: bytes | str) -> object:
    raw = payload.encode() if isinstance(payload, str) else payload
    return Wal2JsonDecoder([]).decode(raw, 0)


def _msg(**kw: object) -> bytes:
    return json.dumps(kw).encode()


def _col(name: str, type_: str, value: str) -> str:
    return f'{{"name":"{name}","type":"{type_}","value":{value}}}'


def _insert(*cols: str) -> str:
    return ('{"action":"I","xid":7,"lsn":"0/10","schema":"public","table":"t","columns":['
            + ",".join(cols) + '],"pk":[{"name":"id","type":"integer"}]}')


def test_numbers_keep_every_digit_sign_and_exponent_as_printed() -> None:
    rec = _decode(_insert(
        _col("id", "integer", "1"),
        _col("n", "numeric", "1234567890123456789012345678901234567890.123456789"),
        _col("big", "bigint", "9223372036854775807"),
        _col("neg", "bigint", "-9223372036854775807"),
        _col("z", "double precision", "-0"),
        _col("tiny", "numeric", "1e-400"),
        _col("f", "double precision", "0.1"),
        _col("b", "boolean", "true"),
        _col("x", "text", "null")))
    assert isinstance(rec, RowChange)
    assert rec.after == {"id": 1, "n": "1234567890123456789012345678901234567890.123456789",
                         "big": "9223372036854775807", "neg": "-9223372036854775807",
                         "z": "-0", "tiny": "1e-400", "f": "0.1", "b": True, "x": None}
    assert rec.key == {"id": 1}
    assert rec.types["n"] == "numeric"


@pytest.mark.parametrize("minus_zero", [False, True], ids=["fast path", "raw path"])
def test_both_decoding_paths_give_the_same_exact_values(minus_zero: bool) -> None:
    cols = [_col("id", "integer", "1"), _col("n", "numeric", "1e-400"),
            _col("m", "numeric(40,2)", "12345678901234567890123456789012345678.50"),
            _col("big", "bigint", "-9223372036854775807"), _col("o", "oid", "4294967295"),
            _col("f", "real", "1.5e+38"), _col("q", "numeric", '"Infinity"'),
            _col("s", "text", json.dumps('"value":-0}')), _col("b", "bytea", '"00"')]
    if minus_zero:
        cols.append(_col("z", "double precision", "-0"))
    rec = _decode(_insert(*cols))
    assert isinstance(rec, RowChange) and rec.after is not None
    assert {k: v for k, v in rec.after.items() if k != "z"} == {
        "id": 1, "n": "1e-400", "m": "12345678901234567890123456789012345678.50",
        "big": "-9223372036854775807", "o": "4294967295", "f": "1.5e+38", "q": "Infinity",
        "s": '"value":-0}', "b": "\\x00"}
    assert rec.after.get("z", "-0") == "-0"


def test_json_values_stay_their_text_and_jsonb_null_is_not_sql_null() -> None:
    text = '{"a" : 1.50, "a": [1e-400, 12345678901234567890.123456789], "é": "\\u00e9"}'
    rec = _decode(_insert(_col("id", "integer", "1"), _col("j", "json", json.dumps(text)),
                          _col("jb", "jsonb", json.dumps("null"))))
    assert isinstance(rec, RowChange) and rec.after is not None
    assert rec.after["j"] == text
    assert rec.after["jb"] == "null"


def test_bytea_gets_postgresqls_hex_prefix_and_quoted_integers_become_ints() -> None:
    rec = _decode(_insert(_col("id", "integer", '"1"'), _col("b", "bytea", '"00ff10"'),
                          _col("s", "smallint", '"-3"'), _col("n", "numeric", '"NaN"')))
    assert isinstance(rec, RowChange)
    assert rec.after == {"id": 1, "b": "\\x00ff10", "s": -3, "n": "NaN"}


def test_strings_with_escapes_are_unescaped_exactly() -> None:
    assert json_value("text", json.dumps('q"\\ü\n\u0001').encode()) == 'q"\\ü\n\u0001'
    assert json_value("text[]", b'"{\\"a\\\\\\"b\\",NULL}"') == '{"a\\"b",NULL}'


def test_update_fills_unchanged_toast_columns_from_the_old_row_in_column_order() -> None:
    payload = (
        '{"action":"U","xid":7,"lsn":"0/10","schema":"public","table":"t","columns":['
        + _col("id", "integer", "1") + "," + _col("flag", "boolean", "false")
        + '],"identity":['
        + _col("id", "integer", "1") + "," + _col("big_text", "text", '"' + "x" * 5000 + '"')
        + "," + _col("flag", "boolean", "true")
        + '],"pk":[{"name":"id","type":"integer"}]}'
    )
    rec = _decode(payload)
    assert isinstance(rec, RowChange)
    assert rec.after is not None and rec.before is not None
    assert list(rec.after) == ["id", "big_text", "flag"]
    assert rec.after["big_text"] == "x" * 5000
    assert rec.after["flag"] is False and rec.before["flag"] is True
    assert list(rec.types) == ["id", "big_text", "flag"]


def test_the_types_dict_is_one_object_while_the_columns_stay_the_same() -> None:
    dec = Wal2JsonDecoder([])
    one = dec.decode(_insert(_col("id", "integer", "1")).encode(), 0)
    two = dec.decode(_insert(_col("id", "integer", "2")).encode(), 0)
    three = dec.decode(_insert(_col("id", "bigint", "3")).encode(), 0)
    assert isinstance(one, RowChange) and isinstance(two, RowChange)
    assert isinstance(three, RowChange)
    assert one.types is two.types and three.types is not one.types


def test_begin_commit_and_truncate_carry_their_positions() -> None:
    ts = "2026-11-27 03:04:05.936768+00"
    b = _decode(_msg(action="B", xid=9, timestamp=ts, lsn="0/15182C0", nextlsn="0/15182F0"))
    c = _decode(_msg(action="C", xid=9, timestamp=ts, lsn="0/15182C0", nextlsn="0/15182F0"))
    t = _decode(_msg(action="T", xid=9, timestamp=ts, lsn="0/1518100", schema="s", table="x"))
    assert b == Begin(9, 0x15182C0, ts_us(ts))
    assert c == Commit(9, 0x15182C0, 0x15182F0, ts_us(ts))
    assert t == Truncate((("s", "x"),), 0x1518100)


def test_non_transactional_messages_have_no_xid_or_timestamp() -> None:
    payload = (b'{"action":"M","xid":null,"timestamp":null,"lsn":"0/2496C28",'
               b'"transactional":false,"prefix":"hera-guard","content":"heartbeat"}')
    assert _decode(payload) == Message(0x2496C28, "hera-guard", "heartbeat", False)


def test_commit_timestamp_is_microseconds_since_epoch_utc() -> None:
    assert ts_us("1970-01-01 00:00:01.000002+00") == 1_000_002
    assert ts_us("1970-01-01 02:00:00+02") == 0


@pytest.mark.parametrize("payload", [b"{not json", b'{"action":"Z"}', b'{"action":"I"}'])
def test_unparseable_messages_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        _decode(payload)


def test_change_without_primary_key_is_refused() -> None:
    payload = ('{"action":"I","xid":7,"lsn":"0/10","schema":"public","table":"t","columns":['
               + _col("id", "integer", "1") + "]}")
    with pytest.raises(DecodeError, match="primary key"):
        _decode(payload)


def test_older_wal2json_is_retried_without_numeric_as_string_and_says_it_is_inexact() -> None:
    dec = Wal2JsonDecoder([])
    assert dec.start_options()["numeric-data-types-as-string"] == "1"
    assert dec.caps.exact_special_values
    assert dec.adapt('option "numeric-data-types-as-string" = "1" is unknown')
    assert "numeric-data-types-as-string" not in dec.start_options()
    assert not dec.caps.exact_special_values
    assert not dec.adapt("something else")


def test_snapshot_text_values_convert_like_stream_values() -> None:
    assert from_pg_text("boolean", "t") is True
    assert from_pg_text("boolean", "true") is True
    assert from_pg_text("boolean", "false") is False
    assert from_pg_text("integer", "42") == 42
    assert from_pg_text("jsonb", '{"a": 1}') == '{"a": 1}'
    assert from_pg_text("numeric", "NaN") == "NaN"
    assert from_pg_text("text[]", '{x,"y z"}') == '{x,"y z"}'
    assert from_pg_text("uuid", None) is None


class _PkCatalog:
    def __init__(self, pk: tuple[str, ...]) -> None:
        self.pk, self.calls = pk, 0

    def relation_columns(self, relid: int, type_oids: object) -> tuple[list[str], tuple[str, ...]]:
        raise AssertionError("wal2json needs no relation look-up")

    def primary_key(self, schema: str, table: str) -> tuple[str, ...]:
        self.calls += 1
        return self.pk


def _insert_without_pk(*cols: str) -> bytes:
    return ('{"action":"I","xid":7,"lsn":"0/10","schema":"public","table":"t","columns":['
            + ",".join(cols) + ']}').encode()


def test_a_change_wal2json_left_without_its_pk_is_keyed_by_the_catalogs_primary_key() -> None:
    catalog = _PkCatalog(("id",))
    dec = Wal2JsonDecoder([], catalog)
    for i in (1, 2):
        rec = dec.decode(_insert_without_pk(_col("id", "integer", str(i)),
                                            _col("v", "bigint", "5")), 0)
        assert isinstance(rec, RowChange) and rec.key == {"id": i}
    assert catalog.calls == 1  # once per column list, not per change


def test_a_change_without_pk_whose_catalog_key_is_not_in_the_row_is_refused() -> None:
    for dec in (Wal2JsonDecoder([]), Wal2JsonDecoder([], _PkCatalog(())),
                Wal2JsonDecoder([], _PkCatalog(("other",)))):
        with pytest.raises(DecodeError, match=r"wal2json gave no primary key for public\.t"):
            dec.decode(_insert_without_pk(_col("id", "integer", "1")), 0)
