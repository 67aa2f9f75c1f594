"""Other engines read the archive as the plain Delta table it is: Polars (``pl.read_delta``,
as the README shows it) sees exactly the rows ``connect_history`` sees, on both backends."""

from __future__ import annotations

import polars as pl

from consumers.archive.store import ArchiveStore
from tests.archive_fixtures import workload
from tests.s3_fixtures import ArchiveTarget


def test_polars_reads_the_changes_connect_history_reads(archive_target: ArchiveTarget) -> None:
    changes, ends = workload(transactions=30, per_txn=3)
    with ArchiveStore.open_or_create(archive_target.location()) as store:
        store.append(changes[:45], ends[:15], offsets={("hera.transaction", 0): 15})
        store.append(changes[45:], ends[15:], offsets={("hera.transaction", 0): 30})
    frame = (pl.read_delta(archive_target.uri, storage_options=archive_target.env or None)
             .filter(pl.col("kind") == "changes")
             .unique(subset=["commit_lsn", "position"]))
    ours = archive_target.connect().execute(
        "SELECT commit_lsn, position, op, after FROM changes ORDER BY 1, 2").fetchall()
    theirs = frame.sort(["commit_lsn", "position"]).select(
        ["commit_lsn", "position", "op", "after"]).rows()
    assert len(ours) == 90
    assert [(int(a), b, c, d) for a, b, c, d in theirs] == [
        (int(a), b, c, d) for a, b, c, d in ours]
