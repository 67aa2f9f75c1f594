"""The detector against the real broker and a real PostgreSQL, fed change events as capture
publishes them: alerts on Kafka and in critical_system_alerts, dead letters, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from capture.event import parse_lsn
from capture.topics import alerts_topic, deadletter_topic
from consumers.detect.alerts import Rule
from consumers.detect.config import RulesConfig
from consumers.detect.runner import DetectOptions, DetectorRunner
from consumers.detect.service import open_detector
from devstack.broker import Broker
from tests.conftest import HeraDB
from tests.detect_fixtures import (
    ALERTS_TABLE_DDL,
    DYN,
    REL,
    Publisher,
    Tx,
    fixed_clock,
    link,
    membership,
    read_topic,
    role,
)
from tests.waiting import wait_until

ORG_A, ORG_B = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
EPOCH = 0x100
CONSUMERS = str(Path(sys.executable).parent / "consumers")  # the installed console script


@contextmanager
def running_detector(broker: Broker, prefix: str, state: Path,
                     dsn: str | None = None) -> Iterator[DetectorRunner]:
    stop = threading.Event()
    runner = open_detector(DetectOptions(
        bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix, tables=(REL, DYN),
        state_path=state, rules=RulesConfig(), archive_dir="/srv/archive", dsn=dsn,
        poll_ms=50), fixed_clock, stop)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        stop.set()
        thread.join(30)


def alerts_on_kafka(broker: Broker, prefix: str, n: int, settle_s: float = 1.0) -> list[Any]:
    """The alerts on the topic, in commit order (the topic may have several partitions)."""
    records = read_topic(broker.bootstrap_servers, alerts_topic(prefix),
                         lambda rs: len(rs) >= n, settle_s=settle_s)
    alerts = [json.loads(r.value) for r in records]
    return sorted(alerts, key=lambda a: parse_lsn(a["transaction"]["commit_lsn"]))


def test_a_mass_delete_raises_one_alert_on_kafka_and_in_postgres_and_legit_traffic_none(
        broker: Broker, empty_db: HeraDB, topic_prefix: str, tmp_path: Path) -> None:
    with empty_db.connect() as conn:
        conn.execute(ALERTS_TABLE_DDL)
    pub = Publisher(broker.bootstrap_servers, topic_prefix)
    keeps_b = membership("u1", ORG_A)
    pub.snapshot(EPOCH, [keeps_b, membership("u1", ORG_B), membership("u2", ORG_A)])
    pub.tx(Tx().delete(REL, keeps_b))  # u1 keeps its membership of org B: legitimate
    bulk = Tx()
    for i in range(200):
        bulk.insert(REL, link(ORG_A)).insert(DYN, role(f"n{i}", ORG_A))
    pub.tx(bulk)
    doomed = Tx()
    for _ in range(30):
        doomed.delete(REL, link(ORG_A))
    pub.tx(doomed)
    with running_detector(broker, topic_prefix, tmp_path / "state.sqlite", empty_db.dsn):
        (alert,) = alerts_on_kafka(broker, topic_prefix, 1)
        with empty_db.connect() as conn:
            rows = conn.execute("SELECT id::text, alert_type, severity, metadata "
                                "FROM critical_system_alerts").fetchall()
    assert alert["rule"] == Rule.MASS_DELETION and alert["counts"]["removed"] == 30
    assert alert["transaction"]["xid"] == doomed.xid
    assert alert["replay_command"].startswith(
        f"replay --archive /srv/archive --revert-xid {doomed.xid} --dsn ")
    assert "password" not in alert["replay_command"]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (alert["id"], "MASS_RELATIONSHIP_DELETION", "EMERGENCY")]
    metadata: Any = rows[0][3]
    assert metadata["counts"]["removed"] == 30


def test_bad_messages_go_to_the_dead_letter_topic_and_the_detector_keeps_going(
        broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    pub = Publisher(broker.bootstrap_servers, topic_prefix)
    pub.raw(f"{topic_prefix}.public.core_relationships", b"k", b"{not json")
    pub.raw(f"{topic_prefix}.transaction", b"txn", b'{"status": "END", "xid": "x"}')
    truncate = Tx().truncate(DYN)
    pub.tx(truncate)
    with running_detector(broker, topic_prefix, tmp_path / "state.sqlite") as runner:
        (alert,) = alerts_on_kafka(broker, topic_prefix, 1, settle_s=0)
        dead = read_topic(broker.bootstrap_servers, deadletter_topic(topic_prefix),
                          lambda rs: len(rs) >= 2)
    assert alert["rule"] == Rule.TRUNCATE and alert["severity"] == "EMERGENCY"
    reasons = sorted(json.loads(r.value)["reason"] for r in dead)
    assert reasons[0].startswith(f"not a valid record for {topic_prefix}.public.")
    assert reasons[1].startswith(f"not a valid record for {topic_prefix}.transaction")
    assert runner.stats.deadletters == 2


def test_without_the_alerts_table_the_cli_says_to_run_guard_install(
        broker: Broker, empty_db: HeraDB, topic_prefix: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [CONSUMERS, "detect", "--bootstrap-servers",
         broker.bootstrap_servers, "--topic-prefix", topic_prefix, "--dsn", empty_db.dsn,
         "--state", str(tmp_path / "s.sqlite")],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "critical_system_alerts does not exist" in last and "guard install" in last


# --- restarts (the CLI in a subprocess) ----------------------------------------------------


def start_cli(broker: Broker, prefix: str, state: Path, dsn: str | None = None,
              ) -> subprocess.Popen[bytes]:
    args = [CONSUMERS, "detect", "--topic-prefix", prefix,
            "--state", str(state), "--poll-ms", "50"]
    if dsn:
        args += ["--dsn", dsn]
    env = {**os.environ, "HERA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
    log = (state.parent / "detect.log").open("ab")  # a pipe nobody reads could fill up
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)


def test_a_restart_after_sigterm_neither_duplicates_nor_loses_alerts(
        broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    pub = Publisher(broker.bootstrap_servers, topic_prefix)
    m = membership("u1", ORG_A)
    pub.snapshot(EPOCH, [m])
    first = Tx().truncate(DYN)
    pub.tx(first)
    proc = start_cli(broker, topic_prefix, tmp_path / "state.sqlite")
    alerts_on_kafka(broker, topic_prefix, 1, settle_s=0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    second = Tx().delete(REL, m)
    pub.tx(second)
    proc = start_cli(broker, topic_prefix, tmp_path / "state.sqlite")
    try:
        alerts = alerts_on_kafka(broker, topic_prefix, 2, settle_s=1.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert [(a["rule"], a["transaction"]["xid"]) for a in alerts] == [
        (Rule.TRUNCATE, first.xid), (Rule.ORPHANED_USER, second.xid)]


def test_sigkill_loses_no_alert_and_postgres_holds_each_exactly_once(
        broker: Broker, empty_db: HeraDB, topic_prefix: str, tmp_path: Path) -> None:
    with empty_db.connect() as conn:
        conn.execute(ALERTS_TABLE_DDL)
    pub = Publisher(broker.bootstrap_servers, topic_prefix)
    users = [membership(f"u{i}", ORG_A) for i in range(12)]
    pub.snapshot(EPOCH, users)
    txs = [Tx().delete(REL, m) for m in users]  # each orphans one user: one alert each
    state = tmp_path / "state.sqlite"
    proc = start_cli(broker, topic_prefix, state, empty_db.dsn)
    for tx in txs[:6]:
        pub.tx(tx)
    split = txs[6]
    pub.tx(split, end=False)  # its END only comes after the kill: pending at kill time
    alerts_on_kafka(broker, topic_prefix, 3, settle_s=0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    pub.raw(f"{topic_prefix}.transaction", b"txn", split.end().to_json())
    for tx in txs[7:]:
        pub.tx(tx)
    proc = start_cli(broker, topic_prefix, state, empty_db.dsn)
    try:
        def all_alerts_in_postgres() -> bool:
            with empty_db.connect() as conn:
                row = conn.execute("SELECT count(*) FROM critical_system_alerts").fetchone()
            return row is not None and int(str(row[0])) >= len(txs)

        wait_until(all_alerts_in_postgres, 30, "every alert in critical_system_alerts")
        kafka = alerts_on_kafka(broker, topic_prefix, len(txs), settle_s=1.0)
        with empty_db.connect() as conn:
            pg = conn.execute("SELECT (metadata->'transaction'->>'xid')::bigint "
                              "FROM critical_system_alerts").fetchall()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    expected = sorted(tx.xid for tx in txs)
    assert sorted(int(str(x)) for (x,) in pg) == expected
    assert sorted({a["transaction"]["xid"] for a in kafka}) == expected


def test_schema_changes_and_version_1_events_are_read_and_nothing_goes_to_dead_letters(
        broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    from capture.event import ColumnDef, SchemaChangeEvent
    from capture.topics import transaction_topic

    pub = Publisher(broker.bootstrap_servers, topic_prefix)
    pub.snapshot(EPOCH, [membership("u1", ORG_A)])
    ddl = Tx()
    ddl.insert(REL, link(ORG_A, metadata='{"a": 1}'))  # v2: jsonb as text
    pub.tx(ddl, end=False)
    schema = SchemaChangeEvent(
        xid=ddl.xid, commit_lsn=ddl.commit_lsn, position=1, lsn=ddl.commit_lsn - 1,
        ts_us=ddl.commit_us, schema_="public", table="core_relationships",
        columns=(ColumnDef(attnum=1, name="id", type="uuid"),), command_tag="ALTER TABLE",
        ddl="ALTER TABLE core_relationships ADD COLUMN x int")
    pub.raw(transaction_topic(topic_prefix), b"txn", schema.to_json())
    end = ddl.end().model_copy(update={"schema_change_count": 1})
    pub.raw(transaction_topic(topic_prefix), b"txn", end.to_json())
    old = Tx()
    for _ in range(30):
        old.delete(REL, link(ORG_A, metadata={"a": 1}))  # v1: jsonb parsed
    old.events = [e.model_copy(update={"schema_version": 1}) for e in old.events]
    pub.tx(old)
    with running_detector(broker, topic_prefix, tmp_path / "state.sqlite") as runner:
        (alert,) = alerts_on_kafka(broker, topic_prefix, 1, settle_s=1.0)
        wait_until(lambda: runner.stats.transactions >= 2, 30, "both transactions judged")
    assert alert["rule"] == Rule.MASS_DELETION and alert["transaction"]["xid"] == old.xid
    assert alert["counts"]["removed"] == 30
    assert runner.stats.deadletters == 0
