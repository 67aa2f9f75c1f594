"""Capture's topics stay the ones it created: a topic deleted (or re-created by something
else) under a running capture is seen within seconds, not at the producer's next metadata
refresh, by when the broker may have auto-created it with its own defaults (tansu: 4
partitions, whatever the producer asks; Apache Kafka: num.partitions).

A background thread describes capture's topics every ``interval_s`` and compares each with
what capture created: present, the same topic id. A difference is a ``fault``; the producer
capture streams with (``WatchedProducer``) raises it as a BrokerError at its next poll, so
the stream restarts as after any broker fault: capture re-creates what is missing with its
own partitions and limits (kafka_admin.ensure_topics, which also refuses a topic with
another partition count) and resumes from the confirmed position. Why re-create rather than
stop: the stream's records go on to a topic with capture's guarantees (one partition: commit
order), as after a broker that lost its data; the consumers see the new topic id and stop
with their way out (the history the deleted topic held is gone, which a new snapshot,
``capture run --new-snapshot``, gives them back).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from capture.errors import BrokerError
from hera_kit.kafka_config import KafkaConfig, as_config

log = logging.getLogger("hera.capture")


def describe_topics(kafka: KafkaConfig | str, names: list[str],
                    timeout_s: float = 5.0) -> dict[str, str | None]:
    """topic -> its topic id ("" when the broker gives none), None when it does not exist.
    Describe, not metadata: a metadata request may auto-create the topic it names."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    config = as_config(kafka)
    try:
        admin = KafkaAdminClient(**config.kafka_python(), client_id="hera-guard-topic-watch",
                                 request_timeout_ms=int(timeout_s * 1000),
                                 bootstrap_timeout_ms=int(timeout_s * 1000))
    except KafkaError as exc:
        raise BrokerError.unreachable(config.bootstrap_servers, exc) from exc
    try:
        described: list[dict[str, Any]] = admin.describe_topics(names)
    except KafkaError as exc:
        raise BrokerError.unreachable(config.bootstrap_servers, exc) from exc
    finally:
        admin.close()
    out: dict[str, str | None] = dict.fromkeys(names)
    for t in described:
        if t.get("error_code", 0) == 0 and t.get("partitions"):
            out[str(t["name"])] = str(t.get("topic_id") or "")
    return out


class TopicWatch:
    def __init__(self, kafka: KafkaConfig | str, topics: list[str], interval_s: float = 2.0,
                 describe: Callable[[KafkaConfig | str, list[str]], dict[str, str | None]]
                 = describe_topics) -> None:
        self._bootstrap = kafka
        self._topics = sorted(topics)
        self._interval = interval_s
        self._describe = describe
        self._known: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fault: str | None = None

    def reset(self) -> None:
        """After capture (re)created its topics: these are the ones to keep."""
        self._known = self._describe(self._bootstrap, self._topics)
        self.fault = None

    def check(self) -> str | None:
        """One look: the first topic gone or re-created since ``reset``, as a sentence."""
        try:
            seen = self._describe(self._bootstrap, self._topics)
        except BrokerError:
            return None  # a broker that is down: the producer's own errors say so
        for topic in self._topics:
            known, now = self._known.get(topic), seen.get(topic)
            if known is None:
                continue  # not there at reset: nothing to compare with
            if now is None:
                return (f"topic {topic} was deleted under capture: capture re-creates it with "
                        "its own settings and resumes from its confirmed position (the "
                        "consumers stop on the new topic; capture run --new-snapshot gives "
                        "them a full history again)")
            if known and now and known != now:
                return (f"topic {topic} was re-created under capture (topic id {now}, "
                        f"capture created {known})")
        return None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="topic-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self.fault is None:
                fault = self.check()
                if fault is not None:
                    log.warning(fault)
                    self.fault = fault


class WatchedProducer:
    """capture.publish.Producer that raises the watch's fault at its next poll (once a burst
    in the stream loop), so the stream restarts and capture restores its topics."""

    def __init__(self, inner: Any, watch: TopicWatch) -> None:
        self._inner = inner
        self._watch = watch

    def send(self, topic: str, key: bytes | None, value: bytes,
             on_delivery: Callable[[BaseException | None], None]) -> None:
        self._inner.send(topic, key, value, on_delivery)

    def poll(self, timeout: float) -> None:
        fault = self._watch.fault
        if fault is not None:
            raise BrokerError(fault)
        self._inner.poll(timeout)

    def flush(self, timeout: float) -> None:
        self._inner.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._inner.close(timeout)
