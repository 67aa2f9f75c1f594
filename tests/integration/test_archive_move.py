"""Moving an archive of this release to object storage is a copy: the table holds only
relative paths, and its position and identity live in its own log."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pyarrow import fs

from consumers.archive.location import archive_location
from consumers.archive.reader import connect_history
from consumers.archive.store import ArchiveStore
from devstack.s3 import S3Server
from hera_kit.identity import StreamIdentity
from tests.archive_fixtures import workload


def test_a_local_archive_copied_to_s3_has_the_same_rows_position_and_identity(
        tmp_path: Path, s3_server: S3Server) -> None:
    local = tmp_path / "archive"
    identity = StreamIdentity(topic_prefix="hera", kafka_cluster_id="c1", db="db", slot="s")
    changes, ends = workload(transactions=20, per_txn=3)
    with ArchiveStore.open_or_create(local) as store:
        store.append(changes[:30], ends[:10], offsets={("hera.transaction", 0): 10},
                     identity=identity)
        store.append(changes[30:], ends[10:], offsets={("hera.transaction", 0): 20})
        offsets, version = store.offsets(), store.version()

    env = s3_server.env()
    endpoint = urlparse(env["AWS_ENDPOINT_URL"])
    s3 = fs.S3FileSystem(access_key=env["AWS_ACCESS_KEY_ID"],
                         secret_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_REGION"],
                         endpoint_override=endpoint.netloc, scheme=endpoint.scheme)
    fs.copy_files(str(local), f"{s3_server.bucket}/moved", source_filesystem=fs.LocalFileSystem(),
                  destination_filesystem=s3)

    moved = archive_location(s3_server.uri("moved"), env)
    with ArchiveStore.open_or_create(moved, create=False) as store:
        assert store.offsets() == offsets
        assert store.identity() == identity
        assert store.version() == version
    query = "SELECT count(*), sum(position) FROM changes"
    assert (connect_history(moved).execute(query).fetchall()
            == connect_history(local).execute(query).fetchall() == [(60, 60)])
