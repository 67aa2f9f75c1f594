"""The value encoding of change events: the one place it is spelled.

schema_version 2 (written today): every non-NULL value in ``before``/``after``/``key`` is the
exact text PostgreSQL's output function prints for it (with the session settings of
``SESSION_OPTIONS``), as a JSON string. Only ``boolean`` (JSON true/false) and ``smallint`` /
``integer`` (JSON integers) are JSON natives: their text round-trips without loss. json and
jsonb are their text, as a JSON string (as Debezium's ``io.debezium.data.Json``), so digits,
spacing, key order and duplicate keys of ``json`` are kept and jsonb ``'null'`` is not NULL.
bytea is PostgreSQL's hex output (``\\x00ff``).

schema_version 1 (archives written before): the same, except json/jsonb values were parsed
JSON (numbers possibly rounded) and wal2json's bytea was bare hex. Readers accept both:
replay rewrites a v1 row into v2 once, when it reads it (``replay.values.v1_to_v2_sql``).

The rule "PostgreSQL text -> event value" has three forms here, because three kinds of caller
need it: ``text_decoder`` (str, the snapshot and tests), ``bytes_decoder`` (the raw bytes of a
pgoutput message, chosen once per column so capture's hot loop makes one call per value) and
``duck_encode_sql`` (DuckDB SQL, for replay, which rewrites rows in bulk inside DuckDB). The
bytes and SQL forms are derived from the same type sets and true-texts below, and
tests/unit/test_encoding.py holds all three equal on every kind of value.

Every producer of values (both decoders, the snapshot) and every consumer of them (replay's
outputs, apply, live reads) goes through this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

SCHEMA_VERSION = 2

# The text output settings every capture session uses (snapshot, replication, side
# connections), so a value reads identically whichever path it came by and whatever the
# server's, database's or role's defaults are. Each is an output function's only session
# input: TimeZone (timestamptz), DateStyle (date/time), IntervalStyle (interval),
# extra_float_digits (real/double: 1 = shortest exact), bytea_output (bytea), lc_monetary
# (money: C prints $1,234.56; German would print 1.234,56 €). The other lc_* settings
# change no type's output (lc_numeric and lc_time only to_char's). Replay's sessions use
# the same, so the text is read back under the settings it was printed with.
SESSION_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres "
                   "-c extra_float_digits=1 -c bytea_output=hex -c lc_monetary=C")

# The one spelling of a type in ``types``, column definitions and live reads: format_type
# under this search_path, so a type outside pg_catalog is always schema-qualified
# (``public.mood``) whichever path the database, role or DSN sets. The schema log
# (sql/08_schema_log.sql) pins the same path. Capture's own sessions (replication
# included: wal2json spells types in the walsender's session) run under it; other
# readers switch to it only around their catalog query (``canonical_type_path``).
TYPE_SEARCH_PATH = "pg_catalog, pg_temp"
CAPTURE_OPTIONS = SESSION_OPTIONS + " -c search_path=pg_catalog,pg_temp"

BOOL_TYPES = frozenset({"boolean"})
INT_TYPES = frozenset({"smallint", "integer"})
JSON_TYPES = frozenset({"json", "jsonb"})
NATIVE_TYPES = BOOL_TYPES | INT_TYPES

# The texts of a true boolean: "t" is PostgreSQL's output; "true" is what wal2json's
# numeric-data-types-as-string and a SELECT of a literal may give.
TRUE_TEXTS = ("t", "true")
_TRUE_TEXTS = frozenset(TRUE_TEXTS)
_TRUE_BYTES = frozenset(t.encode() for t in TRUE_TEXTS)

Value = str | bool | int | None


def text_decoder(pg_type: str) -> Callable[[str], Value]:
    """How PostgreSQL's text output of a (non-NULL) ``pg_type`` value becomes its event
    value (v2); chosen once per column."""
    if pg_type in BOOL_TYPES:
        return _TRUE_TEXTS.__contains__
    if pg_type in INT_TYPES:
        return int
    return str


def bytes_decoder(pg_type: str) -> Callable[[bytes], Value]:
    """As ``text_decoder`` for the raw bytes a protocol message carries (UTF-8 server)."""
    if pg_type in BOOL_TYPES:
        return _TRUE_BYTES.__contains__
    if pg_type in INT_TYPES:
        return int
    return bytes.decode


def from_pg_text(pg_type: str, text: str | None) -> Value:
    """PostgreSQL's text output of a ``pg_type`` value -> its event encoding (v2)."""
    return None if text is None else text_decoder(pg_type)(text)


def duck_encode_sql(pg_type: str, text: str) -> str:
    """DuckDB SQL: the event encoding (JSON text) of the PostgreSQL text SQL expression
    ``text`` (which may be NULL)."""
    if pg_type in BOOL_TYPES:
        trues = ", ".join(f"'{t}'" for t in TRUE_TEXTS)
        return (f"CASE WHEN {text} IS NULL THEN 'null' WHEN {text} IN ({trues}) "
                "THEN 'true' ELSE 'false' END")
    if pg_type in INT_TYPES:
        return f"coalesce({text}, 'null')"
    return f"coalesce(to_json({text})::VARCHAR, 'null')"


def normalise_wal2json_bytea(text: str) -> str:
    """wal2json prints bytea as bare hex (``00ff``); PostgreSQL's output is ``\\x00ff``."""
    return text if text.startswith("\\x") else "\\x" + text


@contextmanager
def canonical_type_path(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run the block's ``format_type`` calls under ``TYPE_SEARCH_PATH``; the session's own
    path is back afterwards (writes made later, and their triggers, see the caller's)."""
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    previous = str(row[0]) if row else "\"$user\", public"
    conn.execute("SELECT set_config('search_path', %s, false)", (TYPE_SEARCH_PATH,))
    try:
        yield
    finally:
        conn.execute("SELECT set_config('search_path', %s, false)", (previous,))
