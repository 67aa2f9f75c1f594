"""CLI for the archive: ``consumers archive`` and ``consumers history``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--bootstrap-servers", envvar="HERA_BOOTSTRAP_SERVERS", required=True)
@click.option("--archive", "archive_dir", envvar="HERA_ARCHIVE", required=True,
              type=click.Path(path_type=Path))
@click.option("--topic-prefix", envvar="HERA_TOPIC_PREFIX", default="hera", show_default=True)
def archive(bootstrap_servers: str, archive_dir: Path, topic_prefix: str) -> None:
    """Archive every change event into DIR (Parquet segments + manifest), exactly once."""
    raise NotImplementedError("consumers archive: being built")


@click.command()
@click.argument("archive_dir", type=click.Path(path_type=Path))
@click.argument("query", required=False)
def history(archive_dir: Path, query: str | None) -> None:
    """Query the archive in DIR read-only (SQL over the views of history.duckdb)."""
    raise NotImplementedError("consumers history: being built")
