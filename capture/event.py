"""The change event: the one contract between capture, the consumers and replay.

The envelope follows Debezium's PostgreSQL connector (``before``, ``after``, ``op``,
``ts_ms``, ``source``, ``transaction``) so tools that read Debezium JSON can read ours.
It adds what exact replay needs: ``commit_lsn`` (the LSN of the transaction's commit
record) and ``position`` (the change's index inside its transaction, across tables).
``(commit_lsn, position)`` orders every event totally and is the archive's dedup key.

Values in ``before``/``after``/``key`` follow ``capture.encoding`` (schema_version 2: the
exact text PostgreSQL prints, json/jsonb included; booleans and int2/int4 as JSON natives).
``types`` maps each column to its PostgreSQL type as ``format_type`` spells it.

On ``<prefix>.transaction``, next to BEGIN/END: ``StreamMarker`` (coverage and the stream's
identity) and ``SchemaChangeEvent`` (a DDL on a captured table, in WAL order).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, get_args

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_serializer
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from capture.encoding import SCHEMA_VERSION

CONNECTOR = "hera-guard"
SOURCE_VERSION = "0.1.0"  # source.version of every event (Debezium's connector version field)

JSONValue = Any
Row = dict[str, JSONValue]


class Op(StrEnum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # a row of the initial snapshot or of an online re-read
    TRUNCATE = "t"


def format_lsn(lsn: int) -> str:
    """``0x16B3748`` -> ``'0/16B3748'`` (PostgreSQL's spelling)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """``'0/16B3748'`` -> int; raises ValueError with the expected form."""
    hi, sep, lo = text.strip().partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r} (expected the form 0/16B3748)")
    try:
        return (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {text!r} (expected the form 0/16B3748)") from None


class Source(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    version: str = SOURCE_VERSION
    connector: str = CONNECTOR
    name: str  # the topic prefix, Debezium's "logical name"
    db: str
    schema_: str = Field(alias="schema")
    table: str
    txId: int | None = None
    lsn: int | None = None  # LSN of this change's WAL record (snapshot: the slot's start)
    ts_ms: int  # commit time of the transaction, ms since epoch UTC
    ts_us: int  # the same commit time in microseconds: exact point-in-time replay needs it
    # "true" for op r of the initial snapshot, "last" for its final row, "incremental" for a
    # row of an online re-read (capture/reread.py), else "false".
    snapshot: str = "false"


class Author(BaseModel):
    """Who wrote a transaction: the ``hera.author`` logical message of sql/10_author.sql.

    The database-level fields come from the server (``current_user``, ...); ``actor`` and
    ``context`` are what the application said with ``SET LOCAL hera.actor`` /
    ``hera.context``: untrusted text, capped (``capped`` names what was cut), secrets
    redacted in the database (keys named like secrets). ``context`` is text: the JSON object
    the application gave, as PostgreSQL's jsonb prints it (``context_format`` "json"), or, for
    anything that is not a JSON object (or an object over the cap), its text as given
    (``context_format`` "text"). A string, never a parsed document: the event stays exact and
    valid JSON whatever the client wrote.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    db_user: str | None = None  # current_user
    session_user: str | None = None
    application_name: str | None = None
    client_addr: str | None = None  # None: a Unix-socket connection
    client_port: int | None = None
    backend_pid: int | None = None
    actor: str | None = None
    context: str | None = None
    context_format: str | None = None  # "json" | "text"; None without context
    capped: tuple[str, ...] = ()  # fields cut to their cap (capture.author names the caps)

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Written on every change event of the transaction: fields without a value are left
        # out (a reader takes an absent field for null / empty), a third of the bytes.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None and v != []}


def _drop_none_author(handler: SerializerFunctionWrapHandler, model: BaseModel
                      ) -> dict[str, Any]:
    """A record without an author is written exactly as before the field existed, so readers
    that predate it keep reading what capture writes for authorless transactions."""
    data: dict[str, Any] = handler(model)
    if data.get("author", 0) is None:
        del data["author"]
    return data


class TransactionBlock(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str  # Debezium: "<txId>:<lsn>"
    total_order: int  # 1-based position of the event among all events of the transaction
    data_collection_order: int  # 1-based position among events of the same table
    author: Author | None = None  # the transaction's author; absent when unknown

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_none_author(handler, self)


class ChangeEvent(BaseModel):
    """One row change (or TRUNCATE, or snapshot read) of a captured table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    before: Row | None = None
    after: Row | None = None
    op: Op
    ts_ms: int  # when capture processed the event, ms since epoch UTC
    source: Source
    transaction: TransactionBlock | None = None
    commit_lsn: int
    position: int
    key: Row | None = None  # primary key columns of the row (None for TRUNCATE)
    types: dict[str, str] | None = None  # column -> PostgreSQL type; None for TRUNCATE
    # Rows of an online re-read (source.snapshot "incremental"): why the table was re-read
    # (a DDL the stream cannot express, a table added to --tables, an operator's request).
    # Sparse: written only where set, so every other event keeps the canonical document.
    reread: str | None = Field(None, json_schema_extra={"sparse": True})

    @property
    def is_reread(self) -> bool:
        return self.reread is not None

    @property
    def table_id(self) -> str:
        return f"{self.source.schema_}.{self.source.table}"

    @property
    def order_key(self) -> tuple[int, int]:
        return (self.commit_lsn, self.position)

    def to_json(self) -> bytes:
        # ``reread`` only where set: every other event keeps the canonical document the
        # archive's bulk parser expects (consumers/archive/bulk_parse.py).
        return self.model_dump_json(
            by_alias=True, exclude=None if self.reread is not None else {"reread"}).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ChangeEvent:
        return cls.model_validate_json(data)

    def kafka_key(self) -> bytes:
        return encode_key(self.key, self.table_id)


def _encode_sorted(key: Row) -> bytes:
    return msgspec.json.encode(key, order="sorted")


def encode_key(key: Row | None, table_id: str) -> bytes:
    """The Kafka record key: the row's primary key as canonical JSON (sorted keys).

    TRUNCATE has no row; its key is the table, so it lands in a deterministic partition.
    """
    if key is None:
        return json.dumps({"__table__": table_id}).encode()
    return _encode_sorted(key)


class TableCount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    data_collection: str  # "schema.table"
    event_count: int


class TransactionEvent(BaseModel):
    """Debezium-style transaction metadata on ``<prefix>.transaction``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    status: str  # "BEGIN" | "END"
    id: str  # "<txId>:<commit lsn>"
    xid: int
    commit_lsn: int
    ts_ms: int  # commit time, ms since epoch UTC
    ts_us: int  # commit time, microseconds since epoch UTC
    event_count: int | None = None  # END only
    data_collections: tuple[TableCount, ...] | None = None  # END only
    # END only: SchemaChangeEvents of the transaction (on this topic, not in event_count;
    # they share the position numbering with the change events).
    schema_change_count: int = 0
    author: Author | None = None  # absent when the transaction has no hera.author message

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_none_author(handler, self)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class ColumnDef(BaseModel):
    """One column of a table definition, as the catalog has it right after a DDL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attnum: int  # pg_attribute.attnum: stable across RENAME and ALTER TYPE, new for ADD
    name: str
    type: str  # format_type(atttypid, atttypmod)
    not_null: bool = False
    default: str | None = None  # pg_get_expr(adbin, adrelid), None without a default
    # The value every row that existed before ADD COLUMN ... DEFAULT reads (atthasmissing,
    # attmissingval as PostgreSQL's text); None when the column has no missing value.
    missing: str | None = None
    has_missing: bool = False


class MarkerKind(StrEnum):
    SNAPSHOT_START = "SNAPSHOT_START"  # a new epoch: the slot was created at ``epoch_lsn``
    SNAPSHOT_END = "SNAPSHOT_END"  # every snapshot row of the epoch has been published
    PROGRESS = "PROGRESS"  # every change committed at or before ``lsn`` has been published
    # An online re-read ended at the commit ``lsn`` (the table: the one key of
    # ``definitions``): from there on every row of it has a known value at a known position
    # (capture/reread.py).
    REREAD_END = "REREAD_END"


class StreamMarker(BaseModel):
    """Coverage facts on ``<prefix>.transaction``, next to BEGIN/END.

    An *epoch* is one replication slot's life: it starts with a snapshot at the slot's
    consistent point (``epoch_lsn``) and continues with the stream. Within an epoch the
    archive is gap-free from ``epoch_lsn`` up to the highest PROGRESS ``lsn``. A new epoch
    (slot lost or re-created) after an old one leaves a gap between the old epoch's last
    PROGRESS and the new ``epoch_lsn``: replay refuses points inside it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    status: MarkerKind
    slot: str
    db: str
    epoch_lsn: int
    lsn: int
    ts_ms: int  # capture's clock when the marker was published, ms since epoch UTC
    tables: tuple[str, ...] = ()  # "schema.table" captured in this epoch
    # The stream's identity (schema_version 2; None in markers written before): the
    # PostgreSQL cluster (pg_control_system().system_identifier, as text) and the plugin.
    system_identifier: str | None = None
    plugin: str | None = None
    # Each captured table's columns ((name, type), ...) as of ``lsn``: a capture restarting
    # from this position compares the re-sent changes with these, not with today's catalog,
    # so a DDL committed while capture was down is not taken for an unrecorded one.
    columns: dict[str, tuple[tuple[str, str], ...]] | None = None
    # SNAPSHOT_START: each captured table's definition as of the epoch's
    # snapshot, spelled as the schema log spells it (sql/08_schema_log.sql): the baseline
    # (attnums included) replay matches the epoch's first recorded DDL against.
    definitions: dict[str, tuple[ColumnDef, ...]] | None = None
    # The online re-reads as of ``lsn`` (queued, running with their last completed key, and
    # finished): a capture restarting there resumes them (capture/reread.py RereadState).
    rereads: tuple[dict[str, Any], ...] | None = None
    # PROGRESS: PostgreSQL's commit time (µs since epoch UTC) of the newest transaction
    # committed at or before ``lsn`` (capture's heartbeat commits one when the database is
    # idle): the time the marker vouches for. ``ts_ms`` is capture's clock, which runs ahead
    # of the WAL it has read by capture's lag. SNAPSHOT_START: the server's clock read just
    # after the slot was created, at or after every commit the snapshot holds. None: no
    # commit seen yet, or a marker from before this member existed (replay then trusts
    # archived commit times only, and ``ts_ms`` for an epoch's start).
    commit_ts_us: int | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class SchemaChangeEvent(BaseModel):
    """A DDL on a captured table, at its place in WAL order (status ``SCHEMA``).

    ``recorded`` events come from the schema-log event trigger (sql/08_schema_log.sql): the
    table's whole definition after the DDL, emitted in the DDL's own transaction, so defaults
    and renames are known exactly. Without the trigger, capture still sees that the columns
    changed (pgoutput's Relation message, wal2json's column list) and publishes an event with
    ``recorded=False``: replay refuses points after it, naming it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_version: int = SCHEMA_VERSION
    status: str = "SCHEMA"
    xid: int | None
    commit_lsn: int
    position: int  # shares the numbering of the transaction's change events
    lsn: int  # LSN of the logical message (or of the first change showing the new columns)
    ts_us: int  # commit time of the DDL's transaction, µs since epoch UTC
    schema_: str = Field(alias="schema")
    table: str
    columns: tuple[ColumnDef, ...]
    command_tag: str | None = None  # "ALTER TABLE", ... (recorded only)
    ddl: str | None = None  # the statement text (recorded only; may hold several commands)
    recorded: bool = True

    @property
    def table_id(self) -> str:
        return f"{self.schema_}.{self.table}"

    @property
    def order_key(self) -> tuple[int, int]:
        return (self.commit_lsn, self.position)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


TransactionTopicRecord = TransactionEvent | StreamMarker | SchemaChangeEvent


def parse_transaction_topic(data: bytes | str) -> TransactionTopicRecord:
    """A record of ``<prefix>.transaction``: BEGIN/END metadata, a coverage marker or a
    schema change."""
    raw = json.loads(data)
    if isinstance(raw, dict) and raw.get("status") in {"BEGIN", "END"}:
        return TransactionEvent.model_validate(raw)
    if isinstance(raw, dict) and raw.get("status") == "SCHEMA":
        return SchemaChangeEvent.model_validate(raw)
    return StreamMarker.model_validate(raw)


def document_members(model: type[BaseModel]) -> list[str]:
    """The members of ``model``'s JSON document (aliases), in the order capture writes them:
    the one spelling of the document's shape that the archive's bulk parser reads."""
    return [field.alias or name for name, field in model.model_fields.items()
            if not (isinstance(field.json_schema_extra, dict)
                    and field.json_schema_extra.get("sparse"))]


# Members written only when they have a value (the transaction's author: absent, a record is
# byte for byte what capture wrote before the member existed).
OPTIONAL_MEMBERS = frozenset({"author"})


def nullable_members(*models: type[BaseModel]) -> frozenset[str]:
    """The members of these models' documents that may be JSON null."""
    return frozenset(
        field.alias or name for model in models for name, field in model.model_fields.items()
        if type(None) in get_args(field.annotation))


# The event document is spelled once, by the model above. ``change_event_json`` below builds
# the same bytes from a plain dict because capture's hot path cannot afford constructing and
# validating a pydantic model per change (measured: ~25 µs per event for the model,
# ~6.5 µs for the dict + msgspec); tests/unit/test_event.py holds the two byte-equal, members, order
# and escapes included, and the archive's bulk parser reads the shape from the model.
# msgspec is exact here: every value is str, bool, int or None (capture.encoding), and its
# output equals pydantic's model_dump_json byte for byte (escapes included; a unit test holds
# it), at a fraction of the stdlib encoder's cost.
_dumps = msgspec.json.Encoder().encode


def change_event_json(*, before: Row | None, after: Row | None, op: Op, ts_ms: int, name: str,
                      db: str, schema: str, table: str, tx_id: int | None, lsn: int | None,
                      commit_ts_us: int, snapshot: str, commit_lsn: int, position: int,
                      table_order: int | None, key: Row | None,
                      types: dict[str, str] | None, author: msgspec.Raw | None = None,
                      reread: str | None = None) -> bytes:
    """The JSON of a ChangeEvent, built without constructing the model.

    capture's hot path: the same document ``ChangeEvent(...).to_json()`` gives (a unit test
    holds the two equal), at a fraction of the cost per event. ``author``: the transaction's
    Author as JSON (``author_json``), encoded once per transaction, not once per event.
    """
    transaction: dict[str, Any] | None = None if table_order is None else {
        "id": f"{tx_id}:{commit_lsn}", "total_order": position + 1,
        "data_collection_order": table_order}
    if transaction is not None and author is not None:
        transaction["author"] = author
    return _dumps({
        "schema_version": SCHEMA_VERSION, "before": before, "after": after, "op": op.value,
        "ts_ms": ts_ms,
        "source": {"version": SOURCE_VERSION, "connector": CONNECTOR, "name": name, "db": db,
                   "schema": schema, "table": table, "txId": tx_id, "lsn": lsn,
                   "ts_ms": commit_ts_us // 1000, "ts_us": commit_ts_us, "snapshot": snapshot},
        "transaction": transaction, "commit_lsn": commit_lsn, "position": position, "key": key,
        "types": types, **({} if reread is None else {"reread": reread}),
    })


def author_json(author: Author) -> msgspec.Raw:
    """An Author as the JSON ``change_event_json`` splices into each event of its transaction
    (the bytes ``ChangeEvent.to_json`` writes for it)."""
    return msgspec.Raw(author.model_dump_json().encode())
