"""A partition deleted between two questions to the broker (a topic deleted and re-created
under a running consumer) is one the broker does not have: the consumers' offset questions
leave it out and the stream check refuses in one line, never a ``KeyError`` traceback.

The fake consumer answers as kafka-python 3.0 does for such a partition: its ListOffsets
request is dropped (the topic has no leader any more) and ``beginning_offsets`` /
``end_offsets`` raise ``KeyError(TopicPartition)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kafka
import pytest
from kafka import TopicPartition

from consumers import kafka_source
from consumers.archive.identity_check import check_stream
from consumers.archive.layout import IdentityMismatchError
from consumers.detect.errors import StreamMismatch
from consumers.detect.stream_check import detector_check
from consumers.kafka_facts import fetch_watermarks
from consumers.kafka_source import KafkaSource
from hera_kit.identity import StreamIdentity

TXN, REL = "hera.transactions", "hera.public.core_relationships"
ENDS = {TopicPartition(TXN, 0): 40, TopicPartition(REL, 0): 300}
GONE = TopicPartition(REL, 0)  # deleted after the consumer's metadata named it


class VanishedConsumer:
    """kafka-python's KafkaConsumer after GONE's topic was deleted."""

    def __init__(self, **_config: Any) -> None:
        self.assigned: list[TopicPartition] = []

    def _offsets(self, tps: list[TopicPartition], start: bool) -> dict[TopicPartition, int]:
        found = {tp: 0 if start else ENDS[tp] for tp in tps if tp != GONE}
        return {tp: found[tp] for tp in tps}  # KeyError(GONE), as kafka-python raises it

    def beginning_offsets(self, tps: list[TopicPartition], timeout_ms: Any = None,
                          ) -> dict[TopicPartition, int]:
        return self._offsets(tps, True)

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: Any = None,
                    ) -> dict[TopicPartition, int]:
        return self._offsets(tps, False)

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    def poll(self, **_kw: Any) -> dict[TopicPartition, list[Any]]:
        return {}

    def highwater(self, tp: TopicPartition) -> int | None:
        return None if tp == GONE else ENDS[tp]

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return None if topic == GONE.topic else {0}

    def close(self) -> None:
        pass


@pytest.fixture
def vanished(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka, "KafkaConsumer", VanishedConsumer)
    monkeypatch.setattr(kafka_source, "KafkaConsumer", VanishedConsumer)


@pytest.mark.usefixtures("vanished")
def test_watermarks_leave_out_a_partition_deleted_since_the_metadata_named_it() -> None:
    assert fetch_watermarks("broker:9092", [(TXN, 0), (REL, 0)]) == {(TXN, 0): (0, 40)}


@pytest.mark.usefixtures("vanished")
def test_a_detector_whose_partition_vanished_at_start_refuses_in_one_line() -> None:
    check = detector_check(Path("/srv/state/detect.sqlite"),
                           StreamIdentity(topic_prefix="hera"))
    with pytest.raises(StreamMismatch) as raised:
        check.stored_offsets({(TXN, 0): 40, (REL, 0): 300},
                             fetch_watermarks("broker:9092", [(TXN, 0), (REL, 0)]))
    assert str(raised.value).startswith(f"stream changed: {REL}[0] does not exist on the "
                                        "broker")
    assert "\n" not in str(raised.value)


@pytest.mark.usefixtures("vanished")
def test_a_sources_start_and_end_offsets_leave_out_a_vanished_partition() -> None:
    source = KafkaSource("broker:9092", "hera", None)
    assert source.end_offsets([(TXN, 0), (REL, 0)]) == {(TXN, 0): 40}
    assert source.start_offsets([(TXN, 0), (REL, 0)]) == {(TXN, 0): 0}


@pytest.mark.usefixtures("vanished")
def test_an_archiver_whose_partition_vanished_after_the_partition_list_refuses_in_one_line(
        ) -> None:
    source = KafkaSource("broker:9092", "hera", None)
    source.partitions = lambda: {(TXN, 0), (REL, 0)}  # type: ignore[method-assign]
    source.cluster_id = lambda timeout_s=15.0: None  # type: ignore[method-assign]
    with pytest.raises(IdentityMismatchError) as raised:
        check_stream(source, None, {(TXN, 0): 40, (REL, 0): 300})
    assert f"the broker has no partition {REL}[0]" in str(raised.value)
    assert "\n" not in str(raised.value)
