"""The local stack itself: a logical-decoding PostgreSQL and a Kafka-protocol broker."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import psycopg
import pytest
from deltalake import DeltaTable
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devstack.broker import Broker
from tests.conftest import HeraDB


def test_cluster_decodes_with_wal2json_and_preloads_pg_cron(hera_db: HeraDB) -> None:
    with hera_db.connect() as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        assert "pg_cron" in str(conn.execute("SHOW shared_preload_libraries").fetchone())
        conn.execute("SELECT pg_create_logical_replication_slot('stack_probe', 'wal2json')")
        conn.execute("UPDATE core_relationships SET version = version + 1 WHERE true")
        (n,) = conn.execute(
            "SELECT count(*) FROM pg_logical_slot_get_changes('stack_probe', NULL, NULL, "
            "'format-version', '2')"
        ).fetchone() or (0,)
        (rows,) = conn.execute("SELECT count(*) FROM core_relationships").fetchone() or (0,)
        assert int(str(rows)) > 0
        assert int(str(n)) == int(str(rows)) + 2  # one message per row, plus begin and commit


def test_sample_gives_every_user_a_membership_and_a_role(hera_db: HeraDB) -> None:
    with hera_db.connect() as conn:
        (orphans,) = conn.execute(
            "SELECT count(*) FROM app_users u WHERE NOT EXISTS (SELECT 1 FROM core_relationships r"
            " WHERE r.from_entity_id = u.id::text AND r.relationship_type = 'USER_MEMBER_OF_ORG'"
            " AND r.is_active)"
        ).fetchone() or (None,)
        (roleless,) = conn.execute(
            "SELECT count(*) FROM core_relationships r WHERE relationship_type = "
            "'USER_MEMBER_OF_ORG' AND NOT EXISTS (SELECT 1 FROM core_dynamic_data d WHERE "
            "d.entity_id = r.from_entity_id AND d.organization_id = r.organization_id AND "
            "d.field_name = 'role')"
        ).fetchone() or (None,)
    assert (orphans, roleless) == (0, 0)


def test_broker_round_trips_a_record(broker: Broker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.probe"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    producer.send(topic, key=b"k", value=b"v").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    records = consumer.poll(timeout_ms=10000)
    consumer.close()
    assert [(r.key, r.value) for r in records.get(tp, [])] == [(b"k", b"v")]


def test_hera_stack_up_serves_until_sigterm_and_leaves_nothing() -> None:
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import psycopg

    proc = subprocess.Popen(
        [sys.executable, "-c", "from devstack.cli import main; main()", "up", "--no-sample"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    dsn = proc.stdout.readline().strip().split("=", 1)[1].strip("'")
    bootstrap = proc.stdout.readline().strip().split("=", 1)[1]
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    datadir = Path(str(row[0]))
    assert datadir.exists()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert not datadir.exists()


def test_hera_stack_up_with_s3_serves_a_bucket_for_the_archive_until_sigterm() -> None:
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from deltalake import DeltaTable

    from consumers.archive.location import archive_location
    from consumers.archive.store import ArchiveStore

    proc = subprocess.Popen(
        [sys.executable, "-c", "from devstack.cli import main; main()", "up", "--no-sample",
         "--s3"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    env: dict[str, str] = {}
    while not (line := proc.stdout.readline()).startswith("export those, then"):
        assert line, "hera-stack up ended early"
        if "=" in line and not line.startswith("export"):
            name, value = line.strip().split("=", 1)
            env[name] = value.strip("'")
    aws = {k: v for k, v in env.items() if k.startswith("AWS_")}
    assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(aws)
    loc = archive_location("s3://hera/archive", aws)
    ArchiveStore.open_or_create(loc).close()
    assert DeltaTable.is_deltatable(loc.uri, storage_options=aws)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    try:
        urllib.request.urlopen(aws["AWS_ENDPOINT_URL"], timeout=2)
        answered = True
    except urllib.error.HTTPError:
        answered = True
    except OSError:
        answered = False
    assert not answered  # the store is gone with the stack


@pytest.fixture
def taken_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A port another process holds, handed out as the next "free" port: the race of two test
    workers (or two runs) picking ports at the same moment, made certain."""
    import devstack.broker
    import devstack.postgres
    import devstack.s3
    from devstack.ports import free_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken: int = busy.getsockname()[1]
        handed = iter([taken])

        def racing_free_port() -> int:
            return next(handed, None) or free_port()

        ports = devstack.s3._free_ports

        def racing_free_ports(n: int) -> list[int]:
            return [racing_free_port(), *ports(n - 1)]

        monkeypatch.setattr(devstack.postgres, "free_port", racing_free_port)
        monkeypatch.setattr(devstack.broker, "free_port", racing_free_port)
        monkeypatch.setattr(devstack.s3, "_free_ports", racing_free_ports)
        yield taken


def test_a_cluster_whose_port_was_taken_meanwhile_starts_on_another(taken_port: int) -> None:
    from devstack.postgres import start_postgres

    cluster = start_postgres()
    try:
        assert cluster.port != taken_port
        with psycopg.connect(cluster.dsn()) as conn:
            assert conn.execute("SHOW port").fetchone() == (str(cluster.port),)
    finally:
        cluster.destroy()


def test_a_broker_whose_port_was_taken_meanwhile_starts_on_another(taken_port: int) -> None:
    from devstack.broker import start_broker
    from devstack.ports import listens

    b = start_broker()
    try:
        assert b.port != taken_port and b.proc is not None and listens(b.proc.pid, b.port)
        producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers)
        producer.send("taken-port", b"v").get(timeout=30)
        producer.close()
    finally:
        b.stop()


def test_an_s3_server_whose_port_was_taken_meanwhile_starts_on_others(taken_port: int) -> None:
    from devstack.s3 import start_s3

    server = start_s3()
    try:
        assert not any(arg.endswith(f"={taken_port}") for arg in server.command)
        assert not DeltaTable.is_deltatable(server.uri("nothing-here"),
                                            storage_options=server.storage_options())
    finally:
        server.stop()
