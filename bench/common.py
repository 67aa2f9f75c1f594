"""What every benchmark module shares: the stack it runs on and the figures it reports.

Each area has a module ``bench/<area>.py`` with ``def run(ctx: BenchContext) -> list[Figure]``;
``python -m bench`` runs them all in one run on one local stack and prints one table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class BenchContext:
    cluster: PostgresCluster
    broker: Broker
    workdir: Path
    quick: bool = False  # smaller workloads for a smoke run
    notes: list[str] = field(default_factory=list)

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
