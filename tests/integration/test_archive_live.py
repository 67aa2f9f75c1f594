"""The archive while it runs: analysts query from another process, bad records go to the
dead-letter topic, and a real SQL workload arrives through capture exactly as committed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from capture.topics import deadletter_topic, table_topic
from consumers.archive.bulk_parse import BulkChangeParser
from consumers.kafka_source import Backend
from devstack.broker import Broker
from tests.archive_fixtures import change, wait_for, workload
from tests.capture_fixtures import read_topic, running_capture
from tests.conftest import HeraDB
from tests.integration.archive_support import (
    archiver_thread,
    consumed_per_topic,
    generation,
    publish,
    start_archiver,
)
from tests.s3_fixtures import ArchiveTarget

ANALYST = """
import os, sys, time
from consumers.archive.reader import connect_history
opts = {k: v for k, v in os.environ.items() if k.startswith("AWS_")} or None
seen = []
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    con = connect_history(sys.argv[1], storage_options=opts)  # each one a consistent version
    n = con.execute("SELECT count(*) FROM changes").fetchall()[0][0]
    t = con.execute("SELECT count(*) FROM transaction_summary").fetchall()[0][0]
    seen.append(n)
    if n == int(sys.argv[2]):
        break
    time.sleep(0.1)
print(seen[0], seen[-1], t, len(seen))
os._exit(0)
"""


def test_an_analyst_queries_from_another_process_while_the_archiver_writes(
        broker: Broker, topic_prefix: str, tmp_path: Path, archive_target: ArchiveTarget
) -> None:
    bootstrap, root, log = broker.bootstrap_servers, archive_target, tmp_path / "a.log"
    changes, ends = workload(transactions=3_000, per_txn=10)
    publish(bootstrap, topic_prefix, changes[:1_000], ends[:100])
    proc = start_archiver(bootstrap, topic_prefix, root, log)
    try:
        wait_for(lambda: sum(consumed_per_topic(root).values()) >= 1_100, 60, "a first commit")
        analyst = subprocess.Popen(
            [sys.executable, "-c", ANALYST, root.uri, str(len(changes))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **root.env})
        gen_at_query = generation(root)
        for lo in range(1_000, 30_000, 2_900):  # committed while the analyst reads
            publish(bootstrap, topic_prefix, changes[lo:lo + 2_900],
                    ends[lo // 10:(lo + 2_900) // 10])
        out, err = analyst.communicate(timeout=90)
        assert analyst.returncode == 0, err
        first, last, txns, queries = (int(x) for x in out.split())
        assert first >= 1_000 and last == len(changes) and txns == 3_000 and queries > 1
        assert generation(root) > gen_at_query
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()[-3000:]


@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
def test_malformed_and_unknown_schema_records_go_to_the_dead_letter_topic(
        broker: Broker, topic_prefix: str, archive_target: ArchiveTarget, backend: Backend
) -> None:
    from confluent_kafka import Producer

    bootstrap, root = broker.bootstrap_servers, archive_target
    topic = table_topic(topic_prefix, "public", "core_relationships")
    newer = json.loads(change(300, 0).to_json())
    newer["schema_version"] = 9
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in (change(100, 0).to_json(), b"{oops", json.dumps(newer).encode(),
                  change(200, 0).to_json()):
        producer.produce(topic, key=b"k", value=value)
    assert producer.flush(30) == 0
    with archiver_thread(bootstrap, topic_prefix, root, backend):
        wait_for(lambda: consumed_per_topic(root).get(topic) == 4, 30, "all four records")
    letters = [json.loads(r.value) for r in read_topic(bootstrap, deadletter_topic(topic_prefix))]
    reasons = sorted(str(x["reason"]) for x in letters)
    assert len(reasons) == 2
    assert reasons[0].startswith("not valid JSON") and "schema_version 9" in reasons[1]
    assert {x["topic"] for x in letters} == {topic}
    assert root.state().dead_letters == 2
    con = root.connect()
    assert con.execute("SELECT commit_lsn FROM changes ORDER BY 1").fetchall() == [(100,), (200,)]


def test_a_sql_workload_through_capture_is_archived_exactly(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        archive_target: ArchiveTarget) -> None:
    bootstrap, root = broker.bootstrap_servers, archive_target
    with running_capture(empty_db.dsn, bootstrap, topic_prefix, slot_name), \
            archiver_thread(bootstrap, topic_prefix, root):
        with empty_db.connect() as conn:
            conn.execute("INSERT INTO core_relationships (organization_id, from_entity_id, "
                         "to_entity_id, relationship_type) SELECT gen_random_uuid(), 'u' || i, "
                         "'o', 'USER_MEMBER_OF_ORG' FROM generate_series(1, 300) i")
            conn.execute("UPDATE core_relationships SET is_active = false "
                         "WHERE from_entity_id IN (SELECT 'u' || i FROM generate_series(1, 40) i)")
            conn.execute("DELETE FROM core_relationships WHERE from_entity_id IN "
                         "(SELECT 'u' || i FROM generate_series(41, 70) i)")
            live = {str(r[0]): r[1] for r in conn.execute(
                "SELECT id, is_active FROM core_relationships").fetchall()}

        def archived() -> int:
            rows = root.connect().execute(
                "SELECT count(*) FROM changes WHERE NOT snapshot").fetchall()
            return int(rows[0][0])

        wait_for(lambda: archived() == 370, 60, "370 changes in the archive", interval=0.2)
    con = root.connect()
    per_txn = con.execute(
        "SELECT inserts, updates, deletes FROM transaction_summary WHERE xid IS NOT NULL "
        "ORDER BY commit_lsn").fetchall()
    assert per_txn == [(300, 0, 0), (0, 40, 0), (0, 0, 30)]
    assert con.execute("SELECT list(event_count ORDER BY commit_lsn) FROM transactions"
                       ).fetchall() == [([300, 40, 30],)]
    state = con.execute(
        "SELECT key ->> 'id', (row ->> 'is_active')::BOOLEAN FROM table_as_of_lsn("
        "'public.core_relationships', (SELECT max(commit_lsn) FROM changes))").fetchall()
    assert dict(state) == live
    # capture's real events take the archiver's bulk path (none left to the slow model path)
    values = [r.value for r in read_topic(bootstrap, table_topic(topic_prefix, "public",
                                                                 "core_relationships"))]
    assert len(values) >= 370
    assert BulkChangeParser().parse(values)[1] == []
