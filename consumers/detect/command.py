"""``consumers detect``: thin CLI over ``DetectorRunner``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from consumers.detect.config import load_rules
from consumers.detect.errors import DetectError
from consumers.detect.runner import DetectOptions, DetectorRunner
from consumers.detect.settings import DetectSettings


def _utc_now() -> datetime:
    return datetime.now(UTC)


@click.command()
@click.option("--bootstrap-servers", help="Kafka HOST:PORT [env HERA_BOOTSTRAP_SERVERS]")
@click.option("--topic-prefix", help="topic prefix of the capture [env HERA_TOPIC_PREFIX]")
@click.option("--tables", help="comma-separated schema.table to watch [env HERA_TABLES]")
@click.option("--dsn", help="database for critical_system_alerts [env HERA_DSN]")
@click.option("--rules", type=click.Path(path_type=Path),
              help="rules file, TOML or YAML [env HERA_RULES]")
@click.option("--state", type=click.Path(path_type=Path),
              help="state file (SQLite) [env HERA_STATE; default detect-state.sqlite]")
@click.option("--archive-dir", help="archive named in replay commands [env HERA_ARCHIVE_DIR]")
@click.option("--poll-ms", type=int, help="poll timeout in ms [env HERA_POLL_MS]")
def detect(**options: Any) -> None:
    """Watch the change topics and alert on mass deletions, truncates, orphaned users,
    removed roles and non-compliant smart codes."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = DetectSettings(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise click.ClickException(
            f"--{where.replace('_', '-')}: {err['msg']} (or env HERA_{where.upper()})"
        ) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        runner = DetectorRunner(DetectOptions(
            bootstrap_servers=settings.bootstrap_servers, topic_prefix=settings.topic_prefix,
            tables=settings.tables, state_path=settings.state,
            rules=load_rules(settings.rules), archive_dir=settings.archive_dir,
            dsn=settings.dsn, poll_ms=settings.poll_ms), _utc_now, stop)
        stats = runner.run()
    except DetectError as exc:
        raise click.ClickException(str(exc)) from None
    logging.getLogger("hera.detect").info(
        "stopped: %d records, %d transactions, %d alerts, %d dead letters",
        stats.records, stats.transactions, stats.alerts, stats.deadletters)
