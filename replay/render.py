"""Showing plans and checks: a summary table and samples (rich), on stdout."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from capture.event import format_lsn
from replay.apply import Applied
from replay.plan import CONFLICT, DELETE, INSERT, UPDATE, Plan
from replay.verify import TableCheck

_LABEL = {INSERT: "re-insert", UPDATE: "revert", DELETE: "remove", CONFLICT: "conflict"}


def _short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _diff(current: dict[str, Any] | None, wanted: dict[str, Any] | None) -> str:
    if current is None or wanted is None:
        return ""
    cols = [c for c in wanted if current.get(c) != wanted.get(c)]
    return ", ".join(f"{c}: {_short(current.get(c), 20)} → {_short(wanted.get(c), 20)}"
                     for c in cols[:4]) + (" …" if len(cols) > 4 else "")


def show_plans(console: Console, plans: list[Plan], samples: int = 5,
               conflicts: int = 50) -> None:
    summary = Table(title="replay plan")
    for col in ("table", "re-insert", "revert", "remove", "conflicts"):
        summary.add_column(col, justify="left" if col == "table" else "right")
    for p in plans:
        summary.add_row(str(p.table), str(p.count(INSERT)), str(p.count(UPDATE)),
                        str(p.count(DELETE)), str(p.count(CONFLICT)))
    console.print(summary)
    for p in plans:
        for action in (INSERT, UPDATE, DELETE, CONFLICT):
            limit = conflicts if action == CONFLICT else samples
            rows = p.rows(action, limit)
            if not rows:
                continue
            t = Table(title=f"{p.table}: {_LABEL[action]} ({p.count(action)}, "
                            f"{'showing' if len(rows) < p.count(action) else 'all'} "
                            f"{len(rows)})")
            t.add_column("key")
            t.add_column("row" if action != CONFLICT else "now vs left by the transaction")
            for r in rows:
                if action == UPDATE:
                    detail = _diff(r["current"], r["row"])
                elif action == CONFLICT:
                    detail = _diff(r["expected"], r["current"]) or (
                        "row is gone" if r["current"] is None else "row was re-created")
                else:
                    detail = _short(r["row"], 80)
                t.add_row(_short(r["key"]), detail)
            console.print(t)


def show_applied(console: Console, applied: list[Applied]) -> None:
    for a in applied:
        console.print(f"{a.table}: re-inserted {a.inserted}, reverted {a.updated}, "
                      f"removed {a.deleted}")


def show_checks(console: Console, checks: list[TableCheck], live_lsn: int) -> None:
    t = Table(title=f"replay verify (live database at {format_lsn(live_lsn)})")
    for col in ("table", "archive LSN", "archive rows", "live rows", "missing", "extra",
                "differing", "checksums"):
        t.add_column(col)
    for c in checks:
        t.add_row(str(c.table), format_lsn(c.archive_lsn), str(c.archive_rows),
                  str(c.live_rows), str(c.missing), str(c.extra), str(c.differing),
                  "equal" if c.archive_checksum == c.live_checksum else
                  f"{c.archive_checksum[:8]} ≠ {c.live_checksum[:8]}")
    console.print(t)
    for c in checks:
        for what, key in c.samples:
            label = {INSERT: "missing live", DELETE: "not in archive", UPDATE: "differs"}[what]
            console.print(f"  {c.table} {key}: {label}")
