"""The archiver as a service: open the table, check the stream, archive until stopped, and
ride out an object store that fails for a while.

A store failure under a running archiver (delta-rs has retried already) is a passing fault:
the batch is in the table entirely or not at all, so the service reports not-ready, waits
(1 s doubling to 30 s), reopens the table and continues from the position the table holds -
the records after it are consumed again and archived once. A failure the store says will not
pass (wrong credentials, no such bucket), a second writer, or a stream that is not the
archive's stops the service with one line instead. At start nothing is retried: a store that
cannot be used then is a setting to fix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from consumers.archive.archiver import Archiver, ArchiverStats, ArchiverTuning
from consumers.archive.housekeeping import Housekeeping
from consumers.archive.identity_check import archiver_check, check_stream
from consumers.archive.layout import ArchiveError, IdentityMismatchError, StoreUnavailableError
from consumers.archive.location import ArchiveLocation
from consumers.archive.metrics import ArchiveMetrics
from consumers.archive.settings import ArchiveSettings
from consumers.archive.store import ArchiveStore
from consumers.kafka_source import Backend, CheckedSource, open_source
from consumers.stream_check import StreamCheck
from hera_kit.identity import StreamIdentity
from hera_kit.kafka_config import KafkaConfig
from hera_kit.kafka_probe import KafkaSecurityError, KafkaUnreachable, check_reachable
from hera_kit.service import Health

log = logging.getLogger("consumers.archive")

FIRST_PAUSE_S, MAX_PAUSE_S = 1.0, 30.0


@dataclass(frozen=True)
class ServiceOptions:
    batch_events: int
    flush_interval_s: float
    compact_interval_s: float
    retention_hours: float
    dedup_capacity: int
    new_archive_epoch: bool = False


@dataclass(frozen=True)
class KafkaOptions:
    """Where the archiver reads: the broker, the topics, the client."""

    kafka: KafkaConfig  # the connection: servers, TLS/SASL
    topic_prefix: str
    tables: tuple[str, ...] | None
    kafka_backend: Backend


def archive_options(s: ArchiveSettings) -> tuple[KafkaOptions, ServiceOptions]:
    """settings -> options (the one place ``consumers archive``'s settings are read)."""
    return (KafkaOptions(s.kafka, s.topic_prefix, s.tables, s.kafka_backend),
            ServiceOptions(batch_events=s.batch_events, flush_interval_s=s.flush_interval_s,
                           compact_interval_s=s.compact_interval_s,
                           retention_hours=s.retention_hours,
                           dedup_capacity=s.dedup_capacity,
                           new_archive_epoch=bool(s.new_archive_epoch)))


class Sources:
    """The Kafka sources of the archiver's attempts: the first is the one ``open_archive``
    checked, each later attempt (after a store failure) gets a new one."""

    def __init__(self, kafka: KafkaOptions, first: CheckedSource) -> None:
        self._kafka = kafka
        self._unused = [first]

    def __call__(self) -> CheckedSource:
        if self._unused:
            return self._unused.pop()
        k = self._kafka
        return open_source(k.kafka, k.topic_prefix, k.tables, k.kafka_backend)

    def close_unused(self) -> None:
        for source in self._unused:
            source.close()
        self._unused = []


def open_archive(loc: ArchiveLocation, kafka: KafkaOptions) -> Sources:
    """The I/O of the start, in the order that keeps a refusal harmless: the archive's own
    refusals first (ArchiveStore.preflight), then the broker — an unreachable one must not
    leave a directory or table behind."""
    ArchiveStore.preflight(loc)
    try:  # TLS/SASL that cannot work: one line saying which, before any client retries
        check_reachable(kafka.kafka)
    except KafkaSecurityError as exc:
        raise ArchiveError(str(exc)) from None
    except KafkaUnreachable:
        pass  # unreachable: said below
    try:
        first = open_source(kafka.kafka, kafka.topic_prefix, kafka.tables,
                            kafka.kafka_backend)
        first.cluster_id()
    except Exception as exc:
        raise ArchiveError(f"cannot reach the Kafka broker at {kafka.kafka} "
                           f"({type(exc).__name__}); start it or fix --bootstrap-servers"
                           ) from None
    return Sources(kafka, first)


def run_archive(loc: ArchiveLocation, kafka: KafkaOptions, options: ServiceOptions,
                metrics: ArchiveMetrics, health: Health, stop: threading.Event) -> None:
    """Open the archiver (``open_archive``) and run it (``serve``) until ``stop``."""
    sources = open_archive(loc, kafka)
    try:
        serve(loc, sources, options, metrics, health, stop)
    finally:
        sources.close_unused()


def serve(loc: ArchiveLocation, sources: Callable[[], CheckedSource], options: ServiceOptions,
          metrics: ArchiveMetrics, health: Health, stop: threading.Event,
          pause: Callable[[float], bool] | None = None) -> None:
    """Archive into ``loc`` until ``stop``; ArchiveError for what does not pass.

    ``sources()`` opens a Kafka source; each attempt gets a new one (closed after it), so
    after a store failure consumption restarts exactly at the position the table holds,
    whatever the failed attempt had fetched. ``pause(seconds)`` waits between attempts and
    returns True when the service should stop instead (default: ``stop.wait``)."""
    wait = pause or stop.wait
    identity: StreamIdentity | None = None
    check: StreamCheck | None = None  # kept across reopens: the topic ids first seen
    delay = FIRST_PAUSE_S
    while not stop.is_set():
        try:
            # Only the first attempt may create the table: a table gone by a reopen (a wiped
            # bucket) must stop the service, not restart the archive at offset 0.
            store = ArchiveStore.open_or_create(loc, create=identity is None,
                                                dedup_capacity=options.dedup_capacity)
        except StoreUnavailableError as exc:
            if identity is None:
                raise  # at start: a setting to fix, not a fault to wait out
            if _not_available(exc, metrics, health, delay, wait):
                return
            delay = min(delay * 2, MAX_PAUSE_S)
            continue
        source = sources()
        try:
            if identity is None:
                identity = _checked_identity(store, source, options.new_archive_epoch)
                check = archiver_check(identity)
            assert check is not None
            health.ready()
            _archiver(store, source, options, metrics, health, identity, check).run(stop)
            return
        except IdentityMismatchError:
            metrics.identity_failed.inc()
            health.not_ready("identity check failed")
            raise
        except StoreUnavailableError as exc:
            if _not_available(exc, metrics, health, delay, wait):
                return
            delay = min(delay * 2, MAX_PAUSE_S)
        except ArchiveError as exc:
            metrics.store_failures.inc()
            health.not_ready(str(exc))
            raise
        finally:
            source.close()
            store.close()


def _not_available(exc: StoreUnavailableError, metrics: ArchiveMetrics, health: Health,
                   delay: float, wait: Callable[[float], bool]) -> bool:
    metrics.store_failures.inc()
    health.not_ready(f"archive store unavailable, retrying: {exc}")
    log.warning("archive store unavailable, retrying in %.0f s: %s", delay, exc)
    return wait(delay)


def _checked_identity(store: ArchiveStore, source: CheckedSource,
                      new_epoch: bool) -> StreamIdentity:
    if new_epoch:
        # the operator says the stream changed (some changes cannot be seen from the broker:
        # tansu reports one cluster id for every broker): drop the position, keep the rows,
        # record the new identity. Meant for one start.
        seen = check_stream(source, None, {})
        store.start_new_epoch(seen)
        log.warning("--new-archive-epoch: continuing %s with the stream %s", store.location,
                    seen)
    else:
        seen = check_stream(source, store.identity(), store.offsets())
    return (store.identity() or seen).model_copy(
        update={"kafka_cluster_id": seen.kafka_cluster_id})


def _archiver(store: ArchiveStore, source: CheckedSource, options: ServiceOptions,
              metrics: ArchiveMetrics, health: Health, identity: StreamIdentity,
              check: StreamCheck) -> Archiver:
    metrics.new_run()
    def on_commit(stats: ArchiverStats) -> None:
        try:
            ends = source.fetched_ends()
        except Exception:  # a metric must not stop the archiver
            ends = {}
        done = store.offsets()
        lag = sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())
        metrics.on_commit(stats, store, stats.newest_commit_us, lag if ends else None,
                          stats.caught_up)

    def recheck(offsets: dict[tuple[str, int], int]) -> Any:
        """Whenever the broker answers; an outage is a passing fault (not ready)."""
        try:
            seen = check_stream(source, identity, offsets)
            check.topics(source.topic_ids())  # a topic re-created since first seen
        except IdentityMismatchError:
            health.not_ready("the broker serves another stream")
            raise
        except Exception as exc:
            health.not_ready(f"broker unreachable ({type(exc).__name__})")
            log.warning("stream check skipped, broker unreachable: %s", exc)
            return None
        health.ready()
        return seen

    return Archiver(store, source, ArchiverTuning(
        batch_events=options.batch_events, flush_interval_s=options.flush_interval_s,
        compact_interval_s=options.compact_interval_s,
        housekeeping=Housekeeping(retention=timedelta(hours=options.retention_hours))),
        on_commit=on_commit, identity=identity, check_stream=recheck,
        check_positions=lambda positions: check.positions(positions, source.highwaters()))
