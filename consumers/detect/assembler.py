"""Change events and END records into complete transactions, released in commit order.

Consumers order by (commit LSN, position), never by arrival: the events of a transaction
may come from several topics and partitions, and the END record (on ``<prefix>.transaction``,
one partition, so in commit order) says how many events each table holds. A transaction is
released once its END is in and every event of the tables we consume has arrived, and only
after every transaction that committed before it.

Offsets: ``low_water()`` gives, per partition, the offset of the oldest record that still
belongs to an unreleased transaction. Storing no more than that as the restart point means
a restart re-reads every pending transaction whole; ``released_lsn`` drops what was already
evaluated, so nothing is evaluated twice.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from capture.event import Author, ChangeEvent, Op, TransactionEvent

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class CompletedTransaction:
    xid: int
    commit_lsn: int
    commit_us: int  # commit time, microseconds since epoch UTC
    events: tuple[ChangeEvent, ...]  # the events the rules keep, in position order
    counts: dict[str, int]  # events received per table (all of them, kept or not)
    author: Author | None = None  # from the END record; None: unknown


@dataclass
class _Pending:
    commit_lsn: int
    positions: set[int] = field(default_factory=set)
    received: Counter[str] = field(default_factory=Counter)
    events: list[ChangeEvent] = field(default_factory=list)
    low_offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)
    end: TransactionEvent | None = None

    def note_offset(self, tp: TopicPartitionKey, offset: int) -> None:
        known = self.low_offsets.get(tp)
        if known is None or offset < known:
            self.low_offsets[tp] = offset


class Assembler:
    def __init__(self, tables: frozenset[str], released_lsn: int,
                 keep: Callable[[ChangeEvent], bool]) -> None:
        self._tables = tables
        self._keep = keep
        self.released_lsn = released_lsn  # highest commit LSN already evaluated
        self._pending: dict[int, _Pending] = {}
        self._ends: list[int] = []  # heap of commit LSNs whose END has arrived
        self.duplicates = 0

    def add_event(self, event: ChangeEvent, tp: TopicPartitionKey, offset: int) -> None:
        """A streamed change (not a snapshot read: the caller applies those directly)."""
        if event.commit_lsn <= self.released_lsn:
            self.duplicates += 1
            return
        pending = self._pending.setdefault(event.commit_lsn, _Pending(event.commit_lsn))
        pending.note_offset(tp, offset)
        if event.position in pending.positions:
            self.duplicates += 1  # capture re-sent it after its own restart
            return
        pending.positions.add(event.position)
        pending.received[event.table_id] += 1
        if self._keep(event):
            pending.events.append(event)

    def add_end(self, end: TransactionEvent, tp: TopicPartitionKey, offset: int) -> None:
        if end.status != "END":
            return
        if end.commit_lsn <= self.released_lsn:
            self.duplicates += 1
            return
        pending = self._pending.setdefault(end.commit_lsn, _Pending(end.commit_lsn))
        pending.note_offset(tp, offset)
        if pending.end is None:
            pending.end = end
            heapq.heappush(self._ends, end.commit_lsn)

    def ready(self) -> Iterator[CompletedTransaction]:
        """Pop complete transactions, oldest commit first; stops at the first incomplete."""
        while self._ends:
            pending = self._pending[self._ends[0]]
            if not self._complete(pending):
                return
            heapq.heappop(self._ends)
            del self._pending[pending.commit_lsn]
            assert pending.end is not None
            self.released_lsn = pending.commit_lsn
            pending.events.sort(key=lambda e: e.position)
            yield CompletedTransaction(
                xid=pending.end.xid, commit_lsn=pending.commit_lsn,
                commit_us=pending.end.ts_us, events=tuple(pending.events),
                counts=dict(pending.received), author=pending.end.author,
            )

    def _complete(self, pending: _Pending) -> bool:
        end = pending.end
        if end is None:
            return False
        for table in end.data_collections or ():
            if (table.data_collection in self._tables
                    and pending.received[table.data_collection] < table.event_count):
                return False
        return True

    def low_water(self) -> dict[TopicPartitionKey, int]:
        marks: dict[TopicPartitionKey, int] = {}
        for pending in self._pending.values():
            for tp, offset in pending.low_offsets.items():
                if tp not in marks or offset < marks[tp]:
                    marks[tp] = offset
        return marks

    @property
    def pending_count(self) -> int:
        return len(self._pending)


def is_snapshot(event: ChangeEvent) -> bool:
    return event.op is Op.READ
