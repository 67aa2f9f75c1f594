"""Creating the topics capture writes to, with an explicit partition count.

Brokers auto-create unknown topics with their own default partition count (tansu: 4, Kafka:
num.partitions): strict per-table order needs the topic to exist with the count we chose
before the first record is sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from capture.errors import BrokerError


def check_reachable(bootstrap_servers: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one clear line when no bootstrap server accepts a TCP connection
    (kafka-python would otherwise retry for tens of seconds before saying so)."""
    import socket

    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError):
            continue
    raise BrokerError.unreachable(bootstrap_servers)


def ensure_topics(bootstrap_servers: str, names: Iterable[str], partitions: int = 1,
                  replication_factor: int = 1) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    check_reachable(bootstrap_servers)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","),
                                 client_id="hera-guard-admin", request_timeout_ms=15000)
    except KafkaError as exc:
        raise BrokerError.unreachable(bootstrap_servers, exc) from exc
    try:
        existing = set(admin.list_topics())
        for name in names:
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name, partitions, replication_factor)])
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: fine
            except KafkaError as exc:
                raise BrokerError(f"cannot create topic {name}: {exc!r}") from exc
    finally:
        admin.close()
