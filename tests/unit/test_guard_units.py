"""The guard's pure parts: durations, settings, reports, plain output off a terminal, and
static properties of the SQL scripts (pinned search_path, SECURITY DEFINER revoked)."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from rich.console import Console

from guard.cli import main
from guard.db import describe, redact
from guard.install import SQL_DIR, scripts
from guard.render import check_line
from guard.report import CheckResult, PredeployReport, to_json, to_markdown
from guard.schedule import PLAN_JOBS, job_name
from guard.settings import RecoverSettings, parse_duration

SQL = {p.name: p.read_text() for p in scripts()}


@pytest.mark.parametrize(("text", "expected"), [
    ("1h", timedelta(hours=1)), ("30m", timedelta(minutes=30)), ("90s", timedelta(seconds=90)),
    ("1h30m", timedelta(hours=1, minutes=30)), ("2d", timedelta(days=2)),
])
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1y", "h", "1h; drop", "0m", "-1h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_recover_needs_an_org_uuid() -> None:
    with pytest.raises(ValidationError, match="not an organization id"):
        RecoverSettings(dsn="x", user="u", org="acme")


def test_passwords_never_reach_messages() -> None:
    assert "s3cret" not in redact("host=h password=s3cret dbname=d")
    assert "s3cret" not in redact("postgresql://me:s3cret@h/db")
    assert describe("host=h port=6543 dbname=hera password=s3cret") == "h:6543/hera"


def test_a_missing_dsn_is_one_line_naming_the_flag_and_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HERA_DSN", raising=False)
    result = CliRunner().invoke(main, ["backup"])
    assert result.exit_code == 2
    assert result.stderr == "guard: missing --dsn (or HERA_DSN)\n"


def test_every_option_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERA_DSN", "host=127.0.0.1 port=1 dbname=x")
    result = CliRunner().invoke(main, ["health"])
    assert result.exit_code == 2
    assert "cannot connect to the database at 127.0.0.1:1/x" in result.stderr


def _report() -> PredeployReport:
    report = PredeployReport(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), "h:5432/prod", None)
    report.checks = [CheckResult(1, "Emergency backup", "PASS", "created x | y"),
                     CheckResult(2, "Authentication system health", "FAIL", "1 critical",
                                 ["missing_org_memberships: CRITICAL - 1 users"])]
    return report


def test_reports_carry_the_verdict_and_every_check() -> None:
    report = _report()
    data = json.loads(to_json(report))
    assert (data["verdict"], data["exit_code"]) == ("BLOCKED", 1)
    assert [c["status"] for c in data["checks"]] == ["PASS", "FAIL"]
    md = to_markdown(report)
    assert "| 1 | Emergency backup | ✅ PASS | created x \\| y |" in md
    assert "**DEPLOYMENT STATUS: BLOCKED**" in md


def test_a_report_with_an_error_could_not_run() -> None:
    report = _report()
    report.error = "cannot connect"
    assert (report.verdict, report.exit_code) == ("COULD_NOT_RUN", 2)


def test_output_off_a_terminal_is_plain_text() -> None:
    buffer = io.StringIO()
    check_line(Console(file=buffer), CheckResult(3, "Constraint impact", "FAIL",
                                                 "CRITICAL [SQLSTATE x]"))
    assert buffer.getvalue() == "❌ 3. Constraint impact: CRITICAL [SQLSTATE x]\n"


def test_on_a_terminal_the_output_is_coloured() -> None:
    buffer = io.StringIO()
    check_line(Console(file=buffer, force_terminal=True, color_system="standard"),
               CheckResult(5, "Relationship integrity", "PASS", "ok"))
    assert "\x1b[" in buffer.getvalue()


def test_job_names_keep_the_plans_names_only_in_the_cron_database() -> None:
    backup = PLAN_JOBS[0]
    assert job_name(backup, "postgres", "public", "postgres") == "emergency-relationship-backup"
    assert job_name(backup, "hera", "public", "postgres") == "emergency-relationship-backup@hera"
    assert job_name(backup, "hera", "app", "postgres") == "emergency-relationship-backup@hera.app"


def test_scripts_are_numbered_without_gaps() -> None:
    assert [name[:2] for name in SQL] == [f"{n:02d}" for n in range(len(SQL))]
    assert Path(__file__).resolve().parents[2] / "sql" == SQL_DIR


def _functions(text: str) -> list[tuple[str, str]]:
    """(name, header up to the body) of every CREATE FUNCTION in a script."""
    found = re.finditer(r"CREATE (?:OR REPLACE )?FUNCTION (\w+)\((.*?)\bAS \$\$", text, re.S)
    return [(m.group(1), m.group(2)) for m in found]


def test_every_function_pins_its_search_path() -> None:
    functions = [f for text in SQL.values() for f in _functions(text)]
    assert len(functions) > 15
    assert [name for name, header in functions if "SET search_path" not in header] == []


def test_every_security_definer_function_is_revoked_from_public() -> None:
    definers = {name for text in SQL.values() for name, header in _functions(text)
                if "SECURITY DEFINER" in header}
    privileges = SQL["07_privileges.sql"]
    revoked = set(re.findall(r"'(\w+)\(", privileges.split("guard_tables")[0]))
    assert definers and definers <= revoked


def test_the_plans_original_restore_is_never_installed() -> None:
    assert all("plan_restore_relationships_from_backup" not in t for t in SQL.values())
