"""What the slot costs the database, as metrics: lag in seconds, WAL it retains, and how
close that is to ``max_slot_wal_keep_size`` (past it PostgreSQL invalidates the slot and the
stream is lost). Read from PostgreSQL on a side connection, in the background: a scrape
answers at once with the last reading (taken at most ``interval_s`` before), never waits on
the database."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import psycopg
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from capture.event import parse_lsn
from capture.status import unconfirmed_commit_age
from hera_kit.text import first_line

log = logging.getLogger("hera.capture")
WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")
_QUERY = (
    "SELECT s.confirmed_flush_lsn::text, pg_current_wal_lsn()::text,"
    " (pg_current_wal_lsn() - s.restart_lsn)::bigint, s.safe_wal_size, s.wal_status,"
    " current_setting('max_slot_wal_keep_size')"
    " FROM pg_replication_slots s WHERE s.slot_name = %s")


def _size_bytes(setting: str) -> int:
    """max_slot_wal_keep_size as SHOW prints it ('-1', '1024MB', '10GB') in bytes."""
    units = {"kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}
    for unit, factor in units.items():
        if setting.endswith(unit):
            return int(setting[:-len(unit)]) * factor
    return int(setting) * 1024 ** 2 if setting != "-1" else -1


class SlotCollector(Collector):
    def __init__(self, dsn: str, slot: str, interval_s: float = 10.0) -> None:
        self.dsn, self.slot, self.interval_s = dsn, slot, interval_s
        self._values: dict[str, float] = {}
        self._wal_status: str | None = None
        self._taken = 0.0
        self._refreshing = threading.Lock()

    def refresh(self) -> None:
        """One reading (a side connection; the walinspect lookup is bounded by
        capture.status's budget)."""
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(_QUERY, (self.slot,)).fetchone()
                if row is None:
                    self._values, self._wal_status = {}, None
                    return
                confirmed = parse_lsn(str(row[0])) if row[0] is not None else None
                current = parse_lsn(str(row[1]))
                if confirmed is None:
                    lag: float | None = None
                elif confirmed >= current:
                    lag = 0.0
                else:
                    lag, _ = unconfirmed_commit_age(conn, confirmed)
            values = {"retained": float(str(row[2])) if row[2] is not None else float("nan"),
                      "max": float(_size_bytes(str(row[5]))),
                      "lag_seconds": float("nan") if lag is None else lag}
            if row[3] is not None:
                values["safe"] = float(str(row[3]))
            self._values, self._wal_status = values, None if row[4] is None else str(row[4])
        except (psycopg.Error, ValueError) as exc:
            log.warning("slot metrics not read", extra={"error": first_line(exc)})
        finally:
            self._taken = time.monotonic()

    def _refresh_in_background(self) -> None:
        if not self._refreshing.acquire(blocking=False):
            return

        def run() -> None:
            try:
                self.refresh()
            finally:
                self._refreshing.release()
        threading.Thread(target=run, daemon=True, name="slot-metrics").start()

    def collect(self) -> Iterator[Metric]:
        if time.monotonic() - self._taken >= self.interval_s:
            self._refresh_in_background()
        v = self._values
        if not v:
            return
        yield GaugeMetricFamily(
            "hera_capture_slot_lag_seconds", "Age of the oldest commit the slot has not "
            "confirmed (NaN: unknown, pg_walinspect missing or not readable)",
            value=v["lag_seconds"])
        yield GaugeMetricFamily(
            "hera_capture_slot_retained_wal_bytes",
            "WAL the slot keeps on the server (current LSN minus restart_lsn)",
            value=v["retained"])
        yield GaugeMetricFamily(
            "hera_capture_max_slot_wal_keep_bytes",
            "The server's max_slot_wal_keep_size in bytes (-1: unlimited)", value=v["max"])
        if "safe" in v:
            yield GaugeMetricFamily(
                "hera_capture_slot_safe_wal_bytes",
                "WAL that can still be written before the slot is invalidated (safe_wal_size)",
                value=v["safe"])
        status = GaugeMetricFamily(
            "hera_capture_slot_wal_status",
            "1 for the slot's wal_status (reserved, extended, unreserved, lost)",
            labels=["status"])
        for name in WAL_STATUSES:
            status.add_metric([name], 1.0 if self._wal_status == name else 0.0)
        yield status
