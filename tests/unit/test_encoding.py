"""capture.encoding's rule "PostgreSQL text -> event value" in its three forms (str, the
bytes of a pgoutput message, DuckDB SQL) gives the same value for every kind of column."""

from __future__ import annotations

import json

import duckdb
import pytest

from capture.encoding import (
    bytes_decoder,
    duck_encode_sql,
    from_pg_text,
)

SAMPLES: list[tuple[str, str | None]] = [
    ("boolean", "t"), ("boolean", "f"), ("boolean", "true"), ("boolean", "false"),
    ("boolean", None),
    ("integer", "42"), ("integer", "-2147483648"), ("smallint", "-7"), ("integer", None),
    ("bigint", "9223372036854775807"), ("numeric", "NaN"), ("numeric", "1.50"),
    ("double precision", "-Infinity"), ("real", "1e-07"),
    ("jsonb", '{"a": 1, "b": [1.0, null]}'), ("json", '{"a":1,  "a":2}'), ("jsonb", "null"),
    ("bytea", "\\x00ff"), ("text", 'q"\\ü\n\u2028\U0001f600'), ("text", ""),
    ("text[]", '{x,"y z"}'), ("timestamp with time zone", "infinity"),
    ("uuid", "0f8fad5b-d9cb-469f-a165-70867728950e"), ("uuid", None),
]


def test_the_v2_rule_makes_booleans_and_small_integers_json_natives_and_keeps_all_else_text(
) -> None:
    assert from_pg_text("boolean", "t") is True
    assert from_pg_text("boolean", "f") is False
    assert from_pg_text("integer", "42") == 42
    assert from_pg_text("bigint", "42") == "42"
    assert from_pg_text("jsonb", '{"a": 1}') == '{"a": 1}'
    assert from_pg_text("text", None) is None


@pytest.mark.parametrize(("pg_type", "text"), SAMPLES)
def test_the_bytes_form_gives_the_value_the_text_form_gives(pg_type: str,
                                                            text: str | None) -> None:
    expected = from_pg_text(pg_type, text)
    if text is not None:
        got = bytes_decoder(pg_type)(text.encode())
        assert got == expected and type(got) is type(expected)


def test_the_duckdb_form_gives_the_json_of_the_value_the_text_form_gives() -> None:
    con = duckdb.connect(":memory:")
    for pg_type, text in SAMPLES:
        literal = "NULL::VARCHAR" if text is None else "'" + text.replace("'", "''") + "'"
        row = con.execute(f"SELECT ({duck_encode_sql(pg_type, literal)})::VARCHAR").fetchone()
        assert row is not None
        assert json.loads(row[0]) == from_pg_text(pg_type, text), (pg_type, text)
        value = json.loads(row[0])
        assert type(value) is type(from_pg_text(pg_type, text)), (pg_type, text)

