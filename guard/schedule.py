"""pg_cron scheduling of the plan's two jobs (backup every 6 hours, health every 15 minutes).

Where pg_cron can live: the extension can only be created in the database named by the
server setting ``cron.database_name`` (the scheduler's own database). So:

* installing into that database: ``CREATE EXTENSION IF NOT EXISTS pg_cron`` and
  ``cron.schedule(name, schedule, command)``;
* installing into any other database: connect to the cron database with the same
  credentials and, if the extension exists there and the caller may use it, call
  ``cron.schedule_in_database(name, schedule, command, database)`` (pg_cron >= 1.4; the
  extension revokes it from PUBLIC, so a superuser or an explicitly granted role is needed).
  We do not create the extension in another database on the caller's behalf.
* otherwise install still succeeds and the outcome says how to schedule instead
  (`guard backup` / `guard health --record` from cron or a systemd timer).

Job names are the plan's names in the cron database's public schema, and
``<name>@<database>[.<schema>]`` elsewhere, so several databases can share one scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from guard.db import Connection, connect, redact, with_dbname
from guard.errors import ConnectionFailed


@dataclass(frozen=True)
class Job:
    name: str
    schedule: str
    function: str


PLAN_JOBS: tuple[Job, ...] = (
    Job("emergency-relationship-backup", "0 */6 * * *", "emergency_relationship_backup"),
    Job("auth-health-monitor", "*/15 * * * *", "record_authentication_health"),
)

FALLBACK = ("schedule `guard backup --dsn DSN` every 6 hours and `guard health --record "
            "--dsn DSN` every 15 minutes with cron or a systemd timer")


@dataclass
class ScheduleOutcome:
    scheduled: bool
    jobs: list[str] = field(default_factory=list)
    cron_database: str | None = None
    note: str = ""


def job_name(job: Job, database: str, schema: str, cron_database: str) -> str:
    if database == cron_database and schema == "public":
        return job.name
    suffix = database if schema == "public" else f"{database}.{schema}"
    return f"{job.name}@{suffix}"


def _command(conn: Connection, job: Job, schema: str) -> str:
    return sql.SQL("SELECT {}.{}()").format(
        sql.Identifier(schema), sql.Identifier(job.function)).as_string(conn)


class _Unreadable(Exception):
    pass


def _cron_database(conn: Connection) -> str | None:
    try:
        with conn.transaction():
            row = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        raise _Unreadable from None
    return None if row is None or not row[0] else str(row[0])


def schedule_jobs(conn: Connection, dsn: str, schema: str) -> ScheduleOutcome:
    """Create (or update) the plan's pg_cron jobs for ``schema`` of ``conn``'s database."""
    try:
        cron_db = _cron_database(conn)
    except _Unreadable:
        return ScheduleOutcome(False, note=(
            "this role may not read cron.database_name, so it cannot use pg_cron (a superuser "
            f"can run guard install once to create the jobs); {FALLBACK}"))
    if cron_db is None:
        return ScheduleOutcome(False, note=f"pg_cron is not loaded on this server; {FALLBACK}")
    row = conn.execute("SELECT current_database()").fetchone()
    database = str(row[0]) if row else ""
    names = [job_name(j, database, schema, cron_db) for j in PLAN_JOBS]
    commands = [_command(conn, j, schema) for j in PLAN_JOBS]
    if database == cron_db:
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
                for name, job, command in zip(names, PLAN_JOBS, commands, strict=True):
                    conn.execute("SELECT cron.schedule(%s, %s, %s)",
                                 (name, job.schedule, command))
        except psycopg.Error as exc:
            return ScheduleOutcome(False, cron_database=cron_db, note=(
                f"pg_cron could not be used in database {cron_db}: "
                f"{redact(exc.diag.message_primary or str(exc))}; {FALLBACK}"))
        return ScheduleOutcome(True, names, cron_db,
                               f"scheduled with pg_cron in database {cron_db}")
    try:
        cron_conn = connect(with_dbname(dsn, cron_db), what=f"pg_cron database {cron_db}")
    except ConnectionFailed as exc:
        return ScheduleOutcome(False, cron_database=cron_db, note=f"{exc}; {FALLBACK}")
    with cron_conn:
        present = cron_conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone()
        if present is None:
            return ScheduleOutcome(False, cron_database=cron_db, note=(
                f"pg_cron runs in database {cron_db} (cron.database_name) but the extension "
                f"is not created there: as a superuser run CREATE EXTENSION pg_cron in "
                f"{cron_db} and re-run guard install, or {FALLBACK}"))
        try:
            with cron_conn.transaction():
                for name, job, command in zip(names, PLAN_JOBS, commands, strict=True):
                    cron_conn.execute("SELECT cron.schedule_in_database(%s, %s, %s, %s)",
                                      (name, job.schedule, command, database))
        except psycopg.Error as exc:
            return ScheduleOutcome(False, cron_database=cron_db, note=(
                f"pg_cron in database {cron_db} refused the jobs: "
                f"{redact(exc.diag.message_primary or str(exc))} (cron.schedule_in_database "
                f"needs a superuser or an explicit GRANT); {FALLBACK}"))
    return ScheduleOutcome(True, names, cron_db,
                           f"scheduled with pg_cron in database {cron_db} "
                           f"(cron.schedule_in_database for {database})")


def unschedule_jobs(conn: Connection, dsn: str, schema: str) -> list[str]:
    """Remove this database's jobs (uninstall, test clean-up); returns the removed names."""
    try:
        cron_db = _cron_database(conn)
    except _Unreadable:
        return []
    if cron_db is None:
        return []
    row = conn.execute("SELECT current_database()").fetchone()
    database = str(row[0]) if row else ""
    names = [job_name(j, database, schema, cron_db) for j in PLAN_JOBS]
    target = conn if database == cron_db else connect(with_dbname(dsn, cron_db))
    removed: list[str] = []
    try:
        if target.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone() is None:
            return []
        for name in names:
            hit = target.execute("SELECT jobid FROM cron.job WHERE jobname = %s AND "
                                 "username = current_user", (name,)).fetchone()
            if hit is not None:
                target.execute("SELECT cron.unschedule(%s::bigint)", (hit[0],))
                removed.append(name)
    finally:
        if target is not conn:
            target.close()
    return removed
