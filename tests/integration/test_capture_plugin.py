"""Which output plugin a slot uses: auto's choice, an existing slot keeps its own, a switch is
a new epoch; pgoutput's publication holds exactly the captured tables."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from capture.decoding.choice import wal2json_exact
from capture.event import MarkerKind, StreamMarker, parse_transaction_topic
from capture.topics import transaction_topic
from devstack.broker import Broker
from tests.capture_fixtures import read_topic, running_capture
from tests.conftest import HeraDB, unique_name


def _slot_plugin(db: HeraDB, slot: str) -> str | None:
    with db.connect() as conn:
        row = conn.execute("SELECT plugin FROM pg_replication_slots WHERE slot_name = %s",
                           (slot,)).fetchone()
    return None if row is None else str(row[0])


def _capture_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "capture", *args], capture_output=True,
                          text=True, timeout=90)


def _one_line_error(res: subprocess.CompletedProcess[str], expected: str) -> str:
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.startswith("capture:")]
    assert len(lines) == 1, res.stderr
    assert expected in lines[0], lines[0]
    return lines[0]


def _publication_tables(db: HeraDB, name: str) -> set[str]:
    with db.connect() as conn:
        rows = conn.execute("SELECT schemaname || '.' || tablename FROM pg_publication_tables "
                            "WHERE pubname = %s", (name,)).fetchall()
    return {str(r[0]) for r in rows}


def test_auto_creates_the_slot_with_wal2json_only_when_it_is_exact_and_says_why(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    with hera_db.connect() as conn:
        exact, _why = wal2json_exact(conn)
    caplog.set_level(logging.INFO, logger="hera.capture")
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name):
        pass
    expected = "wal2json" if exact else "pgoutput"
    assert _slot_plugin(hera_db, slot_name) == expected
    (chosen,) = [r for r in caplog.records if r.getMessage() == "output plugin chosen"]
    assert chosen.__dict__["plugin"] == expected
    assert ("older than 2.6" in chosen.__dict__["why"]) == (not exact)
    with hera_db.connect() as conn:  # the probe leaves no slot behind
        probes = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name "
                              "LIKE 'hera_probe_%'").fetchone()
    assert probes == (0,)


def test_an_existing_slot_keeps_its_plugin_and_another_one_is_refused_with_the_way_out(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str) -> None:
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin="wal2json"):
        pass
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin="auto") as svc:
        assert svc.dec.caps.name == "wal2json"
    res = _capture_cli("run", "--dsn", hera_db.dsn, "--bootstrap-servers",
                       broker.bootstrap_servers, "--slot", slot_name, "--topic-prefix",
                       topic_prefix, "--plugin", "pgoutput")
    line = _one_line_error(res, "was created with wal2json, not pgoutput")
    assert "--new-snapshot" in line
    assert _slot_plugin(hera_db, slot_name) == "wal2json"


def test_switching_plugin_with_new_snapshot_starts_a_new_epoch_marked_with_the_plugin(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str) -> None:
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin="wal2json"):
        pass
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin="pgoutput", new_snapshot=True):
        pass
    assert _slot_plugin(hera_db, slot_name) == "pgoutput"
    starts = [r for r in (parse_transaction_topic(x.value) for x in read_topic(
        broker.bootstrap_servers, transaction_topic(topic_prefix)))
        if isinstance(r, StreamMarker) and r.status == MarkerKind.SNAPSHOT_START]
    assert [m.plugin for m in starts] == ["wal2json", "pgoutput"]
    assert starts[1].epoch_lsn > starts[0].epoch_lsn


def test_the_publication_holds_exactly_the_captured_tables_and_follows_the_list(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str) -> None:
    one = ("public.core_relationships",)
    two = ("public.core_relationships", "public.core_dynamic_data")
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin="pgoutput", tables=one):
        assert _publication_tables(hera_db, slot_name) == set(one)
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin="pgoutput", tables=two):
        assert _publication_tables(hera_db, slot_name) == set(two)
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin="pgoutput", tables=two):  # idempotent: left as it is
        assert _publication_tables(hera_db, slot_name) == set(two)


def test_a_role_that_may_not_create_the_publication_gets_one_line_naming_the_fix(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str) -> None:
    role = unique_name("nopub")
    with hera_db.connect() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN REPLICATION')
        for t in ("core_relationships", "core_dynamic_data"):
            conn.execute(f"ALTER TABLE {t} REPLICA IDENTITY FULL")
    dsn = hera_db.cluster.dsn(hera_db.name, user=role)
    res = _capture_cli("run", "--dsn", dsn, "--bootstrap-servers", broker.bootstrap_servers,
                       "--slot", slot_name, "--topic-prefix", topic_prefix, "--plugin",
                       "pgoutput", "--tables",
                       "public.core_relationships,public.core_dynamic_data")
    line = _one_line_error(res, f"needs publication {slot_name}")
    assert "CREATE PUBLICATION" in line
    assert _slot_plugin(hera_db, slot_name) is None  # nothing created
