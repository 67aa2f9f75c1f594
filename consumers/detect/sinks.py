"""Where alerts go: the log, the Kafka alerts topic, PostgreSQL's critical_system_alerts.

Delivery is at least once (the outbox in the state file is re-delivered after a crash) and
every alert carries a deterministic id: PostgreSQL drops a re-delivered alert by its primary
key; Kafka readers can drop it by the record key.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb

from consumers.detect.alerts import Alert, redact_dsn
from consumers.detect.errors import AlertsTableMissing, SinkError

log = logging.getLogger("hera.detect")

_SEND_TIMEOUT_S = 30.0


class AlertSink(Protocol):
    name: str

    def deliver(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


class LogSink:
    name = "log"

    def deliver(self, alert: Alert) -> None:
        level = logging.WARNING if alert.severity in ("INFO", "WARNING") else logging.ERROR
        log.log(level, "%s %s: %s | undo: %s", alert.severity, alert.rule, alert.message,
                alert.replay_command)

    def close(self) -> None:
        pass


class KafkaProducerLike(Protocol):
    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...


class KafkaAlertSink:
    name = "kafka"

    def __init__(self, producer: KafkaProducerLike, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    def deliver(self, alert: Alert) -> None:
        try:
            self._producer.send(self.topic, key=str(alert.id).encode(),
                                value=alert.to_json()).get(timeout=_SEND_TIMEOUT_S)
        except Exception as exc:
            raise SinkError(f"Kafka did not take the alert on {self.topic}: {exc}") from exc

    def close(self) -> None:
        pass


_INSERT = """
INSERT INTO critical_system_alerts (id, alert_type, severity, message, metadata, created_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""


class PostgresAlertSink:
    """Rows of the plan's ``critical_system_alerts`` (created by ``guard install``)."""

    name = "postgres"

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise SinkError(f"cannot connect to {redact_dsn(self._dsn)} for alerts: "
                            f"{str(exc).strip()}") from exc
        row = conn.execute("SELECT to_regclass('critical_system_alerts')").fetchone()
        if row is None or row[0] is None:
            conn.close()
            raise AlertsTableMissing(
                f"table critical_system_alerts does not exist in {redact_dsn(self._dsn)}: "
                "run `guard install --dsn ...` on that database first")
        self._conn = conn
        return conn

    def deliver(self, alert: Alert) -> None:
        conn = self._connect()
        try:
            conn.execute(_INSERT, (alert.id, alert.rule.value, alert.severity.value,
                                   alert.message, Jsonb(alert.model_dump(mode="json")),
                                   alert.detected_at))
        except psycopg.OperationalError as exc:
            conn.close()  # reconnect on the next delivery
            raise SinkError(f"PostgreSQL did not take the alert: {str(exc).strip()}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
