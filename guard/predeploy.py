"""`guard predeploy`: the plan's eight pre-deployment checks, without its shell pitfalls.

The plan's script interpolated $NEW_CONSTRAINT into SQL and piped pg_dump into psql. Here:
every value travels as a bind parameter, the constraint goes through the validator (which
refuses anything but a CHECK expression), the staging copy streams COPY between the two
connections, and the outcome is a verdict: APPROVED (exit 0), BLOCKED (1) or COULD_NOT_RUN
(2). Input problems (bad DSN, guard not installed, a refused constraint, an unreachable
staging database) are found before anything is changed, including before the backup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from guard.db import Connection, connect, describe, translated
from guard.errors import GuardError, NotInstalled
from guard.install import use_schema
from guard.operations import (
    ConstraintImpact,
    constraint_impact,
    is_critical,
    read_health,
    take_backup,
)
from guard.report import CheckResult, PredeployReport, to_json, to_markdown

STAGING_TABLES = ("core_relationships", "core_dynamic_data")


@dataclass(frozen=True)
class PredeployInput:
    dsn: str
    schema: str = "public"
    staging_dsn: str | None = None
    deployment_script: Path | None = None
    new_constraint: str | None = None
    report_dir: Path = Path(".")


def _require_guard(conn: Connection, where: str) -> None:
    for fn in ("emergency_relationship_backup()", "check_authentication_system_health()"):
        row = conn.execute("SELECT to_regprocedure(%s)", (fn,)).fetchone()
        if row is None or row[0] is None:
            raise NotInstalled(f"hera-guard is not installed in the {where} database "
                               f"({fn} missing): run guard install --dsn <{where} DSN>")


def _common_columns(src: Connection, dst: Connection, table: str) -> list[str]:
    query = ("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
             "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum")
    theirs = {str(r[0]) for r in dst.execute(query, (table,)).fetchall()}
    return [str(r[0]) for r in src.execute(query, (table,)).fetchall()
            if str(r[0]) in theirs]


def copy_to_staging(src: Connection, dst: Connection) -> dict[str, int]:
    """Replace the staging copies of the two tables with production's rows, COPY-streamed.

    Production is read in one REPEATABLE READ, READ ONLY transaction (both tables from the
    same snapshot); staging is refilled in one transaction (all or nothing).
    """
    copied: dict[str, int] = {}
    src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    src.read_only = True
    with src.transaction(), dst.transaction():
        dst.execute("SET LOCAL hera_guard.allow_truncate = 'guard predeploy: staging refresh'")
        dst.execute(sql.SQL("TRUNCATE {}").format(
            sql.SQL(", ").join(sql.Identifier(t) for t in STAGING_TABLES)))
        for table in STAGING_TABLES:
            cols = sql.SQL(", ").join(sql.Identifier(c) for c in _common_columns(src, dst, table))
            out_cur, in_cur = src.cursor(), dst.cursor()
            with out_cur.copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
                    cols, sql.Identifier(table))) as out, in_cur.copy(
                    sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), cols)
            ) as into:
                for chunk in out:
                    into.write(chunk)
            row = dst.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(table))).fetchone()
            copied[table] = int(str(row[0])) if row else 0
    return copied


Progress = Callable[[CheckResult], None]


def run_predeploy(params: PredeployInput, clock: Callable[[], datetime],
                  progress: Progress = lambda _c: None) -> PredeployReport:
    report = PredeployReport(clock(), describe(params.dsn),
                             describe(params.staging_dsn) if params.staging_dsn else None)
    opened: list[Connection] = []

    def add(result: CheckResult) -> None:
        report.checks.append(result)
        progress(result)

    try:
        # Preflight: everything that can refuse the run, before anything changes.
        prod = connect(params.dsn, what="production database")
        opened.append(prod)
        impact: ConstraintImpact | None = None
        script: bytes | None = None
        staging: Connection | None = None
        with translated():
            use_schema(prod, params.schema)
            _require_guard(prod, "production")
            if params.new_constraint is not None:
                impact = constraint_impact(prod, params.new_constraint)
        if params.deployment_script is not None:
            try:
                script = params.deployment_script.read_bytes()
            except OSError as exc:
                raise GuardError(f"cannot read the deployment script: {exc}") from None
        if params.staging_dsn is not None:
            staging = connect(params.staging_dsn, what="staging database")
            opened.append(staging)
            with translated():
                use_schema(staging, params.schema)
                _require_guard(staging, "staging")

        _run_checks(params, prod, staging, impact, script, report, add)
        _write_reports(report, params.report_dir, add)
    except GuardError as exc:
        report.error = str(exc)
    finally:
        for conn in opened:
            conn.close()
    return report


def _run_checks(params: PredeployInput, prod: Connection, staging: Connection | None,
                impact: ConstraintImpact | None, script: bytes | None,
                report: PredeployReport, add: Callable[[CheckResult], None]) -> None:
    # 1. Emergency backup
    try:
        with translated():
            result = take_backup(prod)
        report.backup_reference = result.message
        add(CheckResult(1, "Emergency backup", "PASS", result.message,
                        [f"{t.table_name}: {t.record_count} rows, wal_lsn {t.wal_lsn}"
                         for t in result.tables]))
    except GuardError as exc:
        add(CheckResult(1, "Emergency backup", "FAIL", f"backup failed: {exc}"))

    # 2. Authentication health
    with translated():
        checks = read_health(prod)
    bad = [f"{c.check_name}: {c.status} - {c.details}" for c in checks if c.status != "HEALTHY"]
    critical = sum(1 for c in checks if c.status == "CRITICAL")
    add(CheckResult(2, "Authentication system health", "FAIL" if is_critical(checks) else "PASS",
                    f"{critical} critical issue(s)" if critical else "authentication is healthy",
                    bad))

    # 3. Constraint impact
    if impact is None:
        add(CheckResult(3, "Constraint impact", "SKIP", "no --new-constraint given"))
    else:
        blocked = impact.impact_level in ("CATASTROPHIC", "CRITICAL")
        add(CheckResult(3, "Constraint impact", "FAIL" if blocked else "PASS",
                        f"{impact.impact_level}: {impact.recommendation}",
                        [impact.risk_assessment,
                         *(f"violation sample: {s}" for s in impact.sample_violations)]))

    # 4. Staging
    if staging is None:
        add(CheckResult(4, "Staging environment", "SKIP", "no --staging-dsn given"))
    else:
        add(_staging_check(params.dsn, staging, script))

    # 5. Relationship integrity
    with translated():
        row = prod.execute(
            "SELECT count(*) FILTER (WHERE relationship_type = 'USER_MEMBER_OF_ORG'), count(*) "
            "FROM core_relationships WHERE is_active").fetchone()
    members, total = (int(str(row[0])), int(str(row[1]))) if row else (0, 0)
    add(CheckResult(5, "Relationship integrity", "FAIL" if members < 1 else "PASS",
                    f"{members} active USER_MEMBER_OF_ORG of {total} active relationships"
                    + ("; no active user organization memberships!" if members < 1 else "")))

    # 6. Smart code compliance (a warning, as in the plan)
    with translated():
        row = prod.execute(sql.SQL(
            "SELECT count(*) FROM core_relationships WHERE smart_code IS NOT NULL AND NOT ({})"
        ).format(sql.SQL(_v3(prod)))).fetchone()
    non_compliant = int(str(row[0])) if row else 0
    add(CheckResult(6, "Smart code compliance", "WARN" if non_compliant else "PASS",
                    f"{non_compliant} relationships have non-compliant smart codes"
                    if non_compliant else "all smart codes are compliant"))

    # 7. Recovery kit
    with translated():
        missing = [fn for fn in ("emergency_auth_recovery(text,uuid,text,text[])",
                                 "restore_relationships_from_backup(text)")
                   if (prod.execute("SELECT to_regprocedure(%s)", (fn,)).fetchone()
                       or (None,))[0] is None]
    add(CheckResult(7, "Recovery kit", "FAIL" if missing else "PASS",
                    f"missing: {', '.join(missing)}" if missing
                    else "emergency recovery functions are available"))


def _v3(conn: Connection) -> str:
    # The expression is our own constant (sql/03), not user input.
    row = conn.execute("SELECT smart_code_v3_expression()").fetchone()
    return str(row[0]) if row else "true"


def _staging_check(prod_dsn: str, staging: Connection, script: bytes | None) -> CheckResult:
    # A second production connection: its REPEATABLE READ copy must not disturb `prod`.
    source = connect(prod_dsn, what="production database")
    try:
        with translated():
            copied = copy_to_staging(source, staging)
    except GuardError as exc:
        return CheckResult(4, "Staging environment", "FAIL", f"copy to staging failed: {exc}")
    finally:
        source.close()
    details = [f"copied {table}: {n} rows (COPY stream)" for table, n in copied.items()]
    if script is not None:
        try:
            staging.execute(script)
        except psycopg.Error as exc:
            msg = (exc.diag.message_primary or str(exc)).strip()
            return CheckResult(4, "Staging environment", "FAIL",
                               f"the deployment script failed on staging: {msg}", details)
        details.append("deployment script applied on staging")
    with translated():
        checks = read_health(staging)
    details += [f"staging {c.check_name}: {c.status} - {c.details}" for c in checks
                if c.status != "HEALTHY"]
    if is_critical(checks):
        return CheckResult(4, "Staging environment", "FAIL",
                           "STAGING TEST FAILED: the deployment breaks authentication", details)
    return CheckResult(4, "Staging environment", "PASS",
                       "staging deployment test passed" if script is not None
                       else "staging refreshed and healthy (no --deployment-script)", details)


def _write_reports(report: PredeployReport, directory: Path,
                   add: Callable[[CheckResult], None]) -> None:
    stamp = report.generated_at.strftime("%Y%m%d_%H%M%S")
    base = directory / f"deployment_validation_{stamp}"
    md, js = base.with_suffix(".md"), base.with_suffix(".json")
    report.report_files = [str(md), str(js)]
    add(CheckResult(8, "Deployment readiness report", "PASS", f"written to {md} and {js}"))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        md.write_text(to_markdown(report))
        js.write_text(to_json(report))
    except OSError as exc:
        raise GuardError(f"cannot write the report into {directory}: {exc}") from None
