"""capture against the real PostgreSQL and the real broker, with each output plugin: what it
publishes."""

from __future__ import annotations

import threading
import urllib.request
from collections import Counter

import psycopg
import pytest

from capture.encoding import from_pg_text
from capture.event import (
    ChangeEvent,
    Op,
    StreamMarker,
    TransactionEvent,
    parse_lsn,
    parse_transaction_topic,
)
from capture.status import slot_status
from capture.topics import transaction_topic
from devstack.broker import Broker
from devstack.ports import free_port
from hera_kit.service import ServiceEndpoint
from tests.capture_fixtures import (
    PLUGINS,
    confirmed_lsn,
    read_events,
    read_topic,
    running_capture,
    scrape,
    wait_for_events,
    wait_until,
)
from tests.conftest import HeraDB


def _live_rows(db: HeraDB, table: str) -> dict[str, dict[str, object]]:
    with db.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        cols = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,)).fetchall()
        names = [str(c) for c, _ in cols]
        types = {str(c): str(t) for c, t in cols}
        select = ", ".join(f'"{n}"::text' for n in names)
        rows = conn.execute(f"SELECT {select} FROM {table}").fetchall()  # noqa: S608 - test-owned names
    out: dict[str, dict[str, object]] = {}
    for values in rows:
        row: dict[str, object] = {n: from_pg_text(types[n], None if v is None else str(v))
               for n, v in zip(names, values, strict=True)}
        out[str(row["id"])] = row
    return out


def _state(events: list[ChangeEvent]) -> dict[str, dict[str, object]]:
    state: dict[str, dict[str, object]] = {}
    for ev in sorted(events, key=lambda e: e.order_key):
        if ev.op == Op.TRUNCATE:
            state.clear()
        elif ev.op == Op.DELETE:
            assert ev.before is not None
            state.pop(str(ev.before["id"]), None)
        else:
            assert ev.after is not None
            if ev.op == Op.UPDATE and ev.before is not None:
                state.pop(str(ev.before["id"]), None)
            state[str(ev.after["id"])] = dict(ev.after)
    return state


@pytest.mark.parametrize("plugin", PLUGINS)
def test_snapshot_and_workload_events_rebuild_the_live_tables_exactly(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        plugin: str) -> None:
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin=plugin), \
            hera_db.connect() as conn:
        conn.execute("UPDATE core_relationships SET is_active = false, version = version + 1 "
                     "WHERE relationship_type = 'SERVICE_IN_CATEGORY'")
        conn.execute("DELETE FROM core_relationships WHERE relationship_type = "
                     "'STAFF_PROVIDES_SERVICE' AND relationship_strength < 5")
        conn.execute("UPDATE core_dynamic_data SET field_value_text = 'manager' WHERE "
                     "field_value_text = 'owner'")
        conn.execute("INSERT INTO core_relationships (organization_id, from_entity_id, "
                     "to_entity_id, relationship_type) SELECT id, 'a', 'b', 'X' "
                     "FROM core_organizations")
        (end,) = conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone() or (0,)
        wait_until(lambda: confirmed_lsn(hera_db.dsn, slot_name) >= int(str(end)), 60,
                   "capture to confirm the workload")
    for table in ("core_relationships", "core_dynamic_data"):
        events = read_events(broker.bootstrap_servers, topic_prefix, table)
        keys = Counter(e.order_key for e in events)
        assert max(keys.values()) == 1, "each (commit_lsn, position) exactly once"
        assert _state(events) == _live_rows(hera_db, table)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_transaction_metadata_counts_every_event_per_table(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        plugin: str) -> None:
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin=plugin), \
            hera_db.connect() as conn:
        with conn.transaction():
            conn.execute("DELETE FROM core_relationships WHERE relationship_type = "
                         "'USER_MEMBER_OF_ORG' AND ctid IN (SELECT ctid FROM core_relationships "
                         "WHERE relationship_type = 'USER_MEMBER_OF_ORG' LIMIT 3)")
            conn.execute("DELETE FROM core_dynamic_data WHERE ctid IN "
                         "(SELECT ctid FROM core_dynamic_data LIMIT 2)")
        (xid_row,) = conn.execute("SELECT txid_current() - 1").fetchone() or (0,)
        wait_for_events(broker.bootstrap_servers, topic_prefix,
                        lambda evs: sum(e.op == Op.DELETE for e in evs) == 2,
                        table="core_dynamic_data")
    records = [parse_transaction_topic(r.value)
               for r in read_topic(broker.bootstrap_servers, transaction_topic(topic_prefix))]
    ends = [r for r in records if isinstance(r, TransactionEvent) and r.status == "END"]
    assert len(ends) == 1 and ends[0].xid == int(str(xid_row))
    assert ends[0].event_count == 5
    assert {c.data_collection: c.event_count for c in ends[0].data_collections or ()} == {
        "public.core_relationships": 3, "public.core_dynamic_data": 2}
    markers = [r for r in records if isinstance(r, StreamMarker)]
    kinds = [m.status for m in markers]
    with hera_db.connect() as conn:
        (sysid,) = conn.execute("SELECT system_identifier::text FROM pg_control_system()"
                                ).fetchone() or ("",)
    assert {(m.plugin, m.system_identifier) for m in markers} == {(plugin, sysid)}
    assert kinds[:2] == ["SNAPSHOT_START", "SNAPSHOT_END"] and "PROGRESS" in kinds
    deletes = [e for e in read_events(broker.bootstrap_servers, topic_prefix)
               if e.op == Op.DELETE]
    assert sorted(e.position for e in deletes) == [0, 1, 2]
    assert all(e.before is not None and e.before["relationship_type"] == "USER_MEMBER_OF_ORG"
               for e in deletes)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_truncate_of_two_tables_gives_one_event_per_table(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        plugin: str) -> None:
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin=plugin), \
            hera_db.connect() as conn:
        conn.execute("TRUNCATE core_relationships, core_dynamic_data")
        rel = wait_for_events(broker.bootstrap_servers, topic_prefix,
                              lambda evs: any(e.op == Op.TRUNCATE for e in evs))
        dyn = wait_for_events(broker.bootstrap_servers, topic_prefix,
                              lambda evs: any(e.op == Op.TRUNCATE for e in evs),
                              table="core_dynamic_data")
    truncs = [e for e in rel + dyn if e.op == Op.TRUNCATE]
    assert len(truncs) == 2
    assert truncs[0].commit_lsn == truncs[1].commit_lsn
    assert {e.position for e in truncs} == {0, 1}


@pytest.mark.parametrize("plugin", PLUGINS)
def test_every_column_type_round_trips_exactly(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        plugin: str) -> None:
    big_text = "ü'\"\\" * 30000  # TOASTed, unicode, quotes, backslashes
    with empty_db.connect() as conn:
        conn.execute(
            "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
            "relationship_type, relationship_strength, ai_confidence, relationship_data, tags, "
            "expiration_date, version, ai_classification) VALUES (gen_random_uuid(), 'snap', "
            "'x', 'T', 123456789012345678901234567890.123456789, 0.1234, "
            "'{\"n\": [1, 2.5, null], \"s\": \"\\u00e9\"}', ARRAY['a b', 'c,d', NULL], "
            "'2031-02-03 04:05:06.789012+05:30', 9007199254740993, %s)", (big_text,))
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         plugin=plugin), \
            empty_db.connect() as conn:
        conn.execute(
            "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
            "relationship_type, relationship_strength, relationship_data, tags, version, "
            "ai_classification) VALUES (gen_random_uuid(), 'stream', 'x', 'T', "
            "-0.000000000000000000001, '[]', '{}', -9223372036854775808, %s)", (big_text,))
        # An UPDATE that leaves the TOASTed column alone must not record it as missing.
        conn.execute("UPDATE core_relationships SET is_active = false")
        events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                 lambda evs: sum(e.op == Op.UPDATE for e in evs) == 2)
    assert _state(events) == _live_rows(empty_db, "core_relationships")
    updates = [e for e in events if e.op == Op.UPDATE]
    assert all(e.after is not None and e.after["ai_classification"] == big_text
               for e in updates)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_idle_captured_tables_do_not_pin_wal(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        plugin: str) -> None:
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         heartbeat_interval_s=0.3, plugin=plugin) as svc, \
            hera_db.connect() as conn:
        conn.execute("INSERT INTO app_users (email) SELECT 'quiet' || g FROM "
                     "generate_series(1, 2000) g")
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone() or (0,)
        wait_until(lambda: confirmed_lsn(hera_db.dsn, slot_name) >= int(str(lsn)), 30,
                   "the slot to move past writes to uncaptured tables")
        # Idle now: heartbeats go through the slot (and are decoded) and move it on.
        endpoint = ServiceEndpoint(svc.metrics.registry, svc.metrics.health, free_port())
        url = f"http://127.0.0.1:{endpoint.port}/metrics"
        beats = scrape(url, "hera_capture_heartbeats_total")
        wait_until(lambda: scrape(url, "hera_capture_heartbeats_total") >= beats + 2, 30,
                   "two heartbeats")
        endpoint.close()
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone() or (0,)
        wait_until(lambda: confirmed_lsn(hera_db.dsn, slot_name) >= int(str(lsn)), 30,
                   "the slot to move past the heartbeats")


@pytest.mark.parametrize("plugin", PLUGINS)
def test_status_and_metrics_report_the_slot_position(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        plugin: str) -> None:
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix,
                         slot_name, plugin=plugin) as svc:
        endpoint = ServiceEndpoint(svc.metrics.registry, svc.metrics.health, free_port())
        url = f"http://127.0.0.1:{endpoint.port}/metrics"
        with hera_db.connect() as conn:
            conn.execute("UPDATE core_relationships SET version = version + 1 "
                         "WHERE relationship_type = 'SERVICE_IN_CATEGORY'")
        wait_until(lambda: scrape(url, "hera_capture_confirmed_lsn") > svc.epoch_lsn, 30,
                   "a confirmation")
        st = slot_status(hera_db.dsn, slot_name)
        body = urllib.request.urlopen(url).read().decode()
        endpoint.close()
    assert st.active and st.database == hera_db.name and st.plugin == plugin
    assert parse_lsn(st.confirmed_lsn) >= svc.epoch_lsn
    assert "hera_capture_events_published_total" in body
    published = [line for line in body.splitlines()
                 if line.startswith("hera_capture_events_published_total")]
    assert float(published[0].split()[1]) > 0


def _server_now(conn: psycopg.Connection[tuple[object, ...]]) -> float:
    (now,) = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone() \
        or (0.0,)
    return float(str(now))


def test_status_lag_is_the_age_of_the_oldest_unconfirmed_commit_of_a_known_backlog(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str) -> None:
    with hera_db.connect() as conn:
        started = _server_now(conn)  # every commit after the slot's position is later
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name):
        pass  # the slot exists and is confirmed up to here; nothing reads it now
    with hera_db.connect() as conn:
        confirmed = parse_lsn(slot_status(hera_db.dsn, slot_name).confirmed_lsn)
        # The backlog: a small commit, then ~30 MB of WAL in later transactions.
        conn.execute("UPDATE core_relationships SET version = version + 1 WHERE ctid = "
                     "(SELECT ctid FROM core_relationships LIMIT 1)")
        after_first = _server_now(conn)
        without = slot_status(hera_db.dsn, slot_name)
        conn.execute("CREATE EXTENSION pg_walinspect")
        conn.execute("CREATE TABLE backlog (t text)")
        for _ in range(3):
            conn.execute("INSERT INTO backlog SELECT repeat('x', 500) "
                         "FROM generate_series(1, 20000)")
        (written,) = conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone() or (0,)
        last_commit = _server_now(conn)
        st = slot_status(hera_db.dsn, slot_name)
        answered = _server_now(conn)
    # Without pg_walinspect the lag is unknown, not a guess.
    assert without.lag_seconds is None and "pg_walinspect" in without.lag_source
    assert parse_lsn(st.confirmed_lsn) == confirmed and not st.active
    assert st.lag_bytes >= int(str(written)) - confirmed > 20 * 1024 * 1024
    assert st.lag_source == "pg_walinspect" and st.lag_seconds is not None
    # At least the age of the first backlog commit (flush_lag-style figures give the age of
    # the last one, or nothing for an inactive slot), at most the age of the slot's epoch.
    assert last_commit - after_first > 0
    assert last_commit - after_first <= st.lag_seconds <= answered - started



@pytest.mark.parametrize("plugin", PLUGINS)
def test_rows_committed_during_the_snapshot_appear_exactly_once(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        plugin: str) -> None:
    with empty_db.connect() as conn:
        conn.execute("INSERT INTO core_relationships (organization_id, from_entity_id, "
                     "to_entity_id, relationship_type) SELECT gen_random_uuid(), 'pre' || g, "
                     "'x', 'T' FROM generate_series(1, 20000) g")
    stop = threading.Event()
    inserted: list[int] = []

    def writer() -> None:
        with psycopg.connect(empty_db.dsn, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                conn.execute("INSERT INTO core_relationships (organization_id, from_entity_id, "
                             "to_entity_id, relationship_type) VALUES (gen_random_uuid(), %s, "
                             "'x', 'T')", (f"during{i}",))
                inserted.append(i)
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # The snapshot's semantics are under test, not the client: the fast backend keeps
        # this test short.
        with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                             kafka_backend="confluent", plugin=plugin):
            wait_until(lambda: len(inserted) > 50, 30, "concurrent inserts")
            stop.set()
            thread.join()
            total = 20000 + len(inserted)
            events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                     lambda evs: len(evs) >= total, timeout=90)
    finally:
        stop.set()
        thread.join()
    by_entity = Counter(str((e.after or {})["from_entity_id"]) for e in events)
    assert len(events) == total
    assert all(n == 1 for n in by_entity.values())
    assert len(by_entity) == total
