"""The object store of `hera-stack up --s3` as a newcomer meets it (devstack.s3, the same
SeaweedFS the command starts): the README's way to try the archive on S3 must work on a
fresh machine, and a store that fails says what it said, not what it did not."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

from capture.topics import table_topic
from devstack.broker import Broker
from devstack.s3 import S3Server, start_s3
from tests.capture_fixtures import running_capture, wait_until
from tests.conftest import HeraDB
from tests.integration.archive_support import CONSUMERS, consumed_per_topic, start_archiver
from tests.s3_fixtures import ArchiveTarget


def _store_outside_buckets(server: S3Server) -> None:
    """A file of the filer's own, outside every bucket: SeaweedFS grows volumes for it in
    the default collection, as it does within minutes of start for its metadata log. On a
    store with few volume slots that took them all and left the bucket none."""
    port = next(a.split("=", 1)[1] for a in server.command if a.startswith("-filer.port="))
    req = urllib.request.Request(f"http://127.0.0.1:{port}/notes/readme.txt", data=b"hello",
                                 method="PUT")
    with urllib.request.urlopen(req, timeout=30) as res:
        assert res.status in (200, 201)


def test_the_stacks_bucket_takes_the_archive_after_the_filer_took_volumes_of_its_own(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    server = start_s3("hera")
    try:
        _store_outside_buckets(server)
        target = ArchiveTarget("s3", server.uri("archive"), server.env())
        with hera_db.connect() as conn:
            (rows,) = conn.execute("SELECT count(*) FROM core_relationships").fetchone() or (0,)
        topic = table_topic(topic_prefix, "public", "core_relationships")
        log = tmp_path / "archive.log"
        with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name):
            # `consumers archive --archive s3://hera/archive`, as the README has it.
            proc = start_archiver(broker.bootstrap_servers, topic_prefix, target, log)
            try:
                wait_until(lambda: proc.poll() is not None
                           or consumed_per_topic(target).get(topic, 0) >= int(str(rows)),
                           120, "the snapshot to be archived on S3")
                assert proc.poll() is None, log.read_text()[-2000:]
            finally:
                proc.terminate()
                proc.wait(60)
        assert consumed_per_topic(target)[topic] == int(str(rows))
    finally:
        server.stop()


def test_an_s3_server_error_is_named_as_the_store_said_it_not_blamed_on_credentials(
        broker: Broker, topic_prefix: str) -> None:
    server = start_s3("hera", volume_slots=1)  # a store with no volume left for the bucket
    try:
        _store_outside_buckets(server)
        res = subprocess.run(
            [CONSUMERS, "archive", "--bootstrap-servers", broker.bootstrap_servers,
             "--archive", server.uri("archive"), "--topic-prefix", topic_prefix],
            capture_output=True, text=True, timeout=180, env={**os.environ, **server.env()})
    finally:
        server.stop()
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if "InternalError" in ln]
    assert len(lines) == 1, res.stderr[-3000:]
    assert "the store failed on its side" in lines[0]
    assert "credentials" not in lines[0]
