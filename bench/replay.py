"""Replay's figures, in one run on one stack:

* state of a 1M-row table at an arbitrary point with 1M archived changes (target <= 3 s):
  a real on-disk archive (the archiver's own store and reader) holding a 1M-row snapshot of
  core_relationships-shaped rows and 1M changes (updates, deletes, inserts) in 10k
  transactions; timed: open the archive, resolve and check the point, rebuild the state
  into a table.
* restore of 100k deleted relationships into the live table (target <= 10 s) and as a ratio
  to its floor, a bare ``INSERT ... SELECT`` of exactly the missing rows (target <= 1.3x),
  next to the plan's own ``restore_relationships_from_backup()`` (bench/plan_original.sql,
  as ``plan_restore_relationships_from_backup``) on the same data. The database has the
  guard installed (the guardian sees every restore).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import psycopg
import pyarrow as pa
from psycopg import sql

from bench.common import BenchContext, Figure, Pairs, Runs, alternate, timed
from capture.event import parse_lsn

if TYPE_CHECKING:
    from consumers.archive.location import ArchiveLocation
    from devstack.s3 import S3Server
    from tests.replay_fixtures import History

PLAN_ORIGINAL = Path(__file__).with_name("plan_original.sql")
TABLE = ("public", "core_relationships")
EPOCH = 0x1000_0000
TYPES = {"id": "uuid", "organization_id": "uuid", "from_entity_id": "text",
         "to_entity_id": "text", "relationship_type": "text",
         "relationship_direction": "text", "relationship_strength": "numeric",
         "relationship_data": "jsonb", "smart_code": "text", "smart_code_status": "text",
         "ai_confidence": "numeric(5,4)", "tags": "text[]", "is_active": "boolean",
         "created_at": "timestamp with time zone", "updated_at": "timestamp with time zone",
         "created_by": "text", "version": "bigint"}

# One synthetic row as JSON in the change-event encoding; {i} the row number, {v} a version.
_ROW = """to_json({{
    'id': printf('%08x-0000-4000-8000-%012x', {i}, {i}),
    'organization_id': printf('00000000-0000-4000-8000-%012x', {i} % 50),
    'from_entity_id': 'user-' || {i}, 'to_entity_id': 'org-' || ({i} % 50),
    'relationship_type': CASE WHEN {i} % 4 = 0 THEN 'USER_MEMBER_OF_ORG'
                              ELSE 'STAFF_PROVIDES_SERVICE' END,
    'relationship_direction': 'forward', 'relationship_strength': '1.0',
    'relationship_data': printf('{{"seq": %d, "v": %d}}', {i}, {v}),
    'smart_code': 'HERA.SALON.BENCH.LINK.v1', 'smart_code_status': 'ACTIVE',
    'ai_confidence': '0.9900', 'tags': '{{bench,"a b"}}', 'is_active': ({v} % 7 <> 3),
    'created_at': '2025-03-01 12:00:00.123456+00',
    'updated_at': '2025-03-01 12:00:00.123456+00', 'created_by': 'bench',
    'version': ({v} + 1)::VARCHAR}})::VARCHAR"""


_RESTORES = 5  # restore runs, each ~3.5 s: 3 moved 1.31x between two runs
_COPIES = 7  # COPY runs, each ~1.5 s: 3 moved 0.77x between two full runs (1.11 -> 0.85)


def _changes_sql(rows: int, changes: tuple[int, int], per_txn: int, steady: bool,
                 snapshot: tuple[int, int] = (0, 0)) -> str:
    """One chunk of the archive's changes as one query: snapshot rows ``snapshot`` [lo, hi),
    then the stream changes numbered ``changes`` [lo, hi) (chunks are independent: every
    value is a function of the row or change number alone).

    ``steady``: every 20 changes are 18 updates, one delete and the re-insert of the key it
    deleted, so the state holds exactly ``rows`` rows at every transaction end, whatever
    the history length (the long-history bench); else 70% updates, 15% deletes and 15%
    inserts of new keys (the state grows)."""
    types = json.dumps(TYPES).replace("'", "''")
    snap = _ROW.format(i="i", v="0")
    upd = _ROW.format(i="tgt", v="j")
    if steady:
        ops = ("CASE WHEN j % 20 < 18 THEN 'u' WHEN j % 20 = 18 THEN 'd' ELSE 'c' END",
               f"CASE WHEN j % 20 = 19 THEN (hash(j - 1) % {rows})::BIGINT "
               f"ELSE (hash(j) % {rows})::BIGINT END")
    else:
        ops = ("CASE WHEN j % 20 < 14 THEN 'u' WHEN j % 20 < 17 THEN 'd' ELSE 'c' END",
               f"CASE WHEN j % 20 < 17 THEN (hash(j) % {rows})::BIGINT ELSE {rows} + j END")
    return f"""
    WITH snap AS (
        SELECT 'r' AS op, {EPOCH}::UBIGINT AS commit_lsn, i::INTEGER AS position,
               NULL::BIGINT AS xid, i AS tgt, {snap} AS after, NULL::VARCHAR AS before,
               TRUE AS snapshot
        FROM range({snapshot[0]}, {snapshot[1]}) t(i)
    ),
    ch AS (
        SELECT j, (j // {per_txn}) AS txn, (j % {per_txn})::INTEGER AS position,
               {ops[0]} AS op, {ops[1]} AS tgt
        FROM range({changes[0]}, {changes[1]}) t(j)
    ),
    stream AS (
        SELECT op, ({EPOCH} + 4096 * (txn + 1))::UBIGINT AS commit_lsn, position,
               (1000 + txn)::BIGINT AS xid, tgt,
               CASE WHEN op = 'd' THEN NULL ELSE {upd} END AS after,
               CASE WHEN op = 'c' THEN NULL ELSE {_ROW.format(i="tgt", v="0")} END AS before,
               FALSE AS snapshot
        FROM ch
    )
    SELECT 'public' AS table_schema, 'core_relationships' AS table_name, op, commit_lsn,
           position, xid,
           make_timestamptz(1740830400000000 + commit_lsn::BIGINT) AS commit_ts,
           to_json({{'id': printf('%08x-0000-4000-8000-%012x', tgt, tgt)}})::VARCHAR AS key,
           before, after, '{types}' AS types, snapshot,
           make_timestamptz(1740830400000000 + commit_lsn::BIGINT) AS event_ts,
           2 AS schema_version, NULL::VARCHAR AS reread
    FROM (SELECT * FROM snap UNION ALL SELECT * FROM stream)
    ORDER BY commit_lsn, position
    """  # noqa: S608 - numbers and our own literals only


CHUNK = 500_000  # rows per chunk: the builder's memory is one chunk, whatever the size


def build_archive(root: Path | ArchiveLocation, rows: int, changes: int,
                  per_txn: int = 100, *, steady: bool = False, start: int = 0,
                  chunk: int = CHUNK, progress: Callable[[str], None] | None = None) -> int:
    """A ``rows``-row snapshot + ``changes`` changes as real archive files, written in
    chunks of ``chunk`` rows (one commit each: bounded memory at any size); returns the
    last commit LSN. ``start``: continue an archive built up to change ``start`` (the
    snapshot and the markers are written only when ``start`` is 0)."""
    from consumers.archive.segments import SCHEMAS
    from consumers.archive.store import ArchiveStore

    duck = duckdb.connect()
    duck.execute("SET memory_limit = '2GB'")
    duck.execute("SET enable_progress_bar = false")
    per_chunk = max(chunk // per_txn, 1) * per_txn  # chunks end at transaction ends
    last = EPOCH + 4096 * ((start + changes) // per_txn)
    with ArchiveStore.open_or_create(root) as store:
        if start == 0:
            for lo in range(0, rows, chunk):
                snap = duck.sql(_changes_sql(rows, (0, 0), per_txn, steady,
                                             (lo, min(lo + chunk, rows)))).to_arrow_table()
                store.replace_segments([], snap.cast(SCHEMAS["changes"]), "changes")
        for lo in range(start, start + changes, per_chunk):
            hi = min(lo + per_chunk, start + changes)
            table = duck.sql(_changes_sql(rows, (lo, hi), per_txn, steady)).to_arrow_table()
            store.replace_segments([], table.cast(SCHEMAS["changes"]), "changes")
            del table
            t_lo, t_hi = lo // per_txn, hi // per_txn
            ends = duck.sql(f"""
                SELECT (1000 + t)::BIGINT AS xid,
                       ({EPOCH} + 4096 * (t + 1))::UBIGINT AS commit_lsn,
                       make_timestamptz(1740830400000000 + {EPOCH} + 4096 * (t + 1))
                           AS commit_ts,
                       {per_txn}::BIGINT AS event_count,
                       '[{{"data_collection":"public.core_relationships","event_count":{per_txn}}}]'
                           AS data_collections, NULL::VARCHAR AS author
                FROM range({t_lo}, {t_hi}) r(t)""").to_arrow_table()  # noqa: S608
            store.replace_segments([], ends.cast(SCHEMAS["transactions"]), "transactions")
            if progress is not None:
                progress(f"built {hi} of {start + changes} changes")
        now = datetime(2025, 3, 1, 12, tzinfo=UTC)
        statuses = ["SNAPSHOT_START", "SNAPSHOT_END", "PROGRESS"] if start == 0 \
            else ["PROGRESS"]
        n = len(statuses)
        markers = pa.table({
            "status": statuses, "slot": ["bench"] * n, "db": ["bench"] * n,
            "epoch_lsn": [EPOCH] * n, "lsn": [EPOCH] * (n - 1) + [last], "ts": [now] * n,
            "tables": [["public.core_relationships"]] * n,
            **{c: [None] * n for c in ("system_identifier", "plugin", "definitions",
                                       "commit_ts", "rereads")},
        }).cast(SCHEMAS["markers"])
        store.replace_segments([], markers, "markers")
    return last


def replay_speed(ctx: BenchContext) -> list[Figure]:
    from replay.point import LsnPoint
    from replay.state import materialize, open_history, state_at
    from replay.tables import TableId

    rows = 100_000 if ctx.quick else 1_000_000
    changes = rows
    root = ctx.workdir / "replay-archive"
    t0 = time.perf_counter()
    last = build_archive(root, rows, changes)
    built = time.perf_counter() - t0
    point = EPOCH + (last - EPOCH) * 2 // 3  # two thirds into the history: an arbitrary point
    counts: list[int] = []

    def rebuild(archive: Path | ArchiveLocation = root) -> None:
        duck = open_history(archive)
        state = materialize(duck, state_at(duck, TableId(*TABLE), LsnPoint(point)), "_bench")
        counts.append(state.rel.shape[0])

    local = Runs(tuple(timed(rebuild) for _ in range(3)))
    s3_runs, s3_rows = _on_s3(rows, changes, rebuild, counts)
    out = ctx.workdir / "replay-state.parquet"

    def to_parquet() -> None:
        from replay.output import write_file

        duck = open_history(root)
        state = state_at(duck, TableId(*TABLE), LsnPoint(point))
        write_file(duck, state.rel, state.types, out)

    parquet = timed(to_parquet)
    load = os.getloadavg()[0]
    return [local.figure(
        "replay: state of a 1M-row table at a point (1M changes archived)", "s",
        "<= 3 s", lambda v: v <= 3.0,
        f"{rows} snapshot rows + {changes} changes in {changes // 100} transactions; "
        f"{counts[-1]} rows at the point; median of 3; archive built in {built:.1f} s; "
        f"with typed Parquet output {parquet:.2f} s; load average {load:.1f}"),
        s3_runs.figure("replay: the same state from the archive on S3", "s",
                       "figure on S3", None,
                       f"the same archive built on SeaweedFS (local S3 server, plain http), "
                       f"read by replay with the location's storage options; {s3_rows} rows "
                       "at the point; median of 3")]


@contextlib.contextmanager
def _s3_server(bucket: str) -> Iterator[S3Server]:
    """A real S3-compatible server (SeaweedFS) for the figure; its credentials reach the
    readers as the location's storage options (the process environment is left alone)."""
    from devstack.s3 import start_s3

    s3 = start_s3(bucket)
    try:
        yield s3
    finally:
        s3.stop()


def _on_s3(rows: int, changes: int, rebuild: Callable[[ArchiveLocation], None],
           counts: list[int]) -> tuple[Runs, int]:
    """The replay-state figure with the archive on a real S3-compatible server."""
    from consumers.archive.location import archive_location

    with _s3_server("bench-replay") as s3:
        loc = archive_location(s3.uri("replay"), s3.storage_options())
        build_archive(loc, rows, changes)
        return Runs(tuple(timed(lambda: rebuild(loc)) for _ in range(3))), counts[-1]


def restore_speed(ctx: BenchContext) -> list[Figure]:
    """Our restore and the plan's function restore the same 100k deleted rows."""
    from guard.install import install
    from replay.live import columns, connect, read_rows
    from replay.restore import restore
    from replay.state import open_history, state_at
    from replay.tables import TableId
    from tests.replay_fixtures import History, write_archive

    total = 40_000 if ctx.quick else 200_000
    deleted = total // 2
    dsn = ctx.new_database("bench_replay_restore")
    install(dsn, initial_backup=False, schedule=False)
    table = TableId(*TABLE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PLAN_ORIGINAL.read_bytes())
        conn.execute(
            "INSERT INTO core_organizations (id, organization_name) "
            "SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'Org ' || g "
            "FROM generate_series(0, 49) g")
        conn.execute(
            "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
            "relationship_type, smart_code, relationship_data, tags, ai_confidence) "
            "SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g %% 50), 12, '0'))::uuid, "
            "'b-' || g, 'b-' || (g + 1), 'BENCH_LINK', 'HERA.SALON.BENCH.LINK.v1', "
            "jsonb_build_object('seq', g), '{bench,\"a b\"}', 0.9900 "
            "FROM generate_series(1, %s) g", (total,))
        conn.execute("VACUUM ANALYZE core_relationships")
        msg = conn.execute("SELECT emergency_relationship_backup()").fetchone()
        assert msg is not None
        backup = str(msg[0]).split("created: ")[1].split(" ")[0]
        lsn_row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert lsn_row is not None
        snap_lsn = parse_lsn(str(lsn_row[0]))

    # The archive's view of that moment: the table's rows as capture's snapshot records them.
    pg = connect(dsn)
    cols = columns(pg, table)
    snapshot = [json.loads(r) for r in read_rows(pg, table, cols).column("row").to_pylist()]
    h = History(schema="public", table="core_relationships",
                types={c.name: c.type for c in cols}, epoch_lsn=snap_lsn)
    h.snapshot(snapshot)
    root: Path = write_archive(ctx.workdir / "restore-archive", h)

    def wipe() -> None:
        with pg.transaction():
            pg.execute("SET LOCAL hera_guard.allow_mass_change = 'bench: the incident'")
            pg.execute("DELETE FROM core_relationships WHERE id IN (SELECT id FROM "
                       "core_relationships ORDER BY id LIMIT %s)", (deleted,))

    def count() -> int:
        row = pg.execute("SELECT count(*) FROM core_relationships").fetchone()
        return int(str(row[0])) if row else 0

    applied: list[int] = []  # every run starts from the full table and wipes it
    marks: list[tuple[float, str]] = []

    def mark(msg: str) -> None:
        marks.append((time.perf_counter(), msg.split(" ")[0]))

    def ours(archive: Path | ArchiveLocation = root) -> None:
        mark("open")
        duck = open_history(archive)
        state = state_at(duck, table, snap_lsn)
        outcome = restore(duck, pg, state, progress=mark)
        mark("done")
        applied.append(outcome.applied[0].inserted)

    def floor() -> None:
        # The floor of any restore that inserts the rows: one set-based INSERT of exactly
        # the missing rows, nothing read, compared or planned (same indexes, checks,
        # guardian).
        pg.execute(sql.SQL(
            "INSERT INTO core_relationships SELECT b.* FROM {} b WHERE NOT EXISTS "
            "(SELECT 1 FROM core_relationships c WHERE c.id = b.id)").format(
                sql.Identifier(backup)))

    # Bracketed runs (floor, replay, floor, …, floor), each replay run against the geometric
    # mean of the floor runs around it: the machine is shared, a single pair is noise.
    phases = ""

    def floor_run(_i: int) -> float:
        wipe()
        took = timed(floor)
        assert count() == total
        return took

    def ours_run(i: int) -> float:
        nonlocal phases
        wipe()
        marks.clear()
        took = timed(ours)
        assert count() == total and applied[-1] == deleted, (count(), applied)
        if i == 0:
            phases = _phases(marks)
        return took

    pairs = alternate(_RESTORES, floor_run, ours_run)
    restore_ratio = pairs.ratios
    ours_runs, floor_runs = list(pairs.product.values), list(pairs.ceiling.values)
    our_s, insert_s = pairs.product.median, pairs.ceiling.median
    copy = _server_copy(pg, backup, ctx.cluster.datadir / "bench-restore-rows.copy", wipe,
                        lambda: count() == total, floor_run)
    wipe()
    plan_s = timed(lambda: pg.execute(
        "SELECT * FROM plan_restore_relationships_from_backup(%s)", (backup,)).fetchall())
    assert count() == total
    s3_s, s3_phases = _restore_on_s3(h, lambda uri: timed(lambda: ours(uri)), wipe, marks,
                                     lambda: count() == total and applied[-1] == deleted)
    pg.close()
    load = os.getloadavg()[0]
    return [
        Figure("replay: restore of 100k deleted relationships into the live table", our_s,
               "s", "<= 10 s", our_s <= 10.0,
               f"{deleted} of {total} rows deleted; archive rebuild + live read + plan + "
               f"apply in one transaction, guardian installed; median of {len(ours_runs)}; "
               f"phases: {phases}", min(ours_runs), max(ours_runs), len(ours_runs)),
        restore_ratio.figure(
            "replay: restore of 100k deleted relationships / a bare INSERT ... SELECT of "
            "exactly those rows", "x", "<= 2.5x (1.3x out of reach on 2 cores)",
            lambda r: r <= 2.5,
            _floor_detail(deleted, our_s, ours_runs, insert_s, floor_runs, plan_s, load)),
        copy.ratios.figure(
            "replay: PostgreSQL's own share: COPY of the same rows' text from a server "
            "file / the floor", "x", "informational", None,
            f"COPY core_relationships FROM a file the server wrote (COPY TO) of exactly "
            f"those rows: {copy.product.text()} s, median ratio of {_COPIES} runs bracketed by "
            f"floor runs ({copy.ceiling.text()} s); no client, no archive, no plan: the part of "
            "any exact text restore that no client can make faster"),
        Figure("replay: the same restore from the archive on S3", s3_s, "s", "figure on S3",
               None, f"the same archive written to SeaweedFS (local S3 server, plain http), "
               f"read by replay with the location's storage options; median of 3; "
               f"{s3_s / insert_s:.2f}x the floor; phases: {s3_phases}"),
    ]


def _server_copy(pg: psycopg.Connection[tuple[object, ...]], backup: str, path: Path,
                 wipe: Callable[[], None], restored: Callable[[], bool],
                 floor_run: Callable[[int], float]) -> Pairs:
    """COPY of the deleted rows' text in from a server-side file, bracketed by floor runs
    (floor, COPY, floor, …): the floor of the apply step of a restore that sends PostgreSQL
    text, as a share of the floor itself."""
    missing = sql.SQL("SELECT b.* FROM {} b WHERE NOT EXISTS (SELECT 1 FROM "
                      "core_relationships c WHERE c.id = b.id)").format(sql.Identifier(backup))
    wipe()
    pg.execute(sql.SQL("COPY ({}) TO {}").format(missing, sql.Literal(str(path))))
    # back to the full table every run starts from (and the file read once before timing)
    pg.execute(sql.SQL("COPY core_relationships FROM {}").format(sql.Literal(str(path))))
    assert restored()

    def copy_run(_i: int) -> float:
        wipe()
        took = timed(lambda: pg.execute(sql.SQL("COPY core_relationships FROM {}")
                                        .format(sql.Literal(str(path)))))
        assert restored()
        return took

    try:
        return alternate(_COPIES, floor_run, copy_run)
    finally:
        path.unlink(missing_ok=True)


def _phases(marks: list[tuple[float, str]]) -> str:
    return ", ".join(f"{a[1]} {b[0] - a[0]:.2f} s" for a, b in itertools.pairwise(marks))


def _restore_on_s3(history: History, run: Callable[[ArchiveLocation], float],
                   wipe: Callable[[], None],
                   marks: list[tuple[float, str]],
                   restored: Callable[[], bool]) -> tuple[float, str]:
    """The restore figure with the archive on a real S3-compatible server: median of 3, and
    the phases of the first run."""
    from consumers.archive.location import archive_location
    from tests.replay_fixtures import write_archive

    with _s3_server("bench-restore") as s3:
        loc = archive_location(s3.uri("restore"), s3.storage_options())
        write_archive(loc, history)
        runs, phases = [], ""
        for rep in range(3):
            wipe()
            marks.clear()
            runs.append(run(loc))
            assert restored()
            if rep == 0:
                phases = _phases(marks)
        return statistics.median(runs), phases


def _floor_detail(deleted: int, our_s: float, ours_runs: list[float], insert_s: float,
                  floor_runs: list[float], plan_s: float, load: float) -> str:
    def runs(xs: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs)

    floor = "INSERT ... SELECT of just the missing rows from the backup"
    return (f"same {deleted} rows, median ratio of {len(ours_runs)} runs bracketed by floor runs: "
            f"replay "
            f"{our_s:.2f} s "
            f"(runs {runs(ours_runs)}), the floor ({floor}, same indexes and guardian) "
            f"{insert_s:.2f} s (runs {runs(floor_runs)}); the plan's "
            f"restore_relationships_from_backup {plan_s:.2f} s; load average {load:.1f}")


def run(ctx: BenchContext) -> list[Figure]:
    return [*replay_speed(ctx), *restore_speed(ctx)]
