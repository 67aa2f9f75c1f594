"""Faults both consumers meet the same way (issue 15, items 5, 7, 11): a record too large to
dead-letter whole, a second detector on one state file, a state directory that is a file."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from capture.kafka_admin import ensure_topics
from capture.topics import deadletter_topic, table_topic, transaction_topic
from consumers.deadletter import HEAD_BYTES, DeadLetter
from devstack.broker import Broker
from tests.archive_fixtures import wait_for, workload
from tests.detect_fixtures import read_topic
from tests.integration.archive_support import consumed_per_topic, publish, start_archiver
from tests.integration.test_detect_identity import detect_cli, last_line
from tests.integration.test_detect_stream import CONSUMERS
from tests.s3_fixtures import ArchiveTarget

JUNK = b"\x00junk" + b"x" * (5 * 1024 * 1024)


def test_a_5_mb_junk_record_is_dead_lettered_as_a_reference_and_both_consumers_go_on(
        broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    topic = table_topic(topic_prefix, "public", "core_relationships")
    ensure_topics(broker.bootstrap_servers, [transaction_topic(topic_prefix), topic,
                                             table_topic(topic_prefix, "public",
                                                         "core_dynamic_data")])
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers,
                         "message.max.bytes": 8 * 1024 * 1024})
    producer.produce(topic, key=b"junk", value=JUNK)
    assert producer.flush(30) == 0
    changes, ends = workload(transactions=5, per_txn=2)
    publish(broker.bootstrap_servers, topic_prefix, changes, ends)
    target = ArchiveTarget("local", str(tmp_path / "archive"), {})
    archiver = start_archiver(broker.bootstrap_servers, topic_prefix, target,
                              tmp_path / "a.log", "WARNING")
    detector = detect_cli(broker, topic_prefix, tmp_path / "state")
    try:
        wait_for(lambda: sum(consumed_per_topic(target).values()) == 1 + 10 + 5
                 or archiver.poll() is not None, 60, "the archiver to read past the junk")
        letters = [DeadLetter.from_json(r.value) for r in read_topic(
            broker.bootstrap_servers, deadletter_topic(topic_prefix),
            lambda rs: len(rs) >= 2 or archiver.poll() is not None
            or detector.poll() is not None, timeout_s=60)]
        assert archiver.poll() is None, (tmp_path / "a.log").read_text()[-2000:]
        assert detector.poll() is None, last_line(tmp_path / "state", topic_prefix)
    finally:
        for proc in (archiver, detector):
            proc.send_signal(signal.SIGTERM)
        rcs = (archiver.wait(30), detector.wait(30))
    assert rcs == (0, 0)
    assert sorted(letter.consumer for letter in letters) == ["archive", "detect"]
    for letter in letters:
        assert letter.is_reference and letter.value_b64 is None
        assert (letter.topic, letter.partition, letter.offset) == (topic, 0, 0)
        assert letter.value_size == len(JUNK) and letter.value_head_b64 is not None
        assert DeadLetter.model_validate(json.loads(letter.to_json())).value_head_b64
        assert "too large to dead-letter whole" in letter.reason
        assert base64.b64decode(letter.value_head_b64) == JUNK[:HEAD_BYTES]
    con = target.connect()
    assert con.execute("SELECT count(*) FROM raw_changes").fetchall() == [(10,)]


def test_a_second_detector_on_the_same_state_is_refused_with_one_line(
        broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = detect_cli(broker, topic_prefix, state)
    try:
        wait_for(lambda: any(state.glob("*.sqlite")) or first.poll() is not None, 30,
                 "the first detector's state file")
        second = subprocess.run(
            [CONSUMERS, "detect", "--bootstrap-servers", broker.bootstrap_servers,
             "--topic-prefix", topic_prefix, "--state-dir", str(state)],
            capture_output=True, text=True, timeout=60)
        assert first.poll() is None  # the first one runs on, untouched
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("consumers detect: ") and "in use by another detector" in lines[0]


def test_a_state_directory_that_is_a_file_is_one_line_and_changes_nothing(
        broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    afile = tmp_path / "hostname"
    afile.write_text("host\n")
    out = subprocess.run(
        [CONSUMERS, "detect", "--bootstrap-servers", broker.bootstrap_servers,
         "--topic-prefix", topic_prefix, "--state-dir", str(afile)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0] == (f"consumers detect: {afile} is not a directory: pass a directory as "
                        "--state-dir (or a file path as --state)")
    assert afile.read_text() == "host\n" and sorted(tmp_path.iterdir()) == [afile]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 300 KiB tmpfs (the machine's user is root, as in CI): a disk that fills up."""
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_full_disk_under_the_archiver_is_json_lines_only_and_it_commits_once_space_is_freed(
        broker: Broker, topic_prefix: str, tmp_path: Path, small_disk: Path) -> None:
    target = ArchiveTarget("local", str(small_disk / "archive"), {})
    log = tmp_path / "a.log"
    changes, ends = workload(transactions=3000, per_txn=10)
    proc = start_archiver(broker.bootstrap_servers, topic_prefix, target, log, "INFO")
    try:
        publish(broker.bootstrap_servers, topic_prefix, changes, ends)
        wait_for(lambda: log.read_text().count("archive store unavailable") >= 2
                 or proc.poll() is not None, 90, "the archiver to meet the full disk")
        assert proc.poll() is None, log.read_text()[-3000:]
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        wait_for(lambda: sum(consumed_per_topic(target).values()) == 33_000
                 or proc.poll() is not None, 120, "the archive to catch up after the disk")
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, log.read_text()[-3000:]
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    not_json = [ln for ln in lines if not ln.startswith("{")]
    assert not_json == [], not_json[:10]  # Rust panics included: one JSON line each
    for ln in lines:
        json.loads(ln)
    assert target.connect().execute("SELECT count(*) FROM raw_changes").fetchall() == [
        (30_000,)]
