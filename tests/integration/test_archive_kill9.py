"""SIGKILL at any instant, then a restart: every event of the workload archived exactly once,
on a local path and on the S3 server; kills that interrupted work, and kills inside a Delta
commit (its data files written, its log entry not), are observed, not assumed."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

from deltalake import DeltaTable
from pydantic_core import to_json

from capture.topics import table_topic, transaction_topic
from devstack.broker import Broker
from tests.archive_fixtures import wait_for, workload
from tests.integration.archive_support import (
    consumed_per_topic,
    data_files,
    generation,
    publish,
    start_archiver,
)
from tests.s3_fixtures import ArchiveTarget


def _unreferenced(target: ArchiveTarget) -> int:
    """Data files on the store that no table version references: an interrupted commit."""
    loc = target.location()
    if not DeltaTable.is_deltatable(loc.uri, storage_options=loc.options()):
        return 0
    dt = DeltaTable(loc.uri, storage_options=loc.options())
    referenced = {Path(u).name for u in dt.file_uris()}
    return len({Path(f).name for f in data_files(target)} - referenced)


def test_archive_equals_the_workload_after_repeated_kill_9(
        broker: Broker, topic_prefix: str, tmp_path: Path, archive_target: ArchiveTarget
) -> None:
    bootstrap, log = broker.bootstrap_servers, tmp_path / "arch.log"
    target = archive_target
    changes, ends = workload(transactions=10_000, per_txn=10)  # 100k changes
    resent = changes[40_000:41_000]  # capture re-sends after its own restart
    chunks = [(changes[i * 10_000:(i + 1) * 10_000], ends[i * 1_000:(i + 1) * 1_000])
              for i in range(10)]
    chunks.insert(5, (resent, []))
    stop = threading.Event()

    def publish_paced() -> None:  # spread over seconds, so the kills land mid-ingest
        for c, t in chunks:
            publish(bootstrap, topic_prefix, c, t)
            stop.wait(0.6)

    published = {table_topic(topic_prefix, "public", t): 50_500
                 for t in ("core_relationships", "core_dynamic_data")}
    published[transaction_topic(topic_prefix)] = 10_000

    publisher = threading.Thread(target=publish_paced)
    publisher.start()
    rng = random.Random(7)
    kills = interrupted = 0
    while publisher.is_alive() or kills < 3:
        proc = start_archiver(bootstrap, topic_prefix, target, log)
        start_gen = generation(target)
        wait_for(lambda: generation(target) >= start_gen + 2 or proc.poll() is not None  # noqa: B023
                 or consumed_per_topic(target) == published, 90, "the archiver to commit")
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(rng.uniform(0, 0.3))  # a random instant inside the commit cycle
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        # the process is dead: what it left is final; was there work it had not done?
        interrupted += consumed_per_topic(target) != published
    publisher.join()
    started = log.read_text().count("consuming ")
    proc = start_archiver(bootstrap, topic_prefix, target, log, log_level="INFO")
    wait_for(lambda: log.read_text().count("consuming ") > started or proc.poll() is not None,
             60, "the archiver to start consuming")
    wait_for(lambda: consumed_per_topic(target) == published, 90, "the archiver to catch up")
    assert proc.poll() is None, log.read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()[-3000:]

    con = target.connect()
    stored = con.execute("SELECT commit_lsn, position, table_name, op, key, after "
                         "FROM raw_changes").fetchall()
    expected = [(e.commit_lsn, e.position, e.source.table, e.op.value,
                 to_json(e.key).decode(), None if e.after is None else to_json(e.after).decode())
                for e in changes]
    assert kills >= 3 and interrupted >= 3, (kills, interrupted)
    assert len(stored) == len(expected) == 100_000  # no duplicate stored, not merely hidden
    assert sorted(stored) == sorted(expected)
    assert con.execute("SELECT count(*), count(DISTINCT commit_lsn) FROM raw_transactions"
                       ).fetchall() == [(10_000, 10_000)]


def test_a_kill_inside_a_delta_commit_loses_and_repeats_nothing(
        broker: Broker, topic_prefix: str, tmp_path: Path, archive_target: ArchiveTarget
) -> None:
    bootstrap, log, target = broker.bootstrap_servers, tmp_path / "arch.log", archive_target
    published: dict[str, int] = {}
    mid_commit = kills = chunks = 0
    while not mid_commit and kills < 25:
        # a fresh backlog for every start, so the archiver always has a commit to make
        changes, ends = workload(transactions=2_000, per_txn=10, first_lsn=1_000 + chunks * 10**6)
        publish(bootstrap, topic_prefix, changes, ends)
        chunks += 1
        for t in ("core_relationships", "core_dynamic_data"):
            topic = table_topic(topic_prefix, "public", t)
            published[topic] = published.get(topic, 0) + 10_000
        published[transaction_topic(topic_prefix)] = 2_000 * chunks
        proc = start_archiver(bootstrap, topic_prefix, target, log, "WARNING",
                              "--batch-events", "5000")
        before = _unreferenced(target)
        known = {Path(f).name for f in data_files(target)}
        # kill the moment a new data file shows up (one store listing per check, fast on
        # S3 too): its commit is between writing its files and writing its log entry, or
        # has just finished; which one, the table tells afterwards
        wait_for(lambda: bool({Path(f).name for f in data_files(target)} - known)  # noqa: B023
                 or proc.poll() is not None, 90, "a commit's data file", interval=0.001)  # noqa: B023
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        mid_commit += _unreferenced(target) > before
    assert mid_commit, f"no kill of {kills} landed between a commit's files and its log entry"
    proc = start_archiver(bootstrap, topic_prefix, target, log)
    wait_for(lambda: consumed_per_topic(target) == published, 90, "the archiver to catch up")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()[-3000:]
    rows = target.connect().execute(
        "SELECT count(*), count(DISTINCT (commit_lsn, position)) FROM raw_changes").fetchall()
    assert rows == [(20_000 * chunks, 20_000 * chunks)]
