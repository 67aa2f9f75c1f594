"""The object store goes away under a running archiver: the archiver says so (not-ready with
the reason, a warning line, ``hera_archive_store_failures_total``), keeps its position, and
once the store answers again continues from the position the table holds: the workload is
archived exactly once, without a restart."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.broker import Broker
from devstack.ports import free_port
from devstack.s3 import S3Server, start_s3
from tests.archive_fixtures import wait_for, workload
from tests.integration.archive_support import consumed_per_topic, publish, start_archiver
from tests.s3_fixtures import ArchiveTarget


@pytest.fixture
def own_s3() -> Iterator[S3Server]:
    server = start_s3("outage")
    try:
        yield server
    finally:
        server.stop()


def _consumed(target: ArchiveTarget) -> int:
    try:
        return sum(consumed_per_topic(target).values())
    except OSError:  # a restarting SeaweedFS answers 500 for a moment: the test's read too
        return -1


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _metric(port: int, name: str) -> float:
    for ln in _get(f"http://127.0.0.1:{port}/metrics")[1].splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    raise AssertionError(f"no metric {name}")


@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
def test_an_archiver_whose_store_goes_away_waits_and_continues_exactly_once(
        broker: Broker, topic_prefix: str, own_s3: S3Server, tmp_path: Path,
        backend: str) -> None:
    target = ArchiveTarget("s3", own_s3.uri("archive"), own_s3.env())
    changes, ends = workload(transactions=50, per_txn=4)
    publish(broker.bootstrap_servers, topic_prefix, changes[:100], ends[:25])
    log, port = tmp_path / "archiver.log", free_port()
    proc = start_archiver(broker.bootstrap_servers, topic_prefix, target, log, "WARNING",
                          "--metrics-port", str(port), "--kafka-backend", backend)
    try:
        wait_for(lambda: sum(consumed_per_topic(target).values()) == 125, 60, "the first half")
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200

        own_s3.halt()
        publish(broker.bootstrap_servers, topic_prefix, changes[100:], ends[25:])
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/readyz")[0] == 503, 60,
                 "the archiver to say the store is gone")
        assert "archive store unavailable, retrying" in _get(
            f"http://127.0.0.1:{port}/readyz")[1]
        failures = [ln for ln in _get(f"http://127.0.0.1:{port}/metrics")[1].splitlines()
                    if ln.startswith("hera_archive_store_failures_total ")]
        assert failures and float(failures[0].split()[1]) >= 1
        assert proc.poll() is None, log.read_text()[-3000:]  # waiting, not gone
        warnings = [json.loads(ln) for ln in log.read_text().splitlines()
                    if ln.startswith("{") and "archive store unavailable" in ln]
        assert warnings and warnings[0]["level"] == "warning"
        assert own_s3.env()["AWS_SECRET_ACCESS_KEY"] not in log.read_text()

        own_s3.resume()
        wait_for(lambda: _consumed(target) == 250, 90, "the rest")
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "ready again")
        # the commits after the recovery: the rebuilt archiver's counts add to the metrics'
        # totals (it counts from 0 again; the metrics must not go backwards or crash)
        batches = _metric(port, "hera_archive_batches_committed_total")
        more, more_ends = workload(transactions=10, per_txn=4, first_lsn=500_000)
        publish(broker.bootstrap_servers, topic_prefix, more, more_ends)
        wait_for(lambda: _consumed(target) == 300, 60, "the commit after the recovery")
        # (the metrics follow the table's commit: awaited, not read at once)
        wait_for(lambda: _metric(port, "hera_archive_batches_committed_total") > batches
                 and _metric(port, "hera_archive_records_consumed_total") >= 300, 30,
                 "the metrics to count it")
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    con = target.connect()
    assert con.execute("SELECT count(*), count(DISTINCT (commit_lsn, position)) "
                       "FROM raw_changes").fetchall() == [(240, 240)]
    assert con.execute("SELECT count(*) FROM raw_transactions").fetchall() == [(60,)]
