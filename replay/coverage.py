"""Which points the archive can answer, and resolving the user's point to an LSN.

An epoch is one slot's life: SNAPSHOT_START/SNAPSHOT_END at ``epoch_lsn``, then the stream.
Within an epoch the archive reaches the highest PROGRESS ``lsn`` or the latest archived
commit, whichever is higher; in time, the latest server time either vouches for: a PROGRESS
marker's ``commit_ts`` (PostgreSQL's commit time of the newest commit at or before its LSN)
or an archived commit's time. Never a marker's ``ts``: capture's clock when it published,
which runs ahead of the WAL it has read by capture's lag.

A point X is answerable iff an epoch with a finished snapshot of the table has
``epoch_lsn <= X``, reaches X, and every transaction of that epoch committed at or before X
is complete in the archive (archived events per table equal the END counts).
A time after an epoch that a later epoch follows is answerable only up to that epoch's last
archived commit: what capture lost in the gap may be older than its last PROGRESS marker.

These functions only read the given DuckDB connection (views ``changes``, ``transactions``,
``markers`` as consumers/archive/reader.py provides them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

import duckdb

from capture.event import format_lsn
from replay.errors import NotCovered, UnknownTransaction
from replay.point import BeforeXid, LsnPoint, Point, TimePoint
from replay.rebuild import raw_source
from replay.tables import TableId, first, quote_duck


@dataclass(frozen=True)
class Epoch:
    slot: str
    epoch_lsn: int
    started: datetime  # every commit the snapshot holds is at or before it (server time)
    snapshot_done: bool
    tables: frozenset[str]
    reach_lsn: int  # everything committed at or before it is archived
    # The latest server commit time the epoch vouches for (archived commits, PROGRESS
    # markers' commit_ts): every commit up to it is archived, to the precision stated in
    # docs/event-contract.md.
    reach_ts: datetime | None
    end_lsn: int | None  # the next epoch's epoch_lsn: commits from there belong to it
    # The latest archived commit's time: before a gap, the last time the epoch can vouch for
    # (a PROGRESS marker's time is capture's clock when it published an LSN, which trails the
    # WAL by capture's lag: commits lost in the gap may be older than it).
    last_change_ts: datetime | None = None

    def covers_table(self, table: TableId) -> bool:
        return not self.tables or str(table) in self.tables

    def describe(self) -> str:
        return f"{format_lsn(self.epoch_lsn)}..{format_lsn(self.reach_lsn)} (slot {self.slot})"


@dataclass(frozen=True)
class Base:
    """A base snapshot's position: its rows are the state at ``lsn``, taken at ``taken``."""

    lsn: int
    taken: datetime | None = None


@dataclass(frozen=True)
class Resolved:
    upto_lsn: int
    epoch: Epoch | None  # None: a base snapshot alone answers (point == its LSN)


def epochs(conn: duckdb.DuckDBPyConnection) -> list[Epoch]:
    """Every epoch in the archive, oldest first, with how far it reaches."""
    rows = conn.execute(
        """
        SELECT slot, epoch_lsn,
               -- the server's time after the slot was created; capture's clock in markers
               -- written before it was recorded
               coalesce(min(commit_ts) FILTER (WHERE status = 'SNAPSHOT_START'), min(ts)),
               bool_or(status = 'SNAPSHOT_END'),
               list_distinct(flatten(list(tables))),
               max(lsn) FILTER (WHERE status = 'PROGRESS'),
               max(commit_ts) FILTER (WHERE status = 'PROGRESS')
        FROM markers GROUP BY slot, epoch_lsn ORDER BY epoch_lsn, slot
        """
    ).fetchall()
    starts = [int(r[1]) for r in rows]
    out: list[Epoch] = []
    for i, (slot, elsn, started, done, tables, plsn, pts) in enumerate(rows):
        nxt = next((s for s in starts[i + 1:] if s > int(elsn)), None)
        last = first(conn.execute(
            "SELECT max(commit_lsn), max(commit_ts) FROM transactions "
            "WHERE commit_lsn > $lo AND ($hi IS NULL OR commit_lsn < $hi)",
            {"lo": int(elsn), "hi": nxt},
        ))
        last_lsn, last_ts = (last or (None, None))
        reach = max(int(elsn), int(plsn or 0), int(last_lsn or 0))
        stamps = [t for t in (pts, last_ts) if t is not None]
        out.append(Epoch(slot=slot, epoch_lsn=int(elsn), started=started,
                         snapshot_done=bool(done), tables=frozenset(tables or ()),
                         reach_lsn=reach, reach_ts=max(stamps) if stamps else None,
                         end_lsn=nxt, last_change_ts=last_ts))
    return out


def describe_coverage(eps: list[Epoch], table: TableId) -> str:
    usable = [e for e in eps if e.snapshot_done and e.covers_table(table)]
    if not usable:
        return f"the archive holds no finished snapshot of {table}"
    return "the archive covers " + ", ".join(e.describe() for e in usable)


def resolve_point(conn: duckdb.DuckDBPyConnection, point: Point, table: TableId,
                  base: Base | None = None) -> int:
    """The LSN (inclusive) a point stands for."""
    if isinstance(point, LsnPoint):
        return point.lsn
    if isinstance(point, BeforeXid):
        return commit_of(conn, point.xid) - 1
    return _resolve_time(conn, point, table, base)


def commit_of(conn: duckdb.DuckDBPyConnection, xid: int) -> int:
    """The commit LSN of transaction ``xid`` (refuses unknown or ambiguous ids)."""
    src = quote_duck(raw_source(conn, "changes"))
    found = [int(r[0]) for r in conn.execute(
        "SELECT DISTINCT commit_lsn FROM transactions WHERE xid = $x "  # noqa: S608
        f"UNION SELECT DISTINCT commit_lsn FROM {src} "
        "WHERE xid = $x ORDER BY 1",
        {"x": xid}).fetchall()]
    if not found:
        span = first(conn.execute("SELECT min(xid), max(xid) FROM transactions"))
        held = f"archived ids {span[0]}..{span[1]}" if span and span[0] is not None else \
            "no transactions archived"
        raise UnknownTransaction(f"transaction {xid} is not in the archive ({held})"
                                 f"{_xid_in_gap(conn, xid)}; check the id with "
                                 "`consumers history`")
    if len(found) > 1:
        raise UnknownTransaction(
            f"transaction id {xid} occurs more than once (xid wraparound or a new cluster): "
            f"commits at {', '.join(map(format_lsn, found))}; use --until LSN instead")
    return found[0]


def _xid_in_gap(conn: duckdb.DuckDBPyConnection, xid: int) -> str:
    """Where an id the archive lacks lies between the last transaction archived before a gap
    and the first after it: it may have committed inside the gap, which no point can see."""
    eps = epochs(conn)
    for ep, nxt in pairwise(eps):
        if nxt.epoch_lsn <= ep.epoch_lsn:
            continue
        span = first(conn.execute(
            "SELECT (SELECT max(xid) FROM transactions WHERE commit_lsn > $a AND "
            "commit_lsn < $b), (SELECT min(xid) FROM transactions WHERE commit_lsn > $b)",
            {"a": ep.epoch_lsn, "b": nxt.epoch_lsn}))
        lo, hi = span if span else (None, None)
        if (lo is None or xid > int(lo)) and (hi is None or xid < int(hi)) and (
                lo is not None or hi is not None):
            return (f"; it lies between the transactions archived before and after a "
                    f"{describe_gap(ep, nxt)}: if it committed in that gap, no point just "
                    "before it can be rebuilt")
    return ""


def _resolve_time(conn: duckdb.DuckDBPyConnection, point: TimePoint, table: TableId,
                  base: Base | None) -> int:
    at = point.at
    row = first(conn.execute(
        "SELECT max(commit_lsn) FROM transactions WHERE commit_ts <= $at", {"at": at}
    ))
    candidates = [int(row[0])] if row and row[0] is not None else []
    eps = epochs(conn)
    candidates += [e.epoch_lsn for e in eps if e.snapshot_done and e.started <= at]
    if base is not None and base.taken is not None and base.taken <= at:
        candidates.append(base.lsn)
    if not candidates:
        oldest = min((e.started for e in eps), default=None)
        raise NotCovered(
            f"{point.describe()} is before the oldest snapshot"
            + (f" ({oldest.isoformat()})" if oldest else "")
            + f"; {describe_coverage(eps, table)}; use --base-snapshot with an older backup")
    lsn = max(candidates)
    ep = _epoch_at(eps, lsn, table)
    if base is not None and lsn == base.lsn and base.taken == at:
        return lsn  # the base snapshot's own moment: its rows are the answer
    if ep is not None and any(e.epoch_lsn > ep.epoch_lsn for e in eps):
        # A later epoch whose snapshot came after the time (else it would answer): capture
        # lost what was committed after this epoch's last archived change.
        if _edge(ep) < at:
            nxt = _next_usable(eps, ep, table)
            if nxt is None:
                raise NotCovered(
                    f"{point.describe()} is after the last change archived in epoch "
                    f"{ep.describe()} ({_when(_edge(ep))}) and no later epoch "
                    f"holds a finished snapshot of {table}: capture started again after a "
                    "gap; wait for its snapshot to finish or pick an earlier time")
            raise NotCovered(f"{point.describe()} is in a gap of the archive: "
                             f"{describe_gap(ep, nxt)}; pick a time at or before "
                             f"{_when(_edge(ep))} or at or after {_when(nxt.started)}")
    elif ep is not None and (ep.reach_ts is None or ep.reach_ts < at):
        # The newest epoch's record ends before the time: capture has not got there.
        seen = ep.reach_ts.isoformat() if ep.reach_ts else ep.started.isoformat()
        raise NotCovered(
            f"{point.describe()} is beyond the archive: it reaches {seen} "
            f"(LSN {format_lsn(ep.reach_lsn)}); wait for capture to catch up or pick "
            "an earlier time")
    return lsn


def _edge(ep: Epoch) -> datetime:
    """The last moment an epoch followed by another vouches for: its last archived commit."""
    return ep.last_change_ts or ep.started


def _when(at: datetime) -> str:
    return at.isoformat()


def _next_usable(eps: list[Epoch], ep: Epoch, table: TableId) -> Epoch | None:
    """The next epoch that can answer for ``table`` (an interrupted snapshot cannot)."""
    return next((e for e in eps if e.epoch_lsn > ep.epoch_lsn and e.snapshot_done
                 and e.covers_table(table)), None)


def describe_gap(ep: Epoch, nxt: Epoch) -> str:
    """One gap between epochs, by LSN and time, the same words for every point kind."""
    end = _edge(ep)
    return (f"gap from {format_lsn(ep.reach_lsn)} to {format_lsn(nxt.epoch_lsn)} "
            f"({_when(end)} to {_when(nxt.started)}: capture stopped and its slot {ep.slot} "
            f"was lost or re-created; no change between them was captured, the next epoch "
            f"starts with a new snapshot)")


def _epoch_at(eps: list[Epoch], lsn: int, table: TableId) -> Epoch | None:
    usable = [e for e in eps if e.snapshot_done and e.covers_table(table) and e.epoch_lsn <= lsn]
    return usable[-1] if usable else None


def check_coverage(conn: duckdb.DuckDBPyConnection, upto: int, table: TableId,
                   base: Base | None = None, changes: str = "changes") -> Resolved:
    """Refuse points the archive cannot answer exactly; return the epoch that answers.
    ``changes``: a relation holding every change after ``base`` (replay/tail.py's: the
    completeness check then reads the tail's files, not every file of the archive)."""
    eps = epochs(conn)
    if base is not None:
        if upto < base.lsn:
            raise NotCovered(f"the point {format_lsn(upto)} is before the base snapshot's LSN "
                             f"{format_lsn(base.lsn)}; pick an older backup")
        if upto == base.lsn:
            return Resolved(upto, None)
    start = base.lsn if base is not None else upto
    ep = _epoch_at(eps, start, table)
    if ep is None:
        oldest = min((e.epoch_lsn for e in eps if e.covers_table(table)), default=None)
        where = "base snapshot's LSN" if base is not None else "point"
        raise NotCovered(
            f"the {where} {format_lsn(start)} is before the oldest snapshot"
            + (f" at {format_lsn(oldest)}" if oldest is not None else "")
            + f"; {describe_coverage(eps, table)}"
            + ("" if base is not None else "; use --base-snapshot with an older backup"))
    if ep.reach_lsn < upto or (ep.end_lsn is not None and upto >= ep.end_lsn):
        nxt = next((e for e in eps if e.epoch_lsn > ep.epoch_lsn), None)
        if nxt is None:
            # The newest epoch simply has not reached the point yet: nothing is lost.
            raise NotCovered(
                f"the archive is behind: archived up to {format_lsn(ep.reach_lsn)} "
                f"(slot {ep.slot}), the point {format_lsn(upto)} is later; wait for capture "
                "and the archiver to catch up, or pick an earlier point")
        nxt = _next_usable(eps, ep, table) or nxt
        gap = f"; {describe_gap(ep, nxt)}" if upto < nxt.epoch_lsn else ""
        raise NotCovered(f"the archive does not cover {format_lsn(upto)}: "
                         f"{describe_coverage(eps, table)}{gap}")
    _check_complete(conn, lo=base.lsn if base is not None else ep.epoch_lsn, hi=upto,
                    changes=changes if base is not None else "changes")
    return Resolved(upto, ep)


def _check_complete(conn: duckdb.DuckDBPyConnection, lo: int, hi: int,
                    changes: str = "changes") -> None:
    # Counting distinct positions on the raw relation equals counting the deduplicated
    # view's rows, without the view's cost.
    src = quote_duck(raw_source(conn, changes))
    bad = conn.execute(
        f"""
        WITH expected AS (
            SELECT t.commit_lsn, t.xid, d.data_collection AS tbl, d.event_count AS n
            FROM transactions t,
                 unnest(from_json(t.data_collections,
                        '[{{"data_collection":"VARCHAR","event_count":"BIGINT"}}]')) AS u(d)
            WHERE t.commit_lsn > $lo AND t.commit_lsn <= $hi
        ),
        actual AS (
            SELECT commit_lsn, table_schema || '.' || table_name AS tbl,
                   count(DISTINCT position) AS n
            FROM {src} WHERE (NOT snapshot OR xid IS NOT NULL)  -- re-read rows count
                  AND commit_lsn > $lo AND commit_lsn <= $hi
            GROUP BY ALL
        )
        SELECT coalesce(e.commit_lsn, a.commit_lsn) AS c, e.xid, coalesce(e.tbl, a.tbl),
               coalesce(e.n, 0), coalesce(a.n, 0)
        FROM expected e FULL JOIN actual a ON e.commit_lsn = a.commit_lsn AND e.tbl = a.tbl
        WHERE e.n IS DISTINCT FROM a.n
        ORDER BY c LIMIT 3
        """,  # noqa: S608 - our own relation name
        {"lo": lo, "hi": hi},
    ).fetchall()
    if bad:
        c, xid, tbl, want, got = bad[0]
        what = (f"transaction {xid if xid is not None else '(no END record yet)'} at "
                f"{format_lsn(int(c))} has {got} of {want if xid is not None else '?'} "
                f"events of {tbl}")
        schema, _, name = str(tbl).partition(".")
        later = first(conn.execute(
            f"SELECT 1 FROM {src} WHERE (NOT snapshot OR xid IS NOT NULL) AND commit_lsn > $c "  # noqa: S608
            "AND table_schema = $s AND table_name = $t LIMIT 1",
            {"c": int(c), "s": schema, "t": name}))
        if later is None:
            # Nothing of the table after it: the archiver is still writing this transaction
            # (its events and its END record come from different topics).
            done = first(conn.execute(
                "SELECT max(commit_lsn) FROM transactions WHERE commit_lsn < $c", {"c": int(c)}))
            upto = format_lsn(int(done[0])) if done and done[0] is not None else format_lsn(lo)
            raise NotCovered(
                f"the archive is behind: archived up to {upto}; {what} so far; wait for "
                f"the archiver to catch up, or pick a point before {format_lsn(int(c))}")
        raise NotCovered(
            f"the archive has a gap at {format_lsn(int(c))}: {what} while later changes of "
            f"{tbl} are archived; pick a point before {format_lsn(int(c))} or re-archive "
            "from Kafka")

