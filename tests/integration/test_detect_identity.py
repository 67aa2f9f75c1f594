"""The detector is bound to its stream: state from another broker or database is refused
with one line and left untouched, a broker that lost its data under a running detector stops
it loudly, tables capture does not stream are refused, /readyz says when the broker is down.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from capture.event import MarkerKind
from capture.kafka_admin import ensure_topics
from capture.topics import table_topic, transaction_topic
from consumers.detect.alerts import Rule
from devstack.broker import Broker
from devstack.ports import free_port
from tests.capture_fixtures import running_capture
from tests.conftest import HeraDB
from tests.detect_fixtures import DYN, REL, Publisher, Tx, link, membership
from tests.integration.test_detect_stream import CONSUMERS, alerts_on_kafka
from tests.waiting import wait_until

ORG = "11111111-1111-1111-1111-111111111111"
EPOCH = 0x100


def detect_cli(broker: Broker, prefix: str, state_dir: Path, *extra: str,
               ) -> subprocess.Popen[bytes]:
    args = [CONSUMERS, "detect", "--bootstrap-servers", broker.bootstrap_servers,
            "--topic-prefix", prefix, "--state-dir", str(state_dir), "--poll-ms", "50", *extra]
    log = (state_dir.parent / f"detect-{prefix}.log").open("ab")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)


def last_line(state_dir: Path, prefix: str) -> str:
    return (state_dir.parent / f"detect-{prefix}.log").read_text().strip().splitlines()[-1]


def dump(state_dir: Path) -> list[str]:
    """Every row of the state file, to prove a refusal changed nothing."""
    (path,) = state_dir.glob("*.sqlite")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return list(conn.iterdump())


def outbox_delivered(state_dir: Path) -> bool:
    paths = list(state_dir.glob("*.sqlite"))
    if not paths:
        return False
    with sqlite3.connect(f"file:{paths[0]}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()
    return row is not None and row[0] == 0


def mass_delete(n: int = 30) -> Tx:
    tx = Tx()
    for _ in range(n):
        tx.delete(REL, link(ORG))
    return tx


def create_topics(broker: Broker, prefix: str) -> None:
    """As capture does: one partition per topic."""
    ensure_topics(broker.bootstrap_servers, [
        transaction_topic(prefix), table_topic(prefix, "public", "core_relationships"),
        table_topic(prefix, "public", "core_dynamic_data")])


def first_stream(broker: Broker, prefix: str, state_dir: Path) -> None:
    """A detector reads a stream (snapshot + a mass delete), alerts, stops cleanly."""
    create_topics(broker, prefix)
    pub = Publisher(broker.bootstrap_servers, prefix)
    pub.snapshot(EPOCH, [membership(f"u{i}", ORG) for i in range(5)])
    pub.tx(mass_delete())
    pub.tx(mass_delete())
    pub.close()
    proc = detect_cli(broker, prefix, state_dir)
    alerts_on_kafka(broker, prefix, 2, settle_s=0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_old_state_on_a_new_empty_broker_is_refused_with_one_line_and_left_untouched(
        own_broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first_stream(own_broker, topic_prefix, state_dir)
    before = dump(state_dir)
    own_broker.stop()
    own_broker.start()  # the same address, nothing on it
    pub = Publisher(own_broker.bootstrap_servers, topic_prefix)
    pub.snapshot(EPOCH, [membership("u1", ORG)])
    pub.tx(mass_delete())  # the detector must not sit at its old offsets: it refuses
    proc = detect_cli(own_broker, topic_prefix, state_dir)
    assert proc.wait(60) != 0
    line = last_line(state_dir, topic_prefix)
    assert line.startswith("consumers detect: stream changed: ")
    assert "the state has read it up to offset" in line and "--reset-state" in line
    assert dump(state_dir) == before
    # The way out the line names works: the new stream's mass delete alerts.
    proc = detect_cli(own_broker, topic_prefix, state_dir, "--reset-state")
    try:
        (alert,) = alerts_on_kafka(own_broker, topic_prefix, 1, settle_s=1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert alert["rule"] == Rule.MASS_DELETION


def test_old_state_on_a_stream_of_another_database_is_refused_when_its_marker_arrives(
        own_broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first_stream(own_broker, topic_prefix, state_dir)
    before = dump(state_dir)
    pub = Publisher(own_broker.bootstrap_servers, topic_prefix)
    # another database streamed on the same topics (same broker, offsets still valid)
    pub.raw(transaction_topic(topic_prefix), b"marker",
            pub.marker(MarkerKind.SNAPSHOT_START, 0x900, db="other_db"))
    pub.tx(mass_delete())
    proc = detect_cli(own_broker, topic_prefix, state_dir)
    assert proc.wait(60) != 0
    line = last_line(state_dir, topic_prefix)
    assert "database is 'other_db', expected 'hera'" in line and "--reset-state" in line
    assert dump(state_dir) == before


@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
def test_a_broker_restarted_empty_under_a_running_detector_stops_it_loudly(
        own_broker: Broker, topic_prefix: str, tmp_path: Path, backend: str) -> None:
    state_dir = tmp_path / "state"
    pub = Publisher(own_broker.bootstrap_servers, topic_prefix)
    pub.snapshot(EPOCH, [membership(f"u{i}", ORG) for i in range(5)])
    pub.tx(mass_delete())
    pub.close()
    proc = detect_cli(own_broker, topic_prefix, state_dir, "--kafka-backend", backend)
    try:
        alerts_on_kafka(own_broker, topic_prefix, 1, settle_s=0)
        wait_until(lambda: outbox_delivered(state_dir), 30, "the alert marked delivered")
        before = dump(state_dir)
        own_broker.stop()
        own_broker.start()
        # capture would re-publish from its confirmed LSN: a short new history
        pub = Publisher(own_broker.bootstrap_servers, topic_prefix)
        pub.tx(mass_delete(3))
        pub.close()
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert rc != 0
    line = last_line(state_dir, topic_prefix)
    assert line.startswith("consumers detect: stream changed: ") and "--reset-state" in line
    assert dump(state_dir) == before


def test_a_table_name_capture_does_not_stream_is_refused_once_the_first_marker_arrives(
        broker: Broker, empty_db: HeraDB, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name):
        proc = detect_cli(broker, topic_prefix, state_dir, "--tables",
                          "public.core_relationship,public.core_dynamic_data",
                          "--rules", str(_rules(tmp_path, "public.core_relationship")))
        rc = proc.wait(60)
    assert rc == 2
    line = last_line(state_dir, topic_prefix)
    assert line.startswith("consumers detect: public.core_relationship (--tables): not a "
                           "table capture streams; capture streams ")
    assert "public.core_relationships" in line


def _rules(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(f'[mass_deletion]\ntable = "{table}"\n[orphaned_user]\ntable = "{table}"\n'
                    f'[smart_code]\ntables = ["{table}"]\n')
    return path


def test_a_typo_in_the_rules_file_is_refused_at_start(broker: Broker, topic_prefix: str,
                                                      tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    proc = detect_cli(broker, topic_prefix, state_dir, "--rules",
                      str(_rules(tmp_path, "public.core_relationship")))
    assert proc.wait(60) == 2
    line = last_line(state_dir, topic_prefix)
    assert line == ("consumers detect: rules mass_deletion.table names "
                    "public.core_relationship, which the detector does not read (--tables "
                    f"{REL},{DYN}): add it to --tables or fix the name")
    assert not state_dir.exists()


def test_without_a_state_directory_the_detector_refuses_to_start(
        broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HERA_STATE_DIR", "HERA_STATE")}
    proc = subprocess.run([CONSUMERS, "detect", "--bootstrap-servers",
                           broker.bootstrap_servers, "--topic-prefix", topic_prefix],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "consumers detect: no state directory: pass --state-dir DIR")
    assert list(tmp_path.iterdir()) == []


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
def test_readyz_is_503_while_the_broker_is_down_and_healthz_stays_live(
        own_broker: Broker, topic_prefix: str, tmp_path: Path, backend: str) -> None:
    state_dir = tmp_path / "state"
    pub = Publisher(own_broker.bootstrap_servers, topic_prefix)
    pub.snapshot(EPOCH, [membership("u1", ORG)])
    pub.tx(mass_delete())
    pub.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = detect_cli(own_broker, topic_prefix, state_dir, "--metrics-port", str(port),
                      "--kafka-backend", backend)
    try:
        alerts_on_kafka(own_broker, topic_prefix, 1, settle_s=0)
        wait_until(lambda: http_status(base + "/readyz") == 200, 30, "ready")
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert ('hera_detect_alerts_raised_total{severity="EMERGENCY",'
                'type="MASS_RELATIONSHIP_DELETION"} 1.0') in metrics
        assert "hera_detect_records_consumed_total" in metrics
        assert (f'hera_detect_committed_offset{{partition="0",topic="{topic_prefix}'
                '.transaction"}') in metrics
        assert "hera_detect_identity_checks_failed_total 0.0" in metrics
        assert "hera_detect_broker_up 1.0" in metrics
        own_broker.stop()
        wait_until(lambda: http_status(base + "/readyz") == 503, 30, "not ready")
        assert http_status(base + "/healthz") == 200
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            assert "hera_detect_broker_up 0.0" in response.read().decode()
        assert proc.poll() is None  # a broker that is down is a passing fault: it waits
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0, last_line(state_dir, topic_prefix)


def test_old_state_on_a_broker_without_the_topics_is_refused_and_creates_no_topic(
        own_broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    from kafka import KafkaAdminClient

    state_dir = tmp_path / "state"
    first_stream(own_broker, topic_prefix, state_dir)
    before = dump(state_dir)
    own_broker.stop()
    own_broker.start()
    proc = detect_cli(own_broker, topic_prefix, state_dir)
    assert proc.wait(60) != 0
    line = last_line(state_dir, topic_prefix)
    assert "does not exist on the broker, the state has read it up to offset" in line
    assert "--reset-state" in line and dump(state_dir) == before
    admin = KafkaAdminClient(bootstrap_servers=own_broker.bootstrap_servers)
    try:
        topics = set(admin.list_topics())
    finally:
        admin.close()
    assert not [t for t in topics if t.startswith(topic_prefix)]


def test_old_state_on_the_stream_of_another_database_is_refused_with_real_capture(
        broker: Broker, empty_db: HeraDB, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    """Capture of database A, the detector follows; then capture of database B is pointed
    at the same topics: the detector refuses at B's first marker, its state untouched."""
    import psycopg
    from psycopg import sql

    from tests.conftest import unique_name

    state_dir = tmp_path / "state"
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name):
        proc = detect_cli(broker, topic_prefix, state_dir)
        with empty_db.connect() as conn:
            conn.execute("TRUNCATE core_dynamic_data")
        alerts_on_kafka(broker, topic_prefix, 1, settle_s=0)
        wait_until(lambda: outbox_delivered(state_dir), 30, "the alert marked delivered")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    before = dump(state_dir)
    other = HeraDB(empty_db.cluster, unique_name("other"))
    with psycopg.connect(empty_db.cluster.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE hera_template").format(
            sql.Identifier(other.name)))
    try:
        other_slot = unique_name("slot")
        with running_capture(other.dsn, broker.bootstrap_servers, topic_prefix, other_slot):
            proc = detect_cli(broker, topic_prefix, state_dir)
            rc = proc.wait(60)
    finally:
        with psycopg.connect(empty_db.cluster.dsn(), autocommit=True) as admin:
            wait_until(lambda: admin.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND active",
                (other_slot,)).fetchone() == (0,), 30, "the other slot released")
            admin.execute("SELECT pg_drop_replication_slot(%s)", (other_slot,))
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(other.name)))
    assert rc != 0
    line = last_line(state_dir, topic_prefix)
    assert f"database is '{other.name}', expected '{empty_db.name}'" in line
    assert "--reset-state" in line and dump(state_dir) == before


def test_an_unreachable_broker_is_one_line_and_creates_no_state(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    proc = subprocess.run([CONSUMERS, "detect", "--bootstrap-servers", "127.0.0.1:1",
                           "--state-dir", str(state_dir)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "consumers detect: no Kafka broker answers at 127.0.0.1:1: check --bootstrap-servers "
        "and that the broker runs"]
    assert not state_dir.exists()


def test_old_state_on_a_re_created_topic_longer_than_its_offsets_is_refused(
        own_broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    """The broker restarted empty and capture published more than the detector had read:
    every stored offset is inside the new partitions, only the topic ids tell."""
    state_dir = tmp_path / "state"
    first_stream(own_broker, topic_prefix, state_dir)
    before = dump(state_dir)
    own_broker.stop()
    own_broker.start()
    create_topics(own_broker, topic_prefix)
    pub = Publisher(own_broker.bootstrap_servers, topic_prefix)
    for _ in range(4):  # more records on every topic than the first stream had
        pub.snapshot(EPOCH, [membership(f"u{i}", ORG) for i in range(5)])
        pub.tx(mass_delete(40))
        dyn = Tx()
        for i in range(40):
            dyn.insert(DYN, {"id": f"r{i}", "organization_id": ORG, "entity_id": f"u{i}",
                             "field_name": "note", "field_value_text": "x"})
        pub.tx(dyn)
    pub.close()
    proc = detect_cli(own_broker, topic_prefix, state_dir)
    assert proc.wait(60) != 0
    line = last_line(state_dir, topic_prefix)
    assert "was re-created (topic id " in line and "--reset-state" in line
    assert dump(state_dir) == before


def test_a_typo_in_tables_is_refused_at_start_once_the_state_knows_what_capture_streams(
        broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first_stream(broker, topic_prefix, state_dir)  # its markers said: REL and DYN
    before = dump(state_dir)
    proc = detect_cli(broker, topic_prefix, state_dir, "--tables",
                      f"{DYN},public.core_relationship", "--rules",
                      str(_rules(tmp_path, "public.core_relationship")))
    assert proc.wait(60) == 2
    assert last_line(state_dir, topic_prefix).startswith(
        "consumers detect: public.core_relationship (--tables): not a table capture streams; "
        f"capture streams {DYN}, {REL}")
    assert dump(state_dir) == before
