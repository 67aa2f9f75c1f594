"""The Kafka options every service shares (``--bootstrap-servers``, ``--kafka-config`` and
the secrets' environment variables), resolved once into a :class:`KafkaConfig` when the
settings are built, so a bad properties file is one line before anything starts."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings

from hera_kit.kafka_config import KafkaConfig, KafkaConfigError, load


class KafkaSettings(BaseSettings):
    """Mixed into each service's settings (env prefix HERA_)."""

    bootstrap_servers: str | None = Field(
        None, description="Kafka bootstrap servers, HOST:PORT[,HOST:PORT] (wins over the "
                          "properties file's bootstrap.servers)")
    kafka_config: Path | None = Field(
        None, description="Kafka client properties file (librdkafka/Java names: "
                          "security.protocol, sasl.*, ssl.*, bootstrap.servers)")
    # secrets: environment only (never a flag: a command line shows in ps), kept out of
    # repr, --help and logs; they win over the file's values
    kafka_sasl_username: str | None = Field(
        None, description="SASL user (wins over the file's sasl.username)")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (secret; wins over the file's sasl.password)")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="password of the client key in ssl.key.location (secret)")
    _kafka: KafkaConfig | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _resolve_kafka(self) -> KafkaSettings:
        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None
        try:
            self._kafka = load(self.kafka_config, bootstrap_servers=self.bootstrap_servers,
                               sasl_username=self.kafka_sasl_username,
                               sasl_password=secret(self.kafka_sasl_password),
                               ssl_key_password=secret(self.kafka_ssl_key_password))
        except KafkaConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def kafka(self) -> KafkaConfig:
        assert self._kafka is not None  # set by the validator
        return self._kafka


# ``--kafka-config``, the flag of KafkaSettings.kafka_config, spelled once for every service.
kafka_config_option = click.option(
    "--kafka-config", type=click.Path(path_type=Path),
    help="Kafka client properties file: security.protocol, sasl.*, ssl.*, bootstrap.servers "
         "(secrets also from HERA_KAFKA_SASL_PASSWORD, HERA_KAFKA_SSL_KEY_PASSWORD) "
         "[HERA_KAFKA_CONFIG]")
