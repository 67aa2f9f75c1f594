"""wal2json (format-version 2) messages -> plugin-neutral records.

Exact by construction where wal2json is: msgspec keeps every digit (unbounded integers; other
numbers as their text through ``float_hook``) and unescapes strings without reinterpreting
them; a message that may hold a JSON ``-0`` (which an integer parse would make 0) is read as
raw JSON text per value (``msgspec.Raw``) instead. wal2json's deviations from PostgreSQL's
text output are corrected here: bytea is printed as bare hex (``00ff`` -> ``\\x00ff``). Its
one loss cannot be corrected: before 2.6 (no ``numeric-data-types-as-string``) NaN and
±Infinity of numeric, real and double precision arrive as null.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from capture.decoding.base import (
    AUTHOR_PREFIX,
    HEARTBEAT_PREFIX,
    REREAD_PREFIX,
    SCHEMA_PREFIX,
    WATERMARK_PREFIX,
    Capabilities,
    Catalog,
)
from capture.decoding.names import TableNames
from capture.decoding.records import (
    Begin,
    Commit,
    Decoded,
    Message,
    Row,
    RowChange,
    Truncate,
)
from capture.encoding import INT_TYPES, Value, normalise_wal2json_bytea
from capture.errors import DecodeError
from capture.event import parse_lsn

if TYPE_CHECKING:
    from capture.decoding.base import Conn
    from capture.slot import TableInfo

# wal2json options; the slot is created with the plugin, options are given at START_REPLICATION.
WAL2JSON_OPTIONS: dict[str, str] = {
    "format-version": "2",
    "include-xids": "1",
    "include-timestamp": "1",
    "include-types": "1",
    "include-lsn": "1",
    "include-pk": "1",
    "include-transaction": "1",
}
NUMERIC_AS_STRING = "numeric-data-types-as-string"  # wal2json >= 2.6 only

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")
_NULL = msgspec.Raw(b"null")


class _Col(msgspec.Struct):
    name: str
    type: str = ""
    value: msgspec.Raw = _NULL


class _Pk(msgspec.Struct):
    name: str


class _Msg(msgspec.Struct):
    action: str
    xid: int | None = None  # null on a non-transactional message
    timestamp: str | None = None
    lsn: str = ""
    nextlsn: str = ""
    schema: str = ""
    table: str = ""
    columns: list[_Col] = []
    identity: list[_Col] | None = None
    pk: list[_Pk] = []
    prefix: str = ""
    content: str = ""
    transactional: bool = False


class _FastCol(msgspec.Struct):
    name: str
    type: str = ""
    value: Any = None


class _FastMsg(msgspec.Struct):
    action: str
    xid: int | None = None
    timestamp: str | None = None
    lsn: str = ""
    nextlsn: str = ""
    schema: str = ""
    table: str = ""
    columns: list[_FastCol] = []
    identity: list[_FastCol] | None = None
    pk: list[_Pk] = []
    prefix: str = ""
    content: str = ""
    transactional: bool = False


_decode_msg = msgspec.json.Decoder(_Msg).decode
# The fast path: msgspec gives strings, booleans, unbounded ints exactly, and (float_hook)
# every non-integer number as its text. Only a JSON integer "-0" (a real/double -0 from
# wal2json < 2.6) would lose its sign: messages that may hold one take the Raw path above.
_decode_fast = msgspec.json.Decoder(_FastMsg, float_hook=str).decode
_decode_str = msgspec.json.Decoder(str).decode
_MINUS_ZERO = b'"value":-0}'
# Types wal2json prints as JSON numbers (others are strings, booleans true/false).
_NUMBER_TYPES = frozenset({"bigint", "oid", "real", "double precision", "numeric"})
_TO_TEXT, _TO_INT, _BYTEA = 0, 1, 2


def _fixes(sig: tuple[tuple[str, str], ...]) -> tuple[tuple[str, int], ...]:
    """The columns whose decoded value needs a correction, computed once per column list."""
    out = []
    for name, t in sig:
        if t in INT_TYPES:
            out.append((name, _TO_INT))  # quoted by numeric-data-types-as-string
        elif t in _NUMBER_TYPES or t.startswith("numeric("):
            out.append((name, _TO_TEXT))
        elif t == "bytea":
            out.append((name, _BYTEA))
    return tuple(out)


def json_value(pg_type: str, raw: bytes) -> Value:
    """The raw JSON text wal2json printed for a value -> its event encoding."""
    first = raw[0]
    if first == 0x22:  # a string: unescape only when there is an escape
        text = raw[1:-1].decode() if b"\\" not in raw else _decode_str(raw)
        if pg_type in INT_TYPES:  # numeric-data-types-as-string prints integers quoted too
            return int(text)
        if pg_type == "bytea":
            return normalise_wal2json_bytea(text)
        return text
    if first == 0x6E:  # null
        return None
    if first == 0x74:  # true
        return True
    if first == 0x66:  # false
        return False
    # A number, exactly as printed (all digits, -0, exponents).
    return int(raw) if pg_type in INT_TYPES else raw.decode()


def _escape(name: str) -> str:
    """A name in wal2json's add-tables: space, quote, comma, period, asterisk escaped."""
    return "".join("\\" + c if c in " ',.*" else c for c in name)


def _req(value: T | None) -> T:
    if value is None:
        raise DecodeError("wal2json BEGIN/COMMIT without xid or timestamp (include-xids, "
                          "include-timestamp)")
    return value


def ts_us(text: str) -> int:
    """wal2json's commit timestamp ('2026-11-27 03:04:05.936768+00') -> µs since epoch."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise DecodeError(f"wal2json timestamp without a zone: {text!r}")
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


_AUTHOR_MARK = f'"prefix":"{AUTHOR_PREFIX}"'.encode()


class Wal2JsonDecoder:
    caps = Capabilities(
        name="wal2json", slot_plugin="wal2json", exact_special_values=True,
        needs_publication=False, heartbeat="logical-message",
        exactness_note="wal2json with numeric-data-types-as-string: every value exact")

    def __init__(self, tables: Sequence[TableInfo], catalog: Catalog | None = None,
                 names: TableNames | None = None) -> None:
        self.add_tables = ",".join(t.qualified for t in tables)
        # Renamed captured tables: wal2json names them by their new name (TableNames).
        self.names = names or TableNames(tables)
        # wal2json 2.5 now and then leaves "pk" out of a change (seen once, on a change
        # right after ALTER COLUMN ... TYPE; probably the relcache entry the DDL rebuilt):
        # the key columns then come from the catalog, as pgoutput's do, once per column list.
        self._catalog = catalog
        self._pks: dict[tuple[str, str, tuple[str, ...]], tuple[str, ...]] = {}
        self.numeric_as_string = True  # dropped when the server's wal2json is older than 2.6
        # One types dict per (table, column list) so RowChange.types is the same object while
        # the columns stay the same; with it, the columns whose values need a correction.
        self._types: dict[tuple[str, str, tuple[tuple[str, str], ...]],
                          tuple[dict[str, str], tuple[tuple[str, int], ...]]] = {}

    def start_options(self) -> dict[str, str]:
        options = dict(WAL2JSON_OPTIONS)
        options["add-tables"] = ",".join(
            [self.add_tables, *(f"{_escape(s)}.{_escape(t)}" for s, t in self.names.extra)])
        options["add-msg-prefixes"] = ",".join(
            (HEARTBEAT_PREFIX, SCHEMA_PREFIX, AUTHOR_PREFIX, WATERMARK_PREFIX, REREAD_PREFIX))
        if self.numeric_as_string:
            options[NUMERIC_AS_STRING] = "1"
        return options

    def adapt(self, start_error: str) -> bool:
        if self.numeric_as_string and NUMERIC_AS_STRING in start_error:
            # wal2json < 2.6 does not know the option and prints NaN/Infinity as null.
            self.numeric_as_string = False
            self.caps = Capabilities(
                name="wal2json", slot_plugin="wal2json", exact_special_values=False,
                needs_publication=False, heartbeat="logical-message",
                exactness_note="wal2json < 2.6: NaN and ±Infinity of numeric/real/double "
                               "precision arrive as null")
            return True
        return False

    def prepare(self, conn: Conn, tables: Sequence[TableInfo], slot: str) -> None:
        """wal2json needs nothing in the database beyond the slot."""

    def decode(self, payload: bytes, lsn: int) -> Decoded | None:
        try:
            exact_raw = _MINUS_ZERO in payload
            msg: _Msg | _FastMsg = (_decode_msg if exact_raw else _decode_fast)(payload)
            action = msg.action
            if action in ("I", "U", "D"):
                if self.names.extra:  # a captured table was renamed: names to map
                    return self._renamed_change(msg, exact_raw)
                return self._row_change(msg, exact_raw)
            if action == "B":
                return Begin(_req(msg.xid), parse_lsn(msg.lsn), ts_us(_req(msg.timestamp)))
            if action == "C":
                return Commit(_req(msg.xid), parse_lsn(msg.lsn), parse_lsn(msg.nextlsn),
                              ts_us(_req(msg.timestamp)))
            if action == "T":
                own = self.names.resolve(msg.schema, msg.table)
                return None if own is None else Truncate((own,), parse_lsn(msg.lsn))
            if action == "M":
                return Message(parse_lsn(msg.lsn), msg.prefix, msg.content, msg.transactional)
        except DecodeError:
            raise
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            if _AUTHOR_MARK in payload and b'"action":"M"' in payload:
                # wal2json copies a message's bytes as they are: an author message emitted
                # by hand with bytes that are not UTF-8 must not stop capture (capture.author
                # refuses it).
                fixed = payload.decode("utf-8", "replace").encode()
                if fixed != payload:
                    return self.decode(fixed, lsn)
            raise DecodeError(
                f"unparseable wal2json message ({exc!r}): {payload[:200]!r}") from exc
        raise DecodeError(f"unknown wal2json action {action!r}: {payload[:200]!r}")

    def _renamed_change(self, msg: _Msg | _FastMsg, exact_raw: bool) -> RowChange | None:
        """A change of a captured table under another name: under its captured name. A
        table that only has a name a captured one had is not captured: skipped."""
        own = self.names.resolve(msg.schema, msg.table)
        if own is None:
            return None
        change = self._row_change(msg, exact_raw)
        change.schema, change.table = own
        return change

    def _row(self, msg: _Msg | _FastMsg, cols: list[_Col] | list[_FastCol], exact_raw: bool
             ) -> tuple[Row, dict[str, str]]:
        sig = tuple((c.name, c.type) for c in cols)
        key = (msg.schema, msg.table, sig)
        cached = self._types.get(key)
        if cached is None:
            cached = self._types[key] = (dict(sig), _fixes(sig))
        types, fixes = cached
        row: Row
        if exact_raw:
            row = {c.name: json_value(c.type, bytes(c.value)) for c in cols}
            return row, types
        row = {c.name: c.value for c in cols}  # type: ignore[misc]
        for name, fix in fixes:
            v = row[name]
            if v is None:
                continue
            if fix == _TO_TEXT:
                if type(v) is int:
                    row[name] = str(v)
            elif fix == _TO_INT:
                if type(v) is str:
                    row[name] = int(v)
            else:
                row[name] = normalise_wal2json_bytea(str(v))
        return row, types

    def _catalog_pk(self, msg: _Msg | _FastMsg, row: Row) -> list[str]:
        cache_key = (msg.schema, msg.table, tuple(row))
        pk = self._pks.get(cache_key)
        if pk is None and self._catalog is not None:
            pk = self._pks[cache_key] = self._catalog.primary_key(msg.schema, msg.table)
        if not pk or any(name not in row for name in pk):
            raise DecodeError(
                f"wal2json gave no primary key for {msg.schema}.{msg.table} (include-pk) and "
                f"the catalog's ({', '.join(pk or ()) or 'none'}) is not in the row; give the "
                "table a primary key")
        return list(pk)

    def _row_change(self, msg: _Msg | _FastMsg, exact_raw: bool) -> RowChange:
        before: Row | None = None
        after: Row | None = None
        types: dict[str, str] = {}
        if msg.identity is not None:
            before, types = self._row(msg, msg.identity, exact_raw)
        if msg.action != "D":
            after, new_types = self._row(msg, msg.columns, exact_raw)
            if before is not None and len(after) < len(before):
                # wal2json leaves unchanged TOASTed values out of the new row; with REPLICA
                # IDENTITY FULL the old row has them, and they are by definition unchanged.
                # Rebuilt in the table's column order so both decoders give the same bytes.
                after = {name: after.get(name, value)
                         for name, value in before.items()}
                new_types = types
            types = new_types
        source = after if after is not None else before
        if source is None:
            raise DecodeError(f"change without row data on {msg.schema}.{msg.table}")
        names = [p.name for p in msg.pk] if msg.pk else self._catalog_pk(msg, source)
        key = {name: source.get(name) for name in names}
        return RowChange(msg.action, msg.schema, msg.table, parse_lsn(msg.lsn), before, after,
                         key, types)
