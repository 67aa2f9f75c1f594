"""A change topic deleted and re-created under running services (issue 15, item 4): capture
brings it back with its own settings (one partition, never the broker's defaults) and goes
on; the archiver and the detector, whose positions the new topic does not hold, each stop
with one line naming the way out, instead of sitting blind at their old offsets. And a new
broker with the same cluster id (tansu names every cluster ``tansu_cluster``) and shorter
partitions stops a running archiver the same way. Every case on both Kafka clients, except
that the consumers under a deleted topic read with kafka-python: librdkafka (confluent-kafka
2.16) segfaults when a topic it consumes is deleted on the test broker (tansu 0.6), a crash
outside this code (reproduced with a bare confluent Consumer); capture's producer runs on
both clients there.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from capture.errors import ConfigError
from capture.kafka_admin import ensure_topics
from capture.topics import table_topic, transaction_topic
from devstack.broker import Broker
from devstack.sample import SampleSize, load_sample
from tests.archive_fixtures import wait_for, workload
from tests.capture_fixtures import running_capture
from tests.conftest import HeraDB
from tests.integration.archive_support import consumed_per_topic, publish, start_archiver
from tests.integration.test_detect_identity import detect_cli, last_line
from tests.s3_fixtures import ArchiveTarget
from tests.waiting import wait_until

BACKENDS = ["kafka-python", "confluent"]
INSERT = ("INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
          "relationship_type, smart_code) SELECT (SELECT id FROM core_organizations LIMIT 1), "
          "'r-' || g, 'x', 'CUSTOMER_HAS_APPOINTMENT', 'HERA.SALON.APPOINTMENT.BOOKING.v1' "
          "FROM generate_series(1, %s) g")


def _partitions(admin: KafkaAdminClient, topic: str) -> int | None:
    (described,) = admin.describe_topics([topic])
    if described.get("error_code", 0) != 0 or not described.get("partitions"):
        return None
    return len(described["partitions"])


def _topics(broker: Broker, prefix: str) -> None:
    """As capture creates them: one partition each."""
    ensure_topics(broker.bootstrap_servers, [transaction_topic(prefix)] + [
        table_topic(prefix, "public", t) for t in ("core_relationships", "core_dynamic_data")])


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_change_topic_deleted_under_running_services_is_recreated_by_capture_and_stops_both_consumers(  # noqa: E501
        broker: Broker, empty_db: HeraDB, topic_prefix: str, slot_name: str, tmp_path: Path,
        backend: str) -> None:
    topic = table_topic(topic_prefix, "public", "core_relationships")
    target = ArchiveTarget("local", str(tmp_path / "archive"), {})
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    with empty_db.connect() as conn:
        load_sample(conn, SampleSize(organizations=1, users=4, other_relationships=5))
    refused: list[ConfigError] = []
    try:
        with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                             kafka_backend=backend), empty_db.connect() as conn:
            archiver = start_archiver(broker.bootstrap_servers, topic_prefix, target,
                                      tmp_path / "archive.log", "WARNING")
            state = tmp_path / "state"
            detector = detect_cli(broker, topic_prefix, state)
            try:
                conn.execute(INSERT, (300,))
                wait_for(lambda: consumed_per_topic(target).get(topic, 0) >= 300, 60,
                         "the archiver to read the first rows")
                admin.delete_topics([topic])
                conn.execute(INSERT, (20,))  # fewer records than the consumers have read
                # capture notices and re-creates it with its own partition count; the test
                # broker (tansu) may re-create it first, with its default of 4, on another
                # client's request (Kafka with auto-create off does not): capture must then
                # refuse it loudly, never write into it
                wait_until(lambda: _partitions(admin, topic) in (1, 4), 30,
                           "the topic to exist again")
                conn.execute(INSERT, (20,))
                archived_rc, detected_rc = archiver.wait(60), detector.wait(60)
            finally:
                _stop(archiver)
                _stop(detector)
                admin.close()
    except ConfigError as exc:
        refused.append(exc)
    parts = _partitions(KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers), topic)
    if parts == 1:  # capture's own re-creation, never the broker's default of 4
        assert not refused
    else:
        assert parts == 4 and refused and "capture writes its topics with 1" in str(refused[0])
    assert archived_rc == 3
    line = (tmp_path / "archive.log").read_text().strip().splitlines()[-1]
    assert line.startswith("consumers: the broker serves another stream: "), line
    assert topic in line and "--new-archive-epoch" in line
    assert detected_rc != 0
    line = last_line(state, topic_prefix)
    assert line.startswith("consumers detect: stream changed: ") and "--reset-state" in line


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_archiver_started_on_a_new_broker_with_the_same_cluster_id_and_shorter_partitions_refuses(  # noqa: E501
        own_broker: Broker, topic_prefix: str, tmp_path: Path, backend: str) -> None:
    target = ArchiveTarget("local", str(tmp_path / "archive"), {})
    log = tmp_path / "a.log"
    changes, ends = workload(transactions=50, per_txn=4)
    _topics(own_broker, topic_prefix)
    publish(own_broker.bootstrap_servers, topic_prefix, changes, ends)
    proc = start_archiver(own_broker.bootstrap_servers, topic_prefix, target, log, "WARNING",
                          "--kafka-backend", backend)
    try:
        wait_for(lambda: sum(consumed_per_topic(target).values()) == 250, 60, "the workload")
    finally:
        assert _stop(proc) == 0
    before = target.state()
    own_broker.stop()
    own_broker.start()  # the same address and cluster id (tansu_cluster), empty
    # a shorter history on the new broker: every partition ends before the archive's
    # positions, none is empty (capture re-publishing from its confirmed position)
    _topics(own_broker, topic_prefix)
    publish(own_broker.bootstrap_servers, topic_prefix, changes[:20], ends[:5])
    proc = start_archiver(own_broker.bootstrap_servers, topic_prefix, target, log, "WARNING",
                          "--kafka-backend", backend)
    try:
        rc = proc.wait(60)
    finally:
        _stop(proc)
    assert rc == 3, log.read_text()[-3000:]
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("consumers: ")]
    assert len(lines) == 1, lines
    assert "ends at offset" in lines[0] and "--new-archive-epoch" in lines[0], lines
    assert target.state() == before
