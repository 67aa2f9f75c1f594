"""The column sets a stream knows per captured table, and the schema changes it reports.

A transactional 'hera-guard.schema' message (sql/08_schema_log.sql) for a captured table
becomes a recorded SchemaChangeEvent at its place in the transaction; a column set the
decoder shows (pgoutput Relation, wal2json's columns) that differs from the last known one
without such a message becomes a SchemaChangeEvent with recorded=False. A DDL the stream
cannot express (capture/rewrites.py) or an unrecorded change has the table re-read.

The stream runner (capture.runner) owns the transaction and the sending; this module decides
what a message or a column set means and tells the runner through two callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import msgspec

from capture.decoding import SCHEMA_PREFIX, Columns, Message, TableNames
from capture.errors import DecodeError, StreamRestart
from capture.event import ColumnDef, format_lsn
from capture.rewrites import rewrite_reason

if TYPE_CHECKING:
    from capture.decoding import Decoder
    from capture.position import ColumnSets, StreamPosition

log = logging.getLogger("hera.capture")

# (schema, table, lsn, columns, command_tag, ddl, recorded): a schema change to publish.
OnSchemaChange = Callable[[str, str, int, tuple[ColumnDef, ...], str | None, str | None, bool],
                          None]
# (schema, table, lsn, why): the table's content is unknown until re-read.
OnReread = Callable[[str, str, int, str], None]


class SchemaLogColumn(msgspec.Struct):
    attnum: int
    name: str
    type: str
    not_null: bool = False
    default: str | None = None
    missing: str | None = None
    has_missing: bool = False


class SchemaLog(msgspec.Struct):
    """One 'hera-guard.schema' message: a table's columns after a DDL."""

    schema: str
    table: str
    columns: list[SchemaLogColumn]
    command_tag: str | None = None
    ddl: str | None = None
    relid: int | None = None  # pg_class.oid (schema logs installed before it: None)


_decode_schema_log = msgspec.json.Decoder(SchemaLog).decode


def parse_schema_log(content: str) -> SchemaLog:
    try:
        return _decode_schema_log(content.encode())
    except msgspec.DecodeError as exc:
        raise DecodeError(f"unparseable {SCHEMA_PREFIX} message ({exc}): "
                          f"{content[:200]!r}") from exc


class SchemaChanges:
    """The column sets of one connected stream: as last known, and as of each commit."""

    def __init__(self, position: StreamPosition, decoder: Decoder, names: TableNames,
                 captured: Collection[tuple[str, str]], on_change: OnSchemaChange,
                 on_reread: OnReread) -> None:
        self.position = position
        self.decoder = decoder
        self.names = names
        self.captured = captured
        self.on_change = on_change
        self.on_reread = on_reread
        # Column sets as last known per captured table, to notice a change without a message.
        self.columns: ColumnSets = position.known_columns
        # The types dict of each table's last change (the runner compares by identity, per row).
        self.last_types: dict[tuple[str, str], dict[str, str]] = {}
        # (end LSN of a commit, the column sets from then on): PROGRESS markers carry the
        # sets as of their LSN, which may be behind what has been decoded.
        self.history: list[tuple[int, ColumnSets]] = [
            (position.confirmed_lsn, dict(self.columns))]
        # Column names the schema log announced; the decoder's next column set for the table
        # becomes the baseline when its names match (the log spells types with search_path
        # pg_catalog, e.g. public.mood, the decoders as format_type does for capture).
        self.logged: dict[tuple[str, str], tuple[str, ...]] = {}

    def at(self, lsn: int) -> ColumnSets:
        """The column sets in force after everything up to ``lsn``; older history dropped."""
        while len(self.history) > 1 and self.history[1][0] <= lsn:
            self.history.pop(0)
        return self.history[0][1]

    def committed(self, end_lsn: int) -> None:
        if self.columns != self.history[-1][1]:
            self.history.append((end_lsn, dict(self.columns)))

    def seen(self, schema: str, table: str, lsn: int, columns: Columns) -> None:
        """A column set the decoder shows for a table."""
        known = self.columns.get((schema, table))
        if known == columns:
            return
        logged = self.logged.pop((schema, table), None)
        if logged is not None and logged == tuple(n for n, _ in columns):
            self.columns[(schema, table)] = columns
            return
        self.columns[(schema, table)] = columns
        if known is None:
            return  # a table capture did not know at start: nothing to compare with
        log.warning("columns changed without a schema-log message (install "
                    "sql/08_schema_log.sql for exact replay across DDL)",
                    extra={"table": f"{schema}.{table}", "lsn": lsn})
        defs = tuple(ColumnDef(attnum=i + 1, name=n, type=t)
                     for i, (n, t) in enumerate(columns))
        self.on_change(schema, table, lsn, defs, None, None, False)
        self.on_reread(schema, table, lsn, "an unrecorded schema change (no schema log)")

    def schema_logged(self, rec: Message) -> None:
        """A 'hera-guard.schema' message inside a transaction."""
        logged = parse_schema_log(rec.content)
        table = (logged.schema, logged.table)
        if logged.relid is not None:
            table = self._follow_rename(logged.relid, table) or table
        if table not in self.captured:
            return  # a DDL on a table this stream does not capture
        defs = tuple(ColumnDef(attnum=c.attnum, name=c.name, type=c.type, not_null=c.not_null,
                               default=c.default, missing=c.missing, has_missing=c.has_missing)
                     for c in logged.columns)
        why = rewrite_reason(self.columns.get(table), defs, logged.ddl)
        self.columns[table] = tuple((c.name, c.type) for c in logged.columns)
        self.logged[table] = tuple(c.name for c in logged.columns)
        self.on_change(logged.schema, logged.table, rec.lsn, defs, logged.command_tag,
                       logged.ddl, True)
        if why is not None:
            self.on_reread(logged.schema, logged.table, rec.lsn, why)

    def _follow_rename(self, relid: int, name: tuple[str, str]) -> tuple[str, str] | None:
        """A captured table is its relation: under another name (RENAME TO) it keeps its
        captured name and topic. A decoder that filters by name (wal2json) must be told the
        new name at START_REPLICATION: the stream restarts from the confirmed LSN, before
        this DDL, so nothing written under the new name is missed."""
        before = self.decoder.start_options()
        own = self.names.renamed(relid, *name)
        if own is None:
            return None
        if own != name:
            log.warning("captured table %s.%s is now named %s.%s; its changes keep its "
                        "captured name and topic", *own, *name)
        if self.decoder.start_options() != before:
            raise StreamRestart(
                f"captured table {own[0]}.{own[1]} was renamed to {name[0]}.{name[1]}: "
                f"decoding again from {format_lsn(self.position.confirmed_lsn)} with the new name")
        return own
