"""Opening the detector: every piece of I/O of its start, in the order that keeps a refusal
harmless, then a ``DetectorRunner`` over what was opened (the run loop, no I/O of its own at
construction). The same shape as ``consumers.archive.service`` and capture: settings ->
options -> a function that opens the service -> a run loop.

Order: the broker is probed before the state file is created (an unreachable broker creates
nothing); the state file is locked (one detector per state); the stream is checked (cluster
id, stored offsets against the partitions, topic ids) before anything is created on the
broker; only then the output topics (one partition each: auto-created ones would get the
broker's default count) and the alert producer.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from capture.errors import BrokerError
from capture.kafka_admin import ensure_topics
from capture.topics import alerts_topic, deadletter_topic
from consumers.detect.config import check_settings, load_rules, named_tables
from consumers.detect.errors import BrokerUnavailable, ConfigError, StreamMismatch
from consumers.detect.metrics import DetectMetrics
from consumers.detect.runner import (
    Clock,
    DetectOptions,
    DetectorParts,
    DetectorRunner,
    close_all,
)
from consumers.detect.settings import DetectSettings
from consumers.detect.sinks import AlertSink, KafkaAlertSink, LogSink, PostgresAlertSink
from consumers.detect.state import StateStore
from consumers.detect.stream_check import check_tables, detector_check
from consumers.detect.webhook import WebhookSink
from consumers.kafka_source import CheckedSource, open_source
from hera_kit.identity import StreamIdentity
from hera_kit.kafka_config import as_config
from hera_kit.kafka_probe import KafkaSecurityError, KafkaUnreachable, check_reachable
from hera_kit.service import Health

log = logging.getLogger("hera.detect")


def detect_options(s: DetectSettings, reset_state: bool = False) -> DetectOptions:
    """settings -> options: the state path, the rules file read and checked against the
    settings. ConfigError / RulesFileError (one line) for what cannot work."""
    state = s.state_path()
    if state is None:
        raise ConfigError("no state directory: pass --state-dir DIR (or HERA_STATE_DIR), "
                          "where the detector keeps its offsets and state")
    rules = load_rules(s.rules)
    check_settings(rules, s.tables, s.poll_ms)
    return DetectOptions(
        bootstrap_servers=s.kafka, topic_prefix=s.topic_prefix, tables=s.tables,
        state_path=state, rules=rules, archive_dir=s.archive_dir, dsn=s.dsn,
        poll_ms=s.poll_ms, kafka_backend=s.kafka_backend, webhook_url=s.webhook,
        webhook_secret=(None if s.webhook_secret is None
                        else s.webhook_secret.get_secret_value()),
        webhook_format=s.webhook_format, reset_state=reset_state)


def open_detector(options: DetectOptions, clock: Clock, stop: threading.Event | None = None,
                  metrics: DetectMetrics | None = None,
                  health: Health | None = None) -> DetectorRunner:
    """Everything the detector needs, opened and checked; DetectError (one line) when it
    cannot start, with nothing left open."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    metrics = metrics or DetectMetrics()
    health = health or Health()
    prefix = options.topic_prefix
    try:  # before the state file is created: an unreachable broker creates nothing
        check_reachable(options.bootstrap_servers)
    except KafkaSecurityError as exc:  # TLS/SASL that cannot work: which, in one line
        raise BrokerUnavailable(str(exc)) from None
    except KafkaUnreachable:
        raise BrokerUnavailable.at(options.bootstrap_servers) from None
    store = StateStore.open(options.state_path, prefix)
    sinks: list[AlertSink] = [LogSink()]
    source: CheckedSource | None = None
    producer: Any = None
    try:
        if options.reset_state:
            store.reset_stream()
            log.warning("state reset: %s forgot its stream (offsets, identity, memberships)",
                        options.state_path)
        loaded = store.load()
        check = detector_check(options.state_path, loaded.identity
                               or StreamIdentity(topic_prefix=prefix), loaded.topic_ids)
        check.changed = loaded.identity is None
        if loaded.captured_tables is not None:  # tables capture said it streams, last time
            named = named_tables(options.rules) | {t: "--tables" for t in options.tables}
            check_tables(named, loaded.captured_tables)
        if options.dsn:  # first: a missing critical_system_alerts table stops us at once
            sinks.append(PostgresAlertSink(options.dsn))
        if options.webhook_url:
            sinks.append(WebhookSink(options.webhook_url, options.webhook_secret,
                                     options.webhook_format, clock))
        try:
            source = open_source(
                options.bootstrap_servers, prefix, options.tables, options.kafka_backend,
                consumer="detect", clock=clock, fetch_max_wait_ms=50,
                max_poll_records=options.max_records, check_crcs=False,
                return_early=True, offset_reset="none")
            cluster_id = source.cluster_id()
        except (KafkaError, BrokerError):
            raise BrokerUnavailable.at(options.bootstrap_servers) from None
        # The stream is checked before anything is created on the broker.
        check.cluster(cluster_id)
        source.assign(dict(loaded.offsets))
        # only partitions that exist: asking for others could auto-create them
        check.stored_offsets(dict(loaded.offsets), source.watermarks())
        check.topics(source.topic_ids())
        try:
            # Our output topics with one partition (auto-created ones get the broker's
            # default count: no order).
            ensure_topics(options.bootstrap_servers, [alerts_topic(prefix),
                                                      deadletter_topic(prefix)])
            producer = KafkaProducer(**as_config(options.bootstrap_servers).kafka_python(),
                                     acks="all", linger_ms=0)
        except (KafkaError, BrokerError):
            raise BrokerUnavailable.at(options.bootstrap_servers) from None
        sinks.append(KafkaAlertSink(producer, alerts_topic(prefix)))
    except BaseException as exc:
        if isinstance(exc, StreamMismatch):
            metrics.identity_failed.inc()
            health.not_ready(str(exc))
        close_all(source, producer, store, sinks)
        raise
    return DetectorRunner(options, clock, stop or threading.Event(), metrics, health,
                          DetectorParts(store, loaded, check, source, producer, sinks))
