"""capture's own exceptions. Each carries one line for the operator: what is wrong, how to fix."""

from __future__ import annotations


class CaptureError(Exception):
    """Base class: the CLI prints ``str(exc)`` and exits with ``exit_code``."""

    exit_code = 1


class ConfigError(CaptureError):
    """A setting is missing or malformed."""

    exit_code = 2


class PreflightError(CaptureError):
    """The database is not ready for capture (wal_level, output plugin, publication, tables,
    keys, privileges)."""


class SlotError(CaptureError):
    """The replication slot cannot be used safely (lost, re-created, other plugin)."""


class BrokerError(CaptureError):
    """The Kafka broker cannot be reached or refused the records."""

    @classmethod
    def unreachable(cls, bootstrap_servers: object, cause: BaseException | None = None
                    ) -> BrokerError:
        from hera_kit.kafka_probe import unreachable_message

        why = f" ({type(cause).__name__})" if cause is not None else ""
        return cls(unreachable_message(bootstrap_servers, why))


class StreamRestart(CaptureError):
    """The stream must start again from the confirmed LSN with other options (a renamed
    captured table wal2json's filter must now name); the service reconnects at once."""


class BrokerSecurityError(BrokerError):
    """The broker answers but the connection's TLS or SASL cannot work (wrong password,
    unknown CA, plaintext against TLS): retrying will not help."""

    exit_code = 2


class DecodeError(CaptureError):
    """A logical-decoding message could not be understood; nothing past it was confirmed."""


class Stopped(Exception):
    """SIGTERM/SIGINT arrived while capture waited (for the broker, or between snapshot rows):
    the phase ends at once. Its message says what the stop left behind."""
