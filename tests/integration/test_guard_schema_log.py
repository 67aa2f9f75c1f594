"""sql/08_schema_log.sql on a real PostgreSQL: every ALTER TABLE emits the table's new
definition as a transactional logical message in the DDL's own transaction, read back here
through a test_decoding slot exactly as a capture slot would see it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from devstack.postgres import PostgresCluster
from devstack.sample import create_schema
from guard.install import install
from tests.conftest import HeraDB, unique_name
from tests.guard_fixtures import count, install_guard

PREFIX = "hera-guard.schema"
_LINE = re.compile(r"^message: transactional: (\d) prefix: ([^,]*), sz: \d+ content:(.*)$",
                   re.DOTALL)


@dataclass(frozen=True)
class Message:
    xid: int  # the transaction the message was decoded in
    transactional: bool
    content: dict[str, Any]


def decoded_messages(conn: psycopg.Connection[Any], slot: str) -> list[Message]:
    """Consume the slot: every schema-log message with the xid of the BEGIN around it."""
    out: list[Message] = []
    xid = -1
    for (data,) in conn.execute("SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL)",
                                (slot,)):
        text = str(data)
        if text.startswith("BEGIN "):
            xid = int(text.split()[1])
        elif text.startswith("COMMIT "):
            xid = -1
        elif (m := _LINE.match(text)) and m.group(2) == PREFIX:
            out.append(Message(xid, m.group(1) == "1", json.loads(m.group(3))))
    return out


def ddl(conn: psycopg.Connection[Any], statement: str) -> int:
    """Run one DDL in its own transaction; returns that transaction's xid."""
    with conn.transaction():
        conn.execute(statement.encode())
        row = conn.execute("SELECT txid_current()").fetchone()
    assert row is not None
    return int(str(row[0]))


def column(msg: Message, name: str) -> dict[str, Any]:
    found = [c for c in msg.content["columns"] if c["name"] == name]
    assert len(found) == 1, msg.content["columns"]
    return dict(found[0])


@pytest.fixture
def logged(empty_db: HeraDB) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """The guard installed, a probe table with rows, and a test_decoding slot after both."""
    install_guard(empty_db)
    slot = unique_name("schemalog")
    with empty_db.connect() as conn:
        conn.execute("CREATE TABLE probe (id bigint PRIMARY KEY, v text NOT NULL DEFAULT 'v', "
                     "n integer)")
        conn.execute("INSERT INTO probe (id, n) SELECT g, g FROM generate_series(1, 3) g")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
        yield conn, slot


def test_add_column_with_a_constant_default_logs_the_missing_value_in_its_own_transaction(
        logged: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = logged
    xid = ddl(conn, "ALTER TABLE probe ADD COLUMN x text DEFAULT 'a'")
    (msg,) = decoded_messages(conn, slot)
    assert msg.xid == xid and msg.transactional
    assert {k: msg.content[k] for k in ("schema", "table", "command_tag", "ddl")} == {
        "schema": "public", "table": "probe", "command_tag": "ALTER TABLE",
        "ddl": "ALTER TABLE probe ADD COLUMN x text DEFAULT 'a'"}
    assert msg.content["columns"] == [
        {"attnum": 1, "name": "id", "type": "bigint", "not_null": True, "default": None,
         "missing": None, "has_missing": False},
        {"attnum": 2, "name": "v", "type": "text", "not_null": True, "default": "'v'::text",
         "missing": None, "has_missing": False},
        {"attnum": 3, "name": "n", "type": "integer", "not_null": False, "default": None,
         "missing": None, "has_missing": False},
        {"attnum": 4, "name": "x", "type": "text", "not_null": False, "default": "'a'::text",
         "missing": "a", "has_missing": True}]


def test_missing_values_are_postgresql_text_whatever_the_ddl_sessions_settings(
        logged: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = logged
    conn.execute("SET TimeZone = 'America/New_York'")
    conn.execute("SET DateStyle = 'SQL, DMY'")
    ddl(conn, "ALTER TABLE probe ADD COLUMN t timestamptz DEFAULT '2031-02-03 04:05:06.5+00', "
              "ADD COLUMN a text[] DEFAULT '{\"x,y\",NULL,\"q\\\"\"}', "
              "ADD COLUMN b bytea DEFAULT '\\x00ff'")
    (msg,) = decoded_messages(conn, slot)
    assert column(msg, "t")["missing"] == "2031-02-03 04:05:06.5+00"
    assert column(msg, "a")["missing"] == '{"x,y",NULL,"q\\""}'
    assert column(msg, "b")["missing"] == "\\x00ff"


def test_add_column_with_a_volatile_default_logs_the_default_and_no_missing_value(
        logged: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = logged
    xid = ddl(conn, "ALTER TABLE probe ADD COLUMN r double precision DEFAULT random()")
    (msg,) = decoded_messages(conn, slot)
    assert msg.xid == xid
    assert column(msg, "r") == {"attnum": 4, "name": "r", "type": "double precision",
                                "not_null": False, "default": "random()", "missing": None,
                                "has_missing": False}


def test_drop_column_logs_the_remaining_columns_with_their_attnums(
        logged: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = logged
    xid = ddl(conn, "ALTER TABLE probe DROP COLUMN v")
    (msg,) = decoded_messages(conn, slot)
    assert msg.xid == xid
    assert [(c["attnum"], c["name"]) for c in msg.content["columns"]] == [(1, "id"), (3, "n")]


def test_rename_column_keeps_the_attnum_and_logs_the_new_name(
        logged: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = logged
    xid = ddl(conn, "ALTER TABLE probe RENAME COLUMN n TO amount")
    (msg,) = decoded_messages(conn, slot)
    assert msg.xid == xid
    assert [(c["attnum"], c["name"]) for c in msg.content["columns"]] == [
        (1, "id"), (2, "v"), (3, "amount")]


def test_alter_column_type_logs_the_new_type(
        logged: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = logged
    xid = ddl(conn, "ALTER TABLE probe ALTER COLUMN n TYPE numeric(12,2) USING n * 1.5")
    (msg,) = decoded_messages(conn, slot)
    assert msg.xid == xid
    assert column(msg, "n")["attnum"] == 3
    assert column(msg, "n")["type"] == "numeric(12,2)"


def test_a_rolled_back_ddl_emits_nothing(
        logged: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = logged
    conn.execute("BEGIN")
    conn.execute("ALTER TABLE probe ADD COLUMN gone text DEFAULT 'g'")
    conn.execute("ALTER TABLE probe DROP COLUMN v")
    conn.execute("ROLLBACK")
    after = ddl(conn, "ALTER TABLE probe ADD COLUMN kept int")
    msgs = decoded_messages(conn, slot)
    assert [m.xid for m in msgs] == [after]
    assert [c["name"] for c in msgs[0].content["columns"]] == ["id", "v", "n", "kept"]


def test_a_partitioned_tables_ddl_logs_each_partition_too(
        logged: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = logged
    conn.execute("CREATE TABLE parted (id int, k int) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10)")
    decoded_messages(conn, slot)
    ddl(conn, "ALTER TABLE parted ADD COLUMN w text DEFAULT 'w'")
    msgs = decoded_messages(conn, slot)
    assert sorted(m.content["table"] for m in msgs) == ["parted", "parted_1"]
    assert all(column(m, "w")["default"] == "'w'::text" for m in msgs)


def test_ddl_under_session_replication_role_replica_is_still_logged(
        logged: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = logged
    conn.execute("SET session_replication_role = replica")
    xid = ddl(conn, "ALTER TABLE probe ADD COLUMN quiet int")
    assert [m.xid for m in decoded_messages(conn, slot)] == [xid]


def test_a_table_owner_without_superuser_rights_gets_its_ddl_logged(
        logged: tuple[psycopg.Connection[Any], str], empty_db: HeraDB) -> None:
    conn, slot = logged
    role = unique_name("ddl")
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    conn.execute(sql.SQL("ALTER TABLE probe OWNER TO {}").format(sql.Identifier(role)))
    decoded_messages(conn, slot)
    try:
        with psycopg.connect(empty_db.cluster.dsn(empty_db.name, user=role),
                             autocommit=True) as owner:
            xid = ddl(owner, "ALTER TABLE probe ADD COLUMN by_owner text DEFAULT 'o'")
            # Not security definer, and nobody was granted EXECUTE on it: firing needs none.
            assert owner.execute("SELECT has_function_privilege('hera_guard_schema_log()', "
                                 "'EXECUTE')").fetchone() == (False,)
        (msg,) = decoded_messages(conn, slot)
        assert msg.xid == xid and column(msg, "by_owner")["missing"] == "o"
    finally:
        conn.execute(sql.SQL("ALTER TABLE probe OWNER TO CURRENT_USER"))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_reinstalling_keeps_one_trigger_enabled_always(
        logged: tuple[psycopg.Connection[Any], str], empty_db: HeraDB) -> None:
    conn, _ = logged
    conn.execute("ALTER EVENT TRIGGER hera_guard_schema_log DISABLE")
    report = install(empty_db.dsn, initial_backup=False, schedule=False)
    assert "08_schema_log.sql" in report.scripts and report.warnings == []
    assert conn.execute("SELECT evtevent, evtenabled, evttags::text[] FROM pg_event_trigger "
                        "WHERE evtname = 'hera_guard_schema_log'").fetchall() == [
        ("ddl_command_end", "A", ["ALTER TABLE"])]
    assert count(conn, "SELECT count(*) FROM pg_event_trigger") == 1


def test_install_by_a_non_superuser_warns_that_the_schema_log_is_missing(
        pg_cluster: PostgresCluster) -> None:
    role, name = unique_name("owner"), unique_name("owned")
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(role)))
    dsn = pg_cluster.dsn(name, user=role)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_schema(conn)
        report = install(dsn, initial_backup=False, schedule=False)
        assert "08_schema_log.sql" in report.scripts
        assert any("schema log not installed" in w and "superuser" in w
                   for w in report.warnings), report.warnings
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert count(conn, "SELECT count(*) FROM pg_event_trigger") == 0
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
