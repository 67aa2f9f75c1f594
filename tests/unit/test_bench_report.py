"""The bench's stability check (issue 18): two runs on one commit, every ratio within ±15 %."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tests.script_fixtures import load_script


def _module() -> ModuleType:
    return load_script("bench_report")


def _report(date: str, **ratios: float) -> dict[str, Any]:
    figures = [{"name": n, "value": v, "unit": "x", "low": v, "high": v} for n, v in ratios.items()]
    figures.append({"name": "rate", "value": 1000.0 if date.endswith("1") else 10.0,
                    "unit": "changes/s"})
    return {"date": date, "areas": [{"area": "capture", "figures": figures}]}


def test_ratios_within_fifteen_percent_are_stable_and_rates_are_not_compared() -> None:
    text, outside = _module().stability(_report("2026-12-07T17:19:01", a=1.0, b=2.0),
                                        _report("2026-12-07T17:31:02", a=1.14, b=1.75))
    assert outside == []
    assert "| capture: a | 1 (1–1) | 1.14 (1.14–1.14) | 1.14 |" in text
    assert "rate" not in text


def test_a_ratio_outside_fifteen_percent_or_missing_from_one_run_is_named() -> None:
    _, outside = _module().stability(_report("2026-12-07T17:19:01", a=1.0, b=2.0),
                                     _report("2026-12-07T17:31:02", a=1.16, c=3.0))
    assert outside == ["capture: a: 1.16", "capture: b: only in run 1", "capture: c: only in run 2"]


def test_a_file_that_is_not_a_report_is_one_line_and_exit_1(tmp_path: Any) -> None:
    from click.testing import CliRunner

    bad = tmp_path / "notes.json"
    bad.write_text("[1, 2]")
    good = tmp_path / "run.json"
    good.write_text('{"date": "2026-12-07T17:19:01", "machine": {}, "areas": []}')
    main = _module().main
    result = CliRunner().invoke(main, [str(good), "--against", str(bad)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {bad} is not a bench report (no machine/areas); give the JSON that "
        "`python -m bench --json PATH` wrote"]
    missing = CliRunner().invoke(main, [str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and "is not a bench report" in missing.output
    both = CliRunner().invoke(main, [str(good), "--against", str(good), "--write", str(good)])
    assert both.exit_code == 2 and "do not go together" in both.output
