"""PostgreSQL as on a managed service: TLS only (sslmode=verify-full against the test CA; the
server rejects every plaintext connection) and no superuser. The tables' owner (CREATEROLE,
not a superuser, like rds_superuser/cloudsqlsuperuser) runs ``guard install --roles``; capture,
replay and the detector then run as the least-privilege roles it made."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from capture.event import ChangeEvent, format_lsn
from capture.topics import transaction_topic
from consumers.detect.alerts import Alert, Rule, Severity, TransactionRef
from consumers.detect.sinks import PostgresAlertSink
from devstack.broker import Broker
from devstack.sample import SampleSize, create_schema, load_sample
from tests.capture_fixtures import (
    read_topic,
    running_capture,
    wait_for_events,
    wait_until,
)
from tests.replay_fixtures import pipeline
from tests.security_fixtures import Pki, TlsPostgres

BIN = Path(sys.executable).parent
OWNER = "hera_owner"


@dataclass(frozen=True)
class ManagedDB:
    pg: TlsPostgres
    name: str
    install_output: str

    def dsn(self, user: str, ca: Path | None = None) -> str:
        return self.pg.dsn(self.name, user, ca)


@pytest.fixture(scope="module")
def managed_db(tls_postgres: TlsPostgres) -> Iterator[ManagedDB]:
    name = f"managed_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(tls_postgres.cluster.dsn(), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (OWNER,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(OWNER)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(OWNER)))
    owner_dsn = tls_postgres.dsn(name, OWNER)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        create_schema(conn)
        load_sample(conn, SampleSize(users=20))
    out = subprocess.run([str(BIN / "guard"), "install", "--dsn", owner_dsn, "--roles",
                          "--no-schedule", "--no-initial-backup"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # the provider's admin grants replication (RDS: GRANT rds_replication; Cloud SQL: ALTER
    # USER ... WITH REPLICATION as cloudsqlsuperuser): PostgreSQL 15 lets only a superuser
    with psycopg.connect(tls_postgres.cluster.dsn(), autocommit=True) as conn:
        conn.execute("ALTER ROLE hera_capture REPLICATION")
    yield ManagedDB(tls_postgres, name, out.stdout + out.stderr)


@pytest.fixture
def slot(managed_db: ManagedDB) -> Iterator[str]:
    """The slot whose publication ``guard install --roles`` made (hera_guard), dropped after
    the test so the next one starts a new stream."""
    yield "hera_guard"
    with psycopg.connect(managed_db.pg.cluster.dsn(), autocommit=True) as conn:
        def dropped() -> bool:
            try:
                conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                             "pg_replication_slots WHERE slot_name = 'hera_guard' AND "
                             "database = %s", (managed_db.name,))
                return True
            except psycopg.errors.ObjectInUse:  # the walsender is still going away
                return False
        wait_until(dropped, 30, "the slot to be dropped")


def test_install_without_a_superuser_says_in_one_line_each_what_it_could_not_do(
        managed_db: ManagedDB) -> None:
    lines = managed_db.install_output.splitlines()
    schema_log = [x for x in lines if "schema log not installed" in x]
    replication = [x for x in lines if "has no REPLICATION yet" in x]
    assert len(schema_log) == 1 and "needs a superuser" in schema_log[0]
    assert len(replication) == 1 and "ALTER ROLE hera_capture REPLICATION" in replication[0]
    assert "roles: hera_capture, hera_restorer, hera_detect" in managed_db.install_output


def test_no_plaintext_connection_is_accepted(managed_db: ManagedDB) -> None:
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(managed_db.dsn(OWNER).replace("sslmode=verify-full", "sslmode=disable"))


def test_capture_streams_as_its_own_role_over_verify_full_on_every_connection(
        managed_db: ManagedDB, broker: Broker, slot: str) -> None:
    prefix = f"m{uuid.uuid4().hex[:8]}"
    dsn = managed_db.dsn("hera_capture")
    with running_capture(dsn, broker.bootstrap_servers, prefix, slot, plugin="pgoutput"):
        with psycopg.connect(managed_db.dsn(OWNER), autocommit=True) as conn:
            conn.execute("UPDATE core_relationships SET updated_at = now() WHERE id = "
                         "(SELECT id FROM core_relationships ORDER BY id LIMIT 1)")
        # what the server says of capture's connections (a superuser sees every session)
        with psycopg.connect(managed_db.pg.cluster.dsn(), autocommit=True) as conn:
            ssl = conn.execute(
                "SELECT a.backend_type, s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a "
                "USING (pid) WHERE a.usename = 'hera_capture'").fetchall()
        assert ("walsender", True) in ssl and all(on for _, on in ssl)

        def updated(events: list[ChangeEvent]) -> bool:
            return any(e.op.value == "u" for e in events)
        wait_for_events(broker.bootstrap_servers, prefix, updated)

        # No event trigger (no superuser at install): a DDL is still noticed, from pgoutput's
        # Relation message, published as an unrecorded schema change, and capture goes on.
        with psycopg.connect(managed_db.dsn(OWNER), autocommit=True) as conn:
            conn.execute("ALTER TABLE core_dynamic_data ADD COLUMN note text")
            conn.execute("UPDATE core_dynamic_data SET note = 'after the ddl' WHERE id = "
                         "(SELECT id FROM core_dynamic_data ORDER BY id LIMIT 1)")

        def noted(events: list[ChangeEvent]) -> bool:
            return any((e.after or {}).get("note") == "after the ddl" for e in events)
        wait_for_events(broker.bootstrap_servers, prefix, noted, table="core_dynamic_data")
        schema = [json.loads(r.value) for r in read_topic(broker.bootstrap_servers,
                                                          transaction_topic(prefix))]
        ddl = [e for e in schema if e.get("status") == "SCHEMA"]
        assert [(e["table"], e["recorded"]) for e in ddl] == [("core_dynamic_data", False)]


def test_capture_refuses_an_unknown_ca_in_one_line(managed_db: ManagedDB, broker: Broker,
                                                   pki: Pki) -> None:
    out = subprocess.run(
        [str(BIN / "capture"), "run", "--dsn", managed_db.dsn("hera_capture", pki.other_ca),
         "--bootstrap-servers", broker.bootstrap_servers, "--slot", "never_made"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = [x for x in out.stderr.splitlines() if x.strip() and not x.startswith("{")]
    assert len(lines) == 1 and "certificate verify failed" in lines[0], out.stderr


def test_guard_health_runs_over_verify_full_and_refuses_an_unknown_ca_in_one_line(
        managed_db: ManagedDB, pki: Pki) -> None:
    ok = subprocess.run([str(BIN / "guard"), "health", "--dsn", managed_db.dsn(OWNER)],
                        capture_output=True, text=True, timeout=120)
    assert "certificate" not in ok.stdout + ok.stderr and "connect" not in ok.stderr, ok.stderr
    bad = subprocess.run([str(BIN / "guard"), "health", "--dsn",
                          managed_db.dsn(OWNER, pki.other_ca)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    lines = [x for x in bad.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "certificate verify failed" in lines[0], bad.stderr


def test_the_detector_writes_alerts_as_its_role_and_reads_nothing_back(
        managed_db: ManagedDB) -> None:
    sink = PostgresAlertSink(managed_db.dsn("hera_detect"))
    now = datetime.now(UTC)
    alert = Alert(id=uuid.uuid4(), severity=Severity.CRITICAL, rule=Rule.MASS_DELETION,
                  organization=None, message="test alert over verify-full", counts={},
                  by_organization={}, transaction=TransactionRef(xid=1, commit_lsn="0/1",
                                                                 commit_time=now),
                  samples=(), replay_command="replay ...", detected_at=now)
    try:
        sink.deliver(alert)
    finally:
        sink.close()
    with psycopg.connect(managed_db.dsn(OWNER), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM critical_system_alerts WHERE id = %s",
                            (alert.id,)).fetchone() == (1,)
    with psycopg.connect(managed_db.dsn("hera_detect"), autocommit=True) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT message FROM critical_system_alerts")


def test_replay_restores_as_the_restorer_role_over_verify_full(
        managed_db: ManagedDB, broker: Broker, tmp_path: Path, slot: str) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    with pipeline(managed_db.dsn("hera_capture"), broker.bootstrap_servers, prefix, slot,
                  tmp_path, plugin="pgoutput") as pipe, \
            psycopg.connect(managed_db.dsn(OWNER), autocommit=True) as conn:
        touch = ("UPDATE core_relationships SET updated_at = now() WHERE id = (SELECT id FROM "
                 "core_relationships ORDER BY id DESC LIMIT 1) RETURNING "
                 "pg_current_wal_lsn()::text")
        before = pipe.sync_by(conn, touch)  # the owner writes; capture only reads
        row = conn.execute("SELECT count(*) FROM core_relationships").fetchone()
        conn.execute("SELECT set_config('hera_guard.allow_mass_change', 'test', false)")
        # Not memberships: the lowest random ids were sometimes a user's last one, which the
        # guardian rightly refuses to orphan (a flaky failure, 1 run in several).
        conn.execute("DELETE FROM core_relationships WHERE id IN (SELECT id FROM "
                     "core_relationships WHERE relationship_type <> 'USER_MEMBER_OF_ORG' "
                     "ORDER BY id LIMIT 3)")
        pipe.sync_by(conn, touch)
    out = subprocess.run(
        [str(BIN / "replay"), "--archive", str(pipe.archive), "--table",
         "public.core_relationships", "--until", format_lsn(before), "--restore",
         "--dsn", managed_db.dsn("hera_restorer")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    with psycopg.connect(managed_db.dsn(OWNER), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM core_relationships").fetchone() == row


def test_the_detector_service_starts_as_its_role_over_verify_full(
        managed_db: ManagedDB, broker: Broker, tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from devstack.ports import free_port

    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "consumers"), "detect", "--bootstrap-servers", broker.bootstrap_servers,
         "--topic-prefix", f"d{uuid.uuid4().hex[:8]}", "--state-dir", str(tmp_path / "state"),
         "--dsn", managed_db.dsn("hera_detect"), "--metrics-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "detect.log").open("ab"))

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "detect.log").read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False
    try:
        wait_until(ready, 60, "the detector (its alerts sink connected as hera_detect)")
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
