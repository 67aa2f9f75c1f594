"""Row values inside replay, as DuckDB SQL over capture's one encoding (capture/encoding.py).

Every row replay handles (rebuilt, live, planned) is a JSON object in the schema_version 2
event encoding: each non-NULL value is PostgreSQL's text output as a JSON string, except
booleans and int2/int4 (JSON natives). A value's PostgreSQL *input text* is therefore
``json_extract_string`` of it (``true``/``5`` for the natives), and that text fed to the
column type's input function (COPY, ``::type``) is exactly the stored value: bytea
``\\x00ff``, numeric ``NaN``, timestamptz ``infinity``, json with its own spacing.

Archived schema_version 1 events differ only in json/jsonb (parsed JSON) and wal2json's bare
bytea hex; ``v1_to_v2_sql`` rewrites such rows once, when the rebuild reads them.
"""

from __future__ import annotations

import json

from capture.encoding import JSON_TYPES, duck_encode_sql, from_pg_text


def path(column: str) -> str:
    """The JSON path of a top-level member (``$."col"``)."""
    return '$."' + column.replace('"', '\\"') + '"'


def paths(columns: list[str]) -> list[str]:
    return [path(c) for c in columns]


def literal(text: str) -> str:
    """A DuckDB string literal (for SQL that takes no bound parameters)."""
    return "'" + text.replace("'", "''") + "'"


def key_sql(expr: str, pk_param: str = "$pk") -> str:
    """The canonical key of a JSON row/key ``expr``: a JSON array of the key columns' input
    texts. Texts, not JSON values, so an integer key written natively (int4) and as a
    string (int8 after ALTER COLUMN TYPE) is the same key."""
    return f"to_json(json_extract_string({expr}, {pk_param}))::VARCHAR"


# The event encoding of PostgreSQL text, in DuckDB SQL: capture.encoding's SQL form of the rule
# (tests/unit/test_encoding.py holds it equal to the Python form).
encode_text_sql = duck_encode_sql


def encoded_literal(pg_type: str, text: str | None) -> str:
    """A DuckDB JSON literal of one value given as PostgreSQL text."""
    return literal(json.dumps(from_pg_text(pg_type, text), ensure_ascii=False)) + "::JSON"


def texts_struct_sql(row: str, columns: list[str]) -> str:
    """One parse of the JSON row ``row`` into a struct of every column's input text."""
    shape = json.dumps(dict.fromkeys(columns, "VARCHAR"))
    return f"json_transform({row}, {literal(shape)})"


def v1_to_v2_sql(expr: str, json_columns: list[str], bytea_columns: list[str]) -> str:
    """DuckDB SQL turning a schema_version 1 row (JSON text ``expr``) into version 2:
    json/jsonb members become their text (the compact serialisation v1 kept) and bare-hex
    bytea gets PostgreSQL's ``\\x`` prefix. Members that are NULL are left alone."""
    out = f"{expr}::JSON"
    for col in json_columns:
        p = literal(path(col))
        value = f"json_extract({expr}, {p})"
        out = (f"CASE WHEN {value} IS NULL OR json_type({value}) = 'NULL' "
               f"THEN {out} ELSE json_merge_patch({out}, json_object({literal(col)}, "
               f"to_json({value}::VARCHAR))) END")
    for col in bytea_columns:
        p = literal(path(col))
        value = f"json_extract_string({expr}, {p})"
        out = (f"CASE WHEN {value} IS NULL OR starts_with({value}, '\\x') THEN {out} "
               f"ELSE json_merge_patch({out}, json_object({literal(col)}, "
               f"to_json('\\x' || {value}))) END")
    return f"({out})::VARCHAR"


__all__ = ["JSON_TYPES", "encode_text_sql", "encoded_literal", "key_sql",
           "literal", "path", "paths", "texts_struct_sql", "v1_to_v2_sql"]
