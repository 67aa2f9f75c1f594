"""``replay``: rebuild a table at a point, write it out, restore it, or undo a transaction.

    replay --archive DIR --table core_relationships (--until TIME|LSN | --before-xid N)
           [--output FILE | --into-table SCHEMA.TABLE --dsn DSN | --restore --dsn DSN]
    replay --archive DIR --revert-xid N [--revert-xid M ...] --dsn DSN [--dry-run]
           [--force|--skip-conflicts]
    replay --archive DIR --revert-actor NAME [--since TIME] [--until TIME] --dsn DSN [--dry-run]
    replay verify --archive DIR --dsn DSN
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import duckdb
import psycopg
from pydantic import ValidationError
from rich.console import Console

from hera_kit.text import first_line
from replay.command import memory, run_checkpoint, run_replay, run_verify
from replay.errors import ReplayError
from replay.memory import out_of_memory
from replay.settings import ReplaySettings


def _settings(**given: Any) -> ReplaySettings:
    """CLI values win; options left out fall back to HERA_* environment variables."""
    try:
        return ReplaySettings(**{k: v for k, v in given.items()
                                 if v not in (None, False, ())})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise click.UsageError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def _run(fn: Any, settings: ReplaySettings) -> None:
    out, err = Console(), Console(stderr=True)
    try:
        code = fn(settings, out, err)
    except ReplayError as exc:
        click.echo(f"replay: error: {exc}", err=True)
        sys.exit(1)
    except duckdb.OutOfMemoryException as exc:
        click.echo(f"replay: error: {out_of_memory(exc, memory(settings))}", err=True)
        sys.exit(1)
    except duckdb.Error as exc:
        # A segment that went missing or corrupt after the archive was opened (DuckDB reads
        # the Parquet files lazily): one line naming it, nothing was changed.
        first = first_line(exc)
        click.echo(f"replay: error: cannot read the archive: {first}; restore the file from "
                   "a backup or re-archive from Kafka; nothing was changed", err=True)
        sys.exit(1)
    except psycopg.errors.InsufficientPrivilege as exc:
        click.echo(f"replay: error: missing privilege: {first_line(exc)}; nothing "
                   "was changed", err=True)
        sys.exit(1)
    except psycopg.Error as exc:
        # Writes run in one transaction: an error PostgreSQL raised rolled it back.
        first = first_line(exc)
        click.echo(f"replay: error: PostgreSQL refused: {first}; nothing was changed", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("replay: interrupted; nothing was changed", err=True)
        sys.exit(130)
    sys.exit(code)


@click.group(invoke_without_command=True, context_settings={"show_default": True})
@click.option("--archive", help="archive directory or URI (s3://bucket/prefix)")
@click.option("--table", help="schema.table to rebuild  [default: public.core_relationships]")
@click.option("--until", help="point: time with zone (2025-03-01T14:05:00+00:00) or LSN")
@click.option("--before-xid", type=int, help="point: just before transaction N committed")
@click.option("--base-snapshot", help="start from this emergency backup table")
@click.option("--output", type=click.Path(path_type=Path), help=".parquet/.csv/.jsonl file")
@click.option("--into-table", help="create SCHEMA.TABLE with the rebuilt rows")
@click.option("--replace", is_flag=True, default=None, help="--into-table may overwrite")
@click.option("--restore", is_flag=True, default=None, help="put the live table back")
@click.option("--revert-xid", type=int, multiple=True,
              help="undo transaction N, keep later changes (repeatable: newest first)")
@click.option("--revert-actor", help="undo every transaction of this hera.actor, newest first")
@click.option("--since", help="--revert-actor: only transactions committed at or after this "
                              "time (with zone)")
@click.option("--dsn", help="PostgreSQL connection string (or HERA_DSN)")
@click.option("--dry-run", is_flag=True, default=None, help="show the plan, change nothing")
@click.option("--force", is_flag=True, default=None, help="revert conflicting rows too")
@click.option("--skip-conflicts", is_flag=True, default=None,
              help="revert the rest, leave conflicting rows")
@click.option("--allow-orphaning", is_flag=True, default=None,
              help="let a restore leave users without any organization")
@click.option("--allow-other-database", is_flag=True, default=None,
              help="write into a database that is not the one the archive was captured from")
@click.option("--org", help="restore only this organization_id")
@click.option("--relationship-type", help="restore only this relationship_type")
@click.option("--memory-limit", help="DuckDB memory limit for the rebuild, e.g. 2GB "
              "(spills to disk beyond it)  [default: DuckDB's, 80% of RAM]")
@click.option("--spill-dir", type=click.Path(path_type=Path),
              help="where the rebuild spills  [default: a directory in the system temp dir]")
@click.pass_context
def main(ctx: click.Context, /, **options: Any) -> None:
    """Rebuild the exact state of a table at any point, restore it, or undo a transaction."""
    ctx.obj = options
    if ctx.invoked_subcommand is None:
        _run(run_replay, _settings(**options))


@main.command("verify")
@click.option("--archive", help="archive directory or URI (s3://bucket/prefix)")
@click.option("--dsn", help="PostgreSQL connection string (or HERA_DSN)")
@click.option("--table", help="check only this schema.table (default: every archived table)")
@click.pass_context
def verify_cmd(ctx: click.Context, /, **options: Any) -> None:
    """Compare the archive's current state with the live tables; name differing rows."""
    merged = {k: v for k, v in (ctx.obj or {}).items()
              if k in ("archive", "dsn", "table", "memory_limit", "spill_dir")}
    merged.update({k: v for k, v in options.items() if v is not None})
    _run(run_verify, _settings(**merged))


@main.command("checkpoint")
@click.option("--archive", help="archive directory or URI (s3://bucket/prefix)")
@click.option("--tables", help="comma-separated schema.table list  [default: every archived "
              "table]")
@click.option("--every-changes", type=int,
              help="checkpoint a table after this many new changes  [default: 1000000]")
@click.option("--keep", type=int, help="checkpoints kept per table  [default: 3]")
@click.option("--retention-hours", type=float,
              help="files of removed checkpoints stay this long for running readers  "
                   "[default: 168]")
@click.option("--verify", is_flag=True, default=None,
              help="check every checkpoint against a rebuild from the beginning")
@click.option("--memory-limit", help="DuckDB memory limit, e.g. 2GB")
@click.option("--spill-dir", type=click.Path(path_type=Path), help="where DuckDB spills")
@click.option("--threads", type=int, help="DuckDB threads; 1 leaves the other cores to the "
              "archiver and capture  [default: 1]")
@click.pass_context
def checkpoint_cmd(ctx: click.Context, /, **options: Any) -> None:
    """Write the state checkpoints that are due (schedule it, e.g. hourly, next to the
    archiver): replay then reads only the changes after the nearest checkpoint."""
    merged = {k: v for k, v in (ctx.obj or {}).items()
              if k in ("archive", "memory_limit", "spill_dir")}
    merged.update({k: v for k, v in options.items() if v is not None})
    _run(run_checkpoint, _settings(**merged))
