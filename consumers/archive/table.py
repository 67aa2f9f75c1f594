"""The archive's Delta table itself: open it, create it, tell whether one is there, read the
position its log holds, and (on a local path) lock it for one writer. Every failure of the
object store or the log becomes one ArchiveError line naming the location and what to check.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

from deltalake import DeltaTable, WriterProperties
from deltalake.exceptions import DeltaError, TableNotFoundError

from consumers.archive.commit_state import (
    APP_ID,
    FORMAT_KEY,
    FORMAT_VERSION,
    CommitState,
    state_of_commit,
)
from consumers.archive.layout import (
    ArchiveError,
    ArchiveLockedError,
    DamagedArchiveError,
    NewerArchiveError,
    NotAnArchiveError,
    StoreUnavailableError,
)
from consumers.archive.location import ArchiveLocation, store_error, store_failure_passes
from consumers.archive.segments import TABLE_SCHEMA

Clock = Callable[[], datetime]
LOCK_FILE = "_hera_writer.lock"  # "_" prefix: Delta readers and vacuum leave it alone
LEGACY_FILES = ("manifest.json", "archive.json")
WRITER = WriterProperties(compression="ZSTD")


def utc_now() -> datetime:
    return datetime.now(UTC)


def _unreachable(loc: ArchiveLocation, exc: BaseException) -> ArchiveError:
    """StoreUnavailableError when waiting may help, ArchiveError when it will not."""
    hint = "" if loc.is_local else (
        "; check the bucket exists, the endpoint (AWS_ENDPOINT_URL) and the credentials "
        "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
    kind = StoreUnavailableError if store_failure_passes(exc) else ArchiveError
    return kind(f"cannot reach {loc}: {store_error(exc)}{hint}")


def table_exists(loc: ArchiveLocation) -> bool:
    """Whether a Delta table is at ``loc``; ArchiveError when the store cannot be asked."""
    if loc.is_local and loc.path.is_file():
        raise NotAnArchiveError(f"{loc} is a file; point --archive at a directory")
    try:
        return DeltaTable.is_deltatable(loc.uri, storage_options=loc.options())
    except OSError as exc:
        raise _unreachable(loc, exc) from None


def open_table(loc: ArchiveLocation, version: int | None = None) -> DeltaTable:
    """The archive's Delta table; NotAnArchiveError / DamagedArchiveError / NewerArchiveError."""
    try:
        dt = DeltaTable(loc.uri, version=version, storage_options=loc.options())
    except TableNotFoundError:
        raise NotAnArchiveError(not_an_archive(loc)) from None
    except DeltaError as exc:
        raise DamagedArchiveError(
            f"the Delta log of {loc} cannot be read ({store_error(exc)}); restore its "
            "_delta_log from a backup, or re-archive from Kafka into a new location") from None
    except OSError as exc:
        raise _unreachable(loc, exc) from None
    fmt = archive_format(dt)
    if fmt is None:
        raise NotAnArchiveError(f"{loc} is a Delta table but not a hera-guard archive "
                                f"(its name is not {FORMAT_KEY}); point --archive elsewhere")
    if fmt > FORMAT_VERSION:
        raise NewerArchiveError(
            f"{loc} was written by a newer hera-guard (archive format {fmt}, this version "
            f"reads up to {FORMAT_VERSION}); upgrade hera-guard to use it")
    return dt


def archive_format(dt: DeltaTable) -> int | None:
    """The format version, from the table's name and description (delta-rs accepts no
    custom table properties): name ``hera-guard-archive``, description ``format N: ...``."""
    meta = dt.metadata()
    if meta.name != FORMAT_KEY:
        return None
    head = (meta.description or "").split(":", 1)[0]
    try:
        return int(head.removeprefix("format "))
    except ValueError:
        return None


def not_an_archive(loc: ArchiveLocation) -> str:
    if loc.is_local and any((loc.path / f).exists() for f in LEGACY_FILES):
        return (f"{loc} is an archive of the old format (manifest + segments); convert it with "
                f"`consumers archive migrate {loc} NEW_LOCATION`")
    return f"{loc} is not a hera-guard archive (no Delta table there)"


def read_commit_state(dt: DeltaTable) -> CommitState:
    """The newest commit state in the log; it must be of the table's app-transaction version."""
    batch = dt.transaction_version(APP_ID)
    if batch is None:
        return CommitState()
    for limit in (20, 500, None):
        for info in dt.history(limit):
            state = state_of_commit(info)
            # history() lists the store's newest commits, also those after this snapshot
            # (and labels their versions relative to it): match on the batch number instead
            if state is not None and state.batch > batch:
                continue
            if state is not None:
                if state.batch != batch:
                    raise DamagedArchiveError(
                        f"the Delta log of {dt.table_uri} is inconsistent (app transaction "
                        f"{batch}, newest commit state of batch {state.batch}); restore the "
                        "_delta_log from a backup")
                return state
    raise DamagedArchiveError(
        f"the Delta log of {dt.table_uri} has app transaction {batch} but no commit with the "
        "archiver's position (log entries expired?); restore the _delta_log from a backup")


def create_table(loc: ArchiveLocation, clock: Clock) -> DeltaTable:
    try:
        return DeltaTable.create(
            loc.uri, TABLE_SCHEMA, mode="error", partition_by=["kind"],
            name=FORMAT_KEY,
            description=f"format {FORMAT_VERSION}: every change of the captured tables",
            configuration={"delta.appendOnly": "true"},
            storage_options=loc.options())
    except DeltaError as exc:
        raise ArchiveError(f"cannot create the archive at {loc}: {store_error(exc)}") from None
    except OSError as exc:
        raise _unreachable(loc, exc) from None


def check_empty(loc: ArchiveLocation) -> None:
    if not loc.is_local:
        return
    path = loc.path
    if path.exists() and not path.is_dir():
        raise NotAnArchiveError(f"{loc} is a file; point --archive at a directory")
    entries = [p for p in path.iterdir() if p.name != LOCK_FILE] if path.exists() else []
    if entries:
        raise NotAnArchiveError(
            not_an_archive(loc) + " and is not empty; point --archive at an archive or at a "
            "new, empty directory")


def lock_for_writer(loc: ArchiveLocation, create: bool) -> IO[bytes] | None:
    path = loc.path
    if not path.exists():
        if not create:
            raise NotAnArchiveError(f"{loc} does not exist")
        path.mkdir(parents=True)
    elif not path.is_dir():
        raise NotAnArchiveError(f"{loc} is a file; point --archive at a directory")
    lock = (path / LOCK_FILE).open("ab")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ArchiveLockedError(
            f"{loc} is being written by another archiver (lock on {LOCK_FILE}); run one "
            "archiver per archive") from None
    return lock
