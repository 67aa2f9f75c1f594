"""Kafka client settings, written once for every service and both clients.

Managed Kafka services hand their users a client properties file with librdkafka/Java names
(Confluent Cloud's ``client.properties``, MSK's and Aiven's examples): ``security.protocol``,
``sasl.mechanism(s)``, ``sasl.username``/``sasl.password`` (or Java's ``sasl.jaas.config``),
``ssl.ca.location``, ``ssl.certificate.location``, ``ssl.key.location``, ``ssl.key.password``,
``ssl.endpoint.identification.algorithm``, ``bootstrap.servers``. This module reads that file
and maps it ONCE to kafka-python's keyword arguments (:meth:`KafkaConfig.kafka_python`) and to
confluent-kafka's configuration dict (:meth:`KafkaConfig.confluent`), so both clients get the
same security for every option. A property it does not know, or one the two clients cannot
both honour, is refused with one line naming it: never ignored.

Secrets may also come from the caller (the CLIs pass HERA_KAFKA_SASL_PASSWORD and
HERA_KAFKA_SSL_KEY_PASSWORD); this module never reads the environment. A secret never appears
in ``repr``/``str`` of the config or in an error line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# OAUTHBEARER: confluent-kafka can fetch OIDC tokens from the properties alone
# (sasl.oauthbearer.method=oidc), kafka-python needs a token-provider object written in code:
# the two clients cannot behave the same from a properties file, so it is refused for both.
# AWS_MSK_IAM likewise (a signer in code for kafka-python, an OIDC-less callback for
# librdkafka): use MSK's SCRAM or mTLS listener.
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
REFUSED_MECHANISMS = {
    "OAUTHBEARER": "kafka-python cannot fetch OAuth tokens from a properties file, so both "
                   "clients could not behave the same; use SCRAM, PLAIN or mTLS",
    "AWS_MSK_IAM": "IAM signing is not supported; use MSK's SCRAM-SHA-512 or mTLS listener",
    "GSSAPI": "Kerberos is not supported; use SCRAM, PLAIN or mTLS",
}
# Properties that are understood but cannot be honoured the same way by both clients, with
# what to do instead (one line each).
REFUSED = {
    "ssl.truststore.location": "Java keystores are not read: give the CA as PEM in "
                               "ssl.ca.location",
    "ssl.keystore.location": "Java keystores are not read: give the client certificate and key "
                             "as PEM in ssl.certificate.location and ssl.key.location",
    "ssl.keystore.type": "Java keystores are not read: use PEM files",
    "ssl.truststore.type": "Java keystores are not read: use PEM files",
    "session.timeout.ms": "hera-guard uses no consumer groups; remove it",
    "group.id": "hera-guard uses no consumer groups (offsets live with the archive); remove it",
    "acks": "capture always waits for acks=all; remove it",
}
# Accepted because both clients already behave this way.
ACCEPTED_AS_IS = {"client.dns.lookup": ("use_all_dns_ips",)}
_JAAS = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')
_JAAS_MODULES = {
    "org.apache.kafka.common.security.plain.PlainLoginModule": "PLAIN",
    "org.apache.kafka.common.security.scram.ScramLoginModule": "SCRAM",
}


class KafkaConfigError(ValueError):
    """A properties file or a setting that cannot work: one line, naming the property."""


@dataclass(frozen=True)
class KafkaConfig:
    """One Kafka connection's settings, with its secrets kept out of repr and str."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True

    def __str__(self) -> str:
        # error lines name the servers ("cannot reach the Kafka broker at …"), never secrets
        return self.bootstrap_servers

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def describe(self) -> str:
        """What a log line may say about this connection (no secret)."""
        parts = [self.bootstrap_servers, self.security_protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username}")
        if self.ssl_certificate_location:
            parts.append("client certificate")
        return ", ".join(parts)

    def kafka_python(self) -> dict[str, Any]:
        """kafka-python's keyword arguments (KafkaProducer, KafkaConsumer, KafkaAdminClient)."""
        out: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers.split(","),
                               "security_protocol": self.security_protocol}
        if self.uses_sasl:
            out.update(sasl_mechanism=self.sasl_mechanism,
                       sasl_plain_username=self.sasl_username,
                       sasl_plain_password=self.sasl_password)
        if self.uses_tls:
            out["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_ca_location:
                out["ssl_cafile"] = self.ssl_ca_location
            if self.ssl_certificate_location:
                out["ssl_certfile"] = self.ssl_certificate_location
            if self.ssl_key_location:
                out["ssl_keyfile"] = self.ssl_key_location
            if self.ssl_key_password:
                out["ssl_password"] = self.ssl_key_password
        return out

    def confluent(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """confluent-kafka's configuration dict (Producer, Consumer, AdminClient)."""
        out: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers,
                               "security.protocol": self.security_protocol}
        if self.uses_sasl:
            out.update({"sasl.mechanisms": self.sasl_mechanism,
                        "sasl.username": self.sasl_username,
                        "sasl.password": self.sasl_password})
        if self.uses_tls:
            out["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_check_hostname else "none")
            for key in ("ca", "certificate", "key"):
                value = getattr(self, f"ssl_{key}_location")
                if value:
                    out[f"ssl.{key}.location"] = value
            if self.ssl_key_password:
                out["ssl.key.password"] = self.ssl_key_password
        out.update(extra or {})
        return out


def plaintext(bootstrap_servers: str) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=bootstrap_servers)


def as_config(kafka: KafkaConfig | str) -> KafkaConfig:
    """Callers that still hold a bare HOST:PORT list get a plaintext connection."""
    return kafka if isinstance(kafka, KafkaConfig) else plaintext(kafka)


def parse_properties(text: str, source: str = "properties") -> dict[str, str]:
    """Java-style ``key=value`` (or ``key: value``) lines; ``#``/``!`` comments; a trailing
    backslash continues a line (sasl.jaas.config is often split so)."""
    out: dict[str, str] = {}
    logical: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\"):
            logical.append(line[:-1])
            continue
        logical.append(line)
        entry, logical = " ".join(part.strip() for part in logical), []
        match = re.match(r"^([^=:\s]+)\s*[=:]\s*(.*)$", entry)
        if match is None:
            raise KafkaConfigError(f"{source} line {number}: not a key=value line")
        out[match.group(1)] = match.group(2).strip()
    return out


def _jaas(value: str) -> tuple[str, str, str]:
    """(module family, username, password) from a Java sasl.jaas.config line."""
    module = value.split(None, 1)[0] if value.split() else ""
    family = _JAAS_MODULES.get(module)
    if family is None:
        raise KafkaConfigError(f"sasl.jaas.config: login module {module or '(none)'} is not "
                               "supported (PlainLoginModule or ScramLoginModule)")
    options = {k: v.replace('\\"', '"') for k, v in _JAAS.findall(value)}
    if "username" not in options or "password" not in options:
        raise KafkaConfigError("sasl.jaas.config: needs username=\"…\" and password=\"…\"")
    return family, options["username"], options["password"]


def from_properties(props: Mapping[str, str], *, bootstrap_servers: str | None = None,
                    sasl_username: str | None = None, sasl_password: str | None = None,
                    ssl_key_password: str | None = None) -> KafkaConfig:
    """The config a properties mapping describes; explicit arguments (command-line options,
    secrets from the environment) win over the file's values."""
    props = dict(props)
    for key, value in props.items():
        if key in REFUSED:
            raise KafkaConfigError(f"{key}: not supported: {REFUSED[key]}")
        if key in ACCEPTED_AS_IS and value not in ACCEPTED_AS_IS[key]:
            raise KafkaConfigError(f"{key}={value}: not supported (only "
                                   f"{', '.join(ACCEPTED_AS_IS[key])}, what both clients do)")
    known = {"bootstrap.servers", "security.protocol", "sasl.mechanism", "sasl.mechanisms",
             "sasl.username", "sasl.password", "sasl.jaas.config", "ssl.ca.location",
             "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
             "ssl.endpoint.identification.algorithm", *ACCEPTED_AS_IS}
    for key in props:
        if key not in known:
            raise KafkaConfigError(f"{key}: unknown or unsupported Kafka client property "
                                   "(see the README's Production section for the accepted ones)")
    servers = bootstrap_servers or props.get("bootstrap.servers", "")
    servers = ",".join(s.strip() for s in servers.split(",") if s.strip())
    if not servers:
        raise KafkaConfigError("no Kafka bootstrap servers: give --bootstrap-servers "
                               "(HERA_BOOTSTRAP_SERVERS) or bootstrap.servers in --kafka-config")
    protocol = props.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in PROTOCOLS:
        raise KafkaConfigError(f"security.protocol={protocol}: not one of {', '.join(PROTOCOLS)}")
    if "sasl.mechanism" in props and "sasl.mechanisms" in props and \
            props["sasl.mechanism"] != props["sasl.mechanisms"]:
        raise KafkaConfigError("sasl.mechanism and sasl.mechanisms disagree: give one")
    mechanism = (props.get("sasl.mechanism") or props.get("sasl.mechanisms") or "").upper()
    user, password = props.get("sasl.username"), props.get("sasl.password")
    if "sasl.jaas.config" in props:
        family, user, password = _jaas(props["sasl.jaas.config"])
        if (family == "PLAIN" and mechanism not in ("", "PLAIN")) or \
                (family == "SCRAM" and not mechanism.startswith("SCRAM-")):
            raise KafkaConfigError(f"sasl.jaas.config: its login module does not match "
                                   f"sasl.mechanism={mechanism or '(none)'}")
        mechanism = mechanism or "PLAIN"
    user = sasl_username or user or None
    password = sasl_password or password or None
    if protocol.startswith("SASL_"):
        if mechanism in REFUSED_MECHANISMS:
            raise KafkaConfigError(f"sasl.mechanism={mechanism}: not supported: "
                                   f"{REFUSED_MECHANISMS[mechanism]}")
        if mechanism not in MECHANISMS:
            raise KafkaConfigError(f"sasl.mechanism={mechanism or '(none)'}: security.protocol="
                                   f"{protocol} needs one of {', '.join(MECHANISMS)}")
        if not user:
            raise KafkaConfigError("sasl.username: missing (or HERA_KAFKA_SASL_USERNAME)")
        if not password:
            raise KafkaConfigError("sasl.password: missing (or HERA_KAFKA_SASL_PASSWORD)")
    elif mechanism or user or password:
        raise KafkaConfigError(f"sasl.* given but security.protocol={protocol}: use SASL_SSL "
                               "(or SASL_PLAINTEXT) for SASL")
    tls_keys = [k for k in props if k.startswith("ssl.")]
    if tls_keys and protocol not in ("SSL", "SASL_SSL"):
        raise KafkaConfigError(f"{tls_keys[0]} given but security.protocol={protocol}: use SSL "
                               "or SASL_SSL for TLS")
    algorithm = props.get("ssl.endpoint.identification.algorithm", "https").lower()
    if algorithm not in ("https", "none", ""):
        raise KafkaConfigError(f"ssl.endpoint.identification.algorithm={algorithm}: "
                               "https (the default) or none")
    cert: str | None = props.get("ssl.certificate.location")
    keyfile: str | None = props.get("ssl.key.location")
    if bool(cert) != bool(keyfile):
        raise KafkaConfigError("ssl.certificate.location and ssl.key.location go together "
                               "(a client certificate needs its key)")
    for name in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
        if props.get(name) and not Path(props[name]).is_file():
            raise KafkaConfigError(f"{name}: no such file: {props[name]}")
    return KafkaConfig(
        bootstrap_servers=servers, security_protocol=protocol,
        sasl_mechanism=mechanism if protocol.startswith("SASL_") else None,
        sasl_username=user, sasl_password=password,
        ssl_ca_location=props.get("ssl.ca.location") or None,
        ssl_certificate_location=cert or None, ssl_key_location=keyfile or None,
        ssl_key_password=ssl_key_password or props.get("ssl.key.password") or None,
        ssl_check_hostname=algorithm == "https")


def load(path: Path | None, *, bootstrap_servers: str | None = None,
         sasl_username: str | None = None, sasl_password: str | None = None,
         ssl_key_password: str | None = None) -> KafkaConfig:
    """The connection from a properties file (optional) and explicit values."""
    props: dict[str, str] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise KafkaConfigError(f"--kafka-config {path}: {exc.strerror or exc}") from None
        props = parse_properties(text, f"--kafka-config {path}")
    return from_properties(props, bootstrap_servers=bootstrap_servers,
                           sasl_username=sasl_username, sasl_password=sasl_password,
                           ssl_key_password=ssl_key_password)
