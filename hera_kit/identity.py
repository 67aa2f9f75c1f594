"""The identity of a stream: which database and which Kafka cluster a consumer's state is of.

A consumer (archiver, detector) stores the identity next to its offsets, in the same commit,
and compares it with what it sees at start and whenever the broker answers. A different
identity means the stream it knew is gone (new cluster, re-created topic, another database):
it stops loudly instead of sitting at offsets that mean nothing now.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict


class Marker(Protocol):
    """What a stream marker (capture's ``StreamMarker``) tells of the stream it marks."""

    @property
    def system_identifier(self) -> str | None: ...
    @property
    def db(self) -> str | None: ...
    @property
    def slot(self) -> str | None: ...
    @property
    def epoch_lsn(self) -> int | None: ...


class StreamIdentity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topic_prefix: str
    kafka_cluster_id: str | None = None  # None where the broker reports none
    system_identifier: str | None = None  # PostgreSQL cluster; None before the first marker
    db: str | None = None
    slot: str | None = None
    epoch_lsn: int | None = None

    def with_marker(self, marker: Marker) -> StreamIdentity:
        """This identity, completed (or moved to a new epoch) by a marker of the stream."""
        return self.model_copy(update={
            "system_identifier": marker.system_identifier or self.system_identifier,
            "db": marker.db, "slot": marker.slot, "epoch_lsn": marker.epoch_lsn})

    def mismatch(self, seen: StreamIdentity) -> str | None:
        """Why ``seen`` is not the stream this identity describes, or None if it may be.

        A field unknown on either side is not compared; a new epoch of the same slot, database
        and cluster is the same stream (capture marks the gap, replay refuses points in it).
        """
        for field, label in (("topic_prefix", "topic prefix"),
                             ("kafka_cluster_id", "Kafka cluster id"),
                             ("system_identifier", "PostgreSQL system identifier"),
                             ("db", "database"), ("slot", "slot")):
            mine, theirs = getattr(self, field), getattr(seen, field)
            if mine is not None and theirs is not None and mine != theirs:
                return f"{label} is {theirs!r}, expected {mine!r}"
        return None
