"""``consumers detect``: a thin CLI: settings -> DetectOptions -> open_detector -> run.
(The glue is hera_kit.service's.)"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from consumers.detect.errors import ConfigError, DetectError, RulesFileError
from consumers.detect.metrics import DetectMetrics
from consumers.detect.service import detect_options, open_detector
from consumers.detect.settings import DetectSettings
from hera_kit import logs
from hera_kit.kafka_settings import kafka_config_option
from hera_kit.service import Health, ServiceEndpoint, fail, settings_or_fail, stop_on_signals

COMMAND = "consumers detect"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@click.command()
@click.option("--bootstrap-servers", help="Kafka HOST:PORT [env HERA_BOOTSTRAP_SERVERS]")
@kafka_config_option
@click.option("--topic-prefix", help="topic prefix of the capture [env HERA_TOPIC_PREFIX]")
@click.option("--tables", help="comma-separated schema.table to watch [env HERA_TABLES]")
@click.option("--dsn", help="database for critical_system_alerts [env HERA_DSN]")
@click.option("--rules", type=click.Path(path_type=Path),
              help="rules file, TOML or YAML [env HERA_RULES]")
@click.option("--state-dir", type=click.Path(path_type=Path),
              help="directory of the state file detect-<prefix>.sqlite [env HERA_STATE_DIR]")
@click.option("--state", type=click.Path(path_type=Path),
              help="the state file itself, instead of --state-dir [env HERA_STATE]")
@click.option("--reset-state", is_flag=True, default=False,
              help="forget the stream the state was built from (offsets, identity, "
                   "memberships) and start over; a flag only, never an environment "
                   "variable (it would reset every start)")
@click.option("--archive-dir", help="archive named in replay commands [env HERA_ARCHIVE_DIR]")
@click.option("--poll-ms", type=int, help="poll timeout in ms [env HERA_POLL_MS]")
@click.option("--kafka-backend", type=click.Choice(["kafka-python", "confluent"]),
              help="Kafka client [env HERA_KAFKA_BACKEND; default kafka-python]")
@click.option("--metrics-port", type=int,
              help="serve /metrics /healthz /readyz on this port [env HERA_METRICS_PORT]")
@click.option("--metrics-host",
              help="address of that endpoint [env HERA_METRICS_HOST; default 127.0.0.1]")
@click.option("--webhook", help="POST every alert to this URL [env HERA_WEBHOOK]")
@click.option("--webhook-secret",
              help="HMAC-SHA256 key of the X-Hera-Signature header [env HERA_WEBHOOK_SECRET]")
@click.option("--webhook-format", type=click.Choice(["json", "slack"]),
              help="json: the alert, signed; slack: {\"text\": ...} [env HERA_WEBHOOK_FORMAT]")
@logs.log_level_option(default=None)
def detect(**options: Any) -> None:
    """Watch the change topics and alert on mass deletions, truncates, orphaned users,
    removed roles and non-compliant smart codes."""
    reset_state = bool(options.pop("reset_state"))
    s = settings_or_fail(COMMAND, DetectSettings, options)
    logs.configure(s.log_level)
    try:
        opts = detect_options(s, reset_state)
    except (RulesFileError, ConfigError) as exc:
        fail(COMMAND, str(exc), 2)
    metrics, health = DetectMetrics(), Health()
    endpoint = (None if s.metrics_port is None
                else ServiceEndpoint(metrics.registry, health, s.metrics_port, s.metrics_host))
    stop = stop_on_signals()
    try:
        runner = open_detector(opts, _utc_now, stop, metrics, health)
        stats = runner.run()
    except ConfigError as exc:
        fail(COMMAND, str(exc), 2)
    except DetectError as exc:
        fail(COMMAND, str(exc), 1)
    finally:
        if endpoint is not None:
            endpoint.close()
    logging.getLogger("hera.detect").info(
        "stopped: %d records, %d transactions, %d alerts, %d dead letters",
        stats.records, stats.transactions, stats.alerts, stats.deadletters)
