"""One connected replication stream: decoded records -> events -> broker -> confirmations.

Thrown away on any fault (the service reconnects and re-reads from the confirmed LSN). Knows
no plugin: it asks the decoder and handles plugin-neutral records. It sees of the service only
a StreamContext (options, decoder, metrics, clock, and the StreamPosition that owns the
confirmed LSN, the markers and the in-flight bound), and never imports it.

Schema changes are capture.schema_changes' to decide, the re-reads' watermarks and requests
capture.reread_stream's; the runner publishes what they report inside the transaction.

Authors: the transactional 'hera.author' message (sql/10_author.sql, capture/author.py) comes
before the transaction's first captured change; its Author rides on BEGIN/END and on each
change event's transaction block. The first one of a transaction counts.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

from capture.author import AuthorError, parse_author
from capture.decoding import (
    AUTHOR_PREFIX,
    HEARTBEAT_PREFIX,
    SCHEMA_PREFIX,
    Begin,
    Columns,
    Commit,
    Message,
    Relation,
    Row,
    RowChange,
    TableNames,
    Truncate,
)
from capture.errors import BrokerError, DecodeError, Stopped
from capture.event import (
    ColumnDef,
    MarkerKind,
    Op,
    SchemaChangeEvent,
    author_json,
    change_event_json,
    encode_key,
    format_lsn,
)
from capture.metrics import CaptureMetrics
from capture.position import Clock, StreamPosition, await_acks
from capture.protocol import Keepalive, ReplicationStream, XLogData
from capture.publish import AckTracker, PendingTxn, Producer
from capture.reread import (
    REQUEST_PREFIX,
    SNAPSHOT_MARK,
    WATERMARK_PREFIX,
    Rereads,
    RereadState,
)
from capture.reread_stream import StreamRereads
from capture.schema_changes import SchemaChanges
from capture.topics import table_topic, transaction_topic
from capture.txn import Txn
from hera_kit.text import first_line

if TYPE_CHECKING:
    import threading

    from capture.decoding import Decoder
    from capture.options import CaptureOptions

log = logging.getLogger("hera.capture")
_OPS = {"I": Op.CREATE, "U": Op.UPDATE, "D": Op.DELETE}
_SCHEMA_KEY = b"schema"


@dataclass(frozen=True)
class StreamContext:
    """What a stream runner may use of the service: no more, so the two stay apart."""

    options: CaptureOptions
    decoder: Decoder
    metrics: CaptureMetrics
    clock: Clock
    position: StreamPosition  # the confirmed LSN, the markers, the in-flight bound
    rereads: Rereads  # the online re-reads (capture/reread.py), kept across streams
    # Commit -> acknowledged latency, seconds, per transaction (the benchmarks' samples).
    latency_observer: Callable[[float], None] | None = None
    on_streaming: Callable[[], None] | None = None  # called once the stream starts
    # The captured tables by relation: renames the schema log reports are followed.
    names: TableNames = field(default_factory=lambda: TableNames(()))


class StreamRunner:
    """The state of one connected stream; thrown away on any fault."""

    def __init__(self, ctx: StreamContext, producer: Producer,
                 stream: ReplicationStream) -> None:
        self.ctx = ctx
        self.s = ctx.options
        self.decoder = ctx.decoder
        self.metrics = ctx.metrics
        self.clock = ctx.clock
        self.position = position = ctx.position
        self.producer = producer
        self.stream = stream
        self.tracker = AckTracker(on_acked=self._acked)
        self.markers = AckTracker()
        self.txn: Txn | None = None
        self.published = 0  # events handed to the producer, folded into the metric per burst
        self.acked_lsn = position.confirmed_lsn
        self.marker_lsn = position.confirmed_lsn  # highest PROGRESS published (maybe not acked)
        self.last_confirm = 0.0
        self.last_activity = time.monotonic()
        self.last_heartbeat = time.monotonic()
        self.stop: threading.Event | None = None  # set by loop(): ends back-pressure waits
        self.stalled_reason: str | None = None  # why the broker looks hung, once logged
        self.wal_end = position.confirmed_lsn
        self.max_in_flight = self.s.max_in_flight
        self.max_in_flight_bytes = self.s.max_in_flight_bytes
        self.ttopic = transaction_topic(self.s.topic_prefix)
        self.topics = {(t.schema, t.table): table_topic(self.s.topic_prefix, t.schema, t.table)
                       for t in position.tables}
        self.rereads = ctx.rereads
        self.reread_log = StreamRereads(ctx.rereads, position.confirmed_lsn,
                                        {f"{s}.{t}" for s, t in self.topics}, self.s.slot)
        self.schema = SchemaChanges(position, ctx.decoder, ctx.names, self.topics,
                                    self._schema_event, self.reread_log.after_ddl)
        self.last_types = self.schema.last_types  # read per row: no call in between
        # (end LSN, commit time) of commits not yet acked: a PROGRESS marker's server time.
        self.commit_times: deque[tuple[int, int]] = deque()
        # Logical messages by prefix (each plugin delivers them; see capture.decoding).
        self.on_message = {SCHEMA_PREFIX: self.schema_logged, HEARTBEAT_PREFIX: self.heartbeat,
                           AUTHOR_PREFIX: self.authored, WATERMARK_PREFIX: self.watermark,
                           REQUEST_PREFIX: self.reread_request}

    def rereads_at(self, lsn: int) -> list[RereadState]:
        """The re-read states after everything up to ``lsn``; older history dropped."""
        return self.reread_log.at(lsn)

    def columns_at(self, lsn: int) -> dict[tuple[str, str], Columns]:
        """The column sets in force after everything up to ``lsn``; older history dropped."""
        return self.schema.at(lsn)

    def _acked(self, txn: PendingTxn) -> None:
        if txn.commit_ts_us:
            seconds = max(0.0, self.clock() - txn.commit_ts_us / 1e6)
            self.metrics.commit_to_ack.observe(seconds)
            if self.ctx.latency_observer is not None:
                self.ctx.latency_observer(seconds)

    def stalled(self) -> str | None:
        """Why capture is not ready although streaming: records have waited
        ``ready_ack_timeout_s`` and the broker acknowledged none meanwhile (a hung broker;
        the producer's own timeout would say so only after 30 s). None while acks flow."""
        now = time.monotonic()
        waited = max(self.tracker.unacknowledged_for(now), self.markers.unacknowledged_for(now))
        if waited < self.s.ready_ack_timeout_s:
            return None
        waiting = self.tracker.outstanding + self.markers.outstanding
        return (f"the broker has acknowledged nothing for {waited:.0f} s ({waiting} records "
                "waiting); nothing new is confirmed until it does")

    def _watch_acks(self) -> None:
        """Log once when the broker stops acknowledging and once when it resumes."""
        reason = self.stalled()
        if (reason is None) == (self.stalled_reason is None):
            return
        if reason is not None:
            log.warning("broker not acknowledging; not ready", extra={"error": reason})
        else:
            log.info("broker acknowledging again; ready")
        self.stalled_reason = reason

    def loop(self, stop: threading.Event) -> None:
        if self.ctx.on_streaming is not None:
            self.ctx.on_streaming()
        self.stop = stop
        self.metrics.health.watch(self.stalled)
        try:
            self._loop(stop)
        except Stopped:
            pass  # a stop ended a wait for the broker: the clean stop below is bounded
        finally:
            self.metrics.health.watch(None)
        self.shutdown()

    def _loop(self, stop: threading.Event) -> None:
        decode = self.decoder.decode
        while not stop.is_set():
            reply = False
            # Take what the socket already holds in one burst; the bookkeeping below is per
            # burst, not per change.
            timeout = 0.05
            for _ in range(2000):
                frame = self.stream.read(timeout)
                timeout = 0.0
                if frame is None:
                    break
                if type(frame) is XLogData:  # the common case first
                    if frame.end_lsn > self.wal_end:
                        self.wal_end = frame.end_lsn
                    rec = decode(frame.payload, frame.start_lsn)
                    if type(rec) is RowChange:
                        self.row(rec)
                    elif rec is not None:
                        self.handle(rec)
                elif isinstance(frame, Keepalive):
                    self.wal_end = max(self.wal_end, frame.wal_end)
                    reply = reply or frame.reply_requested
                    if self.txn is None and self.tracker.idle:
                        # Nothing received is unacknowledged: everything up to the server's
                        # WAL end has been published (or filtered out).
                        self.acked_lsn = max(self.acked_lsn, frame.wal_end)
            self.producer.poll(0)
            self.settle(force=reply)
            self._watch_acks()
            self.maybe_heartbeat()
            if self.rereads.chunk is None and self.rereads.active() is not None:
                self.rereads.next_chunk()

    def handle(self, rec: object) -> None:
        if isinstance(rec, Begin):
            self.txn = Txn(rec, self.tracker.open())
        elif isinstance(rec, Commit):
            self.commit(rec)
        elif isinstance(rec, Truncate):
            self.truncate(rec)
        elif isinstance(rec, Relation):
            self.schema.seen(rec.schema, rec.table, rec.lsn, rec.columns)
        elif isinstance(rec, Message):
            handler = self.on_message.get(rec.prefix)
            if handler is not None:
                handler(rec)

    def heartbeat(self, rec: Message) -> None:
        if self.txn is None and self.tracker.idle:
            self.acked_lsn = max(self.acked_lsn, rec.lsn)

    # --- re-reads (capture/reread.py) ----------------------------------------------------

    def watermark(self, rec: Message) -> None:
        if not rec.transactional or self.txn is None:
            return
        txn = self.txn

        def emit(schema: str, table: str, row: Row, key: Row, types: dict[str, str],
                 reason: str) -> None:
            self._emit(txn, Op.READ, schema, table, rec.lsn, None, row, key, types,
                       snapshot=SNAPSHOT_MARK, reread=reason)

        ended = self.reread_log.watermark(rec, txn.begin.commit_lsn, emit)
        if ended is not None:
            # In the high watermark's transaction: confirmed only once the broker has it.
            # The table re-read is the one key of ``definitions`` (``tables`` stays every
            # captured table: consumers read it as the stream's table set).
            # Its rereads: the state as of its LSN (the ended one with where it was requested:
            # replay rebuilds a table added to --tables from there).
            end = self.position.marker(MarkerKind.REREAD_END, txn.begin.commit_lsn,
                                       rereads=self.rereads.snapshot()).model_copy(
                update={"definitions": {ended.table: ()}}).to_json()
            self._send(self.ttopic, b"marker", end, txn.pending)

    def reread_request(self, rec: Message) -> None:
        if rec.transactional and self.txn is not None:
            self.reread_log.requested(rec)

    def _txn(self) -> Txn:
        if self.txn is None:
            raise DecodeError("a change arrived outside a transaction (no BEGIN)")
        return self.txn

    def _begin(self, txn: Txn) -> None:
        txn.began = True
        self._send(self.ttopic, b"txn", txn.begin_event(), txn.pending)

    def authored(self, rec: Message) -> None:
        txn = self.txn
        if txn is None or not rec.transactional or txn.author is not None:
            return  # not a transaction's author, or not its first
        try:
            txn.author = parse_author(rec.content)
        except AuthorError as exc:
            self.metrics.authors_refused.inc()
            log.warning("hera.author message refused: the transaction has no author",
                        extra={"xid": txn.begin.xid, "lsn": format_lsn(rec.lsn),
                               "error": str(exc)})
            return
        txn.author_raw = author_json(txn.author)

    def _emit(self, txn: Txn, op: Op, schema: str, table: str, lsn: int,
              before: Row | None, after: Row | None, key: Row | None,
              types: dict[str, str] | None, snapshot: str = "false",
              reread: str | None = None) -> None:
        if not txn.began:
            self._begin(txn)
        qualified = f"{schema}.{table}"
        n = txn.per_table.get(qualified, 0) + 1
        txn.per_table[qualified] = n
        b = txn.begin
        value = change_event_json(
            before=before, after=after, op=op, ts_ms=int(self.clock() * 1000),
            name=self.s.topic_prefix, db=self.position.dbname, schema=schema, table=table,
            tx_id=b.xid, lsn=lsn, commit_ts_us=b.ts_us, snapshot=snapshot,
            commit_lsn=b.commit_lsn, position=txn.position, table_order=n, key=key,
            types=types, author=txn.author_raw, reread=reread)
        txn.position += 1
        txn.changes += 1
        topic = self.topics.get((schema, table)) or table_topic(self.s.topic_prefix, schema, table)
        self._send(topic, encode_key(key, qualified), value, txn.pending)
        self.published += 1

    def _send(self, topic: str, key: bytes, value: bytes, pending: PendingTxn) -> None:
        tracker = self.tracker
        self.producer.send(topic, key, value, tracker.sent(pending, len(value)))
        # The limits checked here first: the call is per record, the wait rare.
        if (tracker.outstanding >= self.max_in_flight
                or tracker.outstanding_bytes >= self.max_in_flight_bytes):
            self.position.backpressure(self.producer, tracker, self.stop)

    def row(self, rec: RowChange) -> None:
        table = (rec.schema, rec.table)
        if rec.types is not self.last_types.get(table):
            # A column set not seen on this table's last change: compare with what is known.
            self.schema.seen(rec.schema, rec.table, rec.lsn, tuple(rec.types.items()))
            self.last_types[table] = rec.types
        if self.rereads.watch is not None:
            self.rereads.changed(rec.schema, rec.table, rec.before, rec.after,
                                 self._txn().begin.xid)
        self._emit(self._txn(), _OPS[rec.action], rec.schema, rec.table, rec.lsn, rec.before,
                   rec.after, rec.key, rec.types)

    def truncate(self, rec: Truncate) -> None:
        txn = self._txn()
        for schema, table in rec.tables:
            self.rereads.truncated(schema, table, txn.begin.xid)
            self._emit(txn, Op.TRUNCATE, schema, table, rec.lsn, None, None, None, None)

    # --- schema changes ------------------------------------------------------------------

    def schema_logged(self, rec: Message) -> None:
        if rec.transactional and self.txn is not None:
            self.schema.schema_logged(rec)

    def _schema_event(self, schema: str, table: str, lsn: int, columns: tuple[ColumnDef, ...],
                      command_tag: str | None, ddl: str | None, recorded: bool) -> None:
        """A schema change (capture.schema_changes) at its place in the transaction."""
        txn = self._txn()
        if not txn.began:
            self._begin(txn)
        b = txn.begin
        value = SchemaChangeEvent(
            xid=b.xid, commit_lsn=b.commit_lsn, position=txn.position, lsn=lsn, ts_us=b.ts_us,
            schema_=schema, table=table, columns=columns, command_tag=command_tag, ddl=ddl,
            recorded=recorded).to_json()
        txn.position += 1
        txn.schema_changes += 1
        self._send(self.ttopic, _SCHEMA_KEY, value, txn.pending)
        self.metrics.schema_changes.inc()

    # --- commit and confirmation ---------------------------------------------------------

    def commit(self, rec: Commit) -> None:
        txn = self._txn()
        if txn.began:
            self._send(self.ttopic, b"txn", txn.end_event(rec), txn.pending)
            txn.pending.commit_ts_us = rec.ts_us
        self.tracker.close(txn.pending, rec.end_lsn)
        self.commit_times.append((rec.end_lsn, rec.ts_us))
        self.schema.committed(rec.end_lsn)
        self.reread_log.committed(rec.end_lsn)
        self.txn = None
        self.last_activity = time.monotonic()

    def settle(self, force: bool = False) -> None:
        """Deliveries -> acked prefix -> PROGRESS marker -> confirm to PostgreSQL."""
        if self.published:
            self.metrics.events_published.inc(self.published)
            self.published = 0
        self.tracker.drain()
        acked = self.tracker.confirmable()
        if acked is not None:
            self.acked_lsn = max(self.acked_lsn, acked)
        while self.commit_times and self.commit_times[0][0] <= self.acked_lsn:
            self.position.reached(self.commit_times.popleft()[1])
        now = time.monotonic()
        if self.acked_lsn > self.marker_lsn and (
                force or now - self.last_confirm >= self.s.confirm_interval_s):
            m = self.markers.open()
            marker = self.position.marker(MarkerKind.PROGRESS, self.acked_lsn,
                                          self.columns_at(self.acked_lsn),
                                          self.rereads_at(self.acked_lsn)).to_json()
            self.producer.send(self.ttopic, b"marker", marker, self.markers.sent(m, len(marker)))
            self.markers.close(m, self.acked_lsn)
            self.marker_lsn = self.acked_lsn
            self.last_confirm = now
        self.markers.drain()
        published = self.markers.confirmable()
        if published is not None and self.position.confirm(published):
            self.stream.send_status(published)
            self.metrics.confirmed_lsn.set(published)
        elif force:
            self.stream.send_status(self.position.confirmed_lsn)
        self.metrics.slot_lag_bytes.set(max(0, self.wal_end - self.position.confirmed_lsn))

    def maybe_heartbeat(self) -> None:
        now = time.monotonic()
        if (now - self.last_heartbeat < self.s.heartbeat_interval_s
                or now - self.last_activity < self.s.heartbeat_interval_s):
            return
        self.last_heartbeat = now
        # A quiet captured table must not pin WAL: a message through the slot moves it on.
        # Transactional: its commit carries PostgreSQL's clock, so an idle database's reach
        # in time (PROGRESS commit_ts_us) advances once the stream delivers it.
        try:
            with psycopg.connect(self.s.dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_logical_emit_message(true, %s, 'heartbeat')",
                             (HEARTBEAT_PREFIX,))
            self.metrics.heartbeats.inc()
        except psycopg.Error as exc:
            log.warning("heartbeat failed", extra={"error": first_line(exc)})

    def shutdown(self) -> None:
        """Clean stop: wait for the broker's acks, publish the final marker, confirm; all of
        it within ``stop_timeout_s``. What a hung broker did not acknowledge by then stays
        unconfirmed: the next start re-sends it from the slot (duplicates, never a gap)."""
        deadline = time.monotonic() + self.s.stop_timeout_s
        try:
            await_acks(self.producer, self.tracker, self.s.stop_timeout_s)
            self.settle(force=True)
            while self.markers.outstanding and time.monotonic() < deadline:
                await_acks(self.producer, self.markers, max(0.0, deadline - time.monotonic()))
                self.settle(force=True)
        except BrokerError as exc:
            log.warning("the broker failed records while stopping; they stay unconfirmed",
                        extra={"error": first_line(exc)})
        waiting = self.tracker.outstanding + self.markers.outstanding
        if waiting:
            log.warning("stopping without the broker's acknowledgement of every record: the "
                        "next start re-sends them from the confirmed LSN",
                        extra={"waiting": waiting, "stop_timeout_s": self.s.stop_timeout_s})
        log.info("stopped", extra={"phase": "streaming",
                                   "confirmed": format_lsn(self.position.confirmed_lsn)})
