"""End to end: SQL workloads on a real HERA database -> capture -> Kafka -> the detector.

The first two tests load the sample data after capture started, so the memberships reach the
detector through the stream (one bulk-insert transaction, itself legitimate traffic); the
last one starts capture on a filled database, so they come from the snapshot (op r).

Each rule fires on its workload, and legitimate traffic (a membership removed while the user
keeps another, a bulk insert, role updates) raises nothing. (A detector killed while an
alert waits in its outbox: tests/integration/test_detect_webhook.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from consumers.detect.alerts import Rule
from devstack.broker import Broker
from devstack.sample import SampleSize, load_sample
from tests.capture_fixtures import running_capture, slot_active, wait_until
from tests.conftest import HeraDB
from tests.integration.test_detect_stream import alerts_on_kafka, running_detector


def one(conn: Any, query: str) -> str:
    row = conn.execute(query).fetchone()
    assert row is not None
    return str(row[0])


SINGLE_MEMBERSHIP_USERS = (
    "SELECT from_entity_id FROM core_relationships WHERE relationship_type = "
    "'USER_MEMBER_OF_ORG' GROUP BY 1 HAVING count(*) = 1 ORDER BY 1")


def test_each_rule_fires_once_on_its_workload_and_legitimate_traffic_stays_quiet(
        broker: Broker, empty_db: HeraDB, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    with (running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name),
          running_detector(broker, topic_prefix, tmp_path / "state.sqlite"),
          empty_db.connect() as conn):
        load_sample(conn, SampleSize())
        # Legitimate: a user with two memberships leaves one organization ...
        two = one(conn, "SELECT from_entity_id FROM core_relationships WHERE relationship_type"
                        " = 'USER_MEMBER_OF_ORG' GROUP BY 1 HAVING count(*) = 2 LIMIT 1")
        conn.execute("DELETE FROM core_relationships WHERE id = (SELECT id FROM "
                     "core_relationships WHERE from_entity_id = %s LIMIT 1)", (two,))
        # ... a bulk insert, and role changes that keep the role.
        conn.execute("""
            INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id,
                relationship_type, smart_code)
            SELECT (SELECT id FROM core_organizations LIMIT 1), 'bulk-' || g, 'x',
                   'CUSTOMER_HAS_APPOINTMENT', 'HERA.SALON.APPOINTMENT.BOOKING.v1'
            FROM generate_series(1, 500) g""")
        conn.execute("UPDATE core_dynamic_data SET field_value_text = 'manager' "
                     "WHERE field_value_text = 'owner'")
        # The incidents, one transaction each.
        conn.execute("DELETE FROM core_relationships WHERE relationship_type = "
                     "'STAFF_PROVIDES_SERVICE'")
        lonely, other = (r[0] for r in conn.execute(SINGLE_MEMBERSHIP_USERS).fetchmany(2))
        conn.execute("UPDATE core_relationships SET is_active = false WHERE from_entity_id = %s",
                     (lonely,))
        conn.execute("DELETE FROM core_dynamic_data WHERE entity_id = %s", (other,))
        conn.execute("INSERT INTO core_relationships (organization_id, from_entity_id, "
                     "to_entity_id, relationship_type, smart_code) SELECT id, 'a', 'b', "
                     "'LINK', 'hera.lower.case.v9' FROM core_organizations")
        conn.execute("TRUNCATE core_dynamic_data")
        alerts = alerts_on_kafka(broker, topic_prefix, 5, settle_s=1.5)
    released(empty_db, slot_name)

    assert [a["rule"] for a in alerts] == [
        Rule.MASS_DELETION, Rule.ORPHANED_USER, Rule.ROLE_REMOVED, Rule.SMART_CODE,
        Rule.TRUNCATE]
    mass, orphan, role, code, truncate = alerts
    assert mass["counts"]["removed"] > 10 and mass["severity"] == "EMERGENCY"
    assert orphan["samples"][0]["from_entity_id"] == lonely
    assert role["samples"][0]["entity_id"] == other
    assert code["counts"]["rows"] == 3
    assert truncate["samples"] == [{"table": "public.core_dynamic_data"}]
    assert all(a["transaction"]["commit_lsn"].count("/") == 1 for a in alerts)


def released(db: HeraDB, slot: str) -> None:
    """The walsender outlives capture's clean stop by a moment; the database can only be
    dropped (fixture teardown) once the slot is free."""
    wait_until(lambda: not slot_active(db.dsn, slot), 30, "the slot to be released")


def test_memberships_from_the_snapshot_feed_the_orphan_rule(
        broker: Broker, hera_db: HeraDB, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    with (running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name),
          running_detector(broker, topic_prefix, tmp_path / "state.sqlite"),
          hera_db.connect() as conn):
        two = one(conn, "SELECT from_entity_id FROM core_relationships WHERE relationship_type"
                        " = 'USER_MEMBER_OF_ORG' GROUP BY 1 HAVING count(*) = 2 LIMIT 1")
        conn.execute("DELETE FROM core_relationships WHERE id = (SELECT id FROM "
                     "core_relationships WHERE from_entity_id = %s LIMIT 1)", (two,))
        lonely = one(conn, SINGLE_MEMBERSHIP_USERS)
        conn.execute("DELETE FROM core_relationships WHERE from_entity_id = %s", (lonely,))
        (alert,) = alerts_on_kafka(broker, topic_prefix, 1, settle_s=1.0)
    released(hera_db, slot_name)
    assert alert["rule"] == Rule.ORPHANED_USER
    assert alert["samples"][0]["from_entity_id"] == lonely
