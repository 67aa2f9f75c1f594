"""Schema changes while capturing, with each plugin: capture keeps streaming through ADD, DROP,
RENAME COLUMN and ALTER COLUMN TYPE, events carry the columns the row had at that moment, and
each DDL is a SchemaChangeEvent on <prefix>.transaction at its place: recorded (from
sql/08_schema_log.sql) when the trigger is installed, recorded=False when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from capture.event import (
    ChangeEvent,
    MarkerKind,
    SchemaChangeEvent,
    StreamMarker,
    TransactionEvent,
    parse_transaction_topic,
)
from devstack.broker import Broker
from tests.capture_fixtures import (
    PLUGINS,
    read_topic,
    running_capture,
    wait_for_events,
    wait_until,
)
from tests.conftest import HeraDB

SCHEMA_LOG = Path(__file__).resolve().parents[2] / "sql" / "08_schema_log.sql"

# (statement, the columns of the row inserted right after it)
STEPS = [
    ("ALTER TABLE ddl_probe ADD COLUMN x text DEFAULT 'a'", ["id", "v", "x"]),
    ("ALTER TABLE ddl_probe RENAME COLUMN x TO y", ["id", "v", "y"]),
    ("ALTER TABLE ddl_probe ALTER COLUMN v TYPE bigint", ["id", "v", "y"]),
    ("ALTER TABLE ddl_probe DROP COLUMN y", ["id", "v"]),
]


def _run_steps(db: HeraDB) -> None:
    with db.connect() as conn:
        conn.execute("INSERT INTO ddl_probe (id, v) VALUES (0, 0)")
        for i, (ddl, _cols) in enumerate(STEPS, start=1):
            conn.execute(ddl)
            conn.execute("INSERT INTO ddl_probe (id, v) VALUES (%s, %s)", (i, i))
        conn.execute("UPDATE ddl_probe SET v = v + 100 WHERE id = 0")


def _transaction_records(broker: Broker, prefix: str) -> list[object]:
    return [parse_transaction_topic(r.value)
            for r in read_topic(broker.bootstrap_servers, f"{prefix}.transaction")]


def _check_rows(events: list[ChangeEvent]) -> None:
    inserts = {e.after["id"]: e for e in events if e.op.value == "c" and e.after}
    assert list(inserts[0].after or {}) == ["id", "v"]
    for i, (_ddl, cols) in enumerate(STEPS, start=1):
        assert list(inserts[i].after or {}) == cols
    assert inserts[3].types is not None and inserts[3].types["v"] == "bigint"
    assert inserts[2].types is not None and inserts[2].types["v"] == "integer"
    (update,) = [e for e in events if e.op.value == "u"]
    assert update.after == {"id": 0, "v": "100"}  # bigint: text


@pytest.mark.parametrize("plugin", PLUGINS)
def test_recorded_ddl_becomes_schema_events_in_its_own_transaction_and_streaming_goes_on(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        plugin: str) -> None:
    with empty_db.connect() as conn:
        conn.execute(SCHEMA_LOG.read_text())
        conn.execute("CREATE TABLE ddl_probe (id int PRIMARY KEY, v int)")
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.ddl_probe",), plugin=plugin):
        _run_steps(empty_db)
        events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                 lambda evs: any(e.op.value == "u" for e in evs),
                                 table="ddl_probe")
    _check_rows(events)
    records = _transaction_records(broker, topic_prefix)
    schema = [r for r in records if isinstance(r, SchemaChangeEvent)]
    assert [s.recorded for s in schema] == [True] * len(STEPS)
    assert [s.ddl for s in schema] == [ddl for ddl, _ in STEPS]
    assert [[c.name for c in s.columns] for s in schema] == [cols for _, cols in STEPS]
    added = schema[0].columns[2]
    assert (added.default, added.missing, added.has_missing) == ("'a'::text", "a", True)
    assert all(s.position == 0 and s.command_tag == "ALTER TABLE" for s in schema)
    ends = {r.commit_lsn: r for r in records
            if isinstance(r, TransactionEvent) and r.status == "END"}
    for s in schema:  # each DDL's transaction has BEGIN/END, counting its schema change
        assert ends[s.commit_lsn].schema_change_count == 1
        assert ends[s.commit_lsn].event_count == 0
    begins = {r.commit_lsn for r in records
              if isinstance(r, TransactionEvent) and r.status == "BEGIN"}
    assert {s.commit_lsn for s in schema} <= begins


@pytest.mark.parametrize("plugin", PLUGINS)
def test_column_changes_without_the_schema_log_are_published_unrecorded(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        plugin: str) -> None:
    with empty_db.connect() as conn:
        conn.execute("CREATE TABLE ddl_probe (id int PRIMARY KEY, v int)")
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.ddl_probe",), plugin=plugin):
        _run_steps(empty_db)
        events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                 lambda evs: any(e.op.value == "u" for e in evs),
                                 table="ddl_probe")
    _check_rows(events)
    schema = [r for r in _transaction_records(broker, topic_prefix)
              if isinstance(r, SchemaChangeEvent)]
    assert [s.recorded for s in schema] == [False] * len(STEPS)
    assert [[(c.attnum, c.name) for c in s.columns] for s in schema] == [
        list(enumerate(cols, start=1)) for _, cols in STEPS]
    assert schema[2].columns[1].type == "bigint"
    assert all(s.ddl is None and s.command_tag is None for s in schema)
    inserts = {e.after["id"]: e for e in events if e.op.value == "c" and e.after}
    for i, s in enumerate(schema, start=1):
        # Published just before the first change that showed the new columns.
        assert (s.commit_lsn, s.position + 1) == inserts[i].order_key


@pytest.mark.parametrize("plugin", PLUGINS)
def test_ddl_committed_while_capture_was_down_is_recorded_not_taken_for_an_unrecorded_one(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        plugin: str) -> None:
    # On restart PostgreSQL re-sends the changes made before the DDL; today's catalog already
    # has the new columns, so only the column sets carried by the markers tell them apart.
    with empty_db.connect() as conn:
        conn.execute(SCHEMA_LOG.read_text())
        conn.execute("CREATE TABLE ddl_probe (id int PRIMARY KEY, v int)")
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.ddl_probe",), plugin=plugin):
        pass
    _run_steps(empty_db)
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.ddl_probe",), plugin=plugin):
        events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                 lambda evs: any(e.op.value == "u" for e in evs),
                                 table="ddl_probe")
    _check_rows(events)
    schema = [r for r in _transaction_records(broker, topic_prefix)
              if isinstance(r, SchemaChangeEvent)]
    assert [(s.recorded, s.ddl) for s in schema] == [(True, ddl) for ddl, _ in STEPS]


def test_an_epoch_starts_with_each_tables_definition_as_the_schema_log_spells_it(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str) -> None:
    with empty_db.connect() as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('ok', 'sad')")
        conn.execute("CREATE TABLE ddl_probe (id int PRIMARY KEY, gone int, m mood, "
                     "v text NOT NULL DEFAULT 'a')")
        conn.execute("ALTER TABLE ddl_probe DROP COLUMN gone")
        conn.execute(SCHEMA_LOG.read_text())
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.ddl_probe",)):
        pass
    with empty_db.connect() as conn:  # a DDL now: the trigger's spelling of the same columns
        conn.execute("ALTER TABLE ddl_probe ALTER COLUMN v SET DEFAULT 'a'")
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.ddl_probe",)):
        wait_until(lambda: any(isinstance(r, SchemaChangeEvent)
                               for r in _transaction_records(broker, topic_prefix)),
                   30, "the schema change")
    records = _transaction_records(broker, topic_prefix)
    (start,) = [r for r in records if isinstance(r, StreamMarker)
                and r.status == MarkerKind.SNAPSHOT_START]
    (logged,) = [r for r in records if isinstance(r, SchemaChangeEvent)]
    assert start.definitions is not None
    baseline = start.definitions["public.ddl_probe"]
    assert [(c.attnum, c.name) for c in baseline] == [(1, "id"), (3, "m"), (4, "v")]
    assert baseline == logged.columns
