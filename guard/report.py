"""The pre-deployment report: its checks and verdict, as Markdown (for people) and JSON (for
pipelines). guard.predeploy fills it in; this module knows nothing of how."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Literal

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]
Verdict = Literal["APPROVED", "BLOCKED", "COULD_NOT_RUN"]
EXIT_CODES: dict[Verdict, int] = {"APPROVED": 0, "BLOCKED": 1, "COULD_NOT_RUN": 2}


@dataclass
class CheckResult:
    number: int
    title: str
    status: Status
    summary: str
    details: list[str] = field(default_factory=list)


@dataclass
class PredeployReport:
    generated_at: datetime
    database: str
    staging: str | None
    checks: list[CheckResult] = field(default_factory=list)
    backup_reference: str | None = None
    error: str | None = None
    report_files: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        if self.error is not None:
            return "COULD_NOT_RUN"
        return "BLOCKED" if any(c.status == "FAIL" for c in self.checks) else "APPROVED"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


_ICON = {"PASS": "✅", "WARN": "⚠️", "FAIL": "❌", "SKIP": "⏭️"}


def to_dict(report: PredeployReport) -> dict[str, object]:
    return {
        "verdict": report.verdict,
        "exit_code": report.exit_code,
        "generated_at": report.generated_at.isoformat(),
        "database": report.database,
        "staging": report.staging,
        "backup_reference": report.backup_reference,
        "error": report.error,
        "checks": [asdict(c) for c in report.checks],
        "report_files": report.report_files,
    }


def to_json(report: PredeployReport) -> str:
    return json.dumps(to_dict(report), indent=2) + "\n"


def to_markdown(report: PredeployReport) -> str:
    lines = [
        "# HERA deployment validation report",
        "",
        f"- Generated: {report.generated_at.isoformat()}",
        f"- Database: `{report.database}`",
        f"- Staging: `{report.staging}`" if report.staging else "- Staging: not tested",
        f"- Backup reference: {report.backup_reference or 'none'}",
        "",
        "| # | Check | Status | Summary |",
        "| --- | --- | --- | --- |",
    ]
    for c in report.checks:
        summary = c.summary.replace("|", "\\|")
        lines.append(f"| {c.number} | {c.title} | {_ICON[c.status]} {c.status} | {summary} |")
    for c in report.checks:
        if c.details:
            lines += ["", f"## {c.number}. {c.title}", ""]
            lines += [f"- {d}" for d in c.details]
    if report.error:
        lines += ["", f"**Could not run:** {report.error}"]
    lines += ["", f"**DEPLOYMENT STATUS: {report.verdict}**", ""]
    return "\n".join(lines)
