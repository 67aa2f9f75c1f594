"""The services' JSON logs leave out kafka-python's slow-step diagnostic (on a busy host it
fires for any descheduled step and turned a refusal's one line into two), nothing else."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from hera_kit.logs import quiet_slow_step_notes


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def selector_log() -> Iterator[_Keep]:
    logger = logging.getLogger("kafka.net.selector")
    keep = _Keep()
    filters = list(logger.filters)
    logger.addHandler(keep)
    try:
        yield keep
    finally:
        logger.removeHandler(keep)
        logger.filters[:] = filters


def test_the_slow_step_diagnostic_is_left_out_and_other_kafka_warnings_stay(
        selector_log: _Keep) -> None:
    quiet_slow_step_notes()
    quiet_slow_step_notes()  # idempotent: every service start may call it
    logger = logging.getLogger("kafka.net.selector")
    logger.warning("Task <kafka.net.selector.Task object at 0x7f> ran for 0.177s (>0.100s "
                   "threshold). It is blocking the event loop -- likely a tight sync loop "
                   "inside a coroutine. Other pollers will time out.")
    logger.warning("Wakeup socket returned empty. Rebuilding.")
    assert selector_log.messages == ["Wakeup socket returned empty. Rebuilding."]
    assert len(logger.filters) == 1
