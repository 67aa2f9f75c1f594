"""What every benchmark module shares: the stack it runs on and the figures it reports.

Each area has a module ``bench/<area>.py`` with ``def run(ctx: BenchContext) -> list[Figure]``;
``python -m bench`` runs them all in one run on one local stack and prints one table.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from devstack.broker import Broker
from devstack.postgres import PostgresCluster


@dataclass(frozen=True)
class Figure:
    name: str  # e.g. "capture throughput"
    value: float
    unit: str  # e.g. "changes/s", "ms", "s", "x"
    target: str  # human text, e.g. ">= 50% of pg_recvlogical"
    met: bool | None  # None when the figure has no pass/fail target
    detail: str = ""  # how it was measured, and the comparison figures
    # min and max of the runs ``value`` is the median of (None: one run, no spread)
    low: float | None = None
    high: float | None = None
    runs: int = 1

    @property
    def spread(self) -> str:
        """``min–max`` of the runs, ``""`` for a single run."""
        if self.low is None or self.high is None:
            return ""
        return f"{format_number(self.low)}–{format_number(self.high)}"


def format_number(value: float) -> str:
    """A figure as the report tables print it: thousands grouped, 3 significant digits below 10."""
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Runs:
    """The figures of repeated runs of one measurement: the median and the spread."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def text(self, fmt: str = "{:.2f}") -> str:
        """``median (min–max of n)``, for a figure's detail."""
        if len(self.values) == 1:
            return fmt.format(self.values[0])
        return (f"{fmt.format(self.median)} (" + fmt.format(self.low) + "–"
                + fmt.format(self.high) + f" of {len(self.values)})")

    def figure(self, name: str, unit: str, target: str, met: Callable[[float], bool] | None,
               detail: str, scale: float = 1.0) -> Figure:
        """A figure whose value is the median, with the spread of the runs."""
        one = len(self.values) == 1
        return Figure(name, self.median * scale, unit, target,
                      None if met is None else met(self.median), detail,
                      None if one else self.low * scale, None if one else self.high * scale,
                      len(self.values))


@dataclass(frozen=True)
class Pairs:
    """Alternating runs of a ceiling and a product, bracketed (ceiling, product, ceiling, …,
    product, ceiling): each product run is compared with the geometric mean of the two
    ceiling runs around it, so a host whose speed drifts within minutes, or shifts between
    runs, moves both sides of each ratio alike; the figure is the median ratio. ``ceiling``
    holds one run more than ``product``."""

    ceiling: Runs
    product: Runs
    ratios: Runs


def alternate(pairs: int, ceiling: Callable[[int], float], product: Callable[[int], float],
              ratio: Callable[[float, float], float] = lambda c, p: p / c,
              step: Callable[[], None] | None = None) -> Pairs:
    """Run ``ceiling(0)``, ``product(0)``, ``ceiling(1)`` … ``product(pairs - 1)``,
    ``ceiling(pairs)``; ``ratio(c, p)`` per product run, ``c`` the geometric mean of the
    ceiling runs right before and right after it (by default product over ceiling, for rates:
    the product's share of the ceiling; the geometric mean suits rates and times alike)."""
    cs, ps = [], []
    for i in range(pairs + 1):
        cs.append(ceiling(i))
        if step is not None:
            step()
        if i == pairs:
            break
        ps.append(product(i))
        if step is not None:
            step()
    return paired(cs, ps, ratio)


def paired(ceiling: Sequence[float], product: Sequence[float],
           ratio: Callable[[float, float], float] = lambda c, p: p / c) -> Pairs:
    """The ``Pairs`` of runs taken in ``alternate``'s order elsewhere (another process, a
    loop of the area's own): ``ceiling`` one longer than ``product``."""
    return Pairs(Runs(tuple(ceiling)), Runs(tuple(product)), bracketed(ceiling, product, ratio))


def bracketed(ceiling: Sequence[float], product: Sequence[float],
              ratio: Callable[[float, float], float] = lambda c, p: p / c) -> Runs:
    """The ratios of runs taken as ``alternate`` takes them (``ceiling`` one longer than
    ``product``), for a second measure of the same runs (CPU next to wall time)."""
    return Runs(tuple(ratio(bracket(ceiling[i], ceiling[i + 1]), p)
                      for i, p in enumerate(product)))


def release_frozen() -> None:
    """Free what a capture run (or an area) left for the collector: capture's GC tuning
    freezes the heap, so clients and buffers held in reference cycles would otherwise live on
    in this process through every later run, weigh on the runs timed after them, and log
    refused connections once the broker stops."""
    import gc

    gc.unfreeze()
    gc.collect()


def backend_cpu_ns(pid: int) -> int:
    """CPU time a server backend (or any process of this host) has run, ns: the scheduler's
    account (/proc/<pid>/schedstat), not 10 ms ticks."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def bracket(before: float, after: float) -> float:
    """The ceiling a product run is compared with: the geometric mean of the ceiling runs
    around it (the same whether the figures are rates or times)."""
    return math.sqrt(before * after)


def repeat(times: int, fn: Callable[[int], float],
           step: Callable[[], None] | None = None) -> Runs:
    """``fn(i)`` for i in range(times): a figure without a ceiling, as the median of repeats."""
    out = []
    for i in range(times):
        out.append(fn(i))
        if step is not None:
            step()
    return Runs(tuple(out))


def ratio_runs(tops: Sequence[float], bottoms: Sequence[float]) -> Runs:
    """Per-run ratios of two series measured in the same rounds (``tops[i] / bottoms[i]``)."""
    return Runs(tuple(t / b for t, b in zip(tops, bottoms, strict=True)))


@dataclass
class BenchContext:
    cluster: PostgresCluster
    broker: Broker
    workdir: Path
    quick: bool = False  # smaller workloads for a smoke run
    notes: list[str] = field(default_factory=list)
    console: Console = field(default_factory=lambda: Console(stderr=True))

    @property
    def pairs(self) -> int:
        """How many ceiling/product pairs (or repeats) a figure is taken from."""
        return 3

    @contextmanager
    def step(self, name: str, total: int) -> Iterator[Callable[[], None]]:
        """A progress line for one step of an area: its name and a running count of its runs;
        yields the function that counts one run done. Off a terminal (a log file, CI) one
        plain line per run instead of a bar that would only show its last state."""
        if not self.console.is_terminal:
            count = [0]

            def line() -> None:
                count[0] += 1
                self.console.print(f"bench {name}: {count[0]}/{total}", highlight=False)

            self.console.print(f"bench {name}: 0/{total}", highlight=False)
            yield line
            return
        with Progress(TextColumn("[bold]bench[/] {task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                      transient=False) as progress:
            task = progress.add_task(name, total=total)
            yield lambda: progress.advance(task)

    def new_database(self, name: str) -> str:
        """Create a database with the sample schema; returns its DSN."""
        import psycopg
        from psycopg import sql

        from devstack.sample import create_schema

        with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = self.cluster.dsn(name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_schema(conn)
        return dsn


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (monotonic clock)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
