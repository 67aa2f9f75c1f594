"""The detector's rules over complete transactions: each fires once per incident, and
stays quiet on legitimate traffic."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from consumers.detect.alerts import Alert, Rule, Severity
from consumers.detect.config import MassDeletionRule, RulesConfig
from consumers.detect.rules import Detector
from tests.detect_fixtures import (
    BASE_US,
    DYN,
    REL,
    Tx,
    link,
    make_detector,
    membership,
    role,
    run,
)

ORG_A, ORG_B = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def snapshot(detector: Detector, *rows: dict[str, object]) -> None:
    tx = Tx()
    for row in rows:
        tx.read(REL, row)
    for e in tx.events:
        detector.apply_snapshot(e)


def rules_of(alerts: list[Alert]) -> list[Rule]:
    return [a.rule for a in alerts]


# --- mass deletion --------------------------------------------------------------------------


def test_a_mass_delete_in_one_transaction_raises_one_emergency_alert_with_counts() -> None:
    d = make_detector()
    rows = [link(ORG_A) for _ in range(50)]
    tx = Tx()
    for r in rows:
        tx.delete(REL, r)
    alerts = run(d, tx)
    assert rules_of(alerts) == [Rule.MASS_DELETION]
    alert = alerts[0]
    assert alert.severity is Severity.EMERGENCY
    assert alert.organization == ORG_A
    assert alert.counts["removed"] == 50 and alert.counts["deleted"] == 50
    assert alert.by_organization == {ORG_A: 50}
    assert len(alert.samples) == 5 and alert.samples[0]["id"] == rows[0]["id"]
    assert alert.transaction.xid == tx.xid
    assert alert.transaction.commit_lsn.startswith("0/")
    assert alert.transaction.commit_time.utcoffset() is not None
    assert alert.replay_command == (
        f"replay --archive ./archive --revert-xid {tx.xid} --dsn '<DSN>' --dry-run")


def test_a_few_deletions_in_one_transaction_raise_nothing() -> None:
    d = make_detector()
    tx = Tx()
    for _ in range(10):
        tx.delete(REL, link(ORG_A))
    assert run(d, tx) == []


def test_deactivations_count_as_removals() -> None:
    d = make_detector()
    tx = Tx()
    for _ in range(6):
        tx.delete(REL, link(ORG_A))
    for _ in range(6):
        tx.update(REL, link(ORG_A), is_active=False)
    (alert,) = run(d, tx)
    assert (alert.counts["removed"], alert.counts["deactivated"]) == (12, 6)


def test_deletions_spread_over_transactions_raise_one_alert_per_organization_window() -> None:
    d = make_detector()
    alerts: list[Alert] = []
    for i in range(10):  # 10 x 5 = 50 > 25 per organization in 300 s, none > 10 alone
        tx = Tx(commit_us=BASE_US + i * 1_000_000)
        for _ in range(5):
            tx.delete(REL, link(ORG_A))
        alerts += run(d, tx)
    assert rules_of(alerts) == [Rule.MASS_DELETION]
    assert alerts[0].counts["window_removed"] == 30
    assert alerts[0].organization == ORG_A


def test_a_window_alert_rearms_once_the_window_has_passed() -> None:
    d = make_detector(RulesConfig(mass_deletion=MassDeletionRule(
        window_seconds=60, per_organization_window=8, global_window=1000)))
    alerts: list[Alert] = []
    for start in (0, 600):
        for i in range(3):
            tx = Tx(commit_us=BASE_US + (start + i) * 1_000_000)
            for _ in range(4):
                tx.delete(REL, link(ORG_A))
            alerts += run(d, tx)
    assert len(alerts) == 2


def test_deletions_across_organizations_raise_the_global_window_alert() -> None:
    d = make_detector(RulesConfig(mass_deletion=MassDeletionRule(
        per_organization_window=100, global_window=20)))
    alerts: list[Alert] = []
    for i in range(6):
        tx = Tx(commit_us=BASE_US + i * 1_000_000)
        for org in (ORG_A, ORG_B):
            for _ in range(2):
                tx.delete(REL, link(org))
        alerts += run(d, tx)
    (alert,) = alerts
    assert alert.organization is None and alert.counts["window_removed"] == 24
    assert "across all organizations" in alert.message


# --- truncate -------------------------------------------------------------------------------


def test_a_truncate_raises_one_emergency_alert_that_counts_lost_memberships() -> None:
    d = make_detector()
    snapshot(d, membership("u1", ORG_A), membership("u2", ORG_A))
    alerts = run(d, Tx().truncate(REL))
    assert rules_of(alerts) == [Rule.TRUNCATE]
    assert alerts[0].severity is Severity.EMERGENCY
    assert alerts[0].counts == {"tables": 1, "memberships_lost": 2}


def test_a_truncate_of_an_empty_captured_table_still_alerts() -> None:
    d = make_detector()
    assert rules_of(run(d, Tx().truncate(DYN))) == [Rule.TRUNCATE]


# --- orphaned users -------------------------------------------------------------------------


def test_deleting_a_users_last_membership_raises_an_orphaned_user_alert() -> None:
    d = make_detector()
    m = membership("u1", ORG_A)
    snapshot(d, m)
    (alert,) = run(d, Tx().delete(REL, m))
    assert alert.rule is Rule.ORPHANED_USER and alert.severity is Severity.CRITICAL
    assert alert.counts == {"users_orphaned": 1}
    assert alert.samples[0]["from_entity_id"] == "u1"


def test_removing_one_membership_while_the_user_keeps_another_is_quiet() -> None:
    d = make_detector()
    m1, m2 = membership("u1", ORG_A), membership("u1", ORG_B)
    snapshot(d, m1, m2)
    assert run(d, Tx().delete(REL, m1)) == []


def test_deactivating_the_last_membership_orphans_the_user() -> None:
    d = make_detector()
    m = membership("u1", ORG_A)
    snapshot(d, m)
    assert rules_of(run(d, Tx().update(REL, m, is_active=False))) == [Rule.ORPHANED_USER]


def test_turning_the_last_membership_into_another_type_orphans_the_user() -> None:
    d = make_detector()
    m = membership("u1", ORG_A)
    snapshot(d, m)
    alerts = run(d, Tx().update(REL, m, relationship_type="USER_FOLLOWS_ORG"))
    assert rules_of(alerts) == [Rule.ORPHANED_USER]


def test_moving_the_last_membership_to_another_user_orphans_the_first() -> None:
    d = make_detector()
    m = membership("u1", ORG_A)
    snapshot(d, m)
    (alert,) = run(d, Tx().update(REL, m, from_entity_id="u2"))
    assert alert.samples[0]["from_entity_id"] == "u1"
    assert d.memberships.user_count("u2") == 1


def test_replacing_a_membership_inside_one_transaction_is_quiet() -> None:
    d = make_detector()
    m = membership("u1", ORG_A)
    snapshot(d, m)
    assert run(d, Tx().delete(REL, m).insert(REL, membership("u1", ORG_A))) == []


def test_many_orphaned_users_in_one_transaction_raise_one_alert() -> None:
    d = make_detector()
    ms = [membership(f"u{i}", ORG_A) for i in range(8)]
    snapshot(d, *ms)
    tx = Tx()
    for m in ms:
        tx.delete(REL, m)
    (alert,) = run(d, tx)
    assert alert.counts == {"users_orphaned": 8}


def test_memberships_inserted_by_the_stream_count_as_state() -> None:
    d = make_detector()
    m = membership("u1", ORG_A)
    assert run(d, Tx().insert(REL, m)) == []
    assert rules_of(run(d, Tx().delete(REL, m))) == [Rule.ORPHANED_USER]


def test_a_bulk_insert_raises_nothing() -> None:
    d = make_detector()
    tx = Tx()
    for i in range(500):
        tx.insert(REL, membership(f"u{i}", ORG_A)).insert(DYN, role(f"u{i}", ORG_A))
        tx.insert(REL, link(ORG_B))
    assert run(d, tx) == []


# --- role data ------------------------------------------------------------------------------


def test_deleting_an_active_members_role_raises_one_alert() -> None:
    d = make_detector()
    snapshot(d, membership("u1", ORG_A), membership("u2", ORG_A))
    tx = Tx().delete(DYN, role("u1", ORG_A)).delete(DYN, role("u2", ORG_A, "salon_role"))
    (alert,) = run(d, tx)
    assert alert.rule is Rule.ROLE_REMOVED and alert.counts == {"roles_removed": 2}


def test_removing_a_role_together_with_the_membership_reports_the_orphan_only() -> None:
    d = make_detector()
    m = membership("u1", ORG_A)
    snapshot(d, m)
    alerts = run(d, Tx().delete(REL, m).delete(DYN, role("u1", ORG_A)))
    assert rules_of(alerts) == [Rule.ORPHANED_USER]


def test_deleting_other_dynamic_data_of_a_member_is_quiet() -> None:
    d = make_detector()
    snapshot(d, membership("u1", ORG_A))
    assert run(d, Tx().delete(DYN, role("u1", ORG_A, "favourite_colour"))) == []


# --- smart codes ----------------------------------------------------------------------------


def test_rows_written_with_non_compliant_smart_codes_raise_one_warning() -> None:
    d = make_detector()
    tx = Tx()
    for _ in range(20):
        tx.insert(REL, link(ORG_A, smart_code="HERA.SALON.booking.V7"))
    (alert,) = run(d, tx)
    assert alert.rule is Rule.SMART_CODE and alert.severity is Severity.WARNING
    assert alert.counts == {"rows": 20, "distinct_codes": 1}


@pytest.mark.parametrize("code", ["HERA.ACCOUNTING.GL.LINE.v2", "HERA.UNIVERSAL.LINK.V1",
                                  "HERA.SALON.APPOINTMENT.BOOKING.v1", None])
def test_smart_codes_allowed_by_constraint_v3_are_quiet(code: str | None) -> None:
    d = make_detector()
    assert run(d, Tx().insert(REL, link(ORG_A, smart_code=code))) == []


def test_an_update_that_keeps_an_old_non_compliant_code_is_quiet() -> None:
    d = make_detector()
    assert run(d, Tx().update(REL, link(ORG_A, smart_code="legacy"), version=2)) == []


# --- the alert ------------------------------------------------------------------------------


def test_the_replay_command_names_the_configured_dsn_without_its_password() -> None:
    d = make_detector(dsn="host=db.internal dbname=hera user=ops password=s3cret")
    tx = Tx()
    for _ in range(11):
        tx.delete(REL, link(ORG_A))
    (alert,) = run(d, tx)
    assert "s3cret" not in alert.model_dump_json()
    dsn = alert.replay_command.split("--dsn ")[1].split("'")[1]
    assert sorted(dsn.split()) == ["dbname=hera", "host=db.internal", "user=ops"]


def test_a_url_dsn_loses_its_password_too() -> None:
    d = make_detector(dsn="postgresql://ops:s3cret@db.internal:5433/hera")
    tx = Tx()
    for _ in range(11):
        tx.delete(REL, link(ORG_A))
    (alert,) = run(d, tx)
    assert "s3cret" not in alert.replay_command and "port=5433" in alert.replay_command


def test_an_alert_is_frozen_and_its_id_is_stable_across_evaluations() -> None:
    tx = Tx()
    for _ in range(11):
        tx.delete(REL, link(ORG_A))
    first, second = run(make_detector(), tx)[0], run(make_detector(), tx)[0]
    assert first.id == second.id
    with pytest.raises(ValidationError):
        first.severity = Severity.INFO  # type: ignore[misc]
