"""Schema changes while capturing, end to end (schema log trigger -> capture -> broker ->
archive -> replay): the table replayed to a point before, at and after each ADD / DROP /
RENAME / ALTER TYPE equals PostgreSQL's own copy at that point, column for column; a
revert of a transaction from before the DDLs restores exactly what it changed; what replay
cannot know (a volatile default, no schema log) is refused with rc 1, naming it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from capture.event import format_lsn, parse_lsn
from devstack.broker import Broker
from replay.cli import main
from tests.capture_fixtures import wait_until
from tests.conftest import HeraDB
from tests.replay_fixtures import Pipeline, pipeline, rows_differing

SCHEMA_LOG = Path(__file__).parents[2] / "sql" / "08_schema_log.sql"
DDL = """
CREATE TABLE sc (id integer PRIMARY KEY, a text, n integer, c character(4));
ALTER TABLE sc REPLICA IDENTITY FULL;
CREATE TABLE tick (id integer PRIMARY KEY, n integer);
ALTER TABLE tick REPLICA IDENTITY FULL;
INSERT INTO tick VALUES (1, 0);
"""


def columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    return [str(r[0]) for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (table,)).fetchall()]


def difference(conn: psycopg.Connection[Any], a: str, b: str) -> int:
    """Rows in one table and not the other, every column as its text (names must match)."""
    cols = columns(conn, a)
    assert sorted(cols) == sorted(columns(conn, b)), (a, b)
    return rows_differing(conn, a, b, cols)


@dataclass
class Run:
    db: HeraDB
    pipe: Pipeline
    conn: psycopg.Connection[Any]
    copies: list[tuple[str, int]] = field(default_factory=list)

    def replay(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--archive", str(self.pipe.archive), "--dsn",
                                         self.db.dsn, "--table", "public.sc", *args])

    def lsn(self) -> int:
        row = self.conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return parse_lsn(str(row[0]))

    def copy(self, name: str) -> int:
        self.conn.execute(sql.SQL("CREATE TABLE {} AS TABLE sc").format(sql.Identifier(name)))
        lsn = self.lsn()
        self.copies.append((name, lsn))
        return lsn

    def xid_of(self, statement: str) -> int:
        with self.conn.transaction():
            self.conn.execute(statement)
            row = self.conn.execute("SELECT txid_current()").fetchone()
        assert row is not None
        return int(str(row[0]))

    def sync(self) -> None:
        self.pipe.sync_by(self.conn, "UPDATE tick SET n = n + 1 "
                                     "RETURNING pg_current_wal_lsn()::text")


@pytest.fixture(params=["pgoutput", "wal2json"])
def plugin(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def run(empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path, plugin: str) -> Iterator[Run]:
    with empty_db.connect() as conn:
        conn.execute(DDL)
        conn.execute(SCHEMA_LOG.read_text())
    with pipeline(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name, tmp_path,
                  plugin=plugin, tables=("public.sc", "public.tick")) as pipe, \
            empty_db.connect() as conn:
        yield Run(empty_db, pipe, conn)


def test_points_before_at_and_after_each_ddl_equal_postgresqls_copies(run: Run) -> None:
    c = run.conn
    c.execute("INSERT INTO sc VALUES (1, 'one', 1, 'ab'), (2, 'two', 2, 'cd  '), "
              "(3, 'three', 3, NULL)")
    run.copy("before_add")
    c.execute("ALTER TABLE sc ADD COLUMN x text DEFAULT 'a'")
    run.copy("at_add")
    c.execute("UPDATE sc SET x = 'b' WHERE id = 2")
    c.execute("INSERT INTO sc (id, a, n, c, x) VALUES (4, 'four', 4, 'e', NULL)")
    run.copy("after_add")
    c.execute("ALTER TABLE sc DROP COLUMN a")
    run.copy("at_drop")
    c.execute("ALTER TABLE sc RENAME n TO num")
    run.copy("at_rename")
    c.execute("UPDATE sc SET num = 22 WHERE id = 2")
    c.execute("ALTER TABLE sc ALTER num TYPE bigint")
    run.copy("at_type")
    c.execute("UPDATE sc SET num = 10 WHERE id = 1")
    c.execute("ALTER TABLE sc ALTER c TYPE text")
    run.copy("at_char_to_text")
    c.execute("ALTER TABLE sc ADD COLUMN seen timestamptz DEFAULT clock_timestamp()")
    volatile = run.lsn()
    run.sync()
    for name, lsn in run.copies:
        result = run.replay("--until", format_lsn(lsn), "--into-table", f"public.r_{name}")
        assert result.exit_code == 0, (name, result.output)
        assert difference(c, name, f"r_{name}") == 0, name
    refused = run.replay("--until", format_lsn(volatile), "--into-table", "public.r_volatile")
    assert refused.exit_code == 1, refused.output
    assert "ADD COLUMN seen timestamptz DEFAULT clock_timestamp()" in refused.output
    assert c.execute("SELECT to_regclass('public.r_volatile')").fetchone() == (None,)


def test_revert_of_a_transaction_before_the_ddls_restores_only_what_it_changed(
        run: Run) -> None:
    c = run.conn
    c.execute("INSERT INTO sc VALUES (1, 'one', 1, 'ab'), (2, 'two', 2, 'cd'), "
              "(3, 'three', 3, NULL)")
    xid = run.xid_of("UPDATE sc SET n = 99, a = 'changed' WHERE id IN (2, 3)")
    untouched_since = run.xid_of("UPDATE sc SET n = 98 WHERE id = 1")
    c.execute("ALTER TABLE sc ADD COLUMN x text DEFAULT 'a'")
    c.execute("ALTER TABLE sc RENAME a TO label")
    c.execute("ALTER TABLE sc ALTER n TYPE bigint")
    c.execute("UPDATE sc SET x = 'later' WHERE id = 2")  # a later change of another column
    c.execute("CREATE TABLE expected AS TABLE sc")
    c.execute("UPDATE expected SET n = id, label = CASE id WHEN 2 THEN 'two' ELSE 'three' END "
              "WHERE id IN (2, 3)")
    run.sync()
    result = run.replay("--revert-xid", str(xid))
    assert result.exit_code == 0, result.output
    assert "reverted 2" in result.output
    assert difference(c, "expected", "sc") == 0
    # A volatile default rewrites every row with values the stream never carries; capture
    # re-reads the table, and from the re-read's end the revert of a transaction before
    # the DDL undoes exactly its own change (n) and keeps the rewritten column as it is.
    before_ddl = run.lsn()
    c.execute("ALTER TABLE sc ADD COLUMN seen timestamptz DEFAULT clock_timestamp()")
    run.pipe.wait_reread_ended("public.sc", before_ddl)
    run.sync()
    c.execute("CREATE TABLE now_ AS TABLE sc")
    c.execute("UPDATE now_ SET n = 1 WHERE id = 1")
    reverted = run.replay("--revert-xid", str(untouched_since))
    assert reverted.exit_code == 0, reverted.output
    assert "reverted 1" in reverted.output
    assert difference(c, "now_", "sc") == 0


def test_without_the_schema_log_a_column_change_is_reread_and_points_after_it_are_exact(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path, plugin: str) -> None:
    # capture notices the new columns on the next change, records the change unrecorded
    # and re-reads the table (capture/reread.py): rows written before it stop being unknown.
    with empty_db.connect() as conn:
        conn.execute(DDL)
        conn.execute("INSERT INTO sc VALUES (2, 'two', 2, 'cd')")
    with pipeline(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name, tmp_path,
                  plugin=plugin, tables=("public.sc", "public.tick")) as pipe, \
            empty_db.connect() as conn:
        run = Run(empty_db, pipe, conn)
        conn.execute("INSERT INTO sc VALUES (1, 'one', 1, 'ab')")
        before = run.copy("before")
        conn.execute("ALTER TABLE sc ADD COLUMN x text DEFAULT 'a'")
        conn.execute("UPDATE sc SET n = 3 WHERE id = 1")  # capture sees the new columns here
        run.sync()
        wait_until(lambda: "REREAD_END" in statuses(pipe), 60, "the re-read to be archived")
        after = run.copy("after")
        run.sync()
        ok = run.replay("--until", format_lsn(before), "--into-table", "public.r_before")
        assert ok.exit_code == 0, ok.output
        assert difference(conn, "before", "r_before") == 0
        ok = run.replay("--until", format_lsn(after), "--into-table", "public.r_after")
        assert ok.exit_code == 0, ok.output
        assert difference(conn, "after", "r_after") == 0


def statuses(pipe: Pipeline) -> set[str]:
    from consumers.archive.reader import connect_history

    try:
        return {str(r[0]) for r in connect_history(pipe.archive).execute(
            "SELECT DISTINCT status FROM markers").fetchall()}
    except Exception:  # not created yet by the archiver
        return set()


def test_a_first_rename_inside_a_migration_function_keeps_the_values(run: Run) -> None:
    # The statement text (SELECT migrate()) names no column: only the epoch's starting
    # definition, with its attnums, tells the rename from a drop and an add.
    c = run.conn
    c.execute("INSERT INTO sc VALUES (1, 'one', 1, 'ab'), (2, 'two', 2, NULL)")
    c.execute("CREATE FUNCTION migrate() RETURNS void LANGUAGE plpgsql AS "
              "$$ BEGIN EXECUTE 'ALTER TABLE sc RENAME a TO label'; END $$")
    c.execute("SELECT migrate()")
    at = run.copy("at_hidden_rename")
    run.sync()
    result = run.replay("--until", format_lsn(at), "--into-table", "public.r_hidden")
    assert result.exit_code == 0, result.output
    assert difference(c, "at_hidden_rename", "r_hidden") == 0
