"""``DIR/history.duckdb``: the analysts' entry point, views and macros only, no data.

The archiver re-creates it at start-up and closes it at once (never holds it open), so any
number of analysts can open it (``read_only`` for more than one at a time) while the archiver
runs. It is built as ``history.duckdb.tmp`` and renamed over the old file: an analyst who has
the old file open keeps it (same views), and no DuckDB lock is ever contended.

Its raw relations read the segment directories by glob with the archive's **absolute**
path (DuckDB resolves relative paths against the client's working directory, not the
database file): every new segment is visible to the next query without regenerating the
file. Moving the archive directory needs one archiver start (or ``write_history_db``) to fix
the paths. A glob also sees compaction sources during their grace period and segments of a
crashed commit until the next start-up; the views deduplicate, so results are unaffected.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from consumers.archive.layout import HISTORY_DB, KINDS, SEGMENTS_DIR
from consumers.archive.views import VIEW_SQL, raw_relation_sql


def write_history_db(root: Path) -> Path:
    root = root.absolute()
    path = root / HISTORY_DB
    tmp = root / (HISTORY_DB + ".tmp")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        for kind in KINDS:
            pattern = str(root / SEGMENTS_DIR / kind / "*.parquet")
            con.execute(raw_relation_sql(f"raw_{kind}", kind, pattern))
        con.execute(VIEW_SQL)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    tmp.replace(path)
    return path
