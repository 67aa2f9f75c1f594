"""Housekeeping by the library: Delta's optimize (compaction of small files) and vacuum.

Each archiver batch adds one file per kind present; ``optimize.compact`` rewrites the small
files of a partition (kind) into large ones in one commit (``dataChange=false``: readers of
older versions keep their files, time travel keeps working). Files no longer referenced
(compacted away, or left by a commit a SIGKILL interrupted) are deleted by ``vacuum`` only
once they are older than the retention: a query that listed them, or a reader of an older
version, has that long. Both commits repeat the archiver's commit state, so the newest commit
in the log always carries the position (commit_state.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import WriterProperties
from deltalake.exceptions import DeltaError

from consumers.archive.segments import KINDS
from consumers.archive.store import ArchiveStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Housekeeping:
    min_small_files: int = 16  # compact a kind once it has this many small files
    target_file_bytes: int = 128 * 1024 * 1024
    retention: timedelta = timedelta(days=7)  # queries and time travel need the files that long
    vacuum: bool = True


def housekeep(store: ArchiveStore, policy: Housekeeping) -> dict[str, int]:
    """Compact every kind with enough small files, then vacuum; returns what was done. A
    store failure is the store's one-line error (compaction and vacuum change no row)."""
    try:
        return _housekeep(store, policy)
    except (DeltaError, OSError, pa.ArrowException) as exc:
        raise store.failure(exc, "housekeeping changes no row") from None


def _housekeep(store: ArchiveStore, policy: Housekeeping) -> dict[str, int]:
    dt = store.table
    actions = pa.table(dt.get_add_actions(flatten=True))
    done = {"compacted_files": 0, "vacuumed_files": 0}
    if actions.num_rows:
        small = actions.filter(pc.less(actions["size_bytes"], policy.target_file_bytes // 2))
        for kind in KINDS:
            n = pc.sum(pc.equal(small["partition.kind"], kind)).as_py() or 0
            if n < policy.min_small_files:
                continue
            metrics = dt.optimize.compact(
                partition_filters=[("kind", "=", kind)], target_size=policy.target_file_bytes,
                writer_properties=WriterProperties(compression="ZSTD"),
                commit_properties=store.commit_properties())
            done["compacted_files"] += int(metrics.get("numFilesRemoved", 0))
            log.info("compacted %s: %s", kind, metrics)
    if policy.vacuum:
        # Whole hours for delta-rs, rounded up: never shorter than asked (1.5 h was 1 h,
        # 0.5 h was 0 h: files deleted under running readers).
        hours = math.ceil(policy.retention.total_seconds() / 3600)
        removed = dt.vacuum(retention_hours=hours, dry_run=False,
                            enforce_retention_duration=False,
                            commit_properties=store.commit_properties())
        done["vacuumed_files"] = len(removed)
        if removed:
            log.info("vacuum removed %d files older than %s", len(removed), policy.retention)
    return done
