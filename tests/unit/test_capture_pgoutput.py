"""Parsing pgoutput protocol-1 messages, built byte by byte as the server sends them."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest

from capture.decoding import Begin, Commit, Message, Relation, RowChange, Truncate
from capture.decoding.pgoutput import PG_EPOCH_US, PgOutputDecoder
from capture.errors import DecodeError


class FakeCatalog:
    """Answers like format_type would; counts look-ups (once per Relation message)."""

    def __init__(self, names: dict[int, str], pk: tuple[str, ...] = ("id",)) -> None:
        self.names = names
        self.pk = pk
        self.calls = 0

    def relation_columns(self, relid: int, type_oids: Sequence[tuple[int, int]]
                         ) -> tuple[list[str], tuple[str, ...]]:
        self.calls += 1
        return [self.names[o] for o, _ in type_oids], self.pk

    def primary_key(self, schema: str, table: str) -> tuple[str, ...]:
        self.calls += 1
        return self.pk


def cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def relation(relid: int, schema: str, table: str, cols: list[tuple[str, int, int]]) -> bytes:
    out = b"R" + struct.pack("!I", relid) + cstr(schema) + cstr(table) + b"f"
    out += struct.pack("!H", len(cols))
    for name, oid, mod in cols:
        out += b"\x01" + cstr(name) + struct.pack("!Ii", oid, mod)
    return out


def tuple_data(values: list[bytes | str | None]) -> bytes:
    out = struct.pack("!H", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == "u":
            out += b"u"
        else:
            assert isinstance(v, bytes)
            out += b"t" + struct.pack("!I", len(v)) + v
    return out


COLS = [("id", 23, -1), ("ok", 16, -1), ("n", 1700, -1), ("doc", 25, -1)]
NAMES = {23: "integer", 16: "boolean", 1700: "numeric", 25: "text"}


def _decoder() -> tuple[PgOutputDecoder, FakeCatalog]:
    cat = FakeCatalog(NAMES)
    dec = PgOutputDecoder([], cat, "pub")
    rel = dec.decode(relation(16384, "public", "t", COLS), 0x100)
    assert rel == Relation("public", "t", 0x100, (("id", "integer"), ("ok", "boolean"),
                                                   ("n", "numeric"), ("doc", "text")))
    return dec, cat


def test_begin_and_commit_carry_commit_lsn_end_lsn_xid_and_unix_microseconds() -> None:
    dec, _ = _decoder()
    b = dec.decode(b"B" + struct.pack("!QqI", 0x15182C0, 5_000_000, 731), 0)
    c = dec.decode(b"C" + struct.pack("!BQQq", 0, 0x15182C0, 0x15182F0, 5_000_000), 0)
    assert b == Begin(731, 0x15182C0, 5_000_000 + PG_EPOCH_US)
    assert c == Commit(731, 0x15182C0, 0x15182F0, 5_000_000 + PG_EPOCH_US)


def test_insert_passes_text_through_and_makes_booleans_and_ints_native() -> None:
    dec, cat = _decoder()
    big = b"1234567890123456789012345678901234567890.5"
    rec = dec.decode(b"I" + struct.pack("!I", 16384) + b"N"
                     + tuple_data([b"7", b"t", big, None]), 0x200)
    assert isinstance(rec, RowChange)
    assert rec.action == "I" and rec.lsn == 0x200 and rec.before is None
    assert rec.after == {"id": 7, "ok": True, "n": big.decode(), "doc": None}
    assert rec.key == {"id": 7}
    assert rec.types == {"id": "integer", "ok": "boolean", "n": "numeric", "doc": "text"}
    assert cat.calls == 1


def test_special_values_and_unicode_arrive_exactly() -> None:
    dec, _ = _decoder()
    rec = dec.decode(b"I" + struct.pack("!I", 16384) + b"N"
                     + tuple_data([b"1", b"f", b"NaN", "é\\\"".encode()]), 0)
    assert isinstance(rec, RowChange) and rec.after is not None
    assert rec.after["n"] == "NaN" and rec.after["ok"] is False and rec.after["doc"] == 'é\\"'


def test_update_fills_unchanged_toast_from_the_old_row() -> None:
    dec, _ = _decoder()
    old = tuple_data([b"1", b"t", b"1.50", b"x" * 300_000])
    new = tuple_data([b"1", b"f", b"1.50", "u"])
    rec = dec.decode(b"U" + struct.pack("!I", 16384) + b"O" + old + b"N" + new, 0)
    assert isinstance(rec, RowChange) and rec.after is not None and rec.before is not None
    assert rec.after["doc"] == "x" * 300_000 and rec.after["ok"] is False
    assert rec.before["ok"] is True


def test_update_with_unchanged_toast_but_no_old_row_is_refused() -> None:
    dec, _ = _decoder()
    new = tuple_data([b"1", b"f", b"1", "u"])
    with pytest.raises(DecodeError, match="REPLICA IDENTITY FULL"):
        dec.decode(b"U" + struct.pack("!I", 16384) + b"N" + new, 0)


def test_delete_carries_the_old_row() -> None:
    dec, _ = _decoder()
    rec = dec.decode(b"D" + struct.pack("!I", 16384) + b"O"
                     + tuple_data([b"3", b"t", b"-0", b"z"]), 0x300)
    assert isinstance(rec, RowChange)
    assert rec.action == "D" and rec.after is None and rec.before is not None
    assert rec.before["n"] == "-0" and rec.key == {"id": 3}


def test_truncate_names_every_relation() -> None:
    dec, _ = _decoder()
    dec.decode(relation(16390, "s", "u", [("id", 23, -1)]), 0)
    rec = dec.decode(b"T" + struct.pack("!IBII", 2, 0, 16384, 16390), 0x400)
    assert rec == Truncate((("public", "t"), ("s", "u")), 0x400)


def test_logical_messages_keep_prefix_content_and_transactional_flag() -> None:
    dec, _ = _decoder()
    body = b'{"schema":"public"}'
    rec = dec.decode(b"M\x01" + struct.pack("!Q", 0x500) + cstr("hera-guard.schema")
                     + struct.pack("!I", len(body)) + body, 0x500)
    assert rec == Message(0x500, "hera-guard.schema", body.decode(), True)


def test_type_and_origin_messages_are_skipped() -> None:
    dec, _ = _decoder()
    assert dec.decode(b"Y" + struct.pack("!I", 99) + cstr("public") + cstr("mood"), 0) is None


def test_a_new_relation_message_changes_the_columns_of_later_changes() -> None:
    dec, cat = _decoder()
    dec.decode(relation(16384, "public", "t", [("id", 23, -1), ("extra", 25, -1)]), 0)
    rec = dec.decode(b"I" + struct.pack("!I", 16384) + b"N" + tuple_data([b"1", b"a"]), 0)
    assert isinstance(rec, RowChange) and rec.after == {"id": 1, "extra": "a"}
    assert cat.calls == 2


def test_a_change_before_its_relation_and_garbage_are_refused() -> None:
    dec = PgOutputDecoder([], FakeCatalog(NAMES), "pub")
    with pytest.raises(DecodeError, match="Relation"):
        dec.decode(b"I" + struct.pack("!I", 1) + b"N" + tuple_data([b"1"]), 0)
    with pytest.raises(DecodeError):
        dec.decode(b"B\x00", 0)
    with pytest.raises(DecodeError, match="unknown"):
        dec.decode(b"Z", 0)


def test_start_options_ask_for_protocol_1_the_publication_and_messages() -> None:
    dec = PgOutputDecoder([], FakeCatalog(NAMES), "hera_guard")
    assert dec.start_options() == {"proto_version": "1", "publication_names": "hera_guard",
                                   "messages": "true"}
