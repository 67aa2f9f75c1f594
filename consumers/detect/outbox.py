"""Alerts out of the state file's outbox into every sink, retried with back-off.

Each sink's success is recorded in the state file as it happens, so an alert reaches each
sink once: a sink that is down (webhook endpoint, PostgreSQL) is retried with exponential
back-off (1 s doubling to 60 s) without blocking detection, the others are not re-sent to.
The row is marked delivered when every sink has it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumers.detect.errors import SinkError
from consumers.detect.metrics import DetectMetrics
from consumers.detect.sinks import AlertSink
from consumers.detect.state import StateStore

log = logging.getLogger("hera.detect")

_FIRST_DELAY_S = 1.0
_MAX_DELAY_S = 60.0


@dataclass
class _Backoff:
    delay_s: float = 0.0
    retry_at: float = 0.0


class Outbox:
    def __init__(self, store: StateStore, sinks: list[AlertSink], metrics: DetectMetrics,
                 now_iso: Callable[[], str],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.sinks = sinks
        self.metrics = metrics
        self._now_iso = now_iso
        self._monotonic = monotonic
        self._backoff = {s.name: _Backoff() for s in sinks}

    def deliver(self) -> int:
        """Deliver what is due; the number of alerts still pending afterwards."""
        pending = self.store.outbox()
        done: list[str] = []
        now = self._monotonic()
        for alert in pending:
            key = str(alert.id)
            took = self.store.sinks_done(key)
            for sink in self.sinks:
                if sink.name in took:
                    continue
                b = self._backoff[sink.name]
                if now < b.retry_at:
                    continue
                try:
                    sink.deliver(alert)
                except SinkError as exc:
                    b.delay_s = min(_MAX_DELAY_S, max(_FIRST_DELAY_S, b.delay_s * 2))
                    b.retry_at = now + b.delay_s
                    self.metrics.delivery_failures.labels(sink.name).inc()
                    log.error("alert %s not delivered to %s (retry in %.0f s): %s", key,
                              sink.name, b.delay_s, exc)
                    continue
                b.delay_s, b.retry_at = 0.0, 0.0
                self.store.delivered_to(key, sink.name)
                took.add(sink.name)
            if all(s.name in took for s in self.sinks):
                done.append(key)
        if done:
            self.store.delivered(done, self._now_iso())
        left = len(pending) - len(done)
        self.metrics.outbox_pending.set(left)
        return left
