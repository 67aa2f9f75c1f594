"""The object store goes away under a running archiver: the archiver stops with one line and
exit code 2 (its batch is in the table entirely or not at all), and once the store is back a
restarted archiver continues from the table's position: the workload is archived exactly
once."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.broker import Broker
from tests.archive_fixtures import wait_for, workload
from tests.integration.archive_support import consumed_per_topic, publish, start_archiver
from tests.s3_fixtures import ArchiveTarget, S3Server, start_s3


@pytest.fixture
def own_s3() -> Iterator[S3Server]:
    server = start_s3("outage")
    try:
        yield server
    finally:
        server.stop()


def _ended(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def test_an_archiver_whose_store_goes_away_stops_loudly_and_resumes_exactly_once(
        broker: Broker, topic_prefix: str, own_s3: S3Server, tmp_path: Path) -> None:
    target = ArchiveTarget("s3", own_s3.uri("archive"), own_s3.env())
    changes, ends = workload(transactions=50, per_txn=4)
    publish(broker.bootstrap_servers, topic_prefix, changes[:100], ends[:25])
    log = tmp_path / "archiver.log"
    proc = start_archiver(broker.bootstrap_servers, topic_prefix, target, log)
    wait_for(lambda: sum(consumed_per_topic(target).values()) == 125, 60, "the first half")

    own_s3.halt()
    publish(broker.bootstrap_servers, topic_prefix, changes[100:], ends[25:])
    wait_for(lambda: _ended(proc), 90, "the archiver to stop on the store outage")
    assert proc.returncode == 2, log.read_text()[-3000:]
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith(f"consumers: cannot write to {target.uri}: "), last
    assert "resumes from the position the table holds" in last

    own_s3.resume()
    assert sum(consumed_per_topic(target).values()) == 125  # the failed batch is not in
    proc = start_archiver(broker.bootstrap_servers, topic_prefix, target, log)
    try:
        wait_for(lambda: sum(consumed_per_topic(target).values()) == 250, 60, "the rest")
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, log.read_text()[-3000:]
    con = target.connect()
    assert con.execute("SELECT count(*), count(DISTINCT (commit_lsn, position)) "
                       "FROM raw_changes").fetchall() == [(200, 200)]
    assert con.execute("SELECT count(*) FROM raw_transactions").fetchall() == [(50,)]
