"""Pruning: the tail after a checkpoint read from only the files that can hold it.

Every archiver batch is one set of files sorted by commit LSN, so each file's min/max
``commit_lsn`` (the Delta log's file statistics) is a narrow range and the files of a tail
are the newest few. ``relation`` lists exactly the ``changes`` files whose statistics
overlap the tail (``DeltaTable.file_uris`` with a pruning predicate: the log alone, no file
is opened) and gives the rebuild a relation over those files only, read by DuckDB's Parquet
reader (on object storage from local copies of just those objects: replay/staging.py).
Measured in the README (Benchmarks): replay's time stays flat from 3M to 10M archived
changes.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import duckdb
from deltalake import DeltaTable

from consumers.archive.location import ArchiveLocation
from consumers.archive.views import define_raw, parquet_source
from replay import staging


@dataclass(frozen=True)
class _Source:
    loc: ArchiveLocation
    table: DeltaTable  # the version the connection's views read


_SOURCES: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, _Source] = \
    weakref.WeakKeyDictionary()


def remember(conn: duckdb.DuckDBPyConnection, loc: ArchiveLocation, table: DeltaTable) -> None:
    _SOURCES[conn] = _Source(loc, table)


def _predicate(after_lsn: int) -> list[tuple[str, str, object]]:
    return [("kind", "=", "changes"), ("commit_lsn", ">", after_lsn)]


def files(conn: duckdb.DuckDBPyConnection, after_lsn: int) -> tuple[int, int] | None:
    """(files the tail after ``after_lsn`` is read from, files of changes in the archive)."""
    source = _SOURCES.get(conn)
    if source is None:
        return None
    every = source.table.file_uris(file_pruning_predicate=[("kind", "=", "changes")])
    return len(source.table.file_uris(file_pruning_predicate=_predicate(after_lsn))), len(every)


def relation(conn: duckdb.DuckDBPyConnection, after_lsn: int) -> str:
    """A ``changes``-shaped relation holding (at least) every change with a commit LSN after
    ``after_lsn``, over the files that can hold one; ``changes`` for a connection this
    module does not know (tests' in-memory histories)."""
    source = _SOURCES.get(conn)
    if source is None:
        return "changes"
    predicate = _predicate(after_lsn)
    name = "_hera_tail_changes"
    uris = source.table.file_uris(file_pruning_predicate=predicate)
    if not source.loc.is_local:  # copied to local disk: see replay/staging.py for why
        uris = staging.local_copies(conn, source.loc, uris)
    define_raw(conn, name, "changes", parquet_source(uris))
    return name


_WHOLE: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()


def localize_history(conn: duckdb.DuckDBPyConnection) -> None:
    """Before a rebuild from the beginning on object storage: the connection's
    ``raw_changes`` (and so ``changes``) switched from deltalake's pyarrow dataset to
    DuckDB's Parquet reader over local copies of the same files (replay/staging.py), so
    the whole rebuild stays within DuckDB's memory limit. Costs disk: the compressed size
    of the changes files of the table version read. No-op on local disk; once per
    connection."""
    source = _SOURCES.get(conn)
    if source is None or source.loc.is_local or conn in _WHOLE:
        return
    uris = source.table.file_uris(file_pruning_predicate=[("kind", "=", "changes")])
    define_raw(conn, "raw_changes", "changes",
               parquet_source(staging.local_copies(conn, source.loc, uris)))
    _WHOLE.add(conn)

