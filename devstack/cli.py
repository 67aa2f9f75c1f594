"""``hera-stack up``: the local stack for trying the commands by hand.

Starts a throw-away PostgreSQL (pg_cron; wal2json if installed) and a tansu broker,
optionally loads the sample HERA data, prints how to reach them, and removes everything on
Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click
import psycopg

from devstack.broker import start_broker
from devstack.postgres import StackError, start_postgres
from devstack.s3 import S3Server, start_s3
from devstack.sample import SampleSize, create_schema, load_sample


@click.group()
def main() -> None:
    """The local stack (tests, benchmarks and the demo use the same one)."""


@main.command()
@click.option("--sample/--no-sample", default=True, show_default=True,
              help="create the sample HERA schema and data in database postgres")
@click.option("--users", default=60, show_default=True, help="sample users")
@click.option("--s3", "with_s3", is_flag=True,
              help="also an S3-compatible store (SeaweedFS, `weed` of the demo/dev extra) with a "
                   "bucket `hera`, for `consumers archive --archive s3://hera/archive`")
def up(sample: bool, users: int, with_s3: bool) -> None:
    """Start the stack and keep it until Ctrl-C."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster = start_postgres()
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    broker = None
    s3: S3Server | None = None
    try:
        broker = start_broker()
        if with_s3:
            s3 = start_s3("hera")
        if sample:
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                create_schema(conn)
                load_sample(conn, SampleSize(users=users))
        click.echo(f"HERA_DSN='{cluster.dsn()}'")
        click.echo(f"HERA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}")
        if s3 is not None:
            for name, value in s3.env().items():
                click.echo(f"{name}={value}")
            click.echo("export those too, then e.g. `consumers archive --archive "
                       "s3://hera/archive`")
        click.echo("export those, then e.g. `capture run`; Ctrl-C stops and removes the stack")
        stop.wait()
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if s3 is not None:
            s3.stop()
        if broker is not None:
            broker.stop()
        cluster.destroy()
