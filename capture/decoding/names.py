"""A captured table is its relation (OID), not its name.

``ALTER TABLE t RENAME TO u; INSERT INTO u ...; ALTER TABLE u RENAME TO t`` must not put the
insert on a topic named after ``u``, where no consumer and no replay of ``t`` looks. Capture
keeps publishing a table under the name it was captured as (its topic, the name replay
knows) whatever it is called meanwhile:

- pgoutput's Relation message carries the relation's OID: a captured OID under another name
  is the captured table (``captured``);
- wal2json names tables, and its ``add-tables`` filter matches names: the schema log's message
  for the RENAME (sql/08_schema_log.sql, with the relation's OID) tells capture the new name
  (``renamed``); the decoder then maps that name back and widens its filter to it, which needs
  a new START_REPLICATION (the runner restarts the stream from the confirmed LSN, so nothing
  decoded under the new name is missed).

The names a table went by are kept for the process's life; a capture restarted while a table
carries another name refuses to start (its ``--tables`` name does not exist).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from capture.slot import TableInfo

Name = tuple[str, str]


class TableNames:
    def __init__(self, tables: Sequence[TableInfo]) -> None:
        self.by_oid: dict[int, Name] = {t.oid: (t.schema, t.table) for t in tables if t.oid}
        self.names: frozenset[Name] = frozenset((t.schema, t.table) for t in tables)
        self.aliases: dict[Name, Name] = {}  # another name a captured table has now -> its own
        self.extra: list[Name] = []  # every other name ever seen: wal2json's filter keeps them

    def captured(self, oid: int) -> Name | None:
        return self.by_oid.get(oid)

    def resolve(self, schema: str, table: str) -> Name | None:
        """The captured name of the table called ``schema.table`` now (None: not captured)."""
        name = (schema, table)
        if name in self.names or not self.names:  # no tables given (tools, tests): any
            return name
        return self.aliases.get(name)

    def renamed(self, oid: int, schema: str, table: str) -> Name | None:
        """Relation ``oid`` is called ``schema.table`` from here on; its captured name, or None
        when capture does not capture that relation."""
        own = self.by_oid.get(oid)
        if own is None:
            return None
        self.aliases = {k: v for k, v in self.aliases.items() if v != own}
        new = (schema, table)
        if new != own:
            self.aliases[new] = own
            if new not in self.extra:
                self.extra.append(new)
        return own


def warn_without_schema_log(conn: psycopg.Connection[tuple[object, ...]], plugin: str,
                            log: logging.Logger) -> None:
    """One line at start when the schema log's trigger is missing or disabled: a rename is
    then invisible to wal2json (its rows under the other name are not decoded at all)."""
    row = conn.execute("SELECT p.prosrc LIKE '%''relid''%' FROM pg_event_trigger t "
                       "JOIN pg_proc p ON p.oid = t.evtfoid WHERE t.evtname = "
                       "'hera_guard_schema_log' AND t.evtenabled <> 'D'").fetchone()
    if row is not None:
        # Installed by an older hera-guard, its messages carry no OID: pgoutput follows a
        # rename by the Relation message's OID anyway, wal2json cannot.
        if not row[0] and plugin == "wal2json":
            log.warning("the schema log (sql/08_schema_log.sql) is from an older hera-guard: "
                        "its messages do not name the table's OID, so a captured table "
                        "renamed while capture runs is not followed and rows written under "
                        "the other name are lost; run guard install to update it")
        return
    log.warning("the schema log (sql/08_schema_log.sql, guard install) is not installed: "
                "column changes are published as unrecorded schema changes (replay refuses "
                "points after them)"
                + ("; and a captured table renamed while capture runs is not followed: rows "
                   "written under the other name are lost" if plugin == "wal2json" else ""))
