"""The one dead-letter format, written by every consumer to ``<prefix>.deadletter``.

A record a consumer cannot use (bad JSON, unknown fields, a newer ``schema_version``, an
empty value) is published there with the reason, before the offsets move past it. Key and
value are kept byte for byte (base64: a record that is not UTF-8 must survive too), so an
operator can re-publish it once the cause is fixed::

    letter = DeadLetter.of(record, "not valid JSON: ...", consumer="detect", now=clock())
    producer.send(deadletter_topic(prefix), key=record.key, value=letter.to_json())
    DeadLetter.from_json(value).original_value()   # the bytes that were refused

The Kafka key of the dead-letter record is the original key.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

FORMAT = 1

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

    @classmethod
    def of(cls, record: RecordLike, reason: str, consumer: str,
           now: datetime) -> DeadLetter:
        return cls(consumer=consumer, reason=reason, topic=record.topic,
                   partition=record.partition, offset=record.offset,
                   key_b64=_b64(record.key), value_b64=_b64(record.value), detected_at=now)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> DeadLetter:
        return cls.model_validate_json(data)

    def original_key(self) -> bytes | None:
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)

    def original_value(self) -> bytes | None:
        return None if self.value_b64 is None else base64.b64decode(self.value_b64)
