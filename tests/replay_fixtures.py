"""Building change histories for replay tests without Kafka.

``History`` makes ChangeEvents, END records and coverage markers the way capture publishes
them (one epoch: snapshot at ``epoch_lsn``, then committed transactions), and
``memory_history`` loads them into an in-memory DuckDB with the archive reader's views
(``changes``, ``transactions``, ``markers``: the contract of consumers/archive/reader.py).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import psycopg
from psycopg import sql

from capture.decoding import HEARTBEAT_PREFIX
from capture.encoding import SCHEMA_VERSION
from capture.event import (
    ChangeEvent,
    ColumnDef,
    MarkerKind,
    Op,
    Row,
    SchemaChangeEvent,
    Source,
    StreamMarker,
    TableCount,
    TransactionBlock,
    TransactionEvent,
    format_lsn,
    parse_lsn,
)

if TYPE_CHECKING:
    from consumers.archive.location import ArchiveLocation

_Root = TypeVar("_Root", Path, "ArchiveLocation")

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
REL_TYPES = {"id": "uuid", "org": "uuid", "kind": "text", "is_active": "boolean",
             "n": "integer", "big": "bigint", "amount": "numeric", "data": "jsonb",
             "tags": "text[]", "at": "timestamp with time zone"}


def us(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


@dataclass
class History:
    """A table's captured history; every ``commit`` is one transaction."""

    schema: str = "public"
    table: str = "rel"
    types: dict[str, str] = field(default_factory=lambda: dict(REL_TYPES))
    epoch_lsn: int = 0x1000
    slot: str = "slot"
    events: list[ChangeEvent] = field(default_factory=list)
    ends: list[TransactionEvent] = field(default_factory=list)
    markers: list[StreamMarker] = field(default_factory=list)
    schema_changes: list[SchemaChangeEvent] = field(default_factory=list)
    next_lsn: int = 0x2000
    next_xid: int = 700
    clock: datetime = T0
    version: int = SCHEMA_VERSION  # schema_version of the events made from now on
    db: str = "db"
    system_identifier: str | None = None
    # The table's definition the SNAPSHOT_START marker records (capture writes it since
    # schema_version 2); None: a marker from before, names only.
    definition: tuple[ColumnDef, ...] | None = None

    def _source(self, xid: int | None, lsn: int, at: datetime, snap: str) -> Source:
        return Source(name="hera", db="db", schema_=self.schema, table=self.table, txId=xid,
                      lsn=lsn, ts_ms=us(at) // 1000, ts_us=us(at), snapshot=snap)

    def snapshot(self, rows: list[Row]) -> None:
        at = self.clock
        tid = f"{self.schema}.{self.table}"
        self.markers.append(StreamMarker(status=MarkerKind.SNAPSHOT_START, slot=self.slot,
                                         db=self.db, epoch_lsn=self.epoch_lsn,
                                         lsn=self.epoch_lsn, ts_ms=us(at) // 1000,
                                         tables=(tid,),
                                         system_identifier=self.system_identifier,
                                         definitions=None if self.definition is None
                                         else {tid: self.definition}))
        for i, row in enumerate(rows):
            self.events.append(ChangeEvent(
                op=Op.READ, after=row, ts_ms=us(at) // 1000,
                source=self._source(None, self.epoch_lsn, at,
                                    "last" if i == len(rows) - 1 else "true"),
                commit_lsn=self.epoch_lsn, position=i, key={"id": row["id"]},
                types=self.types, schema_version=self.version))
        self.markers.append(StreamMarker(status=MarkerKind.SNAPSHOT_END, slot=self.slot,
                                         db=self.db, epoch_lsn=self.epoch_lsn,
                                         lsn=self.epoch_lsn, ts_ms=us(at) // 1000,
                                         tables=(tid,),
                                         system_identifier=self.system_identifier))

    def commit(self, changes: list[tuple[str, Row | None, Row | None]]) -> tuple[int, int,
                                                                                  datetime]:
        """One transaction of (op, before, after); returns (xid, commit_lsn, commit time)."""
        self.clock += timedelta(seconds=10)
        xid, lsn, at = self.next_xid, self.next_lsn, self.clock
        self.next_xid += 1
        self.next_lsn += 0x100
        for pos, (op, before, after) in enumerate(changes):
            if op == "x":  # the place of a schema change (see ``alter``)
                continue
            row = after if after is not None else before
            key = None if op == "t" or row is None else {"id": row["id"]}
            self.events.append(ChangeEvent(
                op=Op(op), before=before, after=after, ts_ms=us(at) // 1000,
                source=self._source(xid, lsn - 0x10 + pos, at, "false"),
                transaction=TransactionBlock(id=f"{xid}:{lsn}", total_order=pos + 1,
                                             data_collection_order=pos + 1),
                commit_lsn=lsn, position=pos, key=key,
                types=None if op == "t" else self.types, schema_version=self.version))
        counts = Counter(f"{self.schema}.{self.table}" for c in changes if c[0] != "x")
        self.ends.append(TransactionEvent(
            status="END", id=f"{xid}:{lsn}", xid=xid, commit_lsn=lsn, ts_ms=us(at) // 1000,
            ts_us=us(at), event_count=sum(counts.values()),
            schema_change_count=sum(1 for c in changes if c[0] == "x"),
            data_collections=tuple(TableCount(data_collection=k, event_count=v)
                                   for k, v in counts.items())))
        return xid, lsn, at

    def alter(self, ddl: str | None, columns: list[ColumnDef],
              changes: list[tuple[str, Row | None, Row | None]] | None = None,
              recorded: bool = True) -> tuple[int, int, datetime]:
        """One transaction: a schema change (the table's definition after ``ddl``) at
        position 0, then ``changes`` (made with the new columns); returns what commit does."""
        self.types = {c.name: c.type for c in columns}
        xid, lsn, at = self.commit([("x", None, None), *(changes or [])])
        self.schema_changes.append(SchemaChangeEvent(
            xid=xid, commit_lsn=lsn, position=0, lsn=lsn - 0x10, ts_us=us(at),
            schema_=self.schema, table=self.table, columns=tuple(columns),
            command_tag="ALTER TABLE" if recorded else None, ddl=ddl if recorded else None,
            recorded=recorded))
        return xid, lsn, at

    def progress(self, lsn: int | None = None) -> None:
        self.markers.append(StreamMarker(
            status=MarkerKind.PROGRESS, slot=self.slot, db=self.db, epoch_lsn=self.epoch_lsn,
            system_identifier=self.system_identifier,
            lsn=self.next_lsn if lsn is None else lsn, ts_ms=us(self.clock) // 1000 + 1,
            tables=(f"{self.schema}.{self.table}",), commit_ts_us=us(self.clock) + 1))


_CHANGES_DDL = """
CREATE TABLE changes (table_schema VARCHAR, table_name VARCHAR, op VARCHAR,
    commit_lsn UBIGINT, position INTEGER, xid BIGINT, commit_ts TIMESTAMPTZ, key JSON,
    before JSON, after JSON, types JSON, snapshot BOOLEAN, event_ts TIMESTAMPTZ,
    schema_version INTEGER);
CREATE TABLE transactions (xid BIGINT, commit_lsn UBIGINT, commit_ts TIMESTAMPTZ,
    event_count BIGINT, data_collections JSON);
CREATE TABLE markers (status VARCHAR, slot VARCHAR, db VARCHAR, epoch_lsn UBIGINT,
    lsn UBIGINT, ts TIMESTAMPTZ, tables VARCHAR[], system_identifier VARCHAR, plugin VARCHAR,
    definitions JSON, commit_ts TIMESTAMPTZ);
CREATE TABLE schema_changes (table_schema VARCHAR, table_name VARCHAR, commit_lsn UBIGINT,
    position INTEGER, xid BIGINT, commit_ts TIMESTAMPTZ, lsn UBIGINT, columns JSON,
    command_tag VARCHAR, ddl VARCHAR, recorded BOOLEAN, schema_version INTEGER);
"""


def _ts(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def _j(value: object) -> str | None:
    # compact, like the archiver's serializer
    return None if value is None else json.dumps(value, separators=(",", ":"))


def memory_history(*histories: History) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the reader's three views filled from ``histories``."""
    conn = duckdb.connect()
    conn.execute(_CHANGES_DDL)
    for h in histories:
        if h.events:
            conn.executemany(
                "INSERT INTO changes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [[e.source.schema_, e.source.table, e.op.value, e.commit_lsn, e.position,
                  e.source.txId, _ts(e.source.ts_us), _j(e.key), _j(e.before), _j(e.after),
                  _j(e.types), e.op == Op.READ, _ts(e.ts_ms * 1000), e.schema_version]
                 for e in h.events])
        if h.ends:
            conn.executemany(
                "INSERT INTO transactions VALUES (?,?,?,?,?)",
                [[t.xid, t.commit_lsn, _ts(t.ts_us), t.event_count,
                  json.dumps([c.model_dump() for c in t.data_collections or ()])]
                 for t in h.ends])
        if h.markers:
            conn.executemany(
                "INSERT INTO markers VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [[m.status.value, m.slot, m.db, m.epoch_lsn, m.lsn, _ts(m.ts_ms * 1000),
                  list(m.tables), m.system_identifier, m.plugin,
                  None if m.definitions is None else json.dumps(
                      {t: [c.model_dump() for c in d] for t, d in m.definitions.items()}),
                  None if m.commit_ts_us is None else _ts(m.commit_ts_us)]
                 for m in h.markers])
        if h.schema_changes:
            conn.executemany(
                "INSERT INTO schema_changes VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [[e.schema_, e.table, e.commit_lsn, e.position, e.xid, _ts(e.ts_us), e.lsn,
                  json.dumps([c.model_dump() for c in e.columns]), e.command_tag, e.ddl,
                  e.recorded, e.schema_version] for e in h.schema_changes])
    return conn


# --- the real pipeline: capture (in-process) -> broker -> archiver (process) --------------


def archive_reach(archive: Path) -> int:
    """The highest commit or PROGRESS LSN the archive holds (0 when empty/unreadable)."""
    from consumers.archive.reader import connect_history

    try:
        conn = connect_history(archive)
    except Exception:  # not created yet by the archiver
        return 0
    row = conn.execute("SELECT greatest((SELECT coalesce(max(commit_lsn), 0) FROM transactions),"
                       " (SELECT coalesce(max(lsn), 0) FROM markers))").fetchone()
    return int(row[0]) if row else 0


@dataclass
class Pipeline:
    dsn: str
    archive: Path

    def wait_archived(self, lsn: int, timeout: float = 60.0) -> None:
        from tests.capture_fixtures import wait_until

        wait_until(lambda: archive_reach(self.archive) >= lsn, timeout,
                   f"the archive to reach {format_lsn(lsn)}")

    def wait_reread_ended(self, table: str, after_lsn: int, timeout: float = 120.0) -> None:
        """Until the archive holds the end of a re-read of ``table`` (``schema.table``)
        requested after ``after_lsn``: from there replay knows every row of it again."""
        from consumers.archive.reader import connect_history
        from tests.capture_fixtures import wait_until

        def ended() -> bool:
            try:
                conn = connect_history(self.archive)
            except Exception:  # not created yet by the archiver
                return False
            row = conn.execute('SELECT count(*) FROM rereads WHERE "table" = ? '
                               "AND requested_lsn > ?", [table, after_lsn]).fetchone()
            return bool(row and row[0])

        wait_until(ended, timeout, f"the archive to hold the end of a re-read of {table}")

    def sync_by(self, conn: psycopg.Connection[Any], statement: str) -> int:
        """Run ``statement`` (a write to a captured table ending in ``RETURNING
        pg_current_wal_lsn()::text``) on ``conn``; return its LSN once it is archived."""
        row = conn.execute(statement).fetchone()
        assert row is not None
        lsn = parse_lsn(str(row[0]))
        self.wait_archived(lsn)
        return lsn

    def sync(self) -> int:
        """A commit capture sees after everything so far (a transactional logical message,
        as capture's heartbeat: no captured table changes); returns once it is archived,
        so the archive reaches it in LSN and in PostgreSQL's commit time."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_logical_emit_message(true, %s, 'sync')", (HEARTBEAT_PREFIX,))
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            lsn = parse_lsn(str(row[0]))
        self.wait_archived(lsn)
        return lsn


@contextlib.contextmanager
def pipeline(dsn: str, bootstrap: str, prefix: str, slot: str,
             workdir: Path, **capture: Any) -> Iterator[Pipeline]:
    """Capture + archiver running for the block; the archive in ``workdir/archive``.
    ``capture``: capture settings (e.g. ``plugin``, ``tables``)."""
    from tests.capture_fixtures import running_capture
    from tests.integration.archive_support import start_archiver

    archive = workdir / "archive"
    with running_capture(dsn, bootstrap, prefix, slot, **{
            "heartbeat_interval_s": 0.5, "confirm_interval_s": 0.1, **capture}):
        proc = start_archiver(bootstrap, prefix, archive, workdir / "archiver.log")
        try:
            yield Pipeline(dsn, archive)
        finally:
            proc.terminate()
            proc.wait(30)


def copy_moment(conn: psycopg.Connection[Any], name: str) -> tuple[int, datetime]:
    """Copy core_relationships now; returns (LSN, time) covering every commit so far."""
    conn.execute(sql.SQL("CREATE TABLE {} AS SELECT * FROM core_relationships").format(
        sql.Identifier(name)))
    row = conn.execute("SELECT pg_current_wal_lsn()::text, clock_timestamp()").fetchone()
    assert row is not None
    return parse_lsn(str(row[0])), row[1]


def table_difference(conn: psycopg.Connection[Any], a: str, b: str) -> int:
    """Rows in one table and not the other (EXCEPT ALL both ways, every column of ``a``)."""
    cols = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (a,)).fetchall()]
    names = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
    q = sql.SQL("SELECT (SELECT count(*) FROM (SELECT {n} FROM {a} EXCEPT ALL "
                "SELECT {n} FROM {b}) x) + (SELECT count(*) FROM (SELECT {n} FROM {b} "
                "EXCEPT ALL SELECT {n} FROM {a}) y)").format(
        n=names, a=sql.Identifier(a), b=sql.Identifier(b))
    row = conn.execute(q).fetchone()
    return int(row[0]) if row else -1


def write_archive(root: _Root, *histories: History) -> _Root:
    """An archive (the archiver's own store, on disk or object storage) holding
    ``histories``; no Kafka."""
    from consumers.archive.store import ArchiveStore

    with ArchiveStore.open_or_create(root) as store:
        for h in histories:
            extra: dict[str, Any] = {"schema_changes": h.schema_changes} if h.schema_changes \
                else {}
            store.append(h.events, h.ends, h.markers, **extra)
    return root


def rows_differing(conn: psycopg.Connection[Any], a: str, b: str, columns: Sequence[str],
                   where: sql.Composable | None = None) -> int:
    """Rows in one table and not the other (EXCEPT ALL, both ways), every column compared
    as its text: 0 means the two tables hold exactly the same rows."""
    names = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)

    def side(table: str) -> sql.Composable:
        return sql.SQL("SELECT {} FROM {} {}").format(names, sql.Identifier(table),
                                                      where or sql.SQL(""))

    q = sql.SQL("SELECT (SELECT count(*) FROM ({} EXCEPT ALL {}) x) + "
                "(SELECT count(*) FROM ({} EXCEPT ALL {}) y)").format(
        side(a), side(b), side(b), side(a))
    row = conn.execute(q).fetchone()
    return int(row[0]) if row else -1
