"""Is this still the stream the state file was built from? And does capture stream what the
rules watch?

Checked at start (the broker's cluster id; the stored offsets against each partition's start
and end) and while running (after every poll, the positions against the high watermarks the
fetches returned; each marker's identity; the cluster id whenever the broker answers the
periodic probe). Anything else than the known stream is ``StreamMismatch``: the detector
stops with one line and changes nothing. tansu names every cluster ``tansu_cluster``, so a
broker restarted empty is seen by its offsets (positions past the new end, topics gone).
"""

from __future__ import annotations

from pathlib import Path

from capture.event import StreamMarker
from consumers.detect.errors import ConfigError, StreamMismatch
from hera_kit.identity import StreamIdentity

TopicPartitionKey = tuple[str, int]


def _way_out(state: Path) -> str:
    return (f"the state in {state} belongs to another stream: restart with --reset-state to "
            "forget it (undelivered alerts are kept), or point --state-dir at this stream's "
            "state")


class StreamCheck:
    def __init__(self, state: Path, identity: StreamIdentity,
                 topic_ids: dict[str, str] | None = None) -> None:
        self.state = state
        self.identity = identity  # what the state says (completed as markers arrive)
        self.changed = False  # identity to store with the next commit
        self.topic_ids = dict(topic_ids or {})  # topic -> id, as first seen
        self.topics_changed = False  # topic ids to store with the next commit

    def _gone(self, found: str) -> StreamMismatch:
        return StreamMismatch(f"stream changed: {found}; {_way_out(self.state)}")

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
                    raise self._gone(f"{where} does not exist on the broker, the state has "
                                     f"read it up to offset {nxt}")
                continue
            low, high = watermarks[(topic, part)]
            if nxt > high:
                raise self._gone(f"{where} ends at offset {high}, the state has read it up "
                                 f"to offset {nxt}")
            if low > nxt:
                raise self._gone(f"{where} now starts at offset {low}, past the state's "
                                 f"next offset {nxt}: records it never read were deleted")

    def positions(self, positions: dict[TopicPartitionKey, int],
                  highwaters: dict[TopicPartitionKey, int]) -> None:
        """While running: a position past the end the last fetch reported means the
        partition was re-created under us (the broker lost its data)."""
        for tp, high in highwaters.items():
            nxt = positions.get(tp)
            if nxt is not None and nxt > high:
                raise self._gone(f"{tp[0]}[{tp[1]}] ends at offset {high} on the broker, "
                                 f"this detector had read it up to offset {nxt} (the broker "
                                 "lost its data)")

    def out_of_range(self, partitions: set[TopicPartitionKey],
                     positions: dict[TopicPartitionKey, int]) -> StreamMismatch:
        """The broker answered OffsetOutOfRange: our position is not in the partition."""
        tp = sorted(partitions)[0]
        return self._gone(f"{tp[0]}[{tp[1]}] no longer holds offset {positions.get(tp, 0)} "
                          "(its start moved past it or its end before it)")

    def vanished(self, positions: dict[TopicPartitionKey, int],
                 assigned: set[TopicPartitionKey]) -> None:
        """A partition read before is no longer on the broker."""
        for tp, nxt in sorted(positions.items()):
            if nxt > 0 and tp not in assigned:
                raise self._gone(f"{tp[0]}[{tp[1]}] is gone from the broker, this detector "
                                 f"had read it up to offset {nxt}")


def check_tables(named: dict[str, str], captured: tuple[str, ...]) -> None:
    """``named``: table -> where it was named (``--tables``, ``rules mass_deletion.table``).
    Each must be one capture streams (the markers' ``tables``)."""
    unknown = {t: where for t, where in named.items() if t not in captured}
    if unknown:
        first = sorted(unknown)[0]
        names = ", ".join(f"{t} ({unknown[t]})" for t in sorted(unknown))
        raise ConfigError(
            f"{names}: not a table capture streams; capture streams "
            f"{', '.join(sorted(captured)) or 'no tables'}: fix the name of {first} or add "
            "the table to capture's --tables")
