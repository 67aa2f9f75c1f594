"""The deletion guardian on a real PostgreSQL: orphan protection, deactivation and retyping,
TRUNCATE, mass changes and the logged break-glass, one alert per statement."""

from __future__ import annotations

import threading

import psycopg
import pytest

from tests.conftest import HeraDB
from tests.guard_fixtures import (
    add_links,
    alerts,
    count,
    install_guard,
    user_with_memberships,
    wait_until,
    waiting_on_lock,
)


@pytest.fixture
def guarded(hera_db: HeraDB) -> HeraDB:
    install_guard(hera_db)
    return hera_db


def memberships(conn: psycopg.Connection[tuple[object, ...]], user: str) -> int:
    return count(conn, "SELECT count(*) FROM core_relationships WHERE from_entity_id = %s "
                       "AND relationship_type = 'USER_MEMBER_OF_ORG' AND is_active", user)


def test_deleting_the_last_membership_of_a_user_is_blocked_with_the_plans_message(
        guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        user = user_with_memberships(conn, 1)
        with pytest.raises(psycopg.Error) as err:
            conn.execute("DELETE FROM core_relationships WHERE from_entity_id = %s", (user,))
        assert err.value.sqlstate == "HG002"
        assert (f"CRITICAL PROTECTION: Cannot delete last organization membership for user "
                f"{user}. This would orphan the user.") in str(err.value)
        assert memberships(conn, user) == 1


def test_deleting_the_second_to_last_membership_is_allowed_and_alerted_once(
        guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        user = user_with_memberships(conn, 2)
        conn.execute("DELETE FROM core_relationships WHERE id = (SELECT id FROM "
                     "core_relationships WHERE from_entity_id = %s LIMIT 1)", (user,))
        assert memberships(conn, user) == 1
        logged = alerts(conn)
        assert [(a[0], a[3]["removed"], a[3]["removed_auth_memberships"]) for a in logged] == [
            ("CRITICAL_AUTH_DELETION", 1, 1)]


@pytest.mark.parametrize("change", [
    "SET is_active = false",
    "SET relationship_type = 'FORMER_MEMBER_OF_ORG'",
    "SET from_entity_id = 'someone-else'",
])
def test_deactivating_retyping_or_moving_the_last_membership_is_blocked(
        guarded: HeraDB, change: str) -> None:
    with guarded.connect() as conn:
        user = user_with_memberships(conn, 1)
        with pytest.raises(psycopg.Error) as err:
            conn.execute(f"UPDATE core_relationships {change} WHERE from_entity_id = %s".encode(),
                         (user,))
        assert err.value.sqlstate == "HG002"
        assert memberships(conn, user) == 1


def test_updates_that_keep_memberships_and_reactivations_pass_without_alerts(
        guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        user = user_with_memberships(conn, 2)
        conn.execute("UPDATE core_relationships SET relationship_strength = 0.5")
        conn.execute("UPDATE core_relationships SET is_active = false WHERE id = (SELECT id "
                     "FROM core_relationships WHERE from_entity_id = %s LIMIT 1)", (user,))
        conn.execute("UPDATE core_relationships SET is_active = true WHERE from_entity_id = %s",
                     (user,))
        assert memberships(conn, user) == 2
        assert [a[0] for a in alerts(conn)] == ["CRITICAL_AUTH_DELETION"]


def test_orphaning_is_allowed_only_with_its_own_logged_opt_in(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        user = user_with_memberships(conn, 1)
        with pytest.raises(psycopg.Error) as err, conn.transaction():
            conn.execute("SET LOCAL hera_guard.allow_mass_change = 'cleanup'")
            conn.execute("DELETE FROM core_relationships WHERE from_entity_id = %s", (user,))
        assert err.value.sqlstate == "HG002"
        with conn.transaction():
            conn.execute("SET LOCAL hera_guard.allow_orphaning = 'GDPR erasure #42'")
            conn.execute("DELETE FROM core_relationships WHERE from_entity_id = %s", (user,))
        assert memberships(conn, user) == 0
        (logged,) = alerts(conn)
        assert logged[0] == "USER_ORPHANING_ALLOWED"
        assert logged[3]["allow_orphaning"] == "GDPR erasure #42"
        assert logged[3]["orphaned_users"] == [user]


def test_truncate_is_blocked_unless_allowed_and_the_opt_in_is_logged(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        before = count(conn, "SELECT count(*) FROM core_relationships")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("TRUNCATE core_relationships")
        assert err.value.sqlstate == "HG003"
        assert count(conn, "SELECT count(*) FROM core_relationships") == before
        with conn.transaction():
            conn.execute("SET LOCAL hera_guard.allow_truncate = 'rebuilding staging'")
            conn.execute("TRUNCATE core_relationships")
        assert count(conn, "SELECT count(*) FROM core_relationships") == 0
        (logged,) = alerts(conn)
        assert logged[0] == "TRUNCATE_ALLOWED"
        assert logged[3]["removed"] == before
        assert logged[3]["allow_truncate"] == "rebuilding staging"


def test_a_mass_delete_is_blocked_and_counted_even_though_it_rolls_back(
        guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        add_links(conn, 150)
        blocked_before = count(conn, "SELECT guard_blocked_statements_total()")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("DELETE FROM core_relationships WHERE relationship_type = 'BULK_LINK'")
        assert err.value.sqlstate == "HG001"
        assert "hera_guard.allow_mass_change" in (err.value.diag.message_hint or "")
        assert count(conn, "SELECT count(*) FROM core_relationships "
                           "WHERE relationship_type = 'BULK_LINK'") == 150
        assert alerts(conn) == []
        assert count(conn, "SELECT guard_blocked_statements_total()") > blocked_before


def test_a_row_by_row_mass_delete_in_one_transaction_is_blocked_too(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        add_links(conn, 150)
        with pytest.raises(psycopg.Error) as err, conn.transaction():
            ids = conn.execute("SELECT id FROM core_relationships "
                               "WHERE relationship_type = 'BULK_LINK'").fetchall()
            for (rid,) in ids:
                conn.execute("DELETE FROM core_relationships WHERE id = %s", (rid,))
        assert err.value.sqlstate == "HG001"
        assert count(conn, "SELECT count(*) FROM core_relationships "
                           "WHERE relationship_type = 'BULK_LINK'") == 150


def test_a_mass_delete_with_the_opt_in_passes_with_exactly_one_alert(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        add_links(conn, 150)
        with conn.transaction():
            conn.execute("SET LOCAL hera_guard.allow_mass_change = 'retire bulk links'")
            conn.execute("DELETE FROM core_relationships WHERE relationship_type = 'BULK_LINK'")
        assert count(conn, "SELECT count(*) FROM core_relationships "
                           "WHERE relationship_type = 'BULK_LINK'") == 0
        (logged,) = alerts(conn)
        assert logged[:2] == ("MASS_CHANGE_OPT_IN", "WARNING")
        assert "retire bulk links" in logged[2]
        assert logged[3]["removed"] == 150
        assert logged[3]["by_relationship_type"] == {"BULK_LINK": 150}
        assert len(logged[3]["sample_ids"]) == 20


def test_an_empty_opt_in_reason_does_not_count(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        add_links(conn, 150)
        with pytest.raises(psycopg.Error) as err, conn.transaction():
            conn.execute("SET LOCAL hera_guard.allow_mass_change = '  '")
            conn.execute("DELETE FROM core_relationships WHERE relationship_type = 'BULK_LINK'")
        assert err.value.sqlstate == "HG001"


def test_replica_mode_does_not_switch_the_guardian_off(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        user = user_with_memberships(conn, 1)
        with pytest.raises(psycopg.Error) as err, conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("DELETE FROM core_relationships WHERE from_entity_id = %s", (user,))
        assert err.value.sqlstate == "HG002"


def test_two_concurrent_deletes_cannot_orphan_a_user_together(guarded: HeraDB) -> None:
    with guarded.connect() as setup:
        user = user_with_memberships(setup, 2)
        first, second = (r[0] for r in setup.execute(
            "SELECT id FROM core_relationships WHERE from_entity_id = %s ORDER BY id",
            (user,)).fetchall())
    t1 = guarded.connect(autocommit=False)
    t2 = guarded.connect(autocommit=False)
    outcome: list[BaseException | None] = []

    def delete_second() -> None:
        try:
            t2.execute("DELETE FROM core_relationships WHERE id = %s", (second,))
            t2.commit()
            outcome.append(None)
        except psycopg.Error as exc:
            t2.rollback()
            outcome.append(exc)

    try:
        t1.execute("DELETE FROM core_relationships WHERE id = %s", (first,))
        worker = threading.Thread(target=delete_second)
        worker.start()
        with guarded.connect() as watcher:
            wait_until(lambda: waiting_on_lock(watcher, t2.info.backend_pid),
                       what="the second delete to wait for the first")
        t1.commit()
        worker.join(timeout=10)
        assert len(outcome) == 1 and isinstance(outcome[0], psycopg.Error)
        assert outcome[0].sqlstate == "HG002"
    finally:
        t1.close()
        t2.close()
    with guarded.connect() as conn:
        assert memberships(conn, user) == 1
