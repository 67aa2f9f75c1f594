"""Kafka over TLS and SASL, for both clients, through one properties file: round trips
through every client kind the services build (admin, producer, consumer, side clients), and
every failure as one line naming it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from capture.errors import BrokerSecurityError
from capture.kafka_admin import check_reachable, ensure_topics
from capture.publish import make_producer
from consumers.kafka_source import Backend, open_source
from devstack.broker import Broker
from devstack.waiting import wait_until
from hera_kit import kafka_config
from hera_kit.kafka_config import KafkaConfig
from tests.security_fixtures import PASSWORD, USER, Endpoint, Pki

BACKENDS: list[Backend] = ["kafka-python", "confluent"]


def round_trip(cfg: KafkaConfig, backend: Backend) -> list[bytes | None]:
    """Create a topic (admin client), publish one record (capture's producer), read it back
    (the consumers' source and its side clients: cluster id, topic ids, watermarks)."""
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.public.t"
    check_reachable(cfg)
    ensure_topics(cfg, [topic])
    producer = make_producer(backend, cfg, True)
    errors: list[BaseException | None] = []
    producer.send(topic, b"k", b"over-the-wire", errors.append)
    producer.flush(30)
    producer.close()
    assert errors == [None]
    source = open_source(cfg, prefix, ("public.t",), backend, include_transactions=False)
    try:
        assert source.cluster_id() is not None
        source.assign({})
        assert source.topic_ids() and source.watermarks() == {(topic, 0): (0, 1)}
        got: list[bytes | None] = []

        def read() -> bool:
            got.extend(r.value for r in source.poll(200))
            return bool(got)
        wait_until(read, 30, "the record read back")
        return got
    finally:
        source.close()


def load(path: Path, **secrets: str) -> KafkaConfig:
    return kafka_config.load(path, **secrets)


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_clients_publish_and_read_over_tls_with_a_ca_file(
        tls_broker: Endpoint, pki: Pki, backend: Backend) -> None:
    cfg = load(tls_broker.properties(ssl_ca_location=str(pki.ca)))
    assert round_trip(cfg, backend) == [b"over-the-wire"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_both_clients_authenticate_with_each_sasl_mechanism_over_tls(
        sasl_broker: Endpoint, pki: Pki, backend: Backend, mechanism: str) -> None:
    path = sasl_broker.properties(f"sasl-{mechanism}", sasl_mechanism=mechanism,
                                  sasl_username=USER, ssl_ca_location=str(pki.ca))
    # the secret comes from the environment's variable (HERA_KAFKA_SASL_PASSWORD), not the file
    assert round_trip(load(path, sasl_password=PASSWORD), backend) == [b"over-the-wire"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_clients_present_a_client_certificate_to_a_mutual_tls_listener(
        mtls_broker: Endpoint, pki: Pki, backend: Backend) -> None:
    cfg = load(mtls_broker.properties(
        ssl_ca_location=str(pki.ca), ssl_certificate_location=str(pki.client.cert),
        ssl_key_location=str(pki.client.key)))
    assert round_trip(cfg, backend) == [b"over-the-wire"]


def refusal(cfg: KafkaConfig) -> str:
    with pytest.raises(BrokerSecurityError) as caught:
        check_reachable(cfg)
    line = str(caught.value)
    assert "\n" not in line and PASSWORD not in line
    return line


def test_a_wrong_password_is_one_line_naming_the_user(sasl_broker: Endpoint, pki: Pki) -> None:
    cfg = load(sasl_broker.properties("wrong", sasl_mechanism="SCRAM-SHA-512",
                                      sasl_username=USER, ssl_ca_location=str(pki.ca)),
               sasl_password="not-" + PASSWORD)
    assert f"authentication failed for user {USER} (wrong username or password)" in refusal(cfg)


def test_an_unknown_ca_is_one_line(tls_broker: Endpoint, pki: Pki) -> None:
    cfg = load(tls_broker.properties("unknown-ca", ssl_ca_location=str(pki.other_ca)))
    assert "unknown CA" in refusal(cfg)


def test_a_certificate_for_another_host_is_one_line(bad_certificates: dict[str, str],
                                                    pki: Pki) -> None:
    cfg = kafka_config.from_properties({"bootstrap.servers": bad_certificates["other-host"],
                                        "security.protocol": "SSL",
                                        "ssl.ca.location": str(pki.ca)})
    assert "is not for host 127.0.0.1" in refusal(cfg)


def test_an_expired_certificate_is_one_line(bad_certificates: dict[str, str],
                                            pki: Pki) -> None:
    cfg = kafka_config.from_properties({"bootstrap.servers": bad_certificates["expired"],
                                        "security.protocol": "SSL",
                                        "ssl.ca.location": str(pki.ca)})
    assert "its certificate has expired" in refusal(cfg)


def test_a_plaintext_client_against_a_tls_listener_is_one_line(tls_broker: Endpoint) -> None:
    assert "against a TLS or SASL listener" in refusal(
        kafka_config.plaintext(tls_broker.bootstrap))


def test_a_tls_client_against_a_plaintext_listener_is_one_line(broker: Broker,
                                                                pki: Pki) -> None:
    cfg = kafka_config.from_properties({"bootstrap.servers": broker.bootstrap_servers,
                                        "security.protocol": "SSL",
                                        "ssl.ca.location": str(pki.ca)})
    assert "the listener does not speak TLS" in refusal(cfg)


def test_a_client_without_sasl_against_a_sasl_listener_is_one_line(
        sasl_broker: Endpoint, pki: Pki) -> None:
    cfg = load(sasl_broker.properties("no-sasl", ssl_ca_location=str(pki.ca),
                                      security_protocol="SSL"))
    assert "it requires SASL" in refusal(cfg)


def test_a_missing_client_certificate_is_one_line(mtls_broker: Endpoint, pki: Pki) -> None:
    cfg = load(mtls_broker.properties("no-client-cert", ssl_ca_location=str(pki.ca)))
    assert "requires a client certificate" in refusal(cfg)
