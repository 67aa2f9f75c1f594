"""Re-read tests' tools: traffic that keeps hitting the rows being re-read, and the table
rebuilt from the events after a re-read was asked for alone (the initial snapshot and every
earlier change left out), so only the re-read's rows can account for untouched rows."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from psycopg import sql

from capture.event import ChangeEvent, Op
from replay.live import columns, connect, read_rows
from replay.tables import TableId

RowKey = tuple[Any, ...]
# A table with a composite key and TOASTed values (md5 chains do not compress).
RR_DDL = """
CREATE TABLE rr (a integer, b text, v integer, big text, PRIMARY KEY (a, b));
ALTER TABLE rr REPLICA IDENTITY FULL;
INSERT INTO rr SELECT i, 'k' || (i % 3), i,
       CASE WHEN i % 25 = 0 THEN (SELECT string_agg(md5(i::text || g::text), '')
                                  FROM generate_series(1, 150) g) END
FROM generate_series(1, 240) i;
"""


def fold(events: Iterable[ChangeEvent], pk: tuple[str, ...], after_lsn: int
         ) -> dict[RowKey, dict[str, Any]]:
    """The table from the events committed after ``after_lsn`` only (WAL order)."""
    rows: dict[RowKey, dict[str, Any]] = {}
    for ev in sorted(events, key=lambda e: e.order_key):
        if ev.commit_lsn <= after_lsn:
            continue
        if ev.op is Op.TRUNCATE:
            rows.clear()
            continue
        if ev.before is not None:
            rows.pop(tuple(ev.before[k] for k in pk), None)
        if ev.op is Op.DELETE:
            rows.pop(tuple((ev.key or {})[k] for k in pk), None)
        elif ev.after is not None:
            rows[tuple(ev.after[k] for k in pk)] = ev.after
    return rows


def live_rows(dsn: str, schema: str, table: str, pk: tuple[str, ...]
              ) -> dict[RowKey, dict[str, Any]]:
    """The table now, every column in the change-event encoding (PostgreSQL's text)."""
    import json

    with connect(dsn) as conn:
        tid = TableId(schema, table)
        rows = read_rows(conn, tid, columns(conn, tid)).column("row").to_pylist()
    out = {}
    for text in rows:
        row = json.loads(text)
        out[tuple(row[k] for k in pk)] = row
    return out


@contextlib.contextmanager
def traffic(dsn: str, table: str = "rr", seed: int = 7) -> Iterator[list[int]]:
    """Small transactions on ``table`` (updates, key-changing updates, deletes, inserts)
    until the block ends; yields a one-element list counting the transactions."""
    stop = threading.Event()
    count = [0]
    errors: list[BaseException] = []

    def run() -> None:
        rnd = random.Random(seed)
        t = sql.Identifier(table)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not stop.is_set():
                    i = rnd.randint(1, 260)
                    kind = rnd.random()
                    if kind < 0.5:
                        conn.execute(sql.SQL("UPDATE {} SET v = v + 1 WHERE a = %s").format(t),
                                     (i,))
                    elif kind < 0.65:
                        with contextlib.suppress(psycopg.errors.UniqueViolation):
                            conn.execute(sql.SQL("UPDATE {} SET a = a + 1000 WHERE a = %s "
                                                 "AND a < 1000").format(t), (i,))
                    elif kind < 0.8:
                        conn.execute(sql.SQL("DELETE FROM {} WHERE a = %s").format(t), (i,))
                    else:
                        conn.execute(sql.SQL("INSERT INTO {} (a, b, v) VALUES (%s, 'n', 0) "
                                             "ON CONFLICT DO NOTHING").format(t), (i,))
                    count[0] += 1
        except BaseException as exc:  # surfaced when the block ends
            errors.append(exc)

    thread = threading.Thread(target=run, name="traffic", daemon=True)
    thread.start()
    try:
        yield count
    finally:
        stop.set()
        thread.join(30)
        if errors:
            raise errors[0]
