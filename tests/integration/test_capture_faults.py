"""capture under faults (SIGKILL, SIGTERM, broker restart) and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from capture.event import Op
from capture.kafka_admin import MAX_MESSAGE_BYTES
from capture.service import CaptureService
from capture.topics import table_topic
from devstack.broker import Broker, start_broker
from devstack.ports import free_port
from devstack.postgres import PostgresCluster, start_postgres
from hera_kit.service import ServiceEndpoint
from tests.capture_fixtures import (
    PLUGINS,
    CaptureProcess,
    confirmed_lsn,
    read_events,
    running_capture,
    wait_for_events,
    wait_until,
)
from tests.conftest import HeraDB


def _metric(port: int, name: str) -> float:
    """A sample's value as /metrics serves it over HTTP (the text an operator scrapes)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as res:
            return int(res.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _serve(svc: CaptureService) -> ServiceEndpoint:
    return ServiceEndpoint(svc.metrics.registry, svc.metrics.health, free_port())


def _current_lsn(db: HeraDB) -> int:
    with db.connect() as conn:
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone() or (0,)
    return int(str(lsn))


def _workload(dsn: str, batches: int, rows: int, done: threading.Event,
              end: list[int] | None = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for b in range(batches):
            conn.execute("INSERT INTO kill_probe (id, batch) SELECT %s * 1000000 + g, %s "
                         "FROM generate_series(1, %s) g", (b, b, rows))
        if end is not None:  # the WAL position after the workload's last commit
            (lsn,) = conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone() or (0,)
            end.append(int(str(lsn)))
    done.set()


@pytest.mark.parametrize("plugin", PLUGINS)
def test_sigkill_during_a_100k_row_workload_loses_nothing(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path, plugin: str) -> None:
    # A narrow captured table keeps the 100k events cheap to publish and to read back.
    with empty_db.connect() as conn:
        conn.execute("CREATE TABLE kill_probe (id bigint PRIMARY KEY, batch int NOT NULL)")
    cap = CaptureProcess(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         extra_args=["--tables", "public.kill_probe", "--plugin", plugin],
                         log_path=tmp_path / "capture.log")
    cap.start()
    done = threading.Event()
    workload_end: list[int] = []
    writer = threading.Thread(target=_workload,
                              args=(empty_db.dsn, 100, 1000, done, workload_end))
    writer.start()
    kills = 0
    interrupted = 0  # kills that landed while the workload was not yet all confirmed
    try:
        for threshold in (15_000, 45_000, 75_000):
            # Kill while changes are flowing: wait until the slot has moved past some work.
            start = confirmed_lsn(empty_db.dsn, slot_name)

            def moved(s: int = start) -> bool:
                return confirmed_lsn(empty_db.dsn, slot_name) > s or done.is_set()

            wait_until(moved, 60, f"progress before kill at ~{threshold}")
            pending = not done.is_set() or confirmed_lsn(empty_db.dsn, slot_name) < \
                workload_end[0]
            cap.kill()
            kills += 1
            interrupted += pending
            cap.start()
        writer.join()
        end = _current_lsn(empty_db)
        wait_until(lambda: confirmed_lsn(empty_db.dsn, slot_name) >= end, 120, "catch-up")
        assert cap.terminate() == 0
    finally:
        writer.join()
        if cap.proc and cap.proc.poll() is None:
            cap.proc.kill()
    events = read_events(broker.bootstrap_servers, topic_prefix, "kill_probe")
    unique = {e.order_key: e for e in events}
    ids = Counter(str((e.after or {})["id"]) for e in unique.values())
    assert kills == 3 and interrupted == 3  # every kill cut into unconfirmed work
    assert len(ids) == 100_000 and set(ids.values()) == {1}
    assert all(e.op == Op.CREATE for e in unique.values())


def test_sigterm_stops_cleanly_and_confirms_what_was_published(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    cap = CaptureProcess(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         log_path=tmp_path / "capture.log")
    cap.start()
    with hera_db.connect() as conn:
        conn.execute("UPDATE core_relationships SET version = version + 1")
    events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                             lambda evs: any(e.op == Op.UPDATE for e in evs))
    commit = max(e.commit_lsn for e in events if e.op == Op.UPDATE)
    assert cap.terminate() == 0
    assert confirmed_lsn(hera_db.dsn, slot_name) > commit  # past the commit record
    assert '"msg": "stopped"' in cap.log()


def test_broker_outage_is_waited_out_and_caught_up(
        hera_db: HeraDB, topic_prefix: str, slot_name: str) -> None:
    own = start_broker()
    try:
        with running_capture(hera_db.dsn, own.bootstrap_servers, topic_prefix, slot_name,
                             max_backoff_s=1.0, heartbeat_interval_s=0.5) as svc:
            endpoint = _serve(svc)
            assert _readyz(endpoint.port) == 200
            own.stop()  # memory storage: its topics are gone with it
            # What was acknowledged before the outage may still be confirmed; the DELETE,
            # whose WAL starts after this point, must not be while the broker is down.
            before = _current_lsn(hera_db)
            with hera_db.connect() as conn:
                conn.execute("DELETE FROM core_relationships WHERE relationship_type = "
                             "'SERVICE_IN_CATEGORY'")
            with pytest.raises(TimeoutError):
                wait_until(lambda: confirmed_lsn(hera_db.dsn, slot_name) > before, 3,
                           "no confirmation of the DELETE while the broker is down")
            # Not ready while the broker is gone (the heartbeat's marker finds out when idle).
            wait_until(lambda: _readyz(endpoint.port) == 503, 60, "/readyz to answer 503")
            assert _metric(endpoint.port, "hera_capture_ready") == 0
            own.start()
            events = wait_for_events(own.bootstrap_servers, topic_prefix,
                                     lambda evs: any(e.op == Op.DELETE for e in evs), timeout=90)
            wait_until(lambda: _readyz(endpoint.port) == 200, 60, "/readyz to answer 200 again")
            assert _metric(endpoint.port, "hera_capture_ready") == 1
            assert _metric(endpoint.port, "hera_capture_stream_restarts_total") >= 1
            endpoint.close()
    finally:
        own.stop()
    with hera_db.connect() as conn:
        (n,) = conn.execute("SELECT count(*) FROM core_relationships").fetchone() or (0,)
    deletes = [e for e in events if e.op == Op.DELETE]
    assert len(deletes) > 0
    assert {str((e.before or {})["relationship_type"]) for e in deletes} == {"SERVICE_IN_CATEGORY"}
    assert int(str(n)) > 0


# --- bad input: one clear line, non-zero exit, slot untouched ---------------------------------


def _capture_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "capture", *args], capture_output=True,
                          text=True, timeout=timeout)


def _one_line_error(res: subprocess.CompletedProcess[str], expected: str) -> None:
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.startswith("capture:")]
    assert len(lines) == 1, res.stderr
    assert expected in lines[0]


def test_wrong_dsn_is_one_clear_line(broker: Broker) -> None:
    res = _capture_cli("run", "--dsn", f"host=127.0.0.1 port={free_port()} user=x",
                       "--bootstrap-servers", broker.bootstrap_servers)
    _one_line_error(res, "cannot connect to PostgreSQL")


def test_unreachable_broker_is_refused_before_the_slot_is_created(
        hera_db: HeraDB, slot_name: str) -> None:
    res = _capture_cli("run", "--dsn", hera_db.dsn, "--bootstrap-servers",
                       f"127.0.0.1:{free_port()}", "--slot", slot_name)
    _one_line_error(res, "cannot reach the Kafka broker")
    with hera_db.connect() as conn:
        assert conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                            (slot_name,)).fetchone() is None


def test_missing_table_and_table_without_primary_key_are_named(
        hera_db: HeraDB, broker: Broker, slot_name: str) -> None:
    res = _capture_cli("run", "--dsn", hera_db.dsn, "--bootstrap-servers",
                       broker.bootstrap_servers, "--slot", slot_name,
                       "--tables", "public.core_relationships,public.nope")
    _one_line_error(res, "public.nope does not exist")
    # A typo is named with the table it probably meant, every missing name at once, and the
    # tables the database does have; nothing is created.
    res = _capture_cli("run", "--dsn", hera_db.dsn, "--bootstrap-servers",
                       broker.bootstrap_servers, "--slot", slot_name,
                       "--tables", "public.core_relationship,public.nope")
    _one_line_error(res, "tables public.core_relationship, public.nope do not exist")
    assert "public.core_relationship -> public.core_relationships?" in res.stderr
    assert "tables here: " in res.stderr and "public.core_dynamic_data" in res.stderr
    with hera_db.connect() as conn:
        assert conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                            (slot_name,)).fetchone() is None
    with hera_db.connect() as conn:
        conn.execute("CREATE TABLE keyless (a int)")
    res = _capture_cli("run", "--dsn", hera_db.dsn, "--bootstrap-servers",
                       broker.bootstrap_servers, "--slot", slot_name, "--tables", "public.keyless")
    _one_line_error(res, "has no primary key")


def test_slot_of_another_plugin_is_refused_and_left_alone(
        hera_db: HeraDB, broker: Broker, slot_name: str) -> None:
    with hera_db.connect() as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')",
                     (slot_name,))
    res = _capture_cli("run", "--dsn", hera_db.dsn, "--bootstrap-servers",
                       broker.bootstrap_servers, "--slot", slot_name)
    _one_line_error(res, "uses plugin test_decoding")
    with hera_db.connect() as conn:
        assert conn.execute("SELECT plugin FROM pg_replication_slots WHERE slot_name = %s",
                            (slot_name,)).fetchone() == ("test_decoding",)


def test_slot_recreated_behind_captures_back_is_refused(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str) -> None:
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name):
        pass
    with hera_db.connect() as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot_name,))
        conn.execute("UPDATE core_relationships SET version = version + 1")  # missed forever
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (slot_name,))
    res = _capture_cli("run", "--dsn", hera_db.dsn, "--bootstrap-servers",
                       broker.bootstrap_servers, "--slot", slot_name, "--topic-prefix",
                       topic_prefix)
    _one_line_error(res, "behind hera-guard's back")
    # --new-snapshot is the way forward: a new epoch with a fresh snapshot.
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         new_snapshot=True) as svc:
        assert svc.epoch_lsn > 0
    reads = [e for e in read_events(broker.bootstrap_servers, topic_prefix) if e.op == Op.READ]
    assert len({e.commit_lsn for e in reads}) == 2  # two epochs, each with its snapshot


@pytest.fixture
def restricted_cluster() -> Iterator[PostgresCluster]:
    cluster = start_postgres(extra_conf={"wal_level": "replica"})
    try:
        yield cluster
    finally:
        cluster.destroy()


def test_wal_level_other_than_logical_is_refused(
        restricted_cluster: PostgresCluster, broker: Broker) -> None:
    res = _capture_cli("run", "--dsn", restricted_cluster.dsn(), "--bootstrap-servers",
                       broker.bootstrap_servers)
    _one_line_error(res, "wal_level is replica")


def test_status_names_a_missing_slot(hera_db: HeraDB) -> None:
    res = _capture_cli("status", "--dsn", hera_db.dsn, "--slot", "nope")
    _one_line_error(res, "no replication slot named nope")


@pytest.fixture
def small_wal_cluster() -> Iterator[PostgresCluster]:
    cluster = start_postgres(extra_conf={"max_slot_wal_keep_size": "1MB",
                                         "max_wal_size": "32MB", "min_wal_size": "32MB"})
    try:
        yield cluster
    finally:
        cluster.destroy()


def test_slot_that_lost_its_wal_is_refused_with_the_way_out(
        small_wal_cluster: PostgresCluster, broker: Broker, topic_prefix: str) -> None:
    from devstack.sample import create_schema

    dsn = small_wal_cluster.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_schema(conn)
    with running_capture(dsn, broker.bootstrap_servers, topic_prefix, "lossy"):
        pass
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE filler (t text)")

        def lost() -> bool:
            conn.execute("INSERT INTO filler SELECT repeat('x', 1000) "
                         "FROM generate_series(1, 20000)")
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT wal_status FROM pg_replication_slots "
                               "WHERE slot_name = 'lossy'").fetchone()
            return row is not None and row[0] == "lost"

        wait_until(lost, 60, "the slot to lose its WAL", interval=0)
    res = _capture_cli("run", "--dsn", dsn, "--bootstrap-servers", broker.bootstrap_servers,
                       "--slot", "lossy", "--topic-prefix", topic_prefix)
    _one_line_error(res, "--new-snapshot")
    assert "lost the WAL" in res.stderr


def test_postgres_restart_is_waited_out_and_streaming_resumes(
        broker: Broker, topic_prefix: str) -> None:
    from devstack.sample import SampleSize, create_schema, load_sample

    cluster = start_postgres()
    try:
        dsn = cluster.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_schema(conn)
            load_sample(conn, SampleSize())
        with running_capture(dsn, broker.bootstrap_servers, topic_prefix, "restarts",
                             max_backoff_s=1.0) as svc:
            cluster.restart()
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DELETE FROM core_relationships WHERE relationship_type = "
                             "'SERVICE_IN_CATEGORY'")
            endpoint = _serve(svc)
            events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                     lambda evs: any(e.op == Op.DELETE for e in evs), timeout=90)
            assert _metric(endpoint.port, "hera_capture_stream_restarts_total") >= 1
            endpoint.close()
    finally:
        cluster.destroy()
    deletes = {str((e.before or {})["id"]) for e in events if e.op == Op.DELETE}
    assert len(deletes) == sum(1 for e in events if e.op == Op.READ and
                               (e.after or {})["relationship_type"] == "SERVICE_IN_CATEGORY")


# --- large events: one limit, captured below it, a loud stop above it -------------------------


def _big_table(db: HeraDB, value_bytes: int) -> None:
    with db.connect() as conn:
        conn.execute("CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL)")
        conn.execute("INSERT INTO big VALUES (1, repeat('A', %s))", (value_bytes,))


def _topic_limit(bootstrap_servers: str, topic: str) -> int:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                           config_filter="all")
    finally:
        admin.close()
    return int(described["topic"][topic][MAX_MESSAGE_BYTES]["value"])


@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
def test_a_2_mb_event_is_captured_with_the_default_limit(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        backend: str) -> None:
    _big_table(empty_db, 1_000_000)
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.big",), kafka_backend=backend), \
            empty_db.connect() as conn:
        # REPLICA IDENTITY FULL: the UPDATE's event carries the old and the new 1 MB value
        # (a few kB in PostgreSQL, compressed; 2 MB as an event).
        conn.execute("UPDATE big SET v = repeat('B', 1000000)")
        events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                 lambda evs: any(e.op == Op.UPDATE for e in evs), table="big")
    (update,) = [e for e in events if e.op == Op.UPDATE]
    assert update.before == {"id": 1, "v": "A" * 1_000_000}
    assert update.after == {"id": 1, "v": "B" * 1_000_000}
    assert _topic_limit(broker.bootstrap_servers, table_topic(topic_prefix, "public", "big")) \
        == 16 * 1024 * 1024


def test_an_event_above_the_limit_stops_capture_and_a_larger_limit_captures_it_next_start(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    _big_table(empty_db, 600_000)  # the snapshot's 600 kB event fits 1 MiB
    small = CaptureProcess(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                           extra_args=["--tables", "public.big", "--max-message-bytes",
                                       str(1024 * 1024)],
                           log_path=tmp_path / "small.log")
    small.start()
    with empty_db.connect() as conn:
        conn.execute("UPDATE big SET v = repeat('B', 600000)")  # 1.2 MB: old + new row
        after = _current_lsn(empty_db)
    assert small.proc is not None
    rc = small.proc.wait(120)
    lines = [line for line in small.log().splitlines() if line.startswith("capture:")]
    assert rc != 0 and len(lines) == 1, small.log()
    line = lines[0]
    for part in ("event too large: public.big", 'key {"id":1}', "at LSN ", "bytes",
                 "--max-message-bytes", "HERA_MAX_MESSAGE_BYTES"):
        assert part in line, line
    assert confirmed_lsn(empty_db.dsn, slot_name) < after  # the transaction was not confirmed
    assert not any(e.op == Op.UPDATE
                   for e in read_events(broker.bootstrap_servers, topic_prefix, "big"))
    # The next start with the default limit (16 MiB) captures it from the slot.
    default = CaptureProcess(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                             extra_args=["--tables", "public.big"],
                             log_path=tmp_path / "default.log")
    default.start()
    try:
        events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                 lambda evs: any(e.op == Op.UPDATE for e in evs), table="big")
        wait_until(lambda: confirmed_lsn(empty_db.dsn, slot_name) >= after, 60, "confirmation")
    finally:
        assert default.terminate() == 0
    (update,) = [e for e in events if e.op == Op.UPDATE]
    assert update.after == {"id": 1, "v": "B" * 600_000}


def test_a_snapshot_row_above_the_limit_stops_capture_and_the_next_start_snapshots_again(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    _big_table(empty_db, 1_200_000)
    res = _capture_cli("run", "--dsn", empty_db.dsn, "--bootstrap-servers",
                       broker.bootstrap_servers, "--slot", slot_name, "--topic-prefix",
                       topic_prefix, "--tables", "public.big", "--max-message-bytes",
                       str(1024 * 1024))
    _one_line_error(res, "event too large: public.big key {\"id\":1}")
    assert read_events(broker.bootstrap_servers, topic_prefix, "big") == []
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.big",)):
        events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                 lambda evs: len(evs) == 1, table="big")
    assert events[0].op == Op.READ and events[0].after == {"id": 1, "v": "A" * 1_200_000}


def test_an_existing_topic_with_a_smaller_limit_is_raised_to_the_setting(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    _big_table(empty_db, 10)
    topic = table_topic(topic_prefix, "public", "big")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={MAX_MESSAGE_BYTES: "1048588"})])
    finally:
        admin.close()
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.big",), max_message_bytes=8 * 1024 * 1024):
        pass
    assert _topic_limit(broker.bootstrap_servers, topic) == 8 * 1024 * 1024


def test_a_confirm_interval_of_zero_from_the_environment_is_refused(
        hera_db: HeraDB, broker: Broker, slot_name: str) -> None:
    res = subprocess.run([sys.executable, "-m", "capture", "run", "--dsn", hera_db.dsn,
                          "--bootstrap-servers", broker.bootstrap_servers, "--slot", slot_name],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HERA_CONFIRM_INTERVAL_S": "0"})
    _one_line_error(res, "--confirm-interval-s (HERA_CONFIRM_INTERVAL_S)")
    assert "greater than 0" in res.stderr


@pytest.mark.parametrize("args,expected", [
    (["--max-message-bytes", "1000"], "--max-message-bytes (HERA_MAX_MESSAGE_BYTES)"),
    (["--max-message-bytes", str(2 * 1024 ** 3)], "--max-message-bytes (HERA_MAX_MESSAGE_BYTES)"),
    (["--heartbeat-interval-s", "0"], "--heartbeat-interval-s (HERA_HEARTBEAT_INTERVAL_S)"),
])
def test_settings_that_cannot_work_are_refused_at_start_in_one_line(
        hera_db: HeraDB, broker: Broker, slot_name: str, args: list[str], expected: str) -> None:
    res = _capture_cli("run", "--dsn", hera_db.dsn, "--bootstrap-servers",
                       broker.bootstrap_servers, "--slot", slot_name, *args)
    _one_line_error(res, expected)
    assert res.returncode == 2
    with hera_db.connect() as conn:
        assert conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                            (slot_name,)).fetchone() is None


def test_capture_run_serves_metrics_health_and_readiness_on_its_metrics_port(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    port = free_port()
    cap = CaptureProcess(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         extra_args=["--metrics-port", str(port)],
                         log_path=tmp_path / "capture.log")
    cap.start()
    try:
        wait_until(lambda: _readyz(port) == 200, 30, "/readyz 200 once streaming")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as res:
            assert res.status == 200
        assert _metric(port, "hera_capture_ready") == 1
        assert _metric(port, "hera_capture_events_published_total") > 0  # the snapshot
    finally:
        assert cap.terminate() == 0
