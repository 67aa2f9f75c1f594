"""The previous release's archive (manifest + Parquet segments), measured in the same
``make bench`` run: its own ``bench/archive.py`` and ``bench/replay.py``, run from a git
worktree of its commit on this machine right after ours, so the Delta table's figures stand
side by side with the format it replaced instead of next to figures recorded on another day.
Its two ratios are taken again on its own code the way ours are, by scripts run in its
worktree: the view dedup overhead by ``bench/_previous_views.py`` (bracketed scans; its bench
scans once each) and the restore against the floor by ``bench/_previous_restore.py``
(bracketed runs; its bench took the best of 3 of each side). Neither held between two runs
as its bench took them (1.22, 0.68).

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
from typing import Any

import psycopg

from bench.archive import _SCANS
from bench.common import BenchContext, Figure, paired
from bench.replay import _RESTORES

# main just before the Delta Lake archive was merged (c30f2f1^1): manifest + segments.
PREVIOUS_RELEASE = "ba1bca5ce86458ff1df358c7e3836e902f12d5c5"
_AREAS = ("archive", "replay")
_VIEW_FIGURE = "archive view dedup overhead"
_RESTORE_FIGURE = ("replay: restore of 100k deleted relationships / a bare INSERT ... SELECT of "
                   "exactly those rows")


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
            views = _views(tree, 50_000 if ctx.quick else 300_000)
            restore = _restore(ctx, tree, 40_000 if ctx.quick else 200_000)
            return [f for f in _figures(json.loads(report.read_text()))
                    if not f.name.endswith((_VIEW_FIGURE, _RESTORE_FIGURE))] + [views, restore]
        finally:
            _git(repo, "worktree", "remove", "--force", str(tree))


def _views(tree: Path, events: int) -> Figure:
    """The previous release's view overhead from bracketed scans (bench/_previous_views.py, run
    on that release's own code), in place of its bench's one scan of each."""
    got = _script(tree, "_previous_views.py", str(events), str(_SCANS))
    scans = paired(got["raw_ms"], got["view_ms"])
    return scans.ratios.figure(
        f"previous release (manifest + segments): {_VIEW_FIGURE}", "x",
        "for comparison (informational)", None,
        f"commit {PREVIOUS_RELEASE[:7]}, its own archive and views in this run, scanned as "
        f"bench/archive.py scans ours: {got['rows']} rows, median ratio of {_SCANS} bracketed "
        f"pairs: raw segments {scans.ceiling.text('{:.0f}')} ms, deduplicated view "
        f"{scans.product.text('{:.0f}')} ms")


def _script(tree: Path, name: str, *args: str) -> dict[str, Any]:
    """Run ``bench/<name>`` (a script, not an area) on the previous release's code."""
    script = (Path(__file__).parent / name).read_text()
    out = subprocess.run([sys.executable, "-c", script, *args], cwd=tree, capture_output=True,
                         text=True, check=False, env={**os.environ, "PYTHONPATH": str(tree)},
                         timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(f"the previous release's {name} failed (rc {out.returncode}): "
                           f"{out.stderr.strip()[-500:]}")
    got: dict[str, Any] = json.loads(out.stdout)
    return got


def _restore(ctx: BenchContext, tree: Path, total: int) -> Figure:
    """The previous release's restore / floor from bracketed runs (bench/_previous_restore.py,
    its own code, our cluster), in place of its bench's best of 3 alternating runs."""
    with psycopg.connect(ctx.cluster.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bench_previous_restore WITH (FORCE)")
        conn.execute("CREATE DATABASE bench_previous_restore")
    got = _script(tree, "_previous_restore.py", ctx.cluster.dsn("bench_previous_restore"),
                  str(total), str(_RESTORES))
    runs = paired(got["floor_s"], got["restore_s"])
    return runs.ratios.figure(
        f"previous release (manifest + segments): {_RESTORE_FIGURE}", "x",
        "for comparison (<= 2.5x)", None,
        f"commit {PREVIOUS_RELEASE[:7]}, its own restore in this run, timed as "
        f"bench/replay.py times ours: same {got['deleted']} rows, median ratio of {_RESTORES} "
        f"bracketed runs: replay {runs.product.text()} s, the floor (a bare INSERT … SELECT of "
        f"just the missing backup rows, same indexes and guardian) {runs.ceiling.text()} s")


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
