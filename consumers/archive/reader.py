"""Reading the archive: ``connect_history(archive_dir)``, the replay engineer's contract.

    con = connect_history(Path("archive"))      # in-memory DuckDB, read-only use
    con.sql("SELECT * FROM changes WHERE table_name = 'core_relationships'")

The views read exactly the live segments of the manifest at the moment of the call (a
consistent snapshot: later commits are not seen; call again to refresh). Deduplicated:

- ``changes``: table_schema VARCHAR, table_name VARCHAR, op VARCHAR ('c','u','d','r','t'),
  commit_lsn UBIGINT, position INTEGER, xid BIGINT (NULL for snapshot rows),
  commit_ts TIMESTAMPTZ (µs, from source.ts_us), key JSON, before JSON, after JSON,
  types JSON, snapshot BOOLEAN, event_ts TIMESTAMPTZ (capture's processing time, ts_ms),
  schema_version INTEGER — one row per (commit_lsn, position).
- ``transactions``: xid BIGINT, commit_lsn UBIGINT, commit_ts TIMESTAMPTZ,
  event_count BIGINT, data_collections JSON (from END records) — one row per commit_lsn.
- ``markers``: status VARCHAR, slot VARCHAR, db VARCHAR, epoch_lsn UBIGINT, lsn UBIGINT,
  ts TIMESTAMPTZ, tables VARCHAR[].

Plus the analysts' views and macros of ``views.VIEW_SQL`` (change_log, transaction_summary,
row_timeline, relationship_timeline, table_as_of, table_as_of_lsn, lsn_text).
Segments being compacted away stay on disk for the grace period, so a connection's queries
keep working for at least that long after a compaction.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from consumers.archive.layout import KINDS, check_or_init_marker
from consumers.archive.manifest import load_manifest
from consumers.archive.views import VIEW_SQL, raw_relation_sql


def connect_history(archive_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the archive's views (see the module docstring).

    Raises NotAnArchiveError / NewerArchiveError for a directory that is not a readable
    archive. Never writes to the archive and takes no lock: safe while the archiver runs.
    """
    root = archive_dir.absolute()
    check_or_init_marker(root, create=False)
    manifest = load_manifest(root)
    con = duckdb.connect(":memory:")
    for kind in KINDS:
        files = [] if manifest is None else [root / s.file for s in manifest.of_kind(kind)]
        con.execute(raw_relation_sql(f"raw_{kind}", kind, files))
    con.execute(VIEW_SQL)
    return con
