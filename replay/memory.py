"""Replay's memory bound: DuckDB's ``memory_limit`` with a spill directory.

DuckDB's hash aggregates, joins and sorts spill to the directory once the limit is reached,
so the rebuild's size is bounded by the limit whatever the history length; what cannot spill
(a single row larger than the limit, Arrow data handed to DuckDB) fails with DuckDB's
OutOfMemoryException, which the CLI reports in one line (``out_of_memory``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

from hera_kit.text import first_line
from replay import staging


@dataclass(frozen=True)
class Memory:
    limit: str | None = None  # DuckDB's syntax: "2GB", "512MB"; None: DuckDB's default (80% RAM)
    spill_dir: Path | None = None  # None: a per-process directory under the system temp dir
    threads: int | None = None  # DuckDB's worker threads; None: one per core

    def apply(self, conn: duckdb.DuckDBPyConnection) -> None:
        # A directory of this process alone: DuckDB creates it and removes what it spilled
        # when the connection closes; two replays never share spill files.
        spill = self.spill_dir or Path(tempfile.gettempdir()) / f"hera-replay-spill-{os.getpid()}"
        conn.execute("SET temp_directory = $d", {"d": str(spill)})
        staging.remember(conn, self.spill_dir)  # local copies of remote files go there too
        if self.limit is not None:
            conn.execute("SET memory_limit = $m", {"m": self.limit})
        if self.threads is not None:
            conn.execute("SET threads = $t", {"t": self.threads})

    def describe(self) -> str:
        return self.limit or "DuckDB's default (80% of RAM)"


def out_of_memory(exc: BaseException, memory: Memory) -> str:
    """The one line for a rebuild that does not fit."""
    return (f"the rebuild does not fit in the memory limit ({memory.describe()}) even "
            f"spilling to disk ({first_line(exc, '?')[:160]}); raise "
            "--memory-limit (HERA_MEMORY_LIMIT), free disk space for --spill-dir, or replay a "
            "point after a newer checkpoint; nothing was changed")
