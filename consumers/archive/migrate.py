"""``consumers archive migrate OLD_DIR NEW``: an archive of the old format (``manifest.json``
+ Parquet segments, hera-guard before the Delta table) into a new Delta archive, verified row
for row, with the consumed offsets and what is known of the stream identity carried over, so
the archiver continues from where the old one stopped without re-reading Kafka.

The old archive is only read. The rows go in as plain appends; the LAST commit carries the
app transaction and the commit state (offsets, identity): until it lands, the new table has
no position and ``consumers archive`` would refuse nothing but start from scratch, so a
failed migration is re-run into a fresh location (the target must be new or empty).
The old format had no identity: the topic prefix comes from the offsets' topic names, the
database, slot and epoch from the newest marker; the Kafka cluster id is recorded by the
archiver's first start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from consumers.archive.commit_state import CommitState
from consumers.archive.layout import ArchiveError, NotAnArchiveError
from consumers.archive.location import ArchiveLocation
from consumers.archive.reader import connect_history
from consumers.archive.segments import SCHEMAS
from consumers.archive.store import ArchiveStore
from hera_kit.identity import StreamIdentity

OLD_KINDS = ("changes", "transactions", "markers")


@dataclass(frozen=True)
class MigrationResult:
    rows: dict[str, int]
    offsets: int  # partitions carried over
    identity: StreamIdentity | None
    version: int


def _old_manifest(old: Path) -> dict[str, object]:
    try:
        info = json.loads((old / "archive.json").read_text())
        manifest = json.loads((old / "manifest.json").read_text())
    except FileNotFoundError as exc:
        raise NotAnArchiveError(f"{old} is not an archive of the old format ({exc.filename} "
                                "is missing)") from None
    except ValueError as exc:
        raise ArchiveError(f"{old}: manifest.json/archive.json is corrupt ({exc}); restore it "
                           "from a backup") from None
    if info.get("format") != "hera-guard-archive" or int(info.get("version", 0)) != 1:
        raise NotAnArchiveError(f"{old} is not an archive of the old format (archive.json "
                                f"says {info})")
    return dict(manifest)


def _old_files(old: Path, manifest: dict[str, object], kind: str) -> list[Path]:
    segs = manifest.get("segments", [])
    assert isinstance(segs, list)
    files = [old / str(s["file"]) for s in segs if s.get("kind") == kind]
    for f in files:
        if not f.exists():
            raise ArchiveError(f"segment {f} of the old archive is missing; restore the file "
                               "before migrating")
    return files


def _old_rows(old: Path, manifest: dict[str, object], kind: str) -> pa.Table:
    """The old archive's live rows of ``kind``, deduplicated as its views did."""
    files = _old_files(old, manifest, kind)
    schema = SCHEMAS[kind]
    if not files:
        return schema.empty_table()
    con = duckdb.connect()
    con.register("seg", pa.concat_tables(
        [pq.read_table(f) for f in files], promote_options="default"))
    key = {"changes": "DISTINCT ON (commit_lsn, position) *",
           "transactions": "DISTINCT ON (commit_lsn) *", "markers": "DISTINCT *"}[kind]
    t = con.sql(f"SELECT {key} FROM seg").to_arrow_table()  # noqa: S608 - own literals
    cols = [t[n].cast(f.type) if n in t.column_names else pa.nulls(t.num_rows, f.type)
            for n, f in zip(schema.names, schema, strict=True)]
    return pa.Table.from_arrays(cols, schema=schema)


def _identity(offsets: dict[str, dict[str, int]], markers: pa.Table) -> StreamIdentity | None:
    prefixes = {t.removesuffix(".transaction") for t in offsets if t.endswith(".transaction")}
    if len(prefixes) != 1:
        return None
    ident = StreamIdentity(topic_prefix=prefixes.pop())
    if markers.num_rows:
        last = markers.sort_by([("lsn", "descending")]).slice(0, 1).to_pylist()[0]
        ident = ident.model_copy(update={"db": last["db"], "slot": last["slot"],
                                         "epoch_lsn": last["epoch_lsn"]})
    return ident


def migrate(old: Path, new: ArchiveLocation) -> MigrationResult:
    old = old.absolute()
    manifest = _old_manifest(old)
    tables = {kind: _old_rows(old, manifest, kind) for kind in OLD_KINDS}
    raw_offsets = manifest.get("offsets", {})
    assert isinstance(raw_offsets, dict)
    counters = manifest.get("counters", {})
    dead = int(counters.get("dead_letters", 0)) if isinstance(counters, dict) else 0
    identity = _identity(raw_offsets, tables["markers"])
    with ArchiveStore.open_or_create(new) as store:
        if store.version() != 0 or store.state.batch:
            raise ArchiveError(f"{new} already holds an archive; migrate into a new location")
        offsets = {(str(tp), int(p)): int(o) for tp, parts in raw_offsets.items()
                   for p, o in parts.items()}
        # One commit: a migration killed half-way leaves the new table empty (and a rerun
        # starts over), never rows without their offsets.
        store.import_rows(tables, offsets, identity, dead)
        version = store.version()
        state: CommitState = store.state
    verify(tables, new)
    return MigrationResult({k: t.num_rows for k, t in tables.items()}, len(state.offset_map()),
                           identity, version)


def verify(expected: dict[str, pa.Table], new: ArchiveLocation) -> None:
    """Row for row: the new archive's raw rows equal the old archive's (as multisets)."""
    con = connect_history(new)
    for kind, t in expected.items():
        con.register("_old", t)
        cols = ", ".join(SCHEMAS[kind].names)
        diff = con.execute(
            f"SELECT (SELECT count(*) FROM (SELECT {cols} FROM _old EXCEPT ALL "  # noqa: S608
            f"SELECT {cols} FROM raw_{kind})) + (SELECT count(*) FROM (SELECT {cols} FROM "
            f"raw_{kind} EXCEPT ALL SELECT {cols} FROM _old))").fetchall()[0]
        if diff[0] != 0:
            raise ArchiveError(f"verification failed: {diff[0]} {kind} rows "
                               f"differ between the old archive and {new}; the new location "
                               "is not usable, remove it and report this")
        con.unregister("_old")
