"""``capture status``: where the slot is and how far behind, read from PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from capture.errors import CaptureError, SlotError
from capture.event import format_lsn, parse_lsn


@dataclass(frozen=True)
class SlotStatus:
    slot: str
    database: str
    active: bool
    active_pid: int | None
    confirmed_lsn: str
    current_lsn: str
    lag_bytes: int
    lag_seconds: float | None  # from pg_stat_replication while active; None when unknown
    wal_status: str | None
    plugin: str | None = None  # the slot's output plugin (wal2json or pgoutput)


def slot_status(dsn: str, slot: str) -> SlotStatus:
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaptureError(f"cannot connect to PostgreSQL: {first} (check --dsn)") from exc
    with conn:
        row = conn.execute(
            "SELECT s.database, s.active, s.active_pid, s.confirmed_flush_lsn::text,"
            " pg_current_wal_lsn()::text, s.wal_status,"
            " extract(epoch FROM r.flush_lag)::float8, s.plugin"
            " FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid"
            " WHERE s.slot_name = %s",
            (slot,),
        ).fetchone()
    if row is None:
        raise SlotError(f"no replication slot named {slot}: check --slot, or start capture run")
    confirmed = parse_lsn(str(row[3])) if row[3] is not None else 0
    current = parse_lsn(str(row[4]))
    return SlotStatus(
        slot=slot, database=str(row[0]), active=bool(row[1]),
        active_pid=None if row[2] is None else int(str(row[2])),
        confirmed_lsn=format_lsn(confirmed), current_lsn=format_lsn(current),
        lag_bytes=max(0, current - confirmed),
        lag_seconds=None if row[6] is None else float(str(row[6])),
        wal_status=None if row[5] is None else str(row[5]),
        plugin=None if row[7] is None else str(row[7]),
    )
