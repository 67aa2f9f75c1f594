"""Human output of the guard commands (rich: colour on a terminal, plain text elsewhere)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from guard.operations import HealthCheck
from guard.postdeploy import PostdeployReport
from guard.report import CheckResult, PredeployReport

_STATUS_STYLE = {"HEALTHY": "green", "WARNING": "yellow", "CRITICAL": "bold red",
                 "PASS": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim"}
_ICON = {"PASS": "✅", "WARN": "⚠️ ", "FAIL": "❌", "SKIP": "⏭️ "}


def console(stderr: bool = False) -> Console:
    """Colour only on a terminal (rich detects it); NO_COLOR and TERM=dumb are honoured."""
    out = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal:  # files and pipes: no 80-column wrapping of tables
        out = Console(stderr=stderr, highlight=False, soft_wrap=True, width=200)
    return out


def health_table(out: Console, checks: list[HealthCheck]) -> None:
    table = Table(title="Authentication system health")
    for col in ("check", "status", "severity", "affected", "details", "resolution"):
        table.add_column(col, justify="right" if col == "affected" else "left")
    for c in checks:
        style = _STATUS_STYLE.get(c.status, "")
        table.add_row(c.check_name, f"[{style}]{c.status}[/]" if style else c.status,
                      c.severity, str(c.affected_count), escape(c.details),
                      escape(c.resolution_action) if c.status != "HEALTHY" else "")
    out.print(table)


def check_line(out: Console, c: CheckResult) -> None:
    style = _STATUS_STYLE[c.status]
    out.print(f"[{style}]{_ICON[c.status]} {c.number}. {escape(c.title)}: {escape(c.summary)}[/]")
    for d in c.details:
        out.print(f"     {d}", markup=False)


def predeploy_summary(out: Console, report: PredeployReport) -> None:
    if report.verdict == "APPROVED":
        out.print("[bold green]ALL CHECKS PASSED - DEPLOYMENT APPROVED[/]")
    elif report.verdict == "BLOCKED":
        failed = ", ".join(str(c.number) for c in report.checks if c.status == "FAIL")
        out.print(f"[bold red]DEPLOYMENT BLOCKED (failed check(s): {failed})[/]")
    else:
        out.print(f"[bold red]COULD NOT RUN: {escape(report.error or '')}[/]")


def postdeploy_summary(out: Console, report: PostdeployReport) -> None:
    if report.critical_alerts:
        out.print(f"[bold red]❌ {len(report.critical_alerts)} critical alert(s) since "
                  f"{report.since.isoformat()}[/]")
        for a in report.critical_alerts:
            out.print(f"   {a.created_at.isoformat()} {a.severity} {a.alert_type}: {a.message}",
                      markup=False)
    else:
        out.print(f"[green]✅ no critical alerts since {report.since.isoformat()}[/]")
    health_table(out, list(report.checks))
    out.print(f"statements blocked by the guardian since install: "
              f"{report.blocked_statements_total}")
    if report.healthy:
        out.print("[bold green]Post-deployment monitoring complete - system healthy[/]")
    else:
        out.print("[bold red]POST-DEPLOYMENT CHECK FAILED[/]")
