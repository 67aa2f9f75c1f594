"""The transaction a stream is decoding: its numbering, counts and author, and the BEGIN and
END events capture publishes for it on the transaction topic (Debezium's shape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from capture.event import Author, TableCount, TransactionEvent

if TYPE_CHECKING:
    import msgspec

    from capture.decoding import Begin, Commit
    from capture.publish import PendingTxn


@dataclass
class Txn:
    begin: Begin
    pending: PendingTxn
    position: int = 0  # next position: change events and schema changes share the numbering
    changes: int = 0
    schema_changes: int = 0
    per_table: dict[str, int] = field(default_factory=dict)
    began: bool = False  # its BEGIN event published (before its first event, not earlier)
    author: Author | None = None
    author_raw: msgspec.Raw | None = None  # the author's JSON, encoded once per transaction

    def begin_event(self) -> bytes:
        b = self.begin
        return TransactionEvent(
            status="BEGIN", id=f"{b.xid}:{b.commit_lsn}", xid=b.xid, commit_lsn=b.commit_lsn,
            ts_ms=b.ts_us // 1000, ts_us=b.ts_us, author=self.author).to_json()

    def end_event(self, rec: Commit) -> bytes:
        return TransactionEvent(
            status="END", id=f"{rec.xid}:{rec.commit_lsn}", xid=rec.xid,
            commit_lsn=rec.commit_lsn, ts_ms=rec.ts_us // 1000, ts_us=rec.ts_us,
            event_count=self.changes,
            data_collections=tuple(TableCount(data_collection=k, event_count=v)
                                   for k, v in self.per_table.items()),
            schema_change_count=self.schema_changes, author=self.author).to_json()
