"""The one dead-letter format, written by every consumer to ``<prefix>.deadletter``.

A record a consumer cannot use (bad JSON, unknown fields, a newer ``schema_version``, an
empty value) is published there with the reason, before the offsets move past it. Key and
value are kept byte for byte (base64: a record that is not UTF-8 must survive too), so an
operator can re-publish it once the cause is fixed::

    letter = DeadLetter.of(record, "not valid JSON: ...", consumer="detect", now=clock())
    producer.send(deadletter_topic(prefix), key=record.key, value=letter.to_json())
    DeadLetter.from_json(value).original_value()   # the bytes that were refused

The Kafka key of the dead-letter record is the original key.

A record too large to be dead-lettered whole (a letter above ``MAX_LETTER_BYTES``, below the
1 MB a Kafka broker takes by default, whatever the change topics allow) is dead-lettered as a
bounded reference instead: its topic, partition and offset (where the record itself stays,
for the topic's retention), its sizes and its first ``HEAD_BYTES`` bytes. Refusing it would
stop the consumer on that record at every restart, forever.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

FORMAT = 1
MAX_LETTER_BYTES = 768 * 1024  # the whole letter (base64 grows the record by a third)
HEAD_BYTES = 1024  # kept of a record too large to keep whole

Consumer = Literal["archive", "detect"]


class RecordLike(Protocol):
    """``consumers.kafka_source.Record``, or a kafka-python ConsumerRecord."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT
    consumer: str  # which consumer refused it: "archive", "detect"
    reason: str  # one line: what is wrong with the record
    topic: str
    partition: int
    offset: int
    key_b64: str | None
    value_b64: str | None
    detected_at: datetime  # UTC, the consumer's clock
    # Set only on a reference (a record too large to keep whole, see the module's doc):
    # the original sizes and first bytes; key_b64/value_b64 are then None.
    key_size: int | None = None
    value_size: int | None = None
    key_head_b64: str | None = None
    value_head_b64: str | None = None

    @classmethod
    def of(cls, record: RecordLike, reason: str, consumer: str,
           now: datetime) -> DeadLetter:
        whole = cls(consumer=consumer, reason=reason, topic=record.topic,
                    partition=record.partition, offset=record.offset,
                    key_b64=_b64(record.key), value_b64=_b64(record.value), detected_at=now)
        if len(whole.to_json()) <= MAX_LETTER_BYTES:
            return whole
        key, value = record.key, record.value
        size = len(key or b"") + len(value or b"")
        return cls(consumer=consumer, topic=record.topic, partition=record.partition,
                   offset=record.offset, key_b64=None, value_b64=None, detected_at=now,
                   reason=(f"{reason}; a record of {size} bytes, too large to dead-letter "
                           f"whole: a reference and its first {HEAD_BYTES} bytes"),
                   key_size=None if key is None else len(key),
                   value_size=None if value is None else len(value),
                   key_head_b64=_b64(None if key is None else key[:HEAD_BYTES]),
                   value_head_b64=_b64(None if value is None else value[:HEAD_BYTES]))

    @property
    def is_reference(self) -> bool:
        """True when the record was too large to keep: only its head and sizes are here."""
        return self.key_size is not None or self.value_size is not None

    def kafka_key(self, original: bytes | None) -> bytes | None:
        """The key to publish the letter under: the original, unless it was too large."""
        return original if self.key_b64 is not None or original is None else None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> DeadLetter:
        return cls.model_validate_json(data)

    def original_key(self) -> bytes | None:
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)

    def original_value(self) -> bytes | None:
        return None if self.value_b64 is None else base64.b64decode(self.value_b64)
