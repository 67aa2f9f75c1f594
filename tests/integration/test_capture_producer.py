"""capture's confluent-kafka producer ends its client on close: a capture that reopens its
stream (broker outage, retry) must not pile up librdkafka instances, their threads and their
broker connections."""

from __future__ import annotations

import os
import time

from capture.kafka_admin import ensure_topics
from capture.publish import ConfluentProducer
from devstack.broker import Broker


def _threads() -> int:
    """librdkafka's threads of this process (named ``rdk:…``): counting every thread failed
    once in CI when a thread of an earlier test ended between the two counts."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm", encoding="utf-8") as f:
                count += f.read().startswith("rdk:")
        except FileNotFoundError:  # the thread ended while we listed
            continue
    return count


def test_a_closed_confluent_producer_leaves_no_client_threads(broker: Broker) -> None:
    topic = "producer_close.acked"
    ensure_topics(broker.bootstrap_servers, [topic])
    before = _threads()
    producer = ConfluentProducer(broker.bootstrap_servers)
    delivered: list[BaseException | None] = []
    producer.send(topic, b"k", b"v", delivered.append)
    assert _threads() > before  # librdkafka's own threads
    producer.close()
    assert delivered == [None]
    assert _threads() == before


def test_closing_with_a_record_the_broker_cannot_take_reports_it_and_returns(
        broker: Broker) -> None:
    before = _threads()
    producer = ConfluentProducer(broker.bootstrap_servers)
    delivered: list[BaseException | None] = []
    # a topic that does not exist and is never created: the record waits for it
    producer.send("producer_close.never_created", b"k", b"v", delivered.append)
    t0 = time.monotonic()
    producer.close(timeout=0.5)
    assert time.monotonic() - t0 < 10  # not the 30 s message timeout
    assert len(delivered) == 1 and isinstance(delivered[0], BaseException)
    assert _threads() == before
