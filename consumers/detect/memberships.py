"""The current active memberships (user -> organizations), the orphan rule's state.

Built from the snapshot (op ``r``) and the stream; every change is tracked as dirty so the
state file can persist exactly what changed, in the same transaction as the offsets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Membership:
    user_id: str
    organization_id: str
    lsn: int  # commit LSN of the change that last wrote it (snapshot: the epoch's LSN)


def membership_of(row: dict[str, Any] | None, membership_type: str) -> tuple[str, str] | None:
    """(user, organization) when ``row`` is an active membership, else None."""
    if row is None or row.get("relationship_type") != membership_type:
        return None
    if row.get("is_active") is False:  # NULL/missing counts as active, as the plan's SQL does
        return None
    user, org = row.get("from_entity_id"), row.get("organization_id")
    if user is None or org is None:
        return None
    return str(user), str(org)


@dataclass
class MembershipIndex:
    rows: dict[str, Membership] = field(default_factory=dict)  # relationship key -> membership
    per_user: Counter[str] = field(default_factory=Counter)
    per_pair: Counter[tuple[str, str]] = field(default_factory=Counter)
    dirty: dict[str, Membership | None] = field(default_factory=dict)  # None = removed

    @classmethod
    def load(cls, rows: Iterable[tuple[str, str, str, int]]) -> MembershipIndex:
        index = cls()
        for key, user, org, lsn in rows:
            index._add(key, Membership(user, org, lsn))
        return index

    def user_count(self, user: str) -> int:
        return self.per_user[user]

    def is_member(self, user: str, org: str) -> bool:
        return self.per_pair[(user, org)] > 0

    def get(self, key: str) -> Membership | None:
        return self.rows.get(key)

    def set(self, key: str, value: Membership | None) -> Membership | None:
        """Replace the membership under ``key``; returns the old one."""
        old = self.rows.get(key)
        if old is not None:
            self._remove(key, old)
        if value is not None:
            self._add(key, value)
        if old is not None or value is not None:
            self.dirty[key] = value
        return old

    def drop_older_than(self, lsn: int) -> int:
        """Forget memberships last written before ``lsn`` (a new epoch's snapshot re-sends
        the ones that still exist); returns how many went."""
        stale = [k for k, m in self.rows.items() if m.lsn < lsn]
        for key in stale:
            self.set(key, None)
        return len(stale)

    def clear(self) -> int:
        keys = list(self.rows)
        for key in keys:
            self.set(key, None)
        return len(keys)

    def take_dirty(self) -> dict[str, Membership | None]:
        dirty, self.dirty = self.dirty, {}
        return dirty

    def __len__(self) -> int:
        return len(self.rows)

    def _add(self, key: str, m: Membership) -> None:
        self.rows[key] = m
        self.per_user[m.user_id] += 1
        self.per_pair[(m.user_id, m.organization_id)] += 1

    def _remove(self, key: str, m: Membership) -> None:
        del self.rows[key]
        self.per_user[m.user_id] -= 1
        if self.per_user[m.user_id] <= 0:
            del self.per_user[m.user_id]
        pair = (m.user_id, m.organization_id)
        self.per_pair[pair] -= 1
        if self.per_pair[pair] <= 0:
            del self.per_pair[pair]
