"""The detector's own named errors: the CLI maps each to one clear line on stderr."""

from __future__ import annotations

from hera_kit.kafka_config import KafkaConfig


class DetectError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class RulesFileError(DetectError):
    """The rules file cannot be read or does not validate."""


class AlertsTableMissing(DetectError):
    """``critical_system_alerts`` is not in the target database."""


class StateFileError(DetectError):
    """The state file is not a detector state file, or was written by a newer version."""


class SinkError(DetectError):
    """An alert sink (Kafka, PostgreSQL) refused or could not be reached."""


class BrokerUnavailable(DetectError):
    """No Kafka broker answers at the bootstrap servers."""

    @classmethod
    def at(cls, bootstrap_servers: KafkaConfig | str) -> BrokerUnavailable:
        """The one wording of it, wherever the detector meets it."""
        return cls(f"no Kafka broker answers at {bootstrap_servers}: check "
                   "--bootstrap-servers and that the broker runs")


class StreamMismatch(DetectError):
    """The stream the state was built from is gone (another broker, database, slot; offsets
    past a partition's end, or a start moved past them)."""


class ConfigError(DetectError):
    """A setting that cannot work: a table capture does not stream, a threshold of 0, a
    window shorter than the poll."""
