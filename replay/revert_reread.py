"""--revert-xid of a transaction from before a rewriting DDL, once capture's re-read of the
table after that DDL has ended (replay/rereads.py).

The revert's states are in the transaction's schema; the live table is in today's. Brought
forward through the DDL, a column the rewrite computed (``ALTER ... TYPE ... USING``, a
volatile default, an unrecorded change) holds a value nobody recorded. The re-read recorded
every row's value after the DDL, so for a row the transaction touched:

- after it (what the row reads today if untouched since): the row as the re-read's end
  holds it, provided nothing but re-read rows touched the key between the transaction and
  that end (else the row changed after it with a value nobody recorded: refused);
- before it: every column the transaction changed must be known in today's type (else
  refused naming the column and the DDL); a column it did not change is the same before and
  after it, so its rewritten value is the re-read's, unless the rewrite computed it from a
  column the transaction changed (a ``USING`` naming that column; an unrecorded change that
  did more than add columns): refused.

Exact or refused: every refusal is one line naming the key, the column and the DDL.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace

import duckdb
import pyarrow as pa

from capture.event import format_lsn
from replay.coverage import check_coverage
from replay.rebuild import pk_paths
from replay.rereads import end_after, reread_ends
from replay.schema import SENTINEL, Col, SchemaChangeRefused, Step, same_type
from replay.state import State, materialize, state_at
from replay.tables import TableId, first, quote_duck
from replay.values import key_sql

_MISSING = object()
_views = itertools.count()
_IDENT = re.compile(r'"((?:[^"]|"")*)"|([A-Za-z_][A-Za-z0-9_$]*)')


def heal(duck: duckdb.DuckDBPyConnection, t: TableId, commit: int, types: dict[str, str],
         before: State, after: State, touched: str, generated: frozenset[str],
         refused: SchemaChangeRefused, tag: str) -> tuple[State, State]:
    """``before`` and ``after`` with the touched rows' unknown values filled from the re-read
    (module doc); ``refused`` (the refusal without a re-read) when no re-read ended after
    every lossy DDL following the transaction."""
    lossy = [(s, prev) for s, prev in before.steps
             if s.may_lose and s.change.commit_lsn > commit]
    if not lossy:
        raise refused  # only DDLs before the transaction: its own state is unknown
    end = end_after(reread_ends(duck, t), max(s.change.commit_lsn for s, _ in lossy))
    if end is None:
        raise refused
    xid = _xid(duck, commit)
    here, there = (check_coverage(duck, lsn, t).epoch for lsn in (commit, end))
    if here is None or there is None or here.epoch_lsn != there.epoch_lsn:
        raise SchemaChangeRefused(
            f"cannot revert transaction {xid} exactly: the re-read after the schema change "
            f"ended at {format_lsn(end)}, in another capture epoch than the transaction "
            "(changes in the gap between them were not captured)")
    _untouched_until(duck, t, commit, end, before.pk, touched, xid)
    reread = materialize(duck, state_at(duck, t, end, live_pk=before.pk, live_types=types,
                                        forward=True, strict=False), f"_reread{tag}")
    raw_before = _rows(duck, state_at(duck, t, commit - 1, live_pk=before.pk,
                                      live_types=types, strict=False), touched)
    raw_after = _rows(duck, state_at(duck, t, commit, live_pk=before.pk, live_types=types,
                                     strict=False), touched)
    then = _rows(duck, reread, touched)
    if any(k not in then for k in raw_after):
        raise refused  # a row the re-read should hold is missing: never guess
    new_after = {k: then[k] for k in raw_after}
    new_before: dict[str, tuple[str, str]] = {}
    for key, (row, ord_) in _rows(duck, before, touched).items():
        if key not in raw_before:
            continue
        was = json.loads(raw_before[key][0])
        now = json.loads(raw_after[key][0]) if key in raw_after else None
        changed = {c for c in {*was, *(now or {})}
                   if now is None or was.get(c, _MISSING) != now.get(c, _MISSING)}
        out = json.loads(row)
        for col, value in out.items():
            if col in generated or not _unknown(value):
                continue
            origin = before.steps[int(value[len(SENTINEL):])][0]
            if origin.change.commit_lsn <= commit:
                raise refused  # unknown already before the transaction
            why = _why_unknown(col, changed, lossy, now is None)
            if why is None and now is not None:
                out[col] = json.loads(new_after[key][0]).get(col)
                continue
            raise SchemaChangeRefused(
                f"cannot revert transaction {xid} exactly: row {key} of {t} "
                f"{why or 'was deleted by it with a value nobody recorded'}; the re-read "
                "recorded only its value after the transaction")
        new_before[key] = (json.dumps(out, ensure_ascii=False), ord_)
    return (_with_rows(duck, before, touched, new_before, f"_healed_before{tag}"),
            _with_rows(duck, after, touched, new_after, f"_healed_after{tag}"))


def _xid(duck: duckdb.DuckDBPyConnection, commit: int) -> object:
    row = first(duck.execute("SELECT xid FROM transactions WHERE commit_lsn = $c LIMIT 1",
                             {"c": commit}))
    return row[0] if row else f"at {format_lsn(commit)}"


def _untouched_until(duck: duckdb.DuckDBPyConnection, t: TableId, commit: int, end: int,
                     pk: list[str], touched: str, xid: object) -> None:
    """Refuse when a change other than a re-read row touched a key of the transaction after
    it and up to the re-read's end: the row's value after the transaction, in today's
    columns, was then never recorded."""
    params = {"s": t.schema, "t": t.name, "c": commit, "e": end, "pk": pk_paths(pk)}
    where = "table_schema = $s AND table_name = $t AND commit_lsn > $c AND commit_lsn <= $e"
    cut = first(duck.execute(f"SELECT min(commit_lsn) FROM changes WHERE {where} "  # noqa: S608
                             "AND op = 't'", {k: v for k, v in params.items() if k != "pk"}))
    if cut and cut[0] is not None:
        raise SchemaChangeRefused(
            f"cannot revert transaction {xid} exactly: {t} was truncated at "
            f"{format_lsn(int(cut[0]))}, after it and before capture's re-read ended at "
            f"{format_lsn(end)}; the rows it touched read today with values nobody recorded")
    row = first(duck.execute(
        f"""
        SELECT k.key, min(c.commit_lsn) FROM (
            SELECT {key_sql('after')} AS key, commit_lsn FROM changes
            WHERE {where} AND op <> 'r' AND after IS NOT NULL
            UNION ALL SELECT {key_sql('coalesce(before, key)')}, commit_lsn FROM changes
            WHERE {where} AND op IN ('u', 'd') AND coalesce(before, key) IS NOT NULL
        ) c JOIN {quote_duck(touched)} k ON k.key = c.key GROUP BY k.key ORDER BY 2 LIMIT 1
        """, params))  # noqa: S608 - our own SQL
    if row is not None:
        raise SchemaChangeRefused(
            f"cannot revert transaction {xid} exactly: row {row[0]} of {t} changed again at "
            f"{format_lsn(int(row[1]))}, before capture's re-read after the schema change "
            f"ended at {format_lsn(end)}, so its value after the transaction in today's "
            "columns was never recorded")


def _rows(duck: duckdb.DuckDBPyConnection, st: State, touched: str
          ) -> dict[str, tuple[str, str]]:
    """key -> (row JSON, ord as text) of the touched keys of ``st``."""
    view = f"_heal_rows_{next(_views)}"
    st.rel.create_view(view, replace=True)
    return {str(k): (str(r), str(o)) for k, r, o in duck.execute(
        f"SELECT key, row, ord::VARCHAR FROM {quote_duck(view)} "  # noqa: S608 - our own names
        f"WHERE key IN (SELECT key FROM {quote_duck(touched)})").fetchall()}


def _unknown(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SENTINEL)


def _why_unknown(col: str, changed: set[str], lossy: list[tuple[Step, list[Col]]],
                 deleted: bool) -> str | None:
    """Why ``col``'s value before the transaction is unknown in today's type (None: it is
    the value after the transaction, which the re-read holds)."""
    for step, prev in lossy:
        if col not in step.lost:
            continue
        ddl = step.change.describe()
        if deleted or col in changed:
            return (f"had column {col} changed by the transaction and rewritten by {ddl}: "
                    "its value before the transaction in today's type was never computed")
        if step.change.recorded:
            named = _identifiers(step.change.ddl or "") & changed
            if named:
                return (f"had column {', '.join(sorted(named))} changed by the transaction, "
                        f"and {ddl} names it when it computes column {col}")
        elif changed and not _only_added(prev, step.change.columns):
            return (f"had columns changed by the transaction, and {ddl} may have computed "
                    f"column {col} from them (it did more than add columns)")
    return None


def _identifiers(ddl: str) -> set[str]:
    """Every identifier a DDL spells (unquoted ones folded to lower case, as PostgreSQL
    does): more than the columns a rewrite reads, never fewer."""
    return {q.replace('""', '"') if q else u.lower() for q, u in _IDENT.findall(ddl)}


def _only_added(prev: list[Col], now: tuple[Col, ...]) -> bool:
    """Every old column is still there with its type: the change only added columns, whose
    values (a default) cannot depend on another column."""
    by_name = {c.name: c for c in now}
    return all(c.name in by_name and same_type(c.type, by_name[c.name].type) for c in prev)


def _with_rows(duck: duckdb.DuckDBPyConnection, st: State, touched: str,
               rows: dict[str, tuple[str, str]], name: str) -> State:
    """``st`` with its touched keys' rows replaced by ``rows`` (a key absent: no row)."""
    new = pa.table({"key": pa.array(list(rows), pa.string()),
                    "row": pa.array([r for r, _ in rows.values()], pa.string()),
                    "ord": pa.array([o for _, o in rows.values()], pa.string())})
    duck.register(f"{name}_new", new)
    view = f"{name}_src"
    st.rel.create_view(view, replace=True)
    duck.execute(f"DROP TABLE IF EXISTS {quote_duck(name)}")
    duck.execute(
        f"CREATE TEMP TABLE {quote_duck(name)} AS "  # noqa: S608 - our own names
        f"SELECT key, row, ord FROM {quote_duck(view)} "
        f"WHERE key NOT IN (SELECT key FROM {quote_duck(touched)}) "
        f"UNION ALL SELECT key, row, ord::HUGEINT FROM {quote_duck(name + '_new')}")
    return replace(st, rel=duck.table(name))
