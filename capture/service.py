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

import msgspec
import psycopg

from capture.decoding import PLUGINS, Decoder, TableNames, choose_plugin, make_decoder
from capture.decoding.catalog import SideCatalog
from capture.decoding.names import warn_without_schema_log
from capture.encoding import CAPTURE_OPTIONS
from capture.errors import BrokerError, CaptureError, DecodeError, SlotError, Stopped
from capture.event import MarkerKind, StreamMarker, format_lsn
from capture.kafka_admin import ensure_topics
from capture.ledger import last_marker
from capture.metrics import CaptureMetrics
from capture.options import CaptureOptions
from capture.position import Clock, StreamPosition
from capture.protocol import ReplicationStream
from capture.publish import EventTooLarge, Producer, producer_for
from capture.reread import Rereads, RereadState, TableShape
from capture.runner import StreamContext, StreamRunner
from capture.slot import (
    TableInfo,
    check_plugin_allowed,
    check_server,
    check_slot,
    create_slot,
    drop_slot,
    ensure_replica_identity_full,
    slot_info,
    table_info,
)
from capture.snapshot_publish import publish_snapshot
from capture.table_names import check_tables_exist
from capture.topic_watch import TopicWatch, WatchedProducer
from capture.topics import table_topic, transaction_topic
from hera_kit.text import first_line

log = logging.getLogger("hera.capture")
INITIAL_BACKOFF_S = 0.5
# What capture is doing, for a stop (SIGTERM). In these phases nothing is under way that a
# stop at any instant could break (read-only checks, idempotent topic creation, waiting to
# retry): the CLI may end the process at once. In the others (snapshot, streaming) capture
# stops itself at the next record, within seconds.
ABORTABLE_PHASES = frozenset({"starting", "back-off"})


def _connect(dsn: str, **kw: object) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(dsn, autocommit=True, options=CAPTURE_OPTIONS, **kw)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        first = first_line(exc)
        raise CaptureError(f"cannot connect to PostgreSQL: {first} (check --dsn)") from exc


class Phase:
    """What capture is doing, for a stop (SIGTERM): starting -> snapshot (a new epoch only) ->
    streaming <-> back-off. Changed under ``lock``, so whoever ends the process in an
    abortable phase (the CLI, on SIGTERM) holds it and the service cannot move on into the
    slot meanwhile. Made before the service is opened: a stop while opening sees "starting"."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.name = "starting"

    def enter(self, name: str) -> None:
        with self.lock:
            self.name = name


class CaptureService:
    """An opened capture (``open_capture``): its checks passed, its producer made, its start
    decided; ``run`` snapshots (a new epoch only) and streams. The constructor does no I/O."""

    def __init__(self, options: CaptureOptions, clock: Clock = time.time,
                 metrics: CaptureMetrics | None = None,
                 latency_observer: Callable[[float], None] | None = None,
                 on_streaming: Callable[[], None] | None = None,
                 phase: Phase | None = None, stop: threading.Event | None = None) -> None:
        self.s = options
        self.stop = stop or threading.Event()  # what run() stops on unless given another
        self.latency_observer = latency_observer
        # Called once each stream starts (the process-wide GC tuning of the CLI and the
        # benchmarks, capture.gc_tuning.tune_gc): library code leaves the process alone.
        self.on_streaming = on_streaming
        self.clock = clock
        self.metrics = metrics or CaptureMetrics()
        # The epoch, the confirmed LSN, the markers: filled in by open(), moved on by
        # each stream's runner.
        self.position = StreamPosition(options, clock)
        self.catalog = SideCatalog(options.dsn)
        self.decoder: Decoder | None = None  # chosen in open(): the slot's plugin
        self.names = TableNames(())  # the captured tables by relation (renames followed)
        self.ready = threading.Event()  # set once streaming (snapshot done) - tests await it
        self._phase = phase or Phase()
        self.streams_opened = 0
        self.rereads = Rereads(options.dsn, options.reread_chunk_rows, self._shape, clock,
                               on_progress=self._reread_progress)
        # What open() decided: the producer, and where the stream starts (None: a new epoch
        # first, after dropping the slot when ``_drop_slot``).
        self._producer: Producer | None = None
        self._start_lsn: int | None = None
        self._drop_slot = False

    def _enter(self, phase: str) -> None:
        self._phase.enter(phase)

    @property
    def phase(self) -> str:
        return self._phase.name

    @property
    def phase_lock(self) -> threading.Lock:
        return self._phase.lock

    @property
    def epoch_lsn(self) -> int:
        return self.position.epoch_lsn

    @property
    def confirmed_lsn(self) -> int:
        return self.position.confirmed_lsn

    @property
    def tables(self) -> list[TableInfo]:
        return self.position.tables

    # --- set-up --------------------------------------------------------------------------

    def open(self) -> None:
        """The I/O of the start, nothing of which changes the slot (phase "starting"):
        preflight, output plugin and its publication, topics (an unreachable broker stops us
        here), the producer, and whether the slot is ours and where it resumes. CaptureError
        (one line) when capture cannot start; what it opened is closed again."""
        try:
            self._open()
        except BaseException:
            self._close_opened()
            raise

    def _close_opened(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self._watch is not None:
            self._watch.stop()
        self.catalog.close()

    def _open(self) -> None:
        pos = self.position
        with _connect(self.s.dsn) as conn:
            pos.dbname = str((conn.execute("SELECT current_database()").fetchone() or [""])[0])
            check_server(conn)
            check_tables_exist(conn, self.s.tables, pos.dbname)
            pos.system_identifier = _system_identifier(conn)
            pos.tables = [table_info(conn, t) for t in self.s.tables]
            pos.known_columns = {(t.schema, t.table): t.columns for t in pos.tables}
            for t in pos.tables:
                if ensure_replica_identity_full(conn, t):
                    log.info("set REPLICA IDENTITY FULL", extra={"table": t.qualified})
            existing = slot_info(conn, self.s.slot)
            plugin, why = choose_plugin(self.s.plugin, None if existing is None else
                                        existing.plugin, self.s.new_snapshot, conn, self.s.slot)
            check_plugin_allowed(conn, plugin)
            warn_without_schema_log(conn, plugin, log)
            self.names = TableNames(pos.tables)
            self.decoder = make_decoder(plugin, pos.tables, self.catalog, self.s.slot,
                                        self.names)
            pos.plugin = self.decoder.caps.name
            log.info("output plugin chosen", extra={"plugin": plugin, "why": why})
            # Before a slot is created: pgoutput reads its publication as of each change.
            self.decoder.prepare(conn, pos.tables, self.s.slot)
        self._ensure_topics()  # an unreachable broker stops us before the slot is touched
        if existing is not None and self.s.new_snapshot and not existing.active:
            self._drop_slot = True  # by run(), in the snapshot phase
            existing = None
        self._producer = self._watched(producer_for(self.s))
        if existing is None:
            return  # a new epoch: run() creates the slot and publishes the snapshot
        check_slot(existing, pos.dbname, PLUGINS)
        marker = last_marker(self.s.kafka, self.s.topic_prefix, self.s.slot, pos.dbname)
        if marker is not None and marker.status == MarkerKind.SNAPSHOT_START:
            # The snapshot was interrupted: nothing was confirmed, the export is gone.
            log.warning("previous snapshot incomplete; starting a new epoch")
            self._drop_slot = True
            return
        self._check_ours(existing.confirmed_flush_lsn or 0, marker)
        assert marker is not None
        pos.epoch_lsn = marker.epoch_lsn
        pos.confirmed_lsn = existing.confirmed_flush_lsn or 0
        self._resume_columns(marker)
        self._reread_added(marker)
        self._start_lsn = pos.confirmed_lsn

    def _start(self, stop: threading.Event) -> tuple[Producer, int]:
        """What open() decided, done: the producer and the LSN the stream starts from, after
        a new epoch (slot dropped when asked, created, snapshot published) when there is no
        slot to resume. Raises Stopped when ``stop`` is set before the slot is touched or
        during the snapshot (the next start then begins a new epoch)."""
        producer = self._producer
        if producer is None:
            raise CaptureError("capture run before open (use capture.service.open_capture)")
        self._producer = None  # the caller's from here on
        if self._start_lsn is not None:
            return producer, self._start_lsn
        try:
            self._enter_snapshot(stop)
            if self._drop_slot:
                log.warning("dropping slot for a new snapshot", extra={"slot": self.s.slot})
                with _connect(self.s.dsn) as conn:
                    drop_slot(conn, self.s.slot)
            return producer, self._new_epoch(producer, stop)
        except Stopped:
            producer.close(0)  # an abandoned snapshot: nothing buffered is worth sending
            raise
        except BaseException:
            producer.close()
            raise

    def _enter_snapshot(self, stop: threading.Event) -> None:
        """From here on the slot changes: a stop is honoured by the service, not by ending
        the process, and one asked for already is honoured now, before the slot is touched."""
        self._enter("snapshot")
        if stop.is_set():
            raise Stopped("stopped while starting, before the slot was touched")

    def _ensure_topics(self) -> list[str]:
        """Our topics with our settings (a topic with another partition count is refused);
        the watch then holds them as they are. Returns the topics it created."""
        topics = [transaction_topic(self.s.topic_prefix)] + [
            table_topic(self.s.topic_prefix, t.schema, t.table) for t in self.position.tables]
        created = ensure_topics(self.s.kafka, topics, self.s.topic_partitions,
                                self.s.topic_replication_factor,
                                max_message_bytes=self.s.max_message_bytes,
                                check_partitions=True)
        if self._watch is None:
            self._watch = TopicWatch(self.s.kafka, topics)
        self._watch.reset()
        return created

    _watch: TopicWatch | None = None

    def _watched(self, producer: Producer) -> Producer:
        assert self._watch is not None  # _ensure_topics ran
        return WatchedProducer(producer, self._watch)

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

    def _new_epoch(self, producer: Producer, stop: threading.Event) -> int:
        repl = _connect(self.s.dsn, replication="database")
        try:
            created = create_slot(repl, self.s.slot, self.dec.caps.slot_plugin)
            self.position.epoch_lsn = created.consistent_point
            log.info("slot created", extra={"slot": self.s.slot, "plugin": self.dec.caps.name,
                                            "lsn": format_lsn(created.consistent_point)})
            rows = publish_snapshot(producer, self.position, self.s, self.clock,
                                    created.snapshot_name, stop)
            self.metrics.events_published.inc(rows)
        finally:
            repl.close()
        self.position.confirmed_lsn = self.position.epoch_lsn
        return self.position.epoch_lsn

    def _resume_columns(self, newest: StreamMarker) -> None:
        """The column sets as of the confirmed LSN, where the stream resumes: PostgreSQL
        re-sends from there, and a DDL committed since must not look unrecorded."""
        pos = self.position
        marker: StreamMarker | None = newest
        if newest.lsn > pos.confirmed_lsn or newest.columns is None:
            marker = last_marker(self.s.kafka, self.s.topic_prefix, self.s.slot,
                                 pos.dbname, at_most_lsn=pos.confirmed_lsn)
        if marker is None or marker.columns is None:
            return  # markers of an older capture: today's catalog is all there is
        if marker.rereads:
            self.rereads.restore([msgspec.convert(r, RereadState) for r in marker.rereads])
        for qualified, columns in marker.columns.items():
            schema, _, table = qualified.partition(".")
            if (schema, table) in pos.known_columns:
                pos.known_columns[(schema, table)] = tuple(columns)

    def _reread_added(self, newest: StreamMarker) -> None:
        """A table newly named in --tables for this slot: re-read online (no new epoch);
        its changes stream from now on. A table no longer named keeps its history."""
        before = set(newest.tables)
        if not before:
            return  # markers of an older capture: nothing to compare with
        for t in self.position.tables:
            if t.qualified not in before and not any(
                    s.table == t.qualified for s in self.rereads.states):
                self.rereads.request(t.qualified, "added to --tables",
                                     self.position.confirmed_lsn)

    def _reread_progress(self, state: RereadState, rows: int) -> None:
        self.metrics.reread_rows.labels(table=state.table).inc(rows)
        self.metrics.reread_chunks.labels(table=state.table).inc()
        self.metrics.rereads_running.set(sum(not s.finished for s in self.rereads.states))

    def _shape(self, qualified: str) -> TableShape:
        """A table's columns and key now (a re-read reads them; PreflightError without key)."""
        with _connect(self.s.dsn) as conn:
            info = table_info(conn, qualified)
        return TableShape(info.schema, info.table, info.columns, info.primary_key)

    @property
    def dec(self) -> Decoder:
        if self.decoder is None:
            raise CaptureError("capture used before open()")
        return self.decoder

    # --- streaming -----------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Capture until ``stop`` (default: the one given to open_capture) is set. Transient
        faults (broker down, PostgreSQL restart) are retried with backoff; errors of the
        snapshot or the slot raise CaptureError at once."""
        stop = stop or self.stop
        try:
            self._run(stop)
        finally:
            if self._watch is not None:
                self._watch.stop()

    def _run(self, stop: threading.Event) -> None:
        try:
            producer, start_lsn = self._start(stop)
        except Stopped as exc:
            log.warning(str(exc))
            log.info("stopped", extra={"phase": self.phase})
            self.catalog.close()
            return
        assert self._watch is not None
        self._watch.start()
        backoff = INITIAL_BACKOFF_S
        while not stop.is_set():
            opened = self.streams_opened
            try:
                self._stream(producer, start_lsn, stop)
                backoff = INITIAL_BACKOFF_S
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
                if self.streams_opened > opened:
                    # It streamed since the last fault: a new fault starts from the shortest
                    # wait again, or a few old faults would make every later one wait 30 s.
                    backoff = INITIAL_BACKOFF_S
                self._enter("back-off")
                reason = first_line(exc)
                self.metrics.health.not_ready(f"stream interrupted, retrying: {reason}")
                log.warning("stream interrupted; retrying",
                            extra={"error": reason, "backoff_s": backoff})
                self.metrics.restarts.inc()
                try:
                    producer.close()
                except Exception:
                    log.debug("producer close failed", exc_info=True)
                if stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.s.max_backoff_s)
                fresh = self._reconnect_producer(stop)
                if fresh is None:
                    break
                producer = fresh
                start_lsn = self.position.confirmed_lsn
        else:
            # The stream ended on the stop and waited for the broker (bounded): what it did
            # not acknowledge is not worth waiting for again.
            producer.close(0.5)
            self.catalog.close()
            return
        log.info("stopped", extra={"phase": "back-off"})
        self.catalog.close()

    def _reconnect_producer(self, stop: threading.Event) -> Producer | None:
        backoff = 0.5
        while not stop.is_set():
            try:
                # A broker that lost its data (or a new one) must get our topics back with
                # our partition count before anything is sent.
                created = self._ensure_topics()
                if created:
                    log.warning("re-created missing topics with capture's settings",
                                extra={"topics": created,
                                       "partitions": self.s.topic_partitions})
                return self._watched(producer_for(self.s))
            except BrokerError as exc:
                log.warning("broker unreachable; retrying", extra={"error": str(exc),
                                                                    "backoff_s": backoff})
                stop.wait(backoff)
                backoff = min(backoff * 2, self.s.max_backoff_s)
        return None

    def _stream(self, producer: Producer, start_lsn: int, stop: threading.Event) -> None:
        repl = _connect(self.s.dsn, replication="database")
        try:
            stream = ReplicationStream(repl, self.s.slot, start_lsn, self.dec.start_options(),
                                       lambda: int(self.clock() * 1_000_000))
        except psycopg.Error as exc:
            repl.close()
            if self.dec.adapt(str(exc)):
                log.warning(self.dec.caps.exactness_note)
                return
            raise
        self.streams_opened += 1
        self._enter("streaming")
        runner = StreamRunner(StreamContext(
            options=self.s, decoder=self.dec, metrics=self.metrics, clock=self.clock,
            position=self.position, rereads=self.rereads,
            latency_observer=self.latency_observer, on_streaming=self.on_streaming,
            names=self.names), producer, stream)
        self.ready.set()
        self.metrics.health.ready()
        log.info("streaming", extra={"slot": self.s.slot, "plugin": self.dec.caps.name,
                                     "from": format_lsn(start_lsn)})
        try:
            runner.loop(stop)
        finally:
            # A new stream resumes from the confirmed LSN: compare its changes with the column
            # sets of that position, not with those of what this one decoded beyond it.
            self.position.known_columns = dict(runner.columns_at(self.position.confirmed_lsn))
            self.rereads.restore(runner.rereads_at(self.position.confirmed_lsn))
            self.rereads.close()
            stream.close()
            self.catalog.close()



def open_capture(options: CaptureOptions, clock: Clock = time.time,
                 stop: threading.Event | None = None, *, metrics: CaptureMetrics | None = None,
                 phase: Phase | None = None,
                 latency_observer: Callable[[float], None] | None = None,
                 on_streaming: Callable[[], None] | None = None) -> CaptureService:
    """Everything capture needs, opened and checked (``CaptureService.open``); CaptureError
    (one line) when it cannot start, with nothing left open. The returned service's
    ``run()`` captures until ``stop`` is set (the CLI's: SIGTERM/SIGINT)."""
    service = CaptureService(options, clock, metrics, latency_observer, on_streaming, phase,
                             stop)
    service.open()
    return service

def _system_identifier(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
    """The cluster's identity for the markers (pg_control_system() may be restricted)."""
    try:
        row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        log.warning("pg_control_system() not allowed for this role: markers carry no "
                    "system_identifier (GRANT EXECUTE ON FUNCTION pg_control_system() TO it)")
        return None
    return None if row is None else str(row[0])
