"""`guard install` on a real PostgreSQL: idempotence, pg_cron scheduling (and what happens
when pg_cron cannot be used), refusal without the HERA tables, least privilege."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from devstack.postgres import PostgresCluster
from devstack.sample import SampleSize, create_schema, load_sample
from guard.errors import MissingSchema
from guard.install import install
from guard.schedule import unschedule_jobs
from tests.conftest import HeraDB, unique_name
from tests.guard_fixtures import count, install_guard


def guard_objects(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[int, int, int]:
    return (
        count(conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                    "'core_relationships'::regclass AND NOT tgisinternal"),
        count(conn, "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"),
        count(conn, "SELECT count(*) FROM guard_settings"),
    )


def test_install_is_idempotent_and_takes_the_plans_initial_backup(hera_db: HeraDB) -> None:
    first = install_guard(hera_db, initial_backup=True)
    with hera_db.connect() as conn:
        objects = guard_objects(conn)
    second = install_guard(hera_db, initial_backup=True)
    assert first.scripts == second.scripts
    assert [s.split("_")[0] for s in first.scripts] == [f"{n:02d}" for n in range(11)]
    assert first.warnings == second.warnings == []
    assert first.backup and first.backup.startswith("Emergency backup created: ")
    with hera_db.connect() as conn:
        assert guard_objects(conn) == objects
        assert objects[0] == 4  # the guardian's three and the author's (sql/10_author.sql)
        assert count(conn, "SELECT count(*) FROM system_backups") == 4
        # capture status reads the lag in seconds from the WAL with it
        assert count(conn, "SELECT count(*) FROM pg_extension "
                           "WHERE extname = 'pg_walinspect'") == 1


def test_pg_cron_jobs_exist_after_install(hera_db: HeraDB, pg_cluster: PostgresCluster) -> None:
    with psycopg.connect(pg_cluster.dsn("postgres"), autocommit=True) as cron:
        with contextlib.suppress(psycopg.errors.UniqueViolation,
                                 psycopg.errors.DuplicateObject):
            cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        report = install_guard(hera_db, schedule=True)
        try:
            assert report.schedule is not None and report.schedule.scheduled
            jobs = cron.execute("SELECT jobname, schedule, command, database FROM cron.job "
                                "WHERE database = %s ORDER BY jobname", (hera_db.name,)
                                ).fetchall()
            assert jobs == [
                (f"auth-health-monitor@{hera_db.name}", "*/15 * * * *",
                 'SELECT "public"."record_authentication_health"()', hera_db.name),
                (f"emergency-relationship-backup@{hera_db.name}", "0 */6 * * *",
                 'SELECT "public"."emergency_relationship_backup"()', hera_db.name)]
            with hera_db.connect() as conn:  # the jobs' commands run as written
                for _, _, command, _ in jobs:
                    conn.execute(str(command).encode())
        finally:
            with hera_db.connect() as conn:
                unschedule_jobs(conn, hera_db.dsn, "public")
        assert cron.execute("SELECT count(*) FROM cron.job WHERE database = %s",
                            (hera_db.name,)).fetchone() == (0,)


@pytest.fixture
def owned_db(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A database owned by a plain (non-superuser, no CREATEROLE) login role, with the
    sample schema created by that role; yields its DSN."""
    role, name = unique_name("owner"), unique_name("owned")
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(role)))
    dsn = pg_cluster.dsn(name, user=role)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_schema(conn)
            load_sample(conn, SampleSize())
        yield dsn
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_table_owner_without_superuser_can_install_and_is_told_how_to_schedule(
        owned_db: str) -> None:
    report = install(owned_db, initial_backup=True, schedule=True)
    assert report.schedule is not None and not report.schedule.scheduled
    assert "guard backup" in report.schedule.note and "every 6 hours" in report.schedule.note
    assert report.backup is not None
    with psycopg.connect(owned_db, autocommit=True) as conn:
        assert count(conn, "SELECT count(*) FROM system_backups") == 2


def test_install_refuses_a_database_without_the_hera_tables_and_creates_nothing(
        pg_cluster: PostgresCluster) -> None:
    name = unique_name("bare")
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with pytest.raises(MissingSchema, match="core_relationships not found"):
            install(pg_cluster.dsn(name))
        with psycopg.connect(pg_cluster.dsn(name)) as conn:
            assert conn.execute("SELECT to_regclass('system_backups')").fetchone() == (None,)
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(name)))


def test_an_application_role_can_delete_but_not_forge_alerts_or_restore(
        hera_db: HeraDB) -> None:
    install_guard(hera_db)
    role = unique_name("app")
    with hera_db.connect() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON core_relationships "
                              "TO {}").format(sql.Identifier(role)))
    try:
        app_dsn = hera_db.cluster.dsn(hera_db.name, user=role)
        with psycopg.connect(app_dsn, autocommit=True) as app:
            app.execute("DELETE FROM core_relationships WHERE id = (SELECT id FROM "
                        "core_relationships WHERE relationship_type = 'SERVICE_IN_CATEGORY' "
                        "LIMIT 1)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("INSERT INTO critical_system_alerts (alert_type, severity, message)"
                            " VALUES ('FAKE', 'INFO', 'forged')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("SELECT * FROM restore_relationships_from_backup('x')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("SELECT emergency_relationship_backup()")
        with hera_db.connect() as admin:
            assert count(admin, "SELECT count(*) FROM critical_system_alerts "
                                "WHERE alert_type = 'RELATIONSHIP_DELETION'") == 1
    finally:
        with hera_db.connect() as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
