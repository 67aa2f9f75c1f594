"""The side connection decoders use for catalog look-ups (once per relation, not per row)."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from capture.encoding import CAPTURE_OPTIONS

_QUERY = """
SELECT ARRAY(SELECT format_type(u.o, u.m)
             FROM unnest(%(oids)s::oid[], %(mods)s::int4[]) WITH ORDINALITY AS u(o, m, i)
             ORDER BY u.i),
       ARRAY(SELECT a.attname::text FROM pg_index x
             JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
             JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
             WHERE x.indrelid = %(relid)s::oid AND x.indisprimary ORDER BY k.ord)
"""


_PK_BY_NAME = """
SELECT ARRAY(SELECT a.attname::text FROM pg_index x
             JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
             JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
             WHERE x.indrelid = to_regclass(format('%%I.%%I', %(s)s::text, %(t)s::text))
               AND x.indisprimary ORDER BY k.ord)
"""


class SideCatalog:
    """Lazily connected; closed with the stream that used it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, options=CAPTURE_OPTIONS)
        return self._conn

    def relation_columns(self, relid: int, type_oids: Sequence[tuple[int, int]]
                         ) -> tuple[list[str], tuple[str, ...]]:
        row = self._connection().execute(_QUERY, {
            "oids": [o for o, _ in type_oids], "mods": [m for _, m in type_oids],
            "relid": relid}).fetchone()
        assert row is not None
        return [str(t) for t in row[0]], tuple(str(k) for k in row[1])  # type: ignore[attr-defined]

    def primary_key(self, schema: str, table: str) -> tuple[str, ...]:
        row = self._connection().execute(_PK_BY_NAME, {"s": schema, "t": table}).fetchone()
        assert row is not None
        return tuple(str(k) for k in row[0])  # type: ignore[attr-defined]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
