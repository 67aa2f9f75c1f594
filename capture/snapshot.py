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

from capture.encoding import SESSION_OPTIONS, from_pg_text
from capture.event import Row
from capture.slot import TableInfo


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
    with psycopg.connect(dsn, autocommit=False, options=SESSION_OPTIONS) as conn:
        output_text(conn)
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
        for table in tables:
            names = [c for c, _ in table.columns]
            types = dict(table.columns)
            query = sql.SQL("SELECT {} FROM {}.{} ORDER BY {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in names),
                sql.Identifier(table.schema), sql.Identifier(table.table),
                sql.SQL(", ").join(sql.Identifier(c) for c in table.primary_key),
            )
            with conn.cursor(name="hera_snapshot") as cur:
                cur.itersize = batch_rows
                cur.execute(query)
                for values in cur:
                    row = {n: from_pg_text(types[n], v)
                           for n, v in zip(names, values, strict=True)}
                    yield table, row, {k: row[k] for k in table.primary_key}
        conn.rollback()
