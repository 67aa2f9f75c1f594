"""Restore filters (``--org``, ``--relationship-type``): values compared as their column's type.

A filter value is text from the command line; the archive holds each value as PostgreSQL's
output text of its type (a uuid in lower case, for one). Compared as given, an upper-case
uuid matches nothing and the restore "succeeds" with 0 rows. So each value goes through the
column's own input and output functions in the target database once (the type's rules,
domains included): the canonical text compares exactly with the archived and live texts, and
a value the type does not accept is refused with one line before anything is read or changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from hera_kit.text import first_line
from replay.errors import BadPoint, UnknownTable
from replay.live import Column, Conn, output_text_sql
from replay.plan import Scope
from replay.settings import ReplaySettings
from replay.tables import TableId


@dataclass(frozen=True)
class Filter:
    option: str  # as the CLI spells it
    column: str
    value: str


def requested(s: ReplaySettings) -> list[Filter]:
    """The filters the user gave (every filter option of replay is listed here)."""
    given = (("--org (HERA_ORG)", "organization_id", s.org),
             ("--relationship-type (HERA_RELATIONSHIP_TYPE)", "relationship_type",
              s.relationship_type))
    return [Filter(o, c, v) for o, c, v in given if v is not None]


def refuse_outside_restore(filters: list[Filter], mode: str) -> None:
    """A filter the mode would ignore is refused: an unfiltered answer is a wrong one."""
    if filters:
        names = " and ".join(f.option for f in filters)
        raise BadPoint(f"{names} only filter{'' if len(filters) > 1 else 's'} --restore; "
                       f"{mode} would ignore {'them' if len(filters) > 1 else 'it'}: leave "
                       f"{'them' if len(filters) > 1 else 'it'} out (nothing was read or "
                       "changed)")


def typed_scope(pg: Conn, table: TableId, cols: list[Column], filters: list[Filter]) -> Scope:
    """The filters as a Scope of canonical texts; BadPoint for a value of the wrong type."""
    by_name = {c.name: c for c in cols}
    out: list[tuple[str, str]] = []
    for f in filters:
        col = by_name.get(f.column)
        if col is None:
            raise UnknownTable(f"{table} has no column {f.column}; {f.option} only applies to "
                               f"tables that have {f.column}")
        # The table's row type carries the column's type (domains and typmods included);
        # jsonb_populate_record runs the type's input function on the text, output_text_sql
        # its output function, in replay's session settings (those capture archives with).
        value = sql.SQL("(jsonb_populate_record(NULL::{t}, "
                        "jsonb_build_object(%s::text, %s::text))).{c}").format(
            t=sql.Identifier(table.schema, table.name), c=sql.Identifier(f.column))
        query = sql.SQL("SELECT {} FROM (SELECT {} AS v) AS given").format(
            output_text_sql(sql.Identifier("v")), value)
        try:
            row = pg.execute(query, (f.column, f.value)).fetchone()
        except psycopg.errors.DataError as exc:
            raise BadPoint(f"{f.option} {f.value!r} is not a valid {col.type} (the type of "
                           f"{table}.{f.column}): {first_line(exc)}") from None
        if row is None or row[0] is None:
            raise BadPoint(f"{f.option} {f.value!r} does not name a {col.type} value")
        out.append((f.column, str(row[0])))
    return Scope(tuple(out))
