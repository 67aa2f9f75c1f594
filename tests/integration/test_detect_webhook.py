"""Alerts reach a webhook once per alert: across an endpoint outage (retried with back-off)
and across a SIGKILL of the detector while alerts were waiting for the endpoint.

The endpoint is a real HTTP server (http.server in a thread) that can be switched to answer
503, and counts the deliveries it accepted by alert id, checking each signature.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

from consumers.detect.alerts import Rule
from consumers.detect.config import RulesConfig
from consumers.detect.runner import DetectOptions
from consumers.detect.service import open_detector
from devstack.broker import Broker
from tests.capture_fixtures import running_capture
from tests.conftest import HeraDB
from tests.detect_fixtures import DYN, REL, Publisher, Tx, fixed_clock, membership
from tests.integration.test_detect_capture import SINGLE_MEMBERSHIP_USERS, one, released
from tests.integration.test_detect_stream import CONSUMERS, alerts_on_kafka
from tests.waiting import wait_until
from tests.webhook_fixtures import SECRET, Endpoint

ORG = "11111111-1111-1111-1111-111111111111"


def orphaning(n: int, pub: Publisher) -> list[Tx]:
    users = [membership(f"u{i}", ORG) for i in range(n)]
    pub.snapshot(0x100, users)
    return [Tx().delete(REL, m) for m in users]  # each orphans one user: one alert each


def test_alerts_raised_while_the_endpoint_is_down_arrive_once_each_when_it_recovers(
        broker: Broker, endpoint: Endpoint, topic_prefix: str, tmp_path: Path) -> None:
    pub = Publisher(broker.bootstrap_servers, topic_prefix)
    txs = orphaning(4, pub)
    pub.tx(txs[0])
    stop = threading.Event()
    runner = open_detector(DetectOptions(
        bootstrap_servers=broker.bootstrap_servers, topic_prefix=topic_prefix,
        tables=(REL, DYN), state_path=tmp_path / "state.sqlite", rules=RulesConfig(),
        archive_dir="/srv/archive", poll_ms=50, webhook_url=endpoint.url,
        webhook_secret=SECRET), fixed_clock, stop)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(endpoint.accepted) == 1, 30, "the first alert delivered")
        endpoint.up = False
        for tx in txs[1:]:
            pub.tx(tx)
        alerts_on_kafka(broker, topic_prefix, 4, settle_s=0)  # raised meanwhile
        wait_until(lambda: endpoint.refused >= 2, 30, "retries against the down endpoint")
        assert len(endpoint.accepted) == 1
        endpoint.up = True
        wait_until(lambda: len(endpoint.accepted) == 4, 60, "every alert delivered")
        wait_until(lambda: runner.stats.undelivered == 0, 30, "the outbox emptied")
    finally:
        stop.set()
        thread.join(30)
    assert set(endpoint.accepted.values()) == {1}
    assert endpoint.bad_signatures == 0
    assert sorted(b["transaction"]["xid"] for b in endpoint.bodies.values()) == sorted(
        tx.xid for tx in txs)


def pending(state: Path) -> int:
    if not state.exists():
        return 0
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute(
                "SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()
        except sqlite3.OperationalError:  # not created yet
            return 0
    return int(row[0]) if row else 0


def start(broker: Broker, prefix: str, state: Path, url: str) -> Any:
    import os
    import subprocess

    args = [CONSUMERS, "detect", "--topic-prefix", prefix, "--state", str(state),
            "--poll-ms", "50", "--webhook", url]
    env = {**os.environ, "HERA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
           "HERA_WEBHOOK_SECRET": SECRET}
    log = (state.parent / "detect.log").open("ab")
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)


def test_a_detector_killed_while_alerts_wait_for_the_endpoint_delivers_each_once_after_restart(
        broker: Broker, empty_db: HeraDB, endpoint: Endpoint, topic_prefix: str,
        slot_name: str, tmp_path: Path) -> None:
    """Real capture; the kill lands while alerts sit in the outbox (the webhook refuses
    them): after the restart every sink has each alert exactly once, Kafka included."""
    from devstack.sample import SampleSize, load_sample

    state = tmp_path / "state.sqlite"
    with (running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name),
          empty_db.connect() as conn):
        load_sample(conn, SampleSize())
        proc = start(broker, topic_prefix, state, endpoint.url)
        conn.execute("TRUNCATE core_dynamic_data")
        wait_until(lambda: len(endpoint.accepted) == 1, 30, "the first alert delivered")
        endpoint.up = False
        lonely = one(conn, SINGLE_MEMBERSHIP_USERS)
        conn.execute("DELETE FROM core_relationships WHERE from_entity_id = %s", (lonely,))
        alerts_on_kafka(broker, topic_prefix, 2, settle_s=0)
        wait_until(lambda: endpoint.refused >= 1 and pending(state) == 1, 30,
                   "the second alert waiting in the outbox")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert pending(state) == 1  # the kill interrupted a delivery in progress
        endpoint.up = True
        proc = start(broker, topic_prefix, state, endpoint.url)
        try:
            wait_until(lambda: len(endpoint.accepted) == 2, 60, "the second alert delivered")
            wait_until(lambda: pending(state) == 0, 30, "the outbox emptied")
            alerts = alerts_on_kafka(broker, topic_prefix, 2, settle_s=1.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    released(empty_db, slot_name)
    assert [a["rule"] for a in alerts] == [Rule.TRUNCATE, Rule.ORPHANED_USER]
    assert set(endpoint.accepted.values()) == {1} and endpoint.bad_signatures == 0
    assert sorted(b["rule"] for b in endpoint.bodies.values()) == sorted(
        [Rule.TRUNCATE, Rule.ORPHANED_USER])
