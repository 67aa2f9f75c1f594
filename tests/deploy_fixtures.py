"""What deploy/ names: the metric names its alert rules and Grafana dashboard use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "hera-guard-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "hera-guard-rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "hera-guard.json"
_NAME = re.compile(r"\bhera_[a-z_]+\b")


def rule_expressions() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [str(r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard_expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [str(t["expr"]) for p in doc["panels"] for t in p["targets"]]


def metric_names(expressions: list[str]) -> set[str]:
    return {m for e in expressions for m in _NAME.findall(e)}


def exported_names(exposition: str) -> set[str]:
    """Every series name a /metrics text can produce: the sample lines' names and, for a
    labelled metric with no child yet, the names its TYPE line promises."""
    out: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            out |= {name} if kind != "counter" else {name, name + "_total"}
            if kind == "histogram":
                out |= {name + s for s in ("_bucket", "_sum", "_count")}
        elif line and not line.startswith("#"):
            out.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return out
