"""Undo several transactions at once: every transaction of one actor (``--revert-actor``),
or several ``--revert-xid``.

The transactions are undone newest commit first, each with ``--revert-xid``'s rules: a row a
transaction changed is put back to what it was before it where it still holds what the
transaction left; otherwise it is a conflict, and conflicts refuse the whole run unless
``--skip-conflicts`` or ``--force``. Planning is pure: the live rows are read once, and each
transaction's plan is made against them as the plans of the later transactions would leave
them (``_simulate``, in DuckDB), so the dry run shows exactly what the real run applies. The
real run locks the tables first (writers wait), plans, then applies every plan in one
transaction: all of it or nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import psycopg
import pyarrow as pa
from psycopg import sql

from capture.author import author_phrase, printable
from capture.event import Author, format_lsn
from replay.apply import Applied, lock
from replay.coverage import check_coverage, commit_of
from replay.errors import BadPoint, ConflictsFound, UnknownTable
from replay.live import Conn, columns, primary_key, read_rows, require_privileges
from replay.plan import CONFLICT, Plan
from replay.rebuild import pk_paths
from replay.restore import WRITE_PRIVILEGES, _apply_all, _force, plan_undo
from replay.state import Progress, quiet
from replay.tables import TableId
from replay.values import key_sql


@dataclass(frozen=True)
class TxnRef:
    """One transaction to undo, as the archive's ``transactions`` view has it."""

    xid: int
    commit_lsn: int
    commit_ts: datetime | None
    author: Author | None

    def describe(self) -> str:
        """One line for the terminal: untrusted text escaped (capture.author.printable)."""
        when = self.commit_ts.isoformat() if self.commit_ts else "time unknown"
        return (f"transaction {self.xid} (commit {format_lsn(self.commit_lsn)}, {when}) by "
                f"{author_phrase(self.author)}")


@dataclass(frozen=True)
class Step:
    txn: TxnRef
    plans: list[Plan]


@dataclass(frozen=True)
class ManyOutcome:
    steps: list[Step]  # newest commit first, the order they are undone in
    applied: list[Applied]  # empty for a dry run
    dry_run: bool


ShowSteps = Callable[[list[Step]], None]

_AUTHOR_COLUMNS = ("db_user", "session_user", "application_name", "client_addr", "actor")


def _ref(row: tuple[object, ...]) -> TxnRef:
    xid, lsn, ts, *author = row
    values = dict(zip(_AUTHOR_COLUMNS, author, strict=True))
    known = any(v is not None for v in values.values())
    return TxnRef(int(str(xid)), int(str(lsn)), ts if isinstance(ts, datetime) else None,
                  Author(**{k: None if v is None else str(v) for k, v in values.items()})
                  if known else None)


_SELECT = ("SELECT t.xid, t.commit_lsn, t.commit_ts, t.db_user, t.session_user, "
           "t.application_name, t.client_addr, t.actor FROM transactions t ")


_BY_ACTOR = ("WHERE t.actor = $a AND ($since IS NULL OR t.commit_ts >= $since) "
             "AND ($until IS NULL OR t.commit_ts <= $until) "
             "AND EXISTS (SELECT 1 FROM changes c WHERE c.commit_lsn = t.commit_lsn) "
             "ORDER BY t.commit_lsn")


def actor_transactions(duck: duckdb.DuckDBPyConnection, actor: str, since: datetime | None,
                       until: datetime | None) -> list[TxnRef]:
    """The archived transactions whose ``hera.actor`` is exactly ``actor`` and that changed a
    captured table, committed in [since, until], in commit order; refuses none."""
    query = _SELECT + _BY_ACTOR
    found = [_ref(r) for r in duck.execute(
        query, {"a": actor, "since": since, "until": until}).fetchall()]
    if not found:
        window = "".join([f" from {since.isoformat()}" if since else "",
                          f" until {until.isoformat()}" if until else ""])
        known = duck.execute("SELECT count(DISTINCT actor) FROM transactions").fetchone()
        raise UnknownTable(
            f"no archived transaction of actor '{printable(actor)}'{window} changed a "
            f"captured table (the archive knows {known[0] if known else 0} actors: the "
            "transactions view's actor column lists them); nothing to revert")
    return found


def xid_transactions(duck: duckdb.DuckDBPyConnection, xids: Sequence[int]) -> list[TxnRef]:
    """The transactions ``xids`` (each must be in the archive), in commit order."""
    out = []
    for xid in dict.fromkeys(xids):
        commit = commit_of(duck, xid)
        rows = duck.execute(_SELECT + "WHERE t.commit_lsn = $c",
                            {"c": commit}).fetchall()
        out.append(_ref(rows[0]) if rows else TxnRef(xid, commit, None, None))
    return sorted(out, key=lambda t: t.commit_lsn)


def _tables_of(duck: duckdb.DuckDBPyConnection, txn: TxnRef) -> list[TableId]:
    tables = [TableId(str(s), str(n)) for s, n in duck.execute(
        "SELECT DISTINCT table_schema, table_name FROM changes WHERE commit_lsn = $c "
        "ORDER BY 1, 2", {"c": txn.commit_lsn}).fetchall()]
    if not tables:
        raise UnknownTable(f"transaction {txn.xid} changed no captured table; nothing to "
                           "revert")
    return tables


def _simulate(duck: duckdb.DuckDBPyConnection, live: pa.Table, plan: Plan) -> pa.Table:
    """``live`` (a ``row`` column) as ``plan`` would leave it: rows of the keys it writes or
    removes replaced by what it writes."""
    duck.register("_sim_live", live)
    duck.register("_sim_ops", plan.ops)
    try:
        return duck.sql(
            f"""
            SELECT row::VARCHAR AS row FROM _sim_live
            WHERE {key_sql('row')} NOT IN (SELECT key FROM _sim_ops WHERE key IS NOT NULL)
            UNION ALL
            SELECT row::VARCHAR FROM _sim_ops WHERE action IN ('insert', 'update')
            """, params={"pk": pk_paths(plan.pk)}).to_arrow_table()  # noqa: S608 - our SQL
    finally:
        duck.unregister("_sim_live")
        duck.unregister("_sim_ops")


def revert_transactions(duck: duckdb.DuckDBPyConnection, pg: Conn, txns: Sequence[TxnRef],
                        *, what: str, dry_run: bool = False, force: bool = False,
                        skip_conflicts: bool = False, allow_orphaning: bool = False,
                        show: ShowSteps | None = None,
                        progress: Progress = quiet) -> ManyOutcome:
    """Undo ``txns`` newest first, in one PostgreSQL transaction (see the module docstring).
    ``what``: how the report and the guardian's log name the run."""
    if not txns:
        raise BadPoint("no transaction to revert")
    order = sorted(txns, key=lambda t: t.commit_lsn, reverse=True)
    tables_of = {t.commit_lsn: _tables_of(duck, t) for t in order}
    every = sorted({tb for tbs in tables_of.values() for tb in tbs}, key=str)
    for t in order:
        for tb in tables_of[t.commit_lsn]:
            check_coverage(duck, t.commit_lsn, tb)
    for tb in every:
        require_privileges(pg, tb, ("SELECT",) if dry_run else WRITE_PRIVILEGES)
    steps: list[Step] = []
    effective: list[Plan] = []
    applied: list[Applied] = []
    with pg.transaction() as tx:
        if not dry_run:
            progress(f"locking {', '.join(map(str, every))} (writers wait until the revert "
                     "commits)")
            lock(pg, [sql.Identifier(tb.schema, tb.name) for tb in every])
        cols = {tb: columns(pg, tb) for tb in every}
        live: dict[TableId, pa.Table] = {}
        for tb in every:
            progress(f"reading live rows of {tb}")
            live[tb] = read_rows(pg, tb, cols[tb])
        for k, txn in enumerate(order):
            progress(f"planning the undo of {txn.describe()}")
            plans = []
            for i, tb in enumerate(tables_of[txn.commit_lsn]):
                plan = plan_undo(duck, tb, txn.commit_lsn, cols[tb], primary_key(pg, tb),
                                 live[tb], f"m{k}_{i}")
                plans.append(plan)
                # --force: conflicting rows too become what they were before the transaction
                done = _force(plan) if force else plan.without_conflicts()
                effective.append(done)
                live[tb] = _simulate(duck, live[tb], done)
            steps.append(Step(txn, plans))
        if show is not None:
            show(steps)
        conflicts = sum(p.count(CONFLICT) for s in steps for p in s.plans)
        if dry_run:
            raise psycopg.Rollback(tx)
        if conflicts and not (force or skip_conflicts):
            raise ConflictsFound(
                f"{conflicts} rows changed after the transactions of {what} (listed above); "
                "nothing applied - rerun with --skip-conflicts to revert the others, or "
                "--force")
        applied = _apply_all(pg, effective, what, allow_orphaning)
    return ManyOutcome(steps, applied, dry_run)
