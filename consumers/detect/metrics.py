"""Prometheus metrics of ``consumers detect`` (on /metrics with ``--metrics-port``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class DetectMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.records = Counter("hera_detect_records_consumed",
                               "Kafka records read by the detector", registry=r)
        self.transactions = Counter("hera_detect_transactions_evaluated",
                                    "Complete transactions judged by the rules", registry=r)
        self.lag_records = Gauge("hera_detect_consumer_lag_records",
                                 "Records in the partition not yet read (high watermark - "
                                 "next offset)", ["topic", "partition"], registry=r)
        self.lag_seconds = Gauge("hera_detect_consumer_lag_seconds",
                                 "Now minus the commit time of the last transaction evaluated,"
                                 " while records are waiting (0 when caught up)", registry=r)
        self.committed_offset = Gauge("hera_detect_committed_offset",
                                      "Next offset stored in the state file", ["topic",
                                                                               "partition"],
                                      registry=r)
        self.batches = Counter("hera_detect_batches_committed",
                               "State-file commits (one per poll batch)", registry=r)
        self.dead_letters = Counter("hera_detect_dead_letters",
                                    "Records sent to <prefix>.deadletter", registry=r)
        self.alerts = Counter("hera_detect_alerts_raised", "Alerts raised",
                              ["type", "severity"], registry=r)
        self.identity_failed = Counter("hera_detect_identity_checks_failed",
                                       "Checks that found another stream than the state's",
                                       registry=r)
        self.outbox_pending = Gauge("hera_detect_outbox_pending",
                                    "Alerts committed but not yet taken by every sink",
                                    registry=r)
        self.delivery_failures = Counter("hera_detect_delivery_failures",
                                         "Failed alert deliveries (retried with back-off)",
                                         ["sink"], registry=r)
        self.broker_up = Gauge("hera_detect_broker_up",
                               "1 while the broker answers the detector's checks", registry=r)
