"""Render a ``python -m bench`` JSON report as Markdown (for the README's Benchmarks section).

    .venv/bin/python scripts/bench_report.py bench/results/latest.json            # print
    .venv/bin/python scripts/bench_report.py bench/results/latest.json --write README.md
    .venv/bin/python scripts/bench_report.py run2.json --against run1.json   # stability

``--against`` is issue 18's test of the bench itself: two runs on the same commit must give
every ratio (unit ``x``: the figures taken within alternating pairs) within ±15 % of each
other; it prints run 2 / run 1 per ratio and exits 1 if one is outside.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import format_number

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Measured {report['date'][:16].replace('T', ' ')} UTC"
        + (" (`--quick`: smaller workloads)" if report.get("quick") else "")
        + f" on {m.get('cpu_model')}, {m.get('nproc')} CPUs, {m.get('memory_gib')} GiB RAM; "
        f"{str(m.get('postgresql', '')).split(' on ')[0]}, wal2json {m.get('wal2json')}, "
        f"Python {m.get('python')}, kafka-python {m.get('kafka-python')}, confluent-kafka "
        f"{m.get('confluent-kafka')}, broker {m.get('broker')}. Reproduce with `make bench`.",
        "",
        "| area | figure | value (median) | min–max | unit | target | met | detail |",
        "| --- | --- | ---: | ---: | --- | --- | :---: | --- |",
    ]
    for area in report["areas"]:
        if area.get("error"):
            lines.append(f"| {area['area']} | benchmark failed | | | | | ✘ | "
                         f"{str(area['error']).replace('|', '/')} |")
            continue
        for f in area["figures"]:
            met = {True: "✔", False: "✘", None: "–"}[f["met"]]
            low, high = f.get("low"), f.get("high")
            spread = ("" if low is None or high is None
                      else f"{format_number(low)}–{format_number(high)}")
            lines.append(f"| {area['area']} | {f['name']} | {format_number(f['value'])} | {spread} "
                         f"| {f['unit']} | {f['target']} | {met} | "
                         f"{f['detail'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _ratios(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{a['area']}: {f['name']}": f for a in report["areas"] if not a.get("error")
            for f in a["figures"] if f["unit"] == "x"}


def _cell(f: dict[str, Any]) -> str:
    low, high = f.get("low"), f.get("high")
    spread = "" if low is None or high is None else f" ({format_number(low)}–{format_number(high)})"
    return f"{format_number(f['value'])}{spread}"


def stability(first: dict[str, Any], second: dict[str, Any],
              tolerance: float = 0.15) -> tuple[str, list[str]]:
    """The run-2/run-1 table of every ratio both runs report, and the figures outside
    ``tolerance`` (or reported by one run only: a ratio that vanished is not stable)."""
    a, b = _ratios(first), _ratios(second)
    t1, t2 = first["date"][11:16], second["date"][11:16]
    lines = [f"| figure | run 1 ({t1}) | run 2 ({t2}) | run 2 / run 1 |",
             "| --- | ---: | ---: | ---: |"]
    outside: list[str] = []
    for name in [*a, *(n for n in b if n not in a)]:
        if name not in a or name not in b:
            outside.append(f"{name}: only in run {1 if name in a else 2}")
            continue
        r = b[name]["value"] / a[name]["value"] if a[name]["value"] else float("inf")
        flag = "" if abs(r - 1) <= tolerance else " ✘"
        if flag:
            outside.append(f"{name}: {r:.2f}")
        lines.append(f"| {name} | {_cell(a[name])} | {_cell(b[name])} | {r:.2f}{flag} |")
    return "\n".join(lines) + "\n", outside


def _load(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"{path} is not a bench report: {exc}; give the JSON that "
                                   "`python -m bench --json PATH` wrote") from exc
    if not isinstance(report, dict) or "areas" not in report or "machine" not in report:
        raise click.ClickException(f"{path} is not a bench report (no machine/areas); give the "
                                   "JSON that `python -m bench --json PATH` wrote")
    return report


@click.command(help=__doc__.split("\n\n")[0] if __doc__ else None)
@click.argument("report", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--write", "readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="replace the table between the bench markers of this Markdown file")
@click.option("--against", "first", type=click.Path(dir_okay=False, path_type=Path),
              help="an earlier run's report: print run 2 / run 1 per ratio, exit 1 outside "
                   "±15 %")
def main(report: Path, readme: Path | None, first: Path | None) -> None:
    if readme is not None and first is not None:
        raise click.UsageError("--write and --against do not go together: give one")
    if first is not None:
        text, outside = stability(_load(first), _load(report))
        click.echo(text, nl=False)
        if outside:
            click.echo("outside ±15 %: " + "; ".join(outside), err=True)
            raise SystemExit(1)
        return
    text = render(_load(report))
    if readme is None:
        click.echo(text, nl=False)
        return
    content = readme.read_text()
    if START not in content or END not in content:
        raise click.ClickException(f"{readme} has no {START} ... {END} section: add the two "
                                   "markers where the table goes")
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{text}{END}{tail}")


if __name__ == "__main__":
    main()
