"""The guard's two figures:

* guardian overhead: a legitimate 100k-row bulk DELETE (with the logged opt-in
  ``hera_guard.allow_mass_change``) timed on a database without and with the guard installed;
  the ratio must stay <= 2x. The same for a 100k-row deactivating UPDATE, reported as detail.
* restore: our set-based ``restore_relationships_from_backup`` against the plan's row-by-row
  original (bench/plan_original.sql, loaded only here) restoring the same 100k deleted rows.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from bench.common import BenchContext, Figure, alternate, timed
from devstack.sample import SampleSize, load_sample
from guard.install import install

PLAN_ORIGINAL = Path(__file__).with_name("plan_original.sql")
TARGET_RATIO = 2.0


def _add_rows(conn: psycopg.Connection[tuple[object, ...]], rows: int) -> None:
    conn.execute(
        "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
        " relationship_type, smart_code, relationship_data) "
        "SELECT (SELECT id FROM core_organizations LIMIT 1), 'b-' || g, 'b-' || (g + 1), "
        " 'BENCH_LINK', 'HERA.SALON.BENCH.LINK.v1', jsonb_build_object('seq', g) "
        "FROM generate_series(1, %s) g", (rows,))
    conn.execute("VACUUM ANALYZE core_relationships")


def _bulk_once(dsn: str, rows: int, statement: str) -> float:
    """Seconds of one opted-in bulk statement over fresh BENCH_LINK rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL hera_guard.allow_mass_change = 'bench cleanup'")
            conn.execute("DELETE FROM core_relationships "
                         "WHERE relationship_type = 'BENCH_LINK'")
        _add_rows(conn, rows)
        # Every run starts right after a checkpoint: the statement's first change to each
        # page then writes the whole page to the WAL, in every run alike. Without it a run
        # paid those full-page writes or not depending on where the last checkpoint fell
        # (measured: the same UPDATE 1.1-1.8 s).
        conn.execute("CHECKPOINT")

        def run() -> None:
            with conn.transaction():
                conn.execute("SET LOCAL hera_guard.allow_mass_change = 'bench bulk'")
                conn.execute(statement.encode())

        return timed(run)


def _database(ctx: BenchContext, name: str, guarded: bool) -> str:
    dsn = ctx.new_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        load_sample(conn, SampleSize())
    if guarded:
        install(dsn, initial_backup=False, schedule=False)
    return dsn


def guardian_overhead(ctx: BenchContext, rows: int, repeats: int) -> list[Figure]:
    """Alternating pairs: the statement without the guard, then with it; the ratio per pair."""
    plain = _database(ctx, "bench_guard_plain", guarded=False)
    guarded = _database(ctx, "bench_guard_on", guarded=True)
    delete = "DELETE FROM core_relationships WHERE relationship_type = 'BENCH_LINK'"
    update = ("UPDATE core_relationships SET is_active = false "
              "WHERE relationship_type = 'BENCH_LINK'")
    figs = []
    for what, statement in (("bulk DELETE", delete), ("bulk deactivating UPDATE", update)):
        with ctx.step(f"guardian: {what}, {repeats} pairs", 2 * repeats + 1) as done:
            def without(_i: int, st: str = statement) -> float:
                return _bulk_once(plain, rows, st)

            def with_guard(_i: int, st: str = statement) -> float:
                return _bulk_once(guarded, rows, st)

            runs = alternate(repeats, without, with_guard, step=done)
        figs.append(runs.ratios.figure(
            f"guardian overhead, {what}", "x", f"<= {TARGET_RATIO:g}x",
            lambda r: r <= TARGET_RATIO,
            f"{rows} rows with the opt-in, after a checkpoint, median ratio of {repeats} "
            "bracketed runs: "
            f"{runs.ceiling.text('{:.3f}')} s without the guard, "
            f"{runs.product.text('{:.3f}')} s with it"))
    return figs


def restore_speed(ctx: BenchContext, rows: int, pairs: int) -> list[Figure]:
    dsn = _database(ctx, "bench_guard_restore", guarded=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PLAN_ORIGINAL.read_bytes())
        _add_rows(conn, rows)
        msg = conn.execute("SELECT emergency_relationship_backup()").fetchone()
        assert msg is not None
        backup = str(msg[0]).split("created: ")[1].split(" ")[0]

        def wipe() -> None:
            with conn.transaction():
                conn.execute("SET LOCAL hera_guard.allow_mass_change = 'bench restore drill'")
                conn.execute("DELETE FROM core_relationships "
                             "WHERE relationship_type = 'BENCH_LINK'")

        def restored() -> int:
            row = conn.execute("SELECT count(*) FROM core_relationships "
                               "WHERE relationship_type = 'BENCH_LINK'").fetchone()
            return int(str(row[0])) if row else 0

        def ours(_i: int) -> float:
            wipe()
            conn.execute("CHECKPOINT")  # see _bulk_once
            took = timed(lambda: conn.execute(
                "SELECT * FROM restore_relationships_from_backup(%s)", (backup,)).fetchall())
            assert restored() == rows
            return took

        def plan(_i: int) -> float:
            wipe()
            conn.execute("CHECKPOINT")
            took = timed(lambda: conn.execute(
                "SELECT * FROM plan_restore_relationships_from_backup(%s)",
                (backup,)).fetchall())
            assert restored() == rows
            return took

        with ctx.step(f"guardian: restore, {pairs} pairs", 2 * pairs + 1) as done:
            runs = alternate(pairs, plan, ours, ratio=lambda p, o: p / o, step=done)
    return [
        runs.product.figure("restore of deleted relationships from a backup (set-based)", "s",
                            "<= 10 s", lambda v: v <= 10.0, f"{rows} rows, median of {pairs}"),
        runs.ratios.figure("restore speed-up over the plan's row-by-row function", "x",
                           ">= 10x", lambda r: r >= 10.0,
                           f"{rows} rows, median ratio of {pairs} bracketed runs: ours "
                           f"{runs.product.text()} s, plan_restore_relationships_from_backup "
                           f"{runs.ceiling.text()} s"),
    ]


def run(ctx: BenchContext) -> list[Figure]:
    rows = 10_000 if ctx.quick else 100_000
    repeats = ctx.pairs if ctx.quick else 11
    return [*guardian_overhead(ctx, rows, repeats),
            *restore_speed(ctx, rows, ctx.pairs if ctx.quick else 5)]
