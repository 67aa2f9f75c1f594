"""CLI for the archive: ``consumers archive`` (the long-running writer), ``consumers archive
migrate OLD_DIR NEW`` and ``consumers history ARCHIVE [SQL] [--version N | --as-of TIME]``.

Each command on an object store ends with ``os._exit(code)`` after flushing: a process that used
deltalake's object store can abort at interpreter exit (rc 134, "terminate called without an
active exception", the Rust runtime's threads torn down by the C++ runtime), which would
replace the command's own exit code.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from consumers.archive.layout import ArchiveError, IdentityMismatchError
from consumers.archive.settings import ArchiveSettings, StorageSettings
from hera_kit import logs
from hera_kit.kafka_settings import kafka_config_option
from hera_kit.service import exit_now, settings_or_fail, stop_on_signals
from hera_kit.service import fail as kit_fail
from hera_kit.text import first_line
from hera_kit.times import parse_zoned_time

log = logging.getLogger("consumers.archive")


_OBJECT_STORE_USED = False  # only then the hard exit: tests invoke the local commands in-process


def _exit(code: int) -> NoReturn:
    # The installed command exits hard whatever the store: a local Delta table runs the same
    # Rust runtime (seen: `consumers archive migrate` on local disk, rc -6 after its one line).
    # In-process callers (click's test runner) get SystemExit for local stores.
    if not _OBJECT_STORE_USED and Path(sys.argv[0]).name != "consumers":
        sys.exit(code)
    exit_now(code)


def _fail(message: str, code: int = 2) -> NoReturn:
    with contextlib.suppress(SystemExit):
        kit_fail("consumers", message, code)
    _exit(code)


def _configure_logs(level: str) -> None:
    """The services' one logging set-up (hera_kit.logs: JSON lines, one redactor; other
    libraries from WARNING), with the archive's own loggers (``consumers.archive.*``) at
    ``level`` too."""
    from hera_kit import logs

    logs.configure(level)
    logging.getLogger("consumers").setLevel(level.upper())


def _location(target: str) -> Any:
    from consumers.archive.location import archive_location

    global _OBJECT_STORE_USED
    opts = settings_or_fail("consumers", StorageSettings, {}).storage_options()
    loc = archive_location(target, opts)
    _OBJECT_STORE_USED = _OBJECT_STORE_USED or not loc.is_local
    return loc


@click.group(invoke_without_command=True)
@click.option("--bootstrap-servers", help="Kafka HOST:PORT[,...] [HERA_BOOTSTRAP_SERVERS]")
@kafka_config_option
@click.option("--archive", help="archive directory or URI (s3://bucket/prefix) [HERA_ARCHIVE]; "
              "object-store credentials from AWS_* variables")
@click.option("--topic-prefix", help="topic prefix [HERA_TOPIC_PREFIX, default hera]")
@click.option("--tables", help="comma-separated schema.table list [HERA_TABLES, default all]")
@click.option("--kafka-backend", type=click.Choice(["kafka-python", "confluent"]),
              help="Kafka client [HERA_KAFKA_BACKEND, default kafka-python]")
@click.option("--batch-events", type=int, help="commit after this many records")
@click.option("--flush-interval-s", type=float, help="commit at least this often, seconds")
@click.option("--compact-interval-s", type=float, help="optimize + vacuum period, seconds")
@click.option("--retention-hours", type=float,
              help="vacuum keeps unreferenced files this long (time travel) [168]")
@click.option("--metrics-port", type=int,
              help="serve /metrics /healthz /readyz [HERA_METRICS_PORT]")
@click.option("--metrics-host", help="address of that endpoint [HERA_METRICS_HOST, 127.0.0.1]")
@click.option("--new-archive-epoch", is_flag=True, default=None,
              help="continue this archive with a new stream: drops the stored offsets, "
                   "keeps the rows (for one start, after a refusal)")
@logs.log_level_option()
@click.pass_context
def archive(ctx: click.Context, /, log_level: str, **options: Any) -> None:
    """Archive every change event into a Delta table, exactly once, until SIGTERM/SIGINT."""
    if ctx.invoked_subcommand is not None:
        return
    from hera_kit.native_stderr import route_native_stderr

    # delta-rs' Rust panics (e.g. on a full disk) as one JSON line each, not a backtrace
    route_native_stderr(logging.getLogger("consumers.archive.native"))
    _configure_logs(log_level)
    s = settings_or_fail("consumers", ArchiveSettings, options)
    try:
        code = _run(s)
    except ArchiveError as exc:
        _fail(str(exc), 3 if isinstance(exc, IdentityMismatchError) else 2)
    _exit(code)


def _run(s: ArchiveSettings) -> int:
    from consumers.archive.archiver import tune_gc
    from consumers.archive.metrics import ArchiveMetrics
    from consumers.archive.service import archive_options, run_archive
    from hera_kit.service import Health, ServiceEndpoint

    loc = _location(s.archive)
    kafka, options = archive_options(s)
    stop = stop_on_signals()
    metrics, health = ArchiveMetrics(), Health()
    endpoint = (None if s.metrics_port is None
                else ServiceEndpoint(metrics.registry, health, s.metrics_port, s.metrics_host))
    try:
        tune_gc()  # process-level: the CLI's, not the library's
        run_archive(loc, kafka, options, metrics, health, stop)
    finally:
        if endpoint is not None:
            endpoint.close()
    return 0


@archive.command()
@click.argument("old_dir", type=click.Path(file_okay=False))
@click.argument("new_uri")
def migrate(old_dir: str, new_uri: str) -> None:
    """Convert an archive of the old format (OLD_DIR) into a Delta archive at NEW_URI."""
    from pathlib import Path

    from consumers.archive.migrate import migrate as run

    try:
        r = run(Path(old_dir), _location(new_uri))
    except ArchiveError as exc:
        _fail(str(exc))
    click.echo(f"migrated {old_dir} -> {new_uri}: " + ", ".join(
        f"{n} {k}" for k, n in r.rows.items()) + f"; offsets of {r.offsets} partition(s); "
        f"verified row for row; table version {r.version}")
    _exit(0)


class _ZonedTime(click.ParamType[datetime]):
    name = "TIME"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_zoned_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command()
@click.argument("archive_uri")
@click.argument("query", required=False)
@click.option("--limit", default=50, show_default=True, help="rows to print")
@click.option("--version", "version", type=int, help="read this table version")
@click.option("--as-of", "as_of", type=_ZonedTime(),
              help="read the table as it was at this time (ISO 8601 with zone, e.g. "
                   "2026-12-01T09:00:00+00:00)")
def history(archive_uri: str, query: str | None, limit: int, version: int | None,
            as_of: datetime | None) -> None:
    """Run SQL on the archive's views (no SQL: list its views and macros)."""
    import duckdb
    from rich.console import Console
    from rich.table import Table

    from consumers.archive.reader import connect_history

    if version is not None and as_of is not None:
        _fail("--version and --as-of exclude each other")
    try:
        con = connect_history(_location(archive_uri), version=version, as_of=as_of)
    except ArchiveError as exc:
        _fail(str(exc))
    try:
        sql = query or ("SELECT function_name AS name, 'macro' AS kind FROM duckdb_functions() "
                        "WHERE NOT internal AND NOT starts_with(function_name, '_') UNION ALL "
                        "SELECT view_name, 'view' FROM duckdb_views() WHERE NOT internal "
                        "ORDER BY kind, name")
        rel = con.sql(sql)
        if rel is not None:
            table = Table(show_lines=False)
            for col in rel.columns:
                table.add_column(col)
            for row in rel.limit(limit).fetchall():
                table.add_row(*("NULL" if v is None else str(v) for v in row))
            Console(width=200).print(table)
    except duckdb.Error as exc:
        first = first_line(exc, "?")
        hint = (" (a data file of the archive cannot be read: restore it from a backup, or "
                "re-archive from Kafka)" if "parquet" in first.lower() else "")
        _fail(f"query failed: {first}{hint}")
    finally:
        con.close()
    _exit(0)
