"""The properties file, mapped once: both clients get the same security for every option;
anything unknown or unsupported is one line naming it; secrets stay out of repr and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capture.settings import CaptureSettings
from consumers.archive.settings import ArchiveSettings
from consumers.detect.settings import DetectSettings
from hera_kit.kafka_config import KafkaConfigError, from_properties, load, parse_properties

SECRET = "pa55-w0rd-not-for-logs"


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN-----\n")
        out[name] = str(path)
    return out


def semantics_kafka_python(kw: dict[str, Any]) -> dict[str, Any]:
    """What a kafka-python argument set means, in one neutral vocabulary."""
    return {"servers": ",".join(kw["bootstrap_servers"]), "protocol": kw["security_protocol"],
            "mechanism": kw.get("sasl_mechanism"), "user": kw.get("sasl_plain_username"),
            "password": kw.get("sasl_plain_password"), "ca": kw.get("ssl_cafile"),
            "cert": kw.get("ssl_certfile"), "key": kw.get("ssl_keyfile"),
            "key_password": kw.get("ssl_password"),
            "check_hostname": kw.get("ssl_check_hostname") if "SSL" in kw[
                "security_protocol"] else None}


def semantics_confluent(conf: dict[str, Any]) -> dict[str, Any]:
    algorithm = conf.get("ssl.endpoint.identification.algorithm")
    return {"servers": conf["bootstrap.servers"], "protocol": conf["security.protocol"],
            "mechanism": conf.get("sasl.mechanisms"), "user": conf.get("sasl.username"),
            "password": conf.get("sasl.password"), "ca": conf.get("ssl.ca.location"),
            "cert": conf.get("ssl.certificate.location"), "key": conf.get("ssl.key.location"),
            "key_password": conf.get("ssl.key.password"),
            "check_hostname": None if algorithm is None else algorithm == "https"}


CASES = {
    "plaintext": {},
    "tls with a CA": {"security.protocol": "SSL", "ssl.ca.location": "{ca}"},
    "mutual tls": {"security.protocol": "SSL", "ssl.ca.location": "{ca}",
                   "ssl.certificate.location": "{cert}", "ssl.key.location": "{key}",
                   "ssl.key.password": SECRET},
    "tls without hostname verification": {"security.protocol": "SSL",
                                          "ssl.endpoint.identification.algorithm": "none"},
    "sasl plain": {"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN",
                   "sasl.username": "key", "sasl.password": SECRET},
    "scram-sha-256": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
                      "sasl.username": "u", "sasl.password": SECRET},
    "scram-sha-512 over plaintext": {"security.protocol": "SASL_PLAINTEXT",
                                     "sasl.mechanism": "SCRAM-SHA-512",
                                     "sasl.username": "u", "sasl.password": SECRET},
}


@pytest.mark.parametrize("case", CASES)
def test_both_clients_get_the_same_settings_for_every_option(case: str,
                                                            pem: dict[str, str]) -> None:
    props = {"bootstrap.servers": "b1:9093,b2:9093",
             **{k: v.format(**pem) for k, v in CASES[case].items()}}
    cfg = from_properties(props)
    assert semantics_kafka_python(cfg.kafka_python()) == semantics_confluent(cfg.confluent())


def test_hostname_verification_is_on_unless_turned_off(pem: dict[str, str]) -> None:
    cfg = from_properties({"bootstrap.servers": "b:1", "security.protocol": "SSL"})
    assert cfg.kafka_python()["ssl_check_hostname"] is True
    assert cfg.confluent()["ssl.endpoint.identification.algorithm"] == "https"


def test_a_confluent_cloud_java_properties_file_with_a_jaas_line_is_understood() -> None:
    text = ("# Required connection configs for Kafka producer, consumer, and admin\n"
            "bootstrap.servers=pkc-123.eu-west-1.aws.confluent.cloud:9092\n"
            "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n"
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \\\n"
            "  required username='KEY' password='x';\n".replace("'", '"') +
            "client.dns.lookup=use_all_dns_ips\n")
    cfg = from_properties(parse_properties(text))
    assert (cfg.sasl_mechanism, cfg.sasl_username, cfg.sasl_password) == ("PLAIN", "KEY", "x")


def test_the_environment_password_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.properties"
    path.write_text("bootstrap.servers=b:1\nsecurity.protocol=SASL_SSL\n"
                    "sasl.mechanism=SCRAM-SHA-512\nsasl.username=u\n")
    assert load(path, sasl_password=SECRET).sasl_password == SECRET


@pytest.mark.parametrize(("props", "named"), [
    ({"sasl.kerberos.service.name": "kafka"}, "sasl.kerberos.service.name: unknown"),
    ({"ssl.truststore.location": "/x.jks"}, "ssl.truststore.location: not supported"),
    ({"session.timeout.ms": "45000"}, "session.timeout.ms: not supported"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "sasl.username": "u",
      "sasl.password": "p"}, "sasl.mechanism=OAUTHBEARER: not supported"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-1", "sasl.username": "u",
      "sasl.password": "p"}, "sasl.mechanism=SCRAM-SHA-1"),
    ({"security.protocol": "TLS"}, "security.protocol=TLS: not one of"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u"},
     "sasl.password: missing"),
    ({"sasl.username": "u"}, "sasl.* given but security.protocol=PLAINTEXT"),
    ({"ssl.ca.location": "/nowhere.pem"}, "ssl.ca.location given but security.protocol="),
    ({"security.protocol": "SSL", "ssl.ca.location": "/nowhere.pem"},
     "ssl.ca.location: no such file"),
    ({"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "x"},
     "ssl.endpoint.identification.algorithm=x"),
    ({"client.dns.lookup": "resolve_canonical_bootstrap_servers_only"}, "client.dns.lookup="),
])
def test_an_unknown_or_unsupported_property_is_refused_naming_it(props: dict[str, str],
                                                                 named: str) -> None:
    with pytest.raises(KafkaConfigError) as caught:
        from_properties({"bootstrap.servers": "b:1", **props})
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_secrets_stay_out_of_repr_str_and_describe() -> None:
    cfg = from_properties({"bootstrap.servers": "b:1", "security.protocol": "SASL_SSL",
                           "sasl.mechanism": "PLAIN", "sasl.username": "u",
                           "sasl.password": SECRET})
    assert SECRET not in repr(cfg) + str(cfg) + cfg.describe()


@pytest.mark.parametrize("settings", [CaptureSettings, ArchiveSettings, DetectSettings])
def test_every_service_reads_the_properties_file_and_the_secret_variable(
        settings: type[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.properties"
    path.write_text("bootstrap.servers=b:9093\nsecurity.protocol=SASL_SSL\n"
                    "sasl.mechanisms=SCRAM-SHA-256\nsasl.username=svc\n")
    monkeypatch.setenv("HERA_KAFKA_CONFIG", str(path))
    monkeypatch.setenv("HERA_KAFKA_SASL_PASSWORD", SECRET)
    extra = {"dsn": "host=x"} if settings is CaptureSettings else {}
    if settings is ArchiveSettings:
        extra = {"archive": str(tmp_path / "a")}
    s = settings(**extra)
    assert (s.kafka.bootstrap_servers, s.kafka.sasl_password) == ("b:9093", SECRET)
    assert SECRET not in repr(s)
