"""Small parts of the fault handling, without services: the bounded dead-letter reference,
capture's topic watch, native stderr lines as one log line each."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from capture.errors import BrokerError
from capture.topic_watch import TopicWatch, WatchedProducer
from consumers.deadletter import HEAD_BYTES, MAX_LETTER_BYTES, DeadLetter
from consumers.kafka_source import Record
from hera_kit.kafka_config import KafkaConfig
from hera_kit.native_stderr import _line

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_small_bad_record_is_dead_lettered_whole_and_a_huge_one_as_a_bounded_reference(
) -> None:
    small = DeadLetter.of(Record("t", 0, 5, b"k", b"junk"), "bad", "archive", NOW)
    assert not small.is_reference and small.original_value() == b"junk"
    huge_value = b"y" * (5 * 1024 * 1024)
    ref = DeadLetter.of(Record("t", 2, 7, b"k" * 2_000_000, huge_value), "bad", "detect", NOW)
    assert ref.is_reference and len(ref.to_json()) < MAX_LETTER_BYTES
    assert (ref.topic, ref.partition, ref.offset) == ("t", 2, 7)
    assert (ref.key_size, ref.value_size) == (2_000_000, len(huge_value))
    assert ref.value_b64 is None and ref.key_b64 is None and ref.value_head_b64
    assert ref.kafka_key(b"k" * 2_000_000) is None and small.kafka_key(b"k") == b"k"
    assert ref.reason.startswith("bad; a record of ") and str(HEAD_BYTES) in ref.reason


class _Broker:
    def __init__(self) -> None:
        self.topics: dict[str, str | None] = {"p.a": "id-1", "p.b": "id-2"}

    def describe(self, _bootstrap: KafkaConfig | str, names: list[str]
                 ) -> dict[str, str | None]:
        return {n: self.topics.get(n) for n in names}


def test_the_topic_watch_names_a_deleted_or_recreated_topic_and_the_producer_raises_it(
) -> None:
    broker = _Broker()
    watch = TopicWatch("b:1", ["p.a", "p.b"], describe=broker.describe)
    watch.reset()
    assert watch.check() is None
    broker.topics["p.b"] = None
    assert "topic p.b was deleted under capture" in (watch.check() or "")
    broker.topics["p.b"] = "id-3"
    assert "topic p.b was re-created under capture (topic id id-3" in (watch.check() or "")

    class _Inner:
        polls = 0

        def poll(self, timeout: float) -> None:
            self.polls += 1

    inner = _Inner()
    producer = WatchedProducer(inner, watch)
    producer.poll(0)
    watch.fault = "topic p.b was deleted under capture"
    with pytest.raises(BrokerError, match=r"p\.b was deleted"):
        producer.poll(0)
    assert inner.polls == 1
    watch.reset()
    assert watch.fault is None


def test_a_rust_panic_on_stderr_becomes_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.native")
    lines = ["", "thread 'tokio-rt-worker' (31680) panicked at /x/buffered.rs:369:41:",
             "Already shut down", "stack backtrace:", "   0: something", "      at /y.rs:1",
             "note: Some details are omitted", "plain native line"]
    panic = None
    with caplog.at_level(logging.WARNING, logger="test.native"):
        for line in lines:
            panic = _line(log, panic, line)
    assert panic is None
    assert [r.getMessage() for r in caplog.records] == [
        "native code panicked (thread tokio-rt-worker at /x/buffered.rs:369:41): "
        "Already shut down", "native library: plain native line"]
