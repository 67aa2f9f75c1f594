"""Streaming rows from DuckDB into PostgreSQL's COPY while DuckDB is still producing them.

DuckDB builds each row's COPY line in SQL (text format: every value its PostgreSQL input
text, escaped; NULL ``\\N``) and hands them over in Arrow batches; a batch's lines
are one contiguous buffer (each ends with a newline), written to COPY as is: no Python
object per row, no temporary file. A producer thread runs DuckDB (which releases the GIL)
while the caller's thread feeds PostgreSQL, so the two overlap on separate cores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import duckdb
import pyarrow as pa
from psycopg import sql

from replay.live import Conn
from replay.tables import quote_duck
from replay.values import texts_struct_sql

_BATCH_ROWS = 16_384
_DONE = object()


def copy_lines_sql(source: str, names: list[str], where: str = "TRUE") -> str:
    """SQL of one ``line`` column: each row of ``source`` (JSON, event encoding) as a line
    of COPY's text format (PostgreSQL parses it faster than CSV): ``names``' input texts
    separated by tabs, backslash, newline, carriage return and tab escaped, NULL ``\\N``."""
    fields = []
    for n in names:
        v = f"v.{quote_duck(n)}"
        escaped = (f"replace(replace(replace(replace({v}, '\\', '\\\\'), chr(10), '\\n'), "
                   f"chr(13), '\\r'), chr(9), '\\t')")
        fields.append(f"coalesce({escaped}, '\\N')")
    line = ", chr(9), ".join(fields)
    return (f"SELECT concat({line}, chr(10)) AS line FROM (SELECT "  # noqa: S608 - names quoted
            f"{texts_struct_sql('row', names)} AS v FROM {quote_duck(source)} WHERE {where})")


def _buffers(batch: pa.RecordBatch) -> Iterator[memoryview]:
    col = batch.column(0)
    if col.null_count:
        raise ValueError("a COPY line is NULL")
    if pa.types.is_large_string(col.type):
        width = "q"
    elif pa.types.is_string(col.type):
        width = "i"
    else:
        raise ValueError(f"COPY lines of type {col.type}")
    offsets = memoryview(col.buffers()[1]).cast(width)  # type: ignore[call-overload]
    start, end = offsets[col.offset], offsets[col.offset + len(col)]
    data = col.buffers()[2]
    if data is not None and end > start:
        yield memoryview(data)[start:end]


def copy_rows(conn: Conn, duck: duckdb.DuckDBPyConnection, source: str, names: list[str],
              statement: sql.Composed, where: str = "TRUE") -> int:
    """COPY ``source``'s rows (``names`` columns) into PostgreSQL with ``statement`` (a
    ``COPY ... FROM STDIN`` in the text format); returns the row count."""
    q: queue.Queue[object] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            # The caller's connection itself (its registered relations are not visible to a
            # cursor); the caller does not use it until the copy is done.
            reader = duck.sql(copy_lines_sql(source, names, where)).to_arrow_reader(_BATCH_ROWS)
            for batch in reader:
                if stop.is_set():
                    break
                put(batch)
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    worker = threading.Thread(target=produce, name="replay-copy", daemon=True)
    rows = 0
    worker.start()
    try:
        with conn.cursor().copy(statement) as copy:
            while (item := q.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, pa.RecordBatch)
                rows += item.num_rows
                for buf in _buffers(item):
                    copy.write(buf)
    finally:
        stop.set()
        worker.join()
    return rows
