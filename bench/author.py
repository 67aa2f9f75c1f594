"""What the author (sql/10_author.sql) costs, as ratios from alternating runs (DESIGN.md);
every run right after a checkpoint:

- per statement: single-row INSERT, UPDATE and DELETE on core_relationships, each its own
  transaction (the worst case: one author message per statement), with the trigger disabled
  and enabled in turn, bracketed (without, with, …, without), from the same table
  (``_reset``); the ratio per pair, median and min-max over the pairs (target
  <= 1.10), twice: the wall time (pgbench, one client, a custom script per statement) and the
  server backend's CPU time per statement (/proc/<pid>/schedstat, ns; what the trigger itself
  costs, much less disturbed by the other processes of a loaded host);
- capture throughput (without the author first in even pairs, with it first in odd ones): the
  same workload of 100-row transactions captured with and without
  the author (events then carry it in their transaction block), commit -> broker ack ->
  confirmed; throughput with / without, median and min-max (target >= 0.95), and the same
  as changes per CPU second of capture's process (steadier on a loaded host).
"""

from __future__ import annotations

import re
import statistics
import subprocess
from functools import partial
from pathlib import Path

import psycopg

from bench.capture import _lsn, _prime, _timed_capture
from bench.common import BenchContext, Figure, alternate, backend_cpu_ns
from guard.install import SQL_DIR

_AUTHOR_SQL = SQL_DIR / "10_author.sql"
_ROWS_PER_TXN = 100
_TPS = re.compile(r"tps = ([0-9.]+)")

_SCRIPTS = {
    "INSERT": "\\set n random(1, 1000000000)\n"
              "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
              "relationship_type) VALUES ('00000000-0000-0000-0000-0000000000aa', 'b' || :n, "
              "'x', 'BENCH');\n",
    "UPDATE": "\\set k random(1, {seeds})\n"
              "UPDATE core_relationships SET relationship_strength = :k "
              "WHERE from_entity_id = 'seed-' || :k AND relationship_type = 'SEED';\n",
    "DELETE": "\\set k random(1, {seeds})\n"
              "DELETE FROM core_relationships "
              "WHERE from_entity_id = 'seed-' || :k AND relationship_type = 'SEED';\n",
}


def _database(ctx: BenchContext, name: str, seeds: int) -> str:
    dsn = ctx.new_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_AUTHOR_SQL.read_bytes())
        conn.execute(
            "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
            "relationship_type) SELECT '00000000-0000-0000-0000-0000000000aa', 'seed-' || g, "
            "'x', 'SEED' FROM generate_series(1, %s) g", (seeds,))
        conn.execute("VACUUM ANALYZE core_relationships")
    return dsn


def _author(dsn: str, on: bool) -> None:
    """Switch the author on or off for the next run, and start that run right after a
    checkpoint: a run's first change to each page writes the whole page to the WAL, so
    every run must start the same distance from one (else a run pays those full-page writes
    or not depending on where the last checkpoint fell)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE core_relationships "
                     + ("ENABLE ALWAYS" if on else "DISABLE") + " TRIGGER hera_guard_author")
        conn.execute("CHECKPOINT")


def _order(pair: int) -> tuple[bool, bool]:
    """Without then with the author in even pairs, with then without in odd ones: whatever
    favours the first (or the second) run of a pair falls on both sides alike."""
    return (False, True) if pair % 2 == 0 else (True, False)


def _pgbench(ctx: BenchContext, dsn: str, script: Path, seconds: int) -> float:
    res = subprocess.run(
        [str(ctx.cluster.bindir / "pgbench"), "-n", "-c", "1", "-T", str(seconds), "-f",
         str(script), dsn], capture_output=True, text=True, check=True)
    found = _TPS.search(res.stdout)
    if found is None:
        raise RuntimeError(f"pgbench printed no tps: {res.stdout[-300:]}")
    return float(found.group(1))


_CPU_SQL = {
    "INSERT": "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
              "relationship_type) VALUES ('00000000-0000-0000-0000-0000000000aa', %s, 'x', "
              "'BENCH')",
    "UPDATE": "UPDATE core_relationships SET relationship_strength = relationship_strength + 1 "
              "WHERE from_entity_id = %s AND relationship_type = 'SEED'",
    "DELETE": "DELETE FROM core_relationships "
              "WHERE from_entity_id = %s AND relationship_type = 'SEED'",
}


def _backend_cpu(dsn: str, op: str, keys: list[str], per_txn: int = 1) -> float:
    """Backend CPU ns per statement: ``op`` once per key, ``per_txn`` statements a
    transaction (1: each its own)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        pid = conn.info.backend_pid
        for key in keys[:50]:  # warm the plan, the trigger function, the caches
            conn.execute(_CPU_SQL[op], (f"warm-{key}",), prepare=True)
        t0 = backend_cpu_ns(pid)
        for i in range(0, len(keys), per_txn):
            if per_txn == 1:
                conn.execute(_CPU_SQL[op], (keys[i],), prepare=True)
                continue
            with conn.transaction():
                for key in keys[i:i + per_txn]:
                    conn.execute(_CPU_SQL[op], (key,), prepare=True)
        return (backend_cpu_ns(pid) - t0) / len(keys)


def _ratio_figure(name: str, ratios: list[float], target: str, met: bool, detail: str
                  ) -> Figure:
    return Figure(name, round(statistics.median(ratios), 3), "x", target, met,
                  f"median of {len(ratios)} alternating pairs, min {min(ratios):.3f} max "
                  f"{max(ratios):.3f}; {detail}")


def _reset(dsn: str, seeds: int) -> None:
    """Every pgbench run (and every series of CPU runs) starts from the same table: the
    earlier runs' inserted rows
    gone, every seed row there, no dead rows. Else the runs drift: pgbench's DELETE draws
    random seeds, and 18 runs of ~30k deletes over 246k seeds left it deleting nothing in
    most statements of the last runs (its ratio moved 1.65 -> 1.30 between two runs)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE core_relationships DISABLE TRIGGER hera_guard_author")
        conn.execute("DELETE FROM core_relationships WHERE relationship_type = 'BENCH'")
        conn.execute(
            "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
            "relationship_type) SELECT '00000000-0000-0000-0000-0000000000aa', 'seed-' || g, "
            "'x', 'SEED' FROM generate_series(1, %s) g WHERE NOT EXISTS (SELECT 1 FROM "
            "core_relationships r WHERE r.from_entity_id = 'seed-' || g "
            "AND r.relationship_type = 'SEED')", (seeds,))
        conn.execute("VACUUM core_relationships")


def per_statement(ctx: BenchContext) -> list[Figure]:
    seeds = 100_000 if ctx.quick else 300_000
    # Many short bracketed pairs (without, with, …, without): on a shared host a single
    # run's CPU time moves with every hiccup, so the median of many pairs is steadier. The
    # CPU runs are 1,000 statements (~0.05 s of backend CPU): 20 pairs of them, each run on
    # seed rows no earlier run touched. The pgbench runs are 3 s, 9 pairs, each from _reset.
    seconds = 1 if ctx.quick else 3
    pairs = 5 if ctx.quick else 9
    cpu_pairs = 5 if ctx.quick else 20
    n = 1_000
    dsn = _database(ctx, "bench_author_stmt", seeds)
    figs = []
    ops = [*((op, 1) for op in _SCRIPTS), ("UPDATE", 10)]
    used = [0]
    with ctx.step(f"author: {cpu_pairs} bracketed pairs per statement with backend CPU "
                  f"({len(ops)}), {pairs} with pgbench ({len(_SCRIPTS)})",
                  (2 * cpu_pairs + 1) * len(ops) + (2 * pairs + 1) * len(_SCRIPTS)) as done:
        # (op, statements per transaction): one per transaction is the worst case; in a
        # transaction of 10 only the first statement builds the message
        for op, per_txn in ops:
            def cpu(on: bool, i: int, op: str = op, per_txn: int = per_txn) -> float:
                _author(dsn, on)
                if op == "INSERT":
                    keys = [f"cpu-{op}-{i}-{on}-{k}" for k in range(n)]
                else:  # seed rows no earlier run touched: every statement changes one row
                    keys = [f"seed-{seeds - used[0] - k}" for k in range(n)]
                    used[0] += n
                return _backend_cpu(dsn, op, keys, per_txn)

            _reset(dsn, seeds)
            used[0] = 0
            runs = alternate(cpu_pairs, partial(cpu, False), partial(cpu, True), step=done)
            shape = "one per transaction" if per_txn == 1 else f"{per_txn} per transaction"
            figs.append(runs.ratios.figure(
                f"author CPU per single-row {op}, {shape} (server backend)", "x",
                "<= 1.10x the CPU without", lambda v: v <= 1.10,
                f"median of {cpu_pairs} bracketed pairs (without, with, …, without); {n} "
                f"statements per run, {shape}; {runs.product.median / 1000:.0f} µs backend CPU "
                f"per statement with it, {runs.ceiling.median / 1000:.0f} µs without"))
        for op, text in _SCRIPTS.items():
            script = ctx.workdir / f"author_{op.lower()}.sql"
            script.write_text(text.format(seeds=seeds))

            def tps(on: bool, _i: int, script: Path = script) -> float:
                _reset(dsn, seeds)
                _author(dsn, on)
                return _pgbench(ctx, dsn, script, seconds)

            runs = alternate(pairs, partial(tps, False), partial(tps, True),
                             ratio=lambda c, p: c / p,  # time per statement, with / without
                             step=done)
            figs.append(runs.ratios.figure(
                f"author cost per single-row {op}", "x", "<= 1.10x the time without",
                lambda v: v <= 1.10,
                f"median of {pairs} bracketed pairs (without, with, …, without); pgbench 1 "
                f"client, {seconds} s per run, one statement per transaction; "
                f"{runs.product.median:,.0f} statements/s with the author, "
                f"{runs.ceiling.median:,.0f} without"))
    return figs


def _workload(dsn: str, rows: int, tag: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(rows // _ROWS_PER_TXN):
            conn.execute(
                "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id,"
                " relationship_type, relationship_data) SELECT gen_random_uuid(),"
                " %s || '-' || %s || '-' || g, 'org', 'BENCH_LINK', jsonb_build_object('g', g)"
                " FROM generate_series(1, %s) g", (tag, i, _ROWS_PER_TXN))


def capture_throughput(ctx: BenchContext) -> list[Figure]:
    rows = 20_000 if ctx.quick else 100_000
    pairs = 3 if ctx.quick else 6
    dsn = _database(ctx, "bench_author_capture", 10)
    backend, plugin = "kafka-python", "pgoutput"
    ratios, rates, cpu_ratios = [], [], []
    for p in range(pairs):
        secs, cpu = {}, {}
        for on in _order(p):
            slot, prefix = f"author_{p}_{int(on)}", f"benchauthor.{p}.{int(on)}"
            with psycopg.connect(dsn, autocommit=True) as conn:
                # the earlier runs' rows go: a new capture snapshots what the table holds
                # (12 runs of 100k rows made the last snapshots outlast capture's start)
                conn.execute("TRUNCATE core_relationships")
            _prime(ctx, dsn, slot, prefix, backend, plugin)
            _author(dsn, on)
            _workload(dsn, rows, f"p{p}{int(on)}")
            end = _lsn(dsn)
            # the other slot of this pair is dropped after its run: it would hold the WAL
            secs[on], cpu[on] = _timed_capture(ctx, dsn, slot, prefix, backend, end, plugin)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        ratios.append(secs[False] / secs[True])  # throughput with / without
        rates.append(rows / secs[True])
        cpu_ratios.append(cpu[False] / cpu[True])  # changes per CPU second, with / without
    ratio = statistics.median(ratios)
    cpu_ratio = statistics.median(cpu_ratios)
    workload = (f"{rows} changes in {_ROWS_PER_TXN}-row transactions, {plugin}, {backend}, "
                "commit -> broker ack -> confirmed")
    return [
        _ratio_figure("capture throughput with the author / without", ratios, ">= 0.95",
                      ratio >= 0.95, f"{workload}; {statistics.median(rates):,.0f} changes/s "
                      "with it"),
        _ratio_figure("capture changes per CPU second with the author / without", cpu_ratios,
                      ">= 0.95", cpu_ratio >= 0.95,
                      f"{workload}; capture's process CPU while it streams the workload")]


def run(ctx: BenchContext) -> list[Figure]:
    return per_statement(ctx) + capture_throughput(ctx)
