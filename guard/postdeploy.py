"""`guard postdeploy`: the plan's post-deployment monitoring (critical alerts, auth health)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from guard.operations import HealthCheck, is_critical, read_health, session


@dataclass(frozen=True)
class AlertRow:
    alert_type: str
    severity: str
    message: str
    created_at: datetime


@dataclass(frozen=True)
class PostdeployReport:
    since: datetime
    critical_alerts: tuple[AlertRow, ...]
    checks: tuple[HealthCheck, ...]
    blocked_statements_total: int

    @property
    def healthy(self) -> bool:
        return not self.critical_alerts and not is_critical(list(self.checks))


def run_postdeploy(dsn: str, schema: str, window: timedelta,
                   clock: Callable[[], datetime]) -> PostdeployReport:
    since = clock() - window
    with session(dsn, schema) as conn:
        rows = conn.execute(
            "SELECT alert_type, severity, message, created_at FROM critical_system_alerts "
            "WHERE severity IN ('CRITICAL', 'EMERGENCY') AND created_at > %s "
            "ORDER BY created_at DESC", (since,)).fetchall()
        alerts = tuple(AlertRow(str(r[0]), str(r[1]), str(r[2]), r[3])  # type: ignore[arg-type]
                       for r in rows)
        checks = tuple(read_health(conn))
        blocked = conn.execute("SELECT guard_blocked_statements_total()").fetchone()
    return PostdeployReport(since, alerts, checks, int(str(blocked[0])) if blocked else 0)
