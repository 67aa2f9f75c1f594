"""The decoder seam: what capture needs from a logical-decoding output plugin, as data.

The service, slot set-up, snapshot and heartbeats ask a ``Decoder`` (its ``caps`` and its
methods) instead of knowing the plugin: which plugin to create the slot with, which options to
give START_REPLICATION, what it delivers exactly, what it needs set up in the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from capture.decoding.records import Decoded

if TYPE_CHECKING:
    import psycopg

    from capture.slot import TableInfo

    Conn = psycopg.Connection[tuple[object, ...]]

# Logical-message prefixes capture reads: heartbeats (non-transactional), the schema log
# (transactional, from sql/08_schema_log.sql; contract in docs/schema-log.md) and the
# transaction's author (transactional, from sql/10_author.sql; capture/author.py).
HEARTBEAT_PREFIX = "hera-guard"
SCHEMA_PREFIX = "hera-guard.schema"
AUTHOR_PREFIX = "hera.author"
# Online re-reads (capture/reread.py): chunk watermarks and operators' requests.
WATERMARK_PREFIX = "hera.watermark"
REREAD_PREFIX = "hera.reread"


@dataclass(frozen=True)
class Capabilities:
    name: str  # what StreamMarker.plugin and `capture status` show
    slot_plugin: str  # the output plugin the slot is created with
    exact_special_values: bool  # NaN/±Infinity of numeric and floats arrive exactly
    needs_publication: bool
    heartbeat: str  # how an idle slot is moved on: "logical-message" (pg_logical_emit_message)
    exactness_note: str  # one line for the log when a slot is created with this decoder


class Catalog(Protocol):
    """Side-connection look-ups a decoder may need (once per relation, never per change)."""

    def relation_columns(self, relid: int, type_oids: Sequence[tuple[int, int]]
                         ) -> tuple[list[str], tuple[str, ...]]:
        """format_type of each (type OID, typmod), and the table's primary key columns."""
        ...

    def primary_key(self, schema: str, table: str) -> tuple[str, ...]:
        """The table's primary key columns now (empty: none, or no such table)."""
        ...


class Decoder(Protocol):
    caps: Capabilities

    def start_options(self) -> dict[str, str]:
        """START_REPLICATION options (each call: they may change after ``adapt``)."""
        ...

    def adapt(self, start_error: str) -> bool:
        """START_REPLICATION failed with ``start_error``: True when the decoder changed its
        options so that a retry can work (e.g. an option an older plugin does not know)."""
        ...

    def prepare(self, conn: Conn, tables: Sequence[TableInfo], slot: str) -> None:
        """Database set-up the plugin needs before a slot is created or streamed (idempotent)."""
        ...

    def decode(self, payload: bytes, lsn: int) -> Decoded | None:
        """One XLogData payload (``lsn``: its start) -> a record, or None for messages capture
        does not use. Raises DecodeError on anything it cannot understand."""
        ...
