"""Building blocks for the detector's tests: change events and END records, as capture
publishes them, without running capture."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capture.event import (
    ChangeEvent,
    Op,
    Source,
    TableCount,
    TransactionBlock,
    TransactionEvent,
)
from consumers.detect.alerts import Alert
from consumers.detect.assembler import CompletedTransaction
from consumers.detect.config import RulesConfig
from consumers.detect.memberships import MembershipIndex
from consumers.detect.rules import Detector
from consumers.detect.window import RemovalWindow

REL = "public.core_relationships"
DYN = "public.core_dynamic_data"
BASE_US = 1_790_000_000_000_000  # a fixed commit time, 2026
SYSTEM_ID = "7300000000000000001"  # pg_control_system().system_identifier of "the" cluster
FIXED_NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

_xids = itertools.count(1000)
_lsns = itertools.count(0x1000000, 0x1000)


def fixed_clock() -> datetime:
    return FIXED_NOW


def membership(user: str, org: str, active: bool = True, **extra: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "organization_id": org, "from_entity_id": user,
            "to_entity_id": org, "relationship_type": "USER_MEMBER_OF_ORG",
            "smart_code": "HERA.AUTH.USER.MEMBERSHIP.v1", "is_active": active, **extra}


def link(org: str, kind: str = "CUSTOMER_HAS_APPOINTMENT", **extra: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "organization_id": org, "from_entity_id": "e1",
            "to_entity_id": "e2", "relationship_type": kind,
            "smart_code": "HERA.SALON.APPOINTMENT.BOOKING.v1", "is_active": True, **extra}


def role(user: str, org: str, field_name: str = "role") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "organization_id": org, "entity_id": user,
            "field_name": field_name, "field_value_text": "staff",
            "smart_code": "HERA.SALON.USER.ROLE.v1"}


@dataclass
class Tx:
    """One transaction's events, numbered as capture numbers them: ``position`` from 0,
    Debezium's ``total_order`` from 1 (capture/event.py change_event_json)."""

    prefix: str = "hera"
    xid: int = field(default_factory=lambda: next(_xids))
    commit_lsn: int = field(default_factory=lambda: next(_lsns))
    commit_us: int = BASE_US
    events: list[ChangeEvent] = field(default_factory=list)

    def _add(self, table: str, op: Op, before: dict[str, Any] | None,
             after: dict[str, Any] | None) -> Tx:
        schema, _, name = table.partition(".")
        position = len(self.events)
        row = after if after is not None else before
        per_table = sum(1 for e in self.events if e.table_id == table) + 1
        self.events.append(ChangeEvent(
            before=before, after=after, op=op, ts_ms=self.commit_us // 1000,
            source=Source(name=self.prefix, db="hera", schema_=schema, table=name,
                          txId=self.xid, lsn=self.commit_lsn - 10 + position,
                          ts_ms=self.commit_us // 1000, ts_us=self.commit_us,
                          snapshot="true" if op is Op.READ else "false"),
            transaction=None if op is Op.READ else TransactionBlock(
                id=f"{self.xid}:{self.commit_lsn}", total_order=position + 1,
                data_collection_order=per_table),
            commit_lsn=self.commit_lsn, position=position,
            key=None if row is None else {"id": row["id"]},
            types=None if row is None else {k: "text" for k in row},
        ))
        return self

    def insert(self, table: str, row: dict[str, Any]) -> Tx:
        return self._add(table, Op.CREATE, None, row)

    def delete(self, table: str, row: dict[str, Any]) -> Tx:
        return self._add(table, Op.DELETE, row, None)

    def update(self, table: str, before: dict[str, Any], **changes: Any) -> Tx:
        return self._add(table, Op.UPDATE, before, {**before, **changes})

    def read(self, table: str, row: dict[str, Any]) -> Tx:
        return self._add(table, Op.READ, None, row)

    def truncate(self, table: str) -> Tx:
        return self._add(table, Op.TRUNCATE, None, None)

    def end(self) -> TransactionEvent:
        tables: dict[str, int] = {}
        for e in self.events:
            tables[e.table_id] = tables.get(e.table_id, 0) + 1
        return TransactionEvent(
            status="END", id=f"{self.xid}:{self.commit_lsn}", xid=self.xid,
            commit_lsn=self.commit_lsn, ts_ms=self.commit_us // 1000, ts_us=self.commit_us,
            event_count=len(self.events),
            data_collections=tuple(TableCount(data_collection=t, event_count=n)
                                   for t, n in tables.items()))

    def begin(self) -> TransactionEvent:
        return TransactionEvent(status="BEGIN", id=f"{self.xid}:{self.commit_lsn}",
                                xid=self.xid, commit_lsn=self.commit_lsn,
                                ts_ms=self.commit_us // 1000, ts_us=self.commit_us)


def make_detector(rules: RulesConfig | None = None, dsn: str | None = None) -> Detector:
    rules = rules or RulesConfig()
    window = RemovalWindow(int(rules.mass_deletion.window_seconds * 1_000_000))
    return Detector(rules, MembershipIndex(), window, "./archive", dsn, fixed_clock)


def run(detector: Detector, tx: Tx) -> list[Alert]:
    kept = tuple(e for e in tx.events if detector.keeps(e))
    counts: dict[str, int] = {}
    for e in tx.events:
        counts[e.table_id] = counts.get(e.table_id, 0) + 1
    return detector.evaluate(CompletedTransaction(tx.xid, tx.commit_lsn, tx.commit_us, kept,
                                                  counts))


# --- the real broker ------------------------------------------------------------------------

# The plan's tables exactly as `guard install` creates them: sql/00_foundation.sql is tables
# only and idempotent, so the detector's tests run it instead of keeping a copy of the DDL.
ALERTS_TABLE_DDL = (Path(__file__).resolve().parent.parent / "sql" / "00_foundation.sql"
                    ).read_text()


class Publisher:
    """Publishes transactions the way capture does: events keyed by primary key on the
    table topics, BEGIN/END keyed ``txn`` on the transaction topic."""

    def __init__(self, bootstrap_servers: str, prefix: str) -> None:
        from kafka import KafkaProducer

        self.prefix = prefix
        self._p = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=0)

    def raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._p.send(topic, key=key, value=value).get(timeout=30)

    def tx(self, tx: Tx, end: bool = True) -> None:
        from capture.topics import table_topic, transaction_topic

        self._p.send(transaction_topic(self.prefix), key=b"txn", value=tx.begin().to_json())
        for e in tx.events:
            self._p.send(table_topic(self.prefix, e.source.schema_, e.source.table),
                         key=e.kafka_key(), value=e.to_json())
        if end:
            self._p.send(transaction_topic(self.prefix), key=b"txn", value=tx.end().to_json())
        self._p.flush(30)

    def marker(self, kind: Any, epoch_lsn: int, db: str = "hera",
               system_identifier: str | None = SYSTEM_ID,
               tables: tuple[str, ...] = (REL, DYN)) -> bytes:
        from capture.event import StreamMarker

        return StreamMarker(status=kind, slot="s", db=db, epoch_lsn=epoch_lsn, lsn=epoch_lsn,
                            ts_ms=BASE_US // 1000, tables=tables,
                            system_identifier=system_identifier, plugin="pgoutput").to_json()

    def snapshot(self, epoch_lsn: int, rows: list[dict[str, Any]], db: str = "hera",
                 system_identifier: str | None = SYSTEM_ID) -> None:
        from capture.event import MarkerKind
        from capture.topics import table_topic, transaction_topic

        def marker(kind: MarkerKind) -> bytes:
            return self.marker(kind, epoch_lsn, db, system_identifier)

        self._p.send(transaction_topic(self.prefix), key=b"marker",
                     value=marker(MarkerKind.SNAPSHOT_START))
        tx = Tx(commit_lsn=epoch_lsn)
        for row in rows:
            tx.read(REL, row)
        for e in tx.events:
            self._p.send(table_topic(self.prefix, "public", "core_relationships"),
                         key=e.kafka_key(), value=e.to_json())
        self._p.flush(30)
        self._p.send(transaction_topic(self.prefix), key=b"marker",
                     value=marker(MarkerKind.SNAPSHOT_END))
        self._p.flush(30)

    def close(self) -> None:
        self._p.close()


def read_topic(bootstrap_servers: str, topic: str, until: Any, timeout_s: float = 30.0,
               settle_s: float = 0.0) -> list[Any]:
    """Every record of ``topic`` (all partitions) once ``until(records)`` holds, polling
    with a deadline; then ``settle_s`` more of polling to catch anything extra (used to
    prove there is no duplicate)."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=50)
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        assigned: set[int] = set()
        settle_until: float | None = None
        while time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic) or set()
            if parts != assigned:
                tps = [TopicPartition(topic, p) for p in sorted(parts)]
                consumer.assign(tps)
                consumer.seek_to_beginning(*tps)
                records, assigned = [], parts
            if assigned:
                for batch in consumer.poll(timeout_ms=100).values():
                    records.extend(batch)
            else:
                time.sleep(0.05)  # the topic does not exist yet
            if settle_until is None and until(records):
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() >= settle_until:
                return records
        raise AssertionError(f"{topic}: condition not met within {timeout_s} s; "
                             f"{len(records)} records")
    finally:
        consumer.close()
