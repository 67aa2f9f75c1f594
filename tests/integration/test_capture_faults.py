"""capture under faults (SIGKILL, SIGTERM, broker restart) and bad input."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from capture.event import Op
from devstack.broker import Broker, start_broker
from devstack.ports import free_port
from devstack.postgres import PostgresCluster, start_postgres
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


def _current_lsn(db: HeraDB) -> int:
    with db.connect() as conn:
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone() or (0,)
    return int(str(lsn))


def _workload(dsn: str, batches: int, rows: int, done: threading.Event) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for b in range(batches):
            conn.execute("INSERT INTO kill_probe (id, batch) SELECT %s * 1000000 + g, %s "
                         "FROM generate_series(1, %s) g", (b, b, rows))
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
    writer = threading.Thread(target=_workload, args=(empty_db.dsn, 100, 1000, done))
    writer.start()
    kills = 0
    try:
        for threshold in (15_000, 45_000, 75_000):
            # Kill while changes are flowing: wait until the slot has moved past some work.
            start = confirmed_lsn(empty_db.dsn, slot_name)

            def moved(s: int = start) -> bool:
                return confirmed_lsn(empty_db.dsn, slot_name) > s or done.is_set()

            wait_until(moved, 60, f"progress before kill at ~{threshold}")
            cap.kill()
            kills += 1
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
    assert kills == 3
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
                             max_backoff_s=1.0) as svc:
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
            own.start()
            events = wait_for_events(own.bootstrap_servers, topic_prefix,
                                     lambda evs: any(e.op == Op.DELETE for e in evs), timeout=90)
            assert svc.metrics.restarts._value.get() >= 1
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
            events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                     lambda evs: any(e.op == Op.DELETE for e in evs), timeout=90)
            assert svc.metrics.restarts._value.get() >= 1
    finally:
        cluster.destroy()
    deletes = {str((e.before or {})["id"]) for e in events if e.op == Op.DELETE}
    assert len(deletes) == sum(1 for e in events if e.op == Op.READ and
                               (e.after or {})["relationship_type"] == "SERVICE_IN_CATEGORY")
