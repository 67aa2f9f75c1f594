"""Online re-reads of a captured table (DBLog's watermarks, Debezium's incremental snapshots).

The stream cannot say what a table holds after a DDL that rewrote it, for a table added to
``--tables`` later, or after an operator restored it from a backup. Capture then reads the
table again while it keeps streaming, one primary-key chunk at a time:

1. a *low* watermark, a transactional logical message ``hera.watermark``, is committed;
2. the chunk is read (``WHERE (pk) > (last key) ORDER BY pk LIMIT n``, a plain SELECT);
3. a *high* watermark is committed.

Both plugins deliver the messages in WAL order. Between the low and the high watermark the
stream's changes of the table remove their keys (old and new) from the chunk: the stream's
version is newer. At the high watermark the rest of the chunk is published as ``op: r``
events inside the high watermark's transaction, marked ``source.snapshot = "incremental"``
and ``reread`` = the reason. A chunk with no rows ends the re-read at its high watermark:
from that commit on every row of the table has a known value at a known position.

State (which re-reads are queued, running and finished, each one's last completed key) is
a pure function of the stream: requests are logical messages too (``hera.reread``), so the
state as of an LSN is carried by that LSN's PROGRESS marker, and a capture restarted after
kill -9 takes it from the marker at its confirmed LSN. A chunk whose watermarks a previous
process wrote (another ``run``) is ignored when re-decoded; its re-read resumes from the
last chunk completed at or before the confirmed position.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import psycopg
from psycopg import sql

from capture.decoding.base import REREAD_PREFIX
from capture.decoding.base import WATERMARK_PREFIX as WATERMARK_PREFIX
from capture.encoding import SESSION_OPTIONS, from_pg_text
from capture.event import format_lsn

if TYPE_CHECKING:
    from capture.decoding import Message, Row

log = logging.getLogger("hera.capture.reread")

REQUEST_PREFIX = REREAD_PREFIX
SNAPSHOT_MARK = "incremental"  # source.snapshot of a re-read row (Debezium's spelling)
LOG_EVERY_CHUNKS = 10


class RereadState(msgspec.Struct):
    """One re-read, as carried by PROGRESS markers (``StreamMarker.rereads``)."""

    table: str  # schema.table
    reason: str
    requested_lsn: int  # where the request (or the DDL) is in the stream
    started_ms: int
    last_key: list[str | None] | None = None  # PostgreSQL text of the last completed key
    chunks: int = 0
    rows: int = 0
    dropped: int = 0  # chunk rows the stream changed inside their window (its version won)
    done_lsn: int | None = None  # commit LSN of the high watermark of the empty last chunk
    done_ms: int | None = None

    @property
    def finished(self) -> bool:
        return self.done_lsn is not None


class _Request(msgspec.Struct):
    table: str
    reason: str = "requested"
    slot: str | None = None  # None: every capture of this database that streams the table


class _Watermark(msgspec.Struct):
    run: str
    chunk: int
    kind: str  # low | high
    table: str


_decode_request = msgspec.json.Decoder(_Request).decode
_decode_watermark = msgspec.json.Decoder(_Watermark).decode
_encode = msgspec.json.Encoder().encode


@dataclass
class TableShape:
    schema: str
    table: str
    columns: tuple[tuple[str, str], ...]  # (name, type) in attnum order
    primary_key: tuple[str, ...]


@dataclass
class Chunk:
    """The chunk in flight: read between its watermarks, published at the high one."""

    number: int
    table: tuple[str, str]
    primary_key: tuple[str, ...]
    types: dict[str, str]
    rows: dict[tuple[object, ...], Row]  # key values (event encoding) -> row
    last_key: list[str | None] | None  # PostgreSQL text of the chunk's last key
    in_window: bool = False
    dropped: int = 0
    stale: bool = False  # a DDL of the table came before its high mark: read it again
    # Transactions in progress in the chunk SELECT's snapshot (32-bit xids): one whose commit
    # record precedes the low mark may still have been invisible to the SELECT (PostgreSQL
    # writes the commit record before it makes the transaction visible), so its change wins
    # even before the window opens (docs/rereads.md, "The low watermark's visibility race").
    invisible: frozenset[int] = frozenset()


Emit = Callable[[str, str, "Row", "Row", dict[str, str], str], None]


@dataclass
class Rereads:
    """Every re-read of one capture process (survives stream reconnects)."""

    dsn: str
    chunk_rows: int
    shape: Callable[[str], TableShape]  # schema.table -> its columns and key (catalog)
    clock: Callable[[], float] = time.time
    states: list[RereadState] = field(default_factory=list)
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    chunk: Chunk | None = None
    on_progress: Callable[[RereadState, int], None] | None = None  # (state, rows of a chunk)
    _conn: psycopg.Connection[tuple[object, ...]] | None = None
    _chunk_seq: int = 0
    _announced: set[tuple[str, int]] = field(default_factory=set)
    chunk_types: dict[str, str] = field(default_factory=dict)  # of the last chunk read
    # The table of the active re-read, "schema.table" (the stream reports its changes here,
    # chunk or not) and the xids of its latest changes: a chunk whose SELECT could not see
    # one of them is stale. (Changes reach capture at their commit, both plugins are used
    # without streaming of in-progress transactions: an xid here has committed.)
    watch: str | None = None
    _recent: deque[int] = field(default_factory=lambda: deque(maxlen=4096))

    # --- state ---------------------------------------------------------------------------

    def active(self) -> RereadState | None:
        return next((s for s in self.states if not s.finished), None)

    def restore(self, states: Sequence[RereadState]) -> None:
        """The state as of the confirmed LSN (from its PROGRESS marker)."""
        self.states = [msgspec.structs.replace(s) for s in states]
        self.chunk = None
        self._watch()

    def _watch(self) -> None:
        active = self.active()
        self.watch = None if active is None else active.table

    def snapshot(self) -> list[RereadState]:
        return [msgspec.structs.replace(s) for s in self.states]

    def request(self, table: str, reason: str, lsn: int) -> bool:
        """Queue a re-read of ``table``; False when one is already queued or running (two
        requests do not double the work)."""
        if any(s.table == table and not s.finished for s in self.states):
            log.info("re-read already queued", extra={"table": table, "reason": reason})
            return False
        # Finished re-reads of the table are kept (status) but only the latest of each.
        self.states = [s for s in self.states if s.table != table]
        self.states.append(RereadState(table=table, reason=reason, requested_lsn=lsn,
                                       started_ms=int(self.clock() * 1000)))
        log.info("re-read queued", extra={"table": table, "reason": reason,
                                          "lsn": format_lsn(lsn)})
        self._watch()
        return True

    def requested(self, msg: Message, captured: set[str], slot: str) -> None:
        """A ``hera.reread`` message committed in the stream (capture resnapshot)."""
        try:
            req = _decode_request(msg.content.encode())
        except msgspec.DecodeError:
            log.warning("unparseable re-read request ignored", extra={"content": msg.content[:200]})
            return
        if req.slot is not None and req.slot != slot:
            return  # asked of another capture of this database
        if req.table not in captured:
            log.warning("re-read requested for a table this capture does not stream; ignored",
                        extra={"table": req.table})
            return
        self.request(req.table, req.reason, msg.lsn)

    # --- the stream side -----------------------------------------------------------------

    def changed(self, schema: str, table: str, before: Row | None, after: Row | None,
                xid: int | None = None) -> None:
        """A change of a table inside a chunk's window, or by a transaction the chunk's
        SELECT could not see: the stream's version wins."""
        if xid is not None and self.watch == f"{schema}.{table}":
            self._recent.append(xid)
        chunk = self.chunk
        if chunk is None or chunk.table != (schema, table) or not (
                chunk.in_window or (xid is not None and xid in chunk.invisible)):
            return
        for row in (before, after):
            if row is not None:
                key = tuple(row.get(k) for k in chunk.primary_key)
                if chunk.rows.pop(key, None) is not None:
                    chunk.dropped += 1

    def schema_changed(self, schema: str, table: str) -> None:
        if self.chunk is not None and self.chunk.table == (schema, table):
            self.chunk.stale = True

    def truncated(self, schema: str, table: str, xid: int | None = None) -> None:
        chunk = self.chunk
        if chunk is not None and chunk.table == (schema, table) and (
                chunk.in_window or (xid is not None and xid in chunk.invisible)):
            chunk.dropped += len(chunk.rows)
            chunk.rows.clear()

    def watermark(self, msg: Message, commit_lsn: int, emit: Emit) -> RereadState | None:
        """A ``hera.watermark`` message; the re-read whose chunk it ended (state changed)."""
        try:
            mark = _decode_watermark(msg.content.encode())
        except msgspec.DecodeError:
            log.warning("unparseable watermark ignored", extra={"content": msg.content[:200]})
            return None
        chunk = self.chunk
        if mark.run != self.run or chunk is None or mark.chunk != chunk.number:
            return None  # a previous process's chunk: its rows are gone, it is read again
        if mark.kind == "low":
            chunk.in_window = True
            return None
        state = self.active()
        self.chunk = None
        if state is None or state.table != mark.table or chunk.stale:
            return None  # (stale: the same key range is read again with the new columns)
        schema, table = chunk.table
        for row in chunk.rows.values():
            emit(schema, table, row, {k: row[k] for k in chunk.primary_key}, chunk.types,
                 state.reason)
        state.chunks += 1
        state.rows += len(chunk.rows)
        state.dropped += chunk.dropped
        if chunk.last_key is None:
            state.done_lsn = commit_lsn
            self._watch()
            state.done_ms = int(self.clock() * 1000)
            log.info("re-read finished", extra={
                "table": state.table, "reason": state.reason, "chunks": state.chunks,
                "rows": state.rows, "exact_from": format_lsn(commit_lsn)})
        else:
            state.last_key = chunk.last_key
            if state.chunks % LOG_EVERY_CHUNKS == 0:
                log.info("re-read progress", extra={
                    "table": state.table, "chunks": state.chunks, "rows": state.rows})
        if self.on_progress is not None:
            self.on_progress(state, len(chunk.rows))
        return state

    # --- the database side ---------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            # The session's own search_path: comparing keys of an extension's type (citext)
            # needs its operators, which pg_catalog alone does not show.
            self._conn = psycopg.connect(self.dsn, autocommit=True, options=SESSION_OPTIONS)
            from capture.snapshot import output_text

            output_text(self._conn)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.chunk = None

    def _mark(self, conn: psycopg.Connection[tuple[object, ...]], number: int, kind: str,
              table: str) -> None:
        conn.execute("SELECT pg_logical_emit_message(true, %s, %s)", (WATERMARK_PREFIX, _encode(
            _Watermark(run=self.run, chunk=number, kind=kind, table=table)).decode()))

    def next_chunk(self) -> bool:
        """Read the active re-read's next chunk between two committed watermarks; False
        when there is nothing to do (no re-read, or a chunk still waits for its high mark)."""
        state = self.active()
        if state is None or self.chunk is not None:
            return False
        shape = self.shape(state.table)
        conn = self._connection()
        key = (state.table, state.requested_lsn)
        if key not in self._announced:  # once per re-read and process
            self._announced.add(key)
            log.info("re-read started" if state.chunks == 0 else "re-read resumed", extra={
                "table": state.table, "reason": state.reason, "chunk_rows": self.chunk_rows,
                "chunks": state.chunks, "rows": state.rows})
        self._chunk_seq += 1
        number = self._chunk_seq
        types = dict(shape.columns)
        chunk = Chunk(number, (shape.schema, shape.table), shape.primary_key, types, {}, None)
        self.chunk = chunk  # before the low mark: the stream may reach it at once
        self._mark(conn, number, "low", state.table)
        rows, last, invisible = self._read(conn, shape, state.last_key)
        chunk.rows = rows
        chunk.last_key = last
        chunk.invisible = invisible
        if invisible.intersection(self._recent):
            # Already streamed, yet not visible to the SELECT (committed, not yet visible):
            # its change came before the chunk existed; read the range again.
            chunk.stale = True
        chunk.types = self.chunk_types
        self._mark(conn, number, "high", state.table)
        return True

    def _read(self, conn: psycopg.Connection[tuple[object, ...]], shape: TableShape,
              after: list[str | None] | None
              ) -> tuple[dict[tuple[object, ...], Row], list[str | None] | None, frozenset[int]]:
        pk = shape.primary_key
        query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(shape.schema, shape.table))
        params: list[object] = []
        if after is not None:  # text parameters: PostgreSQL gives them the key's types
            query = sql.SQL("{} WHERE ({}) > ({})").format(
                query, sql.SQL(", ").join(sql.Identifier(k) for k in pk),
                sql.SQL(", ").join(sql.Placeholder() for _ in pk))
            params = list(after)
        query = sql.SQL("{} ORDER BY {} LIMIT {}").format(
            query, sql.SQL(", ").join(sql.Identifier(k) for k in pk),
            sql.Literal(self.chunk_rows))
        out: dict[tuple[object, ...], Row] = {}
        last: list[str | None] | None = None
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # The first statement takes the transaction's snapshot: the SELECT below reads it.
            snap = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
            cur = conn.execute(query, params)
            names = [d.name for d in cur.description or ()]
            fetched = cur.fetchall()
            # The SELECT holds its lock until commit: no DDL can change the columns between
            # it and this read of their types (read separately before, it could).
            conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
            types = {str(n): str(t) for n, t in conn.execute(
                "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (sql.Identifier(shape.schema, shape.table).as_string(conn),)).fetchall()}
        index = [names.index(k) for k in pk]
        for values in fetched:
            row = {n: from_pg_text(types[n], v)  # type: ignore[arg-type]
                   for n, v in zip(names, values, strict=True)}
            out[tuple(row[k] for k in pk)] = row
            last = [None if values[i] is None else str(values[i]) for i in index]
        self.chunk_types = types
        return out, (last if out else None), _in_progress(str(snap[0]) if snap else "")


def _in_progress(snapshot: str) -> frozenset[int]:
    """The xids in progress of a ``pg_current_snapshot()`` text (``xmin:xmax:xip,…``), as the
    32-bit ids logical decoding reports (xid8 carries the epoch in its high bits)."""
    xip = snapshot.split(":")[2] if snapshot.count(":") == 2 else ""
    return frozenset(int(x) & 0xFFFFFFFF for x in xip.split(",") if x)


def request_reread(dsn: str, table: str, reason: str = "requested",
                   slot: str | None = None) -> str:
    """``capture resnapshot``: commit a ``hera.reread`` message the running capture sees in
    its stream (wherever it runs). Returns the LSN of the request's commit."""
    body = msgspec.json.encode(_Request(table=table, reason=reason, slot=slot)).decode()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_logical_emit_message(true, %s, %s)", (REQUEST_PREFIX, body))
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return "" if row is None else str(row[0])


def eta_seconds(state: RereadState, table_rows: float | None, now_ms: int) -> float | None:
    """Seconds left at the rate so far, from PostgreSQL's row estimate of the table."""
    if state.finished or not table_rows or state.rows <= 0:
        return None
    elapsed = max(0.001, (now_ms - state.started_ms) / 1000)
    left = max(0.0, table_rows - state.rows - state.dropped)
    return left / (state.rows / elapsed)
