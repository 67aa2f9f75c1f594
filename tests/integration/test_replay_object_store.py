"""replay as an operator runs it (the real command, its own process) against an archive on
each backend: a local path and a real S3-compatible server, credentials from the standard
AWS_* variables. The rebuilt table equals PostgreSQL's own, and the command exits with its
own exit code (a deltalake S3 process once aborted at interpreter exit with rc 134)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from capture.event import format_lsn, parse_lsn
from devstack.broker import Broker
from tests.archive_fixtures import wait_for
from tests.capture_fixtures import running_capture
from tests.conftest import HeraDB
from tests.integration.archive_support import archiver_thread
from tests.replay_fixtures import rows_differing
from tests.s3_fixtures import ArchiveTarget


def _replay(target: ArchiveTarget, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "replay"), "--archive", target.uri, "--dsn", dsn,
         "--table", "public.core_relationships", *args],
        env={**os.environ, **target.env}, capture_output=True, text=True, timeout=120)


def test_replay_from_either_backend_rebuilds_the_table_postgresql_had(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        archive_target: ArchiveTarget, tmp_path: Path) -> None:
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name), \
            archiver_thread(broker.bootstrap_servers, topic_prefix, archive_target), \
            hera_db.connect() as conn:
        conn.execute("UPDATE core_relationships SET relationship_data = "
                     "'{\"n\": 12345678901234567890.5, \"z\": 1.50}', "
                     "relationship_strength = 'NaN' WHERE relationship_type = "
                     "'SERVICE_IN_CATEGORY'")
        conn.execute("CREATE TABLE expected AS TABLE core_relationships")
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone() or ("0/0",)
        conn.execute("DELETE FROM core_relationships WHERE relationship_type = "
                     "'SERVICE_IN_CATEGORY'")
        (end,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone() or ("0/0",)

        def archived_past_the_delete() -> bool:
            rows = archive_target.connect().execute(
                "SELECT coalesce(max(lsn), 0) FROM markers").fetchall()
            return int(rows[0][0]) >= parse_lsn(str(end))

        wait_for(archived_past_the_delete, 60, "the archive to cover the delete", interval=0.2)
    point = format_lsn(parse_lsn(str(lsn)))
    into = _replay(archive_target, hera_db.dsn, "--until", point, "--into-table",
                   "public.rebuilt")
    assert into.returncode == 0, into.stderr
    out = tmp_path / "rebuilt.csv"
    to_file = _replay(archive_target, hera_db.dsn, "--until", point, "--output", str(out))
    assert to_file.returncode == 0, to_file.stderr
    with hera_db.connect() as conn:
        conn.execute("CREATE TABLE from_csv (LIKE expected)")
        with conn.cursor().copy("COPY from_csv FROM STDIN (FORMAT csv, HEADER)") as copy:
            copy.write(out.read_bytes())
        cols = [str(r[0]) for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'expected'::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum").fetchall()]
        for table in ("rebuilt", "from_csv"):
            assert rows_differing(conn, "expected", table, cols) == 0, table
        (nan,) = conn.execute("SELECT count(*) FROM rebuilt WHERE relationship_strength = "
                              "'NaN'").fetchone() or (0,)
        assert int(str(nan)) > 0


def _checkpoint(target: ArchiveTarget, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "replay"), "checkpoint", "--archive", target.uri,
         *args], env={**os.environ, **target.env}, capture_output=True, text=True, timeout=120)


def test_a_checkpoint_on_either_backend_gives_the_table_after_its_tail_within_the_memory_limit(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        archive_target: ArchiveTarget) -> None:
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name), \
            archiver_thread(broker.bootstrap_servers, topic_prefix, archive_target), \
            hera_db.connect() as conn:

        def archived_past(lsn_text: str) -> None:
            def done() -> bool:
                rows = archive_target.connect().execute(
                    "SELECT coalesce(max(lsn), 0) FROM markers").fetchall()
                return int(rows[0][0]) >= parse_lsn(lsn_text)
            wait_for(done, 60, "the archive to catch up", interval=0.2)

        conn.execute("UPDATE core_relationships SET relationship_strength = 'NaN' "
                     "WHERE relationship_type = 'SERVICE_IN_CATEGORY'")
        (mid,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone() or ("0/0",)
        archived_past(str(mid))
        made = _checkpoint(archive_target, "--every-changes", "1")
        assert made.returncode == 0 and "public.core_relationships: checkpoint at" in \
            made.stdout, made.stdout + made.stderr
        conn.execute("DELETE FROM core_relationships WHERE relationship_type = "
                     "'USER_MEMBER_OF_ORG'")
        conn.execute("CREATE TABLE expected AS TABLE core_relationships")
        (end,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone() or ("0/0",)
        archived_past(str(end))
    into = _replay(archive_target, hera_db.dsn, "--until", format_lsn(parse_lsn(str(end))),
                   "--into-table", "public.rebuilt")
    assert into.returncode == 0, into.stderr
    assert "from the checkpoint at" in into.stderr, into.stderr
    # On S3 too the rebuild (read from local copies of the checkpoint's and the tail's files)
    # is DuckDB's, inside its memory limit: too small a limit is one line, nothing written.
    small = _replay(archive_target, hera_db.dsn, "--until", format_lsn(parse_lsn(str(end))),
                    "--into-table", "public.rebuilt_small", "--memory-limit", "100KB")
    errors = [ln for ln in small.stderr.splitlines() if ln.startswith("replay: error")]
    assert small.returncode == 1 and len(errors) == 1, small.stderr
    assert "does not fit in the memory limit (100KB)" in errors[0], small.stderr
    verified = _checkpoint(archive_target, "--verify")
    assert verified.returncode == 0 and ", ok" in verified.stdout, verified.stdout
    with hera_db.connect() as conn:
        cols = [str(r[0]) for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'expected'::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum").fetchall()]
        assert rows_differing(conn, "expected", "rebuilt", cols) == 0
        (left,) = conn.execute("SELECT to_regclass('public.rebuilt_small') IS NULL"
                               ).fetchone() or (False,)
        assert left
