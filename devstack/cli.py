"""``hera-stack up``: the local stack for trying the commands by hand.

Starts a throw-away PostgreSQL (pg_cron; wal2json if installed) and a tansu broker,
optionally loads the sample HERA data, prints how to reach them, and removes everything on
Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import click
import psycopg

from devstack.broker import start_broker
from devstack.pki import TestCA
from devstack.postgres import PostgresCluster, StackError, start_postgres
from devstack.s3 import S3Server, start_s3
from devstack.sample import SampleSize, create_schema, load_sample
from devstack.secure_broker import PASSWORD, USER, secured_broker


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
@click.option("--secure", is_flag=True,
              help="Kafka as in production: SASL_SSL (SCRAM-SHA-512) through stunnel4 and a SASL "
                   "gateway in front of the broker, with a throw-away CA; prints "
                   "HERA_KAFKA_CONFIG, a properties file for every service")
def up(sample: bool, users: int, with_s3: bool, secure: bool) -> None:
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
    try:
        with contextlib.ExitStack() as kafka:
            if secure:
                kafka_env = _secure_kafka(kafka, cluster.workdir)
            else:
                broker = start_broker()
                kafka.callback(broker.stop)
                kafka_env = f"HERA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}"
            _serve(cluster, kafka_env, sample, users, with_s3, stop)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        cluster.destroy()


def _secure_kafka(stack: contextlib.ExitStack, workdir: Path) -> str:
    """The broker behind SASL_SSL; the properties file (mode 600) holds the test password,
    so it is never printed nor on a command line."""
    directory = workdir / "kafka-tls"
    ca = TestCA(directory, "hera-stack-ca", datetime.now(UTC))
    endpoint = stack.enter_context(secured_broker(directory, ca.issue("broker"), sasl=True))
    path = endpoint.properties("client", sasl_mechanism="SCRAM-SHA-512", sasl_username=USER,
                               sasl_password=PASSWORD, ssl_ca_location=str(ca.ca_file))
    path.chmod(0o600)
    return f"HERA_KAFKA_CONFIG={path}"


def _serve(cluster: PostgresCluster, kafka_env: str, sample: bool, users: int,
           with_s3: bool, stop: threading.Event) -> None:
    s3: S3Server | None = None
    try:
        if with_s3:
            s3 = start_s3("hera")
        if sample:
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                create_schema(conn)
                load_sample(conn, SampleSize(users=users))
        click.echo(f"HERA_DSN='{cluster.dsn()}'")
        click.echo(kafka_env)
        if s3 is not None:
            for name, value in s3.env().items():
                click.echo(f"{name}={value}")
            click.echo("export those too, then e.g. `consumers archive --archive "
                       "s3://hera/archive`")
        click.echo("export those, then e.g. `capture run`; Ctrl-C stops and removes the stack")
        stop.wait()
    finally:
        if s3 is not None:
            s3.stop()
