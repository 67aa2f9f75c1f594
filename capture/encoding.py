"""The value encoding of change events: the one place it is spelled.

schema_version 2 (written today): every non-NULL value in ``before``/``after``/``key`` is the
exact text PostgreSQL's output function prints for it (with the session settings of
``SESSION_OPTIONS``), as a JSON string. Only ``boolean`` (JSON true/false) and ``smallint`` /
``integer`` (JSON integers) are JSON natives: their text round-trips without loss. json and
jsonb are their text, as a JSON string (as Debezium's ``io.debezium.data.Json``), so digits,
spacing, key order and duplicate keys of ``json`` are kept and jsonb ``'null'`` is not NULL.
bytea is PostgreSQL's hex output (``\\x00ff``).

schema_version 1 (archives written before): the same, except json/jsonb values were parsed
JSON (numbers possibly rounded). Readers accept both: ``to_pg_text`` and ``duck_text_sql``
give PostgreSQL input text for either.

Every producer of values (both decoders, the snapshot) and every consumer of them (replay's
outputs, apply, live reads) goes through this module.
"""

from __future__ import annotations

import json
from typing import Any

SCHEMA_VERSION = 2
READABLE_VERSIONS = frozenset({1, 2})

# The text output settings every capture session uses (snapshot, replication, side
# connections), so a value reads identically whichever path it came by.
SESSION_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres "
                   "-c extra_float_digits=1 -c bytea_output=hex")

BOOL_TYPES = frozenset({"boolean"})
INT_TYPES = frozenset({"smallint", "integer"})
JSON_TYPES = frozenset({"json", "jsonb"})
NATIVE_TYPES = BOOL_TYPES | INT_TYPES

Value = str | bool | int | None


def from_pg_text(pg_type: str, text: str | None) -> Value:
    """PostgreSQL's text output of a ``pg_type`` value -> its event encoding (v2)."""
    if text is None:
        return None
    if pg_type in BOOL_TYPES:
        return text in ("t", "true")
    if pg_type in INT_TYPES:
        return int(text)
    return text


def from_pg_text_bytes(pg_type: str, raw: bytes | None) -> Value:
    """As ``from_pg_text`` for the raw bytes a protocol message carries (UTF-8 server)."""
    if raw is None:
        return None
    if pg_type in BOOL_TYPES:
        return raw in (b"t", b"true")
    if pg_type in INT_TYPES:
        return int(raw)
    return raw.decode()


def to_pg_text(pg_type: str, value: Any, schema_version: int = SCHEMA_VERSION) -> str | None:
    """An event value (of either schema version) -> the text PostgreSQL's input function
    for ``pg_type`` turns into exactly the stored value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if schema_version == 1 and pg_type in JSON_TYPES:
        # v1 carried json/jsonb parsed; its text is the re-serialisation (what v1 kept).
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"not a change-event value for {pg_type}: {value!r}")


def _json_path(column: str) -> str:
    return "$." + json.dumps(column)


def duck_text_sql(row_expr: str, column: str, pg_type: str,
                  version_expr: str | None = None) -> str:
    """DuckDB SQL for the PostgreSQL input text of ``column`` in the JSON ``row_expr``.

    ``version_expr`` is the SQL of the event's schema_version where v1 events may be present
    (only json/jsonb columns differ between versions).
    """
    path = "'" + _json_path(column).replace("'", "''") + "'"
    v2 = f"json_extract_string({row_expr}, {path})"
    if pg_type not in JSON_TYPES or version_expr is None:
        return v2
    v1 = f"CAST(json_extract({row_expr}, {path}) AS VARCHAR)"
    return (f"CASE WHEN {version_expr} = 1 AND json_type(json_extract({row_expr}, {path})) "
            f"<> 'NULL' THEN {v1} ELSE {v2} END")


def normalise_wal2json_bytea(text: str) -> str:
    """wal2json prints bytea as bare hex (``00ff``); PostgreSQL's output is ``\\x00ff``."""
    return text if text.startswith("\\x") else "\\x" + text
