"""Everything capture checks and sets up in PostgreSQL before it streams, idempotently.

Preflight: wal_level, the output plugin allowed, the captured tables exist with a primary
key and REPLICA IDENTITY FULL (set when missing: without it a delete carries only the key and a
deleted relationship could not be restored). Slot: created with an exported snapshot, or an
existing one checked (plugin, database, WAL not lost).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from capture.errors import PreflightError, SlotError
from capture.event import parse_lsn
from hera_kit.text import first_line

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class TableInfo:
    schema: str
    table: str
    columns: tuple[tuple[str, str], ...]  # (name, format_type)
    primary_key: tuple[str, ...]
    oid: int = 0  # pg_class.oid: the table's identity across renames (0: unknown)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class SlotInfo:
    name: str
    plugin: str | None
    database: str | None
    active: bool
    active_pid: int | None
    confirmed_flush_lsn: int | None
    restart_lsn: int | None
    wal_status: str | None


def check_server(conn: Conn) -> None:
    row = conn.execute("SHOW wal_level").fetchone()
    if row is None or row[0] != "logical":
        raise PreflightError(
            f"wal_level is {row[0] if row else '?'}, capture needs 'logical': "
            "set wal_level = logical in postgresql.conf and restart PostgreSQL"
        )


def check_plugin_allowed(conn: Conn, plugin: str) -> None:
    has_setting = conn.execute(
        "SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'"
    ).fetchone()
    if has_setting is not None:
        allowed = [p.strip() for p in str(has_setting[0]).split(",")]
        if plugin not in allowed:
            raise PreflightError(
                f"this PostgreSQL restricts logical output plugins and {plugin} is not allowed: "
                f"add it, e.g. output_plugin_libraries = '{', '.join([*allowed, plugin])}', "
                "and reload (or capture run --plugin pgoutput)"
            )


def table_info(conn: Conn, qualified: str) -> TableInfo:
    schema, _, table = qualified.partition(".")
    row = conn.execute(
        "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, table),
    ).fetchone()
    if row is None:
        raise PreflightError(
            f"table {qualified} does not exist in this database: check --tables and --dsn"
        )
    oid = row[0]
    cols = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (oid,),
    ).fetchall()
    pk = conn.execute(
        "SELECT a.attname FROM pg_index i"
        " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord",
        (oid,),
    ).fetchall()
    if not pk:
        raise PreflightError(
            f"table {qualified} has no primary key: events are keyed and replayed by it; "
            "add one (ALTER TABLE ... ADD PRIMARY KEY) before capturing it"
        )
    return TableInfo(schema, table, tuple((str(c), str(t)) for c, t in cols),
                     tuple(str(p[0]) for p in pk), int(str(oid)))


def ensure_replica_identity_full(conn: Conn, info: TableInfo) -> bool:
    """Set REPLICA IDENTITY FULL when missing. Returns True when it changed something."""
    row = conn.execute(
        "SELECT c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (info.schema, info.table),
    ).fetchone()
    if row is not None and row[0] == "f":
        return False
    try:
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} REPLICA IDENTITY FULL").format(
                sql.Identifier(info.schema), sql.Identifier(info.table)
            )
        )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PreflightError(
            f"{info.qualified} needs REPLICA IDENTITY FULL and this role may not set it: "
            f"run ALTER TABLE {info.qualified} REPLICA IDENTITY FULL as the table owner"
        ) from exc
    return True


def slot_info(conn: Conn, slot: str) -> SlotInfo | None:
    row = conn.execute(
        "SELECT slot_name, plugin, database, active, active_pid, confirmed_flush_lsn::text,"
        " restart_lsn::text, wal_status FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return None
    return SlotInfo(
        name=str(row[0]),
        plugin=None if row[1] is None else str(row[1]),
        database=None if row[2] is None else str(row[2]),
        active=bool(row[3]),
        active_pid=None if row[4] is None else int(str(row[4])),
        confirmed_flush_lsn=None if row[5] is None else parse_lsn(str(row[5])),
        restart_lsn=None if row[6] is None else parse_lsn(str(row[6])),
        wal_status=None if row[7] is None else str(row[7]),
    )


def check_slot(info: SlotInfo, dbname: str, plugins: tuple[str, ...]) -> None:
    if info.plugin not in plugins:
        raise SlotError(
            f"slot {info.name} uses plugin {info.plugin or 'none (physical)'}, not one of "
            f"{', '.join(plugins)}: choose another --slot name, or drop that slot if it is unused"
        )
    if info.database != dbname:
        raise SlotError(
            f"slot {info.name} belongs to database {info.database}, not {dbname}: "
            "choose another --slot name"
        )
    if info.wal_status == "lost" or info.restart_lsn is None:
        raise SlotError(
            f"slot {info.name} has lost the WAL it needs (wal_status=lost): changes are missing "
            "and cannot be recovered from it; start a new epoch with a fresh snapshot: "
            "capture run --new-snapshot"
        )
    if info.active:
        raise SlotError(
            f"slot {info.name} is in use by another process (pid {info.active_pid}): "
            "stop the other capture, or use another --slot"
        )


@dataclass(frozen=True)
class CreatedSlot:
    consistent_point: int
    snapshot_name: str


def create_slot(repl: Conn, slot: str, plugin: str) -> CreatedSlot:
    """CREATE_REPLICATION_SLOT with an exported snapshot. ``repl`` must run no other command
    until the snapshot has been imported elsewhere (the export ends with the next command)."""
    try:
        row = repl.execute(
            sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL {} (SNAPSHOT 'export')").format(
                sql.Identifier(slot), sql.Identifier(plugin)
            )
        ).fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PreflightError(
            "this role may not create replication slots: grant it REPLICATION "
            "(ALTER ROLE ... WITH REPLICATION)"
        ) from exc
    except psycopg.errors.UndefinedFile as exc:
        raise PreflightError(
            f"the {plugin} output plugin is not installed on the server: install it (for "
            "wal2json: postgresql-NN-wal2json), or capture run --plugin pgoutput"
        ) from exc
    except psycopg.Error as exc:
        text = first_line(exc)
        if "may not be used as an output plugin" in text:
            raise PreflightError(
                f"{text}: add {plugin} to output_plugin_libraries and reload PostgreSQL"
            ) from exc
        raise PreflightError(f"cannot create slot {slot}: {text}") from exc
    assert row is not None
    return CreatedSlot(parse_lsn(str(row[1])), str(row[2]))


def drop_slot(conn: Conn, slot: str) -> None:
    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
