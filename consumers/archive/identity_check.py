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

"Stored offsets beyond a partition's end" in general is not asked of ListOffsets: the test
broker (tansu) under-reports end offsets of batched records (never as 0 for a non-empty
partition), so only the empty-partition case is provable on every broker; the
backwards-offset guard covers the rest once the broker serves records.
"""

from __future__ import annotations

from consumers.archive.layout import IdentityMismatchError
from consumers.archive.store import Offsets
from consumers.kafka_source import RecordSource
from hera_kit.identity import StreamIdentity

WAY_OUT = ("archive this stream into a new location, or pass --new-archive-epoch to continue "
           "this archive with it")


def check_stream(source: RecordSource, archived: StreamIdentity | None,
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
    missing = sorted(tp for tp, o in offsets.items() if o > 0 and tp not in existing)
    if missing:
        t, p = missing[0]
        raise IdentityMismatchError(
            f"the broker has no partition {t}[{p}] (the archive holds it up to offset "
            f"{offsets[(t, p)] - 1}; {len(missing)} partition(s) missing): the broker lost its "
            f"data or is another one; {WAY_OUT}")
    ends = source.end_offsets(sorted(tp for tp, o in offsets.items() if o > 0))
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
