"""Reading the archive: ``connect_history(archive)``, the replay engineer's contract.

    con = connect_history("archive")               # or "s3://bucket/prefix", Path(...)
    con = connect_history("archive", version=12)   # an older table version (time travel)
    con.sql("SELECT * FROM changes WHERE table_name = 'core_relationships'")

The views read exactly the files of one Delta table version (the newest at the moment of
the call, or the one asked for): a consistent snapshot, later commits are not seen (call
again to refresh). Local tables are read by DuckDB straight from the Parquet files the Delta
log lists (no extension); remote ones through deltalake's pyarrow dataset (object store
access by delta-rs; DuckDB scans the dataset lazily, filters pushed down), because DuckDB's
httpfs extension may not be installable where this runs. Deduplicated:

- ``changes``: table_schema VARCHAR, table_name VARCHAR, op VARCHAR ('c','u','d','r','t'),
  commit_lsn UBIGINT, position INTEGER, xid BIGINT (NULL for snapshot rows),
  commit_ts TIMESTAMPTZ (µs, from source.ts_us), key JSON, before JSON, after JSON,
  types JSON, snapshot BOOLEAN, event_ts TIMESTAMPTZ (capture's processing time, ts_ms),
  schema_version INTEGER (1 or 2: see capture/encoding.py), reread VARCHAR (a row of an
  online re-read: why the table was re-read; NULL otherwise) — one row per (commit_lsn, position).
- ``transactions``: xid BIGINT, commit_lsn UBIGINT, commit_ts TIMESTAMPTZ,
  event_count BIGINT, data_collections JSON (from END records) — one row per commit_lsn.
- ``markers``: status VARCHAR, slot VARCHAR, db VARCHAR, epoch_lsn UBIGINT, lsn UBIGINT,
  ts TIMESTAMPTZ, tables VARCHAR[], system_identifier VARCHAR, plugin VARCHAR,
  definitions JSON (the tables' definitions at SNAPSHOT_START; NULL for old
  markers), commit_ts TIMESTAMPTZ (PostgreSQL's clock, where ``ts`` is capture's:
  PROGRESS, the commit time of the newest commit at or before lsn; SNAPSHOT_START, the time
  just after the slot was created; NULL for old markers),
  rereads JSON (the online re-reads as of the marker's LSN; NULL for old markers).
- ``schema_changes``: table_schema, table_name, commit_lsn UBIGINT, position INTEGER, xid,
  commit_ts, lsn UBIGINT, columns JSON (capture.event.ColumnDef objects), command_tag, ddl,
  recorded BOOLEAN, schema_version — one row per (commit_lsn, position).
- ``raw_changes`` (and ``raw_transactions``, ``raw_markers``, ``raw_schema_changes``): the
  same rows before deduplication.

Plus the analysts' views and macros of ``views.VIEW_SQL`` (change_log, transaction_summary, rereads,
row_timeline, relationship_timeline, table_as_of, table_as_of_lsn, lsn_text). Files a
version references stay until vacuum's retention has passed, so a connection keeps working
that long after newer commits and compactions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
from deltalake import DeltaTable

from consumers.archive.layout import ArchiveError
from consumers.archive.location import ArchiveLocation, archive_location
from consumers.archive.segments import KINDS
from consumers.archive.table import Clock, files_by_kind, open_table, utc_now
from consumers.archive.views import VIEW_SQL, define_raw, parquet_source, raw_relation_sql
from hera_kit.text import first_line


def connect_history(archive: str | Path | ArchiveLocation, *, version: int | None = None,
                    as_of: datetime | None = None,
                    storage_options: dict[str, str] | None = None, clock: Clock = utc_now,
                    table: DeltaTable | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the archive's views (see the module docstring).

    Raises NotAnArchiveError / NewerArchiveError for a location without a readable archive,
    DamagedArchiveError for a Delta log that cannot be read or a data file that is missing or
    truncated (naming the file), ArchiveError for a ``version``/``as_of`` the table cannot
    answer exactly (not kept, before its oldest kept commit, in the future). Never writes to
    the archive and takes no lock: safe while the archiver runs. ``table``: the archive's
    table the caller opened already (``open_table``): its version is the one read.
    """
    loc = archive_location(archive, storage_options)
    loc.check_readable()
    dt = table if table is not None else open_table(loc)
    if version is not None or as_of is not None:
        dt = _time_travel(dt, loc, version, as_of, clock)
    con = duckdb.connect(":memory:")
    if loc.is_local:
        _local_relations(con, dt, loc)
    else:
        _dataset_relations(con, dt)
    con.execute(VIEW_SQL)
    return con


def _time_travel(dt: DeltaTable, loc: ArchiveLocation, version: int | None,
                 as_of: datetime | None, clock: Clock) -> DeltaTable:
    """The table at ``version`` or as it was at ``as_of``; a time the log cannot place (before
    its oldest kept commit, or after now) is refused rather than answered with the nearest
    version."""
    if as_of is not None:
        commits = dt.history()
        oldest = min(commits, key=lambda c: int(c.get("version", 0)))
        first_ts = datetime.fromtimestamp(int(oldest["timestamp"]) / 1000, UTC)
        if as_of < first_ts:
            raise ArchiveError(
                f"{loc} did not hold anything at {as_of.isoformat()}: its oldest kept commit "
                f"(version {oldest.get('version')}) is from {first_ts.isoformat()}; pick a "
                "later --as-of")
        now = clock()
        if as_of > now:
            raise ArchiveError(f"--as-of {as_of.isoformat()} is in the future (now "
                               f"{now.isoformat()}): later commits may still come")
        # The newest commit stamped at or before the time, by the commit's own timestamp (the
        # one history() and the views show): delta-rs would place a time by the log files'
        # modification times, written a moment after the stamp, and read the version before
        # a commit at exactly its stamped time.
        as_of_ms = as_of.timestamp() * 1000
        version = max(int(c.get("version", 0)) for c in commits
                      if int(c["timestamp"]) <= as_of_ms)
    try:
        if version is not None:
            dt.load_as_version(version)
    except Exception as exc:
        newest = DeltaTable(loc.uri, storage_options=loc.options()).version()
        what = f"version {version}" if as_of is None else f"the time {as_of}"
        raise ArchiveError(f"{loc} has no {what} (versions 0..{newest}, as far as the log "
                           f"and vacuum's retention keep them): "
                           f"{first_line(exc)[:200]}") from None
    return dt


def _local_relations(con: duckdb.DuckDBPyConnection, dt: DeltaTable,
                     loc: ArchiveLocation) -> None:
    root = loc.path
    for kind, files in files_by_kind(dt).items():
        if kind not in KINDS:
            continue
        loc.check_files(files)
        define_raw(con, f"raw_{kind}", kind, parquet_source([str(root / rel) for rel, _ in files]))


def _dataset_relations(con: duckdb.DuckDBPyConnection, dt: DeltaTable) -> None:
    dataset = dt.to_pyarrow_dataset()
    kinds = set(files_by_kind(dt))
    for kind in KINDS:
        if kind not in kinds:
            con.execute(raw_relation_sql(f"raw_{kind}", kind, None))
            continue
        # A lazily scanned dataset (projection and filters pushed down by DuckDB).
        part = dataset.filter(ds.field("kind") == kind)
        con.register(f"_ds_{kind}", part)
        con.execute(raw_relation_sql(f"raw_{kind}", kind, f"_ds_{kind}",
                                     set(dataset.schema.names)))
