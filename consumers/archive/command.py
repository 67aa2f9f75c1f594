"""CLI for the archive: ``consumers archive`` (the long-running writer) and
``consumers history DIR [SQL]`` (a read-only query over DIR/history.duckdb)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from consumers.archive.layout import ArchiveError
from consumers.archive.settings import ArchiveSettings


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"consumers: {message}", err=True)
    sys.exit(code)


def _settings(**given: Any) -> ArchiveSettings:
    try:
        return ArchiveSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        hint = "" if err["type"] != "missing" else (
            f" (--{name.replace('_', '-')} or HERA_{name.upper()})")
        _fail(f"{name}: {err['msg']}{hint}")


@click.command()
@click.option("--bootstrap-servers", help="Kafka HOST:PORT[,...] [HERA_BOOTSTRAP_SERVERS]")
@click.option("--archive", type=click.Path(path_type=Path),
              help="archive directory [HERA_ARCHIVE]")
@click.option("--topic-prefix", help="topic prefix [HERA_TOPIC_PREFIX, default hera]")
@click.option("--tables", help="comma-separated schema.table list [HERA_TABLES, default all]")
@click.option("--kafka-backend", type=click.Choice(["kafka-python", "confluent"]),
              help="Kafka client [HERA_KAFKA_BACKEND, default kafka-python]")
@click.option("--batch-events", type=int, help="commit after this many records")
@click.option("--flush-interval-s", type=float, help="commit at least this often, seconds")
@click.option("--compact-interval-s", type=float, help="compaction check period, seconds")
@click.option("--grace-s", type=float, help="keep compacted-away segments this long")
@click.option("--log-level", default="INFO", show_default=True)
def archive(log_level: str, **options: Any) -> None:
    """Archive every change event into DIR, exactly once, until SIGTERM/SIGINT."""
    from consumers.archive.archiver import Archiver, ArchiverTuning, tune_gc
    from consumers.archive.history_db import write_history_db
    from consumers.archive.store import ArchiveStore
    from consumers.kafka_source import open_source

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    s = _settings(**options)
    try:
        store = ArchiveStore.open_or_create(s.archive, grace=timedelta(seconds=s.grace_s),
                                            dedup_capacity=s.dedup_capacity)
    except ArchiveError as exc:
        _fail(str(exc))
    tune_gc()
    try:
        write_history_db(store.root)
        source = open_source(s.bootstrap_servers, s.topic_prefix, s.tables, s.kafka_backend)
        try:
            Archiver(store, source, ArchiverTuning(
                batch_events=s.batch_events, flush_interval_s=s.flush_interval_s,
                compact_interval_s=s.compact_interval_s)).run(stop)
        finally:
            source.close()
    except ArchiveError as exc:
        _fail(str(exc))
    finally:
        store.close()


@click.command()
@click.argument("archive_dir", type=click.Path(path_type=Path))
@click.argument("query", required=False)
@click.option("--limit", default=50, show_default=True, help="rows to print")
def history(archive_dir: Path, query: str | None, limit: int) -> None:
    """Run SQL on DIR/history.duckdb read-only (no SQL: list its views and macros)."""
    import duckdb
    from rich.console import Console
    from rich.table import Table

    from consumers.archive.layout import HISTORY_DB, check_or_init_marker

    try:
        check_or_init_marker(archive_dir.absolute(), create=False)
    except ArchiveError as exc:
        _fail(str(exc))
    db = archive_dir / HISTORY_DB
    if not db.exists():
        _fail(f"{db} does not exist yet; start `consumers archive` once to create it")
    con = duckdb.connect(str(db), read_only=True)
    try:
        sql = query or ("SELECT function_name AS name, 'macro' AS kind FROM duckdb_functions() "
                        "WHERE NOT internal AND database_name = 'history' UNION ALL "
                        "SELECT view_name, 'view' FROM duckdb_views() WHERE NOT internal "
                        "AND database_name = 'history' ORDER BY kind, name")
        rel = con.sql(sql)
        if rel is None:
            return
        table = Table(show_lines=False)
        for col in rel.columns:
            table.add_column(col)
        for row in rel.limit(limit).fetchall():
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        Console(width=200).print(table)
    except duckdb.Error as exc:
        _fail(f"query failed: {exc}")
    finally:
        con.close()
