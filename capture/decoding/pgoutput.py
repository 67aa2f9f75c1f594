"""pgoutput (protocol version 1) messages -> plugin-neutral records.

Written from PostgreSQL's "Logical Replication Message Formats". Every value arrives as the
text of the type's output function (with the replication session's settings, which capture
sets from ``capture.encoding.SESSION_OPTIONS``), so values are passed through
``capture.encoding.bytes_decoder``: only boolean and int2/int4 become JSON natives. Nothing
is lost, NaN, ±Infinity and json text included.

A Relation message precedes the first change of a table and every change of its columns;
the decoder keeps, per relation id, the column names, their types (``format_type`` of each
type OID and typmod, looked up once per relation on a side connection) and the primary key.
Unchanged TOASTed values (``u``) are filled from the old row (REPLICA IDENTITY FULL).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from capture.decoding.base import AUTHOR_PREFIX, Capabilities, Catalog
from capture.decoding.names import TableNames
from capture.decoding.publication import ensure_publication
from capture.decoding.records import (
    Begin,
    Commit,
    Decoded,
    Message,
    Relation,
    Row,
    RowChange,
    Truncate,
)
from capture.encoding import Value, bytes_decoder
from capture.errors import DecodeError

if TYPE_CHECKING:
    from capture.decoding.base import Conn
    from capture.slot import TableInfo

log = logging.getLogger("hera.capture")
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in µs since 1970-01-01

_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_REL_HEAD = struct.Struct("!I")
_COLTYPE = struct.Struct("!Ii")
_MSG_HEAD = struct.Struct("!BQ")
_TRUNC_HEAD = struct.Struct("!IB")

_UNCHANGED = object()  # a 'u' value: TOASTed and not changed by this UPDATE


@dataclass(slots=True)
class RelationInfo:
    schema: str
    table: str
    names: list[str]
    # per column: how its text becomes a value (capture.encoding's rule, chosen once per
    # relation, so the loop below makes one call per value)
    decoders: list[Callable[[bytes], Value]]
    types: dict[str, str]
    primary_key: tuple[str, ...]


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\x00", pos)
    return buf[pos:end].decode(), end + 1


def parse_tuple(buf: bytes, pos: int, rel: RelationInfo) -> tuple[dict[str, object], int]:
    """TupleData at ``pos`` -> (column name -> value or _UNCHANGED, next position)."""
    (n,) = _U16.unpack_from(buf, pos)
    pos += 2
    names, decoders = rel.names, rel.decoders
    if n != len(names):
        raise DecodeError(f"pgoutput tuple of {rel.schema}.{rel.table} has {n} columns, its "
                          f"Relation message {len(names)}")
    row: dict[str, object] = {}
    unpack = _U32.unpack_from
    for i in range(n):
        kind = buf[pos]
        pos += 1
        if kind == 0x74:  # 't' text
            (length,) = unpack(buf, pos)
            pos += 4
            row[names[i]] = decoders[i](buf[pos:pos + length])
            pos += length
        elif kind == 0x6E:  # 'n' NULL
            row[names[i]] = None
        elif kind == 0x75:  # 'u' unchanged TOAST
            row[names[i]] = _UNCHANGED
        else:
            raise DecodeError(f"pgoutput column format {chr(kind)!r} not requested (binary?)")
    return row, pos


class PgOutputDecoder:
    caps = Capabilities(
        name="pgoutput", slot_plugin="pgoutput", exact_special_values=True,
        needs_publication=True, heartbeat="logical-message",
        exactness_note="pgoutput: every value is PostgreSQL's text output, exact")

    def __init__(self, tables: Sequence[TableInfo], catalog: Catalog, publication: str,
                 names: TableNames | None = None) -> None:
        self.tables = list(tables)
        self.names = names or TableNames(tables)
        self.catalog = catalog
        self.publication = publication
        self.relations: dict[int, RelationInfo] = {}
        self.xid = 0  # the open transaction's xid (Commit does not repeat it in protocol 1)

    def start_options(self) -> dict[str, str]:
        return {"proto_version": "1", "publication_names": self.publication,
                "messages": "true"}

    def adapt(self, start_error: str) -> bool:
        return False

    def prepare(self, conn: Conn, tables: Sequence[TableInfo], slot: str) -> None:
        ensure_publication(conn, self.publication, tables)

    def decode(self, payload: bytes, lsn: int) -> Decoded | None:
        try:
            kind = payload[0]
            if kind == 0x49:  # 'I'
                return self._insert(payload, lsn)
            if kind == 0x55:  # 'U'
                return self._update(payload, lsn)
            if kind == 0x44:  # 'D'
                return self._delete(payload, lsn)
            if kind == 0x42:  # 'B'
                commit_lsn, ts, xid = _BEGIN.unpack_from(payload, 1)
                self.xid = xid
                return Begin(xid, commit_lsn, ts + PG_EPOCH_US)
            if kind == 0x43:  # 'C'
                _flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(payload, 1)
                return Commit(self.xid, commit_lsn, end_lsn, ts + PG_EPOCH_US)
            if kind == 0x52:  # 'R'
                return self._relation(payload, lsn)
            if kind == 0x54:  # 'T'
                return self._truncate(payload, lsn)
            if kind == 0x4D:  # 'M'
                flags, msg_lsn = _MSG_HEAD.unpack_from(payload, 1)
                prefix, pos = _cstring(payload, 1 + _MSG_HEAD.size)
                (length,) = _U32.unpack_from(payload, pos)
                raw = payload[pos + 4:pos + 4 + length]
                # Anyone may emit bytes under the author's prefix (the bytea variant): its
                # parser refuses what is not the documented object, capture goes on.
                content = raw.decode("utf-8", "replace" if prefix == AUTHOR_PREFIX else "strict")
                return Message(msg_lsn, prefix, content, bool(flags & 1))
            if kind in (0x59, 0x4F):  # 'Y' type, 'O' origin: nothing capture uses
                return None
        except DecodeError:
            raise
        except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(
                f"unparseable pgoutput message ({exc!r}): {payload[:80]!r}") from exc
        raise DecodeError(f"unknown pgoutput message type {chr(payload[0])!r}")

    def _relation(self, buf: bytes, lsn: int) -> Relation:
        (relid,) = _REL_HEAD.unpack_from(buf, 1)
        schema, pos = _cstring(buf, 5)
        table, pos = _cstring(buf, pos)
        pos += 1  # replica identity setting
        (ncols,) = _U16.unpack_from(buf, pos)
        pos += 2
        names: list[str] = []
        type_mods: list[tuple[int, int]] = []
        for _ in range(ncols):
            pos += 1  # flags (part of the replica identity: all, with FULL)
            name, pos = _cstring(buf, pos)
            typoid, typmod = _COLTYPE.unpack_from(buf, pos)
            pos += _COLTYPE.size
            names.append(name)
            type_mods.append((typoid, typmod))
        type_names, pk = self.catalog.relation_columns(relid, type_mods)
        schema = schema or "pg_catalog"
        own = self.names.captured(relid)
        if own is not None and own != (schema, table):
            # The captured relation under another name (ALTER TABLE ... RENAME TO): its
            # changes stay on its own topic, under the name replay knows.
            log.warning("captured table %s.%s is now named %s.%s; its changes keep its "
                        "captured name and topic", *own, schema, table)
            schema, table = own
        types = dict(zip(names, type_names, strict=True))
        self.relations[relid] = RelationInfo(schema, table, names,
                                             [bytes_decoder(t) for t in type_names], types, pk)
        return Relation(schema, table, lsn, tuple(types.items()))

    def _rel(self, relid: int) -> RelationInfo:
        rel = self.relations.get(relid)
        if rel is None:
            raise DecodeError(f"pgoutput change for relation {relid} before its Relation message")
        return rel

    def _change(self, action: str, rel: RelationInfo, lsn: int, before: Row | None,
                after: Row | None) -> RowChange:
        source = after if after is not None else before
        assert source is not None
        if not rel.primary_key:
            raise DecodeError(f"{rel.schema}.{rel.table} has no primary key: events are keyed "
                              "by it")
        key = {k: source.get(k) for k in rel.primary_key}
        return RowChange(action, rel.schema, rel.table, lsn, before, after, key, rel.types)

    def _insert(self, buf: bytes, lsn: int) -> RowChange:
        (relid,) = _U32.unpack_from(buf, 1)
        rel = self._rel(relid)
        after, _ = parse_tuple(buf, 6, rel)  # 5: the 'N' byte
        return self._change("I", rel, lsn, None, after)  # type: ignore[arg-type]

    def _update(self, buf: bytes, lsn: int) -> RowChange:
        (relid,) = _U32.unpack_from(buf, 1)
        rel = self._rel(relid)
        pos = 5
        before: dict[str, object] | None = None
        if buf[pos] in (0x4B, 0x4F):  # 'K' key or 'O' old row
            before, pos = parse_tuple(buf, pos + 1, rel)
        if buf[pos] != 0x4E:
            raise DecodeError("pgoutput UPDATE without its new row ('N')")
        after, _ = parse_tuple(buf, pos + 1, rel)
        if _UNCHANGED in after.values():
            if before is None:
                raise DecodeError(
                    f"unchanged TOAST value in {rel.schema}.{rel.table} without the old row: "
                    "the table needs REPLICA IDENTITY FULL")
            after = {k: before[k] if v is _UNCHANGED else v for k, v in after.items()}
        return self._change("U", rel, lsn, before, after)  # type: ignore[arg-type]

    def _delete(self, buf: bytes, lsn: int) -> RowChange:
        (relid,) = _U32.unpack_from(buf, 1)
        rel = self._rel(relid)
        before, _ = parse_tuple(buf, 6, rel)  # 5: 'K' or 'O'
        return self._change("D", rel, lsn, before, None)  # type: ignore[arg-type]

    def _truncate(self, buf: bytes, lsn: int) -> Truncate:
        n, _options = _TRUNC_HEAD.unpack_from(buf, 1)
        relids = struct.unpack_from(f"!{n}I", buf, 1 + _TRUNC_HEAD.size)
        tables = tuple((self._rel(r).schema, self._rel(r).table) for r in relids)
        return Truncate(tables, lsn)
