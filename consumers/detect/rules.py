"""The detector: the rules over complete transactions, and the state they need.

Each rule raises at most one alert per transaction (an incident), with counts, a per
organization breakdown and a few sample rows, never one alert per row.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from capture.author import author_phrase
from capture.event import ChangeEvent, Op, format_lsn
from consumers.detect.alerts import (
    Alert,
    Rule,
    Severity,
    TransactionRef,
    actor_replay_command,
    alert_id,
    replay_command,
)
from consumers.detect.assembler import CompletedTransaction
from consumers.detect.config import RulesConfig
from consumers.detect.memberships import Membership, MembershipIndex, membership_of
from consumers.detect.window import GLOBAL, RemovalWindow

Clock = Callable[[], datetime]
Row = dict[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The columns quoted in samples: enough to identify and judge a row, not the whole row.
_SAMPLE_COLUMNS = ("id", "organization_id", "from_entity_id", "to_entity_id",
                   "relationship_type", "is_active", "entity_id", "field_name",
                   "field_value_text", "smart_code", "table")


def commit_time(commit_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=commit_us)


def row_key(event: ChangeEvent) -> str:
    return event.kafka_key().decode()


def _sample(row: Row) -> Row:
    return {k: row[k] for k in _SAMPLE_COLUMNS if k in row}


@dataclass
class _Findings:
    """What one transaction did, gathered in position order before the rules judge it."""

    truncated: list[str] = field(default_factory=list)
    memberships_lost_to_truncate: int = 0
    removals: list[Row] = field(default_factory=list)
    deactivations: int = 0
    users_before: dict[str, int] = field(default_factory=dict)
    lost_membership: dict[str, Row] = field(default_factory=dict)  # user -> last removed
    role_rows: list[Row] = field(default_factory=list)
    bad_codes: list[tuple[str, Row]] = field(default_factory=list)  # (table, row)


@dataclass
class DetectorOutput:
    alerts: list[Alert]


class Detector:
    def __init__(self, rules: RulesConfig, memberships: MembershipIndex, window: RemovalWindow,
                 archive_dir: str, dsn: str | None, clock: Clock) -> None:
        self.rules = rules
        self.memberships = memberships
        self.window = window
        self.archive_dir = archive_dir
        self.dsn = dsn
        self.clock = clock
        self._code_patterns = [re.compile(p) for p in rules.smart_code.patterns]

    # --- which events matter ------------------------------------------------------------

    def keeps(self, event: ChangeEvent) -> bool:
        """Whether a streamed event can matter to a rule (the rest are only counted)."""
        if event.op in (Op.TRUNCATE, Op.DELETE):
            return True
        table = event.table_id
        if event.op is Op.READ:  # an online re-read's row: it sets membership state
            return table == self.rules.orphaned_user.table
        if event.op is Op.UPDATE:
            return table in (self.rules.orphaned_user.table, self.rules.mass_deletion.table,
                             self.rules.role_removed.table) or self._bad_code(event)
        if event.op is Op.CREATE:
            return (table == self.rules.orphaned_user.table and membership_of(
                event.after, self.rules.orphaned_user.membership_type) is not None
            ) or self._bad_code(event)
        return False

    # --- state from the snapshot ----------------------------------------------------------

    def apply_snapshot(self, event: ChangeEvent) -> None:
        if event.table_id != self.rules.orphaned_user.table:
            return
        m = membership_of(event.after, self.rules.orphaned_user.membership_type)
        key = row_key(event)
        self.memberships.set(key, None if m is None else Membership(m[0], m[1], event.commit_lsn))

    def new_epoch(self, epoch_lsn: int) -> None:
        """A new slot's snapshot follows: memberships it does not re-send are gone."""
        self.memberships.drop_older_than(epoch_lsn)

    # --- the rules ------------------------------------------------------------------------

    def evaluate(self, tx: CompletedTransaction) -> list[Alert]:
        found = self._gather(tx)
        alerts: list[Alert] = []
        for rule in (self._truncate, self._mass_deletion, self._orphaned, self._role_removed,
                     self._smart_code):
            alert = rule(tx, found)
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _gather(self, tx: CompletedTransaction) -> _Findings:
        f = _Findings()
        md, ou, rr = self.rules.mass_deletion, self.rules.orphaned_user, self.rules.role_removed
        for e in tx.events:
            table = e.table_id
            if e.op is Op.READ:  # an online re-read: what the row is, not a change to judge
                self.apply_snapshot(e)
                continue
            if e.op is Op.TRUNCATE:
                f.truncated.append(table)
                if table == ou.table:
                    for m in self.memberships.rows.values():
                        f.users_before.setdefault(m.user_id, self.memberships.user_count(
                            m.user_id))
                    f.memberships_lost_to_truncate += self.memberships.clear()
                continue
            if table == md.table:
                if e.op is Op.DELETE and e.before is not None:
                    f.removals.append(e.before)
                elif (md.count_deactivations and e.op is Op.UPDATE and e.before is not None
                      and e.after is not None and e.before.get("is_active") is True
                      and e.after.get("is_active") is False):
                    f.removals.append(e.before)
                    f.deactivations += 1
            if table == ou.table:
                self._apply_membership(e, tx, f)
            if table == rr.table and self._role_removed_row(e):
                assert e.before is not None
                f.role_rows.append(e.before)
            if self._bad_code(e):
                assert e.after is not None
                f.bad_codes.append((table, e.after))
        return f

    def _apply_membership(self, e: ChangeEvent, tx: CompletedTransaction, f: _Findings) -> None:
        key = row_key(e)
        after = membership_of(e.after, self.rules.orphaned_user.membership_type) \
            if e.op in (Op.CREATE, Op.UPDATE) else None
        old = self.memberships.get(key)
        if old is None and after is None:
            return
        for user in {m for m in (old.user_id if old else None, after[0] if after else None)
                     if m is not None}:
            f.users_before.setdefault(user, self.memberships.user_count(user))
        self.memberships.set(key, None if after is None
                             else Membership(after[0], after[1], tx.commit_lsn))
        if old is not None and (after is None or after[0] != old.user_id):
            f.lost_membership[old.user_id] = e.before or {
                "from_entity_id": old.user_id, "organization_id": old.organization_id}

    def _role_removed_row(self, e: ChangeEvent) -> bool:
        fields = self.rules.role_removed.fields
        if e.before is None or e.before.get("field_name") not in fields:
            return False
        if e.op is Op.DELETE:
            return True
        # An update that moves the row off the role field (or to another user) removes it too.
        return e.op is Op.UPDATE and e.after is not None and (
            e.after.get("field_name") not in fields
            or e.after.get("entity_id") != e.before.get("entity_id")
            or e.after.get("organization_id") != e.before.get("organization_id"))

    def _bad_code(self, e: ChangeEvent) -> bool:
        sc = self.rules.smart_code
        if (not sc.enabled or e.op not in (Op.CREATE, Op.UPDATE) or e.after is None
                or e.table_id not in sc.tables):
            return False
        code = e.after.get("smart_code")
        if code is None or (e.before is not None and e.before.get("smart_code") == code):
            return False  # NULL is allowed; an unchanged code was not written by this change
        return not any(p.search(str(code)) for p in self._code_patterns)

    def _truncate(self, tx: CompletedTransaction, f: _Findings) -> Alert | None:
        if not f.truncated or not self.rules.truncate.enabled:
            return None
        tables = sorted(set(f.truncated))
        counts = {"tables": len(tables)}
        if f.memberships_lost_to_truncate:
            counts["memberships_lost"] = f.memberships_lost_to_truncate
        return self._alert(
            tx, Rule.TRUNCATE, self.rules.truncate.severity, ",".join(tables), None,
            f"TRUNCATE of {', '.join(tables)} in transaction {tx.xid}", counts, {},
            [{"table": t} for t in tables])

    def _mass_deletion(self, tx: CompletedTransaction, f: _Findings) -> Alert | None:
        md = self.rules.mass_deletion
        if not md.enabled:
            return None
        by_org = Counter(str(r.get("organization_id")) for r in f.removals)
        self.window.add(tx.commit_us, dict(by_org))
        total = len(f.removals)
        crossed = [org for org in sorted(by_org)
                   if self.window.count(org) > md.per_organization_window
                   and org not in self.window.alerted]
        global_crossed = (self.window.count(GLOBAL) > md.global_window
                          and GLOBAL not in self.window.alerted)
        in_tx = total > md.per_transaction
        self.window.alerted.update(crossed)
        if global_crossed:
            self.window.alerted.add(GLOBAL)
        self.window.rearm({"org": md.per_organization_window, GLOBAL: md.global_window})
        if not (in_tx or crossed or global_crossed):
            return None
        counts = {"removed": total, "deleted": total - f.deactivations,
                  "deactivated": f.deactivations}
        if in_tx:
            scope, what = "transaction", f"{total} relationship removals in one transaction"
        elif crossed:
            scope = "window"
            counts["window_removed"] = sum(self.window.count(o) for o in crossed)
            what = (f"{counts['window_removed']} relationship removals in "
                    f"{md.window_seconds:g} s in organization {', '.join(crossed)}")
        else:
            scope = "window"
            counts["window_removed"] = self.window.count(GLOBAL)
            what = (f"{counts['window_removed']} relationship removals in "
                    f"{md.window_seconds:g} s across all organizations")
        counts["window_seconds"] = int(md.window_seconds)
        org = next(iter(by_org)) if len(by_org) == 1 else None
        return self._alert(tx, Rule.MASS_DELETION, md.severity, scope, org,
                           f"Mass relationship deletion: {what} (transaction {tx.xid})",
                           counts, dict(by_org), f.removals)

    def _orphaned(self, tx: CompletedTransaction, f: _Findings) -> Alert | None:
        ou = self.rules.orphaned_user
        if not ou.enabled or f.memberships_lost_to_truncate:
            return None  # a TRUNCATE's alert already says how many memberships went
        orphans = sorted(u for u, before in f.users_before.items()
                         if before > 0 and self.memberships.user_count(u) == 0)
        if not orphans:
            return None
        rows = [f.lost_membership.get(u, {"from_entity_id": u}) for u in orphans]
        by_org = Counter(str(r.get("organization_id")) for r in rows)
        org = next(iter(by_org)) if len(by_org) == 1 else None
        return self._alert(
            tx, Rule.ORPHANED_USER, ou.severity, "transaction", org,
            f"{len(orphans)} user(s) lost their last active {ou.membership_type} "
            f"(transaction {tx.xid})",
            {"users_orphaned": len(orphans)}, dict(by_org), rows)

    def _role_removed(self, tx: CompletedTransaction, f: _Findings) -> Alert | None:
        rr = self.rules.role_removed
        if not rr.enabled:
            return None
        rows = [r for r in f.role_rows if self.memberships.is_member(
            str(r.get("entity_id")), str(r.get("organization_id")))]
        if not rows:
            return None
        by_org = Counter(str(r.get("organization_id")) for r in rows)
        org = next(iter(by_org)) if len(by_org) == 1 else None
        return self._alert(
            tx, Rule.ROLE_REMOVED, rr.severity, "transaction", org,
            f"Role data removed from {len(rows)} active member(s) (transaction {tx.xid})",
            {"roles_removed": len(rows)}, dict(by_org), rows)

    def _smart_code(self, tx: CompletedTransaction, f: _Findings) -> Alert | None:
        if not f.bad_codes:
            return None
        rows = [r for _, r in f.bad_codes]
        by_org = Counter(str(r.get("organization_id")) for r in rows)
        org = next(iter(by_org)) if len(by_org) == 1 else None
        codes = sorted({str(r.get("smart_code")) for r in rows})
        return self._alert(
            tx, Rule.SMART_CODE, self.rules.smart_code.severity, "transaction", org,
            f"{len(rows)} row(s) written with a smart code outside constraint v3, e.g. "
            f"{codes[0]!r} (transaction {tx.xid})",
            {"rows": len(rows), "distinct_codes": len(codes)}, dict(by_org), rows)

    def _alert(self, tx: CompletedTransaction, rule: Rule, severity: Severity, scope: str,
               org: str | None, message: str, counts: dict[str, int], by_org: dict[str, int],
               rows: list[Row]) -> Alert:
        return Alert(
            id=alert_id(rule, tx.commit_lsn, scope), severity=severity, rule=rule,
            organization=org, message=f"{message}, by {author_phrase(tx.author)}",
            counts=counts, by_organization=by_org,
            transaction=TransactionRef(xid=tx.xid, commit_lsn=format_lsn(tx.commit_lsn),
                                       commit_time=commit_time(tx.commit_us)),
            samples=tuple(_sample(r) for r in rows[: self.rules.samples]),
            replay_command=replay_command(self.archive_dir, tx.xid, self.dsn),
            detected_at=self.clock(), author=tx.author,
            actor_replay_command=actor_replay_command(
                self.archive_dir, tx.author.actor if tx.author else None, self.dsn),
        )
