"""``capture run`` and ``capture status``: thin click commands over capture.service."""

from __future__ import annotations

import json
import signal
import sys
import threading
from dataclasses import asdict
from types import FrameType
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from capture import logs
from capture.errors import CaptureError, ConfigError
from capture.settings import CaptureSettings


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"capture: {logs.redact(message)}", err=True)
    sys.exit(code)


def _settings(**given: Any) -> CaptureSettings:
    try:
        return CaptureSettings(**{k: v for k, v in given.items() if v is not None and v != ()})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        flag = field.replace("_", "-")
        hint = "" if err["type"] != "missing" else f" (--{flag} or HERA_{field.upper()})"
        raise ConfigError(f"{field}: {err['msg']}{hint}") from None


@click.group()
def main() -> None:
    """Stream every change of the HERA tables from PostgreSQL into Kafka."""


@main.command()
@click.option("--dsn", help="PostgreSQL connection string [HERA_DSN]")
@click.option("--bootstrap-servers", help="Kafka HOST:PORT[,...] [HERA_BOOTSTRAP_SERVERS]")
@click.option("--slot", help="replication slot name [HERA_SLOT, default hera_guard]")
@click.option("--topic-prefix", help="topic prefix [HERA_TOPIC_PREFIX, default hera]")
@click.option("--tables", help="comma-separated schema.table list [HERA_TABLES]")
@click.option("--kafka-backend", type=click.Choice(["kafka-python", "confluent"]),
              help="Kafka client [HERA_KAFKA_BACKEND, default kafka-python]")
@click.option("--plugin", type=click.Choice(["auto", "wal2json", "pgoutput"]),
              help="output plugin of a new slot; an existing slot keeps its own "
                   "[HERA_PLUGIN, default auto: wal2json if exact (>= 2.6), else pgoutput]")
@click.option("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
@click.option("--heartbeat-interval-s", type=float, help="idle heartbeat period, seconds")
@click.option("--new-snapshot", is_flag=True, default=None,
              help="drop the slot and start a new epoch with a fresh snapshot")
@click.option("--log-level", default="INFO", show_default=True)
def run(log_level: str, **options: Any) -> None:
    """Capture continuously until SIGTERM/SIGINT (clean stop: flush, confirm)."""
    from capture.service import CaptureService

    logs.configure(log_level)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        settings = _settings(**options)
        service = CaptureService(settings)
        if settings.metrics_port is not None:
            service.metrics.serve(settings.metrics_port, settings.metrics_host)
        service.run(stop)
    except CaptureError as exc:
        _fail(str(exc), exc.exit_code)


@main.command()
@click.option("--dsn", help="PostgreSQL connection string [HERA_DSN]")
@click.option("--slot", default="hera_guard", show_default=True, envvar="HERA_SLOT")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def status(dsn: str | None, slot: str, as_json: bool) -> None:
    """Slot, confirmed LSN, lag in bytes and seconds, whether capture is active."""
    from rich.console import Console
    from rich.table import Table

    from capture.status import slot_status

    try:
        dsn = dsn or _settings_env_dsn()
        st = slot_status(dsn, slot)
    except CaptureError as exc:
        _fail(str(exc), exc.exit_code)
    if as_json:
        click.echo(json.dumps(asdict(st)))
        return
    table = Table(title=f"capture slot {st.slot}")
    table.add_column("field")
    table.add_column("value")
    for k, v in asdict(st).items():
        table.add_row(k, "-" if v is None else str(v))
    Console().print(table)


def _settings_env_dsn() -> str:
    import os  # the CLI is the one place that may read the environment

    dsn = os.environ.get("HERA_DSN")
    if not dsn:
        raise ConfigError("dsn: missing (--dsn or HERA_DSN)")
    return dsn
