"""The archiver loop on an in-memory record source: bulk and model parse together, dead letters."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from capture.event import ColumnDef, MarkerKind, SchemaChangeEvent
from consumers.archive.archiver import Archiver, ArchiverStats, ArchiverTuning
from consumers.archive.layout import IdentityMismatchError
from consumers.archive.reader import connect_history
from consumers.archive.store import ArchiveStore
from consumers.kafka_source import Record
from tests.archive_fixtures import BASE_US, begin, change, end, marker

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

    def cluster_id(self, timeout_s: float = 15.0) -> str | None:
        return None

    def partitions(self) -> set[tuple[str, int]]:
        return set()

    def start_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return dict.fromkeys(tps, 0)

    def end_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return dict.fromkeys(tps, 1)

    def fetched_ends(self) -> dict[tuple[str, int], int]:
        return {}


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


def _schema_change(commit_lsn: int, position: int) -> SchemaChangeEvent:
    return SchemaChangeEvent(
        xid=7, commit_lsn=commit_lsn, position=position, lsn=commit_lsn - 1, ts_us=BASE_US,
        schema_="public", table="core_relationships", command_tag="ALTER TABLE",
        ddl="ALTER TABLE core_relationships ADD COLUMN note text",
        columns=(ColumnDef(attnum=1, name="id", type="uuid", not_null=True),
                 ColumnDef(attnum=2, name="note", type="text")))


def _run_once(tmp_path: Path, records: list[Record], **kwargs: Any) -> ArchiverStats:
    stop = threading.Event()
    with ArchiveStore.open_or_create(tmp_path / "a") as store:
        return Archiver(store, ListSource(records), ArchiverTuning(batch_events=1),
                        on_commit=lambda _s: stop.set(), **kwargs).run(stop)


def test_schema_changes_are_archived_once_at_their_place_in_the_transaction(
        tmp_path: Path) -> None:
    sc = _schema_change(10, 1).to_json()
    records = [Record(TOPIC, 0, 0, b"k", change(10, 0).to_json()),
               Record("p.transaction", 0, 0, b"x", sc),
               Record("p.transaction", 0, 1, b"x", sc)]  # re-sent by capture
    stats = _run_once(tmp_path, records)
    assert stats.schema_changes_written == 1
    con = connect_history(tmp_path / "a")
    rows = con.execute("SELECT table_name, commit_lsn, position, command_tag, recorded, "
                       "columns -> 1 ->> 'name', schema_version FROM schema_changes").fetchall()
    assert rows == [("core_relationships", 10, 1, "ALTER TABLE", True, "note", 2)]


def test_a_marker_of_another_database_stops_the_archiver_before_it_commits(
        tmp_path: Path) -> None:
    good = marker(MarkerKind.PROGRESS, 5).model_copy(update={"system_identifier": "111"})
    other = good.model_copy(update={"system_identifier": "222", "lsn": 9})
    _run_once(tmp_path, [Record("p.transaction", 0, 0, b"x", good.to_json())])
    with ArchiveStore.open_or_create(tmp_path / "a") as store:
        before = store.state
        assert before.identity is not None and before.identity.system_identifier == "111"
        stop = threading.Event()
        with pytest.raises(IdentityMismatchError, match="system identifier is '222', "
                                                        "expected '111'"):
            Archiver(store, ListSource([Record("p.transaction", 0, 1, b"x", other.to_json())]),
                     ArchiverTuning(batch_events=1)).run(stop)
    with ArchiveStore.open_or_create(tmp_path / "a") as store:
        assert store.state == before


def test_a_partition_that_goes_back_stops_the_archiver(tmp_path: Path) -> None:
    _run_once(tmp_path, [Record(TOPIC, 0, i, b"k", change(10, i).to_json()) for i in range(3)])
    with ArchiveStore.open_or_create(tmp_path / "a") as store, \
            pytest.raises(IdentityMismatchError, match="served offset 0 after 2 was archived"):
        Archiver(store, ListSource([Record(TOPIC, 0, 0, b"k", change(99, 0).to_json())]),
                 ArchiverTuning(batch_events=1)).run(threading.Event())
