"""The operator's side of online re-reads: ``capture resnapshot`` records a request,
``capture status`` lists them (``reread_report``).

The request is a transactional logical message (``hera.reread``) in the captured database's
WAL, so the capture streaming that slot sees it in order wherever it runs, a capture that is
down sees it when it resumes, and nothing but PostgreSQL has to be reachable to ask.
Checked first, each refused in one line: the slot exists in this database, the table
exists and has a primary key (chunks are read by key).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import psycopg
from psycopg import sql

from capture.errors import CaptureError, PreflightError
from capture.event import format_lsn
from capture.ledger import last_marker
from capture.reread import RereadState, eta_seconds, request_reread
from capture.slot import table_info
from hera_kit.text import first_line


def record_request(dsn: str, slot: str, table: str, reason: str) -> str:
    """The LSN of the committed request."""
    if table.count(".") != 1:
        raise PreflightError(f"--table {table!r}: name it as schema.table")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s "
                "AND database = current_database()", (slot,)).fetchone()
            if found is None:
                raise PreflightError(f"no replication slot {slot} in this database: a re-read "
                                     "is done by a running capture run --slot " + slot)
            table_info(conn, table)  # missing table, no primary key: one line each
    except psycopg.OperationalError as exc:
        raise CaptureError(f"cannot connect to PostgreSQL: {first_line(exc)} "
                           "(check --dsn)") from exc
    return request_reread(dsn, table, reason, slot)


@dataclass(frozen=True)
class RereadRow:
    """One re-read as ``capture status`` lists it."""

    table: str
    reason: str
    state: str  # queued | running | finished
    chunks: int
    rows: int
    superseded: int  # chunk rows the stream's newer version replaced
    started: str
    finished: str | None
    exact_from: str | None  # the commit from which replay is exact again
    eta_s: float | None


def reread_report(dsn: str, bootstrap_servers: str, prefix: str, slot: str,
                  clock: Callable[[], float] = time.time) -> list[RereadRow]:
    """The re-reads as of the newest PROGRESS marker of ``slot`` (what capture confirmed)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            db = str((conn.execute("SELECT current_database()").fetchone() or [""])[0])
            marker = last_marker(bootstrap_servers, prefix, slot, db)
            states = [msgspec.convert(r, RereadState) for r in (marker.rereads or ())] \
                if marker is not None else []
            estimates = {s.table: _estimate(conn, s.table) for s in states if not s.finished}
    except psycopg.OperationalError as exc:
        raise CaptureError(f"cannot connect to PostgreSQL: {first_line(exc)} "
                           "(check --dsn)") from exc
    now_ms = int(clock() * 1000)
    return [RereadRow(
        table=s.table, reason=s.reason,
        state="finished" if s.finished else ("running" if s.chunks else "queued"),
        chunks=s.chunks, rows=s.rows, superseded=s.dropped, started=_iso(s.started_ms),
        finished=None if s.done_ms is None else _iso(s.done_ms),
        exact_from=None if s.done_lsn is None else format_lsn(s.done_lsn),
        eta_s=eta_seconds(s, estimates.get(s.table), now_ms)) for s in states]


def _estimate(conn: psycopg.Connection[tuple[object, ...]], table: str) -> float | None:
    row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
                       (sql.Identifier(*table.split(".", 1)).as_string(conn),)).fetchone()
    return None if row is None or row[0] is None or float(str(row[0])) < 0 \
        else float(str(row[0]))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
