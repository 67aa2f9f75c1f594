"""Bad input against a real database: one clear line, non-zero exit, nothing changed. And
``replay verify`` proving (or disproving) that the archive matches the live table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from capture.event import format_lsn
from replay.cli import main
from tests.conftest import HeraDB
from tests.replay_fixtures import History, write_archive

REL_DDL = """
CREATE TABLE rel (id uuid PRIMARY KEY, org uuid, kind text, is_active boolean, n integer,
                  big bigint, amount numeric, data jsonb, tags text[],
                  at timestamp with time zone)
"""


def row(i: int, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "id": f"00000000-0000-0000-0000-{i:012d}", "org": "10000000-0000-0000-0000-000000000001",
        "kind": "LINK", "is_active": True, "n": i, "big": str(2**40 + i), "amount": "1.50",
        "data": '{"k": [1, "x"]}', "tags": '{a,"b c"}', "at": "2025-03-01 12:00:00.5+00"}
    r.update(over)
    return r


class Case:
    def __init__(self, db: HeraDB, root: Path, lsn: int) -> None:
        self.db, self.root, self.lsn = db, root, lsn

    def replay(self, *args: str, dsn: str | None = None) -> Result:
        return CliRunner().invoke(main, ["--archive", str(self.root), "--table", "public.rel",
                                         "--dsn", dsn or self.db.dsn, *args])

    def scalar(self, query: str) -> Any:
        with self.db.connect() as conn:
            got = conn.execute(query).fetchone()
        return None if got is None else got[0]


@pytest.fixture
def case(empty_db: HeraDB, tmp_path: Path) -> Case:
    h = History(db=empty_db.name)
    h.snapshot([row(1), row(2), row(3)])
    _, lsn, _ = h.commit([("u", row(1), row(1, n=100)), ("d", row(3), None)])
    h.progress()
    with empty_db.connect() as conn:
        conn.execute(REL_DDL)
        for r in (row(1, n=100), row(2)):  # values as PostgreSQL text, as events carry them
            conn.execute(sql.SQL("INSERT INTO rel ({}) VALUES ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, r)),
                sql.SQL(", ").join(sql.Placeholder() * len(r))), list(r.values()))
    return Case(empty_db, write_archive(tmp_path / "archive", h), lsn)


def one_line_error(result: Result, text: str) -> None:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("replay: error")]
    assert len(errors) == 1 and text in errors[0], result.output


def test_into_table_creates_the_table_with_the_sources_types(case: Case) -> None:
    result = case.replay("--until", format_lsn(case.lsn), "--into-table", "public.rel_copy")
    assert result.exit_code == 0, result.output
    assert case.scalar("SELECT count(*) FROM (TABLE rel EXCEPT TABLE rel_copy) x") == 0
    assert case.scalar("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                       "attrelid = 'rel_copy'::regclass AND attname = 'tags'") == "text[]"


def test_into_a_schema_that_does_not_exist_is_one_line_naming_the_fix(case: Case) -> None:
    result = case.replay("--until", format_lsn(case.lsn), "--into-table", "recovery.rel")
    one_line_error(result, "schema recovery does not exist in the target database: create it "
                           "(CREATE SCHEMA recovery)")
    assert "Traceback" not in result.output
    assert case.scalar("SELECT to_regnamespace('recovery')") is None


def test_an_existing_target_table_is_refused_unless_replace(case: Case) -> None:
    case.replay("--until", format_lsn(case.lsn), "--into-table", "public.rel_copy")
    with case.db.connect() as conn:
        conn.execute("INSERT INTO rel_copy (id) VALUES (gen_random_uuid())")
    refused = case.replay("--until", format_lsn(case.lsn), "--into-table", "public.rel_copy")
    one_line_error(refused, "already exists; choose another name or add --replace")
    assert case.scalar("SELECT count(*) FROM rel_copy") == 3
    replaced = case.replay("--until", format_lsn(case.lsn), "--into-table", "public.rel_copy",
                           "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert case.scalar("SELECT count(*) FROM rel_copy") == 2


def test_a_dsn_without_privileges_is_refused_before_anything_changes(case: Case) -> None:
    with case.db.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS replay_reader")
        conn.execute("CREATE ROLE replay_reader LOGIN")
        conn.execute("GRANT SELECT ON rel TO replay_reader")
    try:
        dsn = case.db.cluster.dsn(case.db.name, user="replay_reader")
        result = case.replay("--until", "0/1000", "--restore", dsn=dsn)
        one_line_error(result, "role replay_reader lacks INSERT on public.rel")
        assert case.scalar("SELECT count(*) FROM rel") == 2
    finally:
        with case.db.connect() as conn:
            conn.execute("DROP OWNED BY replay_reader")
            conn.execute("DROP ROLE replay_reader")


def test_an_unknown_live_table_is_refused(case: Case) -> None:
    with case.db.connect() as conn:
        conn.execute("ALTER TABLE rel RENAME TO rel_old")
    result = case.replay("--until", format_lsn(case.lsn), "--restore")
    one_line_error(result, "table public.rel does not exist in the database")


def test_a_backup_without_a_recorded_lsn_is_refused(case: Case) -> None:
    missing = case.replay("--until", format_lsn(case.lsn), "--base-snapshot", "rel_backup",
                          "--into-table", "public.x")
    one_line_error(missing, "has no system_backups table")
    with case.db.connect() as conn:
        conn.execute("CREATE TABLE rel_backup AS TABLE rel")
        conn.execute("CREATE TABLE system_backups (table_name text, wal_lsn pg_lsn, "
                     "source_table text, created_at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO system_backups (table_name, wal_lsn, source_table) "
                     "VALUES ('rel_backup', '0/0', 'rel')")
    result = case.replay("--until", format_lsn(case.lsn), "--base-snapshot", "rel_backup",
                         "--into-table", "public.x")
    one_line_error(result, "backup rel_backup has no recorded LSN")
    assert case.scalar("SELECT to_regclass('public.x')") is None


def test_verify_passes_when_the_archive_matches_and_names_the_rows_that_differ(
        case: Case) -> None:
    args = ["verify", "--archive", str(case.root), "--dsn", case.db.dsn, "--table", "public.rel"]
    ok = CliRunner().invoke(main, args)
    assert ok.exit_code == 0, ok.output
    assert "equal" in ok.output
    with case.db.connect() as conn:
        conn.execute("UPDATE rel SET n = 7 WHERE n = 2")
        conn.execute("INSERT INTO rel (id) VALUES ('00000000-0000-0000-0000-000000000009')")
    bad = CliRunner().invoke(main, args)
    assert bad.exit_code == 1
    assert '"00000000-0000-0000-0000-000000000002"' in bad.output and "differs" in bad.output
    assert "000000000009" in bad.output and "not in archive" in bad.output
