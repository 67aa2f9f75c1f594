"""The manifest: the archive's single commit point.

It lists the live segments and the consumed Kafka offsets. Replacing it (tmp + fsync +
rename) commits the new segments and the new offsets together: after a SIGKILL the archive
is exactly the segments of the last manifest, and consumption resumes from its offsets.
Segment files not listed (live or retired) are leftovers of a crash and are deleted.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from consumers.archive.layout import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    ArchiveError,
    NewerArchiveError,
    atomic_write_bytes,
)


class Segment(BaseModel):
    model_config = ConfigDict(frozen=True)

    file: str  # relative to the archive directory, e.g. "segments/changes/000000012-ab12.parquet"
    kind: str  # "changes" | "transactions" | "markers"
    rows: int
    min_lsn: int | None = None  # commit LSN range, for pruning the dedup look-ups
    max_lsn: int | None = None
    bytes: int = 0


class Retired(BaseModel):
    model_config = ConfigDict(frozen=True)

    file: str
    retired_at: datetime  # deleted once the grace period after this instant has passed


class Manifest(BaseModel):
    version: int = FORMAT_VERSION
    generation: int = 0
    committed_at: datetime | None = None
    segments: list[Segment] = Field(default_factory=list)
    retired: list[Retired] = Field(default_factory=list)
    # topic -> partition (as a string, JSON keys are strings) -> next offset to consume
    offsets: dict[str, dict[str, int]] = Field(default_factory=dict)
    counters: dict[str, int] = Field(default_factory=dict)  # e.g. "dead_letters"

    def of_kind(self, kind: str) -> list[Segment]:
        return [s for s in self.segments if s.kind == kind]

    def next_offset(self, topic: str, partition: int) -> int | None:
        return self.offsets.get(topic, {}).get(str(partition))


def load_manifest(root: Path) -> Manifest | None:
    path = root / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        m = Manifest.model_validate_json(path.read_bytes())
    except ValueError as exc:
        raise ArchiveError(f"{path} is corrupt ({exc}); restore it from a backup") from None
    if m.version > FORMAT_VERSION:
        raise NewerArchiveError(
            f"{path} was written by a newer hera-guard (manifest version {m.version}); "
            "upgrade hera-guard to use it"
        )
    return m


def save_manifest(root: Path, manifest: Manifest) -> None:
    atomic_write_bytes(root / MANIFEST_FILE, manifest.model_dump_json(indent=1).encode())
