"""Emergency backups on a real PostgreSQL: what is logged, unique names, the WAL LSN replay
starts from (checked against the commit LSNs logical decoding reports), retention, and the
backup -> disaster -> restore round trip."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from guard.errors import UnknownBackup
from guard.operations import backup, restore_backup
from tests.conftest import HeraDB
from tests.guard_fixtures import count, install_guard, wait_until, waiting_on_lock


@pytest.fixture
def guarded(hera_db: HeraDB) -> HeraDB:
    install_guard(hera_db)
    return hera_db


def snapshot(conn: psycopg.Connection[tuple[object, ...]], table: str) -> list[tuple[object, ...]]:
    return conn.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(
        sql.Identifier(table))).fetchall()


def test_a_backup_logs_both_copies_with_one_group_counts_and_the_wal_lsn(
        guarded: HeraDB) -> None:
    result = backup(guarded.dsn)
    rel, dyn = result.tables
    assert result.message == (f"Emergency backup created: {rel.table_name} "
                              f"({rel.record_count} relationships)")
    assert rel.table_name.startswith("emergency_relationships_backup_")
    assert dyn.table_name == rel.table_name.replace("relationships", "dynamic_data", 1)
    assert (rel.source_table, dyn.source_table) == ("core_relationships", "core_dynamic_data")
    assert rel.wal_lsn == dyn.wal_lsn != "0/0"
    with guarded.connect() as conn:
        assert rel.record_count == count(conn, "SELECT count(*) FROM core_relationships")
        assert dyn.record_count == count(conn, "SELECT count(*) FROM core_dynamic_data")
        assert snapshot(conn, rel.table_name) == snapshot(conn, "core_relationships")
        assert count(conn, "SELECT count(DISTINCT backup_group) FROM system_backups") == 1


def test_two_backups_in_the_same_second_get_distinct_names(guarded: HeraDB) -> None:
    now = datetime.now(UTC)
    with guarded.connect() as conn:
        for s in range(3):  # occupy the names of this second and the next two
            stamp = (now + timedelta(seconds=s)).strftime("%Y_%m_%d_%H_%M_%S")
            conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(
                sql.Identifier(f"emergency_relationships_backup_{stamp}")))
    result = backup(guarded.dsn)
    assert all(t.table_name.endswith("_1") for t in result.tables)


def test_a_repeatable_read_caller_without_the_locks_is_refused(guarded: HeraDB) -> None:
    with guarded.connect(autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT emergency_relationship_backup()")
        assert err.value.sqlstate == "HG201"


def test_the_wal_lsn_splits_transactions_exactly_into_in_the_backup_and_after_it(
        guarded: HeraDB, slot_name: str) -> None:
    """T1 commits while the backup waits for its lock; T2 queues behind the backup. T1 must be
    in the copy with commit LSN <= wal_lsn, T2 outside it with commit LSN > wal_lsn."""
    with guarded.connect() as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')",
                     (slot_name,))
        org = conn.execute("SELECT id FROM core_organizations LIMIT 1").fetchone()
        assert org is not None
    insert = ("INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id,"
              " relationship_type) VALUES (%s, %s, 'x', 'LSN_PROBE')")
    t1 = guarded.connect(autocommit=False)
    t2 = guarded.connect(autocommit=False)
    b = guarded.connect()
    results: dict[str, object] = {}

    def run_backup() -> None:
        results["backup"] = b.execute("SELECT emergency_relationship_backup()").fetchone()

    def run_t2() -> None:
        t2.execute(insert, (org[0], "t2"))
        results["x2"] = (t2.execute("SELECT txid_current()").fetchone() or [0])[0]
        t2.commit()

    try:
        t1.execute(insert, (org[0], "t1"))
        x1 = (t1.execute("SELECT txid_current()").fetchone() or [0])[0]
        backup_thread = threading.Thread(target=run_backup)
        backup_thread.start()
        with guarded.connect() as watch:
            wait_until(lambda: waiting_on_lock(watch, b.info.backend_pid), what="backup lock")
            t2_thread = threading.Thread(target=run_t2)
            t2_thread.start()
            wait_until(lambda: waiting_on_lock(watch, t2.info.backend_pid), what="t2 lock")
        t1.commit()
        backup_thread.join(10)
        t2_thread.join(10)
    finally:
        for c in (t1, t2, b):
            c.close()
    with guarded.connect() as conn:
        name, lsn = conn.execute(
            "SELECT table_name, wal_lsn FROM system_backups WHERE source_table = "
            "'core_relationships' ORDER BY created_at DESC LIMIT 1").fetchone() or ("", "")
        copied = {r[0] for r in conn.execute(sql.SQL(
            "SELECT from_entity_id FROM {} WHERE relationship_type = 'LSN_PROBE'").format(
                sql.Identifier(str(name)))).fetchall()}
        commits = {row[0]: row[1] for row in conn.execute(
            "SELECT xid::text::bigint, lsn FROM pg_logical_slot_peek_changes(%s, NULL, NULL) "
            "WHERE data LIKE 'COMMIT%%'", (slot_name,)).fetchall()}
        before = conn.execute("SELECT %s::pg_lsn <= %s::pg_lsn, %s::pg_lsn > %s::pg_lsn",
                              (commits[x1], lsn, commits[results["x2"]], lsn)).fetchone()
    assert copied == {"t1"}
    assert before == (True, True)


def test_retention_drops_old_backups_but_keeps_the_newest(guarded: HeraDB) -> None:
    names = [backup(guarded.dsn).tables[0].table_name for _ in range(3)]
    with guarded.connect() as conn:
        conn.execute("UPDATE system_backups SET created_at = created_at - interval '30 days' "
                     "WHERE backup_group <> (SELECT backup_group FROM system_backups "
                     "WHERE table_name = %s)", (names[-1],))
        dropped = count(conn, "SELECT prune_emergency_backups(interval '7 days', 1)")
        left = [r[0] for r in conn.execute(
            "SELECT table_name FROM system_backups WHERE source_table = 'core_relationships'"
        ).fetchall()]
        assert dropped == 2
        assert left == [names[-1]]
        assert conn.execute("SELECT to_regclass(%s)", (names[0],)).fetchone() == (None,)


def test_backup_disaster_restore_round_trip_gives_back_the_original_table(
        guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        original = snapshot(conn, "core_relationships")
    name = backup(guarded.dsn).tables[0].table_name
    with guarded.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL hera_guard.allow_mass_change = 'disaster drill'")
        conn.execute("SET LOCAL hera_guard.allow_orphaning = 'disaster drill'")
        conn.execute("DELETE FROM core_relationships WHERE id IN (SELECT id FROM "
                     "core_relationships ORDER BY id LIMIT 150)")
    result = restore_backup(guarded.dsn, name)
    assert (result.restoration_status, result.relationships_restored,
            result.errors_encountered, result.already_present) == (
        "SUCCESS", 150, 0, len(original) - 150)
    assert result.auth_relationships_restored > 0
    with guarded.connect() as conn:
        assert snapshot(conn, "core_relationships") == original


def test_rows_that_no_longer_fit_are_reported_and_logged_and_the_rest_restored(
        guarded: HeraDB) -> None:
    name = backup(guarded.dsn).tables[0].table_name
    with guarded.connect() as conn:
        with conn.transaction():
            conn.execute("SET LOCAL hera_guard.allow_mass_change = 'drill'")
            conn.execute("DELETE FROM core_relationships "
                         "WHERE relationship_type <> 'USER_MEMBER_OF_ORG'")
        conn.execute("ALTER TABLE core_relationships ADD CONSTRAINT no_appointments CHECK "
                     "(relationship_type <> 'CUSTOMER_HAS_APPOINTMENT') NOT VALID")
        expected_failures = count(conn, f"SELECT count(*) FROM {name} WHERE "  # noqa: S608
                                  "relationship_type = 'CUSTOMER_HAS_APPOINTMENT'")
    result = restore_backup(guarded.dsn, name)
    assert result.restoration_status == "PARTIAL_SUCCESS"
    assert result.errors_encountered == expected_failures > 0
    assert result.relationships_restored == 200 - expected_failures
    with guarded.connect() as conn:
        assert count(conn, "SELECT count(*) FROM restore_failures WHERE error LIKE "
                           "'%%no_appointments%%'") == expected_failures
        (alert,) = conn.execute("SELECT severity, metadata->>'errors' FROM "
                                "critical_system_alerts WHERE alert_type = "
                                "'BULK_RELATIONSHIP_RESTORATION'").fetchall()
        assert alert == ("WARNING", str(expected_failures))


@pytest.mark.parametrize("name", ["emergency_relationships_backup_1999_01_01_00_00_00",
                                  "core_entities", "app_users; DROP TABLE x"])
def test_restoring_from_anything_but_a_registered_backup_is_refused(
        guarded: HeraDB, name: str) -> None:
    with pytest.raises(UnknownBackup, match="not a core_relationships backup"):
        restore_backup(guarded.dsn, name)
