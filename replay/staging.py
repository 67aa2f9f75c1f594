"""On object storage, the files a rebuild reads are copied to local disk first.

Measured (README, "Replay after a long history"): a replay on S3 that let DuckDB scan the
checkpoint and the tail as deltalake's pyarrow datasets peaked at 2.8-3.4 GB RSS under a
1500MB memory limit, against 1.7 GB for the same archive on local disk; the pyarrow
memory pool (system, mimalloc) changed nothing, so it is not freed-but-kept memory but the
datasets' scans themselves (read-ahead, decoded batches), allocated outside DuckDB's
memory limit and once per scan (the rebuild scans the tail several times). Copying those
files into a per-connection directory and reading them with DuckDB's own Parquet reader
makes the S3 path the local one: the same bytes, the same reader, the same memory limit
and spilling (1.77 GB). From a checkpoint only its files and the tail's are copied (the
pruned few); a rebuild from the beginning copies every changes file (replay/tail.py
``localize_history``; 4.2 GB -> 1.8 GB peak on the same archive). The copies cost disk
(the files' compressed size), are streamed in chunks (never a whole object in memory),
and are removed with the connection.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow.fs as pafs
from deltalake.fs import DeltaStorageHandler

from consumers.archive.location import ArchiveLocation, store_error
from hera_kit import logs
from replay.errors import ReplayError

_CHUNK = 8 * 1024 * 1024
_BASES: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, Path | None] = \
    weakref.WeakKeyDictionary()
_DIRS: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, Path] = weakref.WeakKeyDictionary()


def remember(conn: duckdb.DuckDBPyConnection, base: Path | None) -> None:
    """Copies for ``conn`` go under ``base`` (the operator's --spill-dir; None: the system
    temp directory)."""
    _BASES[conn] = base


def _directory(conn: duckdb.DuckDBPyConnection) -> Path:
    found = _DIRS.get(conn)
    if found is not None:
        return found
    base = _BASES.get(conn)
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="hera-replay-files-", dir=base))
    # Removed when the connection goes (or at exit): the views over the copies die with it.
    weakref.finalize(conn, shutil.rmtree, str(path), True)
    _DIRS[conn] = path
    return path


def local_copies(conn: duckdb.DuckDBPyConnection, loc: ArchiveLocation,
                 uris: Sequence[str]) -> list[str]:
    """Local paths of copies of ``uris`` (objects under ``loc``), made once per connection.
    ReplayError (one line, nothing changed) when an object is missing, the store cannot be
    read, or the local disk cannot take the copy."""
    try:
        into = _directory(conn)
    except OSError as exc:
        raise ReplayError(f"cannot make a directory for local copies under "
                          f"{_BASES.get(conn) or tempfile.gettempdir()}: {exc.strerror or exc}; "
                          "point --spill-dir (HERA_SPILL_DIR) at a writable directory; "
                          "nothing was changed") from None
    store = pafs.PyFileSystem(DeltaStorageHandler(loc.uri, loc.options()))
    prefix = loc.uri.rstrip("/") + "/"
    out = []
    for uri in uris:
        if not uri.startswith(prefix):
            raise ReplayError(f"the data file {logs.redact(uri)} is not under {loc}")
        target = into / uri[len(prefix):]
        if not target.exists():
            _copy(store, loc, uri, uri[len(prefix):], target)
        out.append(str(target))
    return out


def _copy(store: pafs.FileSystem, loc: ArchiveLocation, uri: str, rel: str,
          target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with part.open("wb") as dst:
            try:
                src = store.open_input_stream(rel)
            except Exception as exc:  # delta-rs' errors, OSError or not
                raise _store_error(loc, uri, exc) from None
            with src:
                while True:
                    try:
                        chunk = src.read(_CHUNK)
                    except Exception as exc:
                        raise _store_error(loc, uri, exc) from None
                    if not chunk:
                        break
                    dst.write(chunk)
    except OSError as exc:  # the local disk (full, read-only, ...)
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        raise ReplayError(
            f"cannot copy {logs.redact(uri)} to local disk ({part.parent}): "
            f"{exc.strerror or exc}; free disk space for --spill-dir (HERA_SPILL_DIR) or point "
            "it elsewhere; nothing was changed") from None
    except ReplayError:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        raise
    part.rename(target)


def _store_error(loc: ArchiveLocation, uri: str, exc: BaseException) -> ReplayError:
    if isinstance(exc, FileNotFoundError) or "not found" in str(exc).lower():
        return ReplayError(str(loc.missing_file(logs.redact(uri))))  # "Object at ... not found"
    if isinstance(exc, OSError):
        return ReplayError(str(loc.unreachable(exc)))
    return ReplayError(f"cannot read {logs.redact(uri)}: {store_error(exc)}")
