"""capture's hot-path tuning, without a broker: kafka-python wake-ups are coalesced but never
lost, and the garbage collector is tuned once streaming starts."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from capture.gc_tuning import GC_THRESHOLDS, tune_gc
from capture.publish import _CoalescedWakeup


def _counter() -> tuple[list[int], _CoalescedWakeup]:
    calls = [0]

    def wake() -> None:
        calls[0] += 1

    return calls, _CoalescedWakeup(wake, interval=3600.0)


def test_the_first_wakeup_goes_through_and_the_next_ones_within_the_interval_are_held() -> None:
    calls, wakeup = _counter()
    wakeup()
    wakeup()
    wakeup()
    assert calls[0] == 1 and wakeup.pending


def test_a_held_wakeup_is_sent_by_now_and_only_once() -> None:
    calls, wakeup = _counter()
    wakeup()
    wakeup()
    wakeup.now()
    wakeup.now()
    assert calls[0] == 2 and not wakeup.pending


def test_now_sends_nothing_when_no_wakeup_was_held() -> None:
    calls, wakeup = _counter()
    wakeup()
    wakeup.now()
    assert calls[0] == 1


def test_unthrottled_lets_the_next_wakeup_through_at_once_for_flush_and_close() -> None:
    calls, wakeup = _counter()
    wakeup()
    wakeup.unthrottled()
    wakeup()
    assert calls[0] == 2 and not wakeup.pending


@pytest.fixture
def gc_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("gc_restored")
def test_tune_gc_freezes_what_exists_and_raises_the_thresholds() -> None:
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == GC_THRESHOLDS
