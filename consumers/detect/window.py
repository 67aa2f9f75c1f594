"""Sliding windows of relationship removals, per organization and over all of them.

Time is the commit time of the transactions (not the detector's clock), so a restart or a
replay of the stream counts exactly as live processing did. A scope that crossed its
threshold stays "alerted" until its count falls back to the threshold: one incident, one
alert, however long the deletions go on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

GLOBAL = "*"


@dataclass
class RemovalWindow:
    window_us: int
    entries: deque[tuple[int, str, int]] = field(default_factory=deque)  # (commit_us, org, n)
    sums: dict[str, int] = field(default_factory=dict)  # org or GLOBAL -> removals in window
    alerted: set[str] = field(default_factory=set)
    added: list[tuple[int, str, int]] = field(default_factory=list)  # not yet persisted
    changed: bool = False

    def load(self, entries: list[tuple[int, str, int]], alerted: set[str]) -> None:
        for entry in sorted(entries):
            self._push(entry)
        self.alerted = set(alerted)

    def add(self, commit_us: int, by_org: dict[str, int]) -> None:
        self.prune(commit_us)
        for org, n in sorted(by_org.items()):
            entry = (commit_us, org, n)
            self._push(entry)
            self.added.append(entry)
            self.changed = True

    def prune(self, now_us: int) -> None:
        cutoff = now_us - self.window_us
        while self.entries and self.entries[0][0] <= cutoff:
            _, org, n = self.entries.popleft()
            for scope in (org, GLOBAL):
                self.sums[scope] -= n
                if self.sums[scope] <= 0:
                    del self.sums[scope]
            self.changed = True

    def cutoff(self, now_us: int) -> int:
        return now_us - self.window_us

    def count(self, scope: str) -> int:
        return self.sums.get(scope, 0)

    def rearm(self, thresholds: dict[str, int]) -> None:
        """Scopes whose count fell back to their threshold may alert again."""
        for scope in list(self.alerted):
            limit = thresholds[GLOBAL] if scope == GLOBAL else thresholds["org"]
            if self.count(scope) <= limit:
                self.alerted.discard(scope)
                self.changed = True

    def _push(self, entry: tuple[int, str, int]) -> None:
        self.entries.append(entry)
        _, org, n = entry
        for scope in (org, GLOBAL):
            self.sums[scope] = self.sums.get(scope, 0) + n
