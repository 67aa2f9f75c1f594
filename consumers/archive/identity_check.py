"""The archiver's stream checks (issue 10): is the broker still serving the stream the archive
was built from?

Provable from the broker alone, at start and at every refresh:
- the Kafka cluster id differs from the archived one (where both are known);
- a topic partition the archive consumed no longer exists (an empty broker took its place);
- a partition's first offset moved past the archive's position (records were deleted before
  they were archived: retention or a re-created topic);
- a partition the archive read records from is empty now (its end offset is 0): the topic was
  re-created, e.g. by a broker that lost its data and auto-creates topics.
While running, the archiver also stops when a partition serves an offset below its position
(archiver.py): the client fell back to the beginning of a partition that is not the one it
read. The database side (system identifier, database, slot) is checked at every marker.

- a stored offset beyond its partition's true end (the fetch high watermark: tansu's
  ListOffsets under-reports the end of batched records), the one stream check every consumer
  applies (consumers/stream_check.py): a topic re-created, or a new broker with the same
  cluster id and shorter partitions.
While running, the same check compares the positions with the high watermarks of every poll's
fetches, and the topic ids at every refresh (a topic deleted and re-created under the
archiver gets a new id, whatever its offsets say).
"""

from __future__ import annotations

from consumers.archive.layout import IdentityMismatchError
from consumers.archive.store import Offsets
from consumers.kafka_source import CheckedSource
from consumers.stream_check import StreamCheck, Wording
from hera_kit.identity import StreamIdentity

WAY_OUT = ("archive this stream into a new location, or pass --new-archive-epoch to continue "
           "this archive with it")


def _mismatch(found: str) -> IdentityMismatchError:
    return IdentityMismatchError(f"the broker serves another stream: {found}; {WAY_OUT}")


WORDING = Wording("the archive", "this archiver", _mismatch)


def archiver_check(identity: StreamIdentity) -> StreamCheck:
    """The shared stream check with the archiver's wording; the topic ids it compares are
    the ones first seen by this process (the archive does not store them)."""
    return StreamCheck(WORDING, identity)


def check_stream(source: CheckedSource, archived: StreamIdentity | None,
                 offsets: Offsets) -> StreamIdentity:
    """The stream the broker serves (identity as far as Kafka knows it); raises
    IdentityMismatchError (one line: what was found, what was expected, the way out)."""
    seen = StreamIdentity(topic_prefix=source.prefix, kafka_cluster_id=source.cluster_id())
    if archived is not None:
        why = archived.mismatch(seen)
        if why is not None:
            raise IdentityMismatchError(f"the broker serves another stream: {why}; {WAY_OUT}")
    if not offsets:
        return seen
    existing = source.partitions()
    read = sorted(tp for tp, o in offsets.items() if o > 0 and tp in existing)
    # a partition deleted between the two questions has no end: missing as well
    ends = source.end_offsets(read)
    missing = sorted(tp for tp, o in offsets.items() if o > 0 and tp not in ends)
    if missing:
        t, p = missing[0]
        raise IdentityMismatchError(
            f"the broker has no partition {t}[{p}] (the archive holds it up to offset "
            f"{offsets[(t, p)] - 1}; {len(missing)} partition(s) missing): the broker lost its "
            f"data or is another one; {WAY_OUT}")
    for tp, end in sorted(ends.items()):
        if end == 0:
            raise IdentityMismatchError(
                f"{tp[0]}[{tp[1]}] is empty, but the archive holds it up to offset "
                f"{offsets[tp] - 1}: the topic was re-created (the broker lost its data); "
                f"{WAY_OUT}")
    starts = source.start_offsets(sorted(offsets))
    for tp, start in sorted(starts.items()):
        if start > offsets[tp]:
            raise IdentityMismatchError(
                f"{tp[0]}[{tp[1]}] now starts at offset {start}, past the archive's position "
                f"{offsets[tp]}: records were deleted before they were archived; {WAY_OUT}")
    return seen
