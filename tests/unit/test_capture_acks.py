"""The confirmed LSN moves only past a fully acknowledged prefix of transactions."""

from __future__ import annotations

import pytest

from capture.errors import BrokerError
from capture.protocol import Keepalive, XLogData, encode_status, parse_frame
from capture.publish import AckTracker


def test_confirm_waits_for_every_earlier_transaction() -> None:
    t = AckTracker()
    first, second = t.open(), t.open()
    first_a, first_b, second_a = t.sent(first, 10), t.sent(first, 10), t.sent(second, 5)
    t.close(first, 100)
    t.close(second, 200)
    second_a(None)
    t.drain()
    assert t.confirmable() is None  # the later one is acked, the earlier one is not
    assert (t.outstanding, t.outstanding_bytes) == (2, 20)
    first_a(None)
    first_b(None)
    t.drain()
    assert t.confirmable() == 200
    assert t.idle
    assert (t.outstanding, t.outstanding_bytes) == (0, 0)


def test_open_transaction_is_never_confirmed_even_when_acked() -> None:
    t = AckTracker()
    txn = t.open()
    t.sent(txn, 1)(None)
    t.drain()
    assert t.confirmable() is None
    assert not t.idle


def test_failed_delivery_raises_broker_error() -> None:
    t = AckTracker()
    txn = t.open()
    t.sent(txn, 1)(RuntimeError("broker gone"))
    with pytest.raises(BrokerError, match="broker gone"):
        t.drain()


def test_replication_frames_parse_and_status_encodes() -> None:
    w = b"w" + (5).to_bytes(8, "big") + (9).to_bytes(8, "big") + (0).to_bytes(8, "big") + b"{}"
    assert parse_frame(w) == XLogData(5, 9, b"{}")
    k = b"k" + (77).to_bytes(8, "big") + (0).to_bytes(8, "big") + b"\x01"
    assert parse_frame(k) == Keepalive(77, True)
    status = encode_status(0x16B3748, 946_684_800_000_000)
    assert status[:1] == b"r" and int.from_bytes(status[9:17], "big") == 0x16B3748
    assert int.from_bytes(status[25:33], "big") == 0  # PostgreSQL's epoch is 2000-01-01


def test_wait_for_acknowledgement_counts_from_the_last_ack_and_ends_when_none_wait() -> None:
    import time

    t = AckTracker()
    txn = t.open()
    first, _second = t.sent(txn, 1), t.sent(txn, 1)
    now = time.monotonic()
    assert t.unacknowledged_for(now + 10) >= 10  # records wait, nothing acknowledged
    first(None)
    t.drain()
    assert t.unacknowledged_for(time.monotonic()) < 1  # an ack arrived: the wait restarts
    _second(None)
    t.drain()
    assert t.unacknowledged_for(time.monotonic() + 60) == 0  # nothing waits


def test_readiness_probe_makes_a_ready_capture_not_ready_and_the_gauge_follows() -> None:
    from capture.metrics import CaptureMetrics

    m = CaptureMetrics()
    m.health.ready()
    reason: list[str | None] = [None]
    m.health.watch(lambda: reason[0])
    assert m.health.state() == (True, "ok")
    assert m.registry.get_sample_value("hera_capture_ready") == 1
    reason[0] = "the broker has acknowledged nothing for 6 s"
    assert m.health.state() == (False, reason[0])
    assert m.registry.get_sample_value("hera_capture_ready") == 0
    m.health.watch(None)
    assert m.health.state() == (True, "ok")
