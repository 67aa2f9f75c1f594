"""The archive's Delta table itself: open it, create it, tell whether one is there, read the
position its log holds, and (on a local path) lock it for one writer. Every failure of the
object store or the log becomes one ArchiveError line naming the location and what to check.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa
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
    DamagedArchiveError,
    NewerArchiveError,
    NotAnArchiveError,
)
from consumers.archive.location import LOCK_FILE, ArchiveLocation, store_error
from consumers.archive.segments import ADDED_COLUMNS, KINDS, TABLE_SCHEMA

Clock = Callable[[], datetime]
WRITER = WriterProperties(compression="ZSTD")


def utc_now() -> datetime:
    return datetime.now(UTC)


def table_exists(loc: ArchiveLocation) -> bool:
    """Whether a Delta table is at ``loc``; ArchiveError when the store cannot be asked."""
    loc.check_not_a_file()
    try:
        return DeltaTable.is_deltatable(loc.uri, storage_options=loc.options())
    except OSError as exc:
        raise loc.unreachable(exc) from None


def open_table(loc: ArchiveLocation, version: int | None = None) -> DeltaTable:
    """The archive's Delta table; NotAnArchiveError / DamagedArchiveError / NewerArchiveError."""
    try:
        dt = DeltaTable(loc.uri, version=version, storage_options=loc.options())
    except TableNotFoundError:
        raise NotAnArchiveError(loc.not_an_archive()) from None
    except DeltaError as exc:
        raise DamagedArchiveError(
            f"the Delta log of {loc} cannot be read ({store_error(exc)}); restore its "
            "_delta_log from a backup, or re-archive from Kafka into a new location") from None
    except OSError as exc:
        raise loc.unreachable(exc) from None
    fmt = archive_format(dt)
    if fmt is None:
        raise NotAnArchiveError(f"{loc} is a Delta table but not a hera-guard archive "
                                f"(its name is not {FORMAT_KEY}); point --archive elsewhere")
    if fmt > FORMAT_VERSION:
        raise NewerArchiveError(
            f"{loc} was written by a newer hera-guard (archive format {fmt}, this version "
            f"reads up to {FORMAT_VERSION}); upgrade hera-guard to use it")
    return dt


def add_missing_columns(dt: DeltaTable) -> None:
    """Give a table written by an older version the columns added since (``ADDED_COLUMNS``):
    a metadata-only commit, before the writer's first append (older rows read NULL)."""
    from deltalake.schema import Field, PrimitiveType

    have = set(dt.schema().to_arrow().names)
    missing = [c for c in ADDED_COLUMNS if c not in have]
    if missing:
        dt.alter.add_columns([Field(c, PrimitiveType("string"), nullable=True)
                              for c in missing])


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
        raise loc.unreachable(exc) from None


def data_files(dt: DeltaTable) -> list[tuple[str, int]]:
    """(relative path, size) of every data file of the table version."""
    return [f for files in files_by_kind(dt).values() for f in files]


def files_by_kind(dt: DeltaTable) -> dict[str, list[tuple[str, int]]]:
    actions = pa.table(dt.get_add_actions(flatten=True))
    out: dict[str, list[tuple[str, int]]] = {k: [] for k in KINDS}
    if not actions.num_rows:
        return out
    for path, size, kind in zip(actions["path"].to_pylist(), actions["size_bytes"].to_pylist(),
                                actions["partition.kind"].to_pylist(), strict=True):
        out.setdefault(kind, []).append((path, size))
    return out


__all__ = ["LOCK_FILE", "WRITER", "Clock", "archive_format", "create_table", "data_files",
           "files_by_kind", "open_table", "read_commit_state", "table_exists", "utc_now"]
