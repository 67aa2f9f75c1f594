"""Who did it, end to end on both plugins: sql/10_author.sql -> capture -> archive, detector
(critical_system_alerts, webhook) -> ``replay --revert-actor``.

The issue's scenario: role ``migrator`` with ``application_name = 'alembic'`` and ``SET LOCAL
hera.actor = 'deploy-42'`` force-deletes the memberships of an organization and, in a second
transaction, changes other rows; another role changes rows too (no actor). Then clients send
hostile context. The alert names the role, application and actor; the archive's
``transactions`` rows hold each author; ``replay --revert-actor deploy-42`` puts back exactly
what PostgreSQL held before (its own copy) and keeps the other role's changes.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from psycopg import sql

from consumers.archive.reader import connect_history
from consumers.detect.config import RulesConfig
from consumers.detect.runner import DetectOptions
from consumers.detect.service import open_detector
from devstack.broker import Broker
from tests.capture_fixtures import PLUGINS, wait_until
from tests.conftest import HeraDB
from tests.detect_fixtures import DYN, REL, fixed_clock
from tests.guard_fixtures import install_guard
from tests.replay_fixtures import Pipeline, pipeline, table_difference
from tests.webhook_fixtures import SECRET, Endpoint

ORG_X = "aaaaaaaa-0000-0000-0000-000000000001"
ORG_Y = "aaaaaaaa-0000-0000-0000-000000000002"
MEMBERS = 24  # > the detector's per-transaction threshold (10)
REPLAY = [str(Path(sys.executable).parent / "replay")]


def _migrator_role(db: HeraDB) -> None:
    """The role ``migrator`` (cluster-wide, so created once) with write rights here."""
    with db.connect() as conn:
        # another test (or the other plugin's run) may have created it
        with contextlib.suppress(psycopg.errors.DuplicateObject,
                                 psycopg.errors.UniqueViolation):
            conn.execute("CREATE ROLE migrator LOGIN")
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON core_relationships, "
                     "core_dynamic_data, guard_settings TO migrator")
        conn.execute("GRANT INSERT ON critical_system_alerts TO migrator")


def _seed(conn: psycopg.Connection[Any]) -> None:
    rows = [(str(uuid.uuid4()), ORG_X, f"user-{i}", ORG_X, "USER_MEMBER_OF_ORG")
            for i in range(MEMBERS)]
    # every user also belongs to ORG_Y: removing ORG_X orphans nobody
    rows += [(str(uuid.uuid4()), ORG_Y, f"user-{i}", ORG_Y, "USER_MEMBER_OF_ORG")
             for i in range(MEMBERS)]
    rows += [(str(uuid.uuid4()), ORG_Y, f"svc-{i}", f"x-{i}", "STAFF_PROVIDES_SERVICE")
             for i in range(6)]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO core_relationships (id, organization_id, from_entity_id, "
            "to_entity_id, relationship_type, created_at, updated_at, effective_date) "
            "VALUES (%s, %s, %s, %s, %s, '2026-01-01Z', '2026-01-01Z', '2026-01-01Z')", rows)


def _xid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT txid_current()").fetchone()
    assert row is not None
    return int(row[0])


def _other_role_changes(conn: psycopg.Connection[Any], table: str) -> int:
    """The other role's transaction, deterministic so it can be applied to a copy too."""
    t = sql.Identifier(table)
    with conn.transaction():
        conn.execute(sql.SQL(
            "INSERT INTO {} (id, organization_id, from_entity_id, to_entity_id, "
            "relationship_type, created_at, updated_at, effective_date) VALUES "
            "('bbbbbbbb-0000-0000-0000-000000000001', %s, 'late', 'x', 'LINK', "
            "'2026-02-01Z', '2026-02-01Z', '2026-02-01Z')").format(t), (ORG_Y,))
        conn.execute(sql.SQL("UPDATE {} SET tags = '{{kept}}' WHERE from_entity_id = 'svc-5'"
                             ).format(t))
        return _xid(conn)


HOSTILE = {
    "big": "x" * 10_240,
    "newlines_and_slack": "line 1\nline 2 <!channel> *bold* `code` <http://evil|click>",
    "not_an_object": "[1, 2, 3]",
    "nul_escape": '{"a": "\\u0000"}',
    "secret": '{"ticket": "OPS-7", "db_password": "hunter2", "nested": {"api_key": "k"}}',
}


def _hostile(db: HeraDB) -> dict[str, int]:
    """Transactions with hostile context; the xid of each. Invalid UTF-8 never gets in."""
    xids = {}
    with db.connect() as conn:
        for name, context in HOSTILE.items():
            with conn.transaction():
                conn.execute("SELECT set_config('hera.context', %s, true)", (context,))
                conn.execute("INSERT INTO core_dynamic_data (organization_id, entity_id, "
                             "field_name) VALUES (%s, %s, 'f')", (ORG_Y, name))
                xids[name] = _xid(conn)
        with pytest.raises(psycopg.errors.CharacterNotInRepertoire):
            conn.execute(b"SET hera.context = '\xff\xfe'")
        # An author message by hand, not UTF-8: refused, capture goes on, the trigger's
        # message gives the transaction its author.
        with conn.transaction():
            conn.execute("SELECT pg_logical_emit_message(true, 'hera.author', '\\xff00'::bytea)")
            conn.execute("INSERT INTO core_dynamic_data (organization_id, entity_id, "
                         "field_name) VALUES (%s, 'bytes', 'f')", (ORG_Y,))
            xids["bytes"] = _xid(conn)
    return xids


def _archived(p: Pipeline, xids: list[int]) -> dict[int, dict[str, Any]]:
    con = connect_history(p.archive)
    rows = con.execute(
        "SELECT xid, db_user, session_user, application_name, client_addr, actor, "
        "CAST(context AS VARCHAR), author_capped FROM transactions WHERE list_contains($x, xid)",
        {"x": xids}).fetchall()
    keys = ("db_user", "session_user", "application_name", "client_addr", "actor", "context",
            "capped")
    return {int(r[0]): dict(zip(keys, r[1:], strict=True)) for r in rows}


@pytest.mark.parametrize("plugin", PLUGINS)
def test_the_alert_the_archive_and_revert_actor_name_and_undo_the_author(
        plugin: str, broker: Broker, empty_db: HeraDB, endpoint: Endpoint,
        topic_prefix: str, slot_name: str, tmp_path: Path) -> None:
    install_guard(empty_db)
    _migrator_role(empty_db)
    with empty_db.connect() as conn:
        _seed(conn)
    stop = threading.Event()
    runner = open_detector(DetectOptions(
        bootstrap_servers=broker.bootstrap_servers, topic_prefix=topic_prefix,
        tables=(REL, DYN), state_path=tmp_path / "state.sqlite", rules=RulesConfig(),
        archive_dir=str(tmp_path / "archive"), dsn=empty_db.dsn, poll_ms=50,
        webhook_url=endpoint.url, webhook_secret=SECRET), fixed_clock, stop)
    detector = threading.Thread(target=runner.run, daemon=True)
    with pipeline(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name, tmp_path,
                  plugin=plugin) as p:
        detector.start()
        try:
            with empty_db.connect() as conn:
                conn.execute("CREATE TABLE before_copy "
                             "(LIKE core_relationships INCLUDING DEFAULTS)")
                conn.execute("INSERT INTO before_copy SELECT * FROM core_relationships")
            migrator = psycopg.connect(
                empty_db.cluster.dsn(empty_db.name, user="migrator"),
                application_name="alembic", autocommit=True)
            with migrator:
                with migrator.transaction():
                    migrator.execute("SET LOCAL hera.actor = 'deploy-42'")
                    migrator.execute("SET LOCAL hera_guard.allow_mass_change = 'migration 42'")
                    migrator.execute("DELETE FROM core_relationships WHERE organization_id = %s",
                                     (ORG_X,))
                    mass_xid = _xid(migrator)
                with migrator.transaction():
                    migrator.execute("SET LOCAL hera.actor = 'deploy-42'")
                    migrator.execute("UPDATE core_relationships SET relationship_strength = 9 "
                                     "WHERE relationship_type = 'STAFF_PROVIDES_SERVICE'")
                    second_xid = _xid(migrator)
            with empty_db.connect() as conn:
                conn.execute("SET application_name = 'psql-admin'")
                other_xid = _other_role_changes(conn, "core_relationships")
                _other_role_changes(conn, "before_copy")  # the expected end state
            hostile = _hostile(empty_db)
            with empty_db.connect() as conn:  # TRUNCATE has its author too
                conn.execute("SET application_name = 'cleanup'")
                conn.execute("TRUNCATE core_dynamic_data")
            p.sync()
            wait_until(lambda: len(endpoint.accepted) >= 2, 60, "the alerts on the webhook")
        finally:
            stop.set()
            detector.join(30)

        # The alert: critical_system_alerts and the webhook name role, application, actor.
        with empty_db.connect() as conn:
            found = conn.execute(
                "SELECT message, metadata FROM critical_system_alerts "
                "WHERE alert_type = 'MASS_RELATIONSHIP_DELETION' AND metadata ? 'rule'"
            ).fetchall()
        ((message, meta),) = cast(list[tuple[str, dict[str, Any]]], found)
        phrase = "by role migrator (application alembic, client 127.0.0.1, actor deploy-42)"
        assert phrase in message
        assert meta["transaction"]["xid"] == mass_xid
        assert {k: meta["author"][k] for k in ("db_user", "application_name", "actor")} == {
            "db_user": "migrator", "application_name": "alembic", "actor": "deploy-42"}
        assert "--revert-actor deploy-42" in meta["actor_replay_command"]
        (body,) = [b for b in endpoint.bodies.values() if b["rule"] == "MASS_RELATIONSHIP_DELETION"]
        assert phrase in body["message"] and body["author"]["actor"] == "deploy-42"
        (truncate,) = [b for b in endpoint.bodies.values() if b["rule"] == "TABLE_TRUNCATED"]
        assert "by role postgres (application cleanup, client 127.0.0.1)" in truncate["message"]

        # The archive: each transaction's own author.
        archived = _archived(p, [mass_xid, second_xid, other_xid, *hostile.values()])
        assert archived[mass_xid] == {
            "db_user": "migrator", "session_user": "migrator", "application_name": "alembic",
            "client_addr": "127.0.0.1", "actor": "deploy-42", "context": None, "capped": []}
        assert archived[second_xid]["actor"] == "deploy-42"
        assert archived[other_xid]["db_user"] == "postgres"
        assert archived[other_xid]["application_name"] == "psql-admin"
        assert archived[other_xid]["actor"] is None

        # Hostile context: capped, kept as text, redacted; capture, archive, detector go on.
        big = archived[hostile["big"]]
        assert big["capped"] == ["context"] and len(json.loads(big["context"])) == 4096
        assert json.loads(archived[hostile["newlines_and_slack"]]["context"]) == HOSTILE[
            "newlines_and_slack"]
        assert json.loads(archived[hostile["not_an_object"]]["context"]) == "[1, 2, 3]"
        assert json.loads(archived[hostile["nul_escape"]]["context"]) == HOSTILE["nul_escape"]
        assert json.loads(archived[hostile["secret"]]["context"]) == {
            "ticket": "OPS-7", "db_password": "[redacted]", "nested": {"api_key": "[redacted]"}}
        assert archived[hostile["bytes"]]["db_user"] == "postgres"
        assert runner.stats.deadletters == 0

        # Undo everything deploy-42 did: a dry run changes nothing and lists both.
        args = [*REPLAY, "--archive", str(p.archive), "--revert-actor", "deploy-42",
                "--dsn", empty_db.dsn]
        dry = subprocess.run([*args, "--dry-run"], capture_output=True, text=True, timeout=120)
        assert dry.returncode == 0, dry.stderr
        assert f"transaction {second_xid}" in dry.stdout and f"transaction {mass_xid}" in dry.stdout
        assert dry.stdout.index(f"transaction {second_xid}") < dry.stdout.index(
            f"transaction {mass_xid}")  # newest first
        assert phrase.removeprefix("by ") in dry.stdout and "dry run: nothing changed" in dry.stdout
        with empty_db.connect() as conn:
            assert table_difference(conn, "core_relationships", "before_copy") > 0
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        with empty_db.connect() as conn:
            # exactly PostgreSQL's copy from before deploy-42, plus the other role's changes
            differing = conn.execute(
                "SELECT 'live', to_jsonb(a) FROM (SELECT * FROM core_relationships EXCEPT ALL "
                "SELECT * FROM before_copy) a UNION ALL SELECT 'expected', to_jsonb(b) FROM "
                "(SELECT * FROM before_copy EXCEPT ALL SELECT * FROM core_relationships) b"
            ).fetchall()
            assert table_difference(conn, "core_relationships", "before_copy") == 0, differing
