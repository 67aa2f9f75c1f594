"""``capture run`` and ``capture status``: thin click commands over capture.service.

The CLI glue (settings errors -> one line, signals, exit codes) is hera_kit.service's, the
same for every long-running service.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from capture.errors import CaptureError
from capture.settings import CaptureSettings, StatusSettings
from hera_kit import logs
from hera_kit.kafka_settings import kafka_config_option
from hera_kit.service import ServiceEndpoint, exit_now, fail, settings_or_fail, stop_on_signals

if TYPE_CHECKING:
    from capture.service import Phase

COMMAND = "capture"
log = logging.getLogger("hera.capture")
# After the clean stop's own bound (stop_timeout_s): time for it to finish before the
# process is ended regardless.
STOP_MARGIN_S = 2.0


@click.group()
def main() -> None:
    """Stream every change of the HERA tables from PostgreSQL into Kafka."""


@main.command()
@click.option("--dsn", help="PostgreSQL connection string [HERA_DSN]")
@click.option("--bootstrap-servers", help="Kafka HOST:PORT[,...] [HERA_BOOTSTRAP_SERVERS]")
@kafka_config_option
@click.option("--slot", help="replication slot name [HERA_SLOT, default hera_guard]")
@click.option("--topic-prefix", help="topic prefix [HERA_TOPIC_PREFIX, default hera]")
@click.option("--tables", help="comma-separated schema.table list [HERA_TABLES]")
@click.option("--kafka-backend", type=click.Choice(["kafka-python", "confluent"]),
              help="Kafka client [HERA_KAFKA_BACKEND, default kafka-python]")
@click.option("--plugin", type=click.Choice(["auto", "wal2json", "pgoutput"]),
              help="output plugin of a new slot; an existing slot keeps its own "
                   "[HERA_PLUGIN, default auto: wal2json if exact (>= 2.6), else pgoutput]")
@click.option("--metrics-port", type=int,
              help="serve /metrics, /healthz and /readyz on this port [HERA_METRICS_PORT]")
@click.option("--metrics-host",
              help="address of that endpoint [HERA_METRICS_HOST, default 127.0.0.1]")
@click.option("--heartbeat-interval-s", type=float, help="idle heartbeat period, seconds")
@click.option("--max-message-bytes", type=int,
              help="largest event (key + value) capture publishes: the topics' "
                   "max.message.bytes and the producers' request size; an event above it "
                   "stops capture [HERA_MAX_MESSAGE_BYTES, default 16777216 = 16 MiB]")
@click.option("--compression", type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]),
              help="producer compression; kafka-python readers need lz4 (installed with "
                   "hera-guard) or, for zstd/snappy, another package; gzip needs none "
                   "[HERA_COMPRESSION, default lz4]")
@click.option("--reread-chunk-rows", type=int,
              help="rows per primary-key chunk of an online re-read (capture holds one "
                   "chunk) [HERA_REREAD_CHUNK_ROWS, default 500]")
@click.option("--new-snapshot", is_flag=True, default=None,
              help="drop the slot and start a new epoch with a fresh snapshot")
@logs.log_level_option()
def run(log_level: str, **options: Any) -> None:
    """Capture continuously until SIGTERM/SIGINT (clean stop: flush, confirm)."""
    from capture.gc_tuning import tune_gc
    from capture.metrics import CaptureMetrics
    from capture.options import capture_options
    from capture.service import Phase, open_capture
    from capture.slot_metrics import SlotCollector

    logs.configure(log_level)
    settings = settings_or_fail(COMMAND, CaptureSettings, options)
    opts = capture_options(settings)
    metrics, phase = CaptureMetrics(), Phase()
    stop = stop_on_signals(on_stop=lambda: _end_when_stuck(
        phase, settings.stop_timeout_s + STOP_MARGIN_S))
    endpoint: ServiceEndpoint | None = None
    try:
        if settings.metrics_port is not None:
            # the slot's cost to the database (lag seconds, WAL retained vs the server's max)
            metrics.registry.register(
                SlotCollector(settings.dsn, settings.slot, settings.status_interval_s))
            try:
                endpoint = ServiceEndpoint(metrics.registry, metrics.health,
                                           settings.metrics_port, settings.metrics_host)
            except OSError as exc:
                fail(COMMAND, f"cannot serve metrics on {settings.metrics_host}:"
                              f"{settings.metrics_port} ({exc.strerror}): choose another "
                              "--metrics-port", 2)
        service = open_capture(opts, time.time, stop, metrics=metrics, phase=phase,
                               on_streaming=tune_gc)
        service.run()
        metrics.health.not_ready("stopped")
    except CaptureError as exc:
        metrics.health.not_ready(str(exc))
        metrics.fatal_errors.labels(kind=type(exc).__name__).inc()
        fail(COMMAND, str(exc), exc.exit_code)
    finally:
        if endpoint is not None:
            endpoint.close()


_watching = threading.Lock()


def _end_when_stuck(phase: Phase, grace_s: float) -> None:
    """On SIGTERM/SIGINT (called once per signal): a thread that ends the process at once
    in a phase where nothing is under way (starting, back-off: their calls to the broker or
    the database may block for many seconds), and after ``grace_s`` in any phase. The
    service stops itself within stop_timeout_s in the others; this is the bound for what
    it cannot interrupt. Ending the process is as safe as SIGKILL, which capture survives:
    nothing is confirmed that the broker did not acknowledge."""
    if not _watching.acquire(blocking=False):
        return  # a second signal: the first one's watch is running

    def watch() -> None:
        from capture.service import ABORTABLE_PHASES

        deadline = time.monotonic() + grace_s
        while True:
            with phase.lock:  # the service cannot enter the next phase meanwhile
                now = phase.name
                if now in ABORTABLE_PHASES:
                    log.info("stopped", extra={"phase": now})
                    exit_now(0)
            if time.monotonic() > deadline:
                log.error("did not stop within %.0f s; ending the process (as after SIGKILL: "
                          "the next start resumes from the confirmed LSN, nothing is lost)",
                          grace_s, extra={"phase": now})
                exit_now(1)
            time.sleep(0.05)

    threading.Thread(target=watch, name="hera-stop-watch", daemon=True).start()


@main.command()
@click.option("--dsn", help="PostgreSQL connection string [HERA_DSN]")
@click.option("--slot", help="replication slot name [HERA_SLOT, default hera_guard]")
@click.option("--bootstrap-servers", help="with the broker, also list the online re-reads "
                                          "[HERA_BOOTSTRAP_SERVERS]")
@click.option("--topic-prefix", help="topic prefix [HERA_TOPIC_PREFIX, default hera]")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def status(dsn: str | None, slot: str | None, bootstrap_servers: str | None,
           topic_prefix: str | None, as_json: bool) -> None:
    """Slot, confirmed LSN, lag in bytes and seconds, whether capture is active; with
    --bootstrap-servers also the online re-reads (table, reason, chunks, rows, ETA)."""
    from rich.console import Console
    from rich.table import Table

    from capture.resnapshot import RereadRow, reread_report
    from capture.status import slot_status

    settings = settings_or_fail(COMMAND, StatusSettings, {
        "dsn": dsn, "slot": slot, "bootstrap_servers": bootstrap_servers,
        "topic_prefix": topic_prefix})
    rereads: list[RereadRow] | None = None
    try:
        st = slot_status(settings.dsn, settings.slot)
        if settings.bootstrap_servers:
            rereads = reread_report(settings.dsn, settings.bootstrap_servers,
                                    settings.topic_prefix, settings.slot)
    except CaptureError as exc:
        fail(COMMAND, str(exc), exc.exit_code)
    if as_json:
        out = asdict(st)
        if rereads is not None:
            out["rereads"] = [asdict(r) for r in rereads]
        click.echo(json.dumps(out))
        return
    table = Table(title=f"capture slot {st.slot}")
    table.add_column("field")
    table.add_column("value")
    for k, v in asdict(st).items():
        table.add_row(k, "-" if v is None else str(v))
    Console().print(table)
    if rereads:
        listing = Table(title="online re-reads")
        for name in ("table", "reason", "state", "chunks", "rows", "superseded", "started",
                     "finished", "exact_from", "eta_s"):
            listing.add_column(name)
        for r in rereads:
            listing.add_row(*("-" if v is None else str(v) for v in asdict(r).values()))
        Console(width=200).print(listing)


@main.command()
@click.option("--dsn", help="PostgreSQL connection string [HERA_DSN]")
@click.option("--slot", help="the slot of the capture that re-reads [HERA_SLOT, default "
                             "hera_guard]")
@click.option("--table", "table", required=True, help="schema.table to re-read")
@click.option("--reason", default="requested", show_default=True,
              help="why (shown in capture status and on every re-read row)")
def resnapshot(dsn: str | None, slot: str | None, table: str, reason: str) -> None:
    """Ask the running capture to re-read a table online (e.g. after restoring it from a
    backup); returns once the request is committed. Progress: capture status."""
    from capture.resnapshot import record_request

    settings = settings_or_fail(COMMAND, StatusSettings, {"dsn": dsn, "slot": slot})
    try:
        lsn = record_request(settings.dsn, settings.slot, table, reason)
    except CaptureError as exc:
        fail(COMMAND, str(exc), exc.exit_code)
    click.echo(f"re-read of {table} requested at {lsn}: capture (slot {settings.slot}) starts "
               "it when its stream reaches that point; follow it with capture status")
