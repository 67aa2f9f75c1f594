"""How far the archive reaches in time is PostgreSQL's clock, never capture's.

A PROGRESS marker vouches for WAL up to its LSN. A capture that lags (a backlog: it reads WAL
written minutes ago) publishes its markers later than that WAL was written; here a capture
whose clock runs ten minutes ahead stands for one ten minutes behind. A commit after the
marker's LSN, not archived yet, must not be taken as covered because the marker's own time
is later: replay refuses the time until capture has archived it, then rebuilds it exactly.
An idle database still advances the reach: capture's heartbeat commits, and its commit time
is the server's. The pipeline is the real one (capture in-process, broker, archiver).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from devstack.broker import Broker
from replay.cli import main
from tests.capture_fixtures import PLUGINS, running_capture
from tests.conftest import HeraDB
from tests.integration.archive_support import start_archiver
from tests.replay_fixtures import Pipeline, copy_moment, table_difference
from tests.waiting import wait_until

LAG_S = 600.0
FAST = {"heartbeat_interval_s": 0.5, "confirm_interval_s": 0.1}


def _write(conn: psycopg.Connection[Any], tag: str) -> None:
    conn.execute("UPDATE core_relationships SET relationship_type = %s, version = version + 1 "
                 "WHERE id IN (SELECT id FROM core_relationships ORDER BY id LIMIT 2)", (tag,))


@dataclass
class Stack:
    db: HeraDB
    conn: psycopg.Connection[Any]
    pipe: Pipeline
    capture: dict[str, Any]  # running_capture's arguments but the clock

    def replay(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--archive", str(self.pipe.archive), "--table",
                                         "public.core_relationships", *args])


@pytest.fixture
def stack(hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
          tmp_path: Path) -> Iterator[Stack]:
    archive = tmp_path / "archive"
    proc = start_archiver(broker.bootstrap_servers, topic_prefix, archive,
                          tmp_path / "archiver.log")
    try:
        with hera_db.connect() as conn:
            yield Stack(hera_db, conn, Pipeline(hera_db.dsn, archive),
                        {"dsn": hera_db.dsn, "bootstrap_servers": broker.bootstrap_servers,
                         "prefix": topic_prefix, "slot": slot_name, **FAST})
    finally:
        proc.terminate()
        proc.wait(30)


def _server_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_a_lagging_captures_marker_time_does_not_cover_a_commit_it_has_not_archived(
        stack: Stack) -> None:
    with running_capture(clock=lambda: time.time() + LAG_S, **stack.capture):
        _write(stack.conn, "SEEN")
        stack.pipe.sync()
    # Capture has not read this commit yet; its markers say a time ten minutes later.
    _write(stack.conn, "NOT_YET_ARCHIVED")
    _, at = copy_moment(stack.conn, "at_point")
    out = stack.pipe.archive.parent / "state.csv"
    refused = stack.replay("--until", at.isoformat(), "--output", str(out))
    assert refused.exit_code == 1, refused.output
    errors = [ln for ln in refused.output.splitlines() if ln.startswith("replay: error:")]
    assert len(errors) == 1 and "beyond the archive" in errors[0], refused.output
    assert not out.exists()
    # Once capture has archived it and a later commit, the same time is rebuilt exactly.
    with running_capture(**stack.capture):
        stack.pipe.sync_by(stack.conn, "UPDATE core_relationships SET version = version WHERE "
                           "id = (SELECT id FROM core_relationships ORDER BY id LIMIT 1) "
                           "RETURNING pg_current_wal_lsn()::text")
    done = stack.replay("--until", at.isoformat(), "--into-table", "public.replayed",
                        "--dsn", stack.db.dsn)
    assert done.exit_code == 0, done.output
    assert table_difference(stack.conn, "at_point", "replayed") == 0


@pytest.mark.parametrize("plugin", PLUGINS)
def test_an_idle_database_is_covered_up_to_now_by_captures_heartbeat(
        stack: Stack, plugin: str) -> None:
    with running_capture(clock=lambda: time.time() + LAG_S, plugin=plugin, **stack.capture):
        _write(stack.conn, "LAST")
        copy_moment(stack.conn, "idle_point")
        stack.pipe.sync()
        later = _server_now(stack.conn)  # after every commit: nothing is written from here

        def answered() -> bool:
            return stack.replay("--until", later.isoformat(), "--into-table",
                                "public.idle_replayed", "--dsn", stack.db.dsn).exit_code == 0

        wait_until(answered, 30, "a heartbeat to carry the archive's reach past the last write")
    assert table_difference(stack.conn, "idle_point", "idle_replayed") == 0


def test_a_time_before_the_snapshot_is_refused_though_captures_clock_says_it_started_earlier(
        stack: Stack) -> None:
    before = _server_now(stack.conn)
    _write(stack.conn, "IN_THE_SNAPSHOT")  # committed after ``before``, held by the snapshot
    with running_capture(clock=lambda: time.time() - LAG_S, **stack.capture):
        after = _server_now(stack.conn)  # the snapshot is done: capture is streaming
        stack.pipe.sync()
    out = stack.pipe.archive.parent / "state.csv"
    refused = stack.replay("--until", before.isoformat(), "--output", str(out))
    assert refused.exit_code == 1, refused.output
    errors = [ln for ln in refused.output.splitlines() if ln.startswith("replay: error:")]
    assert len(errors) == 1 and "before the oldest snapshot" in errors[0], refused.output
    assert not out.exists()
    copy_moment(stack.conn, "snapshot_state")
    done = stack.replay("--until", after.isoformat(), "--into-table", "public.from_snapshot",
                        "--dsn", stack.db.dsn)
    assert done.exit_code == 0, done.output
    assert table_difference(stack.conn, "snapshot_state", "from_snapshot") == 0
