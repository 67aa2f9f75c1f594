"""``capture status``: where the slot is and how far behind, read from PostgreSQL.

Lag in seconds is the age of the oldest commit the slot has not confirmed: the first
COMMIT record in the WAL after ``confirmed_flush_lsn``, read with pg_walinspect (PostgreSQL
15+ contrib), timed by the server's clock. pg_stat_replication's ``flush_lag`` is not used:
it times how long the client took to confirm WAL the walsender *sent*, so a capture catching
up on old WAL shows seconds while it is minutes behind. Without pg_walinspect (or the right
to read WAL) the answer is "unknown", never a guess.

Commits of other databases of the cluster count too (the WAL is shared and the slot has to
read past them): the figure can only overstate by the gap to this database's next commit,
never understate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from capture.errors import CaptureError, SlotError
from capture.event import format_lsn, parse_lsn
from hera_kit.text import first_line

WINDOW_BYTES = 16 * 1024 * 1024  # WAL read per query while looking for the first commit
BUDGET_S = 10.0  # give up (say unknown) rather than keep an operator waiting longer

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class SlotStatus:
    slot: str
    database: str
    active: bool
    active_pid: int | None
    confirmed_lsn: str
    current_lsn: str
    lag_bytes: int  # current WAL position minus the confirmed one
    lag_seconds: float | None  # age of the oldest unconfirmed commit; None: unknown
    wal_status: str | None
    plugin: str | None = None  # the slot's output plugin (wal2json or pgoutput)
    lag_source: str = ""  # how lag_seconds was found, or why it is unknown


def _walinspect(conn: Conn) -> tuple[sql.Composable | None, str]:
    """The pg_get_wal_records_info function to call, or why it cannot be."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pg_walinspect'").fetchone()
    if row is None:
        return None, ("unknown: needs the pg_walinspect extension in this database "
                      "(CREATE EXTENSION pg_walinspect, as a superuser)")
    fn = sql.SQL("{}.pg_get_wal_records_info").format(sql.Identifier(str(row[0])))
    allowed = conn.execute(
        "SELECT has_function_privilege(format('%%I.pg_get_wal_records_info(pg_lsn, pg_lsn)',"
        " %s::text), 'EXECUTE')", (str(row[0]),)).fetchone()
    if not (allowed and allowed[0]):
        return None, ("unknown: this role may not read WAL with pg_walinspect "
                      "(GRANT pg_read_server_files TO it, or ask a superuser)")
    return fn, "pg_walinspect"


def unconfirmed_commit_age(conn: Conn, confirmed: int) -> tuple[float | None, str]:
    """Seconds since the first commit after ``confirmed`` (0.0 when there is none), and how
    that was found; (None, why) when it cannot be known exactly."""
    fn, source = _walinspect(conn)
    if fn is None:
        return None, source
    query = sql.SQL(
        "SELECT w.last_end::text, extract(epoch FROM clock_timestamp() - w.ts::timestamptz)"
        "::float8 FROM (SELECT max(end_lsn) AS last_end,"
        " (array_agg(split_part(description, ';', 1) ORDER BY start_lsn) FILTER ("
        "   WHERE resource_manager = 'Transaction'"
        "   AND record_type IN ('COMMIT', 'COMMIT_PREPARED')))[1] AS ts"
        " FROM {}(%s::pg_lsn, %s::pg_lsn)) w").format(fn)
    conn.execute("SET TimeZone = 'UTC'")  # the records' timestamps print with their offset
    start, window = confirmed, WINDOW_BYTES
    deadline = time.monotonic() + BUDGET_S
    while True:
        row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        end = parse_lsn(str(row[0])) if row else start
        if start >= end:
            return 0.0, f"{source}: no commit after the confirmed LSN"
        stop = min(start + window, end)
        try:
            found = conn.execute(query, (format_lsn(start), format_lsn(stop))).fetchone()
        except psycopg.Error as exc:
            first = first_line(exc)
            return None, f"unknown: pg_walinspect failed at {format_lsn(start)}: {first}"
        if found is not None and found[1] is not None:
            return max(0.0, float(str(found[1]))), source
        if found is None or found[0] is None:
            # No record ends inside the window: one record is larger than it. Widen, so the
            # big record is read whole (it could be the commit) rather than stepped over.
            if stop >= end:
                return 0.0, f"{source}: no commit after the confirmed LSN"
            window *= 2
        else:
            # pg_walinspect returns the records that end by ``stop``; the next window starts
            # where the last of them ended, so a record straddling ``stop`` is read next.
            start, window = parse_lsn(str(found[0])), WINDOW_BYTES
        if time.monotonic() > deadline:
            return None, (f"unknown: no commit found in the {start - confirmed} bytes after "
                          f"the confirmed LSN within {BUDGET_S:.0f} s")


def slot_status(dsn: str, slot: str) -> SlotStatus:
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        first = first_line(exc)
        raise CaptureError(f"cannot connect to PostgreSQL: {first} (check --dsn)") from exc
    with conn:
        row = conn.execute(
            "SELECT s.database, s.active, s.active_pid, s.confirmed_flush_lsn::text,"
            " pg_current_wal_lsn()::text, s.wal_status, s.plugin"
            " FROM pg_replication_slots s WHERE s.slot_name = %s",
            (slot,),
        ).fetchone()
        if row is None:
            raise SlotError(
                f"no replication slot named {slot}: check --slot, or start capture run")
        confirmed = parse_lsn(str(row[3])) if row[3] is not None else 0
        current = parse_lsn(str(row[4]))
        if row[3] is None:
            lag, source = None, "unknown: the slot has no confirmed position"
        elif confirmed >= current:
            lag, source = 0.0, "no WAL after the confirmed position"
        else:
            lag, source = unconfirmed_commit_age(conn, confirmed)
    return SlotStatus(
        slot=slot, database=str(row[0]), active=bool(row[1]),
        active_pid=None if row[2] is None else int(str(row[2])),
        confirmed_lsn=format_lsn(confirmed), current_lsn=format_lsn(current),
        lag_bytes=current - confirmed, lag_seconds=lag,
        wal_status=None if row[5] is None else str(row[5]), lag_source=source,
        plugin=None if row[6] is None else str(row[6]),
    )
