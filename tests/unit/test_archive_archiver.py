"""The archiver loop on an in-memory record source: bulk and model parse together, dead letters."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from consumers.archive.archiver import Archiver, ArchiverStats, ArchiverTuning
from consumers.archive.reader import connect_history
from consumers.archive.store import ArchiveStore
from consumers.kafka_source import Record
from tests.archive_fixtures import begin, change, end

TOPIC = "p.public.core_relationships"


class ListSource:
    """Hands out the given records once, then nothing; keeps the dead letters."""

    prefix = "p"

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.dead: list[tuple[Record, str]] = []
        self.flushed = 0

    def assign(self, offsets: dict[tuple[str, int], int]) -> None:
        pass

    def refresh(self, offsets: dict[tuple[str, int], int]) -> None:
        pass

    def poll(self, timeout_ms: int = 200) -> list[Record]:
        out, self.records = self.records, []
        return out

    def dead_letter(self, record: Record, reason: str) -> None:
        self.dead.append((record, reason))

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        pass


def test_canonical_lax_and_bad_records_of_one_batch_are_archived_or_dead_lettered(
        tmp_path: Path) -> None:
    lax = json.dumps(json.loads(change(10, 1).to_json())).encode()  # valid, other spacing
    values: list[bytes | None] = [change(10, 0).to_json(), b"not json", lax, None,
                                  change(11, 0).to_json(), change(10, 0).to_json()]
    records = [Record(TOPIC, 0, i, b"k", v) for i, v in enumerate(values)]
    records += [Record("p.transaction", 0, 0, b"x", begin(10).to_json()),
                Record("p.transaction", 0, 1, b"x", end(10, 2).to_json())]
    source = ListSource(records)
    stop = threading.Event()

    def on_commit(stats: ArchiverStats) -> None:
        stop.set()

    with ArchiveStore.open_or_create(tmp_path / "a") as store:
        stats = Archiver(store, source, ArchiverTuning(batch_events=1), on_commit=on_commit
                         ).run(stop)
        offsets = store.offsets()
    assert (stats.records, stats.changes_written, stats.duplicates, stats.dead_letters,
            stats.transactions_written) == (8, 3, 1, 2, 1)
    assert sorted((r.offset, reason.split(":")[0]) for r, reason in source.dead) == [
        (1, "not valid JSON"), (3, "empty record value (tombstone)")]
    assert source.flushed >= 1  # the dead letters were durable before the commit
    assert offsets == {(TOPIC, 0): 6, ("p.transaction", 0): 2}
    con = connect_history(tmp_path / "a")
    assert con.sql("SELECT commit_lsn, position FROM raw_changes ORDER BY ALL").fetchall() == [
        (10, 0), (10, 1), (11, 0)]
