"""Prometheus metrics and readiness of the capture service, served by
hera_kit.service.ServiceEndpoint (/metrics, /healthz, /readyz) when --metrics-port is set."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hera_kit.service import Health


class CaptureHealth(Health):
    """Readiness that is also a metric: ``hera_capture_ready`` is 1 exactly while /readyz
    answers 200 (streaming: snapshot done, broker acknowledging events).

    Besides what the service states (``ready``/``not_ready``), a probe the stream registers
    (``watch``) is asked on every read: a broker that takes connections but acknowledges
    nothing makes capture not ready within seconds, not only when the producer gives up."""

    def __init__(self, gauge: Gauge) -> None:
        super().__init__()
        self._probe: Callable[[], str | None] | None = None
        gauge.set_function(lambda: 1.0 if self.state()[0] else 0.0)

    def watch(self, probe: Callable[[], str | None] | None) -> None:
        """``probe()`` returns why capture is not ready now, or None; None stops watching."""
        self._probe = probe

    def state(self) -> tuple[bool, str]:
        ok, reason = super().state()
        probe = self._probe
        if ok and probe is not None:
            why = probe()
            if why is not None:
                return False, why
        return ok, reason


class CaptureMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_published = Counter(
            "hera_capture_events_published", "Change events handed to the Kafka producer",
            registry=self.registry)
        self.confirmed_lsn = Gauge(
            "hera_capture_confirmed_lsn", "Last LSN confirmed to PostgreSQL (as a number)",
            registry=self.registry)
        self.slot_lag_bytes = Gauge(
            "hera_capture_slot_lag_bytes", "Server WAL end minus confirmed LSN, in bytes",
            registry=self.registry)
        self.restarts = Counter(
            "hera_capture_stream_restarts", "Times the stream was re-established after a fault",
            registry=self.registry)
        self.heartbeats = Counter(
            "hera_capture_heartbeats", "Logical messages emitted to move an idle slot on",
            registry=self.registry)
        self.schema_changes = Counter(
            "hera_capture_schema_changes", "SchemaChangeEvents published (DDL on captured tables)",
            registry=self.registry)
        self.authors_refused = Counter(
            "hera_capture_authors_refused",
            "hera.author messages refused as malformed (their transactions have no author)",
            registry=self.registry)
        self.ready = Gauge(
            "hera_capture_ready",
            "1 while capture streams (snapshot done, broker acknowledging), else 0",
            registry=self.registry)
        self.fatal_errors = Counter(
            "hera_capture_fatal_errors",
            "Errors that stopped capture (event too large, slot lost, bad set-up), by kind",
            ["kind"], registry=self.registry)
        self.health = CaptureHealth(self.ready)
        # Online re-reads (capture/reread.py), by table.
        self.reread_rows = Counter(
            "hera_capture_reread_rows", "Rows published by online re-reads (op r, incremental)",
            ["table"], registry=self.registry)
        self.reread_chunks = Counter(
            "hera_capture_reread_chunks", "Chunks of online re-reads closed by their high "
            "watermark", ["table"], registry=self.registry)
        self.rereads_running = Gauge(
            "hera_capture_rereads_running", "Online re-reads queued or running",
            registry=self.registry)

        self.commit_to_ack = Histogram(
            "hera_capture_commit_to_ack_seconds",
            "PostgreSQL commit -> every event of the transaction acknowledged by the broker",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry)
