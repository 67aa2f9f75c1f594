"""The validator, the health checks and the recovery kit on a real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from guard.errors import BadInput, InvalidConstraint, NotFound
from guard.operations import constraint_impact, health, recover
from tests.conftest import HeraDB
from tests.guard_fixtures import add_links, alerts, count, install_guard


@pytest.fixture
def guarded(hera_db: HeraDB) -> HeraDB:
    install_guard(hera_db)
    return hera_db


def impact_level(db: HeraDB, expression: str) -> tuple[str, int, int]:
    with db.connect() as conn:
        conn.execute("SET search_path = public, pg_temp")
        impact = constraint_impact(conn, expression)
    return impact.impact_level, impact.affected_relationships, impact.affected_auth_relationships


def test_the_validator_grades_every_risk_level_like_the_plan(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        add_links(conn, 1100)  # 'bulk-<n>' links; the sample has 200 'entity-<n>' links
    seq = "coalesce((relationship_data->>'seq')::int, 0)"
    bulk = "coalesce(substr(from_entity_id, 6)::int, 0)"
    assert impact_level(guarded, "smart_code IS NULL OR smart_code ~ '^HERA\\.'") == (
        "SAFE", 0, 0)
    assert impact_level(guarded, f"{seq} <= 195") == ("LOW", 5, 0)
    assert impact_level(guarded, f"{seq} <= 150") == ("MEDIUM", 50, 0)
    assert impact_level(guarded, f"{seq} <= 50") == ("HIGH", 150, 0)
    assert impact_level(
        guarded, f"relationship_type <> 'BULK_LINK' OR {bulk} <= 50") == ("CRITICAL", 1050, 0)
    level, _, auth = impact_level(guarded, "relationship_type <> 'USER_MEMBER_OF_ORG'")
    assert (level, auth > 0) == ("CATASTROPHIC", True)


@pytest.mark.parametrize("attack", [
    "true; DROP TABLE core_relationships",
    "true) NOT VALID; DROP TABLE core_relationships; --",
    "(SELECT count(*) FROM app_users) > 0",
    "EXISTS (SELECT 1)",
    "random() > 0.5",
    "pg_sleep(5) IS NULL",
    "nextval('guard_blocked_statements') > 0",
    "true) NOT VALID, ADD COLUMN evil int, ADD CONSTRAINT other CHECK (true",
    "",
    "smart_code ~",
])
def test_the_validator_refuses_anything_but_one_immutable_check_expression(
        guarded: HeraDB, attack: str) -> None:
    with pytest.raises(InvalidConstraint):
        impact_level(guarded, attack)
    with guarded.connect() as conn:
        assert count(conn, "SELECT count(*) FROM core_relationships") == 272
        assert count(conn, "SELECT guard_blocked_statements_total()") == 0
        assert conn.execute("SELECT to_regclass('pg_temp.hera_guard_constraint_probe')"
                            ).fetchone() == (None,)


def test_the_validator_counts_in_a_read_only_transaction(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        # A function that lies about being IMMUTABLE and writes: still cannot write.
        conn.execute("CREATE FUNCTION writer() RETURNS boolean LANGUAGE plpgsql "
                     "AS $$ BEGIN DELETE FROM core_dynamic_data; RETURN true; END $$")
        conn.execute("CREATE FUNCTION sneaky(t text) RETURNS boolean LANGUAGE sql "
                     "IMMUTABLE AS 'SELECT writer()'")
        with pytest.raises(psycopg.Error, match="read-only transaction"):
            conn.execute("SELECT * FROM validate_smart_code_constraint_impact(%s)",
                         ("sneaky(smart_code)",))
        assert count(conn, "SELECT count(*) FROM core_dynamic_data") > 0
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("off",)


def test_health_is_healthy_on_the_sample(guarded: HeraDB) -> None:
    checks = health(guarded.dsn)
    assert [(c.check_name, c.status) for c in checks] == [
        ("missing_org_memberships", "HEALTHY"), ("inactive_auth_relationships", "HEALTHY"),
        ("invalid_smart_codes", "HEALTHY"), ("missing_user_roles", "HEALTHY")]


def test_health_is_critical_for_a_user_without_membership_and_records_its_log(
        guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        conn.execute("INSERT INTO app_users (email) VALUES ('locked-out@example.com')")
    checks = health(guarded.dsn, record=True)
    first = checks[0]
    assert (first.check_name, first.status, first.severity, first.affected_count) == (
        "missing_org_memberships", "CRITICAL", "CRITICAL", 1)
    with guarded.connect() as conn:
        assert count(conn, "SELECT count(*) FROM system_health_log WHERE status = 'CRITICAL'") == 1


def test_health_reads_auth_users_when_that_table_exists(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        conn.execute("CREATE SCHEMA auth")
        conn.execute("CREATE TABLE auth.users (id uuid PRIMARY KEY, email text)")
        conn.execute("INSERT INTO auth.users SELECT gen_random_uuid(), 'a' || g FROM "
                     "generate_series(1, 3) g")
    assert health(guarded.dsn)[0].affected_count == 3


def test_recover_gives_a_locked_out_user_access_back(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        (user,) = conn.execute("INSERT INTO app_users (email) VALUES ('m@example.com') "
                               "RETURNING id::text").fetchone() or ("",)
        (org,) = conn.execute("SELECT id::text FROM core_organizations LIMIT 1").fetchone() or ("",)
    result = recover(guarded.dsn, str(user), str(org), "owner")
    assert result.recovery_status == "SUCCESS"
    assert result.dynamic_data_created == 2
    assert health(guarded.dsn)[0].status == "HEALTHY"
    with guarded.connect() as conn:
        assert [a[0] for a in alerts(conn)] == ["EMERGENCY_AUTH_RECOVERY"]


def test_recover_refuses_unknown_users_and_orgs_and_changes_nothing(guarded: HeraDB) -> None:
    with guarded.connect() as conn:
        (org,) = conn.execute("SELECT id::text FROM core_organizations LIMIT 1").fetchone() or ("",)
        (user,) = conn.execute("SELECT id::text FROM app_users LIMIT 1").fetchone() or ("",)
        before = count(conn, "SELECT count(*) FROM core_relationships")
    with pytest.raises(NotFound, match="user nobody does not exist"):
        recover(guarded.dsn, "nobody", str(org))
    with pytest.raises(NotFound, match="organization 00000000-0000-0000-0000-000000000000"):
        recover(guarded.dsn, str(user), "00000000-0000-0000-0000-000000000000")
    with pytest.raises(BadInput):
        recover(guarded.dsn, str(user), str(org), " ")
    with guarded.connect() as conn:
        assert count(conn, "SELECT count(*) FROM core_relationships") == before
        assert alerts(conn) == []
