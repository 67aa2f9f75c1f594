"""Ground truth from PostgreSQL itself: copies of the live table at several moments during a
random workload (inserts, updates, deletes, deactivations, a primary-key change, a TRUNCATE,
a mass delete) must equal replay to each moment's LSN or time, row for row, every column.
The pipeline is the real one: capture -> broker -> archiver -> replay."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import psycopg
from click.testing import CliRunner

from capture.event import format_lsn
from devstack.broker import Broker
from devstack.sample import SampleSize, load_sample
from replay.cli import main
from tests.conftest import HeraDB
from tests.replay_fixtures import copy_moment, pipeline, table_difference

OPT_IN = ("SELECT set_config('hera_guard.allow_mass_change', 'test workload', true), "
          "set_config('hera_guard.allow_orphaning', 'test workload', true), "
          "set_config('hera_guard.allow_truncate', 'test workload', true)")

INSERT = """
INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id,
    relationship_type, relationship_strength, relationship_data, smart_code, ai_confidence,
    tags, effective_date, expiration_date, created_by, version)
SELECT (SELECT id FROM core_organizations ORDER BY organization_code LIMIT 1 OFFSET %(o)s),
       %(f)s, %(t)s, %(k)s, %(s)s::numeric, %(d)s::jsonb, 'HERA.UNIVERSAL.LINK.V1',
       %(c)s::numeric, %(tags)s::text[], %(eff)s::timestamptz, %(exp)s::timestamptz,
       %(by)s, %(v)s
"""


def _insert(conn: psycopg.Connection[Any], rnd: random.Random, n: int) -> None:
    for _ in range(n):
        i = rnd.randrange(10**6)
        conn.execute(INSERT, {
            "o": rnd.randrange(3), "f": f"entity-{i}", "t": f"entity-{i + 1}",
            "k": rnd.choice(["SERVICE_IN_CATEGORY", "STAFF_PROVIDES_SERVICE"]),
            "s": rnd.choice(["1.500", "0.000001", "12345678901234567890.25", "-3"]),
            "d": rnd.choice(['{"a": 1.10, "b": [true, null]}', '{"q": "it\'s \\"x\\""}',
                             '{"ü": "naïve\\nline"}', "{}"]),
            "c": rnd.choice(["0.9900", "0.1234", None]),
            "tags": rnd.choice(["{}", '{auth,"a b","q\\"t",NULL}', "{x}"]),
            "eff": f"2025-0{rnd.randrange(1, 9)}-01 10:00:00.{rnd.randrange(10**6):06d}+02",
            "exp": rnd.choice([None, "infinity", "2030-01-01 00:00:00+00"]),
            "by": rnd.choice(["migration", "O'Brien", None]), "v": rnd.randrange(1, 2**62)})


def _ids(conn: psycopg.Connection[Any], rnd: random.Random, n: int, where: str = "TRUE") -> list[
        str]:
    rows = [str(r[0]) for r in conn.execute(
        f"SELECT id FROM core_relationships WHERE {where} ORDER BY id").fetchall()]  # noqa: S608
    return rnd.sample(rows, min(n, len(rows)))


def _step(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    """One transaction of mixed changes."""
    with conn.transaction():
        conn.execute(OPT_IN)
        _insert(conn, rnd, rnd.randrange(1, 6))
        for rid in _ids(conn, rnd, 4):
            conn.execute("UPDATE core_relationships SET relationship_data = relationship_data "
                         "|| jsonb_build_object('n', %s::int), version = version + 1, "
                         "relationship_strength = relationship_strength * 1.0, "
                         "updated_at = clock_timestamp() WHERE id = %s",
                         (rnd.randrange(100), rid))
        for rid in _ids(conn, rnd, 2, "is_active"):
            conn.execute("UPDATE core_relationships SET is_active = false WHERE id = %s", (rid,))
        for rid in _ids(conn, rnd, 2):
            conn.execute("DELETE FROM core_relationships WHERE id = %s", (rid,))


def test_replay_to_each_copied_moment_equals_the_copy_row_for_row(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    from guard.install import install

    install(empty_db.dsn, initial_backup=False, schedule=False)
    rnd = random.Random(20250301)
    moments: list[tuple[str, int, Any]] = []
    with pipeline(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                  tmp_path) as pipe, empty_db.connect() as conn:
        load_sample(conn, SampleSize())  # streamed: every row arrives as an insert
        for _ in range(3):
            _step(conn, rnd)
        with conn.transaction():  # a primary-key change
            conn.execute(OPT_IN)
            conn.execute("UPDATE core_relationships SET id = gen_random_uuid() WHERE id = %s",
                         (_ids(conn, rnd, 1)[0],))
        moments.append(("copy_1", *copy_moment(conn, "copy_1")))
        conn.execute("SELECT emergency_relationship_backup()")
        _step(conn, rnd)
        moments.append(("copy_2", *copy_moment(conn, "copy_2")))
        with conn.transaction():  # the mass delete
            conn.execute(OPT_IN)
            conn.execute("DELETE FROM core_relationships WHERE relationship_type <> "
                         "'SERVICE_IN_CATEGORY' AND random() < 0.7")
        moments.append(("copy_3", *copy_moment(conn, "copy_3")))
        with conn.transaction():  # TRUNCATE, then new rows in the same transaction
            conn.execute(OPT_IN)
            conn.execute("TRUNCATE core_relationships")
            _insert(conn, rnd, 3)
        _step(conn, rnd)
        moments.append(("copy_4", *copy_moment(conn, "copy_4")))
        pipe.sync()

        backup = conn.execute("SELECT table_name FROM system_backups WHERE source_table = "
                              "'core_relationships' ORDER BY created_at DESC LIMIT 1"
                              ).fetchone()
        assert backup is not None
        runner = CliRunner()
        for i, (copy, lsn, at) in enumerate(moments):
            until = format_lsn(lsn) if i % 2 == 0 else at.isoformat()
            result = runner.invoke(main, [
                "--archive", str(pipe.archive), "--table", "public.core_relationships",
                "--until", until, "--into-table", f"public.replay_{copy}",
                "--dsn", empty_db.dsn])
            assert result.exit_code == 0, result.output
            assert table_difference(conn, copy, f"replay_{copy}") == 0, (copy, until)
            count = conn.execute(f"SELECT count(*) FROM {copy}").fetchone()  # noqa: S608
            assert (count is not None and int(str(count[0])) > 0) or copy == "copy_4"

        # Base snapshot (taken right after copy_1) and archive-only rebuild agree at copy_2.
        result = runner.invoke(main, [
            "--archive", str(pipe.archive), "--until", format_lsn(moments[1][1]),
            "--base-snapshot", str(backup[0]), "--into-table", "public.replay_base_2",
            "--dsn", empty_db.dsn])
        assert result.exit_code == 0, result.output
        assert table_difference(conn, "replay_copy_2", "replay_base_2") == 0
        assert table_difference(conn, "copy_2", "replay_base_2") == 0


def test_rows_of_the_initial_snapshot_replay_exactly(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    with pipeline(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                  tmp_path) as pipe, hera_db.connect() as conn:
        lsn, _ = copy_moment(conn, "copy_0")
        pipe.sync()
        result = CliRunner().invoke(main, [
            "--archive", str(pipe.archive), "--until", format_lsn(lsn),
            "--into-table", "public.replay_0", "--dsn", hera_db.dsn])
        assert result.exit_code == 0, result.output
        assert table_difference(conn, "copy_0", "replay_0") == 0
