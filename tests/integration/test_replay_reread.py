"""Replay across a DDL the stream cannot express, healed by capture's automatic re-read
(both plugins; capture + archiver + replay, concurrent writes on the rows being re-read):
points before the DDL are exact; a point between the DDL and the re-read's end is refused in
one line naming the DDL and the window, or exact; every point after the re-read equals
PostgreSQL's own copy (EXCEPT ALL both ways, every column as text); a revert of a
transaction from before the DDL works after the re-read (replay/revert_reread.py), and one
that changed a column the DDL computes from is refused in one line naming it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from capture.event import format_lsn, parse_lsn
from capture.service import CaptureService
from consumers.archive.reader import connect_history
from devstack.broker import Broker
from replay.cli import main
from tests.capture_fixtures import PLUGINS, running_capture, wait_until
from tests.conftest import HeraDB
from tests.integration.archive_support import start_archiver
from tests.replay_fixtures import Pipeline, rows_differing
from tests.reread_fixtures import RR_DDL, traffic

SCHEMA_LOG = Path(__file__).parents[2] / "sql" / "08_schema_log.sql"
COLUMNS = ["a", "b", "v", "big"]
# (DDL, the schema log installed, the column it adds or None)
CASES = {
    "type_using": ("ALTER TABLE rr ALTER COLUMN v TYPE numeric USING v + 0.5", True, None),
    "volatile_default": ("ALTER TABLE rr ADD COLUMN u text DEFAULT md5(random()::text)", True,
                         "u"),
    # Generated columns are not in the stream (PostgreSQL computes them on every write).
    "stored_generated": ("ALTER TABLE rr ADD COLUMN g integer GENERATED ALWAYS AS (v * 2) "
                         "STORED", True, None),
    "unrecorded": ("ALTER TABLE rr ADD COLUMN x text DEFAULT 'x'", False, "x"),
}


@dataclass
class Run:
    db: HeraDB
    svc: CaptureService
    pipe: Pipeline
    conn: psycopg.Connection[Any]

    def lsn(self) -> int:
        row = self.conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return parse_lsn(str(row[0]))

    def copy(self, name: str) -> int:
        self.conn.execute(sql.SQL("CREATE TABLE {} AS TABLE rr").format(sql.Identifier(name)))
        return self.lsn()

    def replay(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--archive", str(self.pipe.archive), "--dsn",
                                         self.db.dsn, "--table", "public.rr", *args])

    def sync(self) -> None:
        self.pipe.sync_by(self.conn, "UPDATE rr SET v = v WHERE a = (SELECT min(a) FROM rr) "
                                     "RETURNING pg_current_wal_lsn()::text")

    def reread_done(self) -> bool:
        return any(s.table == "public.rr" and s.finished for s in self.svc.rereads.states)


@pytest.fixture(params=PLUGINS)
def plugin(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def run(empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str, tmp_path: Path,
        plugin: str, case: str) -> Iterator[Run]:
    with empty_db.connect() as conn:
        conn.execute(RR_DDL)
        conn.execute("INSERT INTO rr SELECT i, 'q', i FROM generate_series(2000, 2010) i")
        if CASES[case][1]:
            conn.execute(SCHEMA_LOG.read_text())
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin=plugin, tables=("public.rr",), reread_chunk_rows=16,
                         heartbeat_interval_s=0.5, confirm_interval_s=0.1) as svc, \
            empty_db.connect() as conn:
        archive = tmp_path / "archive"
        proc = start_archiver(broker.bootstrap_servers, topic_prefix, archive,
                              tmp_path / "archiver.log")
        try:
            yield Run(empty_db, svc, Pipeline(empty_db.dsn, archive), conn)
        finally:
            proc.terminate()
            proc.wait(30)


def test_points_around_a_rewriting_ddl_are_exact_or_refused_and_exact_after_the_reread(
        run: Run, case: str) -> None:
    ddl, _, added = CASES[case]
    c = run.conn
    with traffic(run.db.dsn) as done:
        wait_until(lambda: done[0] > 20, 30, "traffic to start")
    with c.transaction():
        c.execute("UPDATE rr SET big = 'changed' WHERE a IN (2001, 2002)")
        row = c.execute("SELECT txid_current()").fetchone()
    assert row is not None
    xid = int(str(row[0]))
    with c.transaction():
        c.execute("UPDATE rr SET v = v + 7 WHERE a = 2003")
        row = c.execute("SELECT txid_current()").fetchone()
    assert row is not None
    xid_v = int(str(row[0]))
    with c.transaction():
        c.execute("UPDATE rr SET big = 'first' WHERE a = 2004")
        row = c.execute("SELECT txid_current()").fetchone()
    assert row is not None
    xid_again = int(str(row[0]))
    c.execute("UPDATE rr SET big = 'again' WHERE a = 2004")  # before the re-read's end
    before = run.copy("before")
    c.execute(ddl)
    at_ddl = run.copy("at_ddl")
    with traffic(run.db.dsn, seed=11) as done:
        wait_until(run.reread_done, 120, "the re-read after the DDL to finish")
        if case == "unrecorded":
            assert done[0] > 0
    after = run.copy("after")
    run.sync()
    cols = COLUMNS + ([added] if added else [])

    ok = run.replay("--until", format_lsn(before), "--into-table", "public.r_before")
    assert ok.exit_code == 0, ok.output
    assert rows_differing(c, "before", "r_before", COLUMNS) == 0

    inside = run.replay("--until", format_lsn(at_ddl), "--into-table", "public.r_at_ddl")
    if inside.exit_code == 0:
        # Unrecorded: nothing in the stream tells of the DDL before a row shows its columns.
        known = COLUMNS if case == "unrecorded" else cols
        assert rows_differing(c, "at_ddl", "r_at_ddl", known) == 0
    else:
        assert inside.exit_code == 1
        assert "exact again from" in inside.output, inside.output
        errors = [ln for ln in inside.output.splitlines() if "error:" in ln]
        assert len(errors) == 1 and ddl.split(" ", 3)[3][:20] in errors[0], errors

    ok = run.replay("--until", format_lsn(after), "--into-table", "public.r_after")
    assert ok.exit_code == 0, ok.output
    assert rows_differing(c, "after", "r_after", cols) == 0

    verified = CliRunner().invoke(main, ["verify", "--archive", str(run.pipe.archive),
                                         "--dsn", run.db.dsn, "--table", "public.rr"])
    assert verified.exit_code == 0, verified.output
    history = connect_history(run.pipe.archive)
    shown = history.execute(
        "SELECT DISTINCT operation, reread_reason IS NOT NULL FROM change_log WHERE "
        "\"table\" = 'public.rr' AND xid IS NOT NULL AND operation = 're-read'").fetchall()
    assert shown == [("re-read", True)]
    summary = history.execute(
        "SELECT sum(reread_rows), sum(snapshot_rows) FROM transaction_summary "
        "WHERE xid IS NOT NULL").fetchall()
    assert summary[0][0] > 0 and summary[0][1] == 0, summary
    ended = history.execute('SELECT reason FROM rereads WHERE "table" = \'public.rr\'').fetchall()
    assert ended and all(r[0] for r in ended), ended

    c.execute("CREATE TABLE expected AS TABLE rr")
    c.execute("UPDATE expected SET big = NULL WHERE a IN (2001, 2002)")
    c.execute("CREATE TABLE now_ AS TABLE rr")
    reverted = run.replay("--revert-xid", str(xid))
    # Every case: the transaction changed `big` only; the columns the DDL rewrote hold, before
    # and after it, the value the re-read recorded (and generated ones PostgreSQL computes).
    assert reverted.exit_code == 0, reverted.output
    assert rows_differing(c, "expected", "rr", cols) == 0

    # A row changed again after the transaction and before the re-read's end: its value after
    # the transaction in today's columns was never recorded (stored_generated: no column is
    # unknown, the change is an ordinary conflict). Refused either way, nothing changed.
    c.execute("DROP TABLE now_")
    c.execute("CREATE TABLE now_ AS TABLE rr")
    reverted = run.replay("--revert-xid", str(xid_again))
    assert reverted.exit_code == 1, reverted.output
    assert case == "stored_generated" or "changed again" in reverted.output, reverted.output
    assert rows_differing(c, "now_", "rr", cols) == 0

    # A transaction that changed v: only `USING v + 0.5` computed a column from it.
    c.execute("UPDATE expected SET v = v - 7 WHERE a = 2003")
    c.execute("DROP TABLE now_")
    c.execute("CREATE TABLE now_ AS TABLE rr")
    reverted = run.replay("--revert-xid", str(xid_v))
    if case == "type_using":
        assert reverted.exit_code == 1, reverted.output
        errors = [ln for ln in reverted.output.splitlines() if "error:" in ln]
        assert len(errors) == 1 and "column v changed by the transaction" in errors[0], errors
        assert rows_differing(c, "now_", "rr", cols) == 0
        return
    assert reverted.exit_code == 0, reverted.output
    assert rows_differing(c, "expected", "rr", cols) == 0


def test_a_table_added_later_replays_exactly_after_its_reread_and_is_refused_before_its_end(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    with empty_db.connect() as conn:
        conn.execute(RR_DDL)
        conn.execute("CREATE TABLE added (a integer, b text, v integer, big text, "
                     "PRIMARY KEY (a, b))")
        conn.execute("INSERT INTO added SELECT i, 'k', i FROM generate_series(1, 120) i")
    archive = tmp_path / "archive"
    proc = start_archiver(broker.bootstrap_servers, topic_prefix, archive,
                          tmp_path / "archiver.log")
    args: dict[str, Any] = dict(plugin="pgoutput", reread_chunk_rows=16,
                                heartbeat_interval_s=0.5, confirm_interval_s=0.1)
    try:
        with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                             tables=("public.rr",), **args), empty_db.connect() as conn:
            # Changes of `added` nobody captures: only the re-read can know them.
            conn.execute("UPDATE added SET v = v * 10 WHERE a % 3 = 0")
            conn.execute("DELETE FROM added WHERE a % 7 = 0")
        with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                             tables=("public.rr", "public.added"), **args) as svc, \
                empty_db.connect() as conn:
            run = Run(empty_db, svc, Pipeline(empty_db.dsn, archive), conn)

            def state() -> Any:
                return next((s for s in svc.rereads.states if s.table == "public.added"), None)

            with traffic(empty_db.dsn, table="added", seed=5):
                wait_until(lambda: state() is not None and state().finished, 60,
                           "the added table's re-read")
            conn.execute("CREATE TABLE now_added AS TABLE added")
            now = run.copy("now_rr")
            run.sync()

            def replay(table: str, lsn: int, into: str) -> Result:
                return CliRunner().invoke(main, [
                    "--archive", str(archive), "--dsn", empty_db.dsn, "--table", table,
                    "--until", format_lsn(lsn), "--into-table", into])

            ok = replay("public.rr", now, "public.r_now")
            assert ok.exit_code == 0, ok.output
            assert rows_differing(conn, "now_rr", "r_now", COLUMNS) == 0
            ok = replay("public.added", now, "public.r_added")
            assert ok.exit_code == 0, ok.output
            assert rows_differing(conn, "now_added", "r_added", COLUMNS) == 0
            end = state().done_lsn
            refused = replay("public.added", state().requested_lsn, "public.r_early")
            assert refused.exit_code == 1, refused.output
            errors = [ln for ln in refused.output.splitlines() if "error:" in ln]
            assert len(errors) == 1 and f"exact from {format_lsn(end)}" in errors[0], errors
            shown = connect_history(archive).execute(
                'SELECT reason, requested_lsn FROM rereads WHERE "table" = \'public.added\''
            ).fetchall()
            assert shown == [("added to --tables", state().requested_lsn)]
            reasons = connect_history(archive).execute(
                "SELECT DISTINCT reread_reason FROM change_log WHERE \"table\" = "
                "'public.added' AND operation = 're-read'").fetchall()
            assert reasons == [("added to --tables",)]
    finally:
        proc.terminate()
        proc.wait(30)
