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


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--against":
        text, outside = stability(json.loads(Path(argv[2]).read_text()),
                                  json.loads(Path(argv[0]).read_text()))
        sys.stdout.write(text)
        if outside:
            raise SystemExit("outside ±15 %: " + "; ".join(outside))
        return
    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--write"):
        raise SystemExit("usage: bench_report.py REPORT.json "
                         "[--write README.md | --against RUN1.json]")
    text = render(json.loads(Path(argv[0]).read_text()))
    if len(argv) == 1:
        sys.stdout.write(text)
        return
    readme = Path(argv[2])
    content = readme.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{readme} has no {START} ... {END} section")
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{text}{END}{tail}")


if __name__ == "__main__":
    main(sys.argv[1:])
