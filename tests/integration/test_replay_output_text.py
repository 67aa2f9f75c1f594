"""Types whose cast to text differs from their output function (inet adds the netmask,
bpchar drops trailing spaces; cidr, macaddr, money, arrays and composites of them, and the
session-dependent timestamptz / interval / float / bytea): capture archives the output text,
so replay's live reads and typed filters must produce exactly that text. Otherwise a live row
equal to its archived one reads as a difference (verify), a conflict (revert), or a filter
matches nothing and the restore "succeeds" with 0 changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from capture.event import format_lsn, parse_lsn
from devstack.broker import Broker
from replay.cli import main
from replay.live import columns, connect, read_rows, row_json_sql
from replay.tables import TableId
from tests.conftest import HeraDB
from tests.replay_fixtures import Pipeline, pipeline, rows_differing

DDL = """
CREATE TYPE ip_code AS (ip inet, code char(3));
CREATE TABLE typed (
    id integer PRIMARY KEY, organization_id char(8), ip inet, net cidr, mac macaddr,
    cash money, code char(6), codes char(4)[], ips inet[], pair ip_code, f8 double precision,
    ts timestamptz, iv interval, raw bytea, n integer);
ALTER TABLE typed REPLICA IDENTITY FULL;
"""
ROWS = """
INSERT INTO typed VALUES
 (1, 'ab', '10.0.0.1', '10.0.0.0/8', '08:00:2b:01:02:03', 12.5, 'x', '{a,bb}',
  '{10.0.0.1,::1}', ROW('10.0.0.2', 'z'), 0.1, '2025-03-01 12:00:00.5+02',
  '1 day 02:03:04', '\\x00ff', 0),
 (2, 'ab', '192.168.0.1/24', '2001:db8::/32', '08-00-2B-01-02-04', -0.01, 'yy  ', '{"c "}',
  '{192.168.0.1/24}', ROW('::1', ''), 1e-300, 'infinity', '-1 mons +00:00:01', '\\x', 0),
 (3, 'cd', '::ffff:1.2.3.4', '192.168.0.0/16', NULL, NULL, '', NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, 0);
"""
COLUMNS = ["id", "organization_id", "ip", "net", "mac", "cash", "code", "codes", "ips", "pair",
           "f8", "ts", "iv", "raw", "n"]
TABLE = TableId("public", "typed")


@dataclass
class Case:
    db: HeraDB
    pipe: Pipeline
    conn: psycopg.Connection[Any]
    lsn: int  # typed_copy equals typed here
    xid: int  # later: n + 1 on every row, row 2 (organization 'ab') deleted

    def replay(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--archive", str(self.pipe.archive), "--dsn",
                                         self.db.dsn, "--table", "public.typed", *args])

    def differing(self, where: str = "") -> int:
        return rows_differing(self.conn, "typed_copy", "typed", COLUMNS, sql.SQL(where))


@pytest.fixture
def case(empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
         tmp_path: Path) -> Iterator[Case]:
    with empty_db.connect() as conn:
        conn.execute(DDL)
    with pipeline(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name, tmp_path,
                  tables=("public.typed",)) as pipe, empty_db.connect() as conn:
        # The writer's own output settings differ from capture's: they must not matter.
        conn.execute("SET TimeZone = 'America/New_York'; SET DateStyle = 'SQL, DMY'; "
                     "SET IntervalStyle = 'sql_standard'; SET extra_float_digits = 3; "
                     "SET bytea_output = 'escape'")
        conn.execute(ROWS)
        conn.execute("CREATE TABLE typed_copy AS TABLE typed")
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        with conn.transaction():
            conn.execute("UPDATE typed SET n = n + 1")
            conn.execute("DELETE FROM typed WHERE id = 2")
            got = conn.execute("SELECT txid_current()").fetchone()
            assert got is not None
        pipe.sync_by(conn, "UPDATE typed SET n = n WHERE id = 3 "
                           "RETURNING pg_current_wal_lsn()::text")
        yield Case(empty_db, pipe, conn, parse_lsn(str(row[0])), int(str(got[0])))


def test_verify_finds_live_rows_of_these_types_equal_to_their_archived_text(
        case: Case) -> None:
    result = case.replay("verify")
    assert result.exit_code == 0, result.output


def test_revert_of_a_later_transaction_has_no_false_conflicts_and_restores_exactly(
        case: Case) -> None:
    result = case.replay("--revert-xid", str(case.xid))
    assert result.exit_code == 0, result.output
    assert "re-inserted 1, reverted 2" in result.output
    assert case.differing() == 0


def test_restore_filtered_by_a_char_n_organization_restores_that_organizations_rows(
        case: Case) -> None:
    # organization_id is char(8): archived as 'ab      ', the filter's 'ab' must match it.
    result = case.replay("--until", format_lsn(case.lsn), "--restore", "--org", "ab")
    assert result.exit_code == 0, result.output
    assert case.differing("WHERE id <> 3") == 0  # organization 'ab' is back exactly
    back = case.conn.execute("SELECT id, n FROM typed ORDER BY id").fetchall()
    assert back == [(1, 0), (2, 0), (3, 1)]


def test_the_server_built_row_json_equals_the_copy_read_of_these_types(
        empty_db: HeraDB) -> None:
    with empty_db.connect() as conn:
        conn.execute(DDL)
        conn.execute(ROWS)
    pg = connect(empty_db.dsn)
    try:
        cols = columns(pg, TABLE)
        read = sorted((json.loads(r) for r in read_rows(pg, TABLE, cols).column("row")
                       .to_pylist()), key=lambda r: r["id"])
        built = sorted((json.loads(str(r[0])) for r in pg.execute(
            sql.SQL("SELECT {} FROM typed").format(row_json_sql(cols))).fetchall()),
            key=lambda r: r["id"])
    finally:
        pg.close()
    assert read == built
    assert read[0]["ip"] == "10.0.0.1" and read[0]["organization_id"] == "ab      "
    assert read[1]["codes"] == '{"c   "}' and read[0]["pair"] == '(10.0.0.2,"z  ")'
    assert read[0]["ts"] == "2025-03-01 10:00:00.5+00" and read[1]["raw"] == "\\x"
