"""Plugin-neutral records: what every decoder turns its plugin's messages into.

Values in ``before``/``after``/``key`` already follow ``capture.encoding`` (schema_version 2),
so nothing downstream of a decoder knows which plugin produced them.
"""

from __future__ import annotations

from dataclasses import dataclass

from capture.encoding import Value

Row = dict[str, Value]
Columns = tuple[tuple[str, str], ...]  # (name, format_type) in attnum order


@dataclass(slots=True)
class Begin:
    xid: int
    commit_lsn: int
    ts_us: int


@dataclass(slots=True)
class Commit:
    xid: int
    commit_lsn: int
    end_lsn: int  # the position after the commit record: what is confirmed to PostgreSQL
    ts_us: int


@dataclass(slots=True)
class RowChange:
    action: str  # I, U, D
    schema: str
    table: str
    lsn: int
    before: Row | None
    after: Row | None
    key: Row
    # column -> type. One dict object per (table, column set): a decoder hands out the same
    # object while the columns stay the same, so a change of columns is cheap to notice.
    types: dict[str, str]


@dataclass(slots=True)
class Truncate:
    tables: tuple[tuple[str, str], ...]  # (schema, table), in the order the server gave
    lsn: int


@dataclass(slots=True)
class Message:
    lsn: int
    prefix: str
    content: str
    transactional: bool


@dataclass(slots=True)
class Relation:
    """The columns a table has from here on in the stream (pgoutput's Relation message)."""

    schema: str
    table: str
    lsn: int
    columns: Columns


Decoded = Begin | Commit | RowChange | Truncate | Message | Relation
