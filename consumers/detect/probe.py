"""The broker asked from a thread every few seconds: does it answer (readiness), and is it
still the cluster the state knows (the loop compares each new answer)?

A thread, because kafka-python's metadata calls wait without a timeout for a broker to come
back: the loop must not be the one that finds out the broker is down.
"""

from __future__ import annotations

import threading

from consumers.detect.metrics import DetectMetrics
from consumers.kafka_source import CheckedSource
from hera_kit.kafka_config import KafkaConfig
from hera_kit.kafka_probe import check_reachable
from hera_kit.service import Health

PROBE_S = 5.0


class Probe:
    """The broker's cluster id, asked from a thread every few seconds: whether the broker
    answers (readiness) and, when it does, whether it is still the same cluster."""

    def __init__(self, bootstrap: KafkaConfig | str, source: CheckedSource, stop: threading.Event,
                 health: Health, metrics: DetectMetrics) -> None:
        self._bootstrap = bootstrap
        self._source = source
        self._stop = stop
        self._health = health
        self._metrics = metrics
        self.cluster_id: str | None = None
        self.topics: frozenset[str] = frozenset()  # set by the loop: the topics it reads
        self.topic_ids: dict[str, str] = {}
        self.error: str | None = None
        self.answers = 0  # how many probes succeeded (the loop checks each new answer)
        self._thread = threading.Thread(target=self._run, daemon=True, name="detect-probe")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(PROBE_S):
            try:
                check_reachable(self._bootstrap, timeout_s=2.0)
                self.cluster_id = self._source.cluster_id(timeout_s=3.0)
                self.topic_ids = self._source.topic_ids(self.topics, timeout_s=3.0)
                self.error = None
                self.answers += 1
            except Exception as exc:  # any failure: the broker did not answer
                self.error = f"no Kafka broker answers at {self._bootstrap}: {exc}"
                # said here, not by the loop: a kafka-python metadata call of the loop may
                # wait for the broker to come back
                self._health.not_ready(self.error)
                self._metrics.broker_up.set(0)
