"""Restore and revert against a live database with the deletion guardian installed: an
incident (a mass delete) is undone exactly, later legitimate changes stay, conflicts stop a
revert unless asked, and the guardian is told (never disabled)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from capture.event import format_lsn
from devstack.broker import Broker
from replay.cli import main
from tests.conftest import HeraDB
from tests.replay_fixtures import Pipeline, copy_moment, pipeline

OPT_IN = ("SELECT set_config('hera_guard.allow_mass_change', 'bad migration', true), "
          "set_config('hera_guard.allow_orphaning', 'bad migration', true)")


@dataclass
class Incident:
    db: HeraDB
    pipe: Pipeline
    conn: psycopg.Connection[Any]
    before_lsn: int
    xid: int  # the mass delete
    deleted: list[str]
    recreated: str  # a deleted id someone inserted again, differently
    kept_insert: str  # a legitimate insert after the incident
    kept_update: str  # a legitimate update after the incident

    def replay(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--archive", str(self.pipe.archive),
                                         "--dsn", self.db.dsn, *args])

    def count(self, query: str, *params: object) -> int:
        row = self.conn.execute(query, params).fetchone()
        return int(str(row[0])) if row else -1


@pytest.fixture
def incident(hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
             tmp_path: Path) -> Iterator[Incident]:
    from guard.install import install

    install(hera_db.dsn, initial_backup=False, schedule=False)
    with pipeline(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                  tmp_path) as pipe, hera_db.connect() as conn:
        before_lsn, _ = copy_moment(conn, "before")
        with conn.transaction():
            conn.execute(OPT_IN)
            deleted = [str(r[0]) for r in conn.execute(
                "DELETE FROM core_relationships WHERE id IN (SELECT id FROM core_relationships "
                "ORDER BY id LIMIT 150) RETURNING id").fetchall()]
            xid = int(str(conn.execute("SELECT txid_current()").fetchone()[0]))  # type: ignore[index]
        conn.execute("INSERT INTO core_relationships (id, organization_id, from_entity_id, "
                     "to_entity_id, relationship_type) SELECT id, organization_id, 'someone', "
                     "'else', 'RECREATED' FROM before WHERE id = %s", (deleted[0],))
        kept_insert = str(conn.execute(
            "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
            "relationship_type) SELECT organization_id, 'new', 'link', 'STAFF_PROVIDES_SERVICE' "
            "FROM before LIMIT 1 RETURNING id").fetchone()[0])  # type: ignore[index]
        kept_update = str(conn.execute(
            "UPDATE core_relationships SET relationship_data = '{\"edited\": true}' WHERE id = "
            "(SELECT max(id::text)::uuid FROM core_relationships) RETURNING id"
        ).fetchone()[0])  # type: ignore[index]
        pipe.sync()
        yield Incident(hera_db, pipe, conn, before_lsn, xid, deleted, deleted[0], kept_insert,
                       kept_update)


def test_revert_dry_run_lists_the_plan_and_conflicts_and_changes_nothing(
        incident: Incident) -> None:
    live = incident.count("SELECT count(*) FROM core_relationships")
    result = incident.replay("--revert-xid", str(incident.xid), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "re-insert (149" in result.output and "conflict (1" in result.output
    assert incident.recreated[:8] in result.output
    assert "dry run: nothing changed" in result.output
    assert incident.count("SELECT count(*) FROM core_relationships") == live


def test_revert_with_conflicts_applies_nothing_unless_asked(incident: Incident) -> None:
    live = incident.count("SELECT count(*) FROM core_relationships")
    result = incident.replay("--revert-xid", str(incident.xid))
    assert result.exit_code == 1
    assert "1 rows changed after transaction" in result.output
    assert incident.count("SELECT count(*) FROM core_relationships") == live


def test_revert_brings_back_exactly_the_deleted_rows_and_keeps_later_changes(
        incident: Incident) -> None:
    result = incident.replay("--revert-xid", str(incident.xid), "--skip-conflicts")
    assert result.exit_code == 0, result.output
    assert "re-inserted 149" in result.output
    restored = [i for i in incident.deleted if i != incident.recreated]
    # Every column of every restored row equals the row before the incident.
    assert incident.count(
        "SELECT count(*) FROM (SELECT * FROM before WHERE id = ANY(%s::uuid[]) EXCEPT "
        "SELECT * FROM core_relationships) x", restored) == 0
    assert incident.count("SELECT count(*) FROM core_relationships WHERE id = %s AND "
                          "relationship_type = 'RECREATED'", incident.recreated) == 1
    assert incident.count("SELECT count(*) FROM core_relationships WHERE id = %s",
                          incident.kept_insert) == 1
    assert incident.count("SELECT count(*) FROM core_relationships WHERE id = %s AND "
                          "relationship_data = '{\"edited\": true}'", incident.kept_update) == 1


def test_restore_to_before_the_incident_equals_the_copy_and_tells_the_guardian(
        incident: Incident) -> None:
    dry = incident.replay("--until", format_lsn(incident.before_lsn), "--restore", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "re-insert (149" in dry.output and "remove (1" in dry.output
    result = incident.replay("--until", format_lsn(incident.before_lsn), "--restore")
    assert result.exit_code == 0, result.output
    assert incident.count(
        "SELECT count(*) FROM ((TABLE before EXCEPT TABLE core_relationships) UNION ALL "
        "(TABLE core_relationships EXCEPT TABLE before)) x") == 0
    assert incident.count("SELECT count(*) FROM critical_system_alerts "
                          "WHERE message LIKE '%%replay restore%%'") >= 1


def test_a_restore_that_would_orphan_users_needs_allow_orphaning(incident: Incident) -> None:
    incident.conn.execute(
        "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
        "relationship_type) SELECT organization_id, 'lonely-user', organization_id::text, "
        "'USER_MEMBER_OF_ORG' FROM before LIMIT 1")
    incident.pipe.sync()
    live = incident.count("SELECT count(*) FROM core_relationships")
    args = ("--until", format_lsn(incident.before_lsn), "--restore",
            "--relationship-type", "USER_MEMBER_OF_ORG")
    refused = incident.replay(*args)
    assert refused.exit_code == 1
    assert "orphan" in refused.output and "--allow-orphaning" in refused.output
    assert incident.count("SELECT count(*) FROM core_relationships") == live
    allowed = incident.replay(*args, "--allow-orphaning")
    assert allowed.exit_code == 0, allowed.output
    assert incident.count("SELECT count(*) FROM core_relationships "
                          "WHERE from_entity_id = 'lonely-user'") == 0


def test_an_org_filter_restores_only_that_organization(incident: Incident) -> None:
    org = str(incident.conn.execute(
        "SELECT organization_id FROM before WHERE id = ANY(%s::uuid[]) "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1", (incident.deleted[1:],)
    ).fetchone()[0])  # type: ignore[index]
    missing = incident.count(
        "SELECT count(*) FROM before b WHERE b.organization_id = %s AND NOT EXISTS "
        "(SELECT 1 FROM core_relationships c WHERE c.id = b.id)", org)
    added_since = incident.count(  # rows of that org that did not exist before: removed
        "SELECT count(*) FROM core_relationships c WHERE c.organization_id = %s AND NOT EXISTS "
        "(SELECT 1 FROM before b WHERE b.id = c.id)", org)
    live = incident.count("SELECT count(*) FROM core_relationships")
    result = incident.replay("--until", format_lsn(incident.before_lsn), "--restore",
                             "--org", org)
    assert result.exit_code == 0, result.output
    assert incident.count("SELECT count(*) FROM core_relationships") == (
        live + missing - added_since)
    # Other organizations are untouched: their rows deleted by the incident stay deleted.
    assert incident.count(
        "SELECT count(*) FROM before b WHERE b.organization_id <> %s AND b.id = ANY(%s::uuid[]) "
        "AND EXISTS (SELECT 1 FROM core_relationships c WHERE c.id = b.id)",
        org, incident.deleted[1:]) == 0


def test_filters_compare_values_as_their_type_and_refuse_values_that_are_not_one(
        incident: Incident) -> None:
    org = str(incident.conn.execute(
        "SELECT organization_id FROM before WHERE id = ANY(%s::uuid[]) "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1", (incident.deleted[1:],)
    ).fetchone()[0])  # type: ignore[index]
    missing = incident.count(
        "SELECT count(*) FROM before b WHERE b.organization_id = %s AND NOT EXISTS "
        "(SELECT 1 FROM core_relationships c WHERE c.id = b.id)", org)
    assert missing > 0
    added_since = incident.count(
        "SELECT count(*) FROM core_relationships c WHERE c.organization_id = %s AND NOT EXISTS "
        "(SELECT 1 FROM before b WHERE b.id = c.id)", org)
    live = incident.count("SELECT count(*) FROM core_relationships")
    point = ("--until", format_lsn(incident.before_lsn))
    for bad, option in (("not-a-uuid", "--org"), (org[:-1], "--org")):
        refused = incident.replay(*point, "--restore", option, bad)
        assert refused.exit_code == 1, refused.output
        lines = refused.output.strip().splitlines()
        assert len(lines) == 1 and "is not a valid uuid" in lines[0], refused.output
    # A filter is refused where it would be ignored (a file or a new table is unfiltered).
    ignored = incident.replay(*point, "--into-table", "public.filtered", "--org", org)
    assert ignored.exit_code == 1 and "only filters --restore" in ignored.output
    assert incident.count("SELECT count(*) FROM core_relationships") == live
    # The same uuid in upper case and with braces is the same value as PostgreSQL's spelling.
    result = incident.replay(*point, "--restore", "--org", "{" + org.upper() + "}")
    assert result.exit_code == 0, result.output
    assert incident.count(
        "SELECT count(*) FROM before b WHERE b.organization_id = %s AND NOT EXISTS "
        "(SELECT 1 FROM core_relationships c WHERE c.id = b.id)", org) == 0
    assert incident.count("SELECT count(*) FROM core_relationships") == (
        live + missing - added_since)
