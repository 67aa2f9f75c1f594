"""Parsing and resolving the user's point: time with zone, LSN, just before transaction N."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from capture.event import format_lsn
from replay.coverage import Base, check_coverage, resolve_point
from replay.errors import BadPoint, NotCovered, UnknownTransaction
from replay.point import BeforeXid, LsnPoint, TimePoint, choose_point, parse_until
from replay.tables import TableId
from tests.replay_fixtures import History, memory_history

TABLE = TableId("public", "rel")


def r(i: int) -> dict[str, object]:
    return {"id": f"id-{i}", "n": i}


def test_an_lsn_is_parsed_in_postgres_spelling() -> None:
    assert parse_until("0/16B3748") == LsnPoint(0x16B3748)
    assert parse_until("1/0") == LsnPoint(1 << 32)


def test_a_time_with_zone_is_accepted_in_iso_form() -> None:
    assert parse_until("2025-03-01T12:00:00Z") == TimePoint(datetime(2025, 3, 1, 12, tzinfo=UTC))
    p = parse_until("2025-03-01 14:00:00+02:00")
    assert isinstance(p, TimePoint) and p.at == datetime(2025, 3, 1, 12, tzinfo=UTC)


def test_a_time_without_zone_is_refused_with_a_hint() -> None:
    with pytest.raises(BadPoint, match="has no zone"):
        parse_until("2025-03-01T12:00:00")


def test_garbage_is_refused_naming_both_forms() -> None:
    with pytest.raises(BadPoint, match="0/16B3748"):
        parse_until("yesterday")


def test_exactly_one_of_until_and_before_xid_is_required() -> None:
    with pytest.raises(BadPoint):
        choose_point(None, None)
    with pytest.raises(BadPoint):
        choose_point("0/1", 5)
    assert choose_point(None, 5) == BeforeXid(5)


def history() -> History:
    h = History()
    h.snapshot([r(1)])
    return h


def test_before_xid_is_just_before_that_transactions_commit() -> None:
    h = history()
    h.commit([("c", None, r(2))])
    xid, lsn, _ = h.commit([("c", None, r(3))])
    assert resolve_point(memory_history(h), BeforeXid(xid), TABLE) == lsn - 1


def test_an_unknown_xid_is_refused() -> None:
    h = history()
    h.commit([("c", None, r(2))])
    with pytest.raises(UnknownTransaction, match="not in the archive"):
        resolve_point(memory_history(h), BeforeXid(12345), TABLE)


def test_a_time_resolves_to_the_last_commit_at_or_before_it() -> None:
    h = history()
    _, l1, t1 = h.commit([("c", None, r(2))])
    _, _, t2 = h.commit([("c", None, r(3))])
    conn = memory_history(h)
    assert resolve_point(conn, TimePoint(t1), TABLE) == l1
    assert resolve_point(conn, TimePoint(t2 - timedelta(microseconds=1)), TABLE) == l1
    assert resolve_point(conn, TimePoint(t1 - timedelta(seconds=1)), TABLE) == h.epoch_lsn


def test_a_time_before_the_oldest_snapshot_is_refused() -> None:
    h = history()
    h.commit([("c", None, r(2))])
    with pytest.raises(NotCovered, match="before the oldest snapshot"):
        resolve_point(memory_history(h), TimePoint(h.clock - timedelta(days=1)), TABLE)


def test_a_time_beyond_what_the_archive_saw_is_refused() -> None:
    h = history()
    h.commit([("c", None, r(2))])
    with pytest.raises(NotCovered, match="beyond the archive"):
        resolve_point(memory_history(h), TimePoint(h.clock + timedelta(hours=1)), TABLE)


def test_a_point_covered_by_progress_is_answerable() -> None:
    h = history()
    _, lsn, _ = h.commit([("c", None, r(2))])
    h.progress(lsn + 0x500)
    assert check_coverage(memory_history(h), lsn + 0x400, TABLE).upto_lsn == lsn + 0x400


def test_a_point_past_the_archive_is_refused_as_behind_not_as_a_gap() -> None:
    h = history()
    _, lsn, _ = h.commit([("c", None, r(2))])
    with pytest.raises(NotCovered, match=r"the archive is behind: archived up to 0/2000") as e:
        check_coverage(memory_history(h), lsn + 1, TABLE)
    assert "gap" not in str(e.value)


def test_a_point_before_the_oldest_snapshot_is_refused() -> None:
    h = history()
    with pytest.raises(NotCovered, match="before the oldest snapshot at 0/1000"):
        check_coverage(memory_history(h), 0x500, TABLE)


def test_a_point_in_the_gap_between_two_epochs_is_refused_naming_the_gap() -> None:
    old = history()
    old.commit([("c", None, r(2))])
    new = History(epoch_lsn=0x9000, next_lsn=0xA000, slot="slot2")
    new.snapshot([r(1), r(2), r(3)])
    conn = memory_history(old, new)
    with pytest.raises(NotCovered, match="gap from 0/2000 to 0/9000"):
        check_coverage(conn, 0x5000, TABLE)
    assert check_coverage(conn, 0x9000, TABLE).epoch is not None


def test_a_transaction_with_missing_events_before_later_archived_ones_is_a_gap() -> None:
    h = history()
    _, lsn, _ = h.commit([("c", None, r(2)), ("c", None, r(3))])
    h.events.pop()  # lose one archived event of the transaction
    _, later, _ = h.commit([("c", None, r(4))])
    conn = memory_history(h)
    with pytest.raises(NotCovered, match=r"gap at 0/2000: .*has 1 of 2 events.*re-archive "
                                         r"from Kafka"):
        check_coverage(conn, later, TABLE)
    assert check_coverage(conn, lsn - 1, TABLE).upto_lsn == lsn - 1


def test_an_archive_ending_mid_transaction_is_behind_not_a_gap() -> None:
    h = history()
    _, first_lsn, _ = h.commit([("c", None, r(2))])
    _, lsn, _ = h.commit([("c", None, r(3)), ("c", None, r(4))])
    h.events.pop()  # the archiver has written the END record, not yet the last event
    with pytest.raises(NotCovered, match=f"the archive is behind: archived up to "
                                         f"{format_lsn(first_lsn)}; transaction 701 at 0/2100 "
                                         "has 1 of 2 events") as e:
        check_coverage(memory_history(h), lsn, TABLE)
    assert "gap" not in str(e.value)
    h.ends.pop()  # nor the END record yet
    with pytest.raises(NotCovered, match=f"the archive is behind: archived up to "
                                         f"{format_lsn(first_lsn)}") as e:
        check_coverage(memory_history(h), lsn, TABLE)
    assert "gap" not in str(e.value)


def test_a_base_snapshot_answers_its_own_lsn_without_the_archive() -> None:
    conn = memory_history(History())
    assert check_coverage(conn, 0x5000, TABLE, Base(0x5000)).epoch is None
    with pytest.raises(NotCovered, match="before the base snapshot"):
        check_coverage(conn, 0x4000, TABLE, Base(0x5000))


def _two_epochs() -> tuple[History, History]:
    old = history()
    old.commit([("c", None, r(2))])
    old.progress(0x2100)
    new = History(epoch_lsn=0x9000, next_lsn=0xA000, slot="slot", next_xid=900,
                  clock=old.clock + timedelta(hours=1))
    new.snapshot([r(1), r(2), r(3)])
    new.commit([("c", None, r(4))])
    return old, new


def test_every_point_kind_inside_a_gap_between_epochs_is_refused_naming_the_gap() -> None:
    old, new = _two_epochs()
    conn = memory_history(old, new)
    inside = old.clock + timedelta(minutes=30)
    # Also the time of the old epoch's last PROGRESS marker, after its last commit: capture's
    # clock when it published, which trails the WAL by its lag.
    tail = old.clock + timedelta(milliseconds=1)
    for point in (TimePoint(inside), LsnPoint(0x5000), BeforeXid(800), TimePoint(tail)):
        with pytest.raises((NotCovered, UnknownTransaction), match="gap from 0/2100 to 0/9000"):
            check_coverage(conn, resolve_point(conn, point, TABLE), TABLE)
    # Either side: the old epoch's last moment and the new snapshot answer.
    assert resolve_point(conn, TimePoint(old.clock), TABLE) == 0x2000
    assert resolve_point(conn, TimePoint(new.clock - timedelta(seconds=5)), TABLE) == 0x9000


def test_a_new_epoch_after_a_gap_is_logged_once_naming_where_the_old_one_ended(
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from consumers.epochs import EpochWatch

    old, new = _two_epochs()
    watch = EpochWatch(logging.getLogger("test.epochs"), None)
    with caplog.at_level(logging.WARNING, "test.epochs"):
        for m in [*old.markers, *new.markers, new.markers[0]]:  # a re-delivered START too
            watch.seen(m)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "new snapshot at 0/9000" in lines[0] and "progress at 0/2100" in lines[0]


def test_a_gap_across_an_interrupted_snapshot_names_the_next_epoch_that_can_answer() -> None:
    from capture.event import MarkerKind, StreamMarker

    old, new = _two_epochs()
    cut = old.clock + timedelta(minutes=10)
    old.markers.append(StreamMarker(status=MarkerKind.SNAPSHOT_START, slot="slot", db="db",
                                    epoch_lsn=0x5000, lsn=0x5000,
                                    ts_ms=int(cut.timestamp() * 1000), tables=("public.rel",)))
    conn = memory_history(old, new)
    for point in (TimePoint(cut + timedelta(minutes=5)), LsnPoint(0x6000)):
        with pytest.raises(NotCovered, match="gap from 0/2100 to 0/9000"):
            check_coverage(conn, resolve_point(conn, point, TABLE), TABLE)


def test_a_base_snapshot_inside_a_gap_answers_its_own_moment_and_no_later_one() -> None:
    old, new = _two_epochs()
    conn = memory_history(old, new)
    taken = old.clock + timedelta(minutes=20)
    base = Base(0x4000, taken)
    assert resolve_point(conn, TimePoint(taken), TABLE, base) == 0x4000
    with pytest.raises(NotCovered, match="gap from 0/2100 to 0/9000"):
        resolve_point(conn, TimePoint(taken + timedelta(minutes=1)), TABLE, base)
