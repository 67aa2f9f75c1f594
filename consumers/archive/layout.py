"""The archive directory: its marker file, its errors, and crash-safe file writes.

Layout of an archive directory ``DIR``::

    DIR/archive.json              format name + version (written once, at creation)
    DIR/manifest.json             the commit point: live segments + consumed Kafka offsets
    DIR/segments/changes/*.parquet        immutable change-event segments
    DIR/segments/transactions/*.parquet   immutable transaction (END) segments
    DIR/segments/markers/*.parquet        immutable stream-marker segments
    DIR/history.duckdb            views/macros for analysts (re-created at archiver start-up)

Every file is written to a ``*.tmp`` name, fsync'ed, renamed into place, and the directory
fsync'ed, so a reader (or a restart after SIGKILL) sees either the old or the new file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORMAT_NAME = "hera-guard-archive"
FORMAT_VERSION = 1
MARKER_FILE = "archive.json"
MANIFEST_FILE = "manifest.json"
SEGMENTS_DIR = "segments"
HISTORY_DB = "history.duckdb"
KINDS = ("changes", "transactions", "markers")


class ArchiveError(Exception):
    """A problem with an archive directory; the message says what is wrong and how to fix it."""


class NotAnArchiveError(ArchiveError):
    pass


class NewerArchiveError(ArchiveError):
    pass


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new content."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def check_or_init_marker(root: Path, create: bool) -> None:
    """Refuse a directory that is not an archive or is from a newer version; create if allowed.

    Nothing is written unless the directory is missing or empty (and ``create`` is true).
    """
    marker = root / MARKER_FILE
    if marker.exists():
        try:
            info = json.loads(marker.read_text())
            name, version = info["format"], int(info["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise NotAnArchiveError(
                f"{root} is not a hera-guard archive ({MARKER_FILE} is unreadable: {exc}); "
                "point --archive at an archive directory or at a new, empty directory"
            ) from None
        if name != FORMAT_NAME:
            raise NotAnArchiveError(
                f"{root} is not a hera-guard archive ({MARKER_FILE} says format {name!r}); "
                "point --archive at an archive directory or at a new, empty directory"
            )
        if version > FORMAT_VERSION:
            raise NewerArchiveError(
                f"{root} was written by a newer hera-guard (archive format {version}, this "
                f"version reads up to {FORMAT_VERSION}); upgrade hera-guard to use it"
            )
        return
    if root.exists() and any(root.iterdir()):
        raise NotAnArchiveError(
            f"{root} is not a hera-guard archive (no {MARKER_FILE}) and is not empty; "
            "point --archive at an archive directory or at a new, empty directory"
        )
    if not create:
        raise NotAnArchiveError(f"{root} is not a hera-guard archive (no {MARKER_FILE})")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"format": FORMAT_NAME, "version": FORMAT_VERSION})
