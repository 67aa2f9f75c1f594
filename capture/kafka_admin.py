"""Creating the topics capture writes to, with an explicit partition count and message size.

Brokers auto-create unknown topics with their own default partition count (tansu: 4, Kafka:
num.partitions): strict per-table order needs the topic to exist with the count we chose
before the first record is sent. Each topic gets ``max.message.bytes`` = capture's
``max_message_bytes``, so the broker takes every event capture lets through; an existing
topic with a smaller limit is raised to it (capture owns these topics), or capture refuses to
start with the command that would. A broker that reports a request-size ceiling below the
setting (Kafka's ``socket.request.max.bytes``) is refused at start too.

Measured on the test broker (tansu 0.6): it stores topic configs and reports them in
DescribeConfigs, but enforces no size limit and reports no broker configs; Apache Kafka
enforces both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from capture.errors import BrokerError, BrokerSecurityError, ConfigError
from hera_kit.kafka_config import KafkaConfig, as_config

log = logging.getLogger("hera.capture")
MAX_MESSAGE_BYTES = "max.message.bytes"
_FLAG = "--max-message-bytes (HERA_MAX_MESSAGE_BYTES)"


def check_reachable(bootstrap_servers: KafkaConfig | str, timeout_s: float = 5.0) -> None:
    """hera_kit.kafka_probe.check_reachable in capture's exceptions: BrokerError when no
    bootstrap server accepts a connection, BrokerSecurityError when its TLS or SASL cannot
    work."""
    from hera_kit.kafka_probe import KafkaSecurityError, KafkaUnreachable
    from hera_kit.kafka_probe import check_reachable as reach

    try:
        reach(bootstrap_servers, timeout_s)
    except KafkaUnreachable as exc:
        raise BrokerError(str(exc)) from None
    except KafkaSecurityError as exc:
        raise BrokerSecurityError(str(exc)) from None


def _config_value(described: object, kind: str, name: str, key: str) -> int | None:
    """``key`` of resource ``name`` from kafka-python's describe_configs answer
    ({kind: {name: {key: {"value": ...}}}}); None when the broker does not report it."""
    if not isinstance(described, Mapping):
        return None
    entry = (described.get(kind) or {}).get(name, {}).get(key)
    value = entry.get("value") if isinstance(entry, Mapping) else None
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _describe(admin: Any, resources: list[Any]) -> object:
    from kafka.errors import KafkaError

    try:
        # No key filter: tansu drops the connection on a DescribeConfigs naming keys.
        return admin.describe_configs(resources, config_filter="all")
    except (KafkaError, ValueError, TypeError) as exc:
        log.warning("broker does not describe configs; message sizes unchecked",
                    extra={"error": repr(exc)})
        return None


def check_request_ceiling(admin: Any, max_message_bytes: int) -> None:
    """Refuse a setting above what a broker accepts in one request."""
    from kafka.admin import ConfigResource, ConfigResourceType

    try:
        brokers = [b["broker_id"] for b in admin.describe_cluster()["brokers"]]
    except Exception:  # best effort: a broker that cannot say is not refused
        log.warning("broker ids unknown; request ceiling unchecked", exc_info=True)
        return
    for broker in brokers:
        described = _describe(admin, [ConfigResource(ConfigResourceType.BROKER, str(broker))])
        ceiling = _config_value(described, "broker", str(broker), "socket.request.max.bytes")
        if ceiling is not None and max_message_bytes > ceiling:
            raise ConfigError(
                f"{_FLAG} is {max_message_bytes}, above what broker {broker} accepts in one "
                f"request (socket.request.max.bytes = {ceiling}): lower the setting, or raise "
                "socket.request.max.bytes on the broker")


def _raise_limits(admin: Any, names: list[str], max_message_bytes: int) -> None:
    """Existing topics with a smaller max.message.bytes get ours; refuse if that fails."""
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaError

    if not names:
        return
    described = _describe(admin, [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    for name in names:
        current = _config_value(described, "topic", name, MAX_MESSAGE_BYTES)
        if current is None or current >= max_message_bytes:
            continue
        how = (f"kafka-configs.sh --alter --entity-type topics --entity-name {name} "
               f"--add-config {MAX_MESSAGE_BYTES}={max_message_bytes}")
        try:
            result = admin.alter_configs([ConfigResource(
                ConfigResourceType.TOPIC, name,
                configs={MAX_MESSAGE_BYTES: str(max_message_bytes)})])
        except (KafkaError, ValueError) as exc:
            result = {"topic": {name: repr(exc)}}
        outcome = (result.get("topic") or {}).get(name) if isinstance(result, Mapping) else None
        if outcome != "OK":
            raise BrokerError(
                f"topic {name} takes messages up to {current} bytes ({MAX_MESSAGE_BYTES}), "
                f"below {_FLAG} {max_message_bytes}, and capture could not raise it "
                f"({outcome}): run {how}, or lower the setting")
        log.info("raised the topic's max.message.bytes",
                 extra={"topic": name, "from": current, "to": max_message_bytes})


def _check_partitions(admin: Any, names: list[str], partitions: int) -> None:
    """An existing topic with another partition count was not created by capture (a broker
    auto-creating it for a producer, with its defaults): refused, never written to."""
    from kafka.errors import KafkaError

    try:
        described = admin.describe_topics(names)
    except KafkaError as exc:
        log.warning("broker does not describe topics; partition counts unchecked",
                    extra={"error": repr(exc)})
        return
    for t in described:
        count = len(t.get("partitions") or ())
        if t.get("error_code", 0) == 0 and count and count != partitions:
            name = t["name"]
            raise ConfigError(
                f"topic {name} has {count} partitions, capture writes its topics with "
                f"{partitions} (--topic-partitions): it was created by something else (a "
                "broker auto-creating it with its defaults?) and commit order is not kept on "
                f"it; delete it (kafka-topics.sh --delete --topic {name}) and start capture "
                "again, which creates it, or set --topic-partitions to match")


def ensure_topics(bootstrap_servers: KafkaConfig | str, names: Iterable[str], partitions: int = 1,
                  replication_factor: int = 1, *,
                  max_message_bytes: int | None = None,
                  check_partitions: bool = False) -> list[str]:
    """Create the missing topics with ``partitions``; returns the ones it created.
    ``check_partitions``: refuse (ConfigError) an existing topic with another count."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    check_reachable(bootstrap_servers)
    try:
        admin = KafkaAdminClient(**as_config(bootstrap_servers).kafka_python(),
                                 client_id="hera-guard-admin", request_timeout_ms=15000)
    except KafkaError as exc:
        raise BrokerError.unreachable(bootstrap_servers, exc) from exc
    configs = {} if max_message_bytes is None else {MAX_MESSAGE_BYTES: str(max_message_bytes)}
    try:
        if max_message_bytes is not None:
            check_request_ceiling(admin, max_message_bytes)
        existing = set(admin.list_topics())
        present: list[str] = []
        created: list[str] = []
        for name in names:
            if name in existing:
                present.append(name)
                continue
            try:
                admin.create_topics([NewTopic(name, partitions, replication_factor,
                                              topic_configs=configs)])
                created.append(name)
            except TopicAlreadyExistsError:
                present.append(name)  # created concurrently by another process
            except KafkaError as exc:
                raise BrokerError(f"cannot create topic {name}: {exc!r}") from exc
        if check_partitions and present:
            _check_partitions(admin, present, partitions)
        if max_message_bytes is not None:
            _raise_limits(admin, present, max_message_bytes)
    finally:
        admin.close()
    return created
