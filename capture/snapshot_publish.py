"""Publishing a new epoch's snapshot: SNAPSHOT_START (acknowledged before any row), every
existing row as an ``op: r`` event (capture.snapshot reads them), SNAPSHOT_END. The markers
make an interrupted snapshot known to the next start, which then begins a new epoch."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from capture.errors import BrokerError, Stopped
from capture.event import MarkerKind, Op, change_event_json, encode_key, format_lsn
from capture.position import await_acks
from capture.publish import AckTracker
from capture.snapshot import server_time_us, snapshot_definitions, snapshot_rows
from capture.topics import table_topic, transaction_topic

if TYPE_CHECKING:
    import threading

    from capture.options import CaptureOptions
    from capture.position import Clock, StreamPosition
    from capture.publish import Producer

log = logging.getLogger("hera.capture")
SNAPSHOT_ACK_TIMEOUT_S = 60.0


def publish_snapshot(producer: Producer, pos: StreamPosition, options: CaptureOptions,
                     clock: Clock, snapshot_name: str, stop: threading.Event) -> int:
    """SNAPSHOT_START (acknowledged before any row), every row as ``op: r``, SNAPSHOT_END.
    A stop ends it at the next row (Stopped): the epoch stays without SNAPSHOT_END, which
    makes the next start drop the slot and begin a new epoch, as after SIGKILL. Returns the
    number of rows."""
    tracker = AckTracker()
    txn = tracker.open()
    ttopic = transaction_topic(options.topic_prefix)
    definitions = snapshot_definitions(options.dsn, snapshot_name, pos.tables)
    start = pos.marker(MarkerKind.SNAPSHOT_START, pos.epoch_lsn).model_copy(
        update={"definitions": definitions,
                "commit_ts_us": server_time_us(options.dsn)}).to_json()
    producer.send(ttopic, b"marker", start, tracker.sent(txn, len(start)))
    # The start marker on record first: a stop or a crash from here on is known to the
    # next start as an incomplete snapshot (a new epoch), never as a slot of unknown origin.
    if not await_acks(producer, tracker, SNAPSHOT_ACK_TIMEOUT_S, stop):
        if stop.is_set():
            raise Stopped(_stopped(pos, 0))
        raise BrokerError("the broker did not acknowledge the snapshot's start within 60 s")
    log.info("snapshot started", extra={"lsn": format_lsn(pos.epoch_lsn)})
    now_ms = int(clock() * 1000)
    position = 0
    try:
        for table, row, key in snapshot_rows(options.dsn, snapshot_name, pos.tables,
                                             options.snapshot_batch_rows):
            if stop.is_set():
                raise Stopped
            value = change_event_json(
                before=None, after=row, op=Op.READ, ts_ms=now_ms, name=options.topic_prefix,
                db=pos.dbname, schema=table.schema, table=table.table, tx_id=None,
                lsn=pos.epoch_lsn, commit_ts_us=now_ms * 1000, snapshot="true",
                commit_lsn=pos.epoch_lsn, position=position, table_order=None, key=key,
                types=dict(table.columns))
            producer.send(table_topic(options.topic_prefix, table.schema, table.table),
                          encode_key(key, table.qualified), value,
                          tracker.sent(txn, len(value)))
            position += 1
            pos.backpressure(producer, tracker, stop)
        end = pos.marker(MarkerKind.SNAPSHOT_END, pos.epoch_lsn).to_json()
        producer.send(ttopic, b"marker", end, tracker.sent(txn, len(end)))
        tracker.close(txn, pos.epoch_lsn)
        acked = await_acks(producer, tracker, SNAPSHOT_ACK_TIMEOUT_S, stop)
        if not acked and stop.is_set():
            raise Stopped
    except Stopped:
        raise Stopped(_stopped(pos, position)) from None
    if tracker.confirmable() is None:
        raise BrokerError("the broker did not acknowledge the snapshot within 60 s")
    log.info("snapshot published", extra={"rows": position,
                                          "lsn": format_lsn(pos.epoch_lsn)})
    return position


def _stopped(pos: StreamPosition, rows: int) -> str:
    return (f"stopped during the snapshot after {rows} rows: the epoch at "
            f"{format_lsn(pos.epoch_lsn)} stays incomplete (no SNAPSHOT_END) and "
            "the next start begins a new epoch with a new snapshot")
