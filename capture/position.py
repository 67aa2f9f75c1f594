"""What capture has promised about its slot: the epoch, the LSN confirmed to PostgreSQL, the
markers that record both in the transaction topic, and the in-flight bound under which
records wait for the broker.

One object owns these because they are one promise: an LSN is confirmed only after a marker
for it was acknowledged, and a marker says which epoch, tables and column sets it speaks
for. The service fills it in at set-up (a new epoch or a resumed one); each stream runner
(capture.runner) moves it on; neither reaches into the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

from capture.errors import BrokerError, Stopped
from capture.event import MarkerKind, StreamMarker

if TYPE_CHECKING:
    import threading

    from capture.options import CaptureOptions
    from capture.publish import AckTracker, Producer
    from capture.reread import RereadState
    from capture.slot import TableInfo

Clock = Callable[[], float]
Columns = tuple[tuple[str, str], ...]
ColumnSets = dict[tuple[str, str], Columns]

# How long back-pressure waits for the broker to acknowledge anything before it gives up.
BACKPRESSURE_TIMEOUT_S = 60.0


class StreamPosition:
    """The slot's epoch and confirmed LSN, the markers that record them, the in-flight bound."""

    def __init__(self, options: CaptureOptions, clock: Clock) -> None:
        self.slot = options.slot
        self.max_in_flight = options.max_in_flight
        self.max_in_flight_bytes = options.max_in_flight_bytes
        self.clock = clock
        self.dbname = ""
        self.tables: list[TableInfo] = []
        self.system_identifier: str | None = None
        self.plugin = ""  # the decoder's name, written into every marker
        self.epoch_lsn = 0
        self.confirmed_lsn = 0
        # Column set per captured table as last seen in the stream (from the catalog at start).
        self.known_columns: ColumnSets = {}
        # PostgreSQL's commit time (µs) of the newest transaction at or before the acked LSN
        # (None until one is seen): what PROGRESS markers vouch for, never capture's clock.
        self.reach_ts_us: int | None = None

    def reached(self, commit_ts_us: int) -> None:
        """A commit at or before the acked LSN: the reach's time moves forward only (concurrent
        commits' times and their LSN order may differ by a few microseconds)."""
        if self.reach_ts_us is None or commit_ts_us > self.reach_ts_us:
            self.reach_ts_us = commit_ts_us

    def confirm(self, lsn: int) -> bool:
        """Move the confirmed LSN to ``lsn`` if that is forward; True when it moved."""
        if lsn <= self.confirmed_lsn:
            return False
        self.confirmed_lsn = lsn
        return True

    def marker(self, kind: MarkerKind, lsn: int, columns: ColumnSets | None = None,
               rereads: Sequence[RereadState] = ()) -> StreamMarker:
        """A marker at ``lsn``; a PROGRESS marker carries the reach's server time."""
        known = self.known_columns if columns is None else columns
        return StreamMarker(status=kind, slot=self.slot, db=self.dbname,
                            epoch_lsn=self.epoch_lsn, lsn=lsn, ts_ms=int(self.clock() * 1000),
                            tables=tuple(t.qualified for t in self.tables),
                            system_identifier=self.system_identifier, plugin=self.plugin,
                            columns={f"{s}.{t}": c for (s, t), c in known.items()},
                            rereads=tuple(msgspec.to_builtins(r) for r in rereads) or None,
                            commit_ts_us=self.reach_ts_us if kind is MarkerKind.PROGRESS
                            else None)

    def backpressure(self, producer: Producer, tracker: AckTracker,
                     stop: threading.Event | None = None) -> None:
        """Memory stays bounded whatever the transaction size: past the in-flight limit, wait
        for the broker's acknowledgements before handing the client more records. A stop
        ends the wait (Stopped): a hung broker must not hold SIGTERM for a minute."""
        if (tracker.outstanding < self.max_in_flight
                and tracker.outstanding_bytes < self.max_in_flight_bytes):
            return
        deadline = time.monotonic() + BACKPRESSURE_TIMEOUT_S
        while (tracker.outstanding > self.max_in_flight // 2
               or tracker.outstanding_bytes > self.max_in_flight_bytes // 2):
            producer.poll(0.005)
            tracker.drain()
            if stop is not None and stop.is_set():
                raise Stopped("stopped while waiting for the broker's acknowledgements")
            if time.monotonic() > deadline:
                raise BrokerError("the broker acknowledged nothing for 60 s")
            time.sleep(0.001)


def await_acks(producer: Producer, tracker: AckTracker, timeout_s: float,
               stop: threading.Event | None = None) -> bool:
    """Wait until the broker acknowledged every record ``tracker`` counts; False when
    ``timeout_s`` passed (or ``stop`` was set) first. Raises BrokerError on a failed delivery.

    Polls instead of ``producer.flush``: kafka-python's flush cannot be interrupted, and both
    clients send what is buffered on their own within their linger time."""
    deadline = time.monotonic() + timeout_s
    while True:
        producer.poll(0.005)
        tracker.drain()
        if not tracker.outstanding:
            return True
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return False
        time.sleep(0.002)
