"""The initial snapshot: every existing row, as ``op: r`` events, consistent with the slot.

The rows are read in one REPEATABLE READ transaction that imports the snapshot exported when the
slot was created, so they are exactly the state at the slot's consistent point: a row committed
while the snapshot is read appears once, in the stream, never in both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

from capture.encoding import CAPTURE_OPTIONS, text_decoder
from capture.event import ColumnDef, Row
from capture.slot import TableInfo

# The columns of one table as sql/08_schema_log.sql reports them after a DDL (same fields,
# same spelling: format_type under search_path pg_catalog).
_DEFINITION_SQL = """
SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid),
       CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END, a.atthasmissing
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def snapshot_definitions(dsn: str, snapshot_name: str, tables: Sequence[TableInfo]
                         ) -> dict[str, tuple[ColumnDef, ...]]:
    """Each table's definition as of the exported snapshot (the epoch's baseline)."""
    out: dict[str, tuple[ColumnDef, ...]] = {}
    with psycopg.connect(dsn, autocommit=False, options=CAPTURE_OPTIONS) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
        conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        for table in tables:
            ident = sql.SQL("{}.{}").format(sql.Identifier(table.schema),
                                            sql.Identifier(table.table)).as_string(conn)
            rows = conn.execute(_DEFINITION_SQL, (ident,)).fetchall()
            out[table.qualified] = tuple(
                ColumnDef(attnum=int(str(r[0])), name=str(r[1]), type=str(r[2]),
                          not_null=bool(r[3]), default=None if r[4] is None else str(r[4]),
                          missing=None if r[5] is None else str(r[5]), has_missing=bool(r[6]))
                for r in rows)
        conn.rollback()
    return out


def server_time_us(dsn: str) -> int:
    """PostgreSQL's clock now, µs since the epoch. Read after the slot was created, it is at
    or after the commit time of every transaction the slot's snapshot holds: the time the
    epoch's SNAPSHOT_START vouches for (capture's own clock may be behind the server's)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8"
                           ).fetchone()
    if row is None:
        raise RuntimeError("SELECT clock_timestamp() returned no row")
    return int(str(row[0]))


def output_text(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Make ``conn`` return every value as the text PostgreSQL's output function printed."""
    for (oid,) in conn.execute("SELECT oid::int FROM pg_type").fetchall():
        conn.adapters.register_loader(int(str(oid)), TextLoader)
    if not conn.autocommit:
        conn.rollback()  # the catalog read must not hold the snapshot transaction open


def snapshot_rows(dsn: str, snapshot_name: str, tables: Sequence[TableInfo],
                  batch_rows: int) -> Iterator[tuple[TableInfo, Row, Row]]:
    """(table, row, key) for every row of ``tables`` as of the exported snapshot.

    Values are each type's output text (not ``col::text``: inet's cast adds the netmask,
    bpchar's trims) under the same SESSION_OPTIONS as the replication connection, so a row
    reads byte for byte as the stream gives it.
    """
    with psycopg.connect(dsn, autocommit=False, options=CAPTURE_OPTIONS) as conn:
        output_text(conn)
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
        for table in tables:
            names = [c for c, _ in table.columns]
            decoders = [text_decoder(t) for _, t in table.columns]
            query = sql.SQL("SELECT {} FROM {}.{} ORDER BY {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in names),
                sql.Identifier(table.schema), sql.Identifier(table.table),
                sql.SQL(", ").join(sql.Identifier(c) for c in table.primary_key),
            )
            with conn.cursor(name="hera_snapshot") as cur:
                cur.itersize = batch_rows
                cur.execute(query)
                for values in cur:
                    row = {n: None if v is None else decode(v)
                           for n, decode, v in zip(names, decoders, values, strict=True)}
                    yield table, row, {k: row[k] for k in table.primary_key}
        conn.rollback()
