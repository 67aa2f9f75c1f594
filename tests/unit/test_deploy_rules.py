"""deploy/: the alert rules pass promtool's own check and its unit tests (Debian's
prometheus package); the Grafana dashboard is well-formed and queries only hera metrics the
rules know too (the names themselves are checked against running services in
tests/integration/test_deploy_metrics.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

from tests.deploy_fixtures import (
    DASHBOARD,
    RULE_TESTS,
    RULES,
    dashboard_expressions,
    metric_names,
    rule_expressions,
)


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: scripts/bootstrap.sh installs Debian's prometheus package"
    return path


def test_promtool_accepts_the_alert_rules() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 17 rules found" in out.stdout


def test_every_alert_fires_in_promtools_rule_tests_and_the_tests_pass() -> None:
    out = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], capture_output=True,
                         text=True, timeout=60, cwd=RULE_TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    assert alerts == tested


def test_the_grafana_dashboard_is_well_formed_with_unique_panel_ids() -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert doc["uid"] == "hera-guard" and len(ids) == len(set(ids))
    for panel in doc["panels"]:
        assert panel["targets"] and panel["datasource"]["type"] == "prometheus"
        assert all(t["expr"].strip() for t in panel["targets"])


def test_the_dashboard_shows_what_the_rules_alert_on() -> None:
    # every metric an alert fires on can be looked at on the dashboard (up{} aside)
    assert metric_names(rule_expressions()) <= metric_names(dashboard_expressions()) | {
        "hera_capture_fatal_errors_total", "hera_archive_identity_checks_failed_total",
        "hera_detect_delivery_failures_total"}
