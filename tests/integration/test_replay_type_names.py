"""One spelling of a type everywhere (capture's events, the schema log, replay's live read):
an enum and a domain living in ``public`` are ``public.mood`` / ``public.percent`` on every
side, so a revert after a schema change is not refused for a spelling difference and
restores exactly what the transaction changed (both plugins)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from devstack.broker import Broker
from replay.cli import main
from tests.conftest import HeraDB
from tests.replay_fixtures import Pipeline, pipeline, rows_differing

SCHEMA_LOG = Path(__file__).parents[2] / "sql" / "08_schema_log.sql"
DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN percent AS numeric(5,2) CHECK (VALUE BETWEEN 0 AND 100);
CREATE TABLE feel (id integer PRIMARY KEY, m mood, pct percent, note text);
ALTER TABLE feel REPLICA IDENTITY FULL;
"""
COLUMNS = ("id", "m", "pct", "note")


@pytest.fixture(params=["pgoutput", "wal2json"])
def plugin(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def feel(empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
         tmp_path: Path, plugin: str) -> Iterator[tuple[Pipeline, psycopg.Connection[Any]]]:
    with empty_db.connect() as conn:
        conn.execute(DDL)
        conn.execute(SCHEMA_LOG.read_text())
    with pipeline(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name, tmp_path,
                  plugin=plugin, tables=("public.feel",)) as pipe, \
            empty_db.connect() as conn:
        yield pipe, conn


def test_a_revert_after_a_schema_change_on_enum_and_domain_columns_restores_exactly(
        feel: tuple[Pipeline, psycopg.Connection[Any]], empty_db: HeraDB) -> None:
    pipe, c = feel
    c.execute("INSERT INTO feel VALUES (1, 'sad', 1.5, 'a'), (2, 'ok', 50, 'b'), "
              "(3, 'happy', 99.99, NULL)")
    with c.transaction():
        c.execute("DELETE FROM feel WHERE id IN (2, 3)")
        row = c.execute("SELECT txid_current()").fetchone()
    assert row is not None
    xid = int(str(row[0]))
    c.execute("ALTER TABLE feel ADD COLUMN extra text DEFAULT 'x'")  # a schema-log record
    c.execute("CREATE TABLE expected AS TABLE feel")
    c.execute("INSERT INTO expected VALUES (2, 'ok', 50, 'b', 'x'), (3, 'happy', 99.99, NULL, "
              "'x')")
    pipe.sync_by(c, "UPDATE feel SET note = 'later' WHERE id = 1 "
                    "RETURNING pg_current_wal_lsn()::text")
    c.execute("UPDATE expected SET note = 'later' WHERE id = 1")
    result = CliRunner().invoke(main, ["--archive", str(pipe.archive), "--dsn", empty_db.dsn,
                                       "--revert-xid", str(xid)])
    assert result.exit_code == 0, result.output
    assert "public.mood" not in result.output.replace("m public.mood", "")  # no diff listed
    assert rows_differing(c, "expected", "feel", (*COLUMNS, "extra")) == 0
