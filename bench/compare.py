"""``python -m bench --compare REF``: this tree against another commit, in alternation.

Each round runs the selected areas here, then the same areas from a git worktree of REF (its
own code, its own stack), and the rounds repeat; every figure's ratio (this / REF) is taken
within a round and reported as the median with its min–max. A regression shows as a spread
that stays on one side of 1.0 round after round; noise as a spread across it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Units whose larger value is better; every other unit (s, ms, MiB, µs, x) is a cost.
_MORE_IS_BETTER = ("/s",)


@dataclass(frozen=True)
class Compared:
    name: str
    unit: str
    this: float
    ref: float
    ratios: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    def verdict(self) -> str:
        """``better``/``worse`` when every round's ratio is on the same side of 1.0 by more
        than 5 %, ``same`` otherwise; ``–`` for a figure whose direction is not known."""
        lo, hi = min(self.ratios), max(self.ratios)
        if self.unit == "x":
            return "–"
        more_better = self.unit.endswith(_MORE_IS_BETTER)
        if lo > 1.05:
            return "better" if more_better else "worse"
        if hi < 0.95:
            return "worse" if more_better else "better"
        return "same"


class CompareError(RuntimeError):
    """The reference commit cannot be checked out or benchmarked."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=False)


def _run_bench(tree: Path, areas: list[str], quick: bool, out: Path) -> dict[str, float]:
    args = [sys.executable, "-m", "bench", "--json", str(out)]
    for area in areas:
        args += ["--only", area]
    if quick:
        args.append("--quick")
    res = subprocess.run(args, cwd=tree, capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(tree)}, timeout=7200)
    if not out.exists():
        raise CompareError(f"the bench in {tree} wrote no report (rc {res.returncode}): "
                           f"{res.stderr.strip()[-400:]}")
    report: dict[str, Any] = json.loads(out.read_text())
    figures: dict[str, float] = {}
    for area in report["areas"]:
        for f in area["figures"]:
            figures[f"{area['area']}\t{f['name']}\t{f['unit']}"] = float(f["value"])
    return figures


def compare(repo: Path, ref: str, areas: list[str], quick: bool, rounds: int,
            on_round: Callable[[int, str], None]) -> list[Compared]:
    """Run ``rounds`` alternating rounds (this tree, then REF) and pair their figures."""
    if _git(repo, "cat-file", "-e", f"{ref}^{{commit}}").returncode != 0:
        raise CompareError(f"{ref!r} is not a commit of {repo}: name a branch, tag or sha")
    this: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="hera-compare-") as tmp:
        tree = Path(tmp) / "ref"
        added = _git(repo, "worktree", "add", "--detach", str(tree), ref)
        if added.returncode != 0:
            raise CompareError(f"git worktree add {ref} failed: {added.stderr.strip()}")
        try:
            for i in range(rounds):
                on_round(i, "this tree")
                this.append(_run_bench(repo, areas, quick, Path(tmp) / f"this-{i}.json"))
                on_round(i, ref)
                theirs.append(_run_bench(tree, areas, quick, Path(tmp) / f"ref-{i}.json"))
        finally:
            _git(repo, "worktree", "remove", "--force", str(tree))
    out = []
    for key in this[0]:
        if not all(key in r for r in this + theirs):
            continue
        pairs = [(a[key], b[key]) for a, b in zip(this, theirs, strict=True)]
        if any(b == 0 for _, b in pairs):
            continue
        area, name, unit = key.split("\t")
        out.append(Compared(f"{area}: {name}", unit, statistics.median(a for a, _ in pairs),
                            statistics.median(b for _, b in pairs),
                            tuple(a / b for a, b in pairs)))
    return out
