"""``guard install --roles``: the login roles each service runs as, least privilege, no
superuser (as on RDS/Aurora, Cloud SQL, Azure, Supabase).

- ``hera_capture``: REPLICATION (to create and read its slot), SELECT on exactly the captured
  tables (the snapshot), USAGE on their schemas. What capture would otherwise do as the tables'
  owner is done here, by the installer, once: REPLICA IDENTITY FULL on each captured table and
  the pgoutput publication (named after the slot) for exactly those tables.
- ``hera_restorer``: replay's writes (``--restore``, ``--revert-*``): SELECT, INSERT, UPDATE,
  DELETE and TRUNCATE on the captured tables. ``--into-table`` also needs CREATE on the target
  schema, which is not granted here (grant it where such copies should go).
- ``hera_detect``: INSERT on critical_system_alerts (and SELECT of its id column, which
  ON CONFLICT (id) needs), nothing else.

The roles get no password here (no secret in SQL or logs): set one (ALTER ROLE … PASSWORD) or
use the service's IAM authentication. Granting REPLICATION needs a superuser on PostgreSQL 15:
a managed service's admin grants its replication role instead (RDS/Aurora: ``GRANT
rds_replication TO hera_capture``, done here when that role exists; Cloud SQL:
``ALTER USER hera_capture WITH REPLICATION`` as cloudsqlsuperuser; Azure Flexible Server:
``ALTER ROLE hera_capture WITH REPLICATION`` as azure_pg_admin). Each step that cannot be done
is one warning line saying what to run, never silence.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from capture.decoding.publication import ensure_publication
from capture.slot import TableInfo
from guard.db import Connection
from guard.errors import OperationFailed

CAPTURE, RESTORER, DETECT = "hera_capture", "hera_restorer", "hera_detect"
ROLES = (CAPTURE, RESTORER, DETECT)


def _exists(conn: Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() \
        is not None


def _table(conn: Connection, qualified: str) -> TableInfo:
    schema, _, table = qualified.partition(".")
    row = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))",
                       (schema, table)).fetchone()
    if row is None or row[0] is None:
        raise OperationFailed(f"--roles: captured table {qualified} does not exist")
    return TableInfo(schema, table, (), ())


def install_roles(conn: Connection, schema: str, tables: Sequence[str], slot: str
                  ) -> list[str]:
    """Create or update the three roles; returns the warnings (one line each)."""
    warnings: list[str] = []
    infos = [_table(conn, t) for t in tables]
    for role in ROLES:
        if _exists(conn, role):
            continue
        try:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        except psycopg.errors.InsufficientPrivilege:
            raise OperationFailed(
                f"--roles: creating role {role} needs CREATEROLE (RDS: rds_superuser, Cloud SQL: "
                "cloudsqlsuperuser, Azure: azure_pg_admin); run guard install as such a role"
            ) from None
    warnings += _grant_replication(conn)
    ident = sql.Identifier
    for s in sorted({t.schema for t in infos} | {schema}):
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}, {}, {}").format(
            ident(s), *(ident(r) for r in ROLES)))
    for t in infos:
        name = sql.SQL("{}.{}").format(ident(t.schema), ident(t.table))
        try:
            conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(name))
        except psycopg.errors.InsufficientPrivilege:
            raise OperationFailed(f"--roles: {t.qualified} needs REPLICA IDENTITY FULL: run guard "
                                  "install as the tables' owner") from None
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(name, ident(CAPTURE)))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {} TO {}")
                     .format(name, ident(RESTORER)))
    # capture may not create the publication itself (it is not the tables' owner)
    ensure_publication(conn, slot, infos)
    # INSERT, and SELECT of the id column alone: the sink's ON CONFLICT (id) DO NOTHING (an
    # alert delivered twice is one row) must read the key; no other column is readable
    conn.execute(sql.SQL("GRANT INSERT, SELECT (id) ON {}.critical_system_alerts TO {}").format(
        ident(schema), ident(DETECT)))
    return warnings


def _grant_replication(conn: Connection) -> list[str]:
    row = conn.execute("SELECT rolreplication FROM pg_roles WHERE rolname = %s",
                       (CAPTURE,)).fetchone()
    if row is not None and row[0]:
        return []
    if _exists(conn, "rds_replication"):  # RDS/Aurora: the provider's grantable role
        conn.execute(sql.SQL("GRANT rds_replication TO {}").format(sql.Identifier(CAPTURE)))
        return []
    try:
        with conn.transaction():
            conn.execute(sql.SQL("ALTER ROLE {} REPLICATION").format(sql.Identifier(CAPTURE)))
        return []
    except psycopg.errors.InsufficientPrivilege:
        return [f"role {CAPTURE} has no REPLICATION yet and this role may not grant it: run "
                f"ALTER ROLE {CAPTURE} REPLICATION as a superuser (Cloud SQL: as "
                "cloudsqlsuperuser; Azure: azure_pg_admin; RDS: GRANT rds_replication)"]
