"""Render a ``python -m bench`` JSON report as Markdown (for the README's Benchmarks section).

    .venv/bin/python scripts/bench_report.py bench/results/latest.json            # print
    .venv/bin/python scripts/bench_report.py bench/results/latest.json --write README.md
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


def main(argv: list[str]) -> None:
    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--write"):
        raise SystemExit("usage: bench_report.py REPORT.json [--write README.md]")
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
