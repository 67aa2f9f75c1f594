"""Fixtures, grouped by topic. The real stack (PostgreSQL + wal2json + pg_cron, and the tansu
Kafka-protocol broker) is started once per test session; every test gets its own database,
slot and topic prefix, because logical decoding only sees committed data."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from devstack.broker import Broker, start_broker
from devstack.postgres import PostgresCluster, start_postgres
from devstack.sample import SampleSize, create_schema, load_sample
from tests.locale_fixtures import german_money_cluster, money_db  # noqa: F401 - fixtures
from tests.s3_fixtures import archive_target, s3_server  # noqa: F401 - fixtures
from tests.security_fixtures import (  # noqa: F401 - fixtures
    bad_certificates,
    mtls_broker,
    pki,
    sasl_broker,
    tls_broker,
    tls_postgres,
)
from tests.webhook_fixtures import endpoint  # noqa: F401 - fixture

_counter = itertools.count()


# --- the stack ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = start_postgres()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    b = start_broker()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def template_db(pg_cluster: PostgresCluster) -> str:
    """A database with the sample schema (no rows), cloned by every test database."""
    name = "hera_template"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(pg_cluster.dsn(name), autocommit=True) as conn:
        create_schema(conn)
    return name


# --- per-test isolation ---------------------------------------------------------------------


@dataclass(frozen=True)
class HeraDB:
    """One test's own database on the shared cluster."""

    cluster: PostgresCluster
    name: str

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.name)

    def connect(self, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn, autocommit=autocommit)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"


@pytest.fixture
def empty_db(pg_cluster: PostgresCluster, template_db: str) -> Iterator[HeraDB]:
    """A fresh database with the sample schema and no rows."""
    name = unique_name("t")
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    db = HeraDB(pg_cluster, name)
    try:
        yield db
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            slots = [str(r[0]) for r in conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,))]
            for slot in slots:
                # A walsender may outlive its client for a moment: end it, wait, then drop.
                deadline = time.monotonic() + 15
                while True:
                    conn.execute(
                        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                        "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
                    try:
                        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                        break
                    except psycopg.errors.ObjectInUse:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture
def hera_db(empty_db: HeraDB) -> HeraDB:
    """A fresh database with the sample schema and the sample data set."""
    with empty_db.connect() as conn:
        load_sample(conn, SampleSize())
    return empty_db


@pytest.fixture
def topic_prefix() -> str:
    return unique_name("hera")


@pytest.fixture
def slot_name() -> str:
    return unique_name("slot")


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    """A broker of this test alone (tests stop it and restart it empty under running
    services), on its own port; the session's ``broker`` stays untouched."""
    b = start_broker()
    try:
        yield b
    finally:
        b.stop()
