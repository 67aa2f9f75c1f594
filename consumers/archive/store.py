"""The archive writer: one Delta Lake table, appended in atomic commits of rows + position.

Usage (tests, benchmarks and the demo need no Kafka)::

    store = ArchiveStore.open_or_create("archive")            # or "s3://bucket/prefix"
    store.append(changes=[...], transactions=[...], markers=[...], schema_changes=[...],
                 offsets={("hera.public.t", 0): 1234}, identity=StreamIdentity(...))
    store.offsets()          # {("hera.public.t", 0): 1234} -- next offset to consume
    store.close()

One ``append`` = one Delta commit: the batch's Parquet files (one per kind present), the app
transaction ``Transaction(APP_ID, batch + 1)`` and the commit state (offsets, identity,
dead-letter count; commit_state.py) in its ``commitInfo``. A SIGKILL before the log entry
leaves files no version references (readers never see them; vacuum deletes them); after it,
the batch is in with its offsets. Nothing else is needed to resume: on any host, the position
is read back from the table.

One writer per table: every commit is conditioned on the app-transaction version this writer
read (delta-rs' conflict checker fails a commit when another commit carrying the same app id
landed since the writer's snapshot; the log entry itself is a put-if-absent, on object storage
too). The loser gets ``ArchiveLockedError``. On a local path a ``flock`` on
``_hera_writer.lock`` also refuses a second archiver at once, before it reads anything.

Dedup: capture re-sends events after its own restart (same (commit_lsn, position), new Kafka
offsets). Those are dropped at write (``RecentKeys``: recent keys in memory, older ones looked
up in the table with file statistics pruning), so the table holds each event once;
transactions dedup on commit_lsn, markers on their content, schema changes on
(commit_lsn, position). The reader's views deduplicate again, as a safety net.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from capture.event import ChangeEvent, SchemaChangeEvent, StreamMarker, TransactionEvent
from consumers.archive.commit_state import (
    APP_ID,
    CommitState,
    Offsets,
)
from consumers.archive.dedup import Key, RecentKeys
from consumers.archive.layout import (
    ArchiveError,
    ArchiveLockedError,
    DamagedArchiveError,
    NotAnArchiveError,
    StoreUnavailableError,
)
from consumers.archive.location import (
    ArchiveLocation,
    archive_location,
    store_error,
    store_failure_passes,
)
from consumers.archive.segments import (
    TABLE_SCHEMA,
    changes_rows,
    markers_table,
    schema_changes_table,
    sort_changes,
    to_table_rows,
    transactions_table,
)
from consumers.archive.table import (
    LOCK_FILE,
    WRITER,
    Clock,
    add_missing_columns,
    create_table,
    data_files,
    open_table,
    read_commit_state,
    table_exists,
    utc_now,
)
from hera_kit.identity import StreamIdentity

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class AppendResult:
    version: int  # the Delta table version after the call
    changes_written: int
    duplicates: int  # change events dropped because already archived
    transactions_written: int
    markers_written: int
    schema_changes_written: int = 0


class ArchiveStore:
    def __init__(self, loc: ArchiveLocation, dt: DeltaTable, lock: IO[bytes] | None,
                 clock: Clock, dedup_capacity: int) -> None:
        self.location = loc
        self._dt = dt
        self._lock = lock
        self._clock = clock
        self._broken = False
        self._state = read_commit_state(dt)
        loc.check_files(data_files(dt))  # a missing or damaged file: one line, before anything
        self._changes = RecentKeys(dedup_capacity, lambda k: self._on_disk("changes", k))
        self._txns = RecentKeys(dedup_capacity, lambda k: self._on_disk("transactions", k))
        self._markers: set[tuple[object, ...]] = set()
        self._schema_keys: set[Key] = set()
        try:
            self._load_dedup_state()
        except (OSError, pa.ArrowException) as exc:
            raise DamagedArchiveError(
                f"a data file of the archive {loc} cannot be read ({store_error(exc)}); "
                "restore the file from a backup, or re-archive from Kafka into a new "
                "location") from None

    # --- opening ------------------------------------------------------------------------

    @staticmethod
    def preflight(loc: ArchiveLocation) -> None:
        """The refusals of ``open_or_create`` without writing anything (the CLI runs it
        before it contacts the broker)."""
        if table_exists(loc):
            open_table(loc)
        elif loc.has_unreadable_log():
            raise loc.damaged_log()
        else:
            loc.check_empty()

    @classmethod
    def open_or_create(cls, target: str | Path | ArchiveLocation, *, create: bool = True,
                       clock: Clock = utc_now, dedup_capacity: int = 1_000_000,
                       storage_options: dict[str, str] | None = None) -> ArchiveStore:
        """Open the archive at ``target`` (creating the table if there is none and ``create``).

        Raises NotAnArchiveError (a non-empty directory without a table, an old-format
        archive), NewerArchiveError, DamagedArchiveError (nothing written), and
        ArchiveLockedError when another process writes the local archive.
        """
        loc = archive_location(target, storage_options)
        exists = table_exists(loc)
        if not exists:  # refuse before anything is written (no lock file either)
            if loc.has_unreadable_log():
                raise loc.damaged_log()
            if not create:
                raise NotAnArchiveError(loc.not_an_archive())
            loc.check_empty()
        lock = loc.lock_for_writer(create)
        try:
            dt = create_table(loc, clock) if not exists else open_table(loc)
            if exists:
                add_missing_columns(dt)
            return cls(loc, dt, lock, clock, dedup_capacity)
        except BaseException:
            if lock is not None:
                lock.close()
            raise

    def close(self) -> None:
        if self._lock is not None and not self._lock.closed:
            self._lock.close()

    def __enter__(self) -> ArchiveStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading state ------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return self.location.uri

    @property
    def root(self) -> Path:
        """The local directory (local archives only)."""
        return self.location.path

    @property
    def table(self) -> DeltaTable:
        return self._dt

    @property
    def state(self) -> CommitState:
        return self._state

    def offsets(self) -> Offsets:
        return self._state.offset_map()

    def identity(self) -> StreamIdentity | None:
        return self._state.identity

    def version(self) -> int:
        return self._dt.version()

    # --- writing ------------------------------------------------------------------------

    def append(self, changes: Sequence[ChangeEvent] = (),
               transactions: Sequence[TransactionEvent] = (),
               markers: Sequence[StreamMarker] = (),
               offsets: Offsets | None = None, dead_letters: int = 0,
               change_rows: pa.Table | None = None,
               schema_changes: Sequence[SchemaChangeEvent] = (),
               identity: StreamIdentity | None = None) -> AppendResult:
        """Archive the events not archived yet and record ``offsets`` (and ``identity``), in
        one atomic Delta commit.

        ``change_rows``: change events already in ``CHANGES_SCHEMA`` columns (the archiver's
        bulk parse), archived after ``changes``; among repeated keys the first one is kept.
        ``dead_letters`` (records sent to the dead-letter topic in this batch) is added to the
        commit state's count in the same commit, so the count is exact.
        """
        if self._broken:
            raise ArchiveError("a previous commit failed; reopen the archive")
        try:
            rows = changes_rows(changes)
            if change_rows is not None and change_rows.num_rows:
                rows = pa.concat_tables([rows, change_rows]) if rows.num_rows else change_rows
            return self._append(rows, transactions, markers, schema_changes, offsets or {},
                                dead_letters, identity)
        except (DeltaError, OSError, pa.ArrowException) as exc:
            # The object store or the disk failed under a read or a write of this batch.
            self._broken = True
            raise self.failure(exc, "the batch is in the table entirely or not at all") from None
        except BaseException:
            self._broken = True  # in-memory dedup state may be ahead of the table
            raise

    def failure(self, exc: BaseException, outcome: str) -> ArchiveError:
        """The one-line error of a store failure: StoreUnavailableError when waiting may help
        (the service then continues from the table's position), ArchiveError otherwise."""
        if store_failure_passes(exc):
            return StoreUnavailableError(
                f"cannot write to {self.location}: {store_error(exc)}; {outcome}, the "
                "archiver continues from the position the table holds once the store answers")
        return ArchiveError(
            f"cannot write to {self.location}: {store_error(exc)}; {outcome}: fix the store's "
            "credentials or permissions, then restart the archiver (it resumes from the "
            "position the table holds)")

    def _append(self, changes: pa.Table, transactions: Sequence[TransactionEvent],
                markers: Sequence[StreamMarker], schema_changes: Sequence[SchemaChangeEvent],
                offsets: Offsets, dead_letters: int,
                identity: StreamIdentity | None) -> AppendResult:
        new_changes = self._new_changes(changes)
        ends = [t for t in transactions if t.status == "END"]
        keep_t = self._txns.filter_new([(t.commit_lsn, 0) for t in ends])
        new_txns = [t for t, k in zip(ends, keep_t, strict=True) if k]
        new_markers = []
        for marker in markers:
            mk = _marker_key(marker.status.value, marker.slot, marker.db, marker.epoch_lsn,
                             marker.lsn, marker.ts_ms, marker.tables)
            if mk not in self._markers:
                self._markers.add(mk)
                new_markers.append(marker)
        new_schema = []
        for sc in schema_changes:
            if sc.order_key not in self._schema_keys:
                self._schema_keys.add(sc.order_key)
                new_schema.append(sc)
        parts = []
        if new_changes.num_rows:
            parts.append(to_table_rows("changes", sort_changes(new_changes)))
        if new_txns:
            parts.append(to_table_rows("transactions", transactions_table(new_txns)))
        if new_markers:
            parts.append(to_table_rows("markers", markers_table(new_markers)))
        if new_schema:
            parts.append(to_table_rows("schema_changes", schema_changes_table(new_schema)))
        changed_identity = identity is not None and identity != self._state.identity
        if not offsets and not dead_letters and not parts and not changed_identity:
            return AppendResult(self._dt.version(), 0, changes.num_rows, 0, 0)
        state = self._state.advanced(self._state.batch + 1, offsets, identity, dead_letters)
        data = pa.concat_tables(parts) if parts else TABLE_SCHEMA.empty_table()
        self._commit(data, state)
        self._changes.evict()
        self._txns.evict()
        return AppendResult(self._dt.version(), new_changes.num_rows,
                            changes.num_rows - new_changes.num_rows, len(new_txns),
                            len(new_markers), len(new_schema))

    def _commit(self, data: pa.Table, state: CommitState) -> None:
        expected = self._state.batch
        props = CommitProperties(custom_metadata=state.metadata(), app_transactions=[
            Transaction(APP_ID, state.batch, int(self._clock().timestamp() * 1000))])
        try:
            write_deltalake(self._dt, data, mode="append", writer_properties=WRITER,
                            commit_properties=props)
        except CommitFailedError as exc:
            raise self._conflict(expected, exc) from None
        if self._dt.transaction_version(APP_ID) != state.batch:  # belt and braces
            raise self._conflict(expected, None)
        self._state = state

    def _conflict(self, expected: int, exc: BaseException | None) -> ArchiveLockedError:
        with contextlib.suppress(Exception):
            self._dt.update_incremental()
        seen = self._dt.transaction_version(APP_ID)
        why = "" if exc is None else f" ({store_error(exc)})"
        return ArchiveLockedError(
            f"another archiver committed to {self.location} (its app transaction is at "
            f"{seen}, this archiver expected {expected}){why}; run one archiver per archive")

    def import_rows(self, tables: dict[str, pa.Table], offsets: Offsets,
                    identity: StreamIdentity | None, dead_letters: int) -> None:
        """Rows of several kinds (``SCHEMAS[kind]`` columns, not deduplicated) with their
        position, in ONE atomic commit (migration): interrupted, the table holds none of
        them and no position."""
        parts = [to_table_rows(kind, t) for kind, t in tables.items() if t.num_rows]
        state = self._state.advanced(self._state.batch + 1, offsets, identity, dead_letters)
        self._commit(pa.concat_tables(parts) if parts else TABLE_SCHEMA.empty_table(), state)

    def append_rows(self, kind: str, rows: pa.Table) -> None:
        """Bulk-load rows of one kind (``SCHEMAS[kind]`` columns) in one plain commit, without
        dedup or position (benchmarks, migration)."""
        write_deltalake(self._dt, to_table_rows(kind, rows), mode="append",
                        writer_properties=WRITER,
                        commit_properties=CommitProperties(custom_metadata=self._state.metadata()))

    def replace_segments(self, old: Sequence[object], table: pa.Table, kind: str) -> None:
        """The old store's bulk-load entry point (bench/replay.py): only ``old=[]`` remains."""
        if old:
            raise ArchiveError("segments are Delta's business now: use housekeeping")
        self.append_rows(kind, table)

    def start_new_epoch(self, identity: StreamIdentity) -> None:
        """``--new-archive-epoch``: one commit that drops the stored offsets and records the
        new stream's identity; the rows already archived stay."""
        state = CommitState(batch=self._state.batch + 1, offsets={}, identity=identity,
                            dead_letters=self._state.dead_letters)
        self._commit(TABLE_SCHEMA.empty_table(), state)

    def commit_properties(self) -> CommitProperties:
        """For housekeeping commits (optimize, vacuum): they repeat the current state, so the
        newest commit of the log always carries the position."""
        return CommitProperties(custom_metadata=self._state.metadata())

    def _new_changes(self, changes: pa.Table) -> pa.Table:
        """The rows whose (commit_lsn, position) is not archived yet (first of repeats)."""
        if not changes.num_rows:
            return changes
        groups = changes.group_by("commit_lsn", use_threads=False).aggregate(
            [("position", "list")])
        if self._changes.add_if_all_new(list(zip(groups["commit_lsn"].to_pylist(),
                                                 groups["position_list"].to_pylist(),
                                                 strict=True))):
            return changes
        keys = list(zip(changes["commit_lsn"].to_pylist(), changes["position"].to_pylist(),
                        strict=True))
        keep = self._changes.filter_new(keys)
        return changes if all(keep) else changes.filter(pa.array(keep, pa.bool_()))

    # --- dedup state --------------------------------------------------------------------

    def _dataset(self) -> ds.Dataset:
        return self._dt.to_pyarrow_dataset()

    def _load_dedup_state(self) -> None:
        if self._dt.version() == 0 and self._state.batch == 0:
            return  # a new table
        actions = pa.table(self._dt.get_add_actions(flatten=True))
        if not actions.num_rows or "max.commit_lsn" not in actions.column_names:
            return
        dataset = self._dataset()
        for kind, keys in (("changes", self._changes), ("transactions", self._txns)):
            mine = actions.filter(pc.equal(actions["partition.kind"], kind))
            files = sorted(zip(mine["max.commit_lsn"].to_pylist(),
                               mine["min.commit_lsn"].to_pylist(),
                               mine["num_records"].to_pylist(), strict=True),
                           key=lambda f: f[0] or 0, reverse=True)
            floor, rows = -1, 0
            for i, (_hi, lo, n) in enumerate(files):
                if rows + (n or 0) > keys.capacity and i:
                    keys.floor = max((f[0] or 0) for f in files[i:])
                    break
                rows += n or 0
                floor = lo if lo is not None else floor
            if not files:
                continue
            cond = (ds.field("kind") == kind) & (ds.field("commit_lsn") >= max(floor, 0))
            cols = ["commit_lsn", "position"] if kind == "changes" else ["commit_lsn"]
            t = dataset.to_table(columns=cols, filter=cond)
            lsns = t["commit_lsn"].to_pylist()
            poss = t["position"].to_pylist() if kind == "changes" else [0] * len(lsns)
            keys.add_many(
                (lsn, pos) for lsn, pos in zip(lsns, poss, strict=True) if lsn > keys.floor)
        for r in dataset.to_table(filter=ds.field("kind") == "markers").to_pylist():
            self._markers.add(_marker_key(r["status"], r["slot"], r["db"], r["epoch_lsn"],
                                          r["lsn"], int(r["ts"].timestamp() * 1000),
                                          tuple(r["tables"] or ())))
        sc = dataset.to_table(columns=["commit_lsn", "position"],
                              filter=ds.field("kind") == "schema_changes")
        self._schema_keys = set(zip(sc["commit_lsn"].to_pylist(), sc["position"].to_pylist(),
                                    strict=True))

    def _on_disk(self, kind: str, keys: set[Key]) -> set[Key]:
        lo, hi = min(k[0] for k in keys), max(k[0] for k in keys)
        cols = ["commit_lsn", "position"] if kind == "changes" else ["commit_lsn"]
        cond = ((ds.field("kind") == kind) & (ds.field("commit_lsn") >= lo)
                & (ds.field("commit_lsn") <= hi))
        t = self._dataset().to_table(columns=cols, filter=cond)
        poss = t["position"].to_pylist() if kind == "changes" else [0] * t.num_rows
        return set(zip(t["commit_lsn"].to_pylist(), poss, strict=True)) & keys


def _marker_key(*parts: Any) -> tuple[object, ...]:
    return tuple(tuple(p) if isinstance(p, list | tuple) else p for p in parts)


__all__ = ["LOCK_FILE", "WRITER", "AppendResult", "ArchiveLockedError", "ArchiveStore", "Clock",
           "Offsets", "open_table", "read_commit_state", "utc_now"]
