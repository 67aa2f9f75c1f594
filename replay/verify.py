"""``replay verify``: is the archive complete? Rebuild the current state of every archived
table and compare it with the live table: counts, an order-independent checksum over
per-row checksums, and the rows that differ."""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from capture.event import format_lsn, parse_lsn
from replay.coverage import epochs
from replay.live import Conn, columns, primary_key, read_rows, regclass
from replay.plan import DELETE, INSERT, UPDATE, plan_changes
from replay.rebuild import pk_paths
from replay.state import Progress, archived_tables, quiet, state_at
from replay.tables import TableId, first


@dataclass(frozen=True)
class TableCheck:
    table: TableId
    archive_lsn: int
    archive_rows: int
    live_rows: int
    archive_checksum: str
    live_checksum: str
    missing: int  # in the archive's state, not live
    extra: int  # live, not in the archive's state
    differing: int
    samples: list[tuple[str, str]] = field(default_factory=list)  # (what, key)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.differing)


def _checksum(duck: duckdb.DuckDBPyConnection, rel: duckdb.DuckDBPyRelation | pa.Table,
              cols: list[str]) -> str:
    name = "_ck"
    if isinstance(rel, duckdb.DuckDBPyRelation):
        rel.create_view(name, replace=True)
    else:
        duck.register(name, rel)
    row = first(duck.execute(
        f"SELECT bit_xor(md5_number(json_extract(row::JSON, $c)::VARCHAR)) FROM {name}",  # noqa: S608
        {"c": pk_paths(cols)}))
    duck.execute(f"DROP VIEW IF EXISTS {name}")
    return format(int(row[0]) if row and row[0] is not None else 0, "032x")


def verify(duck: duckdb.DuckDBPyConnection, pg: Conn, tables: list[TableId] | None = None,
           progress: Progress = quiet, sample: int = 20) -> tuple[list[TableCheck], int]:
    """Checks per table, and the live database's WAL position when it was read."""
    eps = epochs(duck)
    checks = []
    wal = pg.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    live_lsn = parse_lsn(str(wal[0])) if wal else 0
    for table in tables or archived_tables(duck):
        if regclass(pg, table) is None:
            progress(f"{table}: not in the database, skipped")
            continue
        usable = [e for e in eps if e.snapshot_done and e.covers_table(table)]
        if not usable:
            progress(f"{table}: no finished snapshot in the archive, skipped")
            continue
        upto = usable[-1].reach_lsn
        cols = columns(pg, table)
        pk = primary_key(pg, table)
        progress(f"{table}: rebuilding at {format_lsn(upto)} and reading live rows")
        state = state_at(duck, table, upto, live_pk=pk,
                         live_types={c.name: c.type for c in cols})
        state.rel.to_table("_verify_state")
        wanted = duck.table("_verify_state")
        # Generated columns are PostgreSQL's to compute (pgoutput does not even send them).
        stored = [c for c in cols if not c.generated]
        live = read_rows(pg, table, stored)
        names = [c.name for c in stored]
        plan = plan_changes(duck, table, state.pk, names, wanted, live, compat=state.v1_json)
        samples = [(op["action"], op["key"]) for op in plan.ops.slice(0, sample).to_pylist()]
        checks.append(TableCheck(
            table, upto, wanted.shape[0], live.num_rows, _checksum(duck, wanted, names),
            _checksum(duck, live, names), plan.count(INSERT), plan.count(DELETE),
            plan.count(UPDATE), samples))
        duck.execute("DROP TABLE _verify_state")
    return checks, live_lsn
