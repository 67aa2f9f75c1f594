"""Online re-reads (capture/reread.py) against real PostgreSQL and broker, both plugins: a
table re-read in small key chunks while transactions keep updating, re-keying, deleting and
inserting the very rows being read comes out exactly as PostgreSQL holds it, from the
re-read's rows and the stream's changes alone; the rows are op r marked as a re-read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from click.testing import CliRunner

from capture.cli import main
from capture.event import Op, parse_lsn
from capture.ledger import last_marker
from capture.reread import SNAPSHOT_MARK, RereadState, request_reread
from capture.service import CaptureService
from devstack.broker import Broker
from tests.capture_fixtures import (
    PLUGINS,
    CaptureProcess,
    confirmed_lsn,
    read_events,
    running_capture,
    wait_until,
)
from tests.conftest import HeraDB
from tests.reread_fixtures import RR_DDL, fold, live_rows, traffic

PK = ("a", "b")


@pytest.fixture(params=PLUGINS)
def capture(request: pytest.FixtureRequest, empty_db: HeraDB, broker: Broker,
            topic_prefix: str, slot_name: str) -> Iterator[CaptureService]:
    with empty_db.connect() as conn:
        conn.execute(RR_DDL)
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin=request.param, tables=("public.rr",), reread_chunk_rows=16,
                         confirm_interval_s=0.1) as svc:
        yield svc


@pytest.fixture
def capture_slot(empty_db: HeraDB, slot_name: str) -> Iterator[str]:
    """A logical slot in the database (no capture needed to be refused)."""
    with empty_db.connect() as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot_name,))
    yield slot_name
    with empty_db.connect() as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot_name,))


def finished(svc: CaptureService, table: str) -> bool:
    return any(s.table == table and s.finished for s in svc.rereads.states)


def current_lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(str(row[0]))


def test_a_reread_under_concurrent_writes_rebuilds_the_table_exactly(
        capture: CaptureService, empty_db: HeraDB, broker: Broker, topic_prefix: str) -> None:
    with empty_db.connect() as conn:
        asked = current_lsn(conn)
    with traffic(empty_db.dsn) as done:
        wait_until(lambda: done[0] > 20, 30, "traffic to start")
        request_reread(empty_db.dsn, "public.rr")
        wait_until(lambda: finished(capture, "public.rr"), 120, "the re-read to finish")
    with empty_db.connect() as conn:
        conn.execute("UPDATE rr SET v = v WHERE a = (SELECT min(a) FROM rr)")
        end = current_lsn(conn)
    wait_until(lambda: capture.confirmed_lsn >= end, 60, "capture to confirm the last write")
    events = read_events(broker.bootstrap_servers, topic_prefix, "rr")
    state = next(s for s in capture.rereads.states if s.table == "public.rr")
    assert state.chunks > 10 and state.reason == "requested"
    registry = capture.metrics.registry
    assert registry.get_sample_value("hera_capture_reread_rows_total",
                                     {"table": "public.rr"}) == state.rows
    assert registry.get_sample_value("hera_capture_rereads_running") == 0
    reread = [e for e in events if e.reread is not None]
    assert reread and all(e.op is Op.READ and e.source.snapshot == SNAPSHOT_MARK
                          and e.source.txId is not None for e in reread)
    assert fold(events, PK, asked) == live_rows(empty_db.dsn, "public", "rr", PK)
    assert any(r["big"] is not None and len(r["big"]) == 4800 for r in
               (e.after or {} for e in reread))  # TOASTed values read whole


def test_a_second_request_for_a_table_being_reread_does_no_second_reread(
        capture: CaptureService, empty_db: HeraDB) -> None:
    request_reread(empty_db.dsn, "public.rr")
    request_reread(empty_db.dsn, "public.rr")
    wait_until(lambda: finished(capture, "public.rr"), 120, "the re-read to finish")
    assert len(capture.rereads.states) == 1
    assert capture.rereads.states[0].rows == 240


def newest_state(broker: Broker, prefix: str, slot: str, db: str) -> RereadState | None:
    marker = last_marker(broker.bootstrap_servers, prefix, slot, db)
    if marker is None or not marker.rereads:
        return None
    return msgspec.convert(marker.rereads[-1], RereadState)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_capture_resnapshot_while_traffic_runs_survives_kill_9_and_stops_cleanly(
        plugin: str, empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    with empty_db.connect() as conn:
        conn.execute(RR_DDL)
        conn.execute("INSERT INTO rr SELECT i, 'z', i FROM generate_series(300, 700) i")
        asked = current_lsn(conn)
    proc = CaptureProcess(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                          ["--plugin", plugin, "--tables", "public.rr",
                           "--reread-chunk-rows", "8"], tmp_path / "capture.log")
    db = empty_db.name
    proc.start()
    try:
        with traffic(empty_db.dsn) as done:
            wait_until(lambda: done[0] > 20, 30, "traffic to start")
            result = CliRunner().invoke(main, ["resnapshot", "--dsn", empty_db.dsn, "--slot",
                                               slot_name, "--table", "public.rr"])
            assert result.exit_code == 0, result.output
            assert "re-read of public.rr requested" in result.output
            wait_until(lambda: (s := newest_state(broker, topic_prefix, slot_name, db))
                       is not None and s.chunks >= 5, 60, "a few chunks to be confirmed")
            proc.kill()
            before = newest_state(broker, topic_prefix, slot_name, db)
            assert before is not None and not before.finished
            proc.start()
            wait_until(lambda: (s := newest_state(broker, topic_prefix, slot_name, db))
                       is not None and s.finished, 120, "the re-read to finish")
        with empty_db.connect() as conn:
            conn.execute("UPDATE rr SET v = v WHERE a = (SELECT min(a) FROM rr)")
            end = current_lsn(conn)
        wait_until(lambda: confirmed_lsn(empty_db.dsn, slot_name) >= end, 60,
                   "capture to confirm the last write")
        assert proc.terminate() == 0, proc.log()
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.kill()
    listed = CliRunner().invoke(main, ["status", "--dsn", empty_db.dsn, "--slot", slot_name,
                                       "--bootstrap-servers", broker.bootstrap_servers,
                                       "--topic-prefix", topic_prefix, "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)["rereads"]
    assert (row["table"], row["reason"], row["state"]) == ("public.rr", "requested", "finished")
    assert row["exact_from"] and row["rows"] > 0 and row["eta_s"] is None
    after = newest_state(broker, topic_prefix, slot_name, db)
    assert after is not None and after.started_ms == before.started_ms  # resumed, not redone
    assert after.chunks > before.chunks
    events = read_events(broker.bootstrap_servers, topic_prefix, "rr")
    assert fold(events, PK, asked) == live_rows(empty_db.dsn, "public", "rr", PK)


def test_capture_resnapshot_refuses_a_table_without_a_primary_key_in_one_line(
        empty_db: HeraDB, capture_slot: str) -> None:
    with empty_db.connect() as conn:
        conn.execute("CREATE TABLE nokey (a integer)")
    result = CliRunner().invoke(main, ["resnapshot", "--dsn", empty_db.dsn, "--slot",
                                       capture_slot, "--table", "public.nokey"])
    assert result.exit_code != 0
    assert "public.nokey has no primary key" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_table_added_to_tables_for_an_existing_slot_is_reread_online_and_then_streamed(
        plugin: str, empty_db: HeraDB, broker: Broker, topic_prefix: str,
        slot_name: str) -> None:
    with empty_db.connect() as conn:
        conn.execute(RR_DDL)
        conn.execute("CREATE TABLE added (id integer PRIMARY KEY, v text)")
        conn.execute("INSERT INTO added SELECT i, 'v' || i FROM generate_series(1, 50) i")
    args = dict(plugin=plugin, reread_chunk_rows=16, confirm_interval_s=0.1)
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.rr",), **args) as first:
        epoch = first.epoch_lsn
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.rr", "public.added"), **args) as svc:
        wait_until(lambda: finished(svc, "public.added"), 60, "the added table's re-read")
        with empty_db.connect() as conn:
            conn.execute("UPDATE added SET v = 'streamed' WHERE id = 7")
            end = current_lsn(conn)
        wait_until(lambda: svc.confirmed_lsn >= end, 60, "capture to confirm the update")
        assert svc.epoch_lsn == epoch  # no new epoch
        [state] = [s for s in svc.rereads.states if s.table == "public.added"]
        assert state.reason == "added to --tables" and state.rows == 50
    events = read_events(broker.bootstrap_servers, topic_prefix, "added")
    assert fold(events, ("id",), 0) == live_rows(empty_db.dsn, "public", "added", ("id",))
    assert not any(e.source.snapshot == "true" for e in events)  # no initial snapshot of it
