"""The previous release's archive (manifest + Parquet segments), measured in the same
``make bench`` run: its own ``bench/archive.py`` and ``bench/replay.py``, run from a git
worktree of its commit on this machine right after ours, so the Delta table's figures stand
side by side with the format it replaced instead of next to figures recorded on another day.

It needs the repository's history (a clone, not an sdist); without it the area fails with
one line, as any other broken area does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import BenchContext, Figure

# main just before the Delta Lake archive was merged (c30f2f1^1): manifest + segments.
PREVIOUS_RELEASE = "ba1bca5ce86458ff1df358c7e3836e902f12d5c5"
_AREAS = ("archive", "replay")


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=False)


def run(ctx: BenchContext) -> list[Figure]:
    repo = Path(__file__).resolve().parent.parent
    if _git(repo, "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}").returncode != 0:
        raise RuntimeError(f"commit {PREVIOUS_RELEASE[:7]} (the previous release) is not in "
                           f"{repo}: run the benchmark from a clone with its history")
    with tempfile.TemporaryDirectory(prefix="hera-previous-") as tmp:
        tree, report = Path(tmp) / "tree", Path(tmp) / "previous.json"
        added = _git(repo, "worktree", "add", "--detach", str(tree), PREVIOUS_RELEASE)
        if added.returncode != 0:
            raise RuntimeError(f"git worktree add failed: {added.stderr.strip()}")
        try:
            args = [sys.executable, "-m", "bench", "--json", str(report)]
            for area in _AREAS:
                args += ["--only", area]
            if ctx.quick:
                args.append("--quick")
            # Its own packages first (the worktree is the working directory and on the path);
            # its own stack, started and removed by its bench, after ours has finished.
            out = subprocess.run(args, cwd=tree, capture_output=True, text=True, check=False,
                                 env={**os.environ, "PYTHONPATH": str(tree)}, timeout=3600)
            if not report.exists():
                raise RuntimeError(f"the previous release's bench wrote no report (rc "
                                   f"{out.returncode}): {out.stderr.strip()[-500:]}")
            return _figures(json.loads(report.read_text()))
        finally:
            _git(repo, "worktree", "remove", "--force", str(tree))


def _figures(report: dict[str, object]) -> list[Figure]:
    out = []
    areas = report.get("areas")
    assert isinstance(areas, list)
    for area in areas:
        if area.get("error"):
            raise RuntimeError(f"the previous release's {area['area']} area failed: "
                               f"{area['error']}")
        for f in area["figures"]:
            out.append(Figure(
                f"previous release (manifest + segments): {f['name']}", float(f["value"]),
                str(f["unit"]), f"for comparison ({f['target']})", None,
                f"commit {PREVIOUS_RELEASE[:7]}, its own bench in this run: {f['detail']}"))
    return out
