"""Is this still the stream a consumer's state was built from? One check for every consumer
(archive and detect), each naming its own state and way out.

Checked at start (the stored offsets against each partition's start and its true end, the
fetch high watermark) and while running (after every poll, the positions against the high
watermarks the fetches returned; the topic ids whenever the broker answers; the cluster id
and each marker's identity where the consumer checks them here). Anything else than the
known stream raises the consumer's own mismatch error: one line, what was found, the way
out; the consumer stops and changes nothing. A topic deleted and re-created under a running
consumer, or a new broker with the same cluster id (tansu names every cluster
``tansu_cluster``; Apache Kafka images without CLUSTER_ID share a default one) and shorter
partitions, is seen by its topic ids and its offsets: positions past the new end, a start
past them, partitions gone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from capture.event import StreamMarker
from hera_kit.identity import StreamIdentity

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class Wording:
    """How a consumer names what it holds in its messages."""

    owner: str  # "the state", "the archive": what has read the stream
    reader: str  # "this detector", "this archiver"
    mismatch: Callable[[str], Exception]  # what was found -> the consumer's one-line error


class StreamCheck:
    def __init__(self, wording: Wording, identity: StreamIdentity,
                 topic_ids: dict[str, str] | None = None) -> None:
        self.wording = wording
        self.identity = identity  # what the state says (completed as markers arrive)
        self.changed = False  # identity to store with the next commit
        self.topic_ids = dict(topic_ids or {})  # topic -> id, as first seen
        self.topics_changed = False  # topic ids to store with the next commit

    def _gone(self, found: str) -> Exception:
        return self.wording.mismatch(found)

    def cluster(self, cluster_id: str | None) -> None:
        seen = self.identity.model_copy(update={"kafka_cluster_id": cluster_id})
        why = self.identity.mismatch(seen)
        if why is not None:
            raise self._gone(why)
        if self.identity.kafka_cluster_id is None and cluster_id is not None:
            self.identity = seen
            self.changed = True

    def topics(self, seen: dict[str, str]) -> None:
        """A topic whose id changed was deleted and re-created (on tansu: the broker
        restarted empty), whatever its offsets say now."""
        for topic, tid in sorted(seen.items()):
            known = self.topic_ids.get(topic)
            if known is not None and known != tid:
                raise self._gone(f"topic {topic} was re-created (topic id {tid}, expected "
                                 f"{known})")
        new = {t: i for t, i in seen.items() if t not in self.topic_ids}
        if new:
            self.topic_ids.update(new)
            self.topics_changed = True

    def marker(self, marker: StreamMarker) -> None:
        seen = StreamIdentity(topic_prefix=self.identity.topic_prefix,
                              system_identifier=marker.system_identifier, db=marker.db,
                              slot=marker.slot)
        why = self.identity.mismatch(seen)
        if why is not None:
            raise self._gone(f"a marker of the stream says {why}")
        new = self.identity.with_marker(marker)
        if new != self.identity:
            self.identity, self.changed = new, True

    def stored_offsets(self, offsets: dict[TopicPartitionKey, int],
                       watermarks: dict[TopicPartitionKey, tuple[int, int]]) -> None:
        """At start: every stored offset inside its partition as the broker has it now."""
        for (topic, part), nxt in sorted(offsets.items()):
            where = f"{topic}[{part}]"
            if (topic, part) not in watermarks:
                if nxt > 0:
                    raise self._gone(f"{where} does not exist on the broker, "
                                     f"{self.wording.owner} has read it up to offset {nxt}")
                continue
            low, high = watermarks[(topic, part)]
            if nxt > high:
                raise self._gone(f"{where} ends at offset {high}, {self.wording.owner} has "
                                 f"read it up to offset {nxt}")
            if low > nxt:
                raise self._gone(f"{where} now starts at offset {low}, past "
                                 f"{self.wording.owner}'s next offset {nxt}: records it "
                                 "never read were deleted")

    def positions(self, positions: dict[TopicPartitionKey, int],
                  highwaters: dict[TopicPartitionKey, int]) -> None:
        """While running: a position past the end the last fetch reported means the
        partition was re-created under us (the broker lost its data)."""
        for tp, high in highwaters.items():
            nxt = positions.get(tp)
            if nxt is not None and nxt > high:
                raise self._gone(f"{tp[0]}[{tp[1]}] ends at offset {high} on the broker, "
                                 f"{self.wording.reader} had read it up to offset {nxt} (the "
                                 "topic was re-created or the broker lost its data)")

    def out_of_range(self, partitions: set[TopicPartitionKey],
                     positions: dict[TopicPartitionKey, int]) -> Exception:
        """The broker answered OffsetOutOfRange: our position is not in the partition."""
        tp = sorted(partitions)[0]
        return self._gone(f"{tp[0]}[{tp[1]}] no longer holds offset {positions.get(tp, 0)} "
                          "(its start moved past it or its end before it)")

    def vanished(self, positions: dict[TopicPartitionKey, int],
                 assigned: set[TopicPartitionKey]) -> None:
        """A partition read before is no longer on the broker."""
        for tp, nxt in sorted(positions.items()):
            if nxt > 0 and tp not in assigned:
                raise self._gone(f"{tp[0]}[{tp[1]}] is gone from the broker, "
                                 f"{self.wording.reader} had read it up to offset {nxt}")

