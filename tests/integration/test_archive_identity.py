"""The archive is bound to its stream: another broker, a broker replaced by an empty one, an
unreachable broker — each is one line and a non-zero exit, with the archive unchanged. And
every command exits with its own code on the S3 backend (no abort at interpreter exit)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from devstack.broker import Broker
from devstack.ports import free_port
from tests.archive_fixtures import wait_for, workload
from tests.integration.archive_support import (
    CONSUMERS,
    consumed_per_topic,
    generation,
    publish,
    start_archiver,
)
from tests.s3_fixtures import ArchiveTarget


def _archive_some(broker: Broker, prefix: str, target: ArchiveTarget, log: Path) -> None:
    changes, ends = workload(transactions=50, per_txn=4)
    publish(broker.bootstrap_servers, prefix, changes, ends)
    proc = start_archiver(broker.bootstrap_servers, prefix, target, log)
    wait_for(lambda: sum(consumed_per_topic(target).values()) == 250, 60, "the workload")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()[-3000:]


def _run(args: list[str], target: ArchiveTarget) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONSUMERS, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **target.env})


def test_an_archive_of_another_broker_is_refused_with_one_line_and_left_unchanged(
        own_broker: Broker, broker: Broker, topic_prefix: str, tmp_path: Path,
        archive_target: ArchiveTarget) -> None:
    _archive_some(own_broker, topic_prefix, archive_target, tmp_path / "a.log")
    before = archive_target.state()
    # the session broker has never seen these topics: the stream the archive knew is gone
    out = _run(["archive", "--bootstrap-servers", broker.bootstrap_servers, "--archive",
                archive_target.uri, "--topic-prefix", topic_prefix], archive_target)
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "has no partition" in lines[0] and "--new-archive-epoch" in lines[0]
    assert archive_target.state() == before


def test_an_archiver_whose_broker_is_replaced_by_an_empty_one_stops_loudly(
        own_broker: Broker, topic_prefix: str, tmp_path: Path,
        archive_target: ArchiveTarget) -> None:
    log = tmp_path / "a.log"
    changes, ends = workload(transactions=50, per_txn=4)
    publish(own_broker.bootstrap_servers, topic_prefix, changes, ends)
    proc = start_archiver(own_broker.bootstrap_servers, topic_prefix, archive_target, log)
    wait_for(lambda: sum(consumed_per_topic(archive_target).values()) == 250, 60, "workload")
    batch = generation(archive_target)
    own_broker.stop()
    own_broker.start()  # same address, memory storage: empty
    assert proc.wait(60) == 3, log.read_text()[-3000:]
    last = log.read_text().strip().splitlines()[-1]
    # seen before the broker re-creates the topics (missing) or after (empty)
    assert last.startswith("consumers: ") and ("has no partition" in last or "is empty" in last)
    assert generation(archive_target) == batch


def test_an_unreachable_broker_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    target = ArchiveTarget("local", str(tmp_path / "new-archive"), {})
    out = _run(["archive", "--bootstrap-servers", "127.0.0.1:1", "--archive", target.uri],
               target)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("consumers: cannot reach the Kafka")
    assert len([x for x in out.stderr.splitlines() if x.startswith("consumers:")]) == 1
    assert not Path(target.uri).exists()


def test_every_command_exits_with_its_own_code_on_s3(
        broker: Broker, topic_prefix: str, tmp_path: Path, s3_server: object) -> None:
    from devstack.s3 import S3Server

    assert isinstance(s3_server, S3Server)
    target = ArchiveTarget("s3", s3_server.uri(f"rc-{topic_prefix}"), s3_server.env())
    _archive_some_on(broker, topic_prefix, target, tmp_path)
    ok = _run(["history", target.uri, "SELECT count(*) FROM changes"], target)
    assert ok.returncode == 0 and "200" in ok.stdout, ok.stderr
    bad = _run(["history", target.uri, "SELECT nonsense FROM nowhere"], target)
    assert bad.returncode == 2 and bad.stderr.startswith("consumers: query failed")
    old = _run(["history", target.uri, "--version", "1", "SELECT count(*) FROM changes"], target)
    assert old.returncode == 0, old.stderr
    missing = _run(["history", s3_server.uri("no-such-archive")], target)
    assert missing.returncode == 2 and "not a hera-guard archive" in missing.stderr
    for out in (ok, bad, old, missing):
        assert "terminate called" not in out.stderr


@pytest.mark.parametrize(("fault", "said"), [
    ("no such bucket", "NoSuchBucket"),
    ("wrong secret", "SignatureDoesNotMatch"),
    ("no server at the endpoint", "Connection refused"),
])
def test_an_object_store_that_cannot_be_used_is_one_line_for_every_command(
        broker: Broker, s3_server: object, fault: str, said: str) -> None:
    from devstack.s3 import S3Server

    assert isinstance(s3_server, S3Server)
    env, uri = dict(s3_server.env()), s3_server.uri("archive")
    if fault == "no such bucket":
        uri = "s3://no-such-bucket/archive"
    elif fault == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    else:
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    target = ArchiveTarget("s3", uri, env)
    for args in (["archive", "--bootstrap-servers", broker.bootstrap_servers, "--archive", uri],
                 ["history", uri, "SELECT 1"]):
        out = _run(args, target)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"consumers: cannot reach {uri}: "), lines
        # The hint follows what failed: nothing listening is the endpoint, not the keys.
        names = "AWS_ENDPOINT_URL" if fault == "no server at the endpoint" else \
            "AWS_SECRET_ACCESS_KEY"
        assert said in lines[0] and names in lines[0]
        assert env["AWS_SECRET_ACCESS_KEY"] not in out.stderr


def _archive_some_on(broker: Broker, prefix: str, target: ArchiveTarget, tmp: Path) -> None:
    log = tmp / "a.log"
    changes, ends = workload(transactions=50, per_txn=4)
    publish(broker.bootstrap_servers, prefix, changes, ends)
    proc = start_archiver(broker.bootstrap_servers, prefix, target, log)
    wait_for(lambda: sum(consumed_per_topic(target).values()) == 250, 60, "the workload")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()[-3000:]  # the archiver's own code, not 134


def test_a_second_archiver_on_the_same_archive_is_refused_with_one_line(
        broker: Broker, topic_prefix: str, tmp_path: Path, archive_target: ArchiveTarget
) -> None:
    changes, ends = workload(transactions=400, per_txn=5)
    publish(broker.bootstrap_servers, topic_prefix, changes[:1_000], ends[:200])
    first = start_archiver(broker.bootstrap_servers, topic_prefix, archive_target,
                           tmp_path / "1.log", "INFO")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: sum(consumed_per_topic(archive_target).values()) == 1_200, 60,
                 "batch 1")
        second = start_archiver(broker.bootstrap_servers, topic_prefix, archive_target,
                                tmp_path / "2.log", "INFO")
        # on a local path the second is refused at start (lock); on S3 at its first commit,
        # which conflicts with the first archiver's app transaction: once the second has
        # read the position, new records make both try to commit the same batch number
        log2 = tmp_path / "2.log"
        two = second
        wait_for(lambda: "consuming " in log2.read_text() or two.poll() is not None, 60,
                 "the second archiver to start")
        publish(broker.bootstrap_servers, topic_prefix, changes[1_000:], ends[200:])
        procs = {"1": first, "2": two}
        wait_for(lambda: any(p.poll() is not None for p in procs.values()), 90,
                 "one archiver to give up")
        name = next(n for n, p in procs.items() if p.poll() is not None)
        loser, winner = procs[name], procs["2" if name == "1" else "1"]
        assert loser.returncode == 2
        last = (tmp_path / f"{name}.log").read_text().strip().splitlines()[-1]
        assert last.startswith("consumers: ") and "another archiver" in last
        wait_for(lambda: sum(consumed_per_topic(archive_target).values()) == 2_400, 60,
                 "the rest")
        winner.send_signal(signal.SIGTERM)
        assert winner.wait(20) == 0
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert archive_target.connect().execute(
        "SELECT count(*), count(DISTINCT (commit_lsn, position)) FROM raw_changes"
    ).fetchall() == [(2_000, 2_000)]


def test_new_archive_epoch_continues_the_archive_with_the_new_broker(
        own_broker: Broker, broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    target = ArchiveTarget("local", str(tmp_path / "archive"), {})
    _archive_some(own_broker, topic_prefix, target, tmp_path / "a.log")
    changes, ends = workload(transactions=20, per_txn=4, first_lsn=900_000)
    publish(broker.bootstrap_servers, topic_prefix, changes, ends)
    proc = start_archiver(broker.bootstrap_servers, topic_prefix, target, tmp_path / "b.log",
                          "WARNING", "--new-archive-epoch")
    wait_for(lambda: sum(consumed_per_topic(target).values()) == 100, 60, "the new stream")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert target.connect().execute("SELECT count(*) FROM changes").fetchall() == [(280,)]
