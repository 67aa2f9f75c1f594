"""The archive's reach in time is a server time: PROGRESS markers' commit_ts (PostgreSQL's
commit time of the newest commit at or before their LSN) or archived commit times, never a
marker's ts (capture's clock, which runs ahead of the WAL it has read by capture's lag)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from capture.event import MarkerKind, StreamMarker
from capture.options import capture_options
from capture.position import StreamPosition
from capture.settings import CaptureSettings
from replay.coverage import epochs, resolve_point
from replay.errors import NotCovered
from replay.point import TimePoint
from replay.tables import TableId
from tests.replay_fixtures import History, memory_history, us

TABLE = TableId("public", "rel")
LAG = timedelta(minutes=10)


def _lagging(commit_ts: bool) -> tuple[History, int]:
    """One commit archived; a PROGRESS marker past it published ten minutes later by
    capture's clock, with (or, written before the member existed, without) its server time."""
    h = History()
    h.snapshot([{"id": "id-1", "n": 1}])
    _, lsn, at = h.commit([("u", {"id": "id-1", "n": 1}, {"id": "id-1", "n": 2})])
    h.markers.append(StreamMarker(
        status=MarkerKind.PROGRESS, slot=h.slot, db=h.db, epoch_lsn=h.epoch_lsn,
        lsn=lsn + 0x80, ts_ms=us(at + LAG) // 1000, tables=("public.rel",),
        commit_ts_us=us(at) + 5 if commit_ts else None))
    return h, lsn


def test_a_time_after_the_markers_server_time_is_beyond_the_archive_whatever_its_clock_says(
        ) -> None:
    h, lsn = _lagging(commit_ts=True)
    conn = memory_history(h)
    with pytest.raises(NotCovered, match="beyond the archive"):
        resolve_point(conn, TimePoint(h.clock + LAG / 2), TABLE)
    assert resolve_point(conn, TimePoint(h.clock + timedelta(microseconds=5)), TABLE) == lsn
    assert epochs(conn)[-1].reach_ts == h.clock + timedelta(microseconds=5)


def test_markers_without_a_server_time_fall_back_to_archived_commit_times_only() -> None:
    h, lsn = _lagging(commit_ts=False)
    conn = memory_history(h)
    with pytest.raises(NotCovered, match="beyond the archive"):
        resolve_point(conn, TimePoint(h.clock + timedelta(microseconds=1)), TABLE)
    assert resolve_point(conn, TimePoint(h.clock), TABLE) == lsn
    assert epochs(conn)[-1].reach_ts == h.clock


def test_a_time_before_the_snapshots_server_time_is_before_the_oldest_snapshot() -> None:
    h, _ = _lagging(commit_ts=True)
    start = h.markers[0]
    # Capture's clock was behind the server's: its marker says the snapshot started earlier.
    h.markers[0] = start.model_copy(update={"ts_ms": start.ts_ms - 60_000,
                                            "commit_ts_us": start.ts_ms * 1000})
    conn = memory_history(h)
    with pytest.raises(NotCovered, match="before the oldest snapshot"):
        resolve_point(conn, TimePoint(h.clock - timedelta(seconds=10, microseconds=1)), TABLE)
    assert resolve_point(conn, TimePoint(h.clock - timedelta(seconds=10)), TABLE) == h.epoch_lsn


def test_an_old_marker_without_commit_ts_still_parses() -> None:
    old = (b'{"schema_version":2,"status":"PROGRESS","slot":"s","db":"d","epoch_lsn":1,'
           b'"lsn":2,"ts_ms":3,"tables":[]}')
    assert StreamMarker.model_validate_json(old).commit_ts_us is None


def test_only_progress_markers_carry_the_server_time_and_it_never_goes_back() -> None:
    pos = StreamPosition(capture_options(CaptureSettings(dsn="x", bootstrap_servers="y")),
                         lambda: 1e9)
    assert pos.marker(MarkerKind.PROGRESS, 10).commit_ts_us is None
    pos.reached(2_000)
    pos.reached(1_999)  # a concurrent commit stamped a little earlier, later in the WAL
    assert pos.marker(MarkerKind.PROGRESS, 10).commit_ts_us == 2_000
    assert pos.marker(MarkerKind.SNAPSHOT_END, 10).commit_ts_us is None
