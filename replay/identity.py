"""Which database an archive belongs to, and refusing to write into another one.

Capture's markers carry the stream's identity: the database name (``db``) and, from
schema_version 2 on, the cluster's ``system_identifier`` (pg_control_system()). Replay
writes (``--restore``, ``--revert-xid``, ``--into-table``) only into that database of that
cluster, unless told ``--allow-other-database``: rows of another stream written into a
database are not a restore, they are damage. Archives from before the identity was recorded
are checked on the database name alone, and replay says the cluster is unverified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import psycopg

from replay.errors import ReplayError
from replay.live import Conn
from replay.tables import first


class WrongDatabase(ReplayError):
    """The target database is not the one the archive was captured from."""


@dataclass(frozen=True)
class Identity:
    db: str | None
    system_identifier: str | None

    def describe(self) -> str:
        cluster = (f"cluster {self.system_identifier}" if self.system_identifier
                   else "an unrecorded cluster")
        return f"database {self.db or '?'} of {cluster}"


def _marker_columns(conn: duckdb.DuckDBPyConnection) -> set[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = 'markers'").fetchall()
    return {str(r[0]) for r in rows}


def archive_identity(conn: duckdb.DuckDBPyConnection) -> Identity | None:
    """The identity of the archive's latest epoch (None: no markers at all)."""
    has_sysid = "system_identifier" in _marker_columns(conn)
    sysid = "system_identifier" if has_sysid else "NULL::VARCHAR"
    row = first(conn.execute(
        f"SELECT db, {sysid} FROM markers "  # noqa: S608 - a column name of ours
        f"ORDER BY epoch_lsn DESC, ({sysid}) IS NULL, lsn DESC LIMIT 1"))
    if row is None:
        return None
    return Identity(None if row[0] is None else str(row[0]),
                    None if row[1] is None else str(row[1]))


def target_identity(pg: Conn) -> Identity:
    db = pg.execute("SELECT current_database()").fetchone()
    try:
        with pg.transaction():
            found = pg.execute(
                "SELECT system_identifier::text FROM pg_control_system()").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        found = None
    return Identity(str(db[0]) if db else None,
                    None if found is None or found[0] is None else str(found[0]))


def check_target(duck: duckdb.DuckDBPyConnection, pg: Conn, what: str, allow_other: bool,
                 warn: Callable[[str], None]) -> None:
    """Refuse (WrongDatabase) to write into a database that is not the archive's."""
    ours = archive_identity(duck)
    if ours is None:
        return  # no markers: coverage refuses every point anyway
    target = target_identity(pg)
    same_db = ours.db is None or ours.db == target.db
    if ours.system_identifier is None or target.system_identifier is None:
        same = same_db
        unverified = True
    else:
        same = same_db and ours.system_identifier == target.system_identifier
        unverified = False
    if not same:
        if allow_other:
            warn(f"{what} writes into {target.describe()}, not the archive's "
                 f"{ours.describe()} (--allow-other-database)")
            return
        raise WrongDatabase(
            f"the archive was captured from {ours.describe()}, but the target is "
            f"{target.describe()}; {what} writes only into the archive's own database - "
            "check --dsn, or pass --allow-other-database to write there anyway")
    if unverified:
        side = ("the archive's markers do not record it (written before capture recorded "
                "system_identifier)" if ours.system_identifier is None else
                "the role may not read pg_control_system()")
        warn(f"the target's database name matches the archive ({target.db}); the cluster "
             f"identity is unverified: {side}")
