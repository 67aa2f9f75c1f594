"""Where an archive lives: a local directory or any URI deltalake supports (``s3://bucket/p``,
``gs://``, ``az://``, ...), with the object store's options (credentials, endpoint) passed in
explicitly. The CLIs build those options from the standard ``AWS_*`` variables
(``settings.StorageSettings``); library code never reads the environment.

``ArchiveLocation`` is the one object the writer (store.py, table.py), the reader
(reader.py, ``consumers history``), replay and the benchmarks share (litestream's
``ReplicaClient``): it owns the URI, the storage options and the checks of the place itself
("is a file", "does not exist", "not empty", the writer's lock, a data file's presence),
each worded once here. What is *in* the Delta table is table.py's business.
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from consumers.archive.layout import (
    ArchiveError,
    ArchiveLockedError,
    DamagedArchiveError,
    NotAnArchiveError,
    StoreUnavailableError,
    UnsupportedLocationError,
)
from hera_kit import logs

LOCK_FILE = "_hera_writer.lock"  # "_" prefix: Delta readers and vacuum leave it alone
LEGACY_FILES = ("manifest.json", "archive.json")

# The schemes deltalake (delta-rs) opens tables on; anything else it refuses ("Unknown scheme").
_REMOTE = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "adl://",
           "azure://", "hdfs://", "viewfs://", "lakefs://", "memory://")
# Anything shaped like a URI: taken for a local path it would silently become a directory
# named "s4:" under the working directory.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class ArchiveLocation:
    uri: str  # a local absolute path, or a remote URI
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_local(self) -> bool:
        return not self.uri.startswith(_REMOTE)

    @property
    def path(self) -> Path:
        return Path(self.uri)

    def options(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None

    def __str__(self) -> str:
        """For messages: the URI without any user:password part."""
        return logs.redact(self.uri)

    # --- the place itself ------------------------------------------------------------------

    def is_a_file(self) -> NotAnArchiveError:
        """The one wording of "--archive names a file"."""
        return NotAnArchiveError(f"{self} is a file, not an archive; point --archive at a "
                                 "directory or a URI such as s3://bucket/prefix")

    def check_not_a_file(self) -> None:
        if self.is_local and self.path.is_file():
            raise self.is_a_file()

    def check_readable(self) -> None:
        """A reader's refusals before it asks the store anything: a local path must be an
        existing directory (a remote one is asked by opening the table)."""
        self.check_not_a_file()
        if self.is_local and not self.path.is_dir():
            raise NotAnArchiveError(f"{self} does not exist (no archive there); point "
                                    "--archive at the directory or URI `consumers archive` "
                                    "writes")

    def has_unreadable_log(self) -> bool:
        """A local ``_delta_log`` is there although no readable table was found."""
        return self.is_local and (self.path / "_delta_log").exists()

    def damaged_log(self) -> DamagedArchiveError:
        return DamagedArchiveError(
            f"the Delta log of {self} cannot be read (no readable commit in _delta_log); "
            "restore it from a backup, or re-archive from Kafka")

    def not_an_archive(self) -> str:
        if self.is_local and any((self.path / f).exists() for f in LEGACY_FILES):
            return (f"{self} is an archive of the old format (manifest + segments); convert "
                    f"it with `consumers archive migrate {self} NEW_LOCATION`")
        return f"{self} is not a hera-guard archive (no Delta table there)"

    def check_empty(self) -> None:
        """A new archive goes into an empty directory (or any remote prefix: the Delta log's
        absence is checked by the caller)."""
        if not self.is_local:
            return
        self.check_not_a_file()
        path = self.path
        entries = [p for p in path.iterdir() if p.name != LOCK_FILE] if path.exists() else []
        if entries:
            raise NotAnArchiveError(
                self.not_an_archive() + " and is not empty; point --archive at an archive or "
                "at a new, empty directory")

    def lock_for_writer(self, create: bool) -> IO[bytes] | None:
        """The local writer's ``flock`` (None on object storage, where the conditional log
        entry alone keeps one writer)."""
        if not self.is_local:
            return None
        path = self.path
        if not path.exists():
            if not create:
                raise NotAnArchiveError(f"{self} does not exist")
            path.mkdir(parents=True)
        elif not path.is_dir():
            raise self.is_a_file()
        lock = (path / LOCK_FILE).open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ArchiveLockedError(
                f"{self} is being written by another archiver (lock on {LOCK_FILE}); run one "
                "archiver per archive") from None
        return lock

    def unreachable(self, exc: BaseException) -> ArchiveError:
        """StoreUnavailableError when waiting may help, ArchiveError when it will not. The hint
        follows what the store said: a server error is the store's own (its log says why, e.g.
        SeaweedFS's "No writable volumes"), not the bucket's or the credentials'."""
        passes = store_failure_passes(exc)
        if self.is_local:
            hint = ""
        elif not passes:
            hint = ("; check the bucket exists, the endpoint (AWS_ENDPOINT_URL) and the "
                    "credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
        elif store_answered(exc):
            hint = ("; the store failed on its side: its own log says why (SeaweedFS: \"No "
                    "writable volumes\" means no volume can take this bucket's writes)")
        else:
            hint = "; check the endpoint (AWS_ENDPOINT_URL) and that the store is running"
        kind = StoreUnavailableError if passes else ArchiveError
        return kind(f"cannot reach {self}: {store_error(exc)}{hint}")

    # --- data files (local archives: cheap checks before a reader or writer trusts them) ----

    def check_files(self, files: Iterable[tuple[str, int]]) -> None:
        """Every (relative path, size) the log lists is there with its size (no-op remote:
        the object store answers a missing object itself)."""
        if self.is_local:
            for rel, size in files:
                self.check_file(self.path / rel, size)

    def missing_file(self, path: str) -> DamagedArchiveError:
        """The one wording of "a data file the log lists is not there"."""
        return DamagedArchiveError(f"data file {path} of the archive {self} is missing; "
                                   f"{_RESTORE}")

    def check_file(self, path: Path, size: int) -> None:
        """A data file the log lists must be there with its size (cheap: one stat)."""
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            raise self.missing_file(str(path)) from None
        if actual != size:
            raise DamagedArchiveError(
                f"data file {path} of the archive {self} is damaged ({actual} bytes, the "
                f"Delta log says {size}); {_RESTORE}")
        with path.open("rb") as f:  # the footer's magic: a file overwritten in place fails
            f.seek(-4, 2)
            if f.read(4) != b"PAR1":
                raise DamagedArchiveError(
                    f"data file {path} of the archive {self} is damaged (not a Parquet "
                    f"file); {_RESTORE}")


_RESTORE = "restore the file from a backup, or re-archive from Kafka into a new location"


def archive_location(target: str | Path | ArchiveLocation,
                     storage_options: Mapping[str, str] | None = None) -> ArchiveLocation:
    if isinstance(target, ArchiveLocation):
        return target
    text = str(target)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if text.startswith(_REMOTE):
        return ArchiveLocation(text.rstrip("/"), dict(storage_options or {}))
    if _URI.match(text):
        scheme = text.split("://", 1)[0]
        known = ", ".join(s.rstrip(":/") for s in ("file://", *_REMOTE))
        raise UnsupportedLocationError(
            f"unknown archive URI scheme {scheme!r} in {logs.redact(text)}; use a local path "
            f"or one of {known} (e.g. s3://bucket/prefix)")
    return ArchiveLocation(str(Path(text).absolute()), {})


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_S3_CODE = re.compile(r"<Code>([^<]+)</Code>")
_S3_MESSAGE = re.compile(r"<Message>([^<]+)</Message>")


def store_answered(exc: BaseException) -> bool:
    """Whether the object store answered with an error of its own (an S3 <Code>)."""
    return _S3_CODE.search(_ANSI.sub("", str(exc))) is not None


def store_error(exc: BaseException) -> str:
    """One line out of an object-store / Delta error: S3's own code and message when the
    store answered (``NoSuchBucket: The specified bucket does not exist``), else the first
    and the innermost cause (``Generic S3 error ... Connection refused (os error 111)``)."""
    text = _ANSI.sub("", str(exc))
    code, message = _S3_CODE.search(text), _S3_MESSAGE.search(text)
    if code:
        return logs.redact(code.group(1) + (f": {message.group(1)}" if message else ""))[:300]
    lines = [ln.strip().lstrip("↳").strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return type(exc).__name__
    out = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return logs.redact(out)[:300]


# Answers of a store that will not change by waiting: credentials, permissions, the bucket.
_LASTING = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
            "InvalidBucketName", "AllAccessDisabled", "AccountProblem", "InvalidToken",
            "ExpiredToken", "lacked the necessary privileges", "Permission denied")


def store_failure_passes(exc: BaseException) -> bool:
    """Whether a store failure may pass by waiting (5xx, timeouts, refused connections, a
    full disk) rather than needing the operator (credentials, permissions, the bucket)."""
    if isinstance(exc, PermissionError):
        return False
    text = _ANSI.sub("", str(exc))
    return not any(word in text for word in _LASTING)
