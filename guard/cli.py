"""`guard`: the plan's SQL layer and its Phase 3 scripts as commands (thin click layer).

Exit codes: 0 success / healthy / approved, 1 the check ran and found a problem (health
CRITICAL, predeploy BLOCKED, postdeploy alerts), 2 the command could not run (bad input,
unreachable database, guard not installed, ...), always with one line on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click
from pydantic import ValidationError

from guard.db import redact
from guard.errors import GuardError
from guard.settings import (
    GuardSettings,
    HealthSettings,
    InstallSettings,
    PostdeploySettings,
    PredeploySettings,
    RecoverSettings,
    RestoreSettings,
)

S = TypeVar("S", bound=GuardSettings)
_FLAGS = {"db_schema": "schema", "json_output": "json", "backup_table": "NAME"}


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"guard: {redact(message)}", err=True)
    sys.exit(code)


def _settings(cls: type[S], **given: Any) -> S:
    try:
        return cls(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "settings"
        flag = _FLAGS.get(field, field).replace("_", "-")
        flag = flag if flag == "NAME" else f"--{flag}"
        env = f"HERA_{field.upper()}"
        if err["type"] == "missing":
            _fail(f"missing {flag} (or {env})")
        _fail(f"{flag}: {err['msg'].removeprefix('Value error, ')}")


def _run(fn: Callable[[], int]) -> NoReturn:
    try:
        code = fn()
    except GuardError as exc:
        _fail(str(exc))
    sys.exit(code)


def _now() -> datetime:
    return datetime.now(UTC)


_dsn = click.option("--dsn", help="PostgreSQL connection string [HERA_DSN]")
_schema = click.option("--schema", "db_schema",
                       help="schema of the HERA tables [HERA_DB_SCHEMA, default public]")


@click.group()
def main() -> None:
    """The in-database protection layer of the plan, hardened."""


@main.command()
@_dsn
@_schema
@click.option("--initial-backup/--no-initial-backup", default=None,
              help="take a backup right after installing [HERA_INITIAL_BACKUP, default on]")
@click.option("--schedule/--no-schedule", default=None,
              help="create the pg_cron jobs [HERA_SCHEDULE, default on]")
@click.option("--roles", is_flag=True, default=None,
              help="also create the services' least-privilege login roles hera_capture, "
                   "hera_restorer, hera_detect, the publication and REPLICA IDENTITY FULL of "
                   "the captured tables [HERA_ROLES]")
@click.option("--tables", help="captured tables, for --roles [HERA_TABLES]")
@click.option("--slot", help="capture's slot (its publication's name), for --roles [HERA_SLOT]")
def install(**opts: Any) -> None:
    """Install (or upgrade: every script is idempotent) the SQL layer of sql/."""
    from guard.install import install as do_install
    from guard.render import console

    s = _settings(InstallSettings, **opts)

    def go() -> int:
        report = do_install(s.dsn, s.db_schema, initial_backup=s.initial_backup,
                            schedule=s.schedule)
        out = console()
        out.print(f"[green]installed[/] {len(report.scripts)} scripts into "
                  f"{report.database} (schema {report.schema}): {', '.join(report.scripts)}")
        for w in report.warnings:
            out.print(f"[yellow]warning:[/] {w}", markup=True)
        if report.schedule is not None:
            style = "green" if report.schedule.scheduled else "yellow"
            out.print(f"[{style}]scheduling:[/] {report.schedule.note}")
            for job in report.schedule.jobs:
                out.print(f"  pg_cron job {job}")
        if report.backup:
            out.print(report.backup)
        if s.roles:
            from guard.db import connect
            from guard.roles import ROLES, install_roles

            with connect(s.dsn) as conn:
                warnings = install_roles(conn, s.db_schema, s.tables, s.slot)
            out.print(f"[green]roles:[/] {', '.join(ROLES)} (no passwords: set them, or use "
                      f"the service's IAM login); publication {s.slot}")
            for w in warnings:
                out.print(f"[yellow]warning:[/] {w}", markup=True)
        return 0

    _run(go)


@main.command()
@_dsn
@_schema
def backup(**opts: Any) -> None:
    """Take an emergency backup of core_relationships and core_dynamic_data now."""
    from guard.operations import backup as do_backup

    s = _settings(GuardSettings, **opts)

    def go() -> int:
        result = do_backup(s.dsn, s.db_schema)
        click.echo(result.message)
        for t in result.tables:
            click.echo(f"  {t.table_name}: {t.record_count} rows from {t.source_table}, "
                       f"wal_lsn {t.wal_lsn}")
        return 0

    _run(go)


@main.command()
@_dsn
@_schema
@click.option("--json", "json_output", is_flag=True, default=None,
              help="print the checks as JSON [HERA_JSON_OUTPUT]")
@click.option("--record", is_flag=True, default=None,
              help="also append the result to system_health_log [HERA_RECORD]")
def health(**opts: Any) -> None:
    """Run the four authentication health checks (exit 1 if any is CRITICAL)."""
    from guard.operations import health as do_health
    from guard.operations import is_critical
    from guard.render import console, health_table

    s = _settings(HealthSettings, **opts)

    def go() -> int:
        checks = do_health(s.dsn, s.db_schema, record=s.record)
        if s.json_output:
            click.echo(json.dumps([asdict(c) for c in checks], indent=2))
        else:
            health_table(console(), checks)
        return 1 if is_critical(checks) else 0

    _run(go)


@main.command()
@_dsn
@_schema
@click.option("--user", help="the locked-out user's id [HERA_USER]")
@click.option("--org", help="the organization id (UUID) [HERA_ORG]")
@click.option("--role", help="role to grant [HERA_ROLE, default owner]")
def recover(**opts: Any) -> None:
    """Give a user back an active membership and role in an organization."""
    from guard.operations import recover as do_recover

    s = _settings(RecoverSettings, **opts)

    def go() -> int:
        result = do_recover(s.dsn, s.user, s.org, s.role, s.db_schema)
        click.echo(f"{result.recovery_status}: {result.message} "
                   f"(relationship {result.relationship_id}, "
                   f"{result.dynamic_data_created} dynamic data rows)")
        return 0

    _run(go)


@main.command("restore-backup")
@click.argument("backup_table", metavar="NAME", required=False)
@_dsn
@_schema
def restore_backup(**opts: Any) -> None:
    """Restore the missing relationships from the backup table NAME."""
    from guard.operations import restore_backup as do_restore

    s = _settings(RestoreSettings, **opts)

    def go() -> int:
        r = do_restore(s.dsn, s.backup_table, s.db_schema)
        click.echo(f"{r.restoration_status}: {r.relationships_restored} restored "
                   f"({r.auth_relationships_restored} memberships), {r.already_present} "
                   f"already present, {r.errors_encountered} failed"
                   + (" (see restore_failures)" if r.errors_encountered else ""))
        return 0 if r.errors_encountered == 0 else 1

    _run(go)


@main.command()
@_dsn
@_schema
@click.option("--staging-dsn", help="staging database to rehearse on [HERA_STAGING_DSN]")
@click.option("--deployment-script", help="SQL file to rehearse on staging "
                                          "[HERA_DEPLOYMENT_SCRIPT]")
@click.option("--new-constraint", help="CHECK expression to assess [HERA_NEW_CONSTRAINT]")
@click.option("--report-dir", help="where the .md/.json report goes [HERA_REPORT_DIR, .]")
def predeploy(**opts: Any) -> None:
    """The plan's eight pre-deployment checks. Exit 0 approved, 1 blocked, 2 could not run."""
    from guard.predeploy import PredeployInput, run_predeploy
    from guard.render import check_line, console, predeploy_summary

    s = _settings(PredeploySettings, **opts)
    out = console()
    out.print("[bold]HERA PRE-DEPLOYMENT VALIDATION[/]")
    report = run_predeploy(
        PredeployInput(s.dsn, s.db_schema, s.staging_dsn, s.deployment_script,
                       s.new_constraint, s.report_dir),
        _now, progress=lambda c: check_line(out, c))
    predeploy_summary(out, report)
    if report.error is not None:
        click.echo(f"guard: {redact(report.error)}", err=True)
    sys.exit(report.exit_code)


@main.command()
@_dsn
@_schema
@click.option("--since", help="look back this far for alerts, e.g. 30m, 1h, 2d "
                              "[HERA_SINCE, default 1h]")
def postdeploy(**opts: Any) -> None:
    """The plan's post-deployment monitoring (exit 1 on critical alerts or auth failure)."""
    from guard.postdeploy import run_postdeploy
    from guard.render import console, postdeploy_summary

    s = _settings(PostdeploySettings, **opts)

    def go() -> int:
        report = run_postdeploy(s.dsn, s.db_schema, s.since, _now)
        postdeploy_summary(console(), report)
        return 0 if report.healthy else 1

    _run(go)
