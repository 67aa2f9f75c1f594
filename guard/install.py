"""`guard install`: run sql/NN_*.sql in order (each file is idempotent), schedule the jobs."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from guard.db import Connection, connect, describe, redact, translated
from guard.errors import MissingSchema, OperationFailed
from guard.schedule import ScheduleOutcome, schedule_jobs


def _sql_dir() -> Path:
    """The repository's sql/ (a checkout, an editable install), else the copy a regular
    install puts in <prefix>/share/hera-guard/sql (pyproject data-files)."""
    here = Path(__file__).resolve().parent.parent / "sql"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "hera-guard" / "sql"


SQL_DIR = _sql_dir()
REQUIRED_TABLES = ("core_relationships", "core_dynamic_data")


@dataclass
class InstallReport:
    database: str
    schema: str
    scripts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    schedule: ScheduleOutcome | None = None
    backup: str | None = None


def scripts(directory: Path = SQL_DIR) -> list[Path]:
    """The numbered scripts, in order."""
    found = sorted(p for p in directory.glob("[0-9][0-9]_*.sql") if p.is_file())
    if not found:
        raise OperationFailed(f"no sql/NN_*.sql scripts found in {directory}")
    return found


def use_schema(conn: Connection, schema: str) -> None:
    """Point the session at the HERA schema (pg_temp last, so temp tables never shadow)."""
    conn.execute(sql.SQL("SET search_path = {}, pg_temp").format(sql.Identifier(schema)))


def check_prerequisites(conn: Connection, schema: str, dsn: str) -> None:
    for table in REQUIRED_TABLES:
        row = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))",
                           (schema, table)).fetchone()
        if row is None or row[0] is None:
            raise MissingSchema(
                f"table {schema}.{table} not found in {describe(dsn)}: create the HERA schema "
                f"first (or pass --schema)")


def install(dsn: str, schema: str = "public", *, initial_backup: bool = True,
            schedule: bool = True) -> InstallReport:
    conn = connect(dsn)
    report = InstallReport(describe(dsn), schema)

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING" and diag.message_primary:
            report.warnings.append(redact(diag.message_primary))

    with conn:
        conn.add_notice_handler(on_notice)
        with translated():
            check_prerequisites(conn, schema, dsn)
            use_schema(conn, schema)
            conn.execute("SET lock_timeout = '10s'")
        for path in scripts():
            try:
                with translated():
                    conn.execute(path.read_bytes())
            except OperationFailed as exc:
                raise OperationFailed(f"{path.name} failed: {exc}") from None
            report.scripts.append(path.name)
        if schedule:
            report.schedule = schedule_jobs(conn, dsn, schema)
        if initial_backup:
            with translated():
                row = conn.execute("SELECT emergency_relationship_backup()").fetchone()
            report.backup = str(row[0]) if row else None
    return report
