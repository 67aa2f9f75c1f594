"""The previous release's restore against the floor, taken the way ``bench/replay.py`` takes
ours: its own bench took the best of 3 alternating runs of each side (min over min), which
moved 0.68x between two full runs (2.27 -> 1.54).

Not imported, and not a bench area (its name starts with ``_``): ``bench/previous.py`` runs its
text with ``python -c`` in the previous release's worktree, against an empty database of our
running cluster, so ``guard``, ``replay``, ``devstack`` and ``tests`` below are that release's
own modules. The setup is that release's ``bench/replay.py`` ``restore_speed``, unchanged; the
runs are bracketed (floor, restore, floor, …, floor) and printed as JSON; ``bench/previous.py``
takes the ratios with our ``bench.common.bracketed``.
"""

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from bench.replay import PLAN_ORIGINAL, TABLE
from capture.event import parse_lsn
from devstack.sample import create_schema
from guard.install import install
from replay.live import columns, connect, read_rows
from replay.restore import restore
from replay.state import open_history, state_at
from replay.tables import TableId
from tests.replay_fixtures import History, write_archive


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(dsn: str, total: int, runs: int) -> None:
    deleted = total // 2
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_schema(conn)
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

    pg = connect(dsn)
    cols = columns(pg, table)
    snapshot = [json.loads(r) for r in read_rows(pg, table, cols).column("row").to_pylist()]
    h = History(schema="public", table="core_relationships",
                types={c.name: c.type for c in cols}, epoch_lsn=snap_lsn)
    h.snapshot(snapshot)
    with tempfile.TemporaryDirectory(prefix="hera-previous-restore-") as tmp:
        root = write_archive(Path(tmp) / "restore-archive", h)

        def wipe() -> None:
            with pg.transaction():
                pg.execute("SET LOCAL hera_guard.allow_mass_change = 'bench: the incident'")
                pg.execute("DELETE FROM core_relationships WHERE id IN (SELECT id FROM "
                           "core_relationships ORDER BY id LIMIT %s)", (deleted,))

        def count() -> int:
            row = pg.execute("SELECT count(*) FROM core_relationships").fetchone()
            return int(str(row[0])) if row else 0

        def ours() -> None:
            duck = open_history(root)
            state = state_at(duck, table, snap_lsn)
            restore(duck, pg, state)

        def floor() -> None:
            pg.execute(sql.SQL(
                "INSERT INTO core_relationships SELECT b.* FROM {} b WHERE NOT EXISTS "
                "(SELECT 1 FROM core_relationships c WHERE c.id = b.id)").format(
                    sql.Identifier(backup)))

        floors, restores = [], []
        for i in range(runs + 1):  # floor, restore, floor, …, floor: bracketed
            wipe()
            floors.append(_timed(floor))
            assert count() == total
            if i < runs:
                wipe()
                restores.append(_timed(ours))
                assert count() == total
    pg.close()
    json.dump({"deleted": deleted, "floor_s": floors, "restore_s": restores}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
