"""SIGKILL at any instant, then a restart: every event of the workload archived exactly once."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

from pydantic_core import to_json

from capture.topics import table_topic, transaction_topic
from consumers.archive.reader import connect_history
from devstack.broker import Broker
from tests.archive_fixtures import wait_for, workload
from tests.integration.archive_support import (
    consumed_per_topic,
    generation,
    publish,
    start_archiver,
)


def test_archive_equals_the_workload_after_repeated_kill_9(
        broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    bootstrap, root, log = broker.bootstrap_servers, tmp_path / "archive", tmp_path / "arch.log"
    changes, ends = workload(transactions=10_000, per_txn=10)  # 100k changes
    resent = changes[40_000:41_000]  # capture re-sends after its own restart
    chunks = [(changes[i * 10_000:(i + 1) * 10_000], ends[i * 1_000:(i + 1) * 1_000])
              for i in range(10)]
    chunks.insert(5, (resent, []))
    stop = threading.Event()

    def publish_paced() -> None:  # spread over seconds, so the kills land mid-ingest
        for c, t in chunks:
            publish(bootstrap, topic_prefix, c, t)
            stop.wait(0.4)

    published = {table_topic(topic_prefix, "public", t): 50_500
                 for t in ("core_relationships", "core_dynamic_data")}
    published[transaction_topic(topic_prefix)] = 10_000

    publisher = threading.Thread(target=publish_paced)
    publisher.start()
    rng = random.Random(7)
    kills = 0
    while publisher.is_alive() or kills < 3:
        proc = start_archiver(bootstrap, topic_prefix, root, log)
        start_gen = generation(root)
        # an archiver that has caught up with a finished publisher commits nothing more:
        # it is killed idle (the archiver is faster than this paced publisher at times)
        wait_for(lambda: generation(root) >= start_gen + 2 or proc.poll() is not None  # noqa: B023
                 or consumed_per_topic(root) == published, 60, "the archiver to commit")
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(rng.uniform(0, 0.3))  # a random instant inside the commit cycle
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    publisher.join()
    # the killed archivers may have archived everything already: wait until this one has
    # started (its handlers are installed before it consumes), or SIGTERM lands mid-import
    started = log.read_text().count("consuming ")
    proc = start_archiver(bootstrap, topic_prefix, root, log, log_level="INFO")
    wait_for(lambda: log.read_text().count("consuming ") > started or proc.poll() is not None,
             60, "the archiver to start consuming")
    wait_for(lambda: consumed_per_topic(root) == published, 60, "the archiver to catch up")
    assert proc.poll() is None, log.read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()[-3000:]

    con = connect_history(root)
    stored = con.execute("SELECT commit_lsn, position, table_name, op, key, after "
                         "FROM raw_changes").fetchall()
    expected = [(e.commit_lsn, e.position, e.source.table, e.op.value,
                 to_json(e.key).decode(), None if e.after is None else to_json(e.after).decode())
                for e in changes]
    assert kills >= 3
    assert len(stored) == len(expected) == 100_000  # no duplicate stored, not merely hidden
    assert sorted(stored) == sorted(expected)
    assert con.execute("SELECT count(*), count(DISTINCT commit_lsn) FROM raw_transactions"
                       ).fetchall() == [(10_000, 10_000)]
