"""The archive writer: append events + Kafka offsets in one atomic commit.

Usage (tests, benchmarks and the demo need no Kafka)::

    store = ArchiveStore.open_or_create(Path("archive"))
    result = store.append(changes=[...ChangeEvent], transactions=[...TransactionEvent],
                          markers=[...StreamMarker], offsets={("hera.public.t", 0): 1234})
    store.offsets()          # {("hera.public.t", 0): 1234} -- next offset to consume
    store.compact()          # merge small segments (safe while analysts query)
    store.close()

One commit = new immutable Parquet segments (tmp + fsync + rename) followed by one atomic
replace of ``manifest.json`` listing them together with the offsets. SIGKILL at any instant
leaves the previous manifest in force; unlisted segment files are deleted at the next open.
Events whose (commit_lsn, position) is already archived are dropped (``RecentKeys``);
transactions dedup on commit_lsn, markers on their whole content.

One writer per directory: ``open_or_create`` takes an exclusive ``flock`` on
``DIR/.writer.lock`` (released by the kernel when the process dies, SIGKILL included).
"""

from __future__ import annotations

import fcntl
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from capture.event import ChangeEvent, StreamMarker, TransactionEvent
from consumers.archive.dedup import Key, RecentKeys
from consumers.archive.layout import (
    KINDS,
    SEGMENTS_DIR,
    ArchiveError,
    check_or_init_marker,
)
from consumers.archive.manifest import Manifest, Retired, Segment, load_manifest, save_manifest
from consumers.archive.segments import (
    SCHEMAS,
    changes_rows,
    markers_table,
    sort_changes,
    transactions_table,
    write_segment,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to consume


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AppendResult:
    generation: int
    changes_written: int
    duplicates: int  # change events dropped because already archived
    transactions_written: int
    markers_written: int


class ArchiveLockedError(ArchiveError):
    pass


class ArchiveStore:
    def __init__(self, root: Path, manifest: Manifest, lock: IO[bytes], clock: Clock,
                 dedup_capacity: int, grace: timedelta) -> None:
        self.root = root
        self._manifest = manifest
        self._lock = lock
        self._clock = clock
        self.grace = grace
        self._broken = False
        self._changes = RecentKeys(dedup_capacity, lambda k: self._on_disk("changes", k))
        self._txns = RecentKeys(dedup_capacity, lambda k: self._on_disk("transactions", k))
        self._markers: set[tuple[object, ...]] = set()
        self._load_dedup_state()

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def open_or_create(cls, root: Path, *, create: bool = True, clock: Clock = utc_now,
                       dedup_capacity: int = 1_000_000,
                       grace: timedelta = timedelta(minutes=10)) -> ArchiveStore:
        """Open the archive in ``root`` (creating it if missing/empty and ``create``).

        Raises NotAnArchiveError / NewerArchiveError (nothing written) and
        ArchiveLockedError when another process is writing the archive.
        """
        root = root.absolute()
        check_or_init_marker(root, create)
        lock = (root / ".writer.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ArchiveLockedError(
                f"{root} is being written by another process (lock on .writer.lock); "
                "run one archiver per archive directory"
            ) from None
        try:
            manifest = load_manifest(root)
            if manifest is None:
                manifest = _initial_manifest(root, clock)
            _delete_garbage(root, manifest)
            return cls(root, manifest, lock, clock, dedup_capacity, grace)
        except BaseException:
            lock.close()
            raise

    def close(self) -> None:
        if not self._lock.closed:
            self._lock.close()

    def __enter__(self) -> ArchiveStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading state ------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        return self._manifest.model_copy(deep=True)

    def offsets(self) -> Offsets:
        return {(t, int(p)): o for t, parts in self._manifest.offsets.items()
                for p, o in parts.items()}

    def segment_paths(self, kind: str) -> list[Path]:
        return [self.root / s.file for s in self._manifest.of_kind(kind)]

    # --- writing ------------------------------------------------------------------------

    def append(self, changes: Sequence[ChangeEvent] = (),
               transactions: Sequence[TransactionEvent] = (),
               markers: Sequence[StreamMarker] = (),
               offsets: Offsets | None = None, dead_letters: int = 0,
               change_rows: pa.Table | None = None) -> AppendResult:
        """Archive the events not archived yet and record ``offsets``, in one atomic commit.

        ``change_rows``: change events already in ``CHANGES_SCHEMA`` columns (the archiver's
        bulk parse), in arrival order, archived after ``changes``; among repeated
        (commit_lsn, position) keys the first one is kept.

        ``dead_letters`` (records sent to the dead-letter topic in this batch) is added to the
        manifest's ``counters["dead_letters"]`` in the same commit, so the count is exact.
        """
        if self._broken:
            raise ArchiveError("a previous commit failed; reopen the archive")
        try:
            rows = changes_rows(changes)
            if change_rows is not None and change_rows.num_rows:
                rows = pa.concat_tables([rows, change_rows]) if rows.num_rows else change_rows
            return self._append(rows, transactions, markers, offsets or {}, dead_letters)
        except BaseException:
            self._broken = True  # in-memory dedup state may be ahead of the disk
            raise

    def _append(self, changes: pa.Table, transactions: Sequence[TransactionEvent],
                markers: Sequence[StreamMarker], offsets: Offsets,
                dead_letters: int) -> AppendResult:
        new_changes = self._new_changes(changes)
        ends = [t for t in transactions if t.status == "END"]
        keep_t = self._txns.filter_new([(t.commit_lsn, 0) for t in ends])
        new_txns = [t for t, k in zip(ends, keep_t, strict=True) if k]
        new_markers = []
        for marker in markers:
            mk = (marker.status.value, marker.slot, marker.db, marker.epoch_lsn, marker.lsn,
                  marker.ts_ms, marker.tables)
            if mk not in self._markers:
                self._markers.add(mk)
                new_markers.append(marker)

        tables = {"changes": sort_changes(new_changes) if new_changes.num_rows else None,
                  "transactions": transactions_table(new_txns) if new_txns else None,
                  "markers": markers_table(new_markers) if new_markers else None}
        if not offsets and not dead_letters and all(t is None for t in tables.values()):
            return AppendResult(self._manifest.generation, 0, changes.num_rows, 0, 0)
        added = [self._write(kind, t) for kind, t in tables.items() if t is not None]
        m = self._next_manifest()
        m.segments.extend(added)
        for (topic, partition), offset in offsets.items():
            m.offsets.setdefault(topic, {})[str(partition)] = offset
        if dead_letters:
            m.counters["dead_letters"] = m.counters.get("dead_letters", 0) + dead_letters
        self._commit(m)
        self._changes.evict()
        self._txns.evict()
        return AppendResult(m.generation, new_changes.num_rows,
                            changes.num_rows - new_changes.num_rows, len(new_txns),
                            len(new_markers))

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

    def _write(self, kind: str, table: pa.Table, tag: str = "") -> Segment:
        gen = self._manifest.generation + 1
        rel = f"{SEGMENTS_DIR}/{kind}/{gen:010d}-{uuid.uuid4().hex[:8]}{tag}.parquet"
        size = write_segment(table, self.root / rel)
        lsn_col = "lsn" if kind == "markers" else "commit_lsn"
        lo, hi = (None, None)
        if table.num_rows:
            mm = pc.min_max(table[lsn_col])
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
        return Segment(file=rel, kind=kind, rows=table.num_rows, min_lsn=lo, max_lsn=hi,
                       bytes=size)

    def _next_manifest(self) -> Manifest:
        m = self._manifest.model_copy(deep=True)
        m.generation += 1
        return m

    def _commit(self, m: Manifest) -> None:
        now = self._clock()
        expired = [r for r in m.retired if now - r.retired_at >= self.grace]
        m.retired = [r for r in m.retired if now - r.retired_at < self.grace]
        m.committed_at = now
        save_manifest(self.root, m)
        self._manifest = m
        for r in expired:  # after the commit: a crash before this leaves mere garbage
            (self.root / r.file).unlink(missing_ok=True)

    def replace_segments(self, old: list[Segment], table: pa.Table, kind: str) -> Segment:
        """Compaction's commit: ``table`` (the union of ``old``) replaces ``old`` atomically.

        The old files stay on disk, retired, for the grace period: queries that already
        listed them keep working.
        """
        if self._broken:
            raise ArchiveError("a previous commit failed; reopen the archive")
        new = self._write(kind, table, tag="-c")
        m = self._next_manifest()
        gone = {s.file for s in old}
        m.segments = [s for s in m.segments if s.file not in gone]
        # keep the kinds' order stable: the merged segment takes the first old one's place
        m.segments.append(new)
        now = self._clock()
        m.retired.extend(Retired(file=f, retired_at=now) for f in sorted(gone))
        self._commit(m)
        return new

    def delete_expired(self) -> None:
        """Delete retired files whose grace period is over (a manifest-only commit)."""
        now = self._clock()
        if any(now - r.retired_at >= self.grace for r in self._manifest.retired):
            self._commit(self._next_manifest())

    # --- dedup state --------------------------------------------------------------------

    def _load_dedup_state(self) -> None:
        for kind, keys in (("changes", self._changes), ("transactions", self._txns)):
            segs = sorted((s for s in self._manifest.of_kind(kind) if s.rows),
                          key=lambda s: s.max_lsn or 0, reverse=True)
            loaded = 0
            for i, s in enumerate(segs):
                if loaded >= keys.capacity:
                    keys.floor = max(x.max_lsn or 0 for x in segs[i:])
                    break
                cols = ["commit_lsn", "position"] if kind == "changes" else ["commit_lsn"]
                t = pq.read_table(self.root / s.file, columns=cols)
                lsns = t["commit_lsn"].to_pylist()
                poss = t["position"].to_pylist() if kind == "changes" else [0] * len(lsns)
                keys.add_many(zip(lsns, poss, strict=True))
                loaded += s.rows
        for s in self._manifest.of_kind("markers"):
            for r in pq.read_table(self.root / s.file).to_pylist():
                self._markers.add((r["status"], r["slot"], r["db"], r["epoch_lsn"], r["lsn"],
                                   int(r["ts"].timestamp() * 1000), tuple(r["tables"])))

    def _on_disk(self, kind: str, keys: set[Key]) -> set[Key]:
        lo, hi = min(k[0] for k in keys), max(k[0] for k in keys)
        lsns = pa.array(sorted({k[0] for k in keys}), pa.uint64())
        found: set[Key] = set()
        for s in self._manifest.of_kind(kind):
            if not s.rows or (s.max_lsn or 0) < lo or (s.min_lsn or 0) > hi:
                continue
            cols = ["commit_lsn", "position"] if kind == "changes" else ["commit_lsn"]
            t = pq.read_table(self.root / s.file, columns=cols)
            t = t.filter(pc.is_in(t["commit_lsn"], value_set=lsns))
            poss = t["position"].to_pylist() if kind == "changes" else [0] * t.num_rows
            found.update(zip(t["commit_lsn"].to_pylist(), poss, strict=True))
        return found & keys


def _initial_manifest(root: Path, clock: Clock) -> Manifest:
    """Generation 0: one empty segment per kind, so glob-based views always bind."""
    m = Manifest(generation=0, committed_at=clock())
    for kind in KINDS:
        rel = f"{SEGMENTS_DIR}/{kind}/{0:010d}-{uuid.uuid4().hex[:8]}.parquet"
        size = write_segment(SCHEMAS[kind].empty_table(), root / rel)
        m.segments.append(Segment(file=rel, kind=kind, rows=0, bytes=size))
    save_manifest(root, m)
    return m


def _delete_garbage(root: Path, manifest: Manifest) -> None:
    """Delete segment files of crashed commits: on disk but neither live nor retired."""
    known = {s.file for s in manifest.segments} | {r.file for r in manifest.retired}
    base = root / SEGMENTS_DIR
    if not base.exists():
        return
    for path in _files(base.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel not in known:
            log.info("deleting %s: not in the manifest (left by an interrupted commit)", rel)
            path.unlink(missing_ok=True)


def _files(paths: Iterable[Path]) -> list[Path]:
    return [p for p in paths if p.is_file()]


__all__ = ["AppendResult", "ArchiveLockedError", "ArchiveStore", "Offsets", "utc_now"]
