"""Decoding wal2json format-version 2 messages into values of the change-event contract.

Numbers are read as their exact text (``parse_int``/``parse_float`` keep the digits), so a
numeric with 40 digits or a bigint above 2^53 is never rounded by a float.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from capture.errors import DecodeError
from capture.event import Row, parse_lsn

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
HEARTBEAT_PREFIX = "hera-guard"
NUMERIC_AS_STRING = "numeric-data-types-as-string"  # wal2json >= 2.6 only

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT_TYPES = frozenset({"smallint", "integer"})
_JSON_TYPES = frozenset({"json", "jsonb"})


def _keep_text(s: str) -> str:
    return s


def loads_exact(payload: bytes | str) -> Any:
    return json.loads(payload, parse_int=_keep_text, parse_float=_keep_text)


def convert_value(pg_type: str, value: Any) -> Any:
    """A wal2json value (numbers as text) -> the contract's encoding for ``pg_type``."""
    if value is None or isinstance(value, bool):
        return value
    if pg_type in _INT_TYPES:
        return int(value)
    if pg_type in _JSON_TYPES:
        return json.loads(value)
    return value


def convert_text(pg_type: str, text: str | None) -> Any:
    """PostgreSQL text output (snapshot rows are read as ``col::text``) -> contract encoding."""
    if text is None:
        return None
    if pg_type == "boolean":
        return text in ("t", "true")  # bool::text is "true"; COPY prints "t"
    if pg_type in _INT_TYPES:
        return int(text)
    if pg_type in _JSON_TYPES:
        return json.loads(text)
    return text


def ts_us(text: str) -> int:
    """wal2json's commit timestamp ('2026-11-27 03:04:05.936768+00') -> µs since epoch."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise DecodeError(f"wal2json timestamp without a zone: {text!r}")
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(slots=True)
class Begin:
    xid: int
    commit_lsn: int
    ts_us: int


@dataclass(slots=True)
class Commit:
    xid: int
    commit_lsn: int
    end_lsn: int  # the position after the commit record: what is confirmed to PostgreSQL
    ts_us: int


@dataclass(slots=True)
class RowChange:
    action: str  # I, U, D
    schema: str
    table: str
    lsn: int
    before: Row | None
    after: Row | None
    key: Row
    types: dict[str, str]


@dataclass(slots=True)
class Truncate:
    schema: str
    table: str
    lsn: int


@dataclass(slots=True)
class Message:
    lsn: int
    prefix: str
    content: str
    transactional: bool


Decoded = Begin | Commit | RowChange | Truncate | Message


def _columns(items: list[dict[str, Any]]) -> tuple[Row, dict[str, str]]:
    row: Row = {}
    types: dict[str, str] = {}
    for col in items:
        name = col["name"]
        t = col["type"]
        types[name] = t
        row[name] = convert_value(t, col.get("value"))
    return row, types


def decode(payload: bytes | str) -> Decoded:
    """One wal2json v2 message -> a decoded record. Raises DecodeError on anything unexpected."""
    try:
        msg = loads_exact(payload)
        action = msg["action"]
        if action == "B":
            return Begin(int(msg["xid"]), parse_lsn(msg["lsn"]), ts_us(msg["timestamp"]))
        if action == "C":
            return Commit(int(msg["xid"]), parse_lsn(msg["lsn"]), parse_lsn(msg["nextlsn"]),
                          ts_us(msg["timestamp"]))
        if action in ("I", "U", "D"):
            return _row_change(action, msg)
        if action == "T":
            return Truncate(msg["schema"], msg["table"], parse_lsn(msg["lsn"]))
        if action == "M":
            return Message(parse_lsn(msg["lsn"]), msg.get("prefix", ""), msg.get("content", ""),
                           bool(msg.get("transactional")))
    except DecodeError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"unparseable wal2json message ({exc!r}): {str(payload)[:200]}") from exc
    raise DecodeError(f"unknown wal2json action {action!r}: {str(payload)[:200]}")


def _row_change(action: str, msg: dict[str, Any]) -> RowChange:
    before: Row | None = None
    after: Row | None = None
    types: dict[str, str] = {}
    if "identity" in msg:
        before, types = _columns(msg["identity"])
    if action != "D":
        after, new_types = _columns(msg["columns"])
        if before is not None:
            # wal2json leaves unchanged TOASTed values out of the new row; with REPLICA
            # IDENTITY FULL the old row has them, and they are by definition unchanged.
            for name, value in before.items():
                if name not in after:
                    after[name] = value
                    new_types[name] = types[name]
        types = new_types
    pk_names = [p["name"] for p in msg.get("pk", [])]
    if not pk_names:
        raise DecodeError(
            f"wal2json gave no primary key for {msg['schema']}.{msg['table']} (include-pk)"
        )
    source = after if after is not None else before
    if source is None:
        raise DecodeError(f"change without row data: {str(msg)[:200]}")
    key = {name: source.get(name) for name in pk_names}
    return RowChange(action, msg["schema"], msg["table"], parse_lsn(msg["lsn"]), before, after,
                     key, types)
