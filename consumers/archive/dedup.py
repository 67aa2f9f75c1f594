"""Write-time dedup of events that capture re-sent after its own restart.

Capture re-sends from the slot's confirmed LSN, so duplicates are recent: they repeat
(commit_lsn, position) keys of the archive's tail. ``RecentKeys`` keeps every key whose
commit LSN is above ``floor`` in memory (bounded by ``capacity``; the lowest LSNs are evicted
first and raise ``floor``). A key at or below ``floor`` is looked up in the segments whose
LSN range covers it (rare: a topic lagging far behind the others). So the check is exact,
not probabilistic, and memory stays bounded. The read views deduplicate again, as a safety
net that costs little (see bench/archive.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

Key = tuple[int, int]  # (commit_lsn, position); transactions use position 0


class RecentKeys:
    def __init__(self, capacity: int, disk_lookup: Callable[[set[Key]], set[Key]]) -> None:
        self.capacity = capacity
        self.floor = -1  # keys with commit_lsn <= floor may exist only on disk
        self._by_lsn: dict[int, set[int]] = {}
        self._heap: list[int] = []
        self._count = 0
        self._disk_lookup = disk_lookup

    def __len__(self) -> int:
        return self._count

    def add(self, lsn: int, pos: int) -> None:
        positions = self._by_lsn.get(lsn)
        if positions is None:
            positions = self._by_lsn[lsn] = set()
            heapq.heappush(self._heap, lsn)
        if pos not in positions:
            positions.add(pos)
            self._count += 1

    def add_many(self, keys: Iterable[Key]) -> None:
        for lsn, pos in keys:
            self.add(lsn, pos)

    def add_if_all_new(self, groups: list[tuple[int, list[int]]]) -> bool:
        """The common case in one pass: the keys of a batch, as ``groups`` (lsn, positions)
        with each lsn once, are all new (lsn above ``floor``, positions distinct and none
        seen before; a transaction split over partitions arrives in several batches): add
        them and return True. Otherwise add nothing and return False (use ``filter_new``)."""
        by_lsn, floor = self._by_lsn, self.floor
        sets = []
        for lsn, positions in groups:
            unique = set(positions)
            seen = by_lsn.get(lsn)
            if (lsn <= floor or len(unique) != len(positions)
                    or (seen is not None and not seen.isdisjoint(unique))):
                return False
            sets.append((lsn, unique, seen))
        for lsn, unique, seen in sets:
            if seen is None:
                by_lsn[lsn] = unique
                heapq.heappush(self._heap, lsn)
            else:
                seen |= unique
            self._count += len(unique)
        return True

    def filter_new(self, keys: list[Key]) -> list[bool]:
        """For each key, whether it is new (not archived, not earlier in ``keys``); adds them."""
        result = [True] * len(keys)
        old: set[Key] = set()
        for i, (lsn, pos) in enumerate(keys):
            positions = self._by_lsn.get(lsn)
            if positions is not None and pos in positions:
                result[i] = False
            elif lsn <= self.floor:
                old.add((lsn, pos))
        on_disk = self._disk_lookup(old) if old else set()
        for i, key in enumerate(keys):
            if not result[i]:
                continue
            if key in on_disk:
                result[i] = False
                continue
            positions = self._by_lsn.get(key[0])
            if positions is not None and key[1] in positions:
                result[i] = False  # repeated inside this batch
                continue
            self.add(*key)
        return result

    def evict(self) -> None:
        """Drop the lowest LSNs until within capacity; ``floor`` rises accordingly."""
        while self._count > self.capacity and self._heap:
            lsn = heapq.heappop(self._heap)
            positions = self._by_lsn.pop(lsn, set())
            self._count -= len(positions)
            self.floor = max(self.floor, lsn)
