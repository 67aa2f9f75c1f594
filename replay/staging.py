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

import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow.fs as pafs
from deltalake.fs import DeltaStorageHandler

from consumers.archive.layout import ArchiveError
from consumers.archive.location import ArchiveLocation, store_error
from hera_kit import logs

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
    """Local paths of copies of ``uris`` (objects under ``loc``), made once per connection."""
    into = _directory(conn)
    store = pafs.PyFileSystem(DeltaStorageHandler(loc.uri, loc.options()))
    prefix = loc.uri.rstrip("/") + "/"
    out = []
    for uri in uris:
        if not uri.startswith(prefix):
            raise ArchiveError(f"the data file {uri} is not under {loc}")
        rel = uri[len(prefix):]
        target = into / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            try:
                with store.open_input_stream(rel) as src, part.open("wb") as dst:
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)
            except FileNotFoundError:
                part.unlink(missing_ok=True)
                raise loc.missing_file(logs.redact(uri)) from None
            except OSError as exc:
                part.unlink(missing_ok=True)
                if "not found" in str(exc).lower():  # delta-rs: "Object at location … not found"
                    raise loc.missing_file(logs.redact(uri)) from None
                raise loc.unreachable(exc) from None
            except Exception as exc:  # delta-rs' own errors (not OSError subclasses)
                part.unlink(missing_ok=True)
                raise ArchiveError(f"cannot read {uri}: {store_error(exc)}") from None
            part.rename(target)
        out.append(str(target))
    return out
