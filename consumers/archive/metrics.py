"""Prometheus metrics of ``consumers archive`` (served by hera_kit.service.ServiceEndpoint)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from consumers.archive.archiver import ArchiverStats
from consumers.archive.store import ArchiveStore


class ArchiveMetrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._clock = clock
        self.records = Counter("hera_archive_records_consumed", "Kafka records consumed",
                               registry=r)
        self.batches = Counter("hera_archive_batches_committed",
                               "Delta commits of archiver batches", registry=r)
        self.dead_letters = Counter("hera_archive_dead_letters",
                                    "records sent to the dead-letter topic", registry=r)
        self.identity_failed = Counter("hera_archive_identity_checks_failed",
                                       "stream identity checks that failed", registry=r)
        self.store_failures = Counter("hera_archive_store_failures",
                                      "commits the object store or disk failed (the archiver "
                                      "then stops, exit code 2)", registry=r)
        self.offset = Gauge("hera_archive_last_committed_offset",
                            "last committed offset per partition", ["topic", "partition"],
                            registry=r)
        self.lag_records = Gauge("hera_archive_consumer_lag_records",
                                 "records on the broker not archived yet (fetch high watermark)",
                                 registry=r)
        self.lag_seconds = Gauge("hera_archive_consumer_lag_seconds",
                                 "now minus the commit time of the newest archived change",
                                 registry=r)
        self.table_version = Gauge("hera_archive_table_version", "Delta table version",
                                   registry=r)
        self._last = ArchiverStats()

    def new_run(self) -> None:
        """A new Archiver (after a reopen) counts from 0 again: the counters keep their
        totals and take its increments from here (else the first commit after a store
        failure would try a negative increment)."""
        self._last = ArchiverStats()

    def on_commit(self, stats: ArchiverStats, store: ArchiveStore,
                  newest_commit_us: int | None, lag_records: int | None,
                  caught_up: bool = False) -> None:
        """``lag_records``: records the last fetches saw beyond the committed offsets;
        seconds: now minus the newest archived commit time, 0 once nothing is left."""
        self.records.inc(stats.records - self._last.records)
        self.batches.inc(stats.commits - self._last.commits)
        self.dead_letters.inc(stats.dead_letters - self._last.dead_letters)
        self._last = ArchiverStats(**vars(stats))
        for (topic, partition), nxt in store.offsets().items():
            self.offset.labels(topic, str(partition)).set(nxt - 1)
        self.table_version.set(store.version())
        if caught_up and not lag_records:
            self.lag_seconds.set(0.0)
        elif newest_commit_us is not None:
            self.lag_seconds.set(max(0.0, self._clock() - newest_commit_us / 1e6))
        if lag_records is not None:
            self.lag_records.set(lag_records)
