"""Live rows read as plain COPY text and turned into JSON by DuckDB carry exactly the values
PostgreSQL's own ``json_build_object`` encoding (``row_json_sql``) gives them."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from psycopg import sql

from replay.live import columns, connect, read_rows, row_json_sql
from replay.tables import TableId
from tests.conftest import HeraDB

TABLE = TableId("public", "awkward")


def exact(text: str) -> Any:
    """Parsed with exact numbers (a float would hide a lost digit)."""
    return json.loads(text, parse_float=Decimal)


def test_live_rows_read_as_text_equal_the_server_built_json_for_awkward_values(
    empty_db: HeraDB,
) -> None:
    with empty_db.connect() as conn:
        conn.execute(
            "CREATE TABLE awkward (id integer PRIMARY KEY, s smallint, b boolean, t text, "
            "n numeric, big bigint, j json, jb jsonb, arr text[], ts timestamptz, "
            "by bytea, gen integer GENERATED ALWAYS AS (id * 2) STORED)")
        conn.execute(
            "INSERT INTO awkward (id, s, b, t, n, big, j, jb, arr, ts, by) VALUES "
            "(1, 1, true, 'plain', 1.50, 9007199254740993, '{\"a\": 1, \"a\": 2}', "
            "'{\"x\": 123456789012345678901234567890.5}', '{a,\"b c\",NULL,\"NULL\"}', "
            "'2025-03-01 12:00:00.123456+00', '\\x00ff'), "
            "(2, NULL, false, '', NULL, NULL, 'null', 'null', '{}', NULL, NULL), "
            "(3, -1, NULL, E'line\\nbreak, \"quoted\" \\\\ back\\tslash é \\u0001', 0, -1, "
            "'\"str\"', '[1, \"two\", null]', '{\"\"}', '-infinity', ''), "
            "(4, 0, true, '\\.', NULL, 0, '3', '{\"k\": \"\\u00e9\"}', NULL, 'infinity', "
            "NULL)")
    pg = connect(empty_db.dsn)
    cols = columns(pg, TABLE)
    fast = sorted((exact(r) for r in read_rows(pg, TABLE, cols).column("row").to_pylist()),
                  key=lambda r: r["id"])
    built = sorted((exact(str(r[0])) for r in pg.execute(
        sql.SQL("SELECT {} FROM awkward").format(row_json_sql(cols))).fetchall()),
        key=lambda r: r["id"])
    filtered = read_rows(pg, TABLE, cols, sql.SQL("id = %s"), (3,)).column("row").to_pylist()
    pg.close()
    assert len(fast) == 4
    assert fast == built
    assert [exact(r) for r in filtered] == [built[2]]
    assert fast[2]["t"] == "line\nbreak, \"quoted\" \\ back\tslash é \u0001"
    assert fast[1]["t"] == "" and fast[1]["s"] is None
    # capture's encoding: json/jsonb as their exact text, bytea hex, natives for int/bool
    assert fast[0]["jb"] == '{"x": 123456789012345678901234567890.5}'
    assert fast[0]["j"] == '{"a": 1, "a": 2}' and fast[1]["jb"] == "null"
    assert fast[0]["by"] == "\\x00ff" and fast[0]["big"] == "9007199254740993"
    assert fast[0]["s"] == 1 and fast[0]["b"] is True
