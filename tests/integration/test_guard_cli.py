"""The `guard` commands end to end against a real PostgreSQL (click's runner, no mocks):
exit codes, one-line errors, reports, and that refused input changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from devstack.postgres import PostgresCluster
from guard.cli import main
from tests.conftest import HeraDB, unique_name
from tests.guard_fixtures import count, install_guard


@pytest.fixture
def guarded(hera_db: HeraDB) -> HeraDB:
    install_guard(hera_db)
    return hera_db


@pytest.fixture
def staging(pg_cluster: PostgresCluster, template_db: str) -> Iterator[str]:
    """An empty staging database with the sample schema and the guard; yields its DSN."""
    name = unique_name("staging")
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    try:
        install_guard(HeraDB(pg_cluster, name))
        yield pg_cluster.dsn(name)
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(name)))


def guard(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def backups(db: HeraDB) -> int:
    with db.connect() as conn:
        return count(conn, "SELECT count(*) FROM system_backups")


def test_health_json_lists_the_four_checks_and_exits_zero_when_healthy(guarded: HeraDB) -> None:
    code, out, _ = guard("health", "--dsn", guarded.dsn, "--json")
    assert code == 0
    assert [c["status"] for c in json.loads(out)] == ["HEALTHY"] * 4


def test_health_table_exits_one_when_critical(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        conn.execute("INSERT INTO app_users (email) VALUES ('orphan@example.com')")
    code, out, _ = guard("health", "--dsn", guarded.dsn)
    assert code == 1
    assert "missing_org_memberships" in out and "CRITICAL" in out
    assert "\x1b[" not in out  # not a terminal: plain text


def test_predeploy_approves_a_healthy_database_after_rehearsing_on_staging(
        guarded: HeraDB, staging: str, tmp_path: Path) -> None:
    script = tmp_path / "deploy.sql"
    script.write_text("ALTER TABLE core_relationships ADD COLUMN IF NOT EXISTS note text;\n")
    code, out, err = guard("predeploy", "--dsn", guarded.dsn, "--staging-dsn", staging,
                           "--deployment-script", str(script), "--new-constraint",
                           "smart_code IS NULL OR smart_code ~ '^HERA\\.'",
                           "--report-dir", str(tmp_path))
    assert (code, err) == (0, "")
    assert "DEPLOYMENT APPROVED" in out
    report = json.loads(next(tmp_path.glob("deployment_validation_*.json")).read_text())
    assert report["verdict"] == "APPROVED"
    assert [c["status"] for c in report["checks"]] == ["PASS"] * 8
    assert "APPROVED" in next(tmp_path.glob("deployment_validation_*.md")).read_text()
    with psycopg.connect(staging) as conn:
        assert count(conn, "SELECT count(*) FROM core_relationships") == 272
        assert count(conn, "SELECT count(*) FROM information_schema.columns WHERE "
                           "table_name = 'core_relationships' AND column_name = 'note'") == 1


def test_predeploy_blocks_an_unhealthy_database(guarded: HeraDB, tmp_path: Path) -> None:
    with guarded.connect() as conn:
        conn.execute("INSERT INTO app_users (email) VALUES ('orphan@example.com')")
    code, out, _ = guard("predeploy", "--dsn", guarded.dsn, "--report-dir", str(tmp_path))
    assert code == 1
    assert "DEPLOYMENT BLOCKED" in out
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert report["verdict"] == "BLOCKED"
    assert [c["number"] for c in report["checks"] if c["status"] == "FAIL"] == [2]


def test_predeploy_blocks_a_catastrophic_constraint(guarded: HeraDB, tmp_path: Path) -> None:
    code, out, _ = guard("predeploy", "--dsn", guarded.dsn, "--report-dir", str(tmp_path),
                         "--new-constraint", "relationship_type <> 'USER_MEMBER_OF_ORG'")
    assert code == 1
    assert "CATASTROPHIC" in out


@pytest.mark.parametrize("constraint", ["true; DROP TABLE core_relationships",
                                        "(SELECT true)"])
def test_predeploy_with_an_injected_constraint_cannot_run_and_changes_nothing(
        guarded: HeraDB, tmp_path: Path, constraint: str) -> None:
    before = backups(guarded)
    code, _, err = guard("predeploy", "--dsn", guarded.dsn, "--report-dir", str(tmp_path),
                         "--new-constraint", constraint)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "CHECK expression" in err or "statement separators" in err
    assert backups(guarded) == before
    assert list(tmp_path.iterdir()) == []


def test_predeploy_with_an_unreachable_staging_database_cannot_run(
        guarded: HeraDB, tmp_path: Path) -> None:
    before = backups(guarded)
    code, _, err = guard("predeploy", "--dsn", guarded.dsn, "--report-dir", str(tmp_path),
                         "--staging-dsn", "host=127.0.0.1 port=1 dbname=x password=hunter2")
    assert code == 2
    assert "cannot connect to the staging database" in err and "hunter2" not in err
    assert backups(guarded) == before


def test_postdeploy_passes_when_quiet_and_fails_on_a_recent_critical_alert(
        guarded: HeraDB) -> None:
    code, out, _ = guard("postdeploy", "--dsn", guarded.dsn, "--since", "1h")
    assert code == 0 and "system healthy" in out
    with guarded.connect() as conn:
        conn.execute("INSERT INTO critical_system_alerts (alert_type, severity, message) "
                     "VALUES ('MASS_RELATIONSHIP_DELETION_DETECTED', 'EMERGENCY', 'boom')")
    code, out, _ = guard("postdeploy", "--dsn", guarded.dsn, "--since", "30m")
    assert code == 1 and "boom" in out


@pytest.mark.parametrize(("args", "message"), [
    (("restore-backup", "no_such_backup"), "unknown backup no_such_backup"),
    (("recover", "--user", "nobody", "--org", "00000000-0000-0000-0000-000000000000"),
     "user nobody does not exist"),
])
def test_bad_input_gives_one_line_and_exit_two(guarded: HeraDB, args: tuple[str, ...],
                                               message: str) -> None:
    code, _, err = guard(*args, "--dsn", guarded.dsn)
    assert code == 2
    assert err.count("\n") == 1 and message in err


def test_commands_on_a_database_without_the_guard_say_to_install_it(hera_db: HeraDB) -> None:
    code, _, err = guard("backup", "--dsn", hera_db.dsn)
    assert code == 2
    assert "guard install" in err


def test_backup_and_restore_backup_commands_round_trip(guarded: HeraDB) -> None:
    code, out, _ = guard("backup", "--dsn", guarded.dsn)
    assert code == 0
    name = out.split("created: ")[1].split(" ")[0]
    code, out, _ = guard("restore-backup", name, "--dsn", guarded.dsn)
    assert code == 0
    assert out.startswith("SUCCESS: 0 restored (0 memberships), 272 already present, 0 failed")
