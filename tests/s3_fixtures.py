"""A real S3-compatible object store for tests (devstack.s3: SeaweedFS, started by the tests
on free ports in their own directory, removed afterwards). Each test gets its own bucket
prefix on the one session server; ``archive_target`` runs a test on both backends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from consumers.archive.commit_state import CommitState
from consumers.archive.location import ArchiveLocation, archive_location
from consumers.archive.reader import connect_history
from consumers.archive.store import read_commit_state
from devstack.s3 import S3Server, start_s3


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3()
    try:
        yield server
    finally:
        server.stop()


# --- where an archive test writes: a local directory or a prefix on the S3 server ----------


@dataclass
class ArchiveTarget:
    """The ``--archive`` of one test, on one backend; ``env`` goes to archiver processes."""

    backend: str  # "local" | "s3"
    uri: str
    env: dict[str, str]

    def location(self) -> ArchiveLocation:
        return archive_location(self.uri, self.env or None)

    def state(self) -> CommitState:
        """The archive's commit state now (empty before the table exists)."""
        from deltalake import DeltaTable

        loc = self.location()
        if not DeltaTable.is_deltatable(loc.uri, storage_options=loc.options()):
            return CommitState()
        return read_commit_state(DeltaTable(loc.uri, storage_options=loc.options()))

    def connect(self, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        return connect_history(self.location(), **kwargs)


@pytest.fixture(params=["local", "s3"])
def archive_target(request: pytest.FixtureRequest, tmp_path: Path) -> ArchiveTarget:
    """Every archive test runs on both backends: a local path and the real S3 server."""
    if request.param == "local":
        return ArchiveTarget("local", str(tmp_path / "archive"), {})
    server: S3Server = request.getfixturevalue("s3_server")
    return ArchiveTarget("s3", server.uri(f"t-{uuid.uuid4().hex[:12]}"), server.env())
