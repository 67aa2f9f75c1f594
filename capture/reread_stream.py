"""One connected stream's side of the online re-reads (capture/reread.py holds the re-reads
themselves, across streams): the watermark and request messages as they are decoded, the
re-reads a DDL asks for, and the re-read states as of each commit, which the PROGRESS
markers carry (a restarted capture takes them from the marker at its confirmed LSN).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from capture.event import format_lsn

if TYPE_CHECKING:
    from capture.decoding import Message
    from capture.reread import Emit, Rereads, RereadState

log = logging.getLogger("hera.capture")


class StreamRereads:
    def __init__(self, rereads: Rereads, confirmed_lsn: int, captured: set[str],
                 slot: str) -> None:
        self.rereads = rereads
        self.captured = captured  # schema.table of every captured table
        self.slot = slot
        # (end LSN of a commit, the re-read states from then on), as the column sets'.
        self.history: list[tuple[int, list[RereadState]]] = [
            (confirmed_lsn, rereads.snapshot())]
        self.changed = False  # by the transaction being decoded

    def at(self, lsn: int) -> list[RereadState]:
        """The re-read states after everything up to ``lsn``; older history dropped."""
        while len(self.history) > 1 and self.history[1][0] <= lsn:
            self.history.pop(0)
        return self.history[0][1]

    def committed(self, end_lsn: int) -> None:
        if self.changed:
            self.changed = False
            self.history.append((end_lsn, self.rereads.snapshot()))

    def watermark(self, rec: Message, commit_lsn: int, emit: Emit) -> RereadState | None:
        """A watermark inside a transaction: a chunk's rows go out through ``emit``; returns
        the re-read when this watermark finished it (its REREAD_END marker is the caller's)."""
        ended = self.rereads.watermark(rec, commit_lsn, emit)
        if ended is None:
            return None
        self.changed = True
        return ended if ended.finished else None

    def requested(self, rec: Message) -> None:
        """A re-read request (``capture resnapshot``) inside a transaction."""
        self.rereads.requested(rec, self.captured, self.slot)
        self.changed = True

    def after_ddl(self, schema: str, table: str, lsn: int, why: str) -> None:
        """A DDL the stream cannot express: the table's content is unknown until re-read."""
        log.warning("table re-read after a schema change the stream cannot express",
                    extra={"table": f"{schema}.{table}", "why": why, "lsn": format_lsn(lsn)})
        self.rereads.schema_changed(schema, table)
        self.rereads.request(f"{schema}.{table}", why, lsn)
        self.changed = True
