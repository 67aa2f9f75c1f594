"""Schema changes (DDL on a captured table) applied to a rebuilt state at their place in WAL.

The archive's relation ``schema_changes`` (docs/schema-log.md) holds, per DDL, the table's whole
definition right after it (columns with attnum, type, default, missing value), at
``(commit_lsn, position)``. A row the state holds was written by its last event with the
columns of that moment; every DDL after that event changes it the way PostgreSQL changed the
stored row:

- ADD COLUMN: the column's ``missing`` value (PostgreSQL's attmissingval: what rows that
  existed at the DDL read, even if never updated since), NULL without a default. A default
  without a missing value (a volatile default, a generated column: the table was rewritten
  with values nobody recorded) makes those rows unknowable;
- DROP COLUMN: gone; RENAME COLUMN: renamed, value kept (matched by attnum);
- ALTER COLUMN TYPE: the value converted where replay can do exactly what PostgreSQL's
  assignment cast does (same text, or zero padding, or trailing-space trimming); a USING
  clause or any other conversion makes those rows unknowable.

Unknowable values become a sentinel (a string PostgreSQL text cannot hold: it starts with
NUL) so a later DROP of the column forgets them; a state that still holds one is refused,
naming the DDL. An unrecorded schema change (capture saw the columns change without the
schema log) refuses every point after it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import duckdb

from capture.event import format_lsn
from replay.errors import ReplayError
from replay.rereads import window_note
from replay.tables import TableId, first, quote_duck
from replay.values import encode_text_sql, encoded_literal, literal

SENTINEL = "\x00hera-unknown:"
# The sentinel as it appears inside JSON text (NUL is escaped), for a plain text search.
_SENTINEL_JSON = "\\u0000hera-unknown:"


class SchemaChangeRefused(ReplayError):
    """A point (or revert) replay cannot answer exactly because of a schema change."""


@dataclass(frozen=True)
class Col:
    name: str
    type: str
    attnum: int | None = None  # None: known only from an event's ``types`` (no attnum)
    default: str | None = None
    missing: str | None = None
    has_missing: bool = False


@dataclass(frozen=True)
class SchemaChange:
    commit_lsn: int
    position: int
    xid: int | None
    ddl: str | None
    recorded: bool
    columns: tuple[Col, ...]
    # An epoch's starting definition (its SNAPSHOT_START marker), not a DDL: never applied,
    # only matched against (it gives the first DDL of the epoch its attnums).
    baseline: bool = False

    @property
    def ord(self) -> int:
        return self.commit_lsn * 4294967296 + self.position

    def describe(self) -> str:
        where = f"transaction {self.xid} at {format_lsn(self.commit_lsn)}"
        if not self.recorded:
            cols = ", ".join(c.name for c in self.columns)
            return (f"an unrecorded schema change ({where}: the columns became {cols}; the "
                    "schema log, sql/08_schema_log.sql, was not installed)")
        text = " ".join((self.ddl or "?").split())
        return f"`{text if len(text) <= 160 else text[:159] + '…'}` ({where})"


def _has_relation(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = first(conn.execute("SELECT count(*) FROM information_schema.tables "
                               "WHERE table_name = $n", {"n": name}))
    return bool(found and found[0])


def _has_column(conn: duckdb.DuckDBPyConnection, relation: str, column: str) -> bool:
    found = first(conn.execute("SELECT count(*) FROM information_schema.columns "
                               "WHERE table_name = $r AND column_name = $c",
                               {"r": relation, "c": column}))
    return bool(found and found[0])


def _cols(items: list[dict[str, object]]) -> tuple[Col, ...]:
    def opt(v: object) -> str | None:
        return None if v is None else str(v)

    return tuple(Col(name=str(c["name"]), type=str(c["type"]),
                     attnum=None if c.get("attnum") is None else int(str(c["attnum"])),
                     default=opt(c.get("default")), missing=opt(c.get("missing")),
                     has_missing=bool(c.get("has_missing")))
                 for c in items)


def load_baselines(conn: duckdb.DuckDBPyConnection, table: TableId) -> list[SchemaChange]:
    """The table's definition at the start of each epoch that recorded one (markers
    SNAPSHOT_START ``definitions``; archives from before have none)."""
    if not (_has_relation(conn, "markers") and _has_column(conn, "markers", "definitions")):
        return []
    rows = conn.execute(
        "SELECT DISTINCT epoch_lsn, definitions::VARCHAR FROM markers "
        "WHERE status = 'SNAPSHOT_START' AND definitions IS NOT NULL").fetchall()
    out = []
    for epoch_lsn, text in rows:
        items = json.loads(text or "{}").get(str(table))
        if items:
            out.append(SchemaChange(int(epoch_lsn), -1, None, None, True, _cols(items),
                                    baseline=True))
    return out


def load_schema_changes(conn: duckdb.DuckDBPyConnection, table: TableId,
                        with_baselines: bool = False) -> list[SchemaChange]:
    """Every archived schema change of ``table``, in WAL order (none for old archives);
    ``with_baselines``: and each epoch's starting definition, in its place."""
    baselines = load_baselines(conn, table) if with_baselines else []
    if not _has_relation(conn, "schema_changes"):
        return baselines
    rows = conn.execute(
        "SELECT DISTINCT commit_lsn, position, xid, ddl, recorded, columns::VARCHAR "
        "FROM schema_changes WHERE table_schema = $s AND table_name = $t "
        "ORDER BY commit_lsn, position", {"s": table.schema, "t": table.name}).fetchall()
    out = list(baselines)
    for lsn, pos, xid, ddl, recorded, cols in rows:
        out.append(SchemaChange(int(lsn), int(pos), None if xid is None else int(xid),
                                None if ddl is None else str(ddl), bool(recorded),
                                _cols(json.loads(cols or "[]"))))
    return sorted(out, key=lambda c: c.ord)


# --- what one DDL does to a row written before it ---------------------------------------

_INTS = {"smallint": 1, "integer": 2, "bigint": 3}
_NUMERIC = re.compile(r"^numeric(?:\((\d+)(?:,(\d+))?\))?$")
_VARCHAR = re.compile(r"^(?:text|character varying(?:\(\d+\))?)$")
_BPCHAR = re.compile(r"^character(?:\((\d+)\))?$")
_TS = re.compile(r"^(timestamp|time)(?:\((\d)\))? (with|without) time zone$")
_USING = re.compile(r"\bUSING\b", re.IGNORECASE)


def _scale(pg_type: str) -> int | None:
    """The scale of a numeric type (0 for integers), None for unconstrained numeric."""
    if pg_type in _INTS:
        return 0
    m = _NUMERIC.match(pg_type)
    if m is None:
        return -1
    if m.group(1) is None:
        return None
    return int(m.group(2) or 0)


def same_type(a: str, b: str) -> bool:
    """The same type spelled by capture (schema-qualified outside pg_catalog: public.mood)
    or, in archives written before that spelling was fixed, as the session's search_path
    showed it (mood)."""
    if a == b:
        return True
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return "." in long_ and long_.partition(".")[2] == short


def conversion(old: str, new: str, ddl: str | None) -> tuple[str | None, str]:
    """How ALTER COLUMN TYPE turns a value of type ``old`` into ``new``: DuckDB SQL over the
    old input text ``{t}`` giving the new input text, or None and the reason it cannot be
    done exactly."""
    if ddl is not None and _USING.search(ddl):
        return None, "it converts with a USING expression"
    if same_type(old, new):
        return "{t}", ""
    if old.endswith("[]") and new.endswith("[]"):
        inner, why = conversion(old[:-2], new[:-2], None)
        return ("{t}", "") if inner == "{t}" else (None, why or "array element conversion")
    if _VARCHAR.match(new):
        bp = _BPCHAR.match(old)
        # char(n) -> text drops the padding; every other type's text is its output text.
        return ("rtrim({t}, ' ')" if bp else "{t}"), ""
    bp = _BPCHAR.match(new)
    if bp and (_VARCHAR.match(old) or _BPCHAR.match(old)):
        return f"rpad({{t}}, {int(bp.group(1) or 1)}, ' ')", ""
    if old in _INTS and new in _INTS:
        return "{t}", ""
    if new == "double precision" and old in ("smallint", "integer"):
        return "{t}", ""
    if new == "real" and old == "smallint":
        return "{t}", ""
    if old == "jsonb" and new == "json":
        return "{t}", ""
    s_old, s_new = _scale(old), _scale(new)
    if s_old != -1 and s_new != -1 and (old in _INTS or _NUMERIC.match(old)) and _NUMERIC.match(
            new):
        if s_new is None:  # to unconstrained numeric: the same digits
            return "{t}", ""
        if s_old is not None and s_new >= s_old:  # zero padding to the new scale
            pad = s_new - s_old
            if pad == 0:
                return "{t}", ""
            dot = "" if s_old else "."
            return (f"CASE WHEN {{t}} IN ('NaN', 'Infinity', '-Infinity') THEN {{t}} "
                    f"ELSE {{t}} || '{dot}{'0' * pad}' END"), ""
        return None, f"{old} to {new} rounds"
    t_old, t_new = _TS.match(old), _TS.match(new)
    if t_old and t_new and t_old.group(1) == t_new.group(1) and t_old.group(3) == t_new.group(3):
        p_old, p_new = int(t_old.group(2) or 6), int(t_new.group(2) or 6)
        if p_new >= p_old:
            return "{t}", ""
        return None, f"{old} to {new} rounds"
    return None, f"replay cannot reproduce PostgreSQL's conversion of {old} to {new} exactly"


def _renames(ddl: str | None) -> dict[str, str]:
    """RENAME [COLUMN] a TO b in the statement text (only used without attnums)."""
    if not ddl:
        return {}
    ident = r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
    out = {}
    for m in re.finditer(rf"\bRENAME\s+(?:COLUMN\s+)?{ident}\s+TO\s+{ident}", ddl, re.I):
        a, b = (x[1:-1].replace('""', '"') if x.startswith('"') else x.lower()
                for x in (m.group(1), m.group(2)))
        out[b] = a
    return out


def _dropped_names(ddl: str | None) -> set[str]:
    if not ddl:
        return set()
    ident = r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
    return {x[1:-1].replace('""', '"') if x.startswith('"') else x.lower()
            for x in re.findall(rf"\bDROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?{ident}", ddl,
                                re.I)}


def _match(prev: list[Col], change: SchemaChange) -> dict[str, Col | None]:
    """New column name -> the column it was before the DDL (None: added by it)."""
    if prev and all(c.attnum is not None for c in prev):
        by_attnum = {c.attnum: c for c in prev}
        return {c.name: by_attnum.get(c.attnum) for c in change.columns}
    # Only names are known before the first recorded DDL: same name is the same column
    # unless the statement drops it (and adds it again); a RENAME in the statement maps the
    # new name to the old.
    by_name = {c.name: c for c in prev}
    renamed, dropped = _renames(change.ddl), _dropped_names(change.ddl)
    out: dict[str, Col | None] = {}
    for c in change.columns:
        if c.name in renamed and renamed[c.name] in by_name:
            out[c.name] = by_name[renamed[c.name]]
        elif c.name in by_name and c.name not in dropped:
            out[c.name] = by_name[c.name]
        else:
            out[c.name] = None
    return out


def _sentinel(i: int) -> str:
    return encoded_literal("text", f"{SENTINEL}{i}")


@dataclass(frozen=True)
class Step:
    """One DDL as a row rewrite: members of the new row, as DuckDB JSON over struct ``v``."""

    change: SchemaChange
    members: list[tuple[str, str]]
    losses: list[str]  # why rows written before it may get a sentinel ("" if they cannot)
    # The commit where capture's re-read of the table after this DDL ended (replay/rereads.py)
    exact_from: int | None = None
    reread: bool = False  # the archive holds re-reads of this table (the note names them)
    lost: tuple[str, ...] = ()  # the columns rows written before it may hold unknown

    @property
    def may_lose(self) -> bool:
        return bool(self.losses)


def unrecorded_step(i: int, prev: list[Col], change: SchemaChange) -> Step:
    """An unrecorded change (only ever applied once a re-read followed it): a column of the
    same name and type keeps its values (capture would have seen nothing else change);
    every other value of a row written before it is unknown until the re-read's row
    supersedes it."""
    old = {c.name: c for c in prev}
    members: list[tuple[str, str]] = []
    losses: list[str] = []
    for col in change.columns:
        src = old.get(col.name)
        if src is not None and same_type(src.type, col.type):
            members.append((col.name, f"v.{quote_duck(src.name)}"))
        else:
            members.append((col.name, _sentinel(i)))
            losses.append(f"column {col.name} changed without a record")
    return Step(change, members, losses, lost=_lost(i, members))


def step_for(i: int, prev: list[Col], change: SchemaChange) -> Step:
    matched = _match(prev, change)
    members: list[tuple[str, str]] = []
    losses: list[str] = []
    for col in change.columns:
        src = matched[col.name]
        if src is None:
            if col.has_missing:
                expr = encoded_literal(col.type, col.missing)
            elif col.default is None:
                expr = "NULL::JSON"
            else:
                expr = _sentinel(i)
                losses.append(f"column {col.name} got DEFAULT {col.default} without a "
                              "recorded value")
        else:
            value = f"v.{quote_duck(src.name)}"
            text = f"json_extract_string({value}, '$')"
            conv, why = conversion(src.type, col.type, change.ddl)
            if conv == "{t}" and (src.type in ("smallint", "integer", "boolean")) == (
                    col.type in ("smallint", "integer", "boolean")):
                expr = value
            elif conv is None:
                expr = f"CASE WHEN {value} IS NULL THEN NULL ELSE {_sentinel(i)} END"
                losses.append(f"column {col.name} changed type from {src.type} to "
                              f"{col.type} and {why}")
            else:
                new_text = conv.format(t=text)
                expr = (f"CASE WHEN {value} IS NULL THEN NULL "
                        f"WHEN starts_with({text}, chr(0) || 'hera-unknown:') THEN {value} "
                        f"ELSE ({encode_text_sql(col.type, new_text)})::JSON END")
        members.append((col.name, expr))
    return Step(change, members, losses, lost=_lost(i, members))


def _lost(i: int, members: list[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(n for n, e in members if _sentinel(i) in e)


def definition_before(change_index: int, changes: list[SchemaChange],
                      event_types: tuple[int, dict[str, str]] | None) -> list[Col]:
    """The columns rows had just before ``changes[change_index]``: the previous recorded
    definition, or the types of the last event before it, whichever is later."""
    change = changes[change_index]
    prev = changes[change_index - 1] if change_index > 0 else None
    if event_types is not None and (prev is None or event_types[0] > prev.ord):
        if prev is not None and prev.recorded and [c.name for c in prev.columns] == list(
                event_types[1]):
            return list(prev.columns)  # the same columns, with their attnums
        return [Col(n, t) for n, t in event_types[1].items()]
    if prev is None:
        return [Col(c.name, c.type) for c in change.columns]
    if not prev.recorded:  # the decoder's columns: names and types, no attnum
        return [Col(c.name, c.type) for c in prev.columns]
    return list(prev.columns)


_views = iter(range(1 << 62))


def apply_steps(conn: duckdb.DuckDBPyConnection, rel: duckdb.DuckDBPyRelation,
                steps: list[tuple[Step, list[Col]]]) -> duckdb.DuckDBPyRelation:
    """``rel`` (key, row, ord) with each step applied to the rows written before it."""
    view = f"_schema_src_{next(_views)}"
    sql = f"SELECT key, row, ord FROM {view}"  # noqa: S608 - our own name
    rel.create_view(view, replace=True)
    for step, prev in steps:
        names = list(dict.fromkeys([c.name for c in prev]))
        shape = literal(json.dumps(dict.fromkeys(names, "JSON")))
        obj = ", ".join(f"{literal(n)}, {e}" for n, e in step.members)
        sql = (f"SELECT key, CASE WHEN ord < {step.change.ord} THEN json_object({obj})::VARCHAR "  # noqa: S608 - our own SQL
               f"ELSE row END AS row, ord FROM (SELECT key, row, ord, "
               f"json_transform(row, {shape}) AS v FROM ({sql}))")
    return conn.sql(sql)


def unknown_rows(conn: duckdb.DuckDBPyConnection, rel: duckdb.DuckDBPyRelation,
                 steps: list[tuple[Step, list[Col]]], keys: str | None = None,
                 ignore: frozenset[str] = frozenset()) -> None:
    """Refuse when a row of ``rel`` (restricted to keys in relation ``keys``) still holds a
    value a DDL made unknowable (in a column not in ``ignore``: generated columns, which
    PostgreSQL computes itself on every write)."""
    lossy = [s for s, _ in steps if s.may_lose]
    if not lossy:
        return
    rel.create_view("_schema_check", replace=True)
    only = "" if keys is None else f"AND key IN (SELECT key FROM {quote_duck(keys)})"  # noqa: S608
    for i, step in ((i, s) for i, (s, _) in enumerate(steps) if s.may_lose):
        params: dict[str, str] = {"p": f"{_SENTINEL_JSON}{i}\""}
        test = "contains(row, $p)"
        if ignore:  # column by column, leaving out the ignored ones
            names = [c.name for c in step.change.columns if c.name not in ignore]
            params = {"s": f"{SENTINEL}{i}"} if names else {}
            test = " OR ".join(
                f"coalesce(json_extract_string(row, {literal('$.' + json.dumps(n))}) = $s, "
                "false)" for n in names) or "false"
        found = first(conn.execute(
            f"SELECT count(*) FROM _schema_check WHERE ({test}) {only}",  # noqa: S608
            params))
        n = int(found[0]) if found else 0
        if n:
            raise SchemaChangeRefused(
                f"replay cannot rebuild {n} rows written before {step.change.describe()} "
                f"exactly: {'; '.join(step.losses)}, so their values are not recorded; "
                f"pick a point before {format_lsn(step.change.commit_lsn)}"
                + (window_note(step.change.commit_lsn, step.exact_from) if step.reread
                   else ""))
