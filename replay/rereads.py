"""Capture's online re-reads, as replay sees them in the archive.

After a DDL the stream cannot express (a rewrite: ALTER COLUMN TYPE ... USING, a volatile
default, a stored generated column, an unrecorded change), capture re-reads the table online
(capture/reread.py): its rows arrive as ``op r`` changes inside transactions, and a
``REREAD_END`` marker says where the last chunk ended. From that commit on every row of the
table has a value written after the DDL, so a point there is exact again; a point between
the DDL's commit and that end may still hold rows only the rewrite knew, and is refused
naming both ends of the window. A table added to --tables later is rebuilt from where its
re-read was requested (``joined_start``).
"""

from __future__ import annotations

import duckdb

from capture.event import format_lsn
from replay.errors import NotCovered
from replay.tables import TableId


def reread_ends(conn: duckdb.DuckDBPyConnection, table: TableId) -> list[int]:
    """Commit LSNs at which a re-read of ``table`` ended, oldest first."""
    rows = conn.execute(
        "SELECT DISTINCT lsn FROM markers WHERE status = 'REREAD_END' "
        "AND list_contains(json_keys(definitions), $t) ORDER BY lsn",
        {"t": f"{table.schema}.{table.name}"}
    ).fetchall()
    return [int(r[0]) for r in rows]


def reread_started(conn: duckdb.DuckDBPyConnection, table: TableId, lsn: int) -> bool:
    """Whether re-read rows of ``table`` were archived after ``lsn`` (one under way)."""
    found = conn.execute(
        "SELECT 1 FROM changes WHERE table_schema = $s AND table_name = $t AND op = 'r' "
        "AND xid IS NOT NULL AND commit_lsn > $c LIMIT 1",
        {"s": table.schema, "t": table.name, "c": lsn}).fetchall()  # all: no open result
    return bool(found)


def end_after(ends: list[int], lsn: int) -> int | None:
    """The first re-read end after a DDL committed at ``lsn``."""
    return next((e for e in ends if e > lsn), None)


def window_note(ddl_lsn: int, end: int | None) -> str:
    """What to say about the window a refused point is in."""
    if end is None:
        return (f"; capture re-reads the table after such a change: points after that "
                f"re-read's end are exact (none has ended in the archive yet), points "
                f"before {format_lsn(ddl_lsn)} are exact now")
    return (f"; the point is inside the re-read window {format_lsn(ddl_lsn)} - "
            f"{format_lsn(end)}: exact again from {format_lsn(end)}")


def joined_start(conn: duckdb.DuckDBPyConnection, table: TableId, slot: str,
                 epoch_lsn: int, upto: int) -> int | None:
    """For a table that joined the epoch after its snapshot (added to --tables later): the
    LSN its rebuild starts after (where capture's re-read of it was requested: its changes
    stream from there and the re-read's rows account for every other row). None: the table
    was in the epoch's snapshot. Refuses points before that re-read's end (rows nobody read
    yet) and points after the table left --tables again (changes nobody captured)."""
    rows = conn.execute(
        "SELECT tables FROM markers WHERE status = 'SNAPSHOT_START' AND slot = $s "
        "AND epoch_lsn = $e LIMIT 1", {"s": slot, "e": epoch_lsn}).fetchall()
    if not rows or not rows[0][0] or str(table) in rows[0][0]:
        return None
    found = [(int(r), int(e)) for r, e in conn.execute(
        'SELECT requested_lsn, end_lsn FROM rereads WHERE slot = $s AND epoch_lsn = $e '
        'AND "table" = $t ORDER BY end_lsn', {"s": slot, "e": epoch_lsn, "t": str(table)}
    ).fetchall()]
    joined = (f"{table} was added to capture (slot {slot}) after the snapshot of its epoch at "
              f"{format_lsn(epoch_lsn)} and re-read online")
    ended = [f for f in found if f[1] <= upto]
    if not ended:
        if found:
            raise NotCovered(
                f"{joined}: replay of it is exact from {format_lsn(found[0][1])} (that "
                f"re-read's end); the point {format_lsn(upto)} is before it, when rows "
                "nobody had read yet existed - pick a point at or after it")
        raise NotCovered(
            f"{joined}: the archive holds no end of that re-read (with where it started) "
            "yet - wait for it (capture status) and the archiver, or start a new epoch "
            "with the table (capture run --new-snapshot)")
    start = ended[-1][0]
    left = conn.execute(
        "SELECT min(lsn) FROM markers WHERE slot = $s AND epoch_lsn = $e AND lsn > $r "
        "AND lsn <= $u AND len(tables) > 0 AND NOT list_contains(tables, $t)",
        {"s": slot, "e": epoch_lsn, "r": start, "u": upto, "t": str(table)}).fetchall()
    if left and left[0][0] is not None:
        raise NotCovered(
            f"{joined} from {format_lsn(start)}, but capture ran without it (not in "
            f"--tables) at {format_lsn(int(left[0][0]))}: its changes from there were not "
            f"captured; pick a point before {format_lsn(int(left[0][0]))} or after its next "
            "re-read's end")
    return start
