"""The capture service: slot -> snapshot + stream -> Kafka, confirming only what was acked.

One loop owns everything (the replication stream, the producer's delivery reports, the
confirmations), so the order of facts is simple: an event is published; when the broker has
acknowledged every event of a transaction and of all transactions before it, a PROGRESS marker
for that commit is published; when the marker is acknowledged, the LSN is confirmed to
PostgreSQL. A crash anywhere re-sends from the slot (duplicates, same (commit_lsn, position)),
never skips.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from capture.errors import BrokerError, CaptureError, DecodeError, SlotError
from capture.event import (
    MarkerKind,
    Op,
    StreamMarker,
    TableCount,
    TransactionEvent,
    change_event_json,
    encode_key,
    format_lsn,
)
from capture.kafka_admin import ensure_topics
from capture.ledger import last_marker
from capture.metrics import CaptureMetrics
from capture.protocol import Keepalive, ReplicationStream
from capture.publish import AckTracker, EventTooLarge, PendingTxn, Producer, producer_for
from capture.settings import CaptureSettings
from capture.slot import (
    TableInfo,
    check_server,
    check_slot,
    create_slot,
    drop_slot,
    ensure_replica_identity_full,
    slot_info,
    table_info,
)
from capture.snapshot import SESSION_OPTIONS, snapshot_rows
from capture.table_names import check_tables_exist
from capture.topics import table_topic, transaction_topic
from capture.wal2json import (
    HEARTBEAT_PREFIX,
    NUMERIC_AS_STRING,
    WAL2JSON_OPTIONS,
    Begin,
    Commit,
    Message,
    RowChange,
    Truncate,
    decode,
)

log = logging.getLogger("hera.capture")
Clock = Callable[[], float]
_OPS = {"I": Op.CREATE, "U": Op.UPDATE, "D": Op.DELETE}


@dataclass
class _Txn:
    begin: Begin
    pending: PendingTxn
    position: int = 0
    per_table: dict[str, int] = field(default_factory=dict)
    began: bool = False


def _connect(dsn: str, **kw: object) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(dsn, autocommit=True, options=SESSION_OPTIONS, **kw)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaptureError(f"cannot connect to PostgreSQL: {first} (check --dsn)") from exc


class CaptureService:
    def __init__(self, settings: CaptureSettings, clock: Clock = time.time,
                 metrics: CaptureMetrics | None = None,
                 latency_observer: Callable[[float], None] | None = None) -> None:
        self.s = settings
        self.latency_observer = latency_observer
        self.clock = clock
        self.metrics = metrics or CaptureMetrics()
        self.tables: list[TableInfo] = []
        self.dbname = ""
        self.epoch_lsn = 0
        self.confirmed_lsn = 0
        self.numeric_as_string = True  # dropped if the server's wal2json is older than 2.6
        self.ready = threading.Event()  # set once streaming (snapshot done) - tests await it

    # --- set-up --------------------------------------------------------------------------

    def prepare(self) -> tuple[Producer, int]:
        """Preflight, broker, slot (+ snapshot when new). Returns the producer and start LSN."""
        with _connect(self.s.dsn) as conn:
            self.dbname = str((conn.execute("SELECT current_database()").fetchone() or [""])[0])
            check_server(conn)
            check_tables_exist(conn, self.s.tables, self.dbname)
            self.tables = [table_info(conn, t) for t in self.s.tables]
            for t in self.tables:
                if ensure_replica_identity_full(conn, t):
                    log.info("set REPLICA IDENTITY FULL", extra={"table": t.qualified})
            existing = slot_info(conn, self.s.slot)
        self._ensure_topics()  # an unreachable broker stops us before the slot is touched
        if existing is not None and self.s.new_snapshot and not existing.active:
            log.warning("dropping slot for a new snapshot", extra={"slot": self.s.slot})
            with _connect(self.s.dsn) as conn:
                drop_slot(conn, self.s.slot)
            existing = None
        producer = producer_for(self.s)
        try:
            if existing is not None:
                check_slot(existing, self.dbname)
                marker = last_marker(self.s.bootstrap_servers, self.s.topic_prefix,
                                     self.s.slot, self.dbname)
                if marker is not None and marker.status == MarkerKind.SNAPSHOT_START:
                    # The snapshot was interrupted: nothing was confirmed, the export is gone.
                    log.warning("previous snapshot incomplete; starting a new epoch")
                    with _connect(self.s.dsn) as conn:
                        drop_slot(conn, self.s.slot)
                    return producer, self._new_epoch(producer)
                self._check_ours(existing.confirmed_flush_lsn or 0, marker)
                assert marker is not None
                self.epoch_lsn = marker.epoch_lsn
                self.confirmed_lsn = existing.confirmed_flush_lsn or 0
                return producer, self.confirmed_lsn
            return producer, self._new_epoch(producer)
        except BaseException:
            producer.close()
            raise

    def _ensure_topics(self) -> None:
        topics = [transaction_topic(self.s.topic_prefix)] + [
            table_topic(self.s.topic_prefix, t.schema, t.table) for t in self.tables]
        ensure_topics(self.s.bootstrap_servers, topics, self.s.topic_partitions,
                      self.s.topic_replication_factor, max_message_bytes=self.s.max_message_bytes)

    def _check_ours(self, confirmed: int, marker: StreamMarker | None) -> None:
        if marker is None:
            raise SlotError(
                f"slot {self.s.slot} exists but hera-guard has no record of it in "
                f"{transaction_topic(self.s.topic_prefix)}: its history cannot be vouched for; "
                "start a new epoch with capture run --new-snapshot"
            )
        if confirmed > marker.lsn:
            raise SlotError(
                f"slot {self.s.slot} is at {format_lsn(confirmed)}, past the last position "
                f"hera-guard published ({format_lsn(marker.lsn)}): it was advanced or re-created "
                "behind hera-guard's back and changes may be missing; start a new epoch with "
                "capture run --new-snapshot"
            )

    def _new_epoch(self, producer: Producer) -> int:
        repl = _connect(self.s.dsn, replication="database")
        try:
            created = create_slot(repl, self.s.slot)
            self.epoch_lsn = created.consistent_point
            log.info("slot created", extra={"slot": self.s.slot,
                                            "lsn": format_lsn(created.consistent_point)})
            self._publish_snapshot(producer, created.snapshot_name)
        finally:
            repl.close()
        self.confirmed_lsn = self.epoch_lsn
        return self.epoch_lsn

    def _marker(self, kind: MarkerKind, lsn: int) -> StreamMarker:
        return StreamMarker(status=kind, slot=self.s.slot, db=self.dbname,
                            epoch_lsn=self.epoch_lsn, lsn=lsn, ts_ms=int(self.clock() * 1000),
                            tables=tuple(t.qualified for t in self.tables))

    def _publish_snapshot(self, producer: Producer, snapshot_name: str) -> None:
        tracker = AckTracker()
        txn = tracker.open()
        ttopic = transaction_topic(self.s.topic_prefix)
        start = self._marker(MarkerKind.SNAPSHOT_START, self.epoch_lsn).to_json()
        producer.send(ttopic, b"marker", start, tracker.sent(txn, len(start)))
        now_ms = int(self.clock() * 1000)
        position = 0
        for table, row, key in snapshot_rows(self.s.dsn, snapshot_name, self.tables,
                                             self.s.snapshot_batch_rows):
            value = change_event_json(
                before=None, after=row, op=Op.READ, ts_ms=now_ms, name=self.s.topic_prefix,
                db=self.dbname, schema=table.schema, table=table.table, tx_id=None,
                lsn=self.epoch_lsn, commit_ts_us=now_ms * 1000, snapshot="true",
                commit_lsn=self.epoch_lsn, position=position, table_order=None, key=key,
                types=dict(table.columns))
            producer.send(table_topic(self.s.topic_prefix, table.schema, table.table),
                          encode_key(key, table.qualified), value, tracker.sent(txn, len(value)))
            position += 1
            self._backpressure(producer, tracker)
        end = self._marker(MarkerKind.SNAPSHOT_END, self.epoch_lsn).to_json()
        producer.send(ttopic, b"marker", end, tracker.sent(txn, len(end)))
        tracker.close(txn, self.epoch_lsn)
        producer.flush(60)
        tracker.drain()
        if tracker.confirmable() is None:
            raise BrokerError("the broker did not acknowledge the snapshot within 60 s")
        self.metrics.events_published.inc(position)
        log.info("snapshot published", extra={"rows": position,
                                              "lsn": format_lsn(self.epoch_lsn)})

    def _backpressure(self, producer: Producer, tracker: AckTracker) -> None:
        """Memory stays bounded whatever the transaction size: past the in-flight limit, wait
        for the broker's acknowledgements before handing the client more records."""
        if (tracker.outstanding < self.s.max_in_flight
                and tracker.outstanding_bytes < self.s.max_in_flight_bytes):
            return
        deadline = time.monotonic() + 60
        while (tracker.outstanding > self.s.max_in_flight // 2
               or tracker.outstanding_bytes > self.s.max_in_flight_bytes // 2):
            producer.poll(0.005)
            tracker.drain()
            if time.monotonic() > deadline:
                raise BrokerError("the broker acknowledged nothing for 60 s")
            time.sleep(0.001)

    # --- streaming -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Capture until ``stop`` is set. Transient faults (broker down, PostgreSQL restart)
        are retried with backoff; set-up errors raise CaptureError at once."""
        producer, start_lsn = self.prepare()
        backoff = 0.5
        while not stop.is_set():
            try:
                self._stream(producer, start_lsn, stop)
                backoff = 0.5
            except (CaptureError, psycopg.Error) as exc:
                if isinstance(exc, psycopg.errors.UndefinedObject):
                    producer.close()
                    raise SlotError(
                        f"slot {self.s.slot} disappeared while capturing (dropped behind "
                        "hera-guard's back): start a new epoch with capture run --new-snapshot"
                    ) from exc
                if isinstance(exc, DecodeError | SlotError | EventTooLarge):
                    producer.close()
                    raise
                reason = str(exc).splitlines()[0] if str(exc) else repr(exc)
                self.metrics.health.not_ready(f"stream interrupted, retrying: {reason}")
                log.warning("stream interrupted; retrying",
                            extra={"error": reason, "backoff_s": backoff})
                self.metrics.restarts.inc()
                try:
                    producer.close()
                except Exception:
                    log.debug("producer close failed", exc_info=True)
                if stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.s.max_backoff_s)
                fresh = self._reconnect_producer(stop)
                if fresh is None:
                    return
                producer = fresh
                start_lsn = self.confirmed_lsn
        producer.close()

    def _reconnect_producer(self, stop: threading.Event) -> Producer | None:
        backoff = 0.5
        while not stop.is_set():
            try:
                # A broker that lost its data (or a new one) must get our topics back with
                # our partition count before anything is sent.
                self._ensure_topics()
                return producer_for(self.s)
            except BrokerError as exc:
                log.warning("broker unreachable; retrying", extra={"error": str(exc),
                                                                    "backoff_s": backoff})
                stop.wait(backoff)
                backoff = min(backoff * 2, self.s.max_backoff_s)
        return None

    def _stream(self, producer: Producer, start_lsn: int, stop: threading.Event) -> None:
        options = dict(WAL2JSON_OPTIONS)
        options["add-tables"] = ",".join(t.qualified for t in self.tables)
        options["add-msg-prefixes"] = HEARTBEAT_PREFIX
        if self.numeric_as_string:
            options[NUMERIC_AS_STRING] = "1"
        repl = _connect(self.s.dsn, replication="database")
        try:
            stream = ReplicationStream(repl, self.s.slot, start_lsn, options,
                                       lambda: int(self.clock() * 1_000_000))
        except psycopg.Error as exc:
            repl.close()
            if self.numeric_as_string and NUMERIC_AS_STRING in str(exc):
                # wal2json < 2.6 does not know the option and prints NaN/Infinity as null.
                self.numeric_as_string = False
                log.warning("wal2json < 2.6: numeric NaN and Infinity arrive as null; "
                            "upgrade wal2json for exact special values")
                return
            raise
        runner = _StreamRunner(self, producer, stream)
        self.ready.set()
        self.metrics.health.ready()
        log.info("streaming", extra={"slot": self.s.slot, "from": format_lsn(start_lsn)})
        try:
            runner.loop(stop)
        finally:
            stream.close()


class _StreamRunner:
    """The state of one connected stream; thrown away on any fault."""

    def __init__(self, svc: CaptureService, producer: Producer,
                 stream: ReplicationStream) -> None:
        self.svc = svc
        self.s = svc.s
        self.producer = producer
        self.stream = stream
        self.tracker = AckTracker(on_acked=self._acked)
        self.markers = AckTracker()
        self.txn: _Txn | None = None
        self.published = 0  # events handed to the producer, folded into the metric per burst
        self.acked_lsn = svc.confirmed_lsn
        self.marker_lsn = svc.confirmed_lsn  # highest PROGRESS published (maybe not acked)
        self.last_confirm = 0.0
        self.last_activity = time.monotonic()
        self.last_heartbeat = time.monotonic()
        self.wal_end = svc.confirmed_lsn
        self.ttopic = transaction_topic(self.s.topic_prefix)
        self.topics = {(t.schema, t.table): table_topic(self.s.topic_prefix, t.schema, t.table)
                       for t in svc.tables}

    def _acked(self, txn: PendingTxn) -> None:
        if txn.commit_ts_us:
            seconds = max(0.0, self.svc.clock() - txn.commit_ts_us / 1e6)
            self.svc.metrics.commit_to_ack.observe(seconds)
            if self.svc.latency_observer is not None:
                self.svc.latency_observer(seconds)

    def loop(self, stop: threading.Event) -> None:
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
                if isinstance(frame, Keepalive):
                    self.wal_end = max(self.wal_end, frame.wal_end)
                    reply = reply or frame.reply_requested
                    if self.txn is None and self.tracker.idle:
                        # Nothing received is unacknowledged: everything up to the server's
                        # WAL end has been published (or filtered out).
                        self.acked_lsn = max(self.acked_lsn, frame.wal_end)
                else:
                    self.wal_end = max(self.wal_end, frame.end_lsn)
                    self.handle(frame.payload, frame.end_lsn)
            self.producer.poll(0)
            self.settle(force=reply)
            self.maybe_heartbeat()
        self.shutdown()

    def handle(self, payload: bytes, frame_end: int) -> None:
        rec = decode(payload)
        if isinstance(rec, RowChange):
            self.row(rec)
        elif isinstance(rec, Begin):
            self.txn = _Txn(rec, self.tracker.open())
        elif isinstance(rec, Commit):
            self.commit(rec)
        elif isinstance(rec, Truncate):
            self.truncate(rec)
        elif isinstance(rec, Message) and self.txn is None and self.tracker.idle:
            self.acked_lsn = max(self.acked_lsn, rec.lsn)

    def _txn(self) -> _Txn:
        if self.txn is None:
            raise DecodeError("a change arrived outside a transaction (no BEGIN)")
        return self.txn

    def _emit(self, txn: _Txn, op: Op, schema: str, table: str, lsn: int,
              before: dict[str, object] | None, after: dict[str, object] | None,
              key: dict[str, object] | None, types: dict[str, str] | None) -> None:
        if not txn.began:
            txn.began = True
            self._send(self.ttopic, b"txn", TransactionEvent(
                status="BEGIN", id=f"{txn.begin.xid}:{txn.begin.commit_lsn}",
                xid=txn.begin.xid, commit_lsn=txn.begin.commit_lsn,
                ts_ms=txn.begin.ts_us // 1000, ts_us=txn.begin.ts_us).to_json(), txn.pending)
        qualified = f"{schema}.{table}"
        n = txn.per_table.get(qualified, 0) + 1
        txn.per_table[qualified] = n
        b = txn.begin
        value = change_event_json(
            before=before, after=after, op=op, ts_ms=int(self.svc.clock() * 1000),
            name=self.s.topic_prefix, db=self.svc.dbname, schema=schema, table=table,
            tx_id=b.xid, lsn=lsn, commit_ts_us=b.ts_us, snapshot="false",
            commit_lsn=b.commit_lsn, position=txn.position, table_order=n, key=key,
            types=types)
        txn.position += 1
        topic = self.topics.get((schema, table)) or table_topic(self.s.topic_prefix, schema, table)
        self._send(topic, encode_key(key, qualified), value, txn.pending)
        self.published += 1

    def _send(self, topic: str, key: bytes, value: bytes, pending: PendingTxn) -> None:
        self.producer.send(topic, key, value, self.tracker.sent(pending, len(value)))
        self.svc._backpressure(self.producer, self.tracker)

    def row(self, rec: RowChange) -> None:
        self._emit(self._txn(), _OPS[rec.action], rec.schema, rec.table, rec.lsn, rec.before,
                   rec.after, rec.key, rec.types)

    def truncate(self, rec: Truncate) -> None:
        self._emit(self._txn(), Op.TRUNCATE, rec.schema, rec.table, rec.lsn, None, None, None,
                   None)

    def commit(self, rec: Commit) -> None:
        txn = self._txn()
        if txn.began:
            self._send(self.ttopic, b"txn", TransactionEvent(
                status="END", id=f"{rec.xid}:{rec.commit_lsn}", xid=rec.xid,
                commit_lsn=rec.commit_lsn, ts_ms=rec.ts_us // 1000, ts_us=rec.ts_us,
                event_count=txn.position,
                data_collections=tuple(TableCount(data_collection=k, event_count=v)
                                       for k, v in txn.per_table.items())).to_json(),
                txn.pending)
        if txn.began:
            txn.pending.commit_ts_us = rec.ts_us
        self.tracker.close(txn.pending, rec.end_lsn)
        self.txn = None
        self.last_activity = time.monotonic()

    def settle(self, force: bool = False) -> None:
        """Deliveries -> acked prefix -> PROGRESS marker -> confirm to PostgreSQL."""
        if self.published:
            self.svc.metrics.events_published.inc(self.published)
            self.published = 0
        self.tracker.drain()
        acked = self.tracker.confirmable()
        if acked is not None:
            self.acked_lsn = max(self.acked_lsn, acked)
        now = time.monotonic()
        if self.acked_lsn > self.marker_lsn and (
                force or now - self.last_confirm >= self.s.confirm_interval_s):
            m = self.markers.open()
            marker = self.svc._marker(MarkerKind.PROGRESS, self.acked_lsn).to_json()
            self.producer.send(self.ttopic, b"marker", marker, self.markers.sent(m, len(marker)))
            self.markers.close(m, self.acked_lsn)
            self.marker_lsn = self.acked_lsn
            self.last_confirm = now
        self.markers.drain()
        published = self.markers.confirmable()
        if published is not None and published > self.svc.confirmed_lsn:
            self.svc.confirmed_lsn = published
            self.stream.send_status(published)
            self.svc.metrics.confirmed_lsn.set(published)
        elif force:
            self.stream.send_status(self.svc.confirmed_lsn)
        self.svc.metrics.slot_lag_bytes.set(max(0, self.wal_end - self.svc.confirmed_lsn))

    def maybe_heartbeat(self) -> None:
        now = time.monotonic()
        if (now - self.last_heartbeat < self.s.heartbeat_interval_s
                or now - self.last_activity < self.s.heartbeat_interval_s):
            return
        self.last_heartbeat = now
        # A quiet captured table must not pin WAL: a message through the slot moves it on.
        try:
            with psycopg.connect(self.s.dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_logical_emit_message(false, %s, 'heartbeat')",
                             (HEARTBEAT_PREFIX,))
        except psycopg.Error as exc:
            log.warning("heartbeat failed", extra={"error": str(exc).splitlines()[0]})

    def shutdown(self) -> None:
        """Clean stop: wait for the broker's acks, publish the final marker, confirm."""
        self.producer.flush(30)
        deadline = time.monotonic() + 30
        self.settle(force=True)
        while self.markers.outstanding and time.monotonic() < deadline:
            self.producer.flush(1)
            self.settle(force=True)
        log.info("stopped", extra={"confirmed": format_lsn(self.svc.confirmed_lsn)})
